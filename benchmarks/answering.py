"""Answering alone: the questions of the 16 updates of benchmarks/inner_loop.py, each through its own adapter.

The adapters are random (their outputs only need to match between runs, not to be right): one
generation over every prompt, routed to 16 slots, timed at each ``--batch-sizes`` value, with a
digest of the answers (it must not change between engine versions or batch sizes: compare code
versions by pointing PYTHONPATH at their ``src``).

    .venv/bin/python benchmarks/answering.py [--batch-sizes 64 256]
"""

from __future__ import annotations

import argparse
import hashlib
import time

import torch
from workload import iter2_config

from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.evaluate import select_passages
from seal.engine.bank import LoraBank
from seal.engine.generation import SamplingConfig, render_prompt
from seal.grading import OfflineGrader
from seal.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    config = iter2_config()
    domain = KnowledgeDomain(OfflineGrader(), config.train, answer_tokens=config.answer_tokens)
    loaded = load_model(args.model)
    n_slots = config.n_self_edits * config.n_passages
    bank = LoraBank(loaded.model, loaded.tokenizer, config.lora, n_slots=n_slots)
    generator = torch.Generator().manual_seed(0)
    for slot in range(n_slots):
        bank.reset(slot, seed=slot)
        with torch.no_grad():
            for layer in bank.layers:
                layer.lora_b[slot].normal_(0.0, 0.002, generator=generator)
    passages = select_passages(config)
    prompts, slots = [], []
    for slot in range(n_slots):
        messages = domain.queries(passages[slot // config.n_self_edits]).messages  # same for a passage's updates
        prompts += [render_prompt(bank.tokenizer, m) for m in messages]
        slots += [slot] * len(messages)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=config.answer_tokens)
    for batch_size in args.batch_sizes:
        started = time.perf_counter()
        answers = bank.generate(prompts, slots, greedy, batch_size)
        seconds = time.perf_counter() - started
        digest = hashlib.sha256("\n".join(answers).encode()).hexdigest()[:12]
        print(f"{len(prompts)} prompts, {n_slots} slots, batch {batch_size}: {seconds:.1f} s, answers {digest}")


if __name__ == "__main__":
    main()
