"""``seal arc eval`` and ``seal arc train``: the paper's Table 1 conditions and ReST-EM on ARC.

Conditions:
  icl            no training; the demonstrations are in the prompt
  ttt-self-edit  K configurations sampled from the model itself, each applied by test-time training
  seal           the same, with configurations from a ReST-EM-trained policy (``--policy``)
  oracle         a fixed grid of configurations; a task counts as solved if any of them solves it
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from seal.domains.arc.data import load_arc_tasks
from seal.domains.arc.domain import ArcDomain, Budget
from seal.domains.arc.grids import Task
from seal.domains.arc.selfedit import MAX_SELF_EDIT_CHARS, SELF_EDIT_SCHEMA, TTTConfig
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.executors import Executor, ExecutorSpec, make_executor
from seal.loops.restem import RestEMConfig, run_restem
from seal.loops.scoring import Candidate, sampled_candidates, score_candidates
from seal.models import EMBEDDED_MODEL, check_model
from seal.runs import RunDirectory
from seal.stats import pooled_accuracy_ci

ARC_CONDITIONS = ("icl", "ttt-self-edit", "seal", "oracle")

ORACLE_GRID: tuple[TTTConfig, ...] = tuple(
    TTTConfig(augmentations, "output", learning_rate, epochs)
    for augmentations in ((), ("basic",), ("basic", "size", "chain", "repeat"))
    for learning_rate, epochs in ((1e-4, 3), (1e-3, 2))
)


@dataclass(frozen=True)
class ArcEvalConfig:
    condition: str = "ttt-self-edit"
    model: str = EMBEDDED_MODEL
    tasks: str = "seal-eval"
    tasks_file: str | None = None
    max_grid: int | None = None
    k: int = 4
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=MAX_SELF_EDIT_CHARS)
    lora: LoraConfig = LoraConfig()
    budget: Budget = Budget()
    constrain: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.condition not in ARC_CONDITIONS:
            raise ValueError(f"--condition must be one of {', '.join(ARC_CONDITIONS)}, got {self.condition!r}")
        if self.k < 1:
            raise ValueError(f"--k must be >= 1, got {self.k}")
        if self.constrain and self.sampling.max_new_tokens < MAX_SELF_EDIT_CHARS:
            raise ValueError(
                f"--max-tokens must be at least {MAX_SELF_EDIT_CHARS} for constrained self-edits (the longest "
                f"configuration), got {self.sampling.max_new_tokens}; or pass --no-constrain"
            )

    @property
    def configs_per_task(self) -> int:
        return {"icl": 1, "oracle": len(ORACLE_GRID)}.get(self.condition, self.k)


def select_tasks(config: ArcEvalConfig) -> list[Task]:
    return load_arc_tasks(config.tasks, config.tasks_file, config.max_grid)


def run_arc_eval(
    config: ArcEvalConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> dict:
    """Score one condition into ``out`` (one record per test input per configuration); returns the summary."""
    tasks = select_tasks(config)
    check_model(config.model, config.lora.trust_remote_code)
    run = RunDirectory(out)
    run.start({"task": "arc-eval", **asdict(config)}, resume)
    domain = ArcDomain(config.budget, SELF_EDIT_SCHEMA if config.constrain else None)
    score_candidates(
        run,
        executor or make_executor(ExecutorSpec()),
        config.model,
        config.lora,
        domain,
        tasks,
        config.configs_per_task,
        lambda bank, task: _candidates(config, bank, domain, task),
        seed=config.seed,
        label={"condition": config.condition},
        describe=lambda task: {"task_id": task.id},
        progress=progress,
    )
    summary = summarise(run.records(), config, [t.id for t in tasks])
    run.write_summary(summary)
    return summary


def _candidates(config: ArcEvalConfig, bank: LoraBank, domain: ArcDomain, task: Task) -> list[Candidate]:
    if config.condition == "icl":
        return [(None, None)]
    if config.condition == "oracle":
        return [(c.to_json(), domain.ttt_update(task, c)) for c in ORACLE_GRID]
    return sampled_candidates(bank, domain, task, config.k, config.sampling, config.seed)


def summarise(records: list[dict[str, Any]], config: ArcEvalConfig, task_ids: list[str]) -> dict[str, Any]:
    """Success rate over (task, configuration) pairs, tasks solved by any configuration, cost per update."""
    records = [r for r in records if r["task_id"] in set(task_ids)]
    units = {r["unit"]: r for r in records}.values()
    failed = [u for u in units if u.get("error")]
    units = [u for u in units if not u.get("error")]
    per_task: dict[str, list[float]] = {}
    for unit in units:
        per_task.setdefault(unit["task_id"], []).append(unit["reward"])
    ids = sorted(per_task)
    solved = np.array([sum(per_task[t]) for t in ids])
    tried = np.array([len(per_task[t]) for t in ids])
    trained = [u for u in units if u["train_tokens"] > 0]
    return {
        "condition": config.condition,
        "model": config.model,
        "tasks": config.tasks if not config.tasks_file else config.tasks_file,
        "max_grid": config.max_grid,
        "n_tasks": len(ids),
        "configs_per_task": config.configs_per_task,
        "success_rate": float(solved.sum() / tried.sum()) if tried.sum() else float("nan"),
        "ci95": list(pooled_accuracy_ci(solved, tried, seed=config.seed)),
        "tasks_solved": float(np.mean([max(per_task[t]) > 0 for t in ids])) if ids else float("nan"),
        "n_rejected": sum(1 for u in units if u["rejected"]),
        "n_errors": len(failed),
        "rejections": sorted({u["rejected"] for u in units if u["rejected"]}),
        "mean_train_tokens": float(np.mean([u["train_tokens"] for u in trained])) if trained else 0.0,
        "mean_seconds_per_ttt": float(np.mean([sum(u["seconds"].values()) for u in trained])) if trained else 0.0,
    }


def run_arc_train(
    config: ArcEvalConfig,
    restem: RestEMConfig,
    train_tasks: str,
    out: str | Path,
    resume: bool,
    progress: bool,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """ReST-EM on ``train_tasks`` with the shared engine.

    Round 0 (the untouched model writing its own configurations) is the ``ttt-self-edit`` condition;
    every later round's policy is evaluated as ``seal``, on the same tasks with the same seeds.
    """
    out = Path(out)
    tasks = load_arc_tasks(train_tasks, None, config.max_grid)
    evaluation_ids = {task.id for task in select_tasks(config)}  # validated before any model work
    if overlap := sorted(evaluation_ids & {task.id for task in tasks}):
        raise ValueError(
            f"--tasks and --eval-tasks share {len(overlap)} task(s), first {overlap[0]}: never train on them"
        )
    check_model(config.model, config.lora.trust_remote_code)
    record = {"task": "arc-train", "evaluation": asdict(config), "restem": asdict(restem), "train_tasks": train_tasks}
    RunDirectory(out).start(record, resume)

    def evaluate_policy(policy: str, directory: Path) -> dict[str, Any]:
        condition = "ttt-self-edit" if policy == config.model else "seal"
        evaluation = replace(config, condition=condition, model=policy)
        return run_arc_eval(evaluation, directory, resume=True, progress=progress, executor=executor)

    executor = executor or make_executor(ExecutorSpec())
    return run_restem(ArcDomain(config.budget), tasks, config.model, evaluate_policy, restem, out, executor, progress)
