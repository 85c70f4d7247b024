"""SEAL's inner loop: apply updates as fresh LoRA adapters, score, discard; many updates at a time.

Jobs are scored in groups holding up to ``bank.n_slots`` updates (jobs without an update, scored on
the model as it is, join a group freely): the group trains in one joint pass
(one adapter slot per update, see :class:`~seal.engine.lora.LoraBank`), then every query of every
job in the group is answered in one batched generation, each row through its own adapter.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from seal.domain import Domain, Rejection, RunStopped, Score, Update
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, render_prompt
from seal.engine.training import TrainJob, TrainStats

log = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """A GPU's out-of-memory error, or the CPU allocator's."""
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


@dataclass(frozen=True)
class Job:
    """Score ``item`` after ``update`` (None: the model as it is), trained with ``seed``; with
    ``save_to``, the trained adapter is also saved there (PEFT's format)."""

    item: Any
    update: Update | Rejection | None
    seed: int
    save_to: Path | None = None


@dataclass
class Outcome:
    """What one inner-loop evaluation produced, with where its time went (its share of its group's).

    A rejected self-edit is a score (reward 0: the policy wrote something unusable); an ``error`` (an
    exception while training, answering or grading) is not: it has no score, and counts apart."""

    score: Score | None
    rejected: str | None = None
    error: str | None = None
    train: TrainStats | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def reward(self) -> float | None:
        return None if self.score is None else self.score.reward

    def record(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "rejected": self.rejected,
            "error": self.error,
            "train_tokens": self.train.tokens if self.train else 0,
            "train_loss": self.train.final_loss if self.train else None,
            "notes": list(self.notes),
            "seconds": {phase: round(s, 3) for phase, s in self.seconds.items()},
        }


class InnerLoop:
    """``answer_batch_size``: prompts generated together. Large, because a decode step's fixed costs
    (per-slot products, kernel dispatch) are shared by its rows (``benchmarks/answering.py`` measures
    it; ``docs/results.md`` has the figures)."""

    def __init__(self, bank: LoraBank, domain: Domain, answer_batch_size: int = 256):
        self.bank = bank
        self.domain = domain
        self.answer_batch_size = answer_batch_size

    def evaluate(self, jobs: Sequence[Job]) -> list[Outcome]:
        """One outcome per job, in order.

        A failure inside one evaluation (a degenerate update, a grader fault) is recorded on its
        outcome as an error, and the run goes on; interrupts and :class:`~seal.domain.RunStopped`
        stop it. A group that fails as a whole is retried one job at a time, so only the faulty job
        is lost; one that runs out of memory is retried in halves, and a single update that does not
        fit stops the run.
        """
        outcomes: list[Outcome | None] = [None] * len(jobs)
        groups: list[list[int]] = [[]]
        updates_in_group = 0
        for index, job in enumerate(jobs):
            if isinstance(job.update, Rejection):
                outcomes[index] = self._rejected(job, job.update.reason)
                continue
            if job.update is not None:  # jobs without an update need no slot: they only join the answering
                if updates_in_group == self.bank.n_slots:
                    groups.append([])
                    updates_in_group = 0
                updates_in_group += 1
            groups[-1].append(index)
        for group in filter(None, groups):
            for index, outcome in zip(group, self._evaluate_group([jobs[i] for i in group])):
                outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    def _evaluate_group(self, jobs: list[Job]) -> list[Outcome]:
        try:
            return self._train_and_score(jobs)
        except RunStopped:
            raise
        except Exception as error:  # noqa: BLE001 - one bad unit must not end a long run
            if is_out_of_memory(error):
                return self._in_halves(jobs, error)
            if len(jobs) > 1:
                return [outcome for job in jobs for outcome in self._evaluate_group([job])]
            return [self._failed(jobs[0], error)]

    def _in_halves(self, jobs: list[Job], error: Exception) -> list[Outcome]:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        updates = sum(job.update is not None for job in jobs)
        if updates <= 1:
            raise RunStopped(
                f"one update alone does not fit in memory on {self.bank.model.device} ({str(error).splitlines()[0]}): "
                "use a smaller --train.batch_size or model, or a device with more memory"
            ) from error
        log.warning(
            "out of memory with %d updates at once: retrying in halves (a lower --parallel avoids this)", updates
        )
        half = len(jobs) // 2
        return self._evaluate_group(jobs[:half]) + self._evaluate_group(jobs[half:])

    def _train_and_score(self, jobs: list[Job]) -> list[Outcome]:
        slots: list[int | None] = []
        train_jobs = []
        for job in jobs:
            if job.update is None:
                slots.append(None)
            else:
                slots.append(len(train_jobs))
                train_jobs.append(TrainJob(len(train_jobs), job.update.examples, job.update.train, job.seed))
        stats = self.bank.train(train_jobs)
        for job, slot in zip(jobs, slots):
            if job.save_to and slot is not None:
                self.bank.save_adapter(slot, job.save_to)
        started = time.perf_counter()
        answers = self._answer(jobs, slots)
        answer_share = (time.perf_counter() - started) / len(jobs)
        outcomes = []
        for job, slot, job_answers in zip(jobs, slots, answers):
            started = time.perf_counter()
            try:
                score = self.domain.grade(job.item, job_answers)
            except RunStopped:
                raise
            except Exception as error:  # noqa: BLE001 - a grader fault costs this unit only
                outcomes.append(self._failed(job, error))
                continue
            seconds = {"answer": answer_share, "grade": time.perf_counter() - started}
            if slot is None:
                outcomes.append(Outcome(score=score, seconds=seconds))
            else:
                seconds = {"train": stats[slot].seconds, **seconds}
                outcomes.append(Outcome(score=score, train=stats[slot], seconds=seconds, notes=job.update.notes))
        return outcomes

    def _answer(self, jobs: list[Job], slots: list[int | None]) -> list[list[str]]:
        """Greedy answers to every job's queries, one generation per distinct answer length."""
        queries = [self.domain.queries(job.item) for job in jobs]
        answers: list[list[str]] = [[""] * len(q.messages) for q in queries]
        for max_new_tokens in sorted({q.max_new_tokens for q in queries}):
            same_length = [j for j, q in enumerate(queries) if q.max_new_tokens == max_new_tokens]
            owners = [(j, m) for j in same_length for m in range(len(queries[j].messages))]
            prompts = [render_prompt(self.bank.tokenizer, queries[j].messages[m]) for j, m in owners]
            greedy = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
            texts = self.bank.generate(prompts, [slots[j] for j, _ in owners], greedy, self.answer_batch_size)
            for (j, m), text in zip(owners, texts):
                answers[j][m] = text
        return answers

    def _failed(self, job: Job, error: Exception) -> Outcome:
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        log.warning("%s: %s", self.domain.item_id(job.item), reason)
        return Outcome(score=None, error=reason)

    def _rejected(self, job: Job, reason: str) -> Outcome:
        return Outcome(score=self.domain.rejected_score(job.item, reason), rejected=reason)
