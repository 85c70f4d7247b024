"""An evaluation condition, run once for every domain: select the items, start the run, score the
candidates, summarise, write.

A domain describes a condition as an object with :class:`Condition`'s attributes and methods; the
shared :func:`run_condition` does the rest. :class:`SelfEditCondition` is the condition any domain
gets for free (the model as it is, or after K of its own self-edits), and :func:`train_policy` the
ReST-EM run on top of it, so a new domain needs only its :class:`~seal.domain.Domain` and its items.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

import numpy as np

from seal.domain import Domain
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.executors import Executor, ExecutorSpec, make_executor
from seal.loops.restem import MORE_ROUNDS, RestEMConfig, run_restem
from seal.loops.scoring import Candidate, sampled_candidates, score_candidates
from seal.models import EMBEDDED_MODEL, check_model
from seal.runs import RunDirectory
from seal.stats import pooled_accuracy_ci


class Condition(Protocol):
    """What the shared runner needs of one condition of a domain's evaluation."""

    name: str
    domain: Domain
    items: Sequence[Any]
    model: str
    lora: LoraConfig
    seed: int
    candidates_per_item: int
    extendable: frozenset[str]
    """Settings a resumed run may change (e.g. the number of items, to grow it)."""

    def record(self) -> dict[str, Any]:
        """The run's ``config.json``."""
        ...

    def candidates(self, bank: LoraBank, item: Any) -> Sequence[Candidate]:
        """The (self-edit, update) pairs of an item, the same every time (seeded)."""
        ...

    def describe(self, item: Any) -> dict[str, Any]:
        """Fields copied into the item's records (e.g. its id)."""
        ...

    def before_scoring(self, run: RunDirectory) -> None:
        """What a run does between starting (or resuming) and scoring (e.g. grade again what was not)."""
        ...

    def summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]: ...


def run_condition(
    condition: Condition,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    save_adapters: bool = False,
) -> dict[str, Any]:
    """Score ``condition`` into ``out``; returns its summary. Finished units are skipped on resume.

    Where and how many updates at a time run is the ``executor``'s business (default: in this
    process, 4 at a time); it changes the speed, not the numbers, so it is not part of the config.
    """
    check_model(condition.model, condition.lora.trust_remote_code)
    run = RunDirectory(out)
    run.start(condition.record(), resume, condition.extendable)
    condition.before_scoring(run)
    score_candidates(
        run,
        executor or make_executor(ExecutorSpec()),
        condition.model,
        condition.lora,
        condition.domain,
        condition.items,
        condition.candidates_per_item,
        condition.candidates,
        seed=condition.seed,
        label={"condition": condition.name},
        describe=condition.describe,
        progress=progress,
        save_adapters=save_adapters,
    )
    summary = condition.summarise(run.records())
    run.write_summary(summary)
    return summary


@dataclass(frozen=True)
class SelfEditEvalConfig:
    """A domain's evaluation as every domain has it: its items scored as the model is, or after K self-edits."""

    condition: Literal["base", "self-edit"] = "self-edit"
    """``base``: no update; ``self-edit``: K self-edits the model writes, each applied as an update."""
    model: str = EMBEDDED_MODEL
    n_items: int | None = None
    """The first N evaluation items (default: all)."""
    k: int = 1
    """Self-edits per item."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256)
    lora: LoraConfig = LoraConfig()
    seed: int = 0
    """Seeds sampling, training order and the bootstrap; the same seed gives the same numbers on the same machine."""

    def __post_init__(self) -> None:
        if self.k < 1 or (self.n_items is not None and self.n_items < 1):
            raise ValueError(f"--k and --n_items must be >= 1, got {self.k} and {self.n_items}")


class SelfEditCondition:
    """:class:`SelfEditEvalConfig` on any domain; the reward of each (item, self-edit) is its score."""

    extendable = frozenset({"n_items"})

    def __init__(self, config: SelfEditEvalConfig, domain: Domain, items: Sequence[Any]):
        self.config, self.domain, self.items = config, domain, list(items)[: config.n_items]
        self.name, self.model, self.lora, self.seed = config.condition, config.model, config.lora, config.seed
        self.candidates_per_item = config.k if config.condition == "self-edit" else 1

    def record(self) -> dict[str, Any]:
        return {"task": f"{self.domain.name}-eval", **asdict(self.config)}

    def candidates(self, bank: LoraBank, item: Any) -> Sequence[Candidate]:
        if self.config.condition == "base":
            return [(None, None)]
        return sampled_candidates(bank, self.domain, item, self.config.k, self.config.sampling, self.config.seed)

    def describe(self, item: Any) -> dict[str, Any]:
        return {"item_id": self.domain.item_id(item)}

    def before_scoring(self, run: RunDirectory) -> None:
        pass

    def summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Mean reward over (item, self-edit) with its CI (bootstrap over items); failures counted apart."""
        units = {r["unit"]: r for r in records}.values()
        scored = [u for u in units if u.get("reward") is not None]
        by_item: dict[str, list[float]] = {}
        for unit in scored:
            by_item.setdefault(unit["item_id"], []).append(unit["reward"])
        totals = np.array([sum(rewards) for rewards in by_item.values()])
        counts = np.array([len(rewards) for rewards in by_item.values()])
        return {
            "condition": self.name,
            "model": self.model,
            "n_items": len(by_item),
            "mean_reward": float(totals.sum() / counts.sum()) if counts.sum() else None,
            "ci95": list(pooled_accuracy_ci(totals, counts, seed=self.seed)),
            "n_rejected": sum(1 for u in units if u.get("rejected")),
            "n_errors": sum(1 for u in units if u.get("error")),
        }


def train_policy(
    config: SelfEditEvalConfig,
    restem: RestEMConfig,
    domain: Domain,
    train_items: Sequence[Any],
    eval_items: Sequence[Any],
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """ReST-EM on ``train_items``, the policy of each round evaluated on ``eval_items`` as
    :class:`SelfEditCondition` does (round 0: the model as it is); returns the evaluations' summaries."""
    out = Path(out)
    check_model(config.model, config.lora.trust_remote_code)
    restem = replace(restem, sampling=config.sampling, lora=config.lora, seed=config.seed)
    record = {"task": f"{domain.name}-train", "evaluation": asdict(config), "restem": asdict(restem)}
    RunDirectory(out).start(record, resume, MORE_ROUNDS)
    executor = executor or make_executor(ExecutorSpec())

    def evaluate_policy(policy: str, directory: Path) -> dict[str, Any]:
        condition = SelfEditCondition(replace(config, model=policy), domain, eval_items)
        return run_condition(condition, directory, resume=True, progress=progress, executor=executor)

    return run_restem(domain, list(train_items), config.model, evaluate_policy, restem, out, executor, progress)
