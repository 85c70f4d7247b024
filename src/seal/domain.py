"""The contract between the SEAL core and a domain (knowledge incorporation, ARC, ...).

A domain says what the policy sees, how a self-edit becomes a weight update, what the (possibly
updated) model is asked and how its answers are graded. Everything else (sampling self-edits,
applying updates as fresh LoRA adapters, answering, ReST-EM, run directories) is the core's,
written once, so the core can batch the work of many items and updates together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from seal.engine.training import TrainConfig, TrainingExample


@dataclass(frozen=True)
class Update:
    """A weight update: the sequences to train on, how to train, and notes for the record (e.g. budget caps)."""

    examples: tuple[TrainingExample, ...]
    train: TrainConfig
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejection:
    """A self-edit that cannot become an update; it earns reward 0 and the reason is recorded."""

    reason: str


@dataclass(frozen=True)
class Queries:
    """What the model is asked to score an item: user messages, each answered greedily."""

    messages: tuple[str, ...]
    max_new_tokens: int


@dataclass
class Score:
    """A reward in [0, 1] (None: nothing could be graded) and per-unit details (for knowledge: one
    record per question)."""

    reward: float | None
    details: list[dict[str, Any]] = field(default_factory=list)


class RunStopped(RuntimeError):
    """A fault that no later unit can avoid (the judge refuses our key, one update alone does not fit
    in memory, too many evaluations fail): the run stops, keeping everything already written."""


ItemT = TypeVar("ItemT", contravariant=True)


class Domain(Protocol[ItemT]):
    name: str
    self_edit_schema: dict[str, Any] | None
    """A JSON schema self-edits are sampled under, valid by construction (None: free text)."""

    def item_id(self, item: ItemT) -> str: ...

    def prompt(self, item: ItemT) -> str:
        """The user message from which the policy writes a self-edit."""
        ...

    def to_update(self, item: ItemT, self_edit: str) -> Update | Rejection: ...

    def baseline_update(self, item: ItemT) -> Update | None:
        """The update a useful self-edit must beat (knowledge: the passage alone; None: no update)."""
        ...

    def queries(self, item: ItemT) -> Queries: ...

    def grade(self, item: ItemT, answers: list[str]) -> Score:
        """The reward of the answers to ``queries(item).messages``, in order."""
        ...

    def rejected_score(self, item: ItemT, reason: str) -> Score:
        """The zero score of an item whose self-edit was rejected, in the shape ``grade`` returns."""
        ...
