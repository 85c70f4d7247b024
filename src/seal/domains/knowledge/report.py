"""``seal knowledge report DIR``: a Markdown report and PNG plots of a ReST-EM training run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from seal.domains.knowledge.compare import paired_difference, passage_totals, percent
from seal.domains.knowledge.data import load_passages
from seal.domains.knowledge.sources import find_squad
from seal.loops.restem import read_kept
from seal.runs import AppendOnlyLog, RunDirectory


def _rounds(out: Path) -> list[int]:
    found = [int(d.name.split("-")[1]) for d in out.glob("round-*") if (d / "eval" / "summary.json").exists()]
    return sorted(found)


def _difference(a: Path, b: Path) -> str:
    """b - a, paired over the passages both scored."""
    delta, lo, hi, n = paired_difference(passage_totals(a), passage_totals(b))
    return f"{percent(delta, True)} [{percent(lo, True)}, {percent(hi, True)}] over {n} passages"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def self_edit_features(self_edit: str, passage: str) -> dict[str, float]:
    """Plain properties of a self-edit: its length in words, the share of its words that occur in
    ``passage``, and the share of its words that are distinct."""
    words = _words(self_edit)
    passage_words = set(_words(passage))
    n = max(len(words), 1)
    return {
        "words": float(len(words)),
        "from the passage": sum(w in passage_words for w in words) / n,
        "distinct": len(set(words)) / n,
    }


def what_rewards_favour(records: list[dict[str, Any]], passages: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Per feature: its mean over self-edits and its Pearson correlation with the self-edit's advantage
    (reward minus its passage's baseline reward). ``passages`` maps item ids to passage texts. Rejected
    self-edits, those without a reward, and items without a baseline reward or a known text are left out."""
    baselines = {r["item_id"]: r["reward"] for r in records if r["baseline"] and r["reward"] is not None}
    scored = [
        r
        for r in records
        if not r["baseline"] and not r["rejected"] and r["reward"] is not None and r["item_id"] in baselines
        and r["item_id"] in passages
    ]  # fmt: skip
    if len(scored) < 3:
        return {}
    advantage = np.array([r["reward"] - baselines[r["item_id"]] for r in scored])
    features = [self_edit_features(r["self_edit"], passages[r["item_id"]]) for r in scored]
    result = {}
    for name in features[0]:
        values = np.array([f[name] for f in features])
        varies = values.std() > 0 and advantage.std() > 0
        result[name] = (float(values.mean()), float(np.corrcoef(values, advantage)[0, 1]) if varies else float("nan"))
    return result


PHASES = ("sample self-edits", "score self-edits", "SFT", "held-out eval")


def seconds_by_phase(out: Path, round_index: int) -> dict[str, float]:
    """Compute seconds a round spent per phase, from what its files record: sampling and scoring the
    self-edits (``rewards.jsonl``), the SFT step (``sft.json``) and the held-out evaluation (``eval``).
    Shares of joint passes are summed, so this is where the time goes, not elapsed wall-clock time."""
    directory = out / f"round-{round_index}"
    rewards = AppendOnlyLog(directory / "rewards.jsonl").records()
    phases = {
        "sample self-edits": sum(r.get("sample_seconds", 0.0) for r in rewards),
        "score self-edits": sum(r["seconds"] for r in rewards),
    }
    if (directory / "sft.json").exists():
        phases["SFT"] = json.loads((directory / "sft.json").read_text())["seconds"]
    evaluated = {r["unit"]: r["seconds"] for r in RunDirectory(directory / "eval").records()}
    phases["held-out eval"] = sum(sum(s.values()) for s in evaluated.values())
    return phases


def passage_texts(out: Path) -> dict[str, str]:
    """Every passage of the run's data file (training and held-out alike), by id; none if the file is
    no longer where the run found it (the report then leaves out what needs the texts)."""
    evaluation = json.loads((out / "config.json").read_text())["evaluation"]
    data = evaluation.get("data_path") or evaluation.get("data") or find_squad()
    return {p.id: p.context for p in load_passages(data)} if data and Path(data).is_file() else {}


def held_out_self_edit_features(out: Path, rounds: list[int], passages: dict[str, str]) -> dict[int, dict[str, float]]:
    """Per round: the mean properties of the policy's self-edits on the held-out passages."""
    means = {}
    for r in rounds:
        units = {x["unit"]: x for x in RunDirectory(out / f"round-{r}" / "eval").records()}.values()
        features = [
            self_edit_features(x["self_edit"], passages[x["passage_id"]])
            for x in units
            if x["self_edit"] and x["passage_id"] in passages
        ]
        means[r] = {name: float(np.mean([f[name] for f in features])) for name in features[0]} if features else {}
    return means


