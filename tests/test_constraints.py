"""Constrained sampling: only valid documents come out, and the model's preferences among valid tokens stay its own."""

import json

import pytest
import torch

from seal.domains.arc.selfedit import MAX_SELF_EDIT_CHARS, SELF_EDIT_SCHEMA, TTTConfig, parse_ttt_config
from seal.engine.bank import LoraBank
from seal.engine.constraints import SchemaMask
from seal.engine.generation import SamplingConfig, generate, render_prompt, sample
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig, TrainingExample, TrainJob

SAMPLING = SamplingConfig(temperature=1.0, max_new_tokens=MAX_SELF_EDIT_CHARS)


def test_every_sampled_configuration_is_valid_even_from_a_random_model(tiny):
    """tiny-random writes noise: unconstrained, nothing it writes parses; constrained, everything does."""
    prompt = "Choose a configuration."
    free = sample(tiny.model, tiny.tokenizer, prompt, 8, SAMPLING, seed=0)
    assert not any(isinstance(parse_ttt_config(text), TTTConfig) for text in free)
    texts = [
        t for seed in range(4) for t in sample(tiny.model, tiny.tokenizer, prompt, 8, SAMPLING, seed, SELF_EDIT_SCHEMA)
    ]
    configs = [parse_ttt_config(text) for text in texts]
    assert all(isinstance(c, TTTConfig) for c in configs), [
        t for t, c in zip(texts, configs) if not isinstance(c, TTTConfig)
    ]
    assert all(len(text) <= MAX_SELF_EDIT_CHARS for text in texts)
    assert len({c.to_json() for c in configs}) > 8  # the model still chooses: the samples differ


def test_constraints_hold_with_per_row_adapters_and_a_shared_prompt_prefix(tiny):
    from seal.models import load_model

    loaded = load_model("tiny-random")
    bank = LoraBank(loaded.model, loaded.tokenizer, LoraConfig(rank=4, alpha=8, base_precision="fp32"), n_slots=2)
    bank.train([TrainJob(1, [TrainingExample("", "{}")], TrainConfig(learning_rate=5e-2, epochs=2), seed=0)])
    prompts = [render_prompt(bank.tokenizer, "Choose a configuration.")] * 6
    slots = [0, 0, 0, 1, 1, 1]
    texts = generate(
        bank.model, bank.tokenizer, prompts, SAMPLING, batch_size=6, seed=1,
        route=lambda rows: bank.routed([slots[i] for i in rows]), groups=slots, schema=SELF_EDIT_SCHEMA,
    )  # fmt: skip
    assert all(isinstance(parse_ttt_config(text), TTTConfig) for text in texts)


def test_the_mask_keeps_the_relative_probabilities_of_allowed_tokens(tiny):
    """At every step: disallowed tokens get probability 0, allowed ones their old probabilities renormalised."""
    generator = torch.Generator().manual_seed(0)
    vocab = tiny.model.config.vocab_size
    mask = SchemaMask(tiny.tokenizer, SELF_EDIT_SCHEMA, rows=2, prompt_width=3)
    ids = torch.zeros(2, 3, dtype=torch.long)
    for _ in range(40):
        scores = torch.randn(2, vocab, generator=generator)
        masked = mask(ids, scores.clone())
        before, after = scores.softmax(-1), masked.softmax(-1)
        allowed = torch.isfinite(masked)
        assert allowed.any(-1).all() and (after[~allowed] == 0).all()
        for row in range(2):
            kept = before[row][allowed[row]]
            torch.testing.assert_close(after[row][allowed[row]], kept / kept.sum())
        ids = torch.cat([ids, torch.multinomial(after, 1, generator=generator)], dim=1)
        if (ids[:, -1] == tiny.tokenizer.eos_token_id).all():
            break
    document = tiny.tokenizer.decode(ids[0, 3:], skip_special_tokens=True)
    assert isinstance(parse_ttt_config(document), TTTConfig), document


def test_a_bad_schema_and_too_few_tokens_are_refused():
    from seal.domains.arc.evaluate import ArcEvalConfig

    with pytest.raises(ValueError, match="--sampling.max_new_tokens must be at least"):
        ArcEvalConfig(sampling=SamplingConfig(max_new_tokens=32))
    ArcEvalConfig(sampling=SamplingConfig(max_new_tokens=32), constrain=False)
    with pytest.raises(ValueError, match="cannot be compiled"):
        from seal.engine.constraints import schema_grammar

        schema_grammar({"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}})
    assert json.loads(json.dumps(SELF_EDIT_SCHEMA)) == SELF_EDIT_SCHEMA
