"""The in-process executor: one LoraBank, tasks run one after another."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from seal.engine.bank import LoraBank
from seal.engine.lora import LoraConfig
from seal.executors import ExecutorSpec

T = TypeVar("T")
R = TypeVar("R")


class BankHolder:
    """A worker's model: loaded on first need, reloaded when the wanted weights change."""

    def __init__(self, parallel: int):
        self.parallel = parallel
        self.wanted: tuple[str, LoraConfig] | None = None
        self._loaded: tuple[tuple[str, LoraConfig], LoraBank] | None = None

    def bank(self) -> LoraBank:
        from seal.models.loading import load_base

        if self.wanted is None:
            raise RuntimeError("no model chosen: call use(model, lora) before map()")
        if self._loaded is None or self._loaded[0] != self.wanted:
            self._loaded = None  # free the old weights before loading the new ones
            model, lora = self.wanted
            loaded = load_base(model, lora)
            bank = LoraBank(loaded.model, loaded.tokenizer, lora, n_slots=self.parallel, name=model)
            self._loaded = (self.wanted, bank)
        return self._loaded[1]

    def release(self) -> None:
        self._loaded = None


class LocalExecutor:
    def __init__(self, spec: ExecutorSpec):
        self.spec = spec
        self._holder = BankHolder(spec.parallel)

    def use(self, model: str, lora: LoraConfig) -> None:
        self._holder.wanted = (model, lora)

    def map(self, fn: Callable[[LoraBank, T], R], tasks: Iterable[T]) -> Iterator[R]:
        for task in tasks:
            yield fn(self._holder.bank(), task)

    def release(self) -> None:
        self._holder.release()

    def close(self) -> None:
        self._holder.release()
