import hashlib
import random
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from functools import partial

import pytest
import torch
from torch import nn

from seal.engine.bank import LoraBank
from seal.engine.generation import (
    SamplingConfig,
    generate,
    prefix_padded,
    render_prompt,
    shared_prefix_length,
    tokenize_prompt,
)
from seal.engine.lora import LoraConfig, MultiLoraLinear, default_base_precision
from seal.engine.loss import frozen_head_cross_entropy
from seal.engine.packing import PACKED_SDPA, packed_attention
from seal.engine.routing import Routing, segment_matmul
from seal.engine.training import (
    TrainConfig,
    TrainingExample,
    TrainJob,
    TrainStats,
    length_grouped_batches,
    tokenize_example,
    training_sequences,
)
from seal.models import load_model

EXAMPLES = [
    TrainingExample("", "Varnholt Bridge\nThe bridge was completed in 1871 by Ottilie Brask."),
    TrainingExample("", "Varnholt Bridge\nIt spans 340 metres."),
    TrainingExample("", "Quenalite\nQuenalite is a green mineral."),
]
OTHER = [
    TrainingExample("Which mineral?", "Quenalite, a green one"),
    TrainingExample("", "Ferrowick Hall\nBuilt 1902."),
]
FAST = TrainConfig(learning_rate=1e-2, epochs=2, batch_size=2)
FAST_JOB = TrainJob(0, EXAMPLES, FAST, seed=0)
PROBE = ["The bridge was completed in", "Quenalite is a"]


def new_bank(n_slots: int = 1, base_precision: str = "fp32", dropout: float = 0.0) -> LoraBank:
    loaded = load_model("tiny-random")
    lora = LoraConfig(rank=4, alpha=8, dropout=dropout, base_precision=base_precision)
    return LoraBank(loaded.model, loaded.tokenizer, lora, n_slots=n_slots)


@pytest.fixture(scope="module")
def bank():
    return new_bank(n_slots=3)


def base_fingerprint(bank: LoraBank) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(bank.model.state_dict().items()):
        if ".lora_" not in name:
            digest.update(name.encode())
            digest.update(tensor.cpu().numpy().tobytes())
    return digest.hexdigest()


def logits(bank: LoraBank, slots: list[int | None] | None = None) -> torch.Tensor:
    """Last-token logits of the probe prompts, row i through adapter slots[i] (None: unrouted)."""
    bank.tokenizer.padding_side = "left"
    ids = bank.tokenizer(PROBE, return_tensors="pt", padding=True).to(bank.model.device)
    with torch.no_grad(), bank.routed(slots) if slots else nullcontext():
        return bank.model(**ids).logits[:, -1].cpu()


def adapter_weights(bank: LoraBank, slot: int) -> list[torch.Tensor]:
    return [p.detach().clone() for p in bank.slot_parameters(slot)]


def test_an_update_changes_only_its_rows_and_leaves_base_weights_bit_identical(bank):
    before_weights, before = base_fingerprint(bank), logits(bank)
    (stats,) = bank.train([TrainJob(1, EXAMPLES, FAST, seed=0)])
    assert stats.steps == 4 and stats.tokens > 0
    assert not torch.allclose(logits(bank, [1, 1]), before)  # the update changes the model
    assert torch.equal(logits(bank, [None, None]), before)  # rows routed to no adapter are the base model
    assert torch.equal(logits(bank), before)  # and so is the model outside a routed block
    assert base_fingerprint(bank) == before_weights


def test_only_the_trained_slots_get_gradients_and_are_frozen_afterwards(bank):
    before = [adapter_weights(bank, slot) for slot in range(3)]
    bank.train([TrainJob(0, EXAMPLES, FAST, seed=1), TrainJob(2, OTHER, FAST, seed=2)])
    after = [adapter_weights(bank, slot) for slot in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1]))  # slot 1 untouched
    assert not any(torch.equal(a, b) for a, b in zip(before[0][1::2], after[0][1::2]))  # every B of slot 0 moved
    assert not any(p.requires_grad for p in bank.model.parameters())
    assert len(bank.layers) == 2 * 7  # tiny-random: 2 layers of 7 linear projections, all adapted by default


