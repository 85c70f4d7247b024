"""Causal attention within each sequence of a packed row, without a row-wide mask.

Training packs several sequences into one row with restarting ``position_ids``; transformers then
builds a block-diagonal mask over the whole row, and SDPA computes every query against every key
of the row, so attention cost grows with the square of the row, not of each sequence. Inside
:func:`packed_attention` the model's attention instead runs causal SDPA on each sequence alone:
the same result, without the cross-sequence work or the mask.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

PACKED_SDPA = "seal_packed_sdpa"


def _per_sequence_sdpa(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    packed_lengths: Sequence[int] = (),
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: (batch 1, heads, row, dim) in, (1, row, heads, dim) out."""
    pieces = zip(query.split(packed_lengths, 2), key.split(packed_lengths, 2), value.split(packed_lengths, 2))
    outputs = [
        nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=q.shape[1] != k.shape[1]
        )
        for q, k, v in pieces
    ]
    return torch.cat(outputs, 2).transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


AttentionInterface.register(PACKED_SDPA, _per_sequence_sdpa)
AttentionMaskInterface.register(PACKED_SDPA, _no_mask)


def supports_packed_attention(model: PreTrainedModel) -> bool:
    """Plain causal SDPA models only: sliding windows and logit soft-capping keep the masked path."""
    config = model.config
    return (
        config._attn_implementation == "sdpa"
        and getattr(config, "sliding_window", None) is None
        and getattr(config, "attn_logit_softcapping", None) is None
    )


@contextmanager
def packed_attention(model: PreTrainedModel, lengths: Sequence[int]) -> Iterator[dict[str, Any]]:
    """Within the block, a forward given the yielded keyword arguments attends within each of the
    packed sequences of ``lengths`` only; models it does not support keep their own attention."""
    if not supports_packed_attention(model):
        yield {}
        return
    previous = model.config._attn_implementation
    model.config._attn_implementation = PACKED_SDPA
    try:
        yield {"packed_lengths": list(lengths)}
    finally:
        model.config._attn_implementation = previous
