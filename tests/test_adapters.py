"""Adapters leave the bank in PEFT's format: peft, and seal's own loading, read them back exactly."""

import json
from contextlib import nullcontext

import pytest
import torch

from seal.engine.bank import LoraBank
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig, TrainingExample, TrainJob
from seal.models import load_model
from seal.models.adapters import ADAPTER_CONFIG, read_adapter

peft = pytest.importorskip("peft")

LORA = LoraConfig(rank=4, alpha=8, base_precision="fp32")
PROMPTS = ["The bridge was completed in", "Quenalite is a"]


def trained_bank() -> LoraBank:
    loaded = load_model("tiny-random")
    bank = LoraBank(loaded.model, loaded.tokenizer, LORA, n_slots=2, name="tiny-random")
    examples = [TrainingExample("", "The Varnholt Bridge was completed in 1871 by Ottilie Brask.")]
    bank.train([TrainJob(1, examples, TrainConfig(learning_rate=5e-2, epochs=3), seed=0)])
    return bank


def last_logits(model, tokenizer, routed=None) -> torch.Tensor:
    tokenizer.padding_side = "left"
    ids = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad(), routed or nullcontext():
        return model(**ids).logits[:, -1]


def test_a_saved_adapter_is_what_peft_and_seal_load(tmp_path):
    bank = trained_bank()
    bank.save_adapter(1, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (4, 8, "tiny-random")
    _, saved = read_adapter(tmp_path / "adapter")
    assert set(saved) == set(bank.layer_names)
    for name, (a, b) in bank.adapter(1).items():  # stored in bf16
        torch.testing.assert_close(saved[name][0], a, rtol=1e-2, atol=1e-3)
        torch.testing.assert_close(saved[name][1], b, rtol=1e-2, atol=1e-3)

    bank.set_adapter(0, saved)  # the stored factors, routed through our bank
    ours = last_logits(bank.model, bank.tokenizer, bank.routed([0, 0]))
    fresh = load_model("tiny-random")
    with_peft = peft.PeftModel.from_pretrained(fresh.model, str(tmp_path / "adapter"))
    torch.testing.assert_close(last_logits(with_peft, fresh.tokenizer), ours, rtol=1e-5, atol=1e-5)
    merged = load_model(str(tmp_path / "adapter"))  # seal loads an adapter directory as its base model + the update
    torch.testing.assert_close(last_logits(merged.model, merged.tokenizer), ours, rtol=1e-5, atol=1e-5)
    base = load_model("tiny-random")
    assert not torch.allclose(last_logits(base.model, base.tokenizer), ours, atol=1e-3)  # the update is there


def test_adapters_that_do_not_fit_are_refused(tmp_path):
    bank = trained_bank()
    bank.save_adapter(1, tmp_path / "adapter")
    _, saved = read_adapter(tmp_path / "adapter")
    loaded = load_model("tiny-random")
    wider = LoraBank(loaded.model, loaded.tokenizer, LoraConfig(rank=8, alpha=16, base_precision="fp32"))
    with pytest.raises(ValueError, match="rank 4, this bank 8"):
        wider.set_adapter(0, saved)
    (tmp_path / "adapter" / ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(ValueError, match="only plain LoRA"):
        load_model(str(tmp_path / "adapter"))


def test_runs_keep_each_updates_adapter_when_asked(tmp_path, squad_file):
    from seal.domains.knowledge.continual import run_continual
    from seal.domains.knowledge.evaluate import EvalConfig, run_eval
    from seal.engine.generation import SamplingConfig
    from seal.loops.continual import ContinualConfig
    from seal.models.adapters import is_adapter_dir

    config = EvalConfig(
        condition="passage", model="tiny-random", data=str(squad_file), answer_tokens=4, lora=LORA,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=8), train=TrainConfig(epochs=1),
    )  # fmt: skip
    run_eval(config, tmp_path / "eval", progress=False, save_adapters=True)
    saved = sorted((tmp_path / "eval" / "adapters").iterdir())
    assert len(saved) == 2 and all(is_adapter_dir(path) for path in saved)
    assert {read_adapter(path)[0]["base_model_name_or_path"] for path in saved} == {"tiny-random"}
    run_continual(config, ContinualConfig(1, 2), tmp_path / "continual", progress=False, save_adapters=True)
    steps = sorted((tmp_path / "continual" / "adapters" / "sequence-0").iterdir())
    assert [path.name for path in steps] == ["step-1", "step-2"] and all(is_adapter_dir(path) for path in steps)
