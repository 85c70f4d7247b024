"""Training LoRA updates, many at once: the training data types and the joint training loop.

Each :class:`TrainJob` trains its own adapter slot of a :class:`~seal.engine.bank.LoraBank` with its
own examples, seed, learning rate, epochs, batch size and gradient accumulation, as it would alone:
sequences never mix (positions restart per packed sequence, so attention stays within it; the loss
is a sum of per-slot means), so the result differs from one-at-a-time training only by
floating-point summation order. A long run can save its state at an interval and resume from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Sequence

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from seal.engine.generation import render_prompt, tokenize_prompt
from seal.engine.loss import frozen_head_cross_entropy
from seal.engine.packing import packed_attention

if TYPE_CHECKING:
    from seal.engine.bank import LoraBank

Adapter = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""One slot's factors by layer name: ``(A, B)`` with A ``(in, rank)`` and B ``(rank, out)``, unscaled."""


@dataclass(frozen=True)
class TrainConfig:
    """How an update is trained: AdamW with linear decay, loss averaged over target tokens.

    An optimizer step takes ``gradient_accumulation`` batches of ``batch_size`` sequences (each
    epoch's last step may take fewer); its loss is the mean over all their target tokens."""

    learning_rate: float = 1e-3
    """AdamW's learning rate, decayed to 0 by ``schedule``."""
    epochs: int = 10
    """Passes over the examples."""
    batch_size: int = 1
    """Sequences per batch."""
    gradient_accumulation: int = 1
    """Batches per optimizer step."""
    max_seq_len: int = 1024
    """Tokens per sequence at most: a longer document trains as consecutive windows."""
    schedule: Literal["linear", "cosine"] = "linear"
    """How the learning rate decays to 0 over the steps."""
    gradient_checkpointing: bool = False
    """Keep fewer activations and recompute them in the backward pass: less memory, more time."""

    def __post_init__(self) -> None:
        if not self.learning_rate > 0 or self.learning_rate == float("inf"):
            raise ValueError(f"learning rate must be a number > 0, got {self.learning_rate}")
        for name in ("epochs", "batch_size", "gradient_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.max_seq_len < 2:
            raise ValueError(f"max sequence length must be >= 2, got {self.max_seq_len}")
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be linear or cosine, got {self.schedule!r}")


@dataclass(frozen=True)
class TrainingExample:
    """One training sequence. Loss falls on ``completion`` only; ``prompt`` (may be empty) is context.

    With ``chat``, ``prompt`` is a user message: it is rendered with the tokenizer's chat template
    and the completion ends with the end-of-turn token, so the model learns to answer and stop.
    With ``loss_on_prompt`` every token carries the loss (ARC's "all tokens" strategy).
    """

    prompt: str
    completion: str
    chat: bool = False
    loss_on_prompt: bool = False


@dataclass(frozen=True)
class TrainJob:
    """One update to train into adapter ``slot``: its own examples, hyper-parameters and seed. It starts
    from ``initial`` (e.g. a saved policy adapter to train further), or from a fresh adapter drawn with
    the seed."""

    slot: int
    examples: Sequence[TrainingExample]
    config: TrainConfig
    seed: int
    initial: Adapter | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TrainStats:
    """``steps``: optimizer steps; ``tokens``: tokens fed through the model (every sequence but its last
    token, which predicts nothing); ``seconds``: this job's share of the joint pass (its wall time
    divided by the jobs in it)."""

    steps: int
    tokens: int
    seconds: float
    final_loss: float


@dataclass(frozen=True)
class Checkpoint:
    """Where training saves its state (adapters, optimizer, progress) at most every ``every_seconds``,
    and at its end; training given an existing checkpoint of the same jobs resumes from it, so the
    result equals that of an uninterrupted run."""

    path: Path
    every_seconds: float = 300.0


def tokenize_example(tokenizer: PreTrainedTokenizerBase, example: TrainingExample) -> tuple[list[int], int]:
    """Token ids of prompt + completion and where the loss starts, so the loss mask is set by position."""
    if example.chat:
        prompt_ids = tokenize_prompt(tokenizer, render_prompt(tokenizer, example.prompt))
        completion_ids = tokenizer(example.completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, 0 if example.loss_on_prompt else len(prompt_ids)


def training_sequences(
    tokenizer: PreTrainedTokenizerBase, example: TrainingExample, max_len: int
) -> list[tuple[list[int], int]]:
    """The sequences an example trains as: itself, or, if longer than ``max_len`` tokens, a document
    (every token a target) as consecutive windows of ``max_len`` tokens; an example whose loss starts
    after a prompt is refused then, since a window would lose its prompt or its answer."""
    ids, target_start = tokenize_example(tokenizer, example)
    if len(ids) <= max_len:
        return [(ids, target_start)]
    if target_start > 0:
        raise ValueError(
            f"a training example of {len(ids)} tokens ({target_start} of them prompt) is longer than the "
            f"{max_len} a sequence may have"
        )
    return [(ids[start : start + max_len], 0) for start in range(0, len(ids), max_len)]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then grouped by length so a batch pads little, in shuffled batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable: equal lengths keep their shuffled order
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


@dataclass
class _Plan:
    """A job's optimizer steps over all its epochs, each a list of batches of example indices, in the
    order it would see them alone."""

    job: TrainJob
    tokenized: list[tuple[list[int], int]]
    steps: list[list[list[int]]]
    step: int = 0
    tokens: int = 0
    loss: float = float("nan")

    def targets(self, batch: list[int]) -> int:
        """Tokens carrying the loss in ``batch``: each sequence's tokens from its prompt's end on, but the first."""
        return sum(len(ids) - max(start, 1) for ids, start in (self.tokenized[i] for i in batch))


def decay(schedule: str, progress: float) -> float:
    """The learning rate's factor after ``progress`` (0 to 1) of the steps: linear or cosine, 1 down to 0."""
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def plan(bank: LoraBank, job: TrainJob) -> _Plan:
    """Tokenize ``job``'s examples (dropping those without a target token), cut its epochs into steps
    with the job's seed, and set its slot to where it starts."""
    if job.initial is None:
        bank.reset(job.slot, job.seed)
    else:
        bank.set_adapter(job.slot, job.initial)
    config = job.config
    tokenized = [s for e in job.examples for s in training_sequences(bank.tokenizer, e, config.max_seq_len)]
    tokenized = [(ids, start) for ids, start in tokenized if len(ids) > max(start, 1)]  # has a target
    shuffler = random.Random(job.seed)
    lengths = [len(ids) for ids, _ in tokenized]
    steps = []
    for _ in range(config.epochs if tokenized else 0):
        batches = length_grouped_batches(lengths, config.batch_size, shuffler)
        accumulation = config.gradient_accumulation
        steps += [batches[start : start + accumulation] for start in range(0, len(batches), accumulation)]
    return _Plan(job, tokenized, steps)


def train_jobs(
    bank: LoraBank,
    jobs: Sequence[TrainJob],
    progress: str | None = None,
    checkpoint: Checkpoint | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> list[TrainStats]:
    """Set each job's slot (fresh with its seed, or its ``initial`` adapter) and train all of them in
    joint steps; ``progress`` names a bar; with a ``checkpoint`` the run saves and resumes its state;
    ``on_step(done, total)`` hears of every step.

    Step t feeds step t of every job that still has one; job j's learning rate at its step t is
    ``lr_j * (1 - t / steps_j)`` (or the cosine of its ``schedule``). One AdamW over all slots equals one
    per slot: it is elementwise, and a slot without a batch in a step has no gradient, so it is skipped.
    """
    if len({job.slot for job in jobs}) != len(jobs) or any(not 0 <= job.slot < bank.n_slots for job in jobs):
        raise ValueError(f"jobs need distinct slots in [0, {bank.n_slots}), got {[job.slot for job in jobs]}")
    plans = [plan(bank, job) for job in jobs]
    training = [p for p in plans if p.steps]
    seconds = 0.0
    if training:
        with _random_state(bank.model.device, training[0].job.seed):
            seconds = _train(bank, training, progress, checkpoint, on_step)
    share = seconds / max(len(jobs), 1)
    return [TrainStats(len(p.steps), p.tokens, share if p.steps else 0.0, p.loss) for p in plans]


@contextmanager
def _random_state(device: torch.device, seed: int) -> Iterator[None]:
    """Training's random draws (dropout) start from the jobs' seed, whatever ran before; the caller's
    random state is as it was afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _train(
    bank: LoraBank,
    plans: list[_Plan],
    progress: str | None,
    checkpoint: Checkpoint | None,
    on_step: Callable[[int, int], None] | None,
) -> float:
    """Train the plans; returns the seconds it took (those before a checkpoint it resumed from included)."""
    started = time.perf_counter()
    groups = [{"params": bank.slot_parameters(p.job.slot), "lr": p.job.config.learning_rate} for p in plans]
    for group in groups:
        for parameter in group["params"]:
            parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)
    total_steps = max(len(p.steps) for p in plans)
    jobs = _fingerprint(plans) if checkpoint else []  # the same for every save: the data is hashed once
    first, earlier = _restore(checkpoint, jobs, bank, plans, optimizer) if checkpoint else (0, 0.0)
    saved_at = time.monotonic()
    bar = tqdm(total=total_steps, initial=first, desc=progress, disable=progress is None, unit="step")
    bank.model.train()
    checkpointing = any(p.job.config.gradient_checkpointing for p in plans)
    if checkpointing:
        _activation_checkpointing(bank.model, on=True)
    try:
        for step in range(first, total_steps):
            active = [(p, g) for p, g in zip(plans, optimizer.param_groups) if step < len(p.steps)]
            for p, group in active:
                group["lr"] = p.job.config.learning_rate * decay(p.job.config.schedule, step / len(p.steps))
            losses = _joint_step(bank, [p for p, _ in active])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for (p, _), loss in zip(active, losses):
                p.loss = loss
            done = step + 1
            if checkpoint and (done == total_steps or time.monotonic() - saved_at >= checkpoint.every_seconds):
                _save(checkpoint, jobs, bank, plans, optimizer, done, earlier + time.perf_counter() - started)
                saved_at = time.monotonic()
            bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}", refresh=False)
            bar.update()
            if on_step:
                on_step(done, total_steps)
    finally:
        bar.close()
        if checkpointing:
            _activation_checkpointing(bank.model, on=False)
        bank.model.eval()
        for group in groups:
            for parameter in group["params"]:
                parameter.requires_grad_(False)
    return earlier + time.perf_counter() - started


def _activation_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Switch activation checkpointing; transformers 5 renamed it from gradient checkpointing (the old name
    warns). Switching it on also hooks the input embeddings so that their outputs require a gradient
    (which only reentrant checkpointing needs); switching off removes that hook, which every later
    forward pass, training or not, would otherwise keep."""
    kwargs = {"use_reentrant": False}  # not reentrant: the frozen embeddings' outputs need no gradient
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()
    if not on:
        model.disable_input_require_grads()


def _joint_step(bank: LoraBank, plans: list[_Plan]) -> list[float]:
    """One forward/backward over the current step of every plan; returns each plan's mean loss.

    The sequences of all of a step's batches are packed into one row (positions restart per
    sequence, and attention runs within each: :mod:`seal.engine.packing`; no padding is computed),
    ordered by slot and routed token by token. Accumulated batches thus share one pass: the
    gradient of the mean over all their target tokens is what accumulating them computes.
    """
    model, device = bank.model, bank.model.device
    ids: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    token_slots: list[int] = []
    lengths: list[int] = []
    examples = [[e for batch in p.steps[p.step] for e in batch] for p in plans]
    for p, step in zip(plans, examples):
        for example in step:
            sequence, prompt_len = p.tokenized[example]
            # the last token predicts nothing and no earlier token attends to it: it is not fed
            inputs = sequence[:-1]
            ids += inputs
            positions += range(len(inputs))
            # position t predicts token t + 1, if that token carries the loss
            targets += [sequence[t + 1] if t + 1 >= prompt_len else -100 for t in range(len(inputs))]
            token_slots += [p.job.slot] * len(inputs)
            lengths.append(len(inputs))
            p.tokens += len(inputs)
    # the backward pass runs inside the routing too: gradient checkpointing recomputes the forward there
    with bank.routed(token_slots, per_token=True), packed_attention(model, lengths) as packing:
        hidden = model.base_model(
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([positions], device=device),
            use_cache=False,
            **packing,
        )[0][0]
        target_ids = torch.tensor(targets, device=device)
        mask = target_ids != -100
        token_losses = frozen_head_cross_entropy(
            hidden[mask],
            model.get_output_embeddings(),
            target_ids[mask],
            softcap=getattr(model.config, "final_logit_softcapping", None),
            gradient_weight=bank.head_gradient_weight,
        )
        # each plan's targets are consecutive: summed per plan in a fixed order (no atomic adds on a GPU)
        counts = [p.targets(step) for p, step in zip(plans, examples)]
        means = torch.stack([losses.sum() / n for losses, n in zip(token_losses.split(counts), counts)])
        means.sum().backward()
    for p in plans:
        p.step += 1
    return means.tolist()


def _fingerprint(plans: list[_Plan]) -> list[list[object]]:
    """What a checkpoint must have been made by: the same slots, seeds, steps, learning rates and tokens."""
    return [[p.job.slot, p.job.seed, len(p.steps), _digest(p.tokenized), p.job.config.learning_rate] for p in plans]


def _digest(tokenized: list[tuple[list[int], int]]) -> str:
    return hashlib.sha256(json.dumps(tokenized).encode()).hexdigest()


def _save(
    checkpoint: Checkpoint,
    jobs: list[list[object]],
    bank: LoraBank,
    plans: list[_Plan],
    optimizer: torch.optim.Optimizer,
    done: int,
    seconds: float,
) -> None:
    state = {
        "jobs": jobs,
        "step": done,
        "seconds": seconds,
        "plans": [(p.tokens, p.loss) for p in plans],
        "adapters": [[t.detach().cpu() for t in bank.slot_parameters(p.job.slot)] for p in plans],
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),  # dropout
        "cuda_rng": torch.cuda.get_rng_state(bank.model.device) if bank.model.device.type == "cuda" else None,
    }
    checkpoint.path.parent.mkdir(parents=True, exist_ok=True)
    staging = checkpoint.path.with_name(checkpoint.path.name + ".tmp")
    torch.save(state, staging)
    os.replace(staging, checkpoint.path)


def _restore(
    checkpoint: Checkpoint,
    jobs: list[list[object]],
    bank: LoraBank,
    plans: list[_Plan],
    optimizer: torch.optim.Optimizer,
) -> tuple[int, float]:
    """Load a checkpoint's state into the bank, plans and optimizer if it was saved by ``jobs`` (their
    :func:`_fingerprint`); returns the steps it had done and the seconds they took ((0, 0.0) without one)."""
    if not checkpoint.path.exists():
        return 0, 0.0
    try:
        state = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{checkpoint.path} cannot be read ({reason}): remove it to start over") from error
    if state["jobs"] != jobs:
        raise ValueError(f"{checkpoint.path} was saved by other training jobs: remove it to start over")
    with torch.no_grad():
        for p, tensors in zip(plans, state["adapters"]):
            for parameter, saved in zip(bank.slot_parameters(p.job.slot), tensors):
                parameter.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and bank.model.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], bank.model.device)
    for p, (tokens, loss) in zip(plans, state["plans"]):
        p.tokens, p.loss = tokens, loss
        p.step = min(state["step"], len(p.steps))
    return state["step"], state["seconds"]
