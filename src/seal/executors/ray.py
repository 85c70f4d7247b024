"""The Ray executor: long-lived actors that keep the model loaded and run tasks as they come.

Each actor holds one :class:`~seal.engine.lora.LoraBank` (``parallel`` adapter slots) and runs one
task at a time; the driver keeps every actor busy and hands results back in completion order. An
actor that dies (its process killed, its node lost) is replaced by a new one and its unfinished
task is run again; since only the driver writes results, and only once a task has returned, no
finished result is lost or written twice.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
from typing import Any, Callable, Iterable, Iterator, TypeVar

from seal.domain import RunStopped
from seal.engine.bank import LoraBank
from seal.engine.lora import LoraConfig
from seal.executors import ExecutorSpec
from seal.executors.local import BankHolder
from seal.models.loading import ModelLoadError

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)
MAX_RETRIES = 3
_END: Any = object()


def _shut_down_with_this_process(ray: Any) -> None:
    """The local Ray instance this driver started goes when it goes: at exit, and on SIGTERM (which
    otherwise ends a process without its exit handlers) as on Ctrl-C."""
    atexit.register(ray.shutdown)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _worker_error(error: Any) -> Exception:
    """A worker's failure as the driver reports it: our own errors as they are (one line each), anything
    else in one line with where the worker's log is, instead of a remote traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, (RunStopped, ModelLoadError, ValueError)):
        return cause
    name = type(cause).__name__ if cause is not None else "error"
    first_line = (str(cause) if cause is not None else str(error)).strip().splitlines()[:1] or [""]
    return RunStopped(f"a Ray worker failed: {name}: {first_line[0]} (its log: {_logs_dir()})")


def _logs_dir() -> str:
    try:
        from ray._private import worker  # where this session writes its logs; no public API says

        return worker._global_node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - only a hint in an error message
        return "/tmp/ray/session_latest/logs"


class _Worker:
    """The actor: a model held across tasks, reloaded only when the driver asks for other weights."""

    def __init__(self, parallel: int, threads: int):
        import torch

        torch.set_num_threads(threads)
        self._holder = BankHolder(parallel)

    def run(self, wanted: tuple[str, LoraConfig], fn: Callable[[LoraBank, Any], Any], task: Any) -> Any:
        self._holder.wanted = wanted
        return fn(self._holder.bank(), task)

    def release(self) -> None:
        self._holder.release()


class RayExecutor:
    def __init__(self, spec: ExecutorSpec):
        try:
            import ray
        except ImportError as error:
            raise ValueError("--executor ray needs Ray: pip install 'ray>=2.9'") from error
        self._ray = ray
        self.spec = spec
        if not ray.is_initialized():
            # Without an address: a local Ray instance. The working directory is not shipped: the
            # package must be installed on every node (see the README's cluster section).
            ray.init(address=spec.address, log_to_driver=False, include_dashboard=False)
            _shut_down_with_this_process(ray)
        self._actor_class = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=spec.gpus_per_worker)(_Worker)
        self._actors: list[Any] = []
        self._wanted: tuple[str, LoraConfig] | None = None
        self.replaced = 0

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.spec.parallel, max(1, int(self.spec.cpus_per_worker)))

    def use(self, model: str, lora: LoraConfig) -> None:
        self._wanted = (model, lora)

    def map(self, fn: Callable[[LoraBank, T], R], tasks: Iterable[T]) -> Iterator[R]:
        ray = self._ray
        if self._wanted is None:
            raise RuntimeError("no model chosen: call use(model, lora) before map()")
        queue = iter(tasks)
        fn_ref = ray.put(fn)
        running: dict[Any, tuple[int, T, int]] = {}  # result ref -> (actor index, task, attempts so far)
        idle = list(range(self.spec.workers))

        def submit(actor_index: int, task: T, attempts: int) -> None:
            while len(self._actors) <= actor_index:
                self._actors.append(self._new_actor())
            ref = self._actors[actor_index].run.remote(self._wanted, fn_ref, task)
            running[ref] = (actor_index, task, attempts)

        exhausted = False
        while True:
            while idle and not exhausted:
                task = next(queue, _END)
                if task is _END:
                    exhausted = True
                else:
                    submit(idle.pop(), task, 0)
            if not running:
                return
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor_index, task, attempts = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as error:
                raise _worker_error(error) from None
            except ray.exceptions.RayActorError as error:
                if attempts + 1 > MAX_RETRIES:
                    raise RuntimeError(f"a task failed on {MAX_RETRIES + 1} workers in a row: {error}") from error
                log.warning("worker %d died (%s); replacing it, retrying its task", actor_index, type(error).__name__)
                ray.kill(self._actors[actor_index], no_restart=True)
                self._actors[actor_index] = self._new_actor()
                self.replaced += 1
                submit(actor_index, task, attempts + 1)
                continue
            idle.append(actor_index)
            yield result

    def release(self) -> None:
        self._ray.get([actor.release.remote() for actor in self._actors])

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
