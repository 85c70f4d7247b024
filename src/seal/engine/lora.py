"""LoRA updates on frozen base weights, many adapters at once.

:class:`LoraBank` wraps every target linear layer of a model in a :class:`MultiLoraLinear` holding
``n_slots`` independent low-rank adapters. Each row of a batch (or, in training, each token of
one packed row) is routed to one slot, or to none (the base model). So K updates train in one
forward/backward pass over one copy of the base weights, and then answer in one batched
generation, instead of K passes. Each slot has its own examples, seed, learning rate, epochs and
batch size, and trains as it would alone: sequences never mix (positions restart per packed
sequence, so attention stays within it; the loss is a sum of per-slot means), so the result
differs from one-at-a-time training only by floating-point summation order.

No model is re-created and no ``Trainer`` is built per update. The base weights never receive
gradients and stay bit-identical unless a slot is explicitly merged into them (:meth:`LoraBank.merge`).
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seal.engine.generation import SamplingConfig, generate, render_prompt, tokenize_prompt
from seal.engine.loss import frozen_head_cross_entropy
from seal.engine.packing import packed_attention
from seal.machine import default_device, has_native_bf16

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BASE_PRECISIONS = {
    "fp32": (None, None),
    "bf16": (torch.bfloat16, torch.bfloat16),
    "bf16-backward": (None, torch.bfloat16),
}
"""Each precision's (forward, input-gradient) dtype for the frozen projections; None: the model's own."""


def default_base_precision() -> str:
    """``bf16`` where the default device has native bf16 units, else ``fp32``: elsewhere bf16 is
    emulated, and slower than fp32."""
    return "bf16" if has_native_bf16(default_device()) else "fp32"


@dataclass(frozen=True)
class LoraConfig:
    """Shape of the adapter. Defaults follow the SEAL paper's knowledge-incorporation runs."""

    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_PROJECTIONS
    base_precision: str = field(default_factory=default_base_precision)
    """How the frozen projections multiply, wherever the bank's model runs (training, answering,
    writing self-edits): ``fp32``; ``bf16`` through a bf16 copy of each loaded weight (the default
    where the hardware has native bf16 units, see :func:`default_base_precision`); or
    ``bf16-backward``, forward in fp32 (losses, answers and self-edits are fp32's) and only the
    training gradient through the projections in bf16. Adapters, merged adapters, their sum with the
    frozen output and everything outside the projections stay in the model's precision, so small
    updates are not rounded away as under bf16 autocast."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA rank must be >= 1 and alpha > 0, got rank={self.rank} alpha={self.alpha}")
        if self.base_precision not in BASE_PRECISIONS:
            raise ValueError(f"base precision must be one of {', '.join(BASE_PRECISIONS)}, got {self.base_precision!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How an update is trained: AdamW with linear decay, loss averaged over target tokens."""

    learning_rate: float = 1e-3
    epochs: int = 10
    batch_size: int = 1
    max_seq_len: int = 1024

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.max_seq_len < 2:
            raise ValueError(f"max sequence length must be >= 2, got {self.max_seq_len}")


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
    """One update to train into adapter ``slot``: its own examples, hyper-parameters and seed."""

    slot: int
    examples: Sequence[TrainingExample]
    config: TrainConfig
    seed: int


