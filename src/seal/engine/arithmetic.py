"""LoRA adapters added together, as one adapter of a given rank.

The sum of adapters ``(A_i, B_i)`` at scaling ``s`` is ``s * sum_i A_i B_i`` per layer (``x A B``
with ``A`` of shape (in, r) and ``B`` of shape (r, out), as :class:`~seal.engine.lora.MultiLoraLinear`
holds them). Concatenating the factors along the rank is that sum exactly, at rank ``sum r_i``;
:func:`added` returns it at any rank: exact when the rank suffices, else its best approximation of
that rank (truncated SVD, computed from the factors: QR of each side, SVD of the small core).
"""

from __future__ import annotations

from typing import Sequence

import torch

from seal.engine.training import Adapter


def added(adapters: Sequence[Adapter], rank: int, scale: float = 1.0) -> Adapter:
    """``scale`` times the sum of ``adapters`` (same layers) as one adapter of ``rank``: exact where the
    sum's rank is at most ``rank``, else its best approximation of that rank, layer by layer. An adapter
    trained at scaling ``s`` and used at scaling ``t`` (another alpha / rank) needs ``scale = s / t``."""
    if not adapters:
        raise ValueError("adding adapters needs at least one")
    names = set(adapters[0])
    if any(set(adapter) != names for adapter in adapters):
        raise ValueError("the adapters to add differ in their layers")
    return {name: _added_layer([adapter[name] for adapter in adapters], rank, scale) for name in adapters[0]}


def _added_layer(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]], rank: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.cat([a for a, _ in factors], dim=1).double()  # (in, k)
    b = torch.cat([b for _, b in factors], dim=0).double() * scale  # (k, out)
    q_a, r_a = torch.linalg.qr(a)  # a = q_a r_a
    q_b, r_b = torch.linalg.qr(b.T)  # b = r_b^T q_b^T
    u, sigma, v_t = torch.linalg.svd(r_a @ r_b.T)
    kept = min(rank, sigma.numel())
    root = sigma[:kept].sqrt()
    new_a = torch.zeros(a.shape[0], rank, dtype=torch.float64)
    new_b = torch.zeros(rank, b.shape[1], dtype=torch.float64)
    new_a[:, :kept] = q_a @ u[:, :kept] * root
    new_b[:kept] = (root[:, None] * v_t[:kept]) @ q_b.T
    dtype = factors[0][0].dtype
    return new_a.to(dtype), new_b.to(dtype)
