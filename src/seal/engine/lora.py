"""The multi-adapter LoRA layer: a frozen linear layer plus ``n_slots`` independent adapters.

Each row of a batch (or, in training, each token of one packed row) goes through the adapter of its
slot, or none (the base model), as the bank's current :class:`~seal.engine.routing.Routing` says.
:class:`LoraConfig` also says how the frozen projections multiply (their precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from seal.engine.routing import Routing, RoutingState, segment_matmul
from seal.machine import default_device, has_native_bf16

ALL_LINEAR = "all-linear"
BASE_DTYPES = ("auto", "fp32", "bf16", "fp16")
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
    """The adapted model: how its frozen base is loaded and multiplies, and the adapters' shape (as
    TRL's ``ModelConfig`` groups them). Defaults follow the SEAL paper's knowledge-incorporation runs."""

    rank: int = 32
    """The adapters' rank r."""
    alpha: int = 64
    """The adapters' scale: an update is ``alpha / r * B @ A``."""
    dropout: float = 0.0
    """Dropout on the adapters' input while training."""
    target_modules: tuple[str, ...] = (ALL_LINEAR,)
    """Names of the linear layers that get adapters (the last part of the module path, e.g. ``q_proj``),
    or ``all-linear``: every linear layer of the model but its output projection, as PEFT means it."""
    base_dtype: str = "fp32"
    """How the frozen weights are held: ``fp32``, ``bf16`` or ``fp16`` (half the memory or less; on a
    GPU with bf16 units, ``bf16`` needs no separate bf16 copy), or ``auto``: the checkpoint's own dtype
    where the device computes in it natively, else fp32. Adapters are fp32 whatever the base."""
    trust_remote_code: bool = False
    """Let a hub model run its own modelling code (only for models you trust)."""
    base_precision: str = field(default_factory=default_base_precision)
    """How the frozen projections multiply: ``fp32``; ``bf16`` through a bf16 copy of each weight (the
    default where the hardware has native bf16 units); ``bf16-backward``, only the training gradient in
    bf16. Adapters, their sum with the frozen output and all else stay in the model's precision."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))  # a list read back from JSON
        if self.rank < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA rank must be >= 1 and alpha > 0, got rank={self.rank} alpha={self.alpha}")
        if self.base_precision not in BASE_PRECISIONS:
            raise ValueError(f"base precision must be one of {', '.join(BASE_PRECISIONS)}, got {self.base_precision!r}")
        if self.base_dtype not in BASE_DTYPES:
            raise ValueError(f"--lora.base_dtype must be one of {', '.join(BASE_DTYPES)}, got {self.base_dtype!r}")
        if not self.target_modules or (ALL_LINEAR in self.target_modules and len(self.target_modules) > 1):
            raise ValueError(
                f"--lora.target_modules: {ALL_LINEAR}, or names of linear layers, got {self.target_modules}"
            )


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


class MultiLoraLinear(nn.Module):
    """A frozen linear layer plus ``n_slots`` LoRA adapters: ``y = W x + (alpha / r) * B_s A_s x`` for row slot s."""

    def __init__(self, base: nn.Linear, n_slots: int, lora: LoraConfig, routing: RoutingState):
        super().__init__()
        self.base = base
        self.scaling = lora.alpha / lora.rank
        self.dropout = nn.Dropout(lora.dropout)
        fp32 = {"dtype": torch.float32, "device": base.weight.device}  # adapters in fp32, whatever the base
        self.lora_a = nn.ParameterList(
            nn.Parameter(torch.zeros(base.in_features, lora.rank, **fp32), requires_grad=False) for _ in range(n_slots)
        )
        self.lora_b = nn.ParameterList(
            nn.Parameter(torch.zeros(lora.rank, base.out_features, **fp32), requires_grad=False) for _ in range(n_slots)
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
        # scaled at rank width, where it is cheapest; in the adapters' fp32 (a bf16 base casts here)
        low_rank = segment_matmul(tokens.to(a.dtype), a, routing, tokens_per_row) * self.scaling
        delta = segment_matmul(low_rank, b, routing, tokens_per_row).view(*h.shape[:-1], -1)
        if not routing.is_sorted:
            delta = delta[routing.inverse]
        # in place: the frozen product's output is fresh and its backward does not need it
        return out.add_(delta.view(out.shape).to(out.dtype))
