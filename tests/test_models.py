import json
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


def test_all_linear_adapts_every_linear_layer_but_the_output_projection_and_names_refuse_clearly():
    import torch

    from seal.engine.bank import LoraBank
    from seal.engine.lora import LoraConfig

    fresh = lambda: load_model(TINY_RANDOM_MODEL)  # noqa: E731
    loaded = fresh()
    every = [n for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    bank = LoraBank(loaded.model, loaded.tokenizer, LoraConfig(rank=4, alpha=8))
    assert bank.layer_names == every and len(every) == 2 * 7
    two = LoraBank(fresh().model, loaded.tokenizer, LoraConfig(rank=4, alpha=8, target_modules=("v_proj", "q_proj")))
    assert [n.rsplit(".", 1)[-1] for n in two.layer_names] == ["q_proj", "v_proj"] * 2  # in the model's order
    for names, message in [
        (("qkv_proj",), "no module named 'qkv_proj'"),
        (("mlp",), "model.layers.0.mlp is a LlamaMLP, not a linear layer we can adapt"),
        (("all-linear", "q_proj"), "all-linear, or names"),
    ]:
        with pytest.raises(ValueError, match=message):
            LoraBank(fresh().model, loaded.tokenizer, LoraConfig(rank=4, alpha=8, target_modules=names))


def test_a_bf16_base_keeps_fp32_adapters_and_no_fp32_copy_and_still_learns():
    import torch

    from seal.engine.bank import LoraBank
    from seal.engine.lora import LoraConfig
    from seal.engine.training import TrainConfig, TrainingExample, TrainJob

    examples = [TrainingExample("", "The Varnholt Bridge was completed in 1871 by Ottilie Brask.")]
    losses = {}
    for dtype in ("fp32", "bf16"):
        lora = LoraConfig(rank=4, alpha=8, base_dtype=dtype, base_precision=dtype)
        loaded = load_model(TINY_RANDOM_MODEL, lora.base_dtype)
        bank = LoraBank(loaded.model, loaded.tokenizer, lora)
        assert {p.dtype for p in bank.slot_parameters(0)} == {torch.float32}
        losses[dtype] = [
            bank.train([TrainJob(0, examples, TrainConfig(learning_rate=5e-2, epochs=epochs), seed=0)])[0].final_loss
            for epochs in (1, 8)
        ]
    assert {layer.base.weight.dtype for layer in bank.layers} == {torch.bfloat16}
    assert all(layer.base_weight_copy is None for layer in bank.layers)  # already bf16: no second copy
    assert losses["bf16"][1] < losses["bf16"][0] - 0.1  # it learns ...
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)  # ... what fp32 learns, within bf16's error


def test_gradient_checkpointing_trains_the_same_adapter():
    import torch

    from seal.engine.bank import LoraBank
    from seal.engine.lora import LoraConfig
    from seal.engine.training import TrainConfig, TrainingExample, TrainJob

    examples = [TrainingExample("", "Quenalite is a green mineral."), TrainingExample("Q?", "The bridge.")]
    adapters = []
    for checkpointing in (False, True):
        loaded = load_model(TINY_RANDOM_MODEL)
        bank = LoraBank(loaded.model, loaded.tokenizer, LoraConfig(rank=4, alpha=8, base_precision="fp32"), 2)
        config = TrainConfig(learning_rate=1e-2, epochs=2, batch_size=2, gradient_checkpointing=checkpointing)
        switched = []

        def checkpointing_now(step, total):
            switched.append(any(getattr(m, "gradient_checkpointing", False) for m in bank.model.modules()))

        jobs = [TrainJob(0, examples, config, seed=0), TrainJob(1, examples[:1], config, seed=1)]
        bank.train(jobs, on_step=checkpointing_now)
        adapters.append([p.detach().clone() for slot in (0, 1) for p in bank.slot_parameters(slot)])
        assert switched == [checkpointing] * len(switched) and switched
        assert not any(getattr(m, "gradient_checkpointing", False) for m in bank.model.modules())  # off again
        # and so is the hook that makes the input embeddings' outputs require a gradient
        assert not bank.model.get_input_embeddings()._forward_hooks
    for with_, without in zip(adapters[1], adapters[0]):
        torch.testing.assert_close(with_, without, rtol=1e-5, atol=1e-6)


def test_remote_code_runs_only_when_asked(tiny, tmp_path):
    from seal.models import check_model

    (tmp_path / "configuration_odd.py").write_text(
        "from transformers import LlamaConfig\n\nclass OddConfig(LlamaConfig):\n    model_type = 'odd-llama'\n"
    )
    (tmp_path / "modeling_odd.py").write_text(
        "from transformers import LlamaForCausalLM\nfrom .configuration_odd import OddConfig\n\n"
        "class OddForCausalLM(LlamaForCausalLM):\n    config_class = OddConfig\n"
    )
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config |= {"model_type": "odd-llama", "architectures": ["OddForCausalLM"]}
    config["auto_map"] = {
        "AutoConfig": "configuration_odd.OddConfig",
        "AutoModelForCausalLM": "modeling_odd.OddForCausalLM",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ModelLoadError, match="contains custom code .* pass --lora.trust_remote_code true if you trust it"
    ):
        load_model(str(tmp_path))
    loaded = load_model(str(tmp_path), trust_remote_code=True)
    assert type(loaded.model).__name__ == "OddForCausalLM"
    check_model(str(tmp_path), trust_remote_code=True)
