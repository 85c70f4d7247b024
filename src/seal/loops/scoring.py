"""Score units (an item and one update) through the inner loop into an append-only log, resumably.

Every runner is this loop with a different stream of units: the evaluation conditions (no update,
a fixed one, self-edits sampled from a model or read from a file) and ReST-EM's reward collection.
Units are scored ``n_slots`` at a time (see :class:`~seal.loops.inner.InnerLoop`) and each is
appended, with all its records, as soon as its group is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from seal.domain import Domain, Rejection, Update
from seal.engine.generation import SamplingConfig, sample
from seal.engine.lora import LoraBank, LoraConfig
from seal.loops.inner import InnerLoop, Job, Outcome
from seal.models import load_model
from seal.runs import AppendOnlyLog, RunDirectory
from seal.seeding import unit_seed

PARALLEL = 4
"""Default number of updates trained and scored together (a speed setting: results agree within float)."""

Candidate = tuple[str | None, Update | Rejection | None]
"""(self-edit text or None, the update it asks for; None: score the model as it is)."""


@dataclass(frozen=True)
class Unit:
    """One thing to score: ``item`` after ``update``, once per seed (rewards are then averaged)."""

    key: str
    item: Any
    update: Update | Rejection | None
    seeds: tuple[int, ...]
    fields: dict[str, Any] = field(default_factory=dict)


ToRecords = Callable[[Unit, list[Outcome]], list[dict[str, Any]]]


def unit_key(item_id: str, index: int | str) -> str:
    return f"{item_id}/{index}"


def load_inner_loop(model: str, lora: LoraConfig, domain: Domain, parallel: int) -> InnerLoop:
    loaded = load_model(model)
    return InnerLoop(LoraBank(loaded.model, loaded.tokenizer, lora, n_slots=parallel), domain)


def score_units(
    log: AppendOnlyLog,
    loop: InnerLoop,
    units: Iterable[Unit],
    to_records: ToRecords,
    bar: tqdm,
) -> None:
    """Score the (pending) ``units`` in groups of ``loop.bank.n_slots`` inner-loop runs, appending each to ``log``.

    ``units`` may be lazy (e.g. sampling self-edits item by item); ``bar`` advances by one per unit.
    """
    buffer: list[Unit] = []

    def flush() -> None:
        jobs = [Job(unit.item, unit.update, seed) for unit in buffer for seed in unit.seeds]
        outcomes = iter(loop.evaluate(jobs))
        for unit in buffer:
            log.append_unit(unit.key, to_records(unit, [next(outcomes) for _ in unit.seeds]))
            bar.update()
        buffer.clear()

    for unit in units:
        buffer.append(unit)
        if sum(len(u.seeds) for u in buffer) >= loop.bank.n_slots:
            flush()
    if buffer:
        flush()


def sampled_candidates(
    bank: LoraBank, domain: Domain, item: Any, k: int, sampling: SamplingConfig, seed: int
) -> list[Candidate]:
    """K self-edits sampled from the bank's base model (one seeded call per item), with their updates."""
    item_seed = unit_seed(seed, domain.item_id(item), "sample")
    texts = sample(bank.model, bank.tokenizer, domain.prompt(item), k, sampling, item_seed)
    return [(text, domain.to_update(item, text)) for text in texts]


def score_candidates(
    run: RunDirectory,
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
    parallel: int = PARALLEL,
    progress: bool = True,
) -> None:
    """Score ``k`` candidates per item into ``run``, one record per detail (e.g. per question).

    The model is loaded only if some unit is unfinished. ``candidates(bank, item)`` is called only
    for items with unfinished units and must return the same candidates every time (seeded), so a
    resumed run scores exactly what an uninterrupted one would. ``label`` is copied into every
    record (e.g. the condition), ``describe(item)`` into the item's records (e.g. its id and title).
    """
    done = run.completed_units()
    pending = {
        domain.item_id(item): [i for i in range(k) if unit_key(domain.item_id(item), i) not in done] for item in items
    }
    if not any(pending.values()):
        return
    loop = load_inner_loop(model, lora, domain, parallel)

    def units() -> Iterator[Unit]:
        for item in items:
            item_id = domain.item_id(item)
            if not pending[item_id]:
                continue
            options = candidates(loop.bank, item)
            for index in pending[item_id]:
                self_edit, update = options[index]
                fields = {**describe(item), **label, "self_edit_index": index, "self_edit": self_edit}
                seeds = (unit_seed(seed, item_id, index, "train"),)
                yield Unit(unit_key(item_id, index), item, update, seeds, fields)

    def per_detail(unit: Unit, outcomes: list[Outcome]) -> list[dict[str, Any]]:
        (outcome,) = outcomes
        record = {**unit.fields, **outcome.record()}
        return [{**record, **detail} for detail in outcome.score.details]

    total = len(items) * k
    initial = total - sum(map(len, pending.values()))
    with tqdm(total=total, initial=initial, desc=label.get("condition"), disable=not progress, unit="eval") as bar:
        score_units(run.results, loop, units(), per_detail, bar)
