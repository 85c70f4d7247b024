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
from typing import Any, Literal

import numpy as np

from seal.domains.arc.data import load_arc_tasks
from seal.domains.arc.domain import ArcDomain, Budget
from seal.domains.arc.grids import Task
from seal.domains.arc.selfedit import MAX_SELF_EDIT_CHARS, SELF_EDIT_SCHEMA, TTTConfig
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.executors import Executor, ExecutorSpec, make_executor
from seal.loops.conditions import run_condition
from seal.loops.restem import MORE_ROUNDS, RestEMConfig, run_restem
from seal.loops.scoring import Candidate, sampled_candidates
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
    """Everything that determines an ARC evaluation's numbers; written to ``config.json``."""

    condition: Literal["icl", "ttt-self-edit", "seal", "oracle"] = "ttt-self-edit"
    """``icl``: no training; ``ttt-self-edit`` / ``seal``: K configurations the model (a ReST-EM policy for
    ``seal``) writes, each applied by test-time training; ``oracle``: a fixed grid of configurations."""
    model: str = EMBEDDED_MODEL
    """The model (for ``seal``, the policy) that writes configurations and is trained on each task."""
    tasks: str = "seal-eval"
    """Comma-separated task sets (seal-train, seal-eval, arc1-train, arc1-eval) and task ids."""
    tasks_file: str | None = None
    """ARC JSON you supply, ``{task_id: {"train": [...], "test": [...]}}``, instead of ``tasks``."""
    max_grid: int | None = None
    """Keep the tasks whose grids are all at most this many cells on a side."""
    k: int = 4
    """Configurations per task."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=MAX_SELF_EDIT_CHARS)
    lora: LoraConfig = LoraConfig()
    budget: Budget = Budget()
    constrain: bool = True
    """Sample configurations under their JSON schema, valid by construction (false: free text)."""
    batch_size: int = 1
    """Test-time training's batch size."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Test-time training's learning-rate schedule."""
    seed: int = 0
    """Seeds sampling, training order and the bootstrap; the same seed gives the same numbers on the same machine."""

    def __post_init__(self) -> None:
        if self.condition not in ARC_CONDITIONS:
            raise ValueError(f"--condition must be one of {', '.join(ARC_CONDITIONS)}, got {self.condition!r}")
        if self.k < 1:
            raise ValueError(f"--k must be >= 1, got {self.k}")
        if self.constrain and self.sampling.max_new_tokens < MAX_SELF_EDIT_CHARS:
            raise ValueError(
                f"--sampling.max_new_tokens must be at least {MAX_SELF_EDIT_CHARS} for constrained self-edits "
                f"(the longest configuration), got {self.sampling.max_new_tokens}; or --constrain false"
            )

    @property
    def configs_per_task(self) -> int:
        return {"icl": 1, "oracle": len(ORACLE_GRID)}.get(self.condition, self.k)


def arc_domain(config: ArcEvalConfig) -> ArcDomain:
    return ArcDomain(config.budget, SELF_EDIT_SCHEMA if config.constrain else None, config.batch_size, config.schedule)


def select_tasks(config: ArcEvalConfig) -> list[Task]:
    return load_arc_tasks(config.tasks, config.tasks_file, config.max_grid)


def run_arc_eval(
    config: ArcEvalConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> dict:
    """Score one condition into ``out`` (one record per test input per configuration); returns the summary."""
    return run_condition(
        TaskCondition(config, select_tasks(config)), out, resume=resume, progress=progress, executor=executor
    )


class TaskCondition:
    """An ARC condition over its tasks, for the shared runner."""

    extendable: frozenset[str] = frozenset()

    def __init__(self, config: ArcEvalConfig, tasks: list[Task]):
        self.config, self.items, self.domain = config, tasks, arc_domain(config)
        self.name, self.model, self.lora, self.seed = config.condition, config.model, config.lora, config.seed
        self.candidates_per_item = config.configs_per_task

    def record(self) -> dict[str, Any]:
        return {"task": "arc-eval", **asdict(self.config)}

    def candidates(self, bank: LoraBank, task: Task) -> list[Candidate]:
        if self.config.condition == "icl":
            return [(None, None)]
        if self.config.condition == "oracle":
            return [(c.to_json(), self.domain.ttt_update(task, c)) for c in ORACLE_GRID]
        return sampled_candidates(bank, self.domain, task, self.config.k, self.config.sampling, self.config.seed)

    def describe(self, task: Task) -> dict[str, Any]:
        return {"task_id": task.id}

    def before_scoring(self, run: RunDirectory) -> None:
        pass

    def summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return summarise(records, self.config, [t.id for t in self.items])


def summarise(records: list[dict[str, Any]], config: ArcEvalConfig, task_ids: list[str]) -> dict[str, Any]:
    """Success rate over (task, configuration) pairs, tasks that some configuration solves whole (every
    test input: a configuration solving one of two counts in the success rate, not here), cost per update."""
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
        "tasks_solved": float(np.mean([max(per_task[t]) >= 1.0 for t in ids])) if ids else float("nan"),
        "n_rejected": sum(1 for u in units if u["rejected"]),
        "n_errors": len(failed),
        "rejections": sorted({u["rejected"] for u in units if u["rejected"]}),
        "mean_train_tokens": float(np.mean([u["train_tokens"] for u in trained])) if trained else 0.0,
        "mean_seconds_per_ttt": float(np.mean([sum(u["seconds"].values()) for u in trained])) if trained else 0.0,
        "mean_train_seconds_per_ttt": float(np.mean([u["seconds"]["train"] for u in trained])) if trained else 0.0,
    }


def run_arc_train(
    config: ArcEvalConfig,
    restem: RestEMConfig,
    train_tasks: str,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
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
            f"--train_tasks and --tasks share {len(overlap)} task(s), first {overlap[0]}: never train on them"
        )
    check_model(config.model, config.lora.trust_remote_code)
    record = {"task": "arc-train", "evaluation": asdict(config), "restem": asdict(restem), "train_tasks": train_tasks}
    RunDirectory(out).start(record, resume, MORE_ROUNDS)

    def evaluate_policy(policy: str, directory: Path) -> dict[str, Any]:
        condition = "ttt-self-edit" if policy == config.model else "seal"
        evaluation = replace(config, condition=condition, model=policy)
        return run_arc_eval(evaluation, directory, resume=True, progress=progress, executor=executor)

    executor = executor or make_executor(ExecutorSpec())
    return run_restem(arc_domain(config), tasks, config.model, evaluate_policy, restem, out, executor, progress)
