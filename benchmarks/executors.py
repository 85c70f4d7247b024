"""Throughput of `seal knowledge eval` with the local executor and with Ray workers, and what Ray adds per task.

For each model: the same self-edit evaluation (condition ``self-edit``, the first N eval passages,
default settings) once with ``--executor local`` (one process, all cores) and once with
``--executor ray --workers W`` (W actors on a local Ray instance started here, one core each),
into fresh run directories, timed from workers that already hold the model (start-up is timed
apart: the Ray instance, the actors and their model loads); then a no-op task is sent through the
Ray executor many times to time what Ray itself costs per task (submission, scheduling, argument
and result transfer).

    .venv/bin/python benchmarks/executors.py [--models tiny-random smollm2-135m] [--n-passages 8]
        [--workers 2] [--parallel 4] [--out benchmarks/results/executors.json]

Run it on a quiet machine: it measures wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from seal.domains.knowledge.evaluate import EvalConfig, run_eval
from seal.engine.bank import LoraBank
from seal.executors import ExecutorSpec, make_executor
from seal.runs import RunDirectory


def no_op(bank: LoraBank, task: int) -> int:
    return task


def timed_eval(config: EvalConfig, spec: ExecutorSpec, out: Path) -> tuple[float, float, list[dict[str, Any]], Any]:
    """Seconds to start the executor with the model loaded on every worker, seconds for the evaluation
    itself, its records, and the still-open executor."""
    started = time.perf_counter()
    executor = make_executor(spec)
    executor.use(config.model, config.lora)
    list(executor.map(no_op, range(spec.workers if spec.kind == "ray" else 1)))
    warm = time.perf_counter()
    run_eval(config, out, progress=False, executor=executor)
    return warm - started, time.perf_counter() - warm, RunDirectory(out).records(), executor


def per_task_overhead(executor: Any, tasks: int) -> float:
    """Mean seconds per no-op task through ``executor.map``, the workers' models already loaded."""
    started = time.perf_counter()
    assert sorted(executor.map(no_op, range(tasks))) == list(range(tasks))
    return (time.perf_counter() - started) / tasks


def largest_reward_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """Over the units of two runs of the same evaluation. Not always 0: the local run uses every core
    and a worker one, and a different thread count can change a sum's rounding, hence a greedy token."""
    rewards_a, rewards_b = ({r["unit"]: r["reward"] for r in records} for records in (a, b))
    assert rewards_a.keys() == rewards_b.keys(), "the two runs scored different units"
    return max(abs(rewards_a[unit] - rewards_b[unit]) for unit in rewards_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-random", "smollm2-135m"])
    parser.add_argument("--n-passages", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4, help="updates trained together, locally and per worker")
    parser.add_argument("--no-op-tasks", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/executors.json")
    args = parser.parse_args()
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default (15) starves workers beside a busy driver

    result: dict[str, Any] = {
        "command": f"benchmarks/executors.py --models {' '.join(args.models)} --n-passages {args.n_passages} "
        f"--workers {args.workers} --parallel {args.parallel}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models:
            config = EvalConfig(condition="self-edit", model=model, split="eval", n_passages=args.n_passages)
            local_start, local_seconds, local_records, local = timed_eval(
                config, ExecutorSpec(kind="local", parallel=args.parallel), Path(scratch) / model / "local"
            )
            local.close()
            ray_spec = ExecutorSpec(kind="ray", parallel=args.parallel, workers=args.workers)
            ray_start, ray_seconds, ray_records, ray = timed_eval(config, ray_spec, Path(scratch) / model / "ray")
            overhead = per_task_overhead(ray, args.no_op_tasks)
            ray.close()
            evaluations = len({r["unit"] for r in local_records})
            figures = {
                "evaluations": evaluations,
                "local_evals_per_min": 60 * evaluations / local_seconds,
                "ray_evals_per_min": 60 * evaluations / ray_seconds,
                "ray_over_local": local_seconds / ray_seconds,
                "local_seconds": local_seconds,
                "ray_seconds": ray_seconds,
                "local_startup_seconds": local_start,
                "ray_startup_seconds": ray_start,
                "ray_seconds_per_no_op_task": overhead,
                "largest_reward_difference": largest_reward_difference(local_records, ray_records),
            }
            result["models"][model] = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
            print(model, json.dumps(result["models"][model]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