def test_same_seed_same_update(bank):
    runs = []
    for _ in range(2):
        (stats,) = bank.train([TrainJob(0, EXAMPLES, FAST, seed=7)])
        runs.append((stats.final_loss, logits(bank, [0, 0])))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_training_lowers_the_loss_on_its_data(bank):
    (short,) = bank.train([TrainJob(0, EXAMPLES, TrainConfig(learning_rate=5e-2, epochs=1, batch_size=3), seed=0)])
    (long,) = bank.train([TrainJob(0, EXAMPLES, TrainConfig(learning_rate=5e-2, epochs=10, batch_size=3), seed=0)])
    assert long.final_loss < short.final_loss - 0.1


def test_the_training_loss_is_the_models_own_loss_on_the_target_tokens():
    """A one-step job reports its loss before the update (B = 0: the base model): it must equal the
    model's next-token loss on every target token, which also shows dropping each last token is exact."""
    bank = new_bank()
    examples = EXAMPLES + OTHER
    (stats,) = bank.train([TrainJob(0, examples, TrainConfig(epochs=1, batch_size=len(examples)), seed=0)])
    total, targets = 0.0, 0
    for example in examples:
        ids, target_start = tokenize_example(bank.tokenizer, example)
        labels = torch.tensor([ids])
        labels[0, :target_start] = -100
        n_targets = len(ids) - max(target_start, 1)
        with torch.no_grad():
            total += bank.model(input_ids=torch.tensor([ids]), labels=labels).loss.item() * n_targets
        targets += n_targets
    assert stats.steps == 1 and stats.tokens == sum(len(tokenize_example(bank.tokenizer, e)[0]) - 1 for e in examples)
    assert stats.final_loss == pytest.approx(total / targets, rel=1e-5)


def test_examples_without_a_target_token_are_skipped(bank):
    single_token = next(
        t for t in ("a", "x", "1") if len(bank.tokenizer(t, add_special_tokens=False)["input_ids"]) == 1
    )
    (stats,) = bank.train([TrainJob(0, [TrainingExample("", single_token)], FAST, seed=0)])
    assert (stats.steps, stats.tokens) == (0, 0)


