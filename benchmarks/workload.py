"""The inner-loop benchmarks' shared workload: the paper's iter2 self-edits of the first eval passages."""

from __future__ import annotations

import heapq
from typing import Sequence

from seal.domains.knowledge.evaluate import EvalConfig

SELF_EDITS = "../shared/data/seal-reference/selfedits/iter2_val.json"


def iter2_config(n_passages: int = 4, k: int = 4) -> EvalConfig:
    """``k`` iter2 self-edits of each of the first ``n_passages`` evaluation passages, default settings."""
    return EvalConfig(condition="external", self_edits_file=SELF_EDITS, n_self_edits=k, n_passages=n_passages)


def balanced_shares(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Indices of ``costs`` split into ``parts`` shares of near-equal total cost, each in ascending order.

    Largest first, each to the share with the smallest total so far (within 4/3 of the best split).
    Shares may be empty when there are fewer items than parts.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    totals = [(0.0, share) for share in range(parts)]
    shares: list[list[int]] = [[] for _ in range(parts)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        total, share = heapq.heappop(totals)
        shares[share].append(index)
        heapq.heappush(totals, (total + costs[index], share))
    return [sorted(share) for share in shares]
