"""Seconds per self-edit evaluation, by phase: generate / train / answer / grade.

One evaluation = the model writes a self-edit for a passage, a fresh LoRA adapter is trained on
passage + self-edit, the passage's questions are answered closed-book, and graded. With ``--k K``
the model writes K self-edits per passage in one sampling call and the K updates are trained and
answered together (as ReST-EM and ``--n-self-edits`` do); times are then per evaluation, i.e. the
passage's wall time divided by K.

    .venv/bin/python benchmarks/self_edit_eval.py [--model smollm2-135m] [--n-passages 5] [--k 1] [--batch-size 1]

Writes benchmarks/results/self_edit_eval[-kK][-bsN].json (or --out). Run it on a quiet machine: two
processes sharing two cores slow each other down far more than twofold.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from seal.domain import Rejection
from seal.domains.knowledge.data import default_data_path, load_passages
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.evaluate import EvalConfig
from seal.engine.bank import LoraBank
from seal.engine.generation import sample
from seal.grading import OfflineGrader
from seal.loops.inner import InnerLoop, Job
from seal.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=str(default_data_path()))
    parser.add_argument("--n-passages", type=int, default=5)
    parser.add_argument("--k", type=int, default=1, help="self-edits per passage, sampled and scored together")
    parser.add_argument("--batch-size", type=int, default=1, help="training batch size (length-grouped)")
    parser.add_argument("--out")
    args = parser.parse_args()

    defaults = EvalConfig()
    train = replace(defaults.train, batch_size=args.batch_size)
    loaded = load_model(args.model)
    domain = KnowledgeDomain(OfflineGrader(), train)
    loop = InnerLoop(LoraBank(loaded.model, loaded.tokenizer, defaults.lora, n_slots=args.k), domain)
    passages = load_passages(args.data, "eval")[: args.n_passages]

    rows = []
    for index, passage in enumerate(passages):
        started = time.perf_counter()
        texts = sample(loaded.model, loaded.tokenizer, domain.prompt(passage), args.k, defaults.sampling, seed=index)
        generate_s = (time.perf_counter() - started) / args.k
        updates = [domain.to_update(passage, text) for text in texts]
        kept = [(text, u) for text, u in zip(texts, updates) if not isinstance(u, Rejection)]
        if len(kept) < len(texts):
            print(f"{passage.title}: {len(texts) - len(kept)} self-edit(s) rejected, not timed")
        outcomes = loop.evaluate([Job(passage, update, seed=index) for _, update in kept])
        for (text, update), outcome in zip(kept, outcomes):
            phases = {"generate_s": generate_s, **{f"{k}_s": v for k, v in outcome.seconds.items()}}
            rows.append(
                {
                    "passage": passage.title,
                    "passage_words": len(passage.context.split()),
                    "questions": len(passage.questions),
                    "self_edit_tokens": len(loaded.tokenizer(text)["input_ids"]),
                    "train_sequences": len(update.examples),
                    "train_tokens": outcome.train.tokens,
                    **phases,
                    "total_s": sum(phases.values()),
                    "train_tokens_per_s": outcome.train.tokens / outcome.seconds["train"],
                    "reward": outcome.reward,
                }
            )
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}))

    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if isinstance(rows[0][key], (int, float))}
    result = {
        "command": "benchmarks/self_edit_eval.py "
        f"--model {args.model} --n-passages {args.n_passages} --k {args.k} --batch-size {args.batch_size}",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "model": args.model,
        "lora": vars(defaults.lora) | {"target_modules": list(defaults.lora.target_modules)},
        "train": vars(train),
        "median": {k: round(v, 3) for k, v in median.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "per_passage": rows,
    }
    suffix = ("" if args.k == 1 else f"-k{args.k}") + ("" if args.batch_size == 1 else f"-bs{args.batch_size}")
    out = Path(args.out or f"benchmarks/results/self_edit_eval{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median": result["median"], "peak_rss_mb": result["peak_rss_mb"]}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
