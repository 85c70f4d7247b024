"""The ARC conditions of ``benchmarks/arc_table1.sh`` as one table per evaluation set, from their run directories.

    .venv/bin/python benchmarks/arc_table.py benchmarks/results/arc_table1

Per condition: success over task x configuration (the paper's measure) with its 95% CI (bootstrap
over tasks), tasks that any configuration solves, rejected configurations by reason, seconds and
training tokens per TTT; then seal - ttt-self-edit paired by task.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from seal.runs import RunDirectory
from seal.stats import paired_difference_ci

SETS = {
    "a": ("arc1-eval, every grid at most 6x6", {"train/round-0/eval": "ttt-self-edit (round 0)"}),
    "b": ("seal-eval, every grid at most 10x10", {"ttt-self-edit": "ttt-self-edit"}),
}


def per_task(directory: Path) -> dict[str, tuple[float, int]]:
    """task id -> (summed reward over its configurations, configurations)."""
    units = {r["unit"]: r for r in RunDirectory(directory).records()}.values()
    totals: dict[str, list[float]] = {}
    for unit in units:
        totals.setdefault(unit["task_id"], []).append(unit["reward"])
    return {task: (sum(rewards), len(rewards)) for task, rewards in totals.items()}


def rejections(directory: Path) -> str:
    units = {r["unit"]: r for r in RunDirectory(directory).records()}.values()
    reasons = Counter(u["rejected"].split(":")[0] for u in units if u["rejected"])
    return ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "none"


def table(out: Path, name: str, title: str, round_zero: dict[str, str]) -> list[str]:
    root = out / name
    rounds = sorted(root.glob("train/round-*/eval"), key=lambda p: int(p.parent.name.split("-")[1]))
    rows = {"icl": root / "icl", **{label: root / path for path, label in round_zero.items()}}
    rows |= {f"seal (round {p.parent.name.split('-')[1]})": p for p in rounds[1:]}
    rows |= {"seal": root / "seal", "oracle": root / "oracle"}
    lines = [f"## {title}", "", "| condition | success (task x config) | 95% CI | tasks solved (any config) |"
             " rejected configs | s per TTT | train tokens per TTT |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    present = {label: path for label, path in rows.items() if (path / "summary.json").exists()}
    for label, path in present.items():
        s = json.loads((path / "summary.json").read_text())
        lo, hi = s["ci95"]
        solved = round(s["tasks_solved"] * s["n_tasks"])
        lines.append(
            f"| {label} | {s['success_rate']:.1%} | [{lo:.1%}, {hi:.1%}] | {solved} of {s['n_tasks']} | "
            f"{rejections(path)} | {s['mean_seconds_per_ttt']:.1f} | {s['mean_train_tokens']:.0f} |"
        )
    baseline = next((path for label, path in present.items() if label.startswith("ttt-self-edit")), None)
    policies = [(label, path) for label, path in present.items() if label.startswith("seal")]
    if baseline and policies:
        lines.append("")
        reference = per_task(baseline)
        for label, path in policies:
            other = per_task(path)
            tasks = sorted(set(reference) & set(other))
            a, b = (np.array([counts[t] for t in tasks]) for counts in (reference, other))
            diff, lo, hi = paired_difference_ci(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
            lines.append(f"{label} - ttt-self-edit: {diff:+.1%} [{lo:+.1%}, {hi:+.1%}] over {len(tasks)} tasks")
    return lines + [""]


def main() -> None:
    out = Path(sys.argv[1])
    command = f"# benchmarks/arc_table1.sh {out}; benchmarks/arc_table.py {out}"
    print(
        "\n".join(
            [command, ""] + [line for name, (title, zero) in SETS.items() for line in table(out, name, title, zero)]
        )
    )


if __name__ == "__main__":
    main()
