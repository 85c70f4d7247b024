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
from typing import Callable, Iterable, Iterator, Literal, Protocol, TypeVar

from seal.engine.bank import LoraBank
from seal.engine.lora import LoraConfig

T = TypeVar("T")
R = TypeVar("R")
KINDS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSpec:
    """How to run inner-loop work: ``parallel`` updates per pass on each of ``workers`` workers."""

    kind: Literal["local", "ray"] = "local"
    """``local``: in this process; ``ray``: on long-lived Ray actors."""
    parallel: int = 4
    """Updates trained and scored together by each worker (a speed setting: the numbers stay the same)."""
    workers: int = 2
    """Ray actors, each holding the model."""
    address: str | None = None
    """A running Ray cluster's address (default: start a local Ray instance)."""
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_error_rate: float = 0.1
    """The share of evaluations that may fail (errors, not rejections) before the run stops."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--executor.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.parallel < 1 or self.workers < 1:
            raise ValueError(
                f"--executor.parallel and --executor.workers must be >= 1, got {self.parallel} and {self.workers}"
            )
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ValueError("--executor.gpus_per_worker must be >= 0 and --executor.cpus_per_worker > 0")
        if not 0 <= self.max_error_rate <= 1:
            raise ValueError(f"--executor.max_error_rate must be in [0, 1], got {self.max_error_rate}")


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
