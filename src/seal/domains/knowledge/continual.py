"""``seal continual``: sequential self-edits on eval passages, the forgetting matrix, and strategies.

Layout of ``DIR``::

    config.json       every setting
    results.jsonl     one unit per sequence: a record per step (self-edit, rewards on passages 1..k)
    matrix.json       (K+1) x K mean and std over sequences; row 0 = untouched model, null above the diagonal
    summary.json      retention, retention over steps, plasticity (95% CIs over sequences), seconds per step
    forgetting.png    the mean matrix as a heatmap (the paper's Figure 6)
    first_passage.png accuracy on passage 1 as steps go on
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import asdict
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from seal.domains.knowledge.compare import percent
from seal.domains.knowledge.data import Passage
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.evaluate import EvalConfig, check_prompt_lengths, make_domain, select_passages
from seal.domains.knowledge.prompts import SELF_EDIT_PROMPTS
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.executors import Executor, ExecutorSpec, make_executor
from seal.loops.continual import ContinualConfig, run_sequence
from seal.loops.inner import InnerLoop
from seal.models import check_model
from seal.models.loading import load_base
from seal.runs import RunDirectory, write_json_atomic
from seal.stats import paired_difference_ci, pooled_accuracy_ci


def passage_sequences(evaluation: EvalConfig, config: ContinualConfig) -> list[list[Passage]]:
    """S seeded draws of K distinct eval passages; the same for every strategy with the same seed."""
    passages = select_passages(evaluation)
    if len(passages) < config.steps:
        raise ValueError(f"--continual.steps {config.steps} needs that many passages, the data has {len(passages)}")
    rng = random.Random(config.seed)
    return [rng.sample(passages, config.steps) for _ in range(config.sequences)]


def run_continual(
    evaluation: EvalConfig,
    config: ContinualConfig,
    out: str | Path,
    *,
    policy: str | None = None,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    save_adapters: bool = False,
) -> dict[str, Any]:
    """Every sequence not yet finished, then matrix.json, summary.json and the plots; returns the summary.
    With ``save_adapters``, each step's adapter is kept in ``out/adapters/sequence-S/step-K/``."""
    run = RunDirectory(out)
    sequences = passage_sequences(evaluation, config)
    record = {
        "task": "continual",
        "evaluation": asdict(evaluation),
        "continual": asdict(config),
        "policy": policy,
        "self_edit_prompt_text": SELF_EDIT_PROMPTS[evaluation.self_edit_prompt],
    }
    for model in filter(None, (evaluation.model, policy)):
        check_model(model, evaluation.lora.trust_remote_code)
    domain = make_domain(evaluation)  # a judge that cannot be reached stops the run before anything is written
    used = list({p.id: p for sequence in sequences for p in sequence}.values())
    writer = policy or evaluation.model
    check_prompt_lengths(used, domain, writer, evaluation.sampling.max_new_tokens, evaluation.lora.trust_remote_code)
    run.start(record, resume)
    done = run.completed_units()
    work = [(s, sequences[s]) for s in range(config.sequences) if f"sequence-{s}" not in done]
    executor = executor or make_executor(ExecutorSpec(parallel=1))
    executor.use(evaluation.model, evaluation.lora)
    adapters = Path(out) / "adapters" if save_adapters else None
    task = partial(
        _sequence_task, domain=domain, config=config, sampling=evaluation.sampling, policy=policy, adapters=adapters
    )
    description = f"continual ({config.strategy})"
    initial = config.sequences - len(work)
    with tqdm(total=config.sequences, initial=initial, desc=description, disable=not progress, unit="sequence") as bar:
        for s, records in executor.map(task, work):
            run.append_unit(f"sequence-{s}", records)
            bar.update()
    summary = summarise(run.records(), config)
    write_json_atomic(run.path / "matrix.json", {k: summary.pop(k) for k in ("mean", "std")})
    run.write_summary(summary)
    _plots(run.path, config.steps)
    return summary


def _sequence_task(
    bank: LoraBank,
    work: tuple[int, list[Passage]],
    domain: KnowledgeDomain,
    config: ContinualConfig,
    sampling: SamplingConfig,
    policy: str | None,
    adapters: Path | None,
) -> tuple[int, list[dict[str, Any]]]:
    """On a worker: one whole sequence, from the weights as loaded."""
    sequence, passages = work
    bank.restore()
    writer = _writer(policy, bank.lora) if policy else None
    save_to = adapters / f"sequence-{sequence}" if adapters else None
    return sequence, run_sequence(InnerLoop(bank, domain), passages, config, sampling, sequence, writer, save_to)


@lru_cache(maxsize=1)
def _writer(policy: str, lora: LoraConfig) -> Any:
    return load_base(policy, lora).model


def accuracy_matrices(records: list[dict[str, Any]], steps: int) -> np.ndarray:
    """sequences x (K+1) x K rewards, NaN where a passage was not yet seen (above the diagonal) or its
    reward is missing (its evaluation failed)."""
    by_sequence: dict[int, np.ndarray] = {}
    for r in records:
        matrix = by_sequence.setdefault(r["sequence"], np.full((steps + 1, steps), np.nan))
        matrix[r["step"], : len(r["rewards"])] = [np.nan if x is None else x for x in r["rewards"]]
    return np.stack([by_sequence[s] for s in sorted(by_sequence)])


