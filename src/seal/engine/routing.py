"""Which adapter slot each row (or packed token) of a batch goes through, and the grouped product.

A :class:`Routing` is computed once per batch and read by every :class:`~seal.engine.lora.MultiLoraLinear`
of a bank through their shared :class:`RoutingState`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


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


class RoutingState:
    """Shared by every layer of a bank, so one assignment routes the whole model."""

    current: Routing | None = None
