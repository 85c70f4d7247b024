"""Score units (an item and one update) through the inner loop into an append-only log, resumably.

Every runner is this loop with a different way of making units: the evaluation conditions (no
update, a fixed one, self-edits sampled from a model or read from a file) and ReST-EM's reward
collection. Items are cut into chunks of about ``parallel`` units; a chunk is one executor task
(units made on the worker, e.g. by sampling, then trained and answered together, see
:class:`~seal.loops.inner.InnerLoop`), and its units are appended by the driver as it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from seal.domain import Domain, Rejection, RunStopped, Update
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, sample
from seal.engine.lora import LoraConfig
from seal.executors import Executor
from seal.loops.inner import InnerLoop, Job, Outcome
from seal.models import LoadedModel
from seal.runs import AppendOnlyLog, RunDirectory
from seal.seeding import unit_seed

Candidate = tuple[str | None, Update | Rejection | None]
"""(self-edit text or None, the update it asks for; None: score the model as it is)."""

Chunk = list[tuple[Any, list[Any]]]
"""Items with the unit indices still to score for each."""


@dataclass(frozen=True)
class Unit:
    """One thing to score: ``item`` after ``update``, once per seed (rewards are then averaged)."""

    key: str
    item: Any
    update: Update | Rejection | None
    seeds: tuple[int, ...]
    fields: dict[str, Any] = field(default_factory=dict)
    save_to: Path | None = None  # where the update's adapter (of its first seed) is saved, if anywhere


MakeUnits = Callable[[LoraBank, Chunk], list[Unit]]
ToRecords = Callable[[Unit, list[Outcome]], list[dict[str, Any]]]


def unit_key(item_id: str, index: int | str) -> str:
    return f"{item_id}/{index}"


def chunks(work: Chunk, units_per_item: int, parallel: int) -> list[Chunk]:
    """Consecutive items grouped so that a chunk holds about ``parallel`` units (at least one item)."""
    size = max(1, parallel // max(units_per_item, 1))
    return [work[start : start + size] for start in range(0, len(work), size)]


def score_units(
    executor: Executor,
    log: AppendOnlyLog,
    work: list[Chunk],
    domain: Domain,
    make_units: MakeUnits,
    to_records: ToRecords,
    bar: tqdm,
) -> None:
    """Run every chunk on ``executor`` and append each of its units to ``log`` as the chunk comes back.

    Units whose evaluation failed are written too (with their ``error``); when more than
    ``executor.spec.max_error_rate`` of the units fail, the run stops (what is written stays).
    """
    task = partial(_score_chunk, domain=domain, make_units=make_units, to_records=to_records)
    allowed = executor.spec.max_error_rate * sum(len(pending) for chunk in work for _, pending in chunk)
    errors: list[str] = []
    for results in executor.map(task, work):
        for key, records in results:
            log.append_unit(key, records)
            bar.update()
            errors += [f"{key}: {records[0]['error']}"] if records[0].get("error") else []
        if len(errors) > allowed:
            raise RunStopped(
                f"{len(errors)} evaluations failed, more than --executor.max_error_rate "
                f"{executor.spec.max_error_rate:g} allows (first: {errors[0]}); what was scored is kept, "
                "--resume retries the failed ones"
            )


def errored_units(log: AppendOnlyLog) -> set[str]:
    """Units whose latest record is a failed evaluation: a resumed run scores them again."""
    return {r["unit"] for r in log.records() if r.get("error")}


def _score_chunk(
    bank: LoraBank, chunk: Chunk, domain: Domain, make_units: MakeUnits, to_records: ToRecords
) -> list[tuple[str, list[dict[str, Any]]]]:
    """On a worker: make the chunk's units, score them together, return each unit's records."""
    units = make_units(bank, chunk)
    jobs = [Job(u.item, u.update, seed, u.save_to if i == 0 else None) for u in units for i, seed in enumerate(u.seeds)]
    outcomes = iter(InnerLoop(bank, domain).evaluate(jobs))
    return [(u.key, to_records(u, [next(outcomes) for _ in u.seeds])) for u in units]


def sampled_self_edits(
    writer: LoraBank | LoadedModel, domain: Domain, item: Any, k: int, sampling: SamplingConfig, seed: int
) -> list[str]:
    """K self-edits of ``item`` sampled from ``writer``'s model by one call seeded by the item (a bank's
    model, outside a routed block, is its untouched base model)."""
    item_seed = unit_seed(seed, domain.item_id(item), "sample")
    return sample(writer.model, writer.tokenizer, domain.prompt(item), k, sampling, item_seed, domain.self_edit_schema)


def sampled_candidates(
    bank: LoraBank, domain: Domain, item: Any, k: int, sampling: SamplingConfig, seed: int
) -> list[Candidate]:
    """K self-edits sampled from the bank's base model, with their updates."""
    return [(text, domain.to_update(item, text)) for text in sampled_self_edits(bank, domain, item, k, sampling, seed)]


