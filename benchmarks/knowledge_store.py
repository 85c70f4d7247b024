"""How should one user's many documents be held? Ten documents learned into one store, four designs.

The 10 built-in demo passages (40 questions about invented facts) are learned one after another into
one store; then all 40 questions are asked, each as a bare chat message (as `seal serve` gets them: no
topic, no passage). Every design trains on the same data: each passage and its self-edit, written
once by the untouched model with a fixed seed.

- ``alone``: each document in its own adapter, asked only its own questions (the reference: no
  other document can interfere, but a question must know which document it is about);
- ``added``: each document trained alone into its own adapter (a constant cost per document), the
  store's adapter the sum of them (:func:`added`), exactly (rank 10 x r) and truncated to rank r and 4r;
- ``replay``: one adapter trained further on each new document together with every earlier
  document's data (the cost of a document grows with the documents before it);
- ``joint``: one fresh adapter trained on all ten documents at once (what a store retrains after a
  document is forgotten).

    .venv/bin/python benchmarks/knowledge_store.py [--model smollm2-135m] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from seal.domains.knowledge.data import demo_data_path, load_passages
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, render_prompt, sample
from seal.engine.lora import LoraConfig
from seal.engine.training import Adapter, TrainJob
from seal.grading import GradeRequest, OfflineGrader, Verdict
from seal.machine import describe
from seal.models.loading import load_base
from seal.stats import paired_difference_ci, pooled_accuracy_ci

SELF_EDIT_SAMPLING = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="benchmarks/results/knowledge_store.json")
    args = parser.parse_args()
    started = time.perf_counter()
    passages = load_passages(demo_data_path())
    lora = LoraConfig(base_precision="fp32")
    domain = KnowledgeDomain(OfflineGrader())
    loaded = load_base(args.model, lora)
    writer_texts = [sample(loaded.model, loaded.tokenizer, domain.prompt(p), 1, SELF_EDIT_SAMPLING, i)[0]
                    for i, p in enumerate(passages)]  # fmt: skip
    examples = [domain.to_update(p, text).examples for p, text in zip(passages, writer_texts)]
    n = len(passages)
    bank = LoraBank(loaded.model, loaded.tokenizer, lora, n_slots=n)
    train = domain.train

    def ask(bank: LoraBank, slot_of_passage: list[int | None]) -> list[list[bool]]:
        prompts, slots = [], []
        for p, slot in zip(passages, slot_of_passage):
            prompts += [render_prompt(bank.tokenizer, q.question) for q in p.questions]
            slots += [slot] * len(p.questions)
        answers = iter(bank.generate(prompts, slots, SamplingConfig(temperature=0.0, max_new_tokens=48), 64))
        return [
            [OfflineGrader().grade([GradeRequest(q.question, q.answer, next(answers))])[0] is Verdict.CORRECT
             for q in p.questions]
            for p in passages
        ]  # fmt: skip

    results: dict[str, dict] = {}

    def record(name: str, correct: list[list[bool]], seconds_per_document: list[float]) -> None:
        results[name] = {"correct": correct, "train_seconds_per_document": [round(s, 2) for s in seconds_per_document]}
        total = sum(map(sum, correct))
        print(f"{name:>12}: {total}/{sum(map(len, correct))} correct, train seconds {sum(seconds_per_document):.0f}")

    record("base", ask(bank, [None] * n), [0.0] * n)

    # alone: every document trained on its own (one joint pass of n independent slots)
    stats = bank.train([TrainJob(i, examples[i], train, seed=i) for i in range(n)])
    alone_adapters = [bank.adapter(i) for i in range(n)]
    record("alone", ask(bank, list(range(n))), [s.seconds for s in stats])

    for rank in (n * lora.rank, 4 * lora.rank, lora.rank):
        scale = (lora.alpha / lora.rank) / (lora.alpha / rank)
        wide = replace(lora, rank=rank)
        fresh = load_base(args.model, wide)  # a bank wraps its model's layers: another rank, another copy
        store = LoraBank(fresh.model, fresh.tokenizer, wide, n_slots=1)
        store.set_adapter(0, added(alone_adapters, rank, scale))
        name = f"added r{rank}" + (" (exact)" if rank == n * lora.rank else "")
        record(name, ask(store, [0] * n), [s.seconds for s in stats])
        del fresh, store

    seconds, adapter = [], None
    for i in range(n):
        data = [e for j in range(i + 1) for e in examples[j]]
        (step,) = bank.train([TrainJob(0, data, train, seed=100 + i, initial=adapter)])
        adapter = bank.adapter(0)
        seconds.append(step.seconds)
    record("replay", ask(bank, [0] * n), seconds)

    (joint,) = bank.train([TrainJob(0, [e for group in examples for e in group], train, seed=200)])
    record("joint", ask(bank, [0] * n), [joint.seconds / n] * n)

    summary = {}
    reference = _counts(results["alone"]["correct"])
    for name, result in results.items():
        counts = _counts(result["correct"])
        delta, lo, hi = paired_difference_ci(reference[:, 0], reference[:, 1], counts[:, 0], counts[:, 1])
        summary[name] = {
            "accuracy": counts[:, 0].sum() / counts[:, 1].sum(),
            "ci95": list(pooled_accuracy_ci(counts[:, 0], counts[:, 1])),
            "minus_alone": [delta, lo, hi],
            "train_seconds": sum(result["train_seconds_per_document"]),
        }
    payload = {
        "command": "benchmarks/knowledge_store.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": describe(),
        "documents": [p.title for p in passages],
        "self_edits": writer_texts,
        "summary": summary,
        "results": results,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(payload, indent=1, default=float) + "\n")
    for name, s in summary.items():
        d, lo, hi = s["minus_alone"]
        interval = f"minus alone {d:+.1%} [{lo:+.1%}, {hi:+.1%}]"
        print(f"{name:>18}  {s['accuracy']:6.1%}  {interval}  train {s['train_seconds']:.0f} s")


def added(adapters: Sequence[Adapter], rank: int, scale: float = 1.0) -> Adapter:
    """``scale`` times the sum of ``adapters`` (same layers) as one adapter of ``rank``: exact where the
    sum's rank is at most ``rank``, else its best approximation of that rank, layer by layer. An adapter
    trained at scaling ``s`` and used at scaling ``t`` (another alpha / rank) needs ``scale = s / t``."""
    if not adapters:
        raise ValueError("adding adapters needs at least one")
    names = set(adapters[0])
    if any(set(adapter) != names for adapter in adapters):
        raise ValueError("the adapters to add differ in their layers")
    return {name: _added_layer([adapter[name] for adapter in adapters], rank, scale) for name in adapters[0]}


def _added_layer(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]], rank: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.cat([a for a, _ in factors], dim=1).double()  # (in, k)
    b = torch.cat([b for _, b in factors], dim=0).double() * scale  # (k, out)
    q_a, r_a = torch.linalg.qr(a)  # a = q_a r_a
    q_b, r_b = torch.linalg.qr(b.T)  # b = r_b^T q_b^T
    u, sigma, v_t = torch.linalg.svd(r_a @ r_b.T)
    kept = min(rank, sigma.numel())
    root = sigma[:kept].sqrt()
    new_a = torch.zeros(a.shape[0], rank, dtype=torch.float64)
    new_b = torch.zeros(rank, b.shape[1], dtype=torch.float64)
    new_a[:, :kept] = q_a @ u[:, :kept] * root
    new_b[:kept] = (root[:, None] * v_t[:kept]) @ q_b.T
    dtype = factors[0][0].dtype
    return new_a.to(dtype), new_b.to(dtype)


def _counts(correct: list[list[bool]]) -> np.ndarray:
    return np.array([[sum(c), len(c)] for c in correct])


if __name__ == "__main__":
    main()
