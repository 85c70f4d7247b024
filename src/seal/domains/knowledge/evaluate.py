"""``seal knowledge eval``: the paper's Table 2 conditions, in both its settings, resumable.

Conditions:
  base       no update
  passage    train on the passage only
  self-edit  train on the passage + the model's own self-edits (K sampled per passage)
  external   train on the passage + self-edits read from a file (e.g. GPT-4.1's), matched by context

Settings: ``single`` (one update per passage and self-edit, scored on that passage's questions) and
``cpt`` (continued pretraining: one update on every passage's documents, scored on all questions;
:mod:`seal.domains.knowledge.cpt`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seal.domains.knowledge.cpt import run_cpt, training_record
from seal.domains.knowledge.data import SPLITS, DataError, Passage, load_passages
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.prompts import SELF_EDIT_PROMPTS
from seal.domains.knowledge.sources import default_split, resolve_data, sha256
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, render_prompt, tokenize_prompt
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig
from seal.executors import Executor
from seal.grading import Grader, JudgeGrader, OfflineGrader, VerdictCache
from seal.loops.conditions import run_condition
from seal.loops.scoring import Candidate, sampled_candidates
from seal.models import EMBEDDED_MODEL, cache_dir, check_model
from seal.models.loading import context_length, load_tokenizer
from seal.runs import RunDirectory
from seal.stats import pooled_accuracy_ci

log = logging.getLogger(__name__)

CONDITIONS = ("base", "passage", "self-edit", "external")
GRADERS = ("offline", "judge")
SETTINGS = ("single", "cpt")


@dataclass(frozen=True)
class EvalConfig:
    """Everything that determines a knowledge evaluation's numbers; written to ``config.json``."""

    condition: Literal["base", "passage", "self-edit", "external"] = "self-edit"
    """The update before answering: none, the passage, the passage and the model's own self-edits, or the
    passage and self-edits read from ``self_edits_file``."""
    setting: Literal["single", "cpt"] = "single"
    """``single``: one update per passage; ``cpt``: one update on every passage (continued pretraining)."""
    model: str = EMBEDDED_MODEL
    """The model updated and asked: smollm2-135m (embedded), tiny-random, a local directory or a hub id."""
    policy: str | None = None
    """``cpt`` with ``self-edit``: the model that writes the self-edits (default: ``model``)."""
    data: str | None = None
    """Passages: seal's JSON list or Hugging Face SQuAD rows (default: the SQuAD file of $SEAL_DATA, of
    `seal data`'s directory, or of ../shared/data)."""
    split: Literal["eval", "train", "all"] | None = None
    """None: ``eval`` (the paper's 200 evaluation passages) for a file that holds them, else ``all``."""
    n_passages: int | None = None
    """The first N passages of the split (default: all)."""
    n_self_edits: int = 1
    """Self-edits per passage (K)."""
    self_edits_file: str | None = None
    """``external``: a file of self-edits (SEAL's ``completions`` layout), matched to passages by context."""
    self_edit_prompt: Literal["implications", "implications-long", "rewrite", "self-qa"] = "implications"
    """How the model is asked for a self-edit."""
    split_lines: bool = True
    """Train on each line of a self-edit as its own document (as the paper does)."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256)
    """How self-edits are sampled. The paper samples a 7B model at 1.0; a 135M model degenerates there."""
    lora: LoraConfig = LoraConfig()
    train: TrainConfig = TrainConfig()
    answer_tokens: int = 48
    """Closed-book answers are at most this many tokens."""
    answer_prompt: Literal["topic", "paper"] = "topic"
    """How a question is asked: ``topic`` names the passage's title; ``paper`` is the official template."""
    grader: Literal["offline", "judge"] = "offline"
    """``offline``: deterministic rules; ``judge``: an OpenAI-compatible chat model."""
    judge_url: str | None = field(default_factory=lambda: os.environ.get("OPENAI_BASE_URL"))
    """The judge's OpenAI-compatible endpoint (default: $OPENAI_BASE_URL; the key from $OPENAI_API_KEY)."""
    judge_model: str | None = None
    """The judge model's name, e.g. gpt-4.1."""
    seed: int = 0
    """Seeds sampling, training order and the bootstrap; the same seed gives the same numbers on the same machine."""

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"--condition must be one of {', '.join(CONDITIONS)}, got {self.condition!r}")
        if self.setting not in SETTINGS:
            raise ValueError(f"--setting must be one of {', '.join(SETTINGS)}, got {self.setting!r}")
        if self.policy and (self.setting != "cpt" or self.condition != "self-edit"):
            raise ValueError(
                "--policy writes the self-edits of --setting cpt --condition self-edit; in the single setting "
                "the policy is --model, which writes its own self-edits and is updated by them"
            )
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.condition == "external" and not self.self_edits_file:
            raise ValueError("--condition external needs --self_edits_file FILE")
        if self.answer_tokens < 1:
            raise ValueError(f"--answer_tokens must be >= 1, got {self.answer_tokens}")
        if self.n_self_edits < 1:
            raise ValueError(f"--n_self_edits must be >= 1, got {self.n_self_edits}")
        if self.n_passages is not None and self.n_passages < 1:
            raise ValueError(f"--n_passages must be >= 1, got {self.n_passages}")
        if self.self_edit_prompt not in SELF_EDIT_PROMPTS:
            raise ValueError(f"--self_edit_prompt must be one of {', '.join(SELF_EDIT_PROMPTS)}")
        if self.grader not in GRADERS:
            raise ValueError(f"--grader must be one of {', '.join(GRADERS)}, got {self.grader!r}")
        if self.grader == "judge" and not (self.judge_url and self.judge_model):
            raise ValueError("--grader judge needs --judge_url (or $OPENAI_BASE_URL) and --judge_model")

    @property
    def self_edits_per_passage(self) -> int:
        return self.n_self_edits if self.condition in ("self-edit", "external") else 1