MEASURES = {
    "retention": "passages 1..K-1 after step K",
    "retention_over_steps": "passages 1..k-1 after every step k >= 2, all those cells averaged",
    "plasticity": "passage k right after step k",
}
"""Per-sequence summaries of a forgetting matrix, by name, with what each averages."""


def sequence_measures(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Each of :data:`MEASURES` per sequence (NaN where there are no earlier passages to retain)."""
    n, steps = len(matrices), matrices.shape[2]
    earlier = [matrices[:, k, j] for k in range(2, steps + 1) for j in range(k - 1)]
    return {
        "retention": matrices[:, steps, : steps - 1].mean(axis=1) if steps > 1 else np.full(n, np.nan),
        "retention_over_steps": np.stack(earlier, axis=1).mean(axis=1) if earlier else np.full(n, np.nan),
        "plasticity": np.stack([matrices[:, k, k - 1] for k in range(1, steps + 1)], axis=1).mean(axis=1),
    }


def summarise(records: list[dict[str, Any]], config: ContinualConfig) -> dict[str, Any]:
    matrices = accuracy_matrices(records, config.steps)
    with warnings.catch_warnings():  # cells above the diagonal are NaN in every sequence, by design
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(matrices, axis=0), np.nanstd(matrices, axis=0)
    ones = np.ones(len(matrices))
    measures = {}
    for name, values in sequence_measures(matrices).items():
        measures[name] = float(values.mean())
        measures[f"{name}_ci95"] = list(pooled_accuracy_ci(values, ones, seed=config.seed))
    steps = [r for r in records if r["step"] > 0]
    return {
        "strategy": config.strategy,
        "n_sequences": len(matrices),
        "steps": config.steps,
        "mean": _nullable(mean),
        "std": _nullable(std),
        **measures,
        "untouched": float(np.mean(matrices[:, 0, :])),
        "n_rejected_self_edits": sum(1 for r in steps if r["rejected"]),
        "seconds_per_step": {
            phase: float(np.mean([r["seconds"][phase] for r in steps])) for phase in ("sample", "train", "score")
        },
    }


def compare(directories: list[str | Path]) -> str:
    """Every measure side by side, with paired differences against the first run (same sequences)."""
    runs = []
    for directory in directories:
        run = RunDirectory(directory)
        summary = run.summary()
        runs.append((Path(directory), summary, accuracy_matrices(run.records(), summary["steps"])))
    lines = [
        f"| run | strategy | sequences | {' | '.join(MEASURES)} | seconds per step (sample + train + score) |",
        "|---|---|---|" + "---|" * len(MEASURES) + "---|",
    ]
    for path, s, _ in runs:
        seconds = s["seconds_per_step"]
        measures = " | ".join(_with_ci(s[name], s[f"{name}_ci95"]) for name in MEASURES)
        lines.append(
            f"| {path} | {s['strategy']} | {s['n_sequences']} | {measures} | {sum(seconds.values()):.1f} "
            f"({seconds['sample']:.1f} + {seconds['train']:.1f} + {seconds['score']:.1f}) |"
        )
    _, first, first_matrices = runs[0]
    for path, s, matrices in runs[1:]:
        if _sequence_passages(RunDirectory(directories[0])) != _sequence_passages(RunDirectory(path)):
            raise ValueError(
                f"{path} and {directories[0]} ran different passage sequences (seed, steps or data differ)"
            )
        n = min(len(first_matrices), len(matrices))
        ones = np.ones(n)
        a, b = sequence_measures(first_matrices[:n]), sequence_measures(matrices[:n])
        for name in MEASURES:
            delta, lo, hi = paired_difference_ci(a[name], ones, b[name], ones)
            difference = (
                f"{percent(delta, True)} [{percent(lo, True)}, {percent(hi, True)}] (paired over {n} sequences)"
            )
            lines.append(f"\n{s['strategy']} - {first['strategy']}, {name}: {difference}")
    return "\n".join(lines)


def _sequence_passages(run: RunDirectory) -> dict[int, list[str]]:
    return {r["sequence"]: r["item_ids"] for r in run.records() if r["step"] == 0}


def _with_ci(value: float, ci: list[float]) -> str:
    return f"{percent(value)} [{percent(ci[0])}, {percent(ci[1])}]"


def _nullable(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in matrix]


def _plots(out: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = json.loads((out / "matrix.json").read_text())
    mean = np.array([[np.nan if v is None else v for v in row] for row in matrix["mean"]])
    std = np.array([[np.nan if v is None else v for v in row] for row in matrix["std"]])
    fig, ax = plt.subplots(figsize=(0.6 * steps + 2.5, 0.6 * steps + 2))
    image = ax.imshow(np.ma.masked_invalid(mean * 100), cmap="viridis", vmin=0)
    for (i, j), value in np.ndenumerate(mean):
        if not np.isnan(value):
            ax.text(j, i, f"{value * 100:.0f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(range(steps), [str(j + 1) for j in range(steps)])
    ax.set_yticks(range(steps + 1), [str(i) for i in range(steps + 1)])
    ax.set_xlabel("passage")
    ax.set_ylabel("after self-edit step (0 = untouched)")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    fig.savefig(out / "forgetting.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(steps + 1)
    ax.errorbar(x, mean[:, 0] * 100, yerr=std[:, 0] * 100, marker="o", capsize=3)
    ax.set_xlabel("self-edit step")
    ax.set_ylabel("accuracy on passage 1 (%)")
    fig.tight_layout()
    fig.savefig(out / "first_passage.png", dpi=120)
    plt.close(fig)
