"""Next-token losses through a frozen output projection, without materialising all the logits.

Training only needs each target token's loss and the gradient with respect to the hidden states
(the output projection is frozen). Both come from one pass over chunks of tokens: the chunk's
logits, their log-softmax, the loss, then ``(softmax - one_hot) @ W`` as the gradient. The full
(tokens x vocabulary) logits, their log-softmax, the zero-filled gradient buffer and its backward
pass never exist: for 1,000 target tokens and a 49k vocabulary that is ~0.8 GB of short-lived
buffers per step, and on a CPU the time to fill them rivals the matmuls.
"""

from __future__ import annotations

import torch
from torch import nn

LOGITS_PER_CHUNK = 1 << 22
"""Logits computed at once (16 MiB in fp32): large enough for full-speed matmuls, small enough to stay reusable."""


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy of ``linear(hidden, weight, bias)``, differentiable in ``hidden`` only."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, softcap, chunk_tokens, gradient_weight):
        losses = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for start in range(0, hidden.shape[0], chunk_tokens):
            end = start + chunk_tokens
            chunk_targets = targets[start:end, None]
            logits = nn.functional.linear(hidden[start:end], weight, bias).float()
            if softcap:
                squashed = torch.tanh(logits / softcap)
                logits = softcap * squashed
            log_probs = torch.log_softmax(logits, dim=-1)
            losses[start:end] = -log_probs.gather(1, chunk_targets).squeeze(1)
            if grad_hidden is None:
                continue
            grad_logits = log_probs.exp_()  # softmax, in place
            grad_logits.scatter_add_(1, chunk_targets, grad_logits.new_full(chunk_targets.shape, -1.0))
            if softcap:
                grad_logits *= 1 - squashed.square_()
            grad_hidden[start:end] = grad_logits.to(gradient_weight.dtype) @ gradient_weight
        ctx.save_for_backward(grad_hidden)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_losses[:, None].to(grad_hidden.dtype), None, None, None, None, None, None


def frozen_head_cross_entropy(
    hidden: torch.Tensor,
    head: nn.Linear,
    targets: torch.Tensor,
    softcap: float | None = None,
    chunk_tokens: int | None = None,
    gradient_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of each row of ``hidden`` (tokens x hidden size) through ``head`` against ``targets``.

    Equals ``cross_entropy(head(hidden), targets, reduction="none")`` (after ``softcap * tanh(logits /
    softcap)`` if ``softcap``) up to floating-point summation order, with gradients for ``hidden``;
    ``head`` must be frozen. ``chunk_tokens`` (default: :data:`LOGITS_PER_CHUNK` logits) sets the chunk.
    ``gradient_weight``, a copy of ``head.weight`` (e.g. in bf16), is what the gradient multiplies through.
    """
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        raise ValueError("frozen_head_cross_entropy computes no gradient for the output projection: freeze it")
    chunk_tokens = chunk_tokens or max(1, LOGITS_PER_CHUNK // head.out_features)
    gradient_weight = head.weight if gradient_weight is None else gradient_weight
    return _FrozenHeadCrossEntropy.apply(
        hidden, head.weight, head.bias, targets, softcap, chunk_tokens, gradient_weight
    )
