"""ReST-EM, SEAL's outer loop, written once for every domain.

Each round r = 1..R, starting from the policy of round r-1 (round 0: the untouched model):

1. sample K self-edits per training item from the policy;
2. score each with the inner loop (mean of ``eval_repeats`` runs), appending every reward to
   ``round-r/rewards.jsonl`` as soon as it exists;
3. keep, per item, the best ``top_m`` self-edits (``None``: all of them) with a positive reward (and, with
   ``beat_baseline``, a reward above the domain's baseline update, e.g. the passage alone);
4. supervised fine-tuning of the policy on (prompt -> kept self-edit), loss on the self-edit tokens
   only: the policy is one LoRA adapter of the base model, round r training round r-1's further,
   saved in PEFT's format as ``round-r/policy`` (loading that directory gives the base model with
   the adapter merged in);
5. evaluate the new policy with the domain's held-out evaluation, in ``round-r/eval``.

A finished run continues with more rounds: resumed with a larger ``rounds``, it goes on from its last
policy (the one setting of a train run's config that may change on resume, :data:`MORE_ROUNDS`).
A round whose policy directory is missing (a copy of a run without its adapters) retrains it from
the round's recorded rewards on resume; nothing is scored again.

The engine only sees the :class:`~seal.domain.Domain` interface and an evaluation callback.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from seal.domain import Domain
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, sample
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig, TrainingExample, TrainJob
from seal.executors import Executor
from seal.inputs import read_json
from seal.loops.inner import Outcome
from seal.loops.scoring import Chunk, Unit, chunks, errored_units, score_units, unit_key
from seal.models.adapters import is_adapter_dir, read_adapter
from seal.models.loading import load_base
from seal.runs import AppendOnlyLog, write_json_atomic
from seal.seeding import unit_seed

MORE_ROUNDS = frozenset({"restem.rounds"})
"""The settings of a train run's config (its ReST-EM settings under ``restem``) that may change on resume."""

EvaluatePolicy = Callable[[str, Path], dict[str, Any]]
"""(policy model name or directory, output directory) -> summary of its held-out evaluation."""


@dataclass(frozen=True)
class RestEMConfig:
    rounds: int = 2
    k: int = 4
    """Self-edits sampled per training item and round."""
    eval_repeats: int = 1
    """Inner-loop runs (seeds) averaged into one reward."""
    top_m: int | None = 1
    """Self-edits kept per item for the SFT step; None keeps every one that qualifies."""
    beat_baseline: bool = True
    """Keep only self-edits that beat the domain's baseline update (e.g. the passage alone)."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256)
    sft: TrainConfig = TrainConfig(learning_rate=3e-4, epochs=2, batch_size=4)
    """How the policy is fine-tuned on the kept self-edits."""
    lora: LoraConfig = LoraConfig()  # adapter shape, for the inner-loop updates and for the SFT step
    seed: int = 0
    """Seeds sampling and training order; the same seed gives the same policy on the same machine."""

    def __post_init__(self) -> None:
        for name in ("rounds", "k", "eval_repeats", "top_m"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--restem.{name} must be >= 1, got {value}")


def round_dir(out: Path, round_index: int) -> Path:
    return out / f"round-{round_index}"


def policy_dir(out: Path, round_index: int) -> Path:
    return round_dir(out, round_index) / "policy"


def kept_path(out: Path, round_index: int) -> Path:
    """The round's record of what it kept: ``{"n_items": items sampled, "kept": [reward records]}``."""
    return round_dir(out, round_index) / "kept.json"


def read_kept(out: Path, round_index: int) -> dict[str, Any]:
    return read_json(kept_path(out, round_index))


