import json
from pathlib import Path

import pytest
import torch

from seal.models import TINY_RANDOM_MODEL, load_model
from tests.fake_judge import fake_judge  # noqa: F401  (fixture)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

PASSAGES_FILE = Path(__file__).parent / "data" / "two_passages.json"
PASSAGES = json.loads(PASSAGES_FILE.read_text())


def pytest_addoption(parser):
    parser.addoption(
        "--default-precision",
        choices=["hardware", "fp32", "bf16"],
        default="hardware",
        help="the precision LoraConfig defaults to in this run: the hardware's choice (as users get it), or "
        "forced, to run the suite on the fp32 path, or on the bf16 path of a machine with native bf16 units",
    )


def pytest_configure(config):
    """With ``--default-precision``, torch's bf16 probes answer as on a machine of the asked kind, from
    before the test modules are imported (their module-level configs take the default then)."""
    forced = config.getoption("--default-precision")
    config.precision_patch = pytest.MonkeyPatch()
    if forced != "hardware":
        native = forced == "bf16"
        config.precision_patch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            config.precision_patch.setattr(torch.cpu, probe, lambda: native)


def pytest_unconfigure(config):
    config.precision_patch.undo()


@pytest.fixture(scope="session")
def tiny():
    return load_model(TINY_RANDOM_MODEL)


@pytest.fixture
def squad_file() -> Path:
    return PASSAGES_FILE


@pytest.fixture
def self_edit_file(tmp_path: Path) -> Path:
    path = tmp_path / "self_edits.json"
    items = [dict(p, completions=[f"{p['title']} is notable.\nIt is described in a passage.", ""]) for p in PASSAGES]
    path.write_text(json.dumps(items))
    return path


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A tiny-random policy as ReST-EM saves one (a PEFT LoRA adapter) that moves the model: its B factors
    are not zero, so what it writes differs from what the untouched model writes."""
    from seal.engine.bank import LoraBank
    from seal.engine.lora import LoraConfig

    loaded = load_model(TINY_RANDOM_MODEL)
    bank = LoraBank(loaded.model, loaded.tokenizer, LoraConfig(rank=4, alpha=8), 1, name=TINY_RANDOM_MODEL)
    bank.reset(0, seed=0)
    generator = torch.Generator().manual_seed(0)
    moved = {name: (a, torch.randn(b.shape, generator=generator)) for name, (a, b) in bank.adapter(0).items()}
    bank.set_adapter(0, moved)
    bank.save_adapter(0, tmp_path / "round-2" / "policy")
    return tmp_path / "round-2" / "policy"
