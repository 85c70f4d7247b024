import os
import subprocess
import sys
from pathlib import Path

import pytest

from seal.models import EMBEDDED_MODEL, TINY_RANDOM_MODEL, cache_dir, load_model, resolve_model_dir
from seal.models.loading import ModelLoadError


def test_embedded_model_is_converted_once_into_the_cache():
    path = Path(resolve_model_dir(EMBEDDED_MODEL))
    assert path == cache_dir() / "models" / EMBEDDED_MODEL
    assert (path / "model.safetensors").stat().st_size > 100_000_000  # dequantised fp32 weights
    assert "quantization_config" not in (path / "config.json").read_text()


def test_cache_dir_follows_seal_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


def test_tiny_random_shares_the_tokenizer_and_is_small(tiny):
    assert tiny.model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in tiny.model.parameters()) < 5_000_000
    embedded_tokenizer_file = Path(resolve_model_dir(EMBEDDED_MODEL)) / "tokenizer.json"
    tiny_tokenizer_file = Path(resolve_model_dir(TINY_RANDOM_MODEL)) / "tokenizer.json"
    assert tiny_tokenizer_file.read_text() == embedded_tokenizer_file.read_text()


def test_local_directory_loads(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.model.config.num_hidden_layers == 2 and loaded.name == str(tmp_path)


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))


def test_unreachable_hub_id_is_a_one_line_cli_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seal.cli",
            "knowledge",
            "eval",
            "--condition",
            "base",
            "--model",
            "no-such-org/no-such-model",
            "--data",
            str(Path(__file__).parent / "data" / "two_passages.json"),
            "--split",
            "all",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("seal: error: cannot load model 'no-such-org/no-such-model'")
