"""SEAL's inner loop: apply an update as a fresh LoRA adapter, score, discard."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from seal.domain import Domain, Rejection, Score, Update
from seal.engine.lora import AdapterSlot, TrainStats

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one inner-loop evaluation produced, with where its time went."""

    score: Score
    rejected: str | None = None
    train: TrainStats | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def reward(self) -> float:
        return self.score.reward

    def record(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "rejected": self.rejected,
            "train_tokens": self.train.tokens if self.train else 0,
            "train_loss": self.train.final_loss if self.train else None,
            "notes": list(self.notes),
            "seconds": {phase: round(s, 3) for phase, s in self.seconds.items()},
        }


def evaluate(slot: AdapterSlot, domain: Domain, item: Any, update: Update | Rejection | None, seed: int) -> Outcome:
    """Score ``item`` after ``update`` (``None``: the unchanged base model); the adapter is discarded after.

    A failure inside one evaluation (a degenerate update, a grader fault) is recorded on its outcome
    as a rejection with reward 0, and the run goes on; interrupts still stop the run.
    """
    try:
        return _evaluate(slot, domain, item, update, seed)
    except Exception as error:  # noqa: BLE001 - one bad unit must not end a long run
        reason = f"error: {type(error).__name__}: {error}".splitlines()[0]
        log.warning("%s: %s", domain.item_id(item), reason)
        return Outcome(score=domain.rejected_score(item, reason), rejected=reason)


def _evaluate(slot: AdapterSlot, domain: Domain, item: Any, update: Update | Rejection | None, seed: int) -> Outcome:
    if isinstance(update, Rejection):
        return Outcome(score=domain.rejected_score(item, update.reason), rejected=update.reason)
    if update is None:
        started = time.perf_counter()
        score = domain.score(slot, item)
        return Outcome(score=score, seconds={"score": time.perf_counter() - started})
    with slot.updated(update.examples, update.train, seed) as train_stats:
        started = time.perf_counter()
        score = domain.score(slot, item)
    return Outcome(
        score=score,
        train=train_stats,
        seconds={"train": train_stats.seconds, "score": time.perf_counter() - started},
        notes=update.notes,
    )
