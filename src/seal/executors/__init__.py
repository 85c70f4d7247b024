"""Where inner-loop work runs: in this process (``local``) or on long-lived Ray actors (``ray``).

Every loop (knowledge and ARC evaluation, ReST-EM, continual) hands its work to an executor as
``map(fn, tasks)``: ``fn(bank, task)`` runs on a worker that keeps the model loaded in a
:class:`~seal.engine.lora.LoraBank`, and the results come back as they finish, to be appended by
the driver (the only process that writes run directories). ``use(model, lora)`` says which weights
the following tasks need; workers load them on their next task, so a new ReST-EM policy reaches
them without restarting anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from seal.engine.bank import LoraBank
from seal.engine.lora import LoraConfig

T = TypeVar("T")
R = TypeVar("R")
KINDS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSpec:
    """How to run inner-loop work: ``parallel`` updates per pass on each of ``workers`` workers."""

    kind: str = "local"
    parallel: int = 4
    workers: int = 2  # ray only
    address: str | None = None  # ray only: None starts a local Ray instance
    gpus_per_worker: float = 0.0  # ray only
    cpus_per_worker: float = 1.0  # ray only
    max_error_rate: float = 0.1  # the share of units whose evaluation may fail before the run stops

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--executor must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.parallel < 1 or self.workers < 1:
            raise ValueError(f"--parallel and --workers must be >= 1, got {self.parallel} and {self.workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ValueError("--gpus-per-worker must be >= 0 and CPUs per worker > 0")
        if not 0 <= self.max_error_rate <= 1:
            raise ValueError(f"--max-error-rate must be in [0, 1], got {self.max_error_rate}")


class Executor(Protocol):
    spec: ExecutorSpec

    def use(self, model: str, lora: LoraConfig) -> None:
        """The weights (and adapter shape) the next tasks run on."""
        ...

    def map(self, fn: Callable[[LoraBank, T], R], tasks: Iterable[T]) -> Iterator[R]:
        """``fn(bank, task)`` for every task; results in completion order. Loads nothing if there are no tasks."""
        ...

    def release(self) -> None:
        """Free the loaded weights (e.g. before the driver fine-tunes a policy); the next task reloads."""
        ...

    def close(self) -> None: ...


def make_executor(spec: ExecutorSpec) -> Executor:
    if spec.kind == "ray":
        from seal.executors.ray import RayExecutor

        return RayExecutor(spec)
    from seal.executors.local import LocalExecutor

    return LocalExecutor(spec)