def make_grader(config: EvalConfig) -> Grader:
    """The configured grader; a judge is checked with one request first, and caches its verdicts."""
    if config.grader == "offline":
        return OfflineGrader()
    cache = VerdictCache(cache_dir() / "judge-verdicts.sqlite")
    judge = JudgeGrader(config.judge_url, config.judge_model, os.environ.get("OPENAI_API_KEY"), cache=cache)
    judge.check()
    return judge


def make_domain(config: EvalConfig) -> KnowledgeDomain:
    """The knowledge domain with the config's grader, inner-loop training and self-edit settings."""
    return KnowledgeDomain(
        make_grader(config),
        config.train,
        config.self_edit_prompt,
        config.split_lines,
        config.answer_tokens,
        config.answer_prompt,
    )


def check_prompt_lengths(
    passages: list[Passage], domain: KnowledgeDomain, model: str, max_new_tokens: int, trust_remote_code: bool = False
) -> None:
    """Refuse, before any model work, a passage whose self-edit prompt leaves no room in the model's
    context for the self-edit (``--sampling.max_new_tokens``): it would be cut, or take hours to fail."""
    tokenizer, limit = load_tokenizer(model, trust_remote_code), context_length(model, trust_remote_code)
    for passage in passages:
        tokens = len(tokenize_prompt(tokenizer, render_prompt(tokenizer, domain.prompt(passage))))
        if tokens + max_new_tokens > limit:
            raise DataError(
                f"passage {passage.title!r} ({passage.id}): its self-edit prompt is {tokens} tokens, and with "
                f"--sampling.max_new_tokens {max_new_tokens} that exceeds the {limit} tokens of {model}'s context"
            )


def with_split(config: EvalConfig) -> EvalConfig:
    """``config`` with its data's default split filled in, as the run records it."""
    return config if config.split else replace(config, split=default_split(resolve_data(config.data)))