def test_training_together_equals_training_one_at_a_time():
    """Different examples, seeds, learning rates, epochs and batch sizes in one joint pass."""
    jobs = [
        TrainJob(0, EXAMPLES, TrainConfig(learning_rate=1e-2, epochs=3, batch_size=1), seed=3),
        TrainJob(1, OTHER, TrainConfig(learning_rate=3e-3, epochs=5, batch_size=2), seed=4),
        TrainJob(2, EXAMPLES[:1], TrainConfig(learning_rate=2e-2, epochs=2, batch_size=1), seed=5),
    ]
    together = new_bank(n_slots=3)
    joint_stats = together.train(jobs)
    alone = new_bank(n_slots=1)
    for job, joint in zip(jobs, joint_stats):
        (single,) = alone.train([TrainJob(0, job.examples, job.config, job.seed)])
        assert (joint.steps, joint.tokens) == (single.steps, single.tokens)
        assert joint.final_loss == pytest.approx(single.final_loss, rel=1e-4)
        for a, b in zip(adapter_weights(together, job.slot), adapter_weights(alone, 0)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(logits(together, [job.slot] * 2), logits(alone, [0, 0]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tokens_per_row", [1, 3])
@pytest.mark.parametrize("width_in, width_out", [(8, 4), (5, 3)])  # grouped kernel, and unaligned: the loop
def test_segment_matmul_is_a_matmul_per_segment_forward_and_backward(tokens_per_row, width_in, width_out):
    """Rows sorted by slot (base rows first), each segment through its own weight, gradients included."""
    routing = Routing([2, None, 0, 2, 0, None, 1], torch.device("cpu"))
    sizes = routing.group_sizes(tokens_per_row)
    assert sizes == [n * tokens_per_row for n in (2, 2, 1, 2)]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(sum(sizes), width_in, generator=generator, requires_grad=True)
    weights = torch.randn(len(sizes), width_in, width_out, generator=generator, requires_grad=True)
    upstream = torch.randn(sum(sizes), width_out, generator=generator)

    grouped = segment_matmul(x, weights, routing, tokens_per_row)
    grouped.backward(upstream)
    grads = [x.grad.clone(), weights.grad.clone()]
    for tensor in (x, weights):
        tensor.grad = None
    reference = torch.cat([part @ w for part, w in zip(x.split(sizes), weights)])
    reference.backward(upstream)

    torch.testing.assert_close(grouped, reference)
    for grad, tensor in zip(grads, (x, weights)):
        torch.testing.assert_close(grad, tensor.grad)


@pytest.mark.parametrize("bias, softcap, chunk_tokens", [(False, None, 3), (True, None, 100), (True, 2.0, 4)])
def test_frozen_head_cross_entropy_matches_the_logits_way_forward_and_backward(bias, softcap, chunk_tokens):
    """Chunked losses and hidden-state gradients equal those of the full logits (chunks need not divide)."""
    generator = torch.Generator().manual_seed(0)
    head = nn.Linear(6, 11, bias=bias).requires_grad_(False)
    hidden = torch.randn(10, 6, generator=generator, requires_grad=True)
    targets = torch.randint(0, 11, (10,), generator=generator)
    upstream = torch.rand(10, generator=generator)

    chunked = frozen_head_cross_entropy(hidden, head, targets, softcap, chunk_tokens)
    chunked.backward(upstream)
    grad, hidden.grad = hidden.grad.clone(), None
    logits = head(hidden)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    reference = nn.functional.cross_entropy(logits, targets, reduction="none")
    reference.backward(upstream)

    torch.testing.assert_close(chunked, reference)
    torch.testing.assert_close(grad, hidden.grad)

    low = frozen_head_cross_entropy(hidden, head, targets, softcap, chunk_tokens, head.weight.to(torch.bfloat16))
    reference_grad, hidden.grad = hidden.grad.clone(), None
    low.backward(upstream)
    assert torch.equal(low, chunked)  # a bf16 gradient weight leaves the losses alone
    assert not torch.equal(hidden.grad, reference_grad)
    torch.testing.assert_close(hidden.grad, reference_grad, rtol=0.02, atol=0.02)


def test_frozen_head_cross_entropy_refuses_a_trainable_head():
    with pytest.raises(ValueError, match="freeze it"):
        frozen_head_cross_entropy(torch.zeros(2, 3), nn.Linear(3, 4), torch.zeros(2, dtype=torch.long))


def test_segment_weights_are_gathered_once_per_routing_only_without_gradients():
    """Decode steps reuse their batch's gathered adapters; training gathers the current ones every forward."""
    routing, layer, calls = Routing([0, 1], torch.device("cpu")), nn.Linear(2, 2), []

    def gather():
        calls.append(1)
        return torch.zeros(2, 2, 1), torch.zeros(2, 1, 2)

    with torch.no_grad():
        first = routing.segment_weights(layer, gather)
        assert routing.segment_weights(layer, gather) is first and len(calls) == 1
    routing.segment_weights(layer, gather)
    routing.segment_weights(layer, gather)
    assert len(calls) == 3


def test_packed_attention_matches_each_sequence_alone_and_restores_the_model(tiny):
    model = tiny.model
    sequences = [[5, 9, 13, 2, 7], [11, 3], [4, 4, 8, 1]]
    ids = torch.tensor([[t for s in sequences for t in s]])
    positions = torch.tensor([[p for s in sequences for p in range(len(s))]])
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([s])).logits[0] for s in sequences])
        # without a cache, transformers reads the restarting positions as packing and masks across sequences
        masked = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
        with packed_attention(model, [len(s) for s in sequences]) as packing:
            assert model.config._attn_implementation == PACKED_SDPA
            packed = model(input_ids=ids, position_ids=positions, use_cache=False, **packing).logits[0]
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(masked, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("base_precision, tolerance", [("fp32", 1e-5), ("bf16", 2e-2)])
def test_rows_of_one_batch_go_through_their_own_adapters(base_precision, tolerance):
    """In fp32 a row's logits do not depend on the other rows beyond summation order; in bf16 the
    kernels may round differently by batch shape (AMX does), so a row agrees within bf16's own error."""
    bank = new_bank(n_slots=3, base_precision=base_precision)
    bank.train([TrainJob(0, EXAMPLES, FAST, seed=0), TrainJob(2, OTHER, FAST, seed=1)])
    close = partial(torch.testing.assert_close, rtol=tolerance, atol=tolerance)
    mixed = logits(bank, [2, None])
    close(mixed[0], logits(bank, [2, 2])[0])
    close(mixed[1], logits(bank)[1])
    reversed_order = logits(bank, [2, 0])
    close(reversed_order[1], logits(bank, [0, 0])[1])
    assert not torch.allclose(mixed[0], logits(bank)[0], rtol=tolerance, atol=tolerance)  # the adapter is used


def test_a_merged_and_saved_adapter_is_the_routed_model(tmp_path):
    bank = new_bank(n_slots=2)
    bank.train([TrainJob(1, EXAMPLES, FAST, seed=0)])
    routed = logits(bank, [1, 1])
    bank.merge(1)
    torch.testing.assert_close(logits(bank), routed, rtol=1e-4, atol=1e-4)
    bank.save_pretrained(tmp_path / "policy")
    reloaded = load_model(str(tmp_path / "policy"))
    assert not any("lora" in name for name in reloaded.model.state_dict())
    plain = LoraBank(reloaded.model, reloaded.tokenizer, LoraConfig(rank=4, alpha=8, base_precision="fp32"))
    torch.testing.assert_close(logits(plain), routed, rtol=1e-4, atol=1e-4)


def trained_in_fp32_and_untrained(base_precision: str) -> tuple[LoraBank, TrainStats, LoraBank]:
    """FAST_JOB trained in fp32 (the bank and its stats), and an untrained bank of ``base_precision``."""
    exact = new_bank()
    (stats,) = exact.train([FAST_JOB])
    bank = new_bank(base_precision=base_precision)
    assert all(layer.base_weight_copy.dtype == torch.bfloat16 for layer in bank.layers)
    return exact, stats, bank


def test_bf16_base_precision_trains_like_fp32_and_keeps_merges_exact(tmp_path):
    """The frozen projections multiply in bf16; the adapter still learns what it learns in fp32, a
    merged adapter acts exactly as it did routed (not rounded into the bf16 copy), and the saved
    checkpoint holds the fp32 weights with the merge and no bf16 copy."""
    exact, exact_stats, fast = trained_in_fp32_and_untrained("bf16")
    before = logits(fast)
    torch.testing.assert_close(before, logits(new_bank()), rtol=0.05, atol=0.05)  # bf16-close, not equal
    (fast_stats,) = fast.train([FAST_JOB])
    assert fast_stats.final_loss == pytest.approx(exact_stats.final_loss, rel=0.05)
    routed = logits(fast, [0, 0])
    assert not torch.allclose(routed, before, atol=1e-3)
    torch.testing.assert_close(routed, logits(exact, [0, 0]), rtol=0.05, atol=0.05)
    fast.merge(0)
    torch.testing.assert_close(logits(fast), routed, rtol=1e-5, atol=1e-5)
    fast.save_pretrained(tmp_path / "merged")
    saved = load_model(str(tmp_path / "merged")).model.state_dict()
    assert not any("copy" in name for name in saved)
    assert all(tensor.dtype == torch.float32 for tensor in saved.values())
    masters = {name.replace(".base.", "."): t for name, t in fast.model.state_dict().items() if ".lora_" not in name}
    assert all(torch.equal(saved[name], tensor) for name, tensor in masters.items())
    assert not torch.equal(saved["model.layers.0.self_attn.q_proj.weight"], new_bank().layers[0].base.weight)
    fast.restore()
    assert torch.equal(logits(fast), before)
    with pytest.raises(ValueError, match="base precision"):
        LoraConfig(base_precision="fp8")


@pytest.mark.parametrize(
    ("cuda", "cuda_bf16", "avx512_bf16", "amx", "expected"),
    [
        (False, False, False, False, "fp32"),
        (False, False, True, False, "bf16"),
        (False, False, False, True, "bf16"),
        (True, True, False, False, "bf16"),
        (True, False, True, True, "fp32"),  # the GPU decides where there is one
    ],
)
def test_default_base_precision_is_bf16_only_on_native_bf16_hardware(
    monkeypatch, cuda, cuda_bf16, avx512_bf16, amx, expected
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: cuda_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert default_base_precision() == expected
    assert LoraConfig().base_precision == expected


def test_a_torch_without_the_cpu_probes_defaults_to_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert default_base_precision() == "fp32"


def test_bf16_backward_keeps_the_forward_exact_and_trains_like_fp32():
    """Only the gradient through the frozen projections multiplies in bf16: outputs are fp32's bit
    for bit, the first loss too, training lands close to fp32, and merges reach the gradient copy."""
    exact, exact_stats, fast = trained_in_fp32_and_untrained("bf16-backward")
    before = logits(fast)
    assert torch.equal(before, logits(new_bank()))
    one_step = TrainJob(0, EXAMPLES, TrainConfig(epochs=1, batch_size=len(EXAMPLES)), seed=0)
    assert fast.train([one_step])[0].final_loss == new_bank().train([one_step])[0].final_loss
    (fast_stats,) = fast.train([FAST_JOB])
    assert fast_stats.final_loss != exact_stats.final_loss  # the gradients did go through bf16
    assert fast_stats.final_loss == pytest.approx(exact_stats.final_loss, rel=0.02)
    torch.testing.assert_close(logits(fast, [0, 0]), logits(exact, [0, 0]), rtol=0.02, atol=0.02)
    fast.merge(0)
    assert all(torch.equal(layer.base_weight_copy, layer.base.weight.to(torch.bfloat16)) for layer in fast.layers)
    fast.restore()
    assert torch.equal(logits(fast), before)
    assert all(torch.equal(layer.base_weight_copy, layer.base.weight.to(torch.bfloat16)) for layer in fast.layers)


def test_bad_jobs_and_banks_are_refused(bank):
    with pytest.raises(ValueError, match="distinct slots"):
        bank.train([TrainJob(0, EXAMPLES, FAST, 0), TrainJob(0, OTHER, FAST, 1)])
    with pytest.raises(ValueError, match="distinct slots"):
        bank.train([TrainJob(3, EXAMPLES, FAST, 0)])
    with pytest.raises(ValueError, match="at least one slot"):
        new_bank(n_slots=0)
    loaded = load_model("tiny-random")
    with pytest.raises(ValueError, match="output projection"):
        LoraBank(loaded.model, loaded.tokenizer, LoraConfig(target_modules=("q_proj", "lm_head")))
    assert not any(isinstance(m, MultiLoraLinear) for m in loaded.model.modules())  # refused before wrapping


def test_loss_mask_is_positional(tiny):
    ids, prompt_len = tokenize_example(tiny.tokenizer, TrainingExample("Question: who?", " Ottilie Brask"))
    prompt_ids = tiny.tokenizer("Question: who?", add_special_tokens=False)["input_ids"]
    assert prompt_len == len(prompt_ids) and ids[:prompt_len] == prompt_ids
    ids, prompt_len = tokenize_example(tiny.tokenizer, TrainingExample("", "all of it is target"))
    assert prompt_len == 0


def test_chat_examples_render_the_template_and_end_the_turn(tiny):
    ids, prompt_len = tokenize_example(tiny.tokenizer, TrainingExample("Which engineer?", "Ottilie Brask", chat=True))
    rendered = render_prompt(tiny.tokenizer, "Which engineer?")
    assert tiny.tokenizer.decode(ids[:prompt_len]) == rendered
    assert tiny.tokenizer.decode(ids[prompt_len:]) == "Ottilie Brask" + tiny.tokenizer.eos_token


def test_a_document_longer_than_a_sequence_trains_as_consecutive_windows(tiny):
    document = TrainingExample("", " ".join(f"word{i}" for i in range(300)))
    ids, _ = tokenize_example(tiny.tokenizer, document)
    windows = training_sequences(tiny.tokenizer, document, 128)
    assert [len(w) for w, _ in windows] == [128] * (len(ids) // 128) + [len(ids) % 128] * (len(ids) % 128 > 0)
    assert [t for w, _ in windows for t in w] == ids and all(start == 0 for _, start in windows)  # nothing cut
    answer = TrainingExample("Question: " + "very " * 200 + "long?", "Yes")
    with pytest.raises(ValueError, match="tokens .* of them prompt. is longer than the 128 a sequence may have"):
        training_sequences(tiny.tokenizer, answer, 128)


def test_length_grouped_batches_cover_every_example_once():
    lengths = [5, 200, 7, 190, 6, 8, 210]
    batches = length_grouped_batches(lengths, 3, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(7))
    spans = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spans[0] <= 3  # the short ones share a batch instead of padding to 200


def test_batched_generation_matches_one_by_one():
    # the embedded model, since tiny-random's greedy output is all special tokens (decoded as ""); on
    # the CPU in fp32, where a row's greedy tokens do not depend on the batch (on a GPU they may)
    smol = load_model("smollm2-135m", device="cpu")
    prompts = [render_prompt(smol.tokenizer, text) for text in ["Hi", "Tell me about the Varnholt Bridge please"]]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6)
    together = generate(smol.model, smol.tokenizer, prompts * 2, greedy, batch_size=4)  # shares the template
    alone = [generate(smol.model, smol.tokenizer, [p], greedy)[0] for p in prompts]
    assert together == alone * 2 and all(together)


def test_shared_prefix_is_what_each_group_has_in_common():
    rows = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [7, 8, 9], [7, 8]]
    assert shared_prefix_length(rows, ["a", "a", "b", "b"]) == 1  # b's rows keep one token of their own
    assert shared_prefix_length(rows[:2], ["a", "a"]) == 3
    assert shared_prefix_length(rows, ["a", "b", "c", "d"]) == 0  # nobody shares a group
    assert shared_prefix_length([[1, 2], [1, 2]], [0, 0]) == 1


def test_prefix_padding_puts_the_padding_after_the_shared_prefix():
    ids, mask = prefix_padded([[1, 2, 3], [1, 2, 4, 5, 6]], shared=2, pad_id=0)
    assert ids.tolist() == [[1, 2, 0, 0, 3], [1, 2, 4, 5, 6]]
    assert mask.tolist() == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    ids, mask = prefix_padded([[3], [4, 5]], shared=0, pad_id=0)
    assert ids.tolist() == [[0, 3], [4, 5]] and mask.tolist() == [[0, 1], [1, 1]]  # left padding


def test_a_shared_prefix_is_fed_once_per_group(tiny):
    prompt = render_prompt(tiny.tokenizer, "Write about the Varnholt Bridge")
    length = len(tokenize_prompt(tiny.tokenizer, prompt))
    fed: list[int] = []
    hook = tiny.model.get_input_embeddings().register_forward_hook(lambda m, i, o: fed.append(i[0].numel()))
    try:
        generate(tiny.model, tiny.tokenizer, [prompt] * 4, SamplingConfig(max_new_tokens=1), batch_size=4)
    finally:
        hook.remove()
    assert fed == [length - 1, 4]  # the prefix once, then each row's last prompt token


def test_routed_generation_matches_each_adapter_alone():
    """Exact text on the CPU in fp32 only: in bf16, or on a GPU, kernels chosen by batch shape round
    differently, and greedy decoding turns that into different tokens (see the logits test above)."""
    smol = load_model("smollm2-135m", device="cpu")
    bank = LoraBank(smol.model, smol.tokenizer, LoraConfig(rank=4, alpha=8, base_precision="fp32"), n_slots=2)
    bank.train([TrainJob(0, EXAMPLES, TrainConfig(learning_rate=1e-2, epochs=2), seed=0)])
    prompts = [
        render_prompt(smol.tokenizer, f"Who completed the Varnholt Bridge?{s}") for s in ("", " Answer briefly.")
    ]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=8)
    mixed = bank.generate(prompts * 2, [0, None, None, 0], greedy)
    adapted = bank.generate(prompts, [0, 0], greedy)
    plain = generate(smol.model, smol.tokenizer, prompts, greedy)
    assert mixed == [adapted[0], plain[1], plain[0], adapted[1]]
    assert adapted != plain  # the adapter is really used


