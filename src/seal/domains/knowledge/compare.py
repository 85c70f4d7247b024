"""Side-by-side tables of knowledge runs, with paired bootstrap CIs of their differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seal.domains.knowledge.evaluate import per_passage_counts
from seal.runs import RunDirectory
from seal.stats import paired_difference_ci


def _short(model: str) -> str:
    """A model's name as a table shows it: a path's last two parts (``round-2/policy``), a hub id whole."""
    return "/".join(Path(model).parts[-2:])


def _label(summary: dict[str, Any]) -> str:
    """The condition, with who wrote its self-edits when that is not the model itself."""
    source, policy = summary.get("self_edits_file"), summary.get("policy")
    if source:
        return f"{summary['condition']} ({Path(source).stem})"
    return f"{summary['condition']} (by {_short(policy)})" if policy else summary["condition"]


def _labels(summaries: list[dict[str, Any]], directories: Sequence[str | Path] = ()) -> list[str]:
    """Each run's label; runs that would share one also name their model (e.g. a policy against its
    base), and, if that is not enough, their run directory."""
    labels = [_label(s) for s in summaries]
    labels = [f"{x}, {_short(s['model'])}" if labels.count(x) > 1 else x for x, s in zip(labels, summaries)]
    if not directories:
        return labels
    return [f"{x} ({Path(d).name})" if labels.count(x) > 1 else x for x, d in zip(labels, directories)]


def percent(value: float | None, signed: bool = False) -> str:
    """``12.5%`` (``+12.5%`` if ``signed``), or ``n/a`` for a value that does not exist (nothing graded)."""
    if value is None or value != value:
        return "n/a"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def summary_table(summaries: list[dict[str, Any]], labels: list[str] | None = None) -> str:
    rows = [("condition", "setting", "model", "passages", "questions", "accuracy", "95% CI", "best-of-K")]
    for label, s in zip(labels or _labels(summaries), summaries):
        lo, hi = s["ci95"]
        setting = s.get("setting", "single")  # runs made before the CPT setting existed
        best = (
            f"{percent(s['best_accuracy'])} (K={s['n_self_edits']})"
            if s["n_self_edits"] > 1 and setting == "single"
            else "-"
        )
        rows.append(
            (
                label,
                setting,
                s["model"],
                str(s["n_passages"]),
                str(s["n_questions"]),
                percent(s["accuracy"]),
                f"[{percent(lo)}, {percent(hi)}]",
                best,
            )
        )
    return _format(rows)


def passage_totals(directory: str | Path) -> dict[str, tuple[int, int]]:
    """passage id -> (correct, graded) answers of a run, over all of the passage's self-edits."""
    counts = per_passage_counts(RunDirectory(directory).records())
    return {p: (sum(c for c, _ in units.values()), sum(t for _, t in units.values())) for p, units in counts.items()}


def paired_difference(
    reference: dict[str, tuple[int, int]], other: dict[str, tuple[int, int]]
) -> tuple[float, float, float, int]:
    """Accuracy of ``other`` minus ``reference`` (:func:`passage_totals`), paired over the passages both
    scored: (difference, CI low, CI high, passages)."""
    shared = sorted(set(reference) & set(other))
    a = np.array([reference[p] for p in shared]).reshape(-1, 2)
    b = np.array([other[p] for p in shared]).reshape(-1, 2)
    delta, lo, hi = paired_difference_ci(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    return delta, lo, hi, len(shared)


def compare_runs(directories: list[str | Path]) -> str:
    """The summary table, then each run minus the first, paired on the passages both scored."""
    summaries = [RunDirectory(d).summary() for d in directories]
    totals = [passage_totals(d) for d in directories]
    labels = _labels(summaries, directories)
    lines = [summary_table(summaries, labels)]
    if len(directories) > 1:
        rows = [("difference", "passages", "delta", "95% CI (paired bootstrap)")]
        for label, other in zip(labels[1:], totals[1:]):
            delta, lo, hi, n = paired_difference(totals[0], other)
            interval = f"[{percent(lo, signed=True)}, {percent(hi, signed=True)}]"
            rows.append((f"{label} - {labels[0]}", str(n), percent(delta, signed=True), interval))
        lines.append(_format(rows))
    return "\n\n".join(lines)


def _format(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
