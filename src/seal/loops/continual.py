"""Continual self-edits (the paper's Section 5): one model adapts to a sequence of items, for good.

At step k the model writes a self-edit for item k, is trained on it and the update is merged into
its weights, so step k+1 starts from the updated model; then it is scored on items 1..k. Step 0
scores the untouched model on every item. Written against the domain interface, like the rest.

Strategies (``ContinualConfig.strategy``):

- ``merge``: the paper's protocol, each update trained on its own data only;
- ``replay``: each update also rehearses training sequences of earlier updates (drawn at random,
  ``replay_ratio`` of them per new sequence), then is merged. Rehearsal is the classic remedy for
  catastrophic forgetting and keeps the mechanism intact: what is replayed is the model's own
  earlier self-edit data, so nothing outside the self-edits is needed.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from seal.domain import Rejection
from seal.engine.generation import SamplingConfig, sample
from seal.engine.training import TrainingExample, TrainJob
from seal.loops.inner import InnerLoop, Job
from seal.seeding import unit_seed

STRATEGIES = ("merge", "replay")


@dataclass(frozen=True)
class ContinualConfig:
    sequences: int = 8
    """Sequences of passages, each drawn with its own seed."""
    steps: int = 8
    """Passages per sequence, learned one after another."""
    strategy: Literal["merge", "replay"] = "merge"
    """``merge`` (the paper): each update merged in; ``replay``: earlier self-edit data rehearsed too."""
    replay_ratio: float = 1.0
    """``replay``: earlier sequences rehearsed per new one."""
    seed: int = 0
    """Draws the sequences."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--continual.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.sequences < 1 or self.steps < 1:
            raise ValueError(
                f"--continual.sequences and --continual.steps must be >= 1, got {self.sequences} and {self.steps}"
            )
        if self.replay_ratio < 0:
            raise ValueError(f"--continual.replay_ratio must be >= 0, got {self.replay_ratio}")


def run_sequence(
    loop: InnerLoop,
    items: Sequence[Any],
    config: ContinualConfig,
    sampling: SamplingConfig,
    sequence: int,
    writer: Any | None = None,
    save_to: Path | None = None,
) -> list[dict[str, Any]]:
    """All steps of one sequence on ``loop``'s model (changed in place); one record per step.

    ``writer`` is a model that writes the self-edits without being updated (e.g. a ReST-EM policy);
    by default the model being updated writes its own, as in the paper. With ``save_to``, each step's
    adapter is saved to ``save_to/step-K`` before it is merged.
    """
    domain, bank = loop.domain, loop.bank
    ids = [domain.item_id(item) for item in items]
    score_seed = unit_seed(config.seed, sequence, "score")
    records = [_scored(loop, items, {"sequence": sequence, "step": 0, "item_ids": ids}, score_seed)]
    replayable: list[TrainingExample] = []
    rng = random.Random(unit_seed(config.seed, sequence, "replay"))
    for step, item in enumerate(items, 1):
        started = time.perf_counter()
        seed = unit_seed(config.seed, sequence, step)
        schema = domain.self_edit_schema
        text = sample(writer or bank.model, bank.tokenizer, domain.prompt(item), 1, sampling, seed, schema)[0]
        sampled = time.perf_counter()
        update = domain.to_update(item, text)
        record: dict[str, Any] = {"sequence": sequence, "step": step, "item_ids": ids, "self_edit": text}
        if isinstance(update, Rejection):
            record.update(rejected=update.reason, replayed=0, train_tokens=0)
        else:
            n_replay = min(len(replayable), round(config.replay_ratio * len(update.examples)))
            rehearsal = rng.sample(replayable, n_replay) if config.strategy == "replay" else []
            (stats,) = bank.train([TrainJob(0, [*update.examples, *rehearsal], update.train, seed)])
            if save_to:
                bank.save_adapter(0, save_to / f"step-{step}")
            bank.merge(0)
            replayable.extend(update.examples)
            record.update(rejected=None, replayed=len(rehearsal), train_tokens=stats.tokens)
        trained = time.perf_counter()
        record["seconds"] = {"sample": round(sampled - started, 3), "train": round(trained - sampled, 3)}
        records.append(_scored(loop, items[:step], record, score_seed))
    return records


def _scored(loop: InnerLoop, items: Sequence[Any], record: dict[str, Any], seed: int) -> dict[str, Any]:
    """``record`` with the rewards of the model as it is now on ``items`` (answered in one batch)."""
    started = time.perf_counter()
    outcomes = loop.evaluate([Job(item, None, seed) for item in items])
    seconds = {**record.get("seconds", {}), "score": round(time.perf_counter() - started, 3)}
    return {**record, "rewards": [o.reward for o in outcomes], "seconds": seconds}
