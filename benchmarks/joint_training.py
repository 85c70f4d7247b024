"""Joint LoRA training alone: the 16 updates of benchmarks/inner_loop.py, trained ``--slots`` at a time.

Prints the seconds per repeat and the mean final loss (the loss must not change between engine
versions: compare code versions by pointing PYTHONPATH at their ``src``). With several
``--base-precisions``, each gets its own copy of the model and their repeats alternate, so a drift
of the machine's speed hits them alike.

    .venv/bin/python benchmarks/joint_training.py --slots 16 [--epochs 1] [--threads 1] [--repeats 2]
        [--base-precisions fp32 bf16-backward bf16]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from workload import iter2_config

from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.evaluate import select_passages
from seal.engine.bank import LoraBank
from seal.engine.lora import BASE_PRECISIONS
from seal.engine.training import TrainJob
from seal.grading import OfflineGrader
from seal.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--slots", type=int, default=16, help="updates trained in one joint pass")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--base-precisions", nargs="+", default=["fp32"], choices=sorted(BASE_PRECISIONS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = iter2_config()
    domain = KnowledgeDomain(OfflineGrader(), replace(config.train, epochs=args.epochs))
    updates = [domain.to_update(p, text) for p in select_passages(config) for text in p.self_edits]
    banks = {}
    for precision in args.base_precisions:
        loaded = load_model(args.model)
        lora = replace(config.lora, base_precision=precision)
        banks[precision] = LoraBank(loaded.model, loaded.tokenizer, lora, n_slots=args.slots)
    for repeat in range(args.repeats):
        for precision, bank in banks.items():
            started = time.perf_counter()
            losses = []
            for first in range(0, len(updates), args.slots):
                group = updates[first : first + args.slots]
                jobs = [TrainJob(i, u.examples, u.train, seed=1000 + first + i) for i, u in enumerate(group)]
                losses += [stats.final_loss for stats in bank.train(jobs)]
            seconds = time.perf_counter() - started
            mean_loss = sum(losses) / len(losses)
            print(f"{precision} slots {args.slots} repeat {repeat}: {seconds:.1f} s, mean final loss {mean_loss:.5f}")


if __name__ == "__main__":
    main()
