"""Score K updates per item through the inner loop into a run directory, resumably.

Every evaluation runner (knowledge conditions, ARC conditions) is this loop with a different way of
choosing the updates: none, a fixed one, self-edits sampled from a model, or self-edits from a file.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from tqdm import tqdm

from seal.domain import Domain, Rejection, Update
from seal.engine.generation import SamplingConfig, sample
from seal.engine.lora import AdapterSlot, LoraConfig
from seal.loops.inner import evaluate
from seal.models import load_model
from seal.runs import RunDirectory
from seal.seeding import unit_seed

Candidate = tuple[str | None, Update | Rejection | None]
"""(self-edit text or None, the update it asks for; None: score the model as it is)."""


def sampled_candidates(
    slot: AdapterSlot, domain: Domain, item: Any, k: int, sampling: SamplingConfig, seed: int
) -> list[Candidate]:
    """K self-edits sampled from the model in ``slot`` (one seeded call per item), with their updates."""
    item_seed = unit_seed(seed, domain.item_id(item), "sample")
    texts = sample(slot.model, slot.tokenizer, domain.prompt(item), k, sampling, item_seed)
    return [(text, domain.to_update(item, text)) for text in texts]


def unit_key(item_id: str, index: int) -> str:
    return f"{item_id}/{index}"


def score_with_model(
    run: RunDirectory,
    model: str,
    lora: LoraConfig,
    domain: Domain,
    items: Sequence[Any],
    k: int,
    candidates: Callable[[AdapterSlot, Any], Sequence[Candidate]],
    **options: Any,
) -> None:
    """:func:`score_items` with ``model`` loaded, only if some unit is still unfinished."""
    wanted = {unit_key(domain.item_id(item), i) for item in items for i in range(k)}
    if not wanted - run.completed_units():
        return
    loaded = load_model(model)
    slot = AdapterSlot(loaded.model, loaded.tokenizer, lora)
    score_items(run, slot, domain, items, k, lambda item: candidates(slot, item), **options)


def score_items(
    run: RunDirectory,
    slot: AdapterSlot,
    domain: Domain,
    items: Sequence[Any],
    k: int,
    candidates: Callable[[Any], Sequence[Candidate]],
    *,
    seed: int,
    label: dict[str, Any],
    describe: Callable[[Any], dict[str, Any]],
    progress: bool = True,
) -> None:
    """For each item, score its ``k`` candidates; one unit (its detail lines) is appended per candidate.

    ``candidates(item)`` is called only for items with unfinished units; it must return the same
    candidates every time (seeded), so a resumed run scores exactly what an uninterrupted one would.
    ``label`` is copied into every record (e.g. the condition), ``describe(item)`` into the item's
    records (e.g. its id and title).
    """
    done = run.completed_units()
    pending = {
        domain.item_id(item): [i for i in range(k) if unit_key(domain.item_id(item), i) not in done] for item in items
    }
    total = len(items) * k
    bar = tqdm(total=total, initial=total - sum(map(len, pending.values())), desc=label.get("condition"),
               disable=not progress, unit="eval")  # fmt: skip
    for item in items:
        item_id = domain.item_id(item)
        if not pending[item_id]:
            continue
        options = candidates(item)
        for index in pending[item_id]:
            self_edit, update = options[index]
            outcome = evaluate(slot, domain, item, update, seed=unit_seed(seed, item_id, index, "train"))
            unit = {**describe(item), **label, "self_edit_index": index, "self_edit": self_edit, **outcome.record()}
            run.append_unit(unit_key(item_id, index), [{**unit, **detail} for detail in outcome.score.details])
            bar.update()
    bar.close()