def select_passages(config: EvalConfig) -> list[Passage]:
    """The passages to evaluate, validated, with external self-edits attached when asked for."""
    data = resolve_data(config.data)
    split = config.split or default_split(data)
    passages = load_passages(data, split)  # type: ignore[arg-type]
    if not passages:
        raise DataError(f"{data}: no passages in split {split!r}")
    passages = passages[: config.n_passages]
    if config.condition == "external":
        passages = _attach_external_self_edits(passages, Path(config.self_edits_file), config.n_self_edits)
    return passages


def _attach_external_self_edits(passages: list[Passage], path: Path, k: int) -> list[Passage]:
    by_id = {p.id: p.self_edits for p in load_passages(path)}
    missing = [p.title for p in passages if p.id not in by_id]
    if missing:
        raise DataError(f"{path}: no self-edits for {len(missing)} passage(s), first: {missing[0]!r}")
    short = [p.title for p in passages if len(by_id[p.id]) < k]
    if short:
        raise DataError(f"{path}: fewer than --n_self_edits={k} completions for passage {short[0]!r}")
    return [Passage(p.id, p.title, p.context, p.questions, by_id[p.id][:k]) for p in passages]


def run_eval(
    config: EvalConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    save_adapters: bool = False,
) -> dict[str, Any]:
    """Run one condition into ``out``; returns the summary. Completed units are skipped on resume.
    With ``save_adapters``, every update's adapter is kept in ``out/adapters/`` (PEFT's format; the CPT
    setting always keeps its one update in ``out/adapter/``).

    Where and how many updates at a time run is the ``executor``'s business (default: in this
    process, 4 at a time); it changes the speed, not the numbers, so it is not part of the config.
    """
    config = with_split(config)
    passages = select_passages(config)
    trusted = config.lora.trust_remote_code
    for model in filter(None, (config.model, config.policy)):
        check_model(model, trusted)
    domain = make_domain(config)  # a judge that cannot be reached stops the run before anything is written
    if config.condition == "self-edit":
        writer = config.policy or config.model
        check_prompt_lengths(passages, domain, writer, config.sampling.max_new_tokens, trusted)
    run = RunDirectory(out)
    if config.setting == "cpt":  # one update on every passage: more passages would be another update
        run.start(config_record(config), resume)
        regrade_ungraded(run, domain, passages)
        run_cpt(config, passages, domain, run, progress)
        summary = {**summarise(run.records(), config), "train": training_record(out)}
        run.write_summary(summary)
        return summary
    return run_condition(
        PassageCondition(config, passages, domain),
        out,
        resume=resume,
        progress=progress,
        executor=executor,
        save_adapters=save_adapters,
    )