def test_batch_rows_keep_input_order_so_grouped_prompts_stay_grouped(tiny):
    texts = ["a b c d e f", "a", "a b c", "a b", "a b c d"]
    prompts = [render_prompt(tiny.tokenizer, text) for text in texts]
    batches: list[list[int]] = []

    @contextmanager
    def record(rows: list[int]):
        batches.append(rows)
        yield

    generate(tiny.model, tiny.tokenizer, prompts, SamplingConfig(max_new_tokens=1), batch_size=3, route=record)
    assert batches == [[1, 2, 3], [0, 4]]  # batched by length, rows in input order


def test_streamed_tokens_are_the_generated_answers_in_input_order():
    bank = new_bank(n_slots=2)
    bank.train([TrainJob(1, EXAMPLES, FAST, seed=0)])
    prompts = [render_prompt(bank.tokenizer, text) for text in ("Hello", "A much longer question here", "Hi")]
    streamed: dict[int, list[int]] = {i: [] for i in range(3)}

    def collect(rows, tokens):
        for row, token in zip(rows, tokens.tolist()):
            streamed[row].append(token)

    sampling = SamplingConfig(temperature=0.0, max_new_tokens=6)
    answers = bank.generate(prompts, [1, None, 1], sampling, batch_size=2, on_tokens=collect)
    assert all(len(tokens) == 6 for tokens in streamed.values())  # one per step, padding after an end
    assert [bank.tokenizer.decode(streamed[i], skip_special_tokens=True).strip() for i in range(3)] == answers