def score_candidates(
    run: RunDirectory,
    executor: Executor,
    model: str,
    lora: LoraConfig,
    domain: Domain,
    items: Sequence[Any],
    k: int,
    candidates: Callable[[LoraBank, Any], Sequence[Candidate]],
    *,
    seed: int,
    label: dict[str, Any],
    describe: Callable[[Any], dict[str, Any]],
    progress: bool = True,
    save_adapters: bool = False,
) -> None:
    """Score ``k`` candidates per item into ``run``, one record per detail (e.g. per question).

    Nothing is loaded if every unit is finished. ``candidates(bank, item)`` runs only for items with
    unfinished units and must return the same candidates every time (seeded), so a resumed run
    scores exactly what an uninterrupted one would. ``label`` is copied into every record (e.g. the
    condition), ``describe(item)`` into the item's records (e.g. its id and title). With
    ``save_adapters``, each unit's trained adapter goes to ``run/adapters/<item>-<index>/``.
    """
    done = run.completed_units() - errored_units(run.results)
    work = [(item, [i for i in range(k) if unit_key(domain.item_id(item), i) not in done]) for item in items]
    work = [(item, pending) for item, pending in work if pending]
    if not work:
        return
    executor.use(model, lora)
    adapters = run.path / "adapters" if save_adapters else None
    make_units = partial(
        _candidate_units,
        domain=domain, candidates=candidates, seed=seed, label=label, describe=describe, adapters=adapters,
    )  # fmt: skip
    total = len(items) * k
    initial = total - sum(len(pending) for _, pending in work)
    work_chunks = chunks(work, k, executor.spec.parallel)
    with tqdm(total=total, initial=initial, desc=label.get("condition"), disable=not progress, unit="eval") as bar:
        score_units(executor, run.results, work_chunks, domain, make_units, _per_detail, bar)


def _candidate_units(
    bank: LoraBank,
    chunk: Chunk,
    domain: Domain,
    candidates: Callable[[LoraBank, Any], Sequence[Candidate]],
    seed: int,
    label: dict[str, Any],
    describe: Callable[[Any], dict[str, Any]],
    adapters: Path | None,
) -> list[Unit]:
    units = []
    for item, pending in chunk:
        item_id = domain.item_id(item)
        options = candidates(bank, item)
        for index in pending:
            self_edit, update = options[index]
            fields = {**describe(item), **label, "self_edit_index": index, "self_edit": self_edit}
            seeds = (unit_seed(seed, item_id, index, "train"),)
            save_to = adapters / f"{item_id}-{index}" if adapters else None
            units.append(Unit(unit_key(item_id, index), item, update, seeds, fields, save_to))
    return units


def _per_detail(unit: Unit, outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One record per detail of the unit's score (e.g. per question); a failed evaluation is one record."""
    (outcome,) = outcomes
    record = {**unit.fields, **outcome.record()}
    if outcome.score is None:
        return [record]
    return [{**record, **detail} for detail in outcome.score.details]
