import hashlib
import random

import pytest
import torch

from seal.engine.generation import SamplingConfig, generate, render_prompt
from seal.engine.lora import (
    AdapterSlot,
    LoraConfig,
    TrainConfig,
    TrainingExample,
    _collate,
    length_grouped_batches,
    tokenize_example,
)
from seal.models import load_model

EXAMPLES = [
    TrainingExample("", "Varnholt Bridge\nThe bridge was completed in 1871 by Ottilie Brask."),
    TrainingExample("", "Varnholt Bridge\nIt spans 340 metres."),
    TrainingExample("", "Quenalite\nQuenalite is a green mineral."),
]
FAST = TrainConfig(learning_rate=1e-2, epochs=2, batch_size=2)


@pytest.fixture(scope="module")
def slot():
    loaded = load_model("tiny-random")
    return AdapterSlot(loaded.model, loaded.tokenizer, LoraConfig(rank=4, alpha=8))


def base_fingerprint(slot: AdapterSlot) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(slot.model.state_dict().items()):
        if "lora_" not in name:
            digest.update(name.encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def logits(slot: AdapterSlot) -> torch.Tensor:
    ids = slot.tokenizer("The bridge was completed in", return_tensors="pt")
    with torch.no_grad():
        return slot.model(**ids).logits


def test_update_leaves_base_weights_bit_identical_and_is_discarded(slot):
    before_weights, before_logits = base_fingerprint(slot), logits(slot)
    with slot.updated(EXAMPLES, FAST, seed=0) as stats:
        assert stats.steps == 4 and stats.tokens > 0
        assert not torch.allclose(logits(slot), before_logits)  # the update changes the model
    assert base_fingerprint(slot) == before_weights
    assert torch.equal(logits(slot), before_logits)  # and is gone afterwards


def test_only_lora_parameters_train(slot):
    names = [n for n, p in slot.model.named_parameters() if p.requires_grad]
    assert names == []  # adapter is off outside an update
    with slot.updated(EXAMPLES, FAST, seed=0):
        names = [n for n, p in slot.model.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)
        assert {n.split(".")[-4] for n in names if "lora_A" in n} == set(LoraConfig().target_modules)


def test_same_seed_same_update(slot):
    losses = []
    for _ in range(2):
        with slot.updated(EXAMPLES, FAST, seed=7) as stats:
            losses.append((stats.final_loss, logits(slot)))
    assert losses[0][0] == losses[1][0]
    assert torch.equal(losses[0][1], losses[1][1])


def test_training_lowers_the_loss_on_its_data(slot):
    few = TrainConfig(learning_rate=5e-2, epochs=1, batch_size=3)
    many = TrainConfig(learning_rate=5e-2, epochs=10, batch_size=3)
    with slot.updated(EXAMPLES, few, seed=0) as short:
        pass
    with slot.updated(EXAMPLES, many, seed=0) as long:
        pass
    assert long.final_loss < short.final_loss - 0.1


def test_loss_mask_is_positional(tiny):
    ids, prompt_len = tokenize_example(tiny.tokenizer, TrainingExample("Question: who?", " Ottilie Brask"), 1024)
    prompt_ids = tiny.tokenizer("Question: who?", add_special_tokens=False)["input_ids"]
    assert prompt_len == len(prompt_ids) and ids[:prompt_len] == prompt_ids
    ids, prompt_len = tokenize_example(tiny.tokenizer, TrainingExample("", "all of it is target"), 1024)
    assert prompt_len == 0


def test_chat_examples_render_the_template_and_end_the_turn(tiny):
    ids, prompt_len = tokenize_example(
        tiny.tokenizer, TrainingExample("Which engineer?", "Ottilie Brask", chat=True), 1024
    )
    rendered = render_prompt(tiny.tokenizer, "Which engineer?")
    assert tiny.tokenizer.decode(ids[:prompt_len]) == rendered
    assert tiny.tokenizer.decode(ids[prompt_len:]) == "Ottilie Brask" + tiny.tokenizer.eos_token


def test_collate_masks_prompt_and_padding_by_position():
    batch = _collate([([5, 6, 7, 8], 2), ([9, 10], 0)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [9, 10, -100, -100]]


def test_length_grouped_batches_cover_every_example_once():
    lengths = [5, 200, 7, 190, 6, 8, 210]
    batches = length_grouped_batches(lengths, 3, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(7))
    spans = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spans[0] <= 3  # the short ones share a batch instead of padding to 200


def test_batched_generation_matches_one_by_one():
    # the embedded model, since tiny-random's greedy output is all special tokens (decoded as "")
    smol = load_model("smollm2-135m")
    prompts = [render_prompt(smol.tokenizer, text) for text in ["Hi", "Tell me about the Varnholt Bridge please"]]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6)
    together = generate(smol.model, smol.tokenizer, prompts, greedy, batch_size=2)
    alone = [generate(smol.model, smol.tokenizer, [p], greedy)[0] for p in prompts]
    assert together == alone and all(together)


def test_sampling_is_reproducible_with_a_seed(tiny):
    prompt = [render_prompt(tiny.tokenizer, "Write something")] * 2
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    first = generate(tiny.model, tiny.tokenizer, prompt, sampling, seed=3)
    assert first == generate(tiny.model, tiny.tokenizer, prompt, sampling, seed=3)


def test_chat_models_use_their_template(tiny):
    assert tiny.is_chat
    rendered = render_prompt(tiny.tokenizer, "Topic: X\nWhat?")
    assert rendered.startswith("<|im_start|>") and rendered.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(max_new_tokens=0)])
def test_sampling_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        SamplingConfig(**bad)
