"""Ten documents learned one after another by a SelfAdaptingModel (the path `seal serve` runs), then
every question asked; beside each document learned alone, by a tenant of its own.

The 10 built-in demo passages (40 questions about invented facts), asked as bare chat messages.
Records accuracy (with passage-bootstrap CIs, and the paired difference), seconds per document
learned (writing its self-edit and training), and how they grow with the documents before it.

    .venv/bin/python benchmarks/serve_learning.py [--model smollm2-135m] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from seal.domains.knowledge.data import demo_data_path, load_passages
from seal.engine.lora import LoraConfig
from seal.grading import GradeRequest, OfflineGrader, Verdict
from seal.machine import describe, peak_memory_mb
from seal.serving.answers import Chat
from seal.serving.config import ServeConfig
from seal.serving.model import SelfAdaptingModel
from seal.stats import paired_difference_ci, pooled_accuracy_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="benchmarks/results/serve_learning.json")
    args = parser.parse_args()
    started = time.perf_counter()
    passages = load_passages(demo_data_path())
    config = ServeConfig(model=args.model, lora=LoraConfig(base_precision="fp32"))
    model = SelfAdaptingModel(config, tempfile.mkdtemp(prefix="seal-serve-learning-"))
    grader = OfflineGrader()

    def correct(tenants: list[str]) -> list[list[bool]]:
        chats = [Chat(t, [{"role": "user", "content": q.question}], 48) for t, p in zip(tenants, passages)
                 for q in p.questions]  # fmt: skip
        replies = iter(model.answer(chats))
        return [[grader.grade([GradeRequest(q.question, q.answer, next(replies).text)])[0] is Verdict.CORRECT
                 for q in p.questions] for p in passages]  # fmt: skip

    together, _ = model.state.create_tenant()
    base = correct([together] * len(passages))
    seconds = [model.learn(p.context, p.title, together).seconds for p in passages]
    print("one tenant, ten documents: seconds per document", [round(s) for s in seconds])
    sequential = correct([together] * len(passages))
    alone_tenants = [model.state.create_tenant()[0] for _ in passages]
    alone_seconds = [model.learn(p.context, p.title, t).seconds for p, t in zip(passages, alone_tenants)]
    alone = correct(alone_tenants)

    counts = {name: np.array([[sum(c), len(c)] for c in result])
              for name, result in (("base", base), ("alone", alone), ("ten in one tenant", sequential))}  # fmt: skip
    summary = {}
    for name, c in counts.items():
        delta = paired_difference_ci(counts["alone"][:, 0], counts["alone"][:, 1], c[:, 0], c[:, 1])
        summary[name] = {
            "accuracy": c[:, 0].sum() / c[:, 1].sum(),
            "ci95": list(pooled_accuracy_ci(c[:, 0], c[:, 1])),
            "minus_alone": list(delta),
        }
        interval = f"minus alone {delta[0]:+.1%} [{delta[1]:+.1%}, {delta[2]:+.1%}]"
        print(f"{name:>18}: {summary[name]['accuracy']:.1%}  {interval}")
    slope = np.polyfit(np.arange(len(seconds)), seconds, 1)[0]
    payload = {
        "command": "benchmarks/serve_learning.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": describe(),
        "config": asdict(config),
        "summary": summary,
        "seconds_per_document": {
            "ten_in_one_tenant": seconds,
            "alone": alone_seconds,
            "growth_per_earlier_document": slope,
        },  # fmt: skip
        "correct": {"base": base, "alone": alone, "ten_in_one_tenant": sequential},
        "self_edits": [d.self_edit for d in model.documents(together)],
        "peak_rss_mb": peak_memory_mb("cpu"),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(payload, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
