"""The ARC conditions of ``benchmarks/arc_table1.sh`` as one table per evaluation set, from their run directories.

    .venv/bin/python benchmarks/arc_table.py benchmarks/results/arc_table1 [--plot benchmarks/results/arc_table1.png]

Per condition: success over task x configuration (the paper's measure) with its 95% CI (bootstrap
over tasks), tasks that some configuration solves whole (every test input), rejected configurations
by reason, units that failed, TTTs the token budget cut (fewer epochs or examples than configured),
seconds (training alone, and in all) and training tokens per TTT; then how many distinct configurations
each condition trained with (as parsed: a family named twice counts once) and its most common one,
what each ReST-EM round kept, and seal - ttt-self-edit paired by task and configuration (at the same budget),
also task by task.
Units that failed are left out, as the summaries leave them out. ``--plot`` also draws each
condition's success with its CI, a panel per evaluation set.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from seal.domains.arc.domain import BUDGET_NOTE
from seal.domains.arc.selfedit import parse_ttt_config
from seal.loops.restem import read_kept
from seal.runs import RunDirectory
from seal.stats import paired_difference_ci

SETS = {
    "a": ("arc1-eval, every grid at most 6x6", {"train/round-0/eval": "ttt-self-edit (round 0)"}),
    "b": ("seal-eval, every grid at most 10x10", {"ttt-self-edit": "ttt-self-edit"}),
}
# The label's suffix for a condition rerun at the larger budget; only same-budget conditions are paired.
LARGER = ", 4x the budget"


def scored_units(directory: Path) -> list[dict[str, Any]]:
    """A run's units, each its latest record, without those that failed."""
    units = {r["unit"]: r for r in RunDirectory(directory).records()}.values()
    return [u for u in units if not u.get("error")]


def per_task(directory: Path) -> dict[str, tuple[float, int]]:
    """task id -> (summed reward over its configurations, configurations)."""
    totals: dict[str, list[float]] = {}
    for unit in scored_units(directory):
        totals.setdefault(unit["task_id"], []).append(unit["reward"])
    return {task: (sum(rewards), len(rewards)) for task, rewards in totals.items()}


def rejections(units: list[dict[str, Any]]) -> str:
    """Rejected configurations counted by reason (a reason's words up to its first detail)."""
    reasons = Counter(re.split(r"[:;(\[]", u["rejected"])[0].strip() for u in units if u["rejected"])
    return ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "none"


def budget_cut(units: list[dict[str, Any]]) -> int:
    """TTTs that trained on fewer epochs or examples than their configuration asked, to fit the budget."""
    return sum(any(note.startswith(BUDGET_NOTE) for note in u["notes"]) for u in units)


def configurations(label: str, units: list[dict[str, Any]]) -> str:
    """How many distinct configurations a condition trained with, and its most common one with its share."""
    parsed = Counter(parse_ttt_config(u["self_edit"]).to_json() for u in units if not u["rejected"])
    if not parsed:
        return f"- {label}: no configuration parsed"
    common, n = parsed.most_common(1)[0]
    total = parsed.total()
    return f"- {label}: {len(parsed)} distinct of {total}; most common {common} ({n} of {total})"


def round_number(path: Path) -> int:
    """R of a file or directory inside ``round-R/``."""
    return int(path.parent.name.split("-")[1])


def kept(root: Path) -> list[str]:
    """What each ReST-EM round kept to train its policy on: a round that keeps nothing leaves the policy
    as it was, and its seal row then repeats the one before."""
    lines = []
    for path in sorted(root.glob("train/round-*/kept.json"), key=round_number):
        record = read_kept(root / "train", round_number(path))
        tasks = {k["item_id"] for k in record["kept"]}
        lines.append(
            f"- {path.parent.name}: kept {len(record['kept'])} rewarded configurations, from {len(tasks)} of "
            f"{record['n_items']} training tasks"
        )
    return lines


def budget(label: str) -> str:
    """The label's budget suffix: LARGER, or "" for the budget every condition runs at."""
    return LARGER if label.endswith(LARGER) else ""