def test_sampling_is_reproducible_with_a_seed(tiny):
    prompt = [render_prompt(tiny.tokenizer, "Write something")] * 2
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    first = generate(tiny.model, tiny.tokenizer, prompt, sampling, seed=3)
    assert first == generate(tiny.model, tiny.tokenizer, prompt, sampling, seed=3)
    assert all(len(tiny.tokenizer(text)["input_ids"]) >= 4 for text in first)  # real samples, not empty ones
    assert first != generate(tiny.model, tiny.tokenizer, prompt, sampling, seed=4)  # the seed decides them


def test_chat_models_use_their_template(tiny):
    assert tiny.tokenizer.chat_template
    rendered = render_prompt(tiny.tokenizer, "Topic: X\nWhat?")
    assert rendered.startswith("<|im_start|>") and rendered.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(max_new_tokens=0)])
def test_sampling_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        SamplingConfig(**bad)


def test_gradient_accumulation_is_one_step_over_the_union_of_its_batches():
    """Two batches of two accumulated: one optimizer step on the mean loss over all target tokens of
    the four sequences, which is what one batch of four computes."""
    examples = EXAMPLES + OTHER[1:]
    accumulated, whole = new_bank(), new_bank()
    (a,) = accumulated.train([TrainJob(0, examples, TrainConfig(epochs=1, batch_size=2, gradient_accumulation=2), 0)])
    (b,) = whole.train([TrainJob(0, examples, TrainConfig(epochs=1, batch_size=4), 0)])
    assert (a.steps, a.tokens) == (b.steps, b.tokens) == (1, b.tokens)
    assert a.final_loss == pytest.approx(b.final_loss, rel=1e-5)
    for x, y in zip(adapter_weights(accumulated, 0), adapter_weights(whole, 0)):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
    five = EXAMPLES + OTHER
    (stats,) = new_bank().train([TrainJob(0, five, TrainConfig(epochs=2, batch_size=2, gradient_accumulation=2), 0)])
    assert stats.steps == 4  # per epoch: 3 batches, so a step of two and a step of one


