"""``seal knowledge eval --setting cpt``: continued pretraining, the paper's Table 2 second setting.

One LoRA update absorbs the documents of all N passages at once (each passage, and under the
``self-edit`` and ``external`` conditions its K self-edits, cut into documents as in the single
setting); then every question of the N passages is answered closed-book through that one update.

Run directory, besides ``config.json``, ``results.jsonl`` (one record per question, appended a
passage at a time) and ``summary.json``:

    self_edits.jsonl   the self-edits the policy wrote (condition self-edit), a passage at a time
    training.pt        the training state, saved every few minutes, so a killed run resumes
                       mid-training (removed once every answer is written)
    adapter/           the trained update, a PEFT LoRA adapter (bf16)
    train.json         training documents, tokens, steps, seconds, final loss and peak memory (GPU:
                       allocated by PyTorch; CPU: the process's resident set; from the start of the
                       training attempt that finished it)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from seal.domain import RunStopped
from seal.domains.knowledge.data import Passage
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, render_prompt
from seal.engine.training import Checkpoint, TrainingExample, TrainJob
from seal.loops.inner import is_out_of_memory
from seal.loops.scoring import sampled_self_edits
from seal.machine import peak_memory_mb, reset_peak_memory
from seal.models.loading import load_base
from seal.runs import AppendOnlyLog, RunDirectory, write_json_atomic
from seal.seeding import unit_seed

if TYPE_CHECKING:
    from seal.domains.knowledge.evaluate import EvalConfig

CHECKPOINT_SECONDS = 300.0
"""How often the training state is saved: a killed run loses at most this much training."""
PASSAGES_PER_ANSWER_BATCH = 48
SELF_EDITS = "self_edits.jsonl"
TRAINING_STATE = "training.pt"
TRAINING_RECORD = "train.json"


def run_cpt(
    config: EvalConfig, passages: list[Passage], domain: KnowledgeDomain, run: RunDirectory, progress: bool
) -> None:
    """The CPT setting of ``config`` into ``run``, resuming whatever an earlier attempt finished:
    self-edits, training steps, answered passages."""
    done = run.completed_units()
    pending = [p for p in passages if p.id not in done]
    if not pending:
        (run.path / TRAINING_STATE).unlink(missing_ok=True)  # a kill may have come between the last answer and this
        return
    loaded = load_base(config.model, config.lora)
    bank = LoraBank(loaded.model, loaded.tokenizer, config.lora, name=config.model)
    slot = None
    if config.condition != "base":
        self_edits = _self_edits(config, passages, domain, bank, run.path, progress)
        documents = [d for p in passages for d in _documents(config, domain, p, self_edits.get(p.id, p.self_edits))]
        _train(bank, documents, config, run.path, progress)
        slot = 0
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=config.answer_tokens)
    with tqdm(total=len(passages), initial=len(passages) - len(pending), desc="answer", disable=not progress) as bar:
        for start in range(0, len(pending), PASSAGES_PER_ANSWER_BATCH):
            batch = pending[start : start + PASSAGES_PER_ANSWER_BATCH]
            prompts = [render_prompt(bank.tokenizer, m) for p in batch for m in domain.queries(p).messages]
            answers = iter(_answers(bank, prompts, slot, greedy))
            for passage in batch:
                score = domain.grade(passage, [next(answers) for _ in passage.questions])
                fields = {"passage_id": passage.id, "title": passage.title, "condition": config.condition}
                fields |= {"setting": "cpt", "self_edit_index": 0, "reward": score.reward}
                run.append_unit(passage.id, [{**fields, **detail} for detail in score.details])
                bar.update()
    (run.path / TRAINING_STATE).unlink(missing_ok=True)  # every answer is written: no resume needs it


def _answers(bank: LoraBank, prompts: list[str], slot: int | None, greedy: SamplingConfig) -> list[str]:
    """Greedy answers to ``prompts``, all in one batch if memory allows, else in halves, and so on."""
    batch_size = len(prompts)
    while True:
        try:
            return bank.generate(prompts, [slot] * len(prompts), greedy, batch_size=batch_size)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            if batch_size == 1:
                raise RunStopped(f"answering one question does not fit in memory on {bank.model.device}") from error
            batch_size = (batch_size + 1) // 2


def training_record(out: str | Path) -> dict[str, Any] | None:
    """What ``train.json`` says of a CPT run's update (None before its training has ended)."""
    path = Path(out) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def _documents(
    config: EvalConfig, domain: KnowledgeDomain, passage: Passage, self_edits: tuple[str, ...] | list[str]
) -> list[TrainingExample]:
    """A passage's training documents: the passage, then each self-edit's segments under conditions that have them."""
    documents = list(domain.baseline_update(passage).examples)
    if config.condition in ("self-edit", "external"):
        for text in self_edits[: config.n_self_edits]:
            documents += domain.self_edit_documents(passage, text)
    return documents


def _self_edits(
    config: EvalConfig, passages: list[Passage], domain: KnowledgeDomain, bank: LoraBank, out: Path, progress: bool
) -> dict[str, list[str]]:
    """Under condition self-edit, K self-edits per passage from the policy (``--policy``, else the model
    itself), each passage sampled by one seeded call as in the single setting, and logged as written."""
    if config.condition != "self-edit":
        return {}
    log = AppendOnlyLog(out / SELF_EDITS)
    log.drop_torn_tail()
    written = {r["passage_id"]: r["self_edits"] for r in log.records()}
    missing = [p for p in passages if p.id not in written]
    if missing:
        writer = load_base(config.policy, config.lora) if config.policy else bank
        for passage in tqdm(missing, desc="self-edits", disable=not progress):
            texts = sampled_self_edits(writer, domain, passage, config.n_self_edits, config.sampling, config.seed)
            log.append_unit(passage.id, [{"passage_id": passage.id, "self_edits": texts}])
            written[passage.id] = texts
    return written


def _train(bank: LoraBank, documents: list[TrainingExample], config: EvalConfig, out: Path, progress: bool) -> None:
    """The one update, resumed from the saved training state if an earlier attempt left one; its
    adapter and statistics are written when it ends."""
    job = TrainJob(0, documents, config.train, unit_seed(config.seed, "cpt"))
    checkpoint = Checkpoint(out / TRAINING_STATE, CHECKPOINT_SECONDS)
    reset_peak_memory(bank.model.device.type)
    try:
        (stats,) = bank.train([job], progress="train" if progress else None, checkpoint=checkpoint)
    except Exception as error:
        if is_out_of_memory(error):
            raise RunStopped(
                f"the update does not fit in memory on {bank.model.device}: use --train.gradient_checkpointing "
                "true, or a smaller --train.batch_size with a larger --train.gradient_accumulation"
            ) from error
        raise
    if training_record(out) is None:
        bank.save_adapter(0, out / "adapter")
        memory = {"peak_memory_mb": peak_memory_mb(bank.model.device.type)}
        write_json_atomic(out / TRAINING_RECORD, {"documents": len(documents), **asdict(stats), **memory})