class PassageCondition:
    """A condition in the single setting (one update per passage and self-edit), for the shared runner."""

    extendable = frozenset({"n_passages"})

    def __init__(self, config: EvalConfig, passages: list[Passage], domain: KnowledgeDomain):
        self.config, self.items, self.domain = config, passages, domain
        self.name, self.model, self.lora, self.seed = config.condition, config.model, config.lora, config.seed
        self.candidates_per_item = config.self_edits_per_passage

    def record(self) -> dict[str, Any]:
        return config_record(self.config)

    def candidates(self, bank: LoraBank, passage: Passage) -> list[Candidate]:
        return _candidates(self.config, bank, self.domain, passage)

    def describe(self, passage: Passage) -> dict[str, Any]:
        return {"passage_id": passage.id, "title": passage.title}

    def before_scoring(self, run: RunDirectory) -> None:
        regrade_ungraded(run, self.domain, self.items)

    def summarise(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        selected = {p.id for p in self.items}  # a grown run's record may hold more passages
        return summarise([r for r in records if r["passage_id"] in selected], self.config)


def regrade_ungraded(run: RunDirectory, domain: KnowledgeDomain, passages: list[Passage]) -> None:
    """Grade again the answers of finished units that the grader could not grade (e.g. while a judge
    was down), and write those units anew: their latest write is their record."""
    by_id = {p.id: p for p in passages}
    units: dict[str, list[dict[str, Any]]] = {}
    for record in run.records():
        units.setdefault(record["unit"], []).append(record)
    for unit, records in units.items():
        passage = by_id.get(records[0].get("passage_id"))
        if passage is None or not any(r.get("verdict") == "ungraded" for r in records):
            continue
        score = domain.grade(passage, [r["answer"] for r in records])
        fields = [{k: v for k, v in r.items() if k not in ("unit", "unit_lines")} for r in records]
        run.append_unit(unit, [{**r, **detail, "reward": score.reward} for r, detail in zip(fields, score.details)])


def _candidates(config: EvalConfig, bank: LoraBank, domain: KnowledgeDomain, passage: Passage) -> list[Candidate]:
    """The K (self-edit, update) pairs of a passage under the configured condition."""
    if config.condition == "base":
        return [(None, None)]
    if config.condition == "passage":
        return [(None, domain.baseline_update(passage))]
    if config.condition == "external":
        return [(text, domain.to_update(passage, text)) for text in passage.self_edits]
    return sampled_candidates(bank, domain, passage, config.n_self_edits, config.sampling, config.seed)


def config_record(config: EvalConfig) -> dict[str, Any]:
    """The run's config, with the data file found and its sha256 (a changed file cannot be resumed into),
    and the self-edit prompt's text (nor can a changed prompt)."""
    data = resolve_data(config.data)
    return {
        "task": "knowledge-eval",
        **asdict(config),
        "data_path": str(data.resolve()),
        "data_sha256": sha256(data),
        "self_edit_prompt_text": SELF_EDIT_PROMPTS[config.self_edit_prompt],
    }


def per_passage_counts(records: list[dict[str, Any]]) -> dict[str, dict[int, tuple[int, int]]]:
    """passage id -> self-edit index -> (correct, graded); failed evaluations are left out."""
    counts: dict[str, dict[int, list[int]]] = {}
    for r in records:
        if r.get("error"):
            continue
        cell = counts.setdefault(r["passage_id"], {}).setdefault(r["self_edit_index"], [0, 0])
        if r["verdict"] != "ungraded":
            cell[0] += r["verdict"] == "correct"
            cell[1] += 1
    return {pid: {i: (c, t) for i, (c, t) in units.items()} for pid, units in counts.items()}


def summarise(records: list[dict[str, Any]], config: EvalConfig) -> dict[str, Any]:
    """Accuracy pooled over questions (mean over self-edits), best-of-K, and a passage-bootstrap CI."""
    counts = per_passage_counts(records)
    passage_ids = sorted(counts)
    correct = np.array([sum(c for c, _ in counts[p].values()) for p in passage_ids])
    graded = np.array([sum(t for _, t in counts[p].values()) for p in passage_ids])
    best = [max(counts[p].values(), key=lambda ct: ct[0] / ct[1] if ct[1] else 0.0) for p in passage_ids]
    best_correct, best_graded = np.array([c for c, _ in best]), np.array([t for _, t in best])
    n_rejected = len({r["unit"] for r in records if r.get("rejected")})
    n_errors = len({r["unit"] for r in records if r.get("error")})
    return {
        "condition": config.condition,
        "setting": config.setting,
        "model": config.model,
        "policy": config.policy,
        "n_passages": len(passage_ids),
        "n_questions": sum({r["passage_id"]: r["unit_lines"] for r in records}.values()),
        "n_self_edits": config.self_edits_per_passage,
        "n_graded_answers": int(graded.sum()),
        "n_ungraded_answers": sum(r.get("verdict") == "ungraded" for r in records),
        "n_rejected_self_edits": n_rejected,
        "n_errors": n_errors,
        "accuracy": float(correct.sum() / graded.sum()) if graded.sum() else None,
        "ci95": list(pooled_accuracy_ci(correct, graded, seed=config.seed)),
        "best_accuracy": float(best_correct.sum() / best_graded.sum()) if best_graded.sum() else None,
        "best_ci95": list(pooled_accuracy_ci(best_correct, best_graded, seed=config.seed)),
        "self_edits_file": config.self_edits_file,
        "grader": config.grader,
    }