def run_restem(
    domain: Domain,
    items: Sequence[Any],
    base_model: str,
    evaluate_policy: EvaluatePolicy,
    config: RestEMConfig,
    out: Path,
    executor: Executor,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """All rounds; returns the evaluation summary of rounds 0..R. Finished work is never redone.

    Rewards are scored on ``executor``; the SFT step runs in this process, after the executor has
    released its weights, and the new policy reaches the workers through ``executor.use``.
    """
    summaries = [evaluate_policy(base_model, round_dir(out, 0) / "eval")]
    policy = base_model
    for r in range(1, config.rounds + 1):
        if not is_adapter_dir(policy_dir(out, r)):
            log = AppendOnlyLog(round_dir(out, r) / "rewards.jsonl")
            log.drop_torn_tail()
            executor.use(policy, config.lora)
            collect_rewards(executor, domain, items, config, r, log, progress)
            kept = select_self_edits(log.records(), config)
            write_json_atomic(kept_path(out, r), {"n_items": len(items), "kept": kept})
            executor.release()
            previous = policy_dir(out, r - 1) if r > 1 else None
            improve_policy(base_model, previous, kept, config, r, policy_dir(out, r), progress)
        policy = str(policy_dir(out, r))
        summaries.append(evaluate_policy(policy, round_dir(out, r) / "eval"))
    return summaries


def collect_rewards(
    executor: Executor,
    domain: Domain,
    items: Sequence[Any],
    config: RestEMConfig,
    round_index: int,
    log: AppendOnlyLog,
    progress: bool,
) -> None:
    """Sample K self-edits per item and score each (and the baseline update); every score is appended as it lands."""
    done = log.completed_units() - errored_units(log)
    tags: list[Any] = (["baseline"] if config.beat_baseline else []) + list(range(config.k))
    work = [(item, [t for t in tags if unit_key(domain.item_id(item), t) not in done]) for item in items]
    work = [(item, pending) for item, pending in work if pending]
    make_units = partial(_reward_units, domain=domain, config=config, round_index=round_index)
    total = len(items) * len(tags)
    with tqdm(total=total, initial=len(done), desc=f"round {round_index}: rewards", disable=not progress) as bar:
        work_chunks = chunks(work, len(tags), executor.spec.parallel)
        score_units(executor, log, work_chunks, domain, make_units, _reward_record, bar)


def _reward_units(bank: LoraBank, chunk: Chunk, domain: Domain, config: RestEMConfig, round_index: int) -> list[Unit]:
    """On a worker: the chunk's pending baseline updates and sampled self-edits (K per item, one seeded call)."""
    units = []
    for item, pending in chunk:
        item_id = domain.item_id(item)

        def seeds(tag: object) -> tuple[int, ...]:
            return tuple(unit_seed(config.seed, round_index, item_id, tag, r) for r in range(config.eval_repeats))

        if "baseline" in pending:
            baseline = domain.baseline_update(item)
            fields = {"item_id": item_id, "baseline": True}
            units.append(Unit(unit_key(item_id, "baseline"), item, baseline, seeds("baseline"), fields))
        if not any(isinstance(tag, int) for tag in pending):
            continue
        prompt = domain.prompt(item)
        started = time.perf_counter()
        seed = unit_seed(config.seed, round_index, item_id, "sample")
        self_edits = sample(
            bank.model, bank.tokenizer, prompt, config.k, config.sampling, seed, domain.self_edit_schema
        )
        sample_seconds = round((time.perf_counter() - started) / config.k, 3)
        for k in (tag for tag in pending if isinstance(tag, int)):
            fields = {"item_id": item_id, "baseline": False, "index": k, "prompt": prompt, "self_edit": self_edits[k]}
            fields["sample_seconds"] = sample_seconds
            units.append(Unit(unit_key(item_id, k), item, domain.to_update(item, self_edits[k]), seeds(k), fields))
    return units


def _reward_record(unit: Unit, outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One record per unit: the mean reward over its inner-loop runs, and the last run's details; no
    reward (None) if a run failed or graded nothing."""
    rewards = [o.reward for o in outcomes]
    error = next((o.error for o in outcomes if o.error), None)
    scored = None if error or None in rewards else sum(rewards) / len(rewards)
    return [
        {
            **unit.fields,
            "reward": scored,
            "rewards": rewards,
            "seconds": round(sum(sum(o.seconds.values()) for o in outcomes), 3),
            "rejected": outcomes[0].rejected,
            "error": error,
            "details": outcomes[-1].score.details if outcomes[-1].score else [],
        }
    ]


def select_self_edits(records: list[dict[str, Any]], config: RestEMConfig) -> list[dict[str, Any]]:
    """Per item: the ``top_m`` best self-edits (all if ``None``) with reward > 0 (and > the baseline's, if
    asked). Self-edits without a reward (failed, or nothing graded) are never kept, nor any of an item whose
    baseline has none."""
    baselines = {r["item_id"]: r["reward"] for r in records if r["baseline"]}
    by_item: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if not record["baseline"] and record["reward"] is not None:
            by_item.setdefault(record["item_id"], []).append(record)
    kept = []
    for item_id, candidates in by_item.items():
        bar = baselines.get(item_id, 0.0) if config.beat_baseline else 0.0
        if bar is None:
            continue
        ranked = sorted(candidates, key=lambda r: (-r["reward"], r["index"]))
        kept.extend(r for r in ranked[: config.top_m] if r["reward"] > bar and r["reward"] > 0)
    return kept


def improve_policy(
    base_model: str,
    previous: Path | None,
    kept: list[dict[str, Any]],
    config: RestEMConfig,
    round_index: int,
    target: Path,
    progress: bool,
) -> None:
    """SFT on (prompt -> self-edit): the ``previous`` policy adapter (None: a fresh one) trained further
    on ``base_model`` and saved to ``target`` as a PEFT adapter, which appears whole or not at all.

    The SFT statistics go to ``sft.json`` beside it, once: a policy rebuilt because its directory was
    lost (runs are committed without policies) keeps the first training's record. With nothing kept the
    adapter is saved unchanged (a fresh one is the base model itself), so the next round starts from the
    same policy.
    """
    examples = [TrainingExample(r["prompt"], r["self_edit"], chat=True) for r in kept]
    seed = unit_seed(config.seed, round_index, "sft")
    description = f"round {round_index}: SFT on {len(examples)} self-edits" if progress else None
    loaded = load_base(base_model, config.lora)
    bank = LoraBank(loaded.model, loaded.tokenizer, config.lora, name=base_model)
    initial = read_adapter(previous)[1] if previous else None
    (stats,) = bank.train([TrainJob(0, examples, config.sft, seed, initial=initial)], progress=description)
    record = target.parent / "sft.json"
    if not record.exists():
        write_json_atomic(record, {"n_examples": len(examples), **asdict(stats)})
    bank.save_adapter(0, target)
