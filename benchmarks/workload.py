"""The inner-loop benchmarks' shared workload: the paper's iter2 self-edits of the first eval passages."""

from __future__ import annotations

from seal.domains.knowledge.evaluate import EvalConfig

SELF_EDITS = "../shared/data/seal-reference/selfedits/iter2_val.json"


def iter2_config(n_passages: int = 4, k: int = 4) -> EvalConfig:
    """``k`` iter2 self-edits of each of the first ``n_passages`` evaluation passages, default settings."""
    return EvalConfig(condition="external", self_edits_file=SELF_EDITS, n_self_edits=k, n_passages=n_passages)