@dataclass(frozen=True)
class TrainStats:
    """``tokens``: tokens fed through the model (every sequence but its last token, which predicts
    nothing); ``seconds``: this job's share of the joint pass (its wall time divided by the jobs in it)."""

    steps: int
    tokens: int
    seconds: float
    final_loss: float


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, example: TrainingExample, max_len: int
) -> tuple[list[int], int]:
    """Token ids of prompt + completion and the prompt length, so the loss mask is set by position."""
    if example.chat:
        prompt_ids = tokenize_prompt(tokenizer, render_prompt(tokenizer, example.prompt))
        completion_ids = tokenizer(example.completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    target_start = 0 if example.loss_on_prompt else min(len(prompt_ids), max_len)
    return (prompt_ids + completion_ids)[:max_len], target_start


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then grouped by length so a batch pads little, in shuffled batch order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable: equal lengths keep their shuffled order
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def by_slot(slots: Sequence[int | None]) -> list[int]:
    """Indices of ``slots`` in slot order, rows without an adapter (None) first; stable within a slot."""
    return sorted(range(len(slots)), key=lambda i: -1 if slots[i] is None else slots[i])


class Routing:
    """Which adapter slot each batch row uses (None: the base model), precomputed once per batch.

    Rows are processed grouped by slot: ``order`` sorts them (stable), ``segments`` are the
    (slot, start, end) runs in that order, ``inverse`` puts the results back. With ``per_token``
    the batch is one packed row and ``slots`` gives the slot of each of its tokens instead.
    """

    def __init__(self, slots: Sequence[int | None], device: torch.device, per_token: bool = False):
        self.per_token = per_token
        self.n_rows = len(slots)
        order = by_slot(slots)
        self.is_sorted = order == list(range(len(slots)))
        self.order = torch.tensor(order, device=device)
        self.inverse = torch.argsort(self.order)
        self.segments: list[tuple[int | None, int, int]] = []
        for position, row in enumerate(order):
            if self.segments and self.segments[-1][0] == slots[row]:
                slot, start, _ = self.segments[-1]
                self.segments[-1] = (slot, start, position + 1)
            else:
                self.segments.append((slots[row], position, position + 1))
        self._group_ends: dict[int, torch.Tensor] = {}
        self._weights: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def group_sizes(self, tokens_per_row: int) -> list[int]:
        """Tokens in each segment when every row holds ``tokens_per_row`` of them."""
        return [(end - start) * tokens_per_row for _, start, end in self.segments]

    def group_ends(self, tokens_per_row: int) -> torch.Tensor:
        """Cumulative :meth:`group_sizes` as int32 (``grouped_mm``'s ``offs``), computed once per width."""
        if tokens_per_row not in self._group_ends:
            ends = torch.tensor(self.group_sizes(tokens_per_row), dtype=torch.int32).cumsum(0, dtype=torch.int32)
            self._group_ends[tokens_per_row] = ends.to(self.order.device)
        return self._group_ends[tokens_per_row]

    def segment_weights(
        self, layer: nn.Module, gather: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``layer``'s per-segment adapter weights from ``gather()``; kept while gradients are off, since
        every decode step of a generated batch reuses its routing (one gather per batch, not per token)."""
        if torch.is_grad_enabled():
            return gather()
        if layer not in self._weights:
            self._weights[layer] = gather()
        return self._weights[layer]


def segment_matmul(x: torch.Tensor, weights: torch.Tensor, routing: Routing, tokens_per_row: int) -> torch.Tensor:
    """``x`` (tokens, in) in the routing's consecutive segments, segment i multiplied by ``weights[i]``
    (``weights``: segments x in x out).

    On the CPU one ``grouped_mm`` kernel does every segment (about twice as fast as a loop of small
    matmuls and a concatenation, forward and backward), where its rows are 16-byte aligned; elsewhere
    it takes bf16 inputs only, so the loop is kept there.
    """
    aligned = all(t.shape[-1] * t.element_size() % 16 == 0 for t in (x, weights))
    if x.device.type == "cpu" and aligned and hasattr(nn.functional, "grouped_mm"):
        return nn.functional.grouped_mm(x, weights, offs=routing.group_ends(tokens_per_row))
    parts = x.split(routing.group_sizes(tokens_per_row))
    products = [part @ weight for part, weight in zip(parts, weights)]
    return products[0] if len(products) == 1 else torch.cat(products)


class _LowPrecisionInputGradient(torch.autograd.Function):
    """``linear(x, weight, bias)`` with a frozen weight, whose gradient for ``x`` multiplies through
    ``low_precision_weight`` (a copy of ``weight``): the backward matmul at bf16 speed, the output exact."""

    @staticmethod
    def forward(ctx, x, weight, bias, low_precision_weight):
        ctx.save_for_backward(low_precision_weight)
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        (low_precision_weight,) = ctx.saved_tensors
        grad_x = (grad_output.to(low_precision_weight.dtype) @ low_precision_weight).to(grad_output.dtype)
        return grad_x, None, None, None


class _RoutingState:
    """Shared by every layer of a bank, so one assignment routes the whole model."""

    current: Routing | None = None


class MultiLoraLinear(nn.Module):
    """A frozen linear layer plus ``n_slots`` LoRA adapters: ``y = W x + (alpha / r) * B_s A_s x`` for row slot s."""

    def __init__(self, base: nn.Linear, n_slots: int, lora: LoraConfig, routing: _RoutingState):
        super().__init__()
        self.base = base
        self.scaling = lora.alpha / lora.rank
        self.dropout = nn.Dropout(lora.dropout)
        self.lora_a = nn.ParameterList(
            nn.Parameter(base.weight.new_zeros(base.in_features, lora.rank), requires_grad=False)
            for _ in range(n_slots)
        )
        self.lora_b = nn.ParameterList(
            nn.Parameter(base.weight.new_zeros(lora.rank, base.out_features), requires_grad=False)
            for _ in range(n_slots)
        )
        self._routing = routing
        forward_dtype, backward_dtype = BASE_PRECISIONS[lora.base_precision]
        copy_dtype = forward_dtype or backward_dtype
        low_precision = copy_dtype is not None and copy_dtype != base.weight.dtype
        copy = base.weight.detach().to(copy_dtype) if low_precision else None
        self.register_buffer("base_weight_copy", copy, persistent=False)
        self.low_precision_forward = low_precision and forward_dtype is not None
        # With a low-precision forward, merged adapters stay low-rank terms in full precision: folded
        # into the copy, updates smaller than its rounding step would vanish.
        self.merged: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.base_weight_copy is None:
            return self.base(x)
        if not self.low_precision_forward:
            if not (torch.is_grad_enabled() and x.requires_grad):
                return self.base(x)
            return _LowPrecisionInputGradient.apply(x, self.base.weight, self.base.bias, self.base_weight_copy)
        out = nn.functional.linear(x.to(self.base_weight_copy.dtype), self.base_weight_copy).to(x.dtype)
        for a, b in self.merged:
            out = out + (x @ a) @ b
        return out if self.base.bias is None else out + self.base.bias

    def merge(self, slot: int) -> None:
        """Add adapter ``slot`` to the frozen weight (and keep it as a full-precision term beside a
        low-precision forward copy, or fold it into a copy used for gradients only)."""
        self.base.weight += self.delta_weight(slot).to(self.base.weight.dtype)
        if self.low_precision_forward:
            self.merged.append((self.lora_a[slot].detach().clone(), self.scaling * self.lora_b[slot].detach()))
        elif self.base_weight_copy is not None:
            self.base_weight_copy.copy_(self.base.weight)

    def restore(self, weight: torch.Tensor) -> None:
        """Put the loaded frozen weight back and forget every merge."""
        self.base.weight.copy_(weight)
        if self.base_weight_copy is not None and not self.low_precision_forward:  # merges were folded in
            self.base_weight_copy.copy_(weight)
        self.merged = []

    def reset(self, slot: int, generator: torch.Generator) -> None:
        """A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's Kaiming-uniform default), B = 0: the update starts as identity."""
        bound = 1.0 / math.sqrt(self.base.in_features)
        with torch.no_grad():  # drawn on the CPU, so a seed gives the same adapter on every device
            a = torch.empty(self.lora_a[slot].shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
            self.lora_a[slot].copy_(a)
            self.lora_b[slot].zero_()

    def delta_weight(self, slot: int) -> torch.Tensor:
        """The slot's update in the base weight's layout (out, in)."""
        return self.scaling * (self.lora_a[slot] @ self.lora_b[slot]).T

    def _segment_weights(self, routing: Routing) -> tuple[torch.Tensor, torch.Tensor]:
        """A and B of each routing segment, stacked. A segment without adapter goes through zeros:
        its rows are few, splitting them off would cost more."""
        a = [self.lora_a[s] if s is not None else torch.zeros_like(self.lora_a[0]) for s, _, _ in routing.segments]
        b = [self.lora_b[s] if s is not None else torch.zeros_like(self.lora_b[0]) for s, _, _ in routing.segments]
        return torch.stack(a), torch.stack(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._base_forward(x)
        routing = self._routing.current
        if routing is None:
            return out
        # a packed row (1, tokens, in) is routed token by token; viewed, not indexed, so its
        # backward writes the gradient in place instead of zero-filling a copy of the row
        rows = x.view(x.shape[1:]) if routing.per_token else x
        if rows.shape[0] != routing.n_rows:
            raise RuntimeError(f"{rows.shape[0]} rows (or packed tokens) routed with {routing.n_rows} slots")
        h = self.dropout(rows)
        if not routing.is_sorted:
            h = h[routing.order]
        tokens_per_row = h[0].numel() // h.shape[-1]
        tokens = h.reshape(-1, h.shape[-1])
        a, b = routing.segment_weights(self, lambda: self._segment_weights(routing))
        # scaled at rank width, where it is cheapest
        low_rank = segment_matmul(tokens, a, routing, tokens_per_row) * self.scaling
        delta = segment_matmul(low_rank, b, routing, tokens_per_row).view(*h.shape[:-1], -1)
        if not routing.is_sorted:
            delta = delta[routing.inverse]
        # in place: the frozen product's output is fresh and its backward does not need it
        return out.add_(delta.view(out.shape))


@dataclass
class _Plan:
    """A job's batches over all its epochs, in the order it would see them alone."""

    job: TrainJob
    tokenized: list[tuple[list[int], int]]
    batches: list[list[int]]
    step: int = 0
    tokens: int = 0
    loss: float = float("nan")


class LoraBank:
    """A model with ``n_slots`` LoRA adapters that are reset, trained together, used and discarded."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lora: LoraConfig = LoraConfig(),
        n_slots: int = 1,
    ):
        if n_slots < 1:
            raise ValueError(f"a LoRA bank needs at least one slot, got {n_slots}")
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self.lora = lora
        self.n_slots = n_slots
        self._routing = _RoutingState()
        self._unmerged: list[torch.Tensor] | None = None  # base weights before the first merge
        targets = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in lora.target_modules
        ]
        if not targets:
            raise ValueError(f"no linear layer named {', '.join(lora.target_modules)} in the model")
        for name, module in targets:  # checked before any layer is wrapped, so a refusal leaves the model as it was
            if module is model.get_output_embeddings():
                raise ValueError(f"LoRA on the output projection ({name}) is not supported: it stays frozen")
        _, backward_dtype = BASE_PRECISIONS[lora.base_precision]
        head = model.get_output_embeddings().weight
        # the loss's gradient through the frozen output projection multiplies in the backward precision
        self._head_gradient_weight = head.detach().to(backward_dtype) if backward_dtype else None
        self.layers: list[MultiLoraLinear] = []
        for name, module in targets:
            parent_name, _, attribute = name.rpartition(".")
            layer = MultiLoraLinear(module, n_slots, lora, self._routing)
            setattr(model.get_submodule(parent_name), attribute, layer)
            self.layers.append(layer)
        model.eval()

    def slot_parameters(self, slot: int) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in (layer.lora_a[slot], layer.lora_b[slot])]

    def reset(self, slot: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for layer in self.layers:
            layer.reset(slot, generator)

    @contextmanager
    def routed(self, slots: Sequence[int | None], per_token: bool = False) -> Iterator[None]:
        """Within the block, batch row i goes through adapter ``slots[i]`` (None: no adapter);
        with ``per_token``, token i of a single packed row does."""
        self._routing.current = Routing(slots, self.model.device, per_token)
        try:
            yield
        finally:
            self._routing.current = None

    def generate(
        self,
        rendered_prompts: Sequence[str],
        slots: Sequence[int | None],
        sampling: SamplingConfig,
        batch_size: int = 32,
        seed: int | None = None,
    ) -> list[str]:
        """:func:`~seal.engine.generation.generate`, prompt i answered through adapter ``slots[i]``.

        Prompts go in grouped by slot, so each batch's rows are too and its routing needs no gather,
        and the prompt prefix the prompts of a slot share is computed once for the slot.
        """
        order = by_slot(slots)
        answers = generate(
            self.model,
            self.tokenizer,
            [rendered_prompts[i] for i in order],
            sampling,
            batch_size=batch_size,
            seed=seed,
            route=lambda rows: self.routed([slots[order[i]] for i in rows]),
            groups=[slots[i] for i in order],
        )
        in_input_order = [""] * len(answers)
        for position, i in enumerate(order):
            in_input_order[i] = answers[position]
        return in_input_order

    def train(self, jobs: Sequence[TrainJob], progress: str | None = None) -> list[TrainStats]:
        """Reset each job's slot with its seed and train all of them in joint steps; ``progress`` names a bar.

        Step t feeds batch t of every job that still has one; job j's learning rate at its step t is
        ``lr_j * (1 - t / steps_j)``. One AdamW over all slots equals one per slot: it is elementwise,
        and a slot without a batch in a step has no gradient, so it is skipped.
        """
        if len({job.slot for job in jobs}) != len(jobs) or any(not 0 <= job.slot < self.n_slots for job in jobs):
            raise ValueError(f"jobs need distinct slots in [0, {self.n_slots}), got {[job.slot for job in jobs]}")
        plans = [self._plan(job) for job in jobs]
        started = time.perf_counter()
        training = [plan for plan in plans if plan.batches]
        if training:
            self._train(training, progress)
        share = (time.perf_counter() - started) / max(len(jobs), 1)
        return [TrainStats(len(p.batches), p.tokens, share if p.batches else 0.0, p.loss) for p in plans]

    def _plan(self, job: TrainJob) -> _Plan:
        self.reset(job.slot, job.seed)
        tokenized = [tokenize_example(self.tokenizer, e, job.config.max_seq_len) for e in job.examples]
        tokenized = [(ids, start) for ids, start in tokenized if len(ids) > max(start, 1)]  # has a target
        shuffler = random.Random(job.seed)
        lengths = [len(ids) for ids, _ in tokenized]
        batches = []
        for _ in range(job.config.epochs if tokenized else 0):
            batches += length_grouped_batches(lengths, job.config.batch_size, shuffler)
        return _Plan(job, tokenized, batches)

    def _train(self, plans: list[_Plan], progress: str | None) -> None:
        groups = [{"params": self.slot_parameters(p.job.slot), "lr": p.job.config.learning_rate} for p in plans]
        for group in groups:
            for parameter in group["params"]:
                parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)
        total_steps = max(len(p.batches) for p in plans)
        bar = tqdm(total=total_steps, desc=progress, disable=progress is None, unit="step")
        self.model.train()
        try:
            for step in range(total_steps):
                active = [(p, g) for p, g in zip(plans, optimizer.param_groups) if step < len(p.batches)]
                for plan, group in active:
                    group["lr"] = plan.job.config.learning_rate * (1.0 - step / len(plan.batches))
                losses = self._joint_step([p for p, _ in active])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                for (plan, _), loss in zip(active, losses):
                    plan.loss = loss
                bar.set_postfix(loss=f"{sum(losses) / len(losses):.3f}", refresh=False)
                bar.update()
        finally:
            bar.close()
            self.model.eval()
            for group in groups:
                for parameter in group["params"]:
                    parameter.requires_grad_(False)

    def _joint_step(self, plans: list[_Plan]) -> list[float]:
        """One forward/backward over the current batch of every plan; returns each plan's mean loss.

        The sequences are packed into one row (positions restart per sequence, and attention runs
        within each: :mod:`seal.engine.packing`; no padding is computed), ordered by slot and routed
        token by token.
        """
        device = self.model.device
        ids: list[int] = []
        positions: list[int] = []
        targets: list[int] = []
        token_slots: list[int] = []
        plan_targets = [0] * len(plans)
        lengths: list[int] = []
        for index, plan in enumerate(plans):
            for example in plan.batches[plan.step]:
                sequence, prompt_len = plan.tokenized[example]
                # the last token predicts nothing and no earlier token attends to it: it is not fed
                inputs = sequence[:-1]
                ids += inputs
                positions += range(len(inputs))
                # position t predicts token t + 1, if that token carries the loss
                row_targets = [sequence[t + 1] if t + 1 >= prompt_len else -100 for t in range(len(inputs))]
                targets += row_targets
                token_slots += [plan.job.slot] * len(inputs)
                plan_targets[index] += sum(t != -100 for t in row_targets)
                lengths.append(len(inputs))
                plan.tokens += len(inputs)
            plan.step += 1
        with self.routed(token_slots, per_token=True), packed_attention(self.model, lengths) as packing:
            hidden = self.model.base_model(
                input_ids=torch.tensor([ids], device=device),
                position_ids=torch.tensor([positions], device=device),
                use_cache=False,
                **packing,
            )[0][0]
        target_ids = torch.tensor(targets, device=device)
        mask = target_ids != -100
        token_losses = frozen_head_cross_entropy(
            hidden[mask],
            self.model.get_output_embeddings(),
            target_ids[mask],
            softcap=getattr(self.model.config, "final_logit_softcapping", None),
            gradient_weight=self._head_gradient_weight,
        )
        # each plan's targets are consecutive: summed per plan in a fixed order (no atomic adds on a GPU)
        per_plan = torch.stack(
            [losses.sum() / max(n, 1) for losses, n in zip(token_losses.split(plan_targets), plan_targets)]
        )
        per_plan.sum().backward()
        return per_plan.tolist()

    def merge(self, slot: int) -> None:
        """Add adapter ``slot`` into the base weights (in place); :meth:`restore` undoes every merge."""
        with torch.no_grad():
            if self._unmerged is None:
                self._unmerged = [layer.base.weight.clone() for layer in self.layers]
            for layer in self.layers:
                layer.merge(slot)

    def restore(self) -> None:
        """The base weights as they were loaded, bit for bit (nothing to do if nothing was merged)."""
        if self._unmerged is None:
            return
        with torch.no_grad():
            for layer, weight in zip(self.layers, self._unmerged):
                layer.restore(weight)
        self._unmerged = None

    def save_pretrained(self, directory: str | Path) -> None:
        """The base model (with whatever was merged into it) as a plain transformers checkpoint."""
        state = {
            name.replace(".base.", "."): tensor
            for name, tensor in self.model.state_dict().items()
            if ".lora_a." not in name and ".lora_b." not in name
        }
        self.model.save_pretrained(directory, state_dict=state)
        self.tokenizer.save_pretrained(directory)