def _accuracy_plot(bars: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _ in bars]
    accuracy = np.array([s["accuracy"] for _, s in bars])
    low = accuracy - np.array([s["ci95"][0] for _, s in bars])
    high = np.array([s["ci95"][1] for _, s in bars]) - accuracy
    colours = ["#9aa5b1" if not n.startswith("round") else "#2f6db5" for n in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(bars) + 2, 4))
    ax.bar(names, accuracy * 100, yerr=[low * 100, high * 100], color=colours, capsize=4)
    ax.set_ylabel("held-out QA accuracy (%)")
    ax.set_title("Knowledge incorporation: baselines and SEAL rounds (95% CI)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _reward_plot(rewards: dict[int, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 11)
    for round_index, values in rewards.items():
        ax.hist(values, bins=bins, alpha=0.5, label=f"round {round_index} (mean {np.mean(values):.2f})")
    ax.set_xlabel("reward of a sampled self-edit (QA accuracy after its update)")
    ax.set_ylabel("self-edits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: str | Path) -> Path:
    """Write ``DIR/report.md``, ``DIR/accuracy.png`` and ``DIR/rewards.png``; returns the report path."""
    out = Path(out)
    rounds = _rounds(out)
    if not rounds:
        raise FileNotFoundError(f"{out}: no round-*/eval/summary.json; is this a `seal knowledge train` directory?")
    baselines = {d.name: d for d in sorted((out / "baselines").glob("*")) if (d / "summary.json").exists()}
    bars = [(name, RunDirectory(d).summary()) for name, d in baselines.items()]
    bars += [(f"round {r}", RunDirectory(out / f"round-{r}" / "eval").summary()) for r in rounds]
    _accuracy_plot(bars, out / "accuracy.png")

    rewards = {
        r: [
            x["reward"]
            for x in AppendOnlyLog(out / f"round-{r}" / "rewards.jsonl").records()
            if not x["baseline"] and x["reward"] is not None
        ]
        for r in rounds
        if r > 0
    }
    rewards = {r: v for r, v in rewards.items() if v}
    if rewards:
        _reward_plot(rewards, out / "rewards.png")

    last = out / f"round-{rounds[-1]}" / "eval"
    lines = [f"# SEAL knowledge incorporation: {out}", "", "![accuracy](accuracy.png)", ""]
    lines += ["| | accuracy | 95% CI | passages | questions |", "|---|---|---|---|---|"]
    for name, s in bars:
        lo, hi = s["ci95"]
        lines.append(
            f"| {name} | {percent(s['accuracy'])} | [{percent(lo)}, {percent(hi)}] | {s['n_passages']} | "
            f"{s['n_questions']} |"
        )
    lines += ["", "Paired differences (bootstrap over passages):", ""]
    lines.append(f"- round {rounds[-1]} - round 0: {_difference(out / 'round-0' / 'eval', last)}")
    if "passage" in baselines:
        lines.append(f"- round {rounds[-1]} - passage: {_difference(baselines['passage'], last)}")
    passages = passage_texts(out)
    if rewards:
        lines += ["", "## Rewards of sampled self-edits", "", "![rewards](rewards.png)", ""]
        lines += ["| round | self-edits | mean reward | kept for SFT |", "|---|---|---|---|"]
        for r, values in rewards.items():
            kept = read_kept(out, r)["kept"]
            lines.append(f"| {r} | {len(values)} | {np.mean(values):.3f} | {len(kept)} |")
        favoured = {
            r: what_rewards_favour(AppendOnlyLog(out / f"round-{r}" / "rewards.jsonl").records(), passages)
            for r in rewards
        }
        if any(favoured.values()):
            lines += [
                "",
                "What the rewards favour: correlation of a self-edit's property with its advantage "
                "(reward minus the passage-only baseline of the same passage).",
                "",
                "| round | property | mean | correlation with advantage |",
                "|---|---|---|---|",
            ]
            for r, properties in favoured.items():
                for name, (mean, correlation) in properties.items():
                    lines.append(f"| {r} | {name} | {mean:.2f} | {correlation:+.2f} |")
    held_out = held_out_self_edit_features(out, rounds, passages)
    names = sorted({name for features in held_out.values() for name in features})
    lines += [
        "",
        "The policy's self-edits on the held-out passages, by round (means):",
        "",
        "| round | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {r} | " + " | ".join(f"{held_out[r].get(n, float('nan')):.2f}" for n in names) + " |" for r in rounds]
    lines += [
        "",
        "Compute seconds per phase (shares of joint passes, summed from the run files):",
        "",
        "| round | " + " | ".join(PHASES) + " | total |",
        "|---|" + "---|" * (len(PHASES) + 1),
    ]
    for r in rounds:
        phases = seconds_by_phase(out, r)
        cells = [f"{phases[name]:.0f}" if name in phases else "" for name in PHASES]
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {sum(phases.values()):.0f} |")
    examples_path = out / "examples.json"
    if examples_path.exists():
        examples = json.loads(examples_path.read_text())
        lines += ["", f"## Self-edits of one eval passage: {examples['passage']['title']}", ""]
        for round_index, texts in examples["by_round"].items():
            lines.append(f"### Policy after round {round_index}")
            for i, text in enumerate(texts, 1):
                lines += ["", f"**Sample {i}**", "", "```", text.strip(), "```"]
            lines.append("")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