def differences(baseline: str, reference: dict[str, tuple[float, int]], label: str, path: Path) -> list[str]:
    """``label`` - ``baseline`` (``reference``, its :func:`per_task`): pooled over task x configuration
    with a bootstrap over tasks, then per task."""
    other = per_task(path)
    tasks = sorted(set(reference) & set(other))
    a, b = (np.array([counts[t] for t in tasks]) for counts in (reference, other))
    diff, lo, hi = paired_difference_ci(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    configs = int(a[:, 1].max()) if len(tasks) else 0
    each = ", ".join(f"{t} {other[t][0] / other[t][1] - reference[t][0] / reference[t][1]:+.2f}" for t in tasks)
    return [
        f"{label} - {baseline}: {diff:+.1%} [{lo:+.1%}, {hi:+.1%}] over {len(tasks)} tasks x {configs} "
        f"configurations (95% CI: bootstrap over tasks)",
        f"  per task: {each}",
    ]


def conditions(root: Path, round_zero: dict[str, str]) -> dict[str, Path]:
    """Label -> run directory of every finished condition of one evaluation set, in the table's order."""
    rounds = sorted(root.glob("train/round-*/eval"), key=round_number)
    rows = {"icl": root / "icl", **{label: root / path for path, label in round_zero.items()}}
    rows |= {f"seal (round {round_number(p)})": p for p in rounds[1:]}
    rows |= {"seal": root / "seal", "oracle": root / "oracle"}
    rows |= {f"{condition}{LARGER}": root / f"{condition}-x4" for condition in ("ttt-self-edit", "seal", "oracle")}
    return {label: path for label, path in rows.items() if (path / RunDirectory.SUMMARY).exists()}


def table(out: Path, name: str, title: str, round_zero: dict[str, str]) -> list[str]:
    root = out / name
    present = conditions(root, round_zero)
    lines = [f"## {title}", "", "| condition | success (task x config) | 95% CI | tasks solved whole (any config) |"
             " rejected configs | failed | cut by the budget | s training per TTT | s per TTT | train tokens per TTT |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    configured = []
    for label, path in present.items():
        s = RunDirectory(path).summary()
        lo, hi = s["ci95"]
        solved = round(s["tasks_solved"] * s["n_tasks"])
        units = scored_units(path)
        if label != "icl":
            configured.append(configurations(label, units))
        lines.append(
            f"| {label} | {s['success_rate']:.1%} | [{lo:.1%}, {hi:.1%}] | {solved} of {s['n_tasks']} | "
            f"{rejections(units)} | {s['n_errors']} | {budget_cut(units)} | {s['mean_train_seconds_per_ttt']:.1f} | "
            f"{s['mean_seconds_per_ttt']:.1f} | {s['mean_train_tokens']:.0f} |"
        )
    if configured:
        lines += ["", "Configurations:", *configured]
    if rounds_kept := kept(root):
        lines += ["", "ReST-EM:", *rounds_kept]
    baselines = {budget(label): label for label in present if label.startswith("ttt-self-edit")}
    references = {at: per_task(present[label]) for at, label in baselines.items()}
    policies = [label for label in present if label.startswith("seal") and budget(label) in baselines]
    if policies:
        lines.append("")
        for label in policies:
            at = budget(label)
            lines += differences(baselines[at], references[at], label, present[label])
    return lines + [""]


def plot(out: Path, path: Path) -> None:
    """One panel per evaluation set: each finished condition's success with its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETS), figsize=(6 * len(SETS), 4), sharey=True)
    for ax, (name, (title, round_zero)) in zip(axes, SETS.items(), strict=True):
        ax.set_title(title)
        runs = conditions(out / name, round_zero)
        if not runs:
            ax.text(0.5, 0.5, "not run yet", ha="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        summaries = {label: RunDirectory(run).summary() for label, run in runs.items()}
        rate = np.array([s["success_rate"] for s in summaries.values()]) * 100
        ci = np.array([s["ci95"] for s in summaries.values()]).T * 100
        colours = ["#2f6db5" if label.startswith("seal") else "#9aa5b1" for label in summaries]
        ax.bar(list(summaries), rate, yerr=[rate - ci[0], ci[1] - rate], color=colours, capsize=4)
        ax.tick_params(axis="x", rotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    axes[0].set_ylabel("success over task x configuration (%, 95% CI)")
    fig.suptitle("ARC on the embedded model: in context, test-time training, SEAL, oracle")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the directory benchmarks/arc_table1.sh wrote")
    parser.add_argument("--plot", type=Path, help="also draw the success of each condition to this PNG")
    args = parser.parse_args()
    out: Path = args.out
    if not out.is_dir():
        parser.error(f"{out}: no such directory")
    if args.plot:
        plot(out, args.plot)
    command = f"# benchmarks/arc_table1.sh {out}; benchmarks/arc_table.py {out}"
    print(
        "\n".join(
            [command, ""] + [line for name, (title, zero) in SETS.items() for line in table(out, name, title, zero)]
        )
    )


if __name__ == "__main__":
    main()