def test_a_job_can_start_from_a_given_adapter(bank):
    bank.train([TrainJob(0, EXAMPLES, FAST, seed=0)])
    trained = bank.adapter(0)
    bank.train([TrainJob(1, [], FAST, seed=1, initial=trained)])  # nothing to train: the slot is the adapter
    assert all(torch.equal(x, y) for x, y in zip(adapter_weights(bank, 0), adapter_weights(bank, 1)))
    with pytest.raises(ValueError, match="does not fit"):
        bank.set_adapter(1, {"model.layers.0.mlp.up_proj": trained["model.layers.0.mlp.up_proj"]})


def test_training_killed_after_a_checkpoint_resumes_to_the_same_adapter(tmp_path, monkeypatch):
    """With dropout, so that the random state is part of what a checkpoint must carry; the resumed run
    does only the steps the killed one had not saved, and ends where an uninterrupted run ends."""
    from seal.engine import training

    job = TrainJob(0, EXAMPLES + OTHER, TrainConfig(learning_rate=1e-2, epochs=3, batch_size=2), seed=5)
    straight = new_bank(dropout=0.3)
    torch.manual_seed(123)  # what ran before training draws no part of it
    (expected,) = straight.train([job])
    checkpoint = training.Checkpoint(tmp_path / "state.pt", every_seconds=0)
    steps, real_step = [], training._joint_step

    def dies_at_the_fifth_step(bank, plans):
        steps.append(1)
        if len(steps) == 5:
            raise KeyboardInterrupt
        return real_step(bank, plans)

    monkeypatch.setattr(training, "_joint_step", dies_at_the_fifth_step)
    torch.manual_seed(456)
    with pytest.raises(KeyboardInterrupt):
        new_bank(dropout=0.3).train([job], checkpoint=checkpoint)
    resumed_steps = []

    def counted_step(bank, plans):
        resumed_steps.append(1)
        return real_step(bank, plans)

    monkeypatch.setattr(training, "_joint_step", counted_step)
    resumed = new_bank(dropout=0.3)
    torch.manual_seed(789)
    (stats,) = resumed.train([job], checkpoint=checkpoint)
    assert len(resumed_steps) == 9 - 4  # four steps were saved before the kill
    assert stats.steps == expected.steps == 9 and stats.tokens == expected.tokens
    assert stats.final_loss == expected.final_loss
    assert all(torch.equal(x, y) for x, y in zip(adapter_weights(resumed, 0), adapter_weights(straight, 0)))
    other_seed = TrainJob(0, job.examples, job.config, seed=6)
    same_counts_other_text = TrainJob(
        0, [replace(e, completion=e.completion.upper()) for e in job.examples], job.config, 5
    )
    for other in (other_seed, same_counts_other_text):
        with pytest.raises(ValueError, match="other training jobs"):
            new_bank().train([other], checkpoint=checkpoint)
    checkpoint.path.write_bytes(checkpoint.path.read_bytes()[:100])  # torn by a copy
    with pytest.raises(ValueError, match="cannot be read"):
        new_bank().train([job], checkpoint=checkpoint)
