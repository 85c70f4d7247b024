"""``seal knowledge train``: ReST-EM on SQuAD training passages, evaluated on the held-out split.

Layout of ``DIR``::

    config.json                 every setting
    baselines/{base,passage}/   the paper's baselines on the same eval passages (+ external-<name>/)
    round-0/eval/               the untouched model's own self-edits (condition self-edit)
    round-r/rewards.jsonl       every scored self-edit of round r, appended as it is scored
    round-r/kept.json           the self-edits chosen for SFT
    round-r/policy/             the new policy: a PEFT LoRA adapter of the base model
    round-r/eval/               its held-out evaluation
    examples.json               three self-edits of one eval passage by the first and the last policy
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from seal.domains.knowledge.data import DataError, Passage, load_passages
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.evaluate import EvalConfig, check_prompt_lengths, make_domain, run_eval, select_passages
from seal.domains.knowledge.sources import resolve_data
from seal.engine.generation import sample
from seal.executors import Executor, ExecutorSpec, make_executor
from seal.loops.restem import MORE_ROUNDS, RestEMConfig, policy_dir, run_restem
from seal.models import check_model
from seal.models.loading import load_base
from seal.runs import RunDirectory, write_json_atomic
from seal.seeding import unit_seed

N_EXAMPLES = 3


@dataclass(frozen=True)
class KnowledgeTrainConfig:
    """``evaluation`` holds the inner-loop settings and the held-out evaluation (condition self-edit)."""

    evaluation: EvalConfig
    restem: RestEMConfig
    n_train_passages: int = 24
    external_self_edits: str | None = None

    def __post_init__(self) -> None:
        if self.n_train_passages < 1:
            raise ValueError(f"--n_train_passages must be >= 1, got {self.n_train_passages}")
        if self.evaluation.sampling != self.restem.sampling:
            raise ValueError("the policy must sample self-edits the same way in training and evaluation")


def training_passages(config: KnowledgeTrainConfig) -> list[Passage]:
    """A seeded sample of ``--split train`` passages (never the evaluation passages)."""
    data = resolve_data(config.evaluation.data)
    passages = load_passages(data, "train")
    if len(passages) < config.n_train_passages:
        raise DataError(
            f"{data}: only {len(passages)} training passages, --n_train_passages asks for {config.n_train_passages}"
        )
    return random.Random(config.restem.seed).sample(passages, config.n_train_passages)


def run_train(
    config: KnowledgeTrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Baselines, round 0, then ReST-EM rounds; returns the per-round evaluation summaries."""
    out = Path(out)
    evaluation = replace(config.evaluation, condition="self-edit")
    passages = training_passages(config)
    held_out = select_passages(evaluation)  # the evaluation data, validated before any model work
    check_model(evaluation.model, evaluation.lora.trust_remote_code)
    domain = make_domain(evaluation)  # a judge that cannot be reached stops the run before anything is written
    limit = evaluation.sampling.max_new_tokens
    check_prompt_lengths(passages + held_out, domain, evaluation.model, limit, evaluation.lora.trust_remote_code)
    RunDirectory(out).start({"task": "knowledge-train", **asdict(config)}, resume, MORE_ROUNDS)
    executor = executor or make_executor(ExecutorSpec())

    for condition in ("base", "passage"):
        baseline = replace(evaluation, condition=condition, n_self_edits=1)
        run_eval(baseline, out / "baselines" / condition, resume=True, progress=progress, executor=executor)
    if config.external_self_edits:
        external = replace(evaluation, condition="external", self_edits_file=config.external_self_edits)
        name = f"external-{Path(config.external_self_edits).stem}"
        run_eval(external, out / "baselines" / name, resume=True, progress=progress, executor=executor)

    def evaluate_policy(policy: str, directory: Path) -> dict[str, Any]:
        return run_eval(replace(evaluation, model=policy), directory, resume=True, progress=progress, executor=executor)

    summaries = run_restem(domain, passages, evaluation.model, evaluate_policy, config.restem, out, executor, progress)
    write_examples(out, evaluation, domain, config.restem.rounds)
    return summaries


def write_examples(out: Path, evaluation: EvalConfig, domain: KnowledgeDomain, rounds: int) -> None:
    """Three self-edits of the first eval passage by the untouched model and by the final policy (a run
    resumed with more rounds keeps the untouched model's and replaces the earlier final policy's)."""
    target = out / "examples.json"
    earlier = json.loads(target.read_text())["by_round"] if target.exists() else {}
    if str(rounds) in earlier:
        return
    passage = select_passages(replace(evaluation, n_passages=1))[0]

    def self_edits_by(model: str) -> list[str]:
        loaded = load_base(model, evaluation.lora)
        seed = unit_seed(evaluation.seed, "examples", passage.id)
        return sample(loaded.model, loaded.tokenizer, domain.prompt(passage), N_EXAMPLES, evaluation.sampling, seed)

    untouched = earlier["0"] if "0" in earlier else self_edits_by(evaluation.model)
    by_round = {"0": untouched, str(rounds): self_edits_by(str(policy_dir(out, rounds)))}
    examples = {"passage": {"title": passage.title, "context": passage.context}, "by_round": by_round}
    write_json_atomic(target, examples)
