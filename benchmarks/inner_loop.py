"""The inner loop side by side: the usual way (PEFT + Trainer + generate, per self-edit) against ours.

Same machine, same model, same self-edits (the paper's iter2 self-edits of the first eval passages),
same hyper-parameters (LoRA r32/alpha64 on all projections, lr 1e-3, 10 epochs, batch 1, greedy
answers of at most 48 tokens, the offline grader). One evaluation = train a fresh adapter on
passage + self-edit, answer the passage's questions closed-book, grade.

- peer: per self-edit, ``get_peft_model`` on the base model, a ``transformers.Trainer``, then
  ``generate`` question by question, then ``unload()`` - written plainly, as a user would.
- ours: :class:`seal.loops.inner.InnerLoop` over a :class:`seal.engine.lora.LoraBank` with
  ``--parallel`` slots (K updates trained in one pass, answers generated in one batch).

    .venv/bin/python benchmarks/inner_loop.py [--quick] [--model smollm2-135m] [--out PATH]
        [--base-precisions bf16-backward bf16]

``--base-precisions`` also runs ours with each given ``LoraConfig.base_precision`` (``bf16``: the
frozen projections through a bf16 copy; ``bf16-backward``: only the training gradient through them)
and reports its speed and its accuracy against ours in fp32. On a GPU the peak is measured
there and ``peak_rss_mb`` holds the peak GPU memory allocated by PyTorch instead (``peak_memory``
says which).

Writes benchmarks/results/inner_loop.json (or --out). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging
from workload import iter2_config

from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.evaluate import EvalConfig, select_passages
from seal.domains.knowledge.prompts import QUESTION_PROMPT
from seal.engine.lora import BASE_PRECISIONS, LoraBank, tokenize_example
from seal.grading import OfflineGrader
from seal.loops.inner import InnerLoop, Job
from seal.models import load_model
from seal.models.loading import default_device
from seal.seeding import unit_seed
from seal.stats import paired_difference_ci, pooled_accuracy_ci


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak_flops(device: str, size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul FLOP/s of this process on ``device`` (same threads and precision settings as
    the runs: on a GPU, TF32 stays off as PyTorch's default leaves it)."""
    if device == "cuda":
        size *= 4
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def peak_memory_mb(device: str) -> float:
    """Peak memory so far: GPU memory allocated by PyTorch on a GPU, else this process's resident set."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe_machine(device: str) -> str:
    threads = f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, {threads}"
    return f"{platform.machine()}, {threads}"


def train_flops_per_token(bank: LoraBank) -> float:
    """Forward + backward FLOPs per trained token: frozen projections and the vocabulary projection
    need forward and input gradients (4 per weight), LoRA weights also their own gradients (6 per
    weight). Attention scores are left out (under 1% at these lengths), so this undercounts."""
    frozen = sum(layer.base.weight.numel() for layer in bank.layers)
    vocabulary = bank.model.get_output_embeddings().weight.numel()
    lora = sum(p.numel() for p in bank.slot_parameters(0))
    return 4 * (frozen + vocabulary) + 6 * lora


def peer_evaluate(model, tokenizer, domain: KnowledgeDomain, passage, update, config: EvalConfig, seed: int):
    """The usual way, one self-edit: new PEFT model, Trainer, generate per question, unload."""
    lora = config.lora
    peft_config = PeftLoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip
    peft_model = get_peft_model(model, peft_config)
    dataset = [{"input_ids": tokenize_example(tokenizer, e, config.train.max_seq_len)[0]} for e in update.examples]
    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, per_device_train_batch_size=config.train.batch_size,
            num_train_epochs=config.train.epochs, learning_rate=config.train.learning_rate,
            lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, seed=seed,
            save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
            use_cpu=model.device.type == "cpu",
        )  # fmt: skip
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        started = time.perf_counter()
        Trainer(model=peft_model, args=arguments, train_dataset=dataset, data_collator=collator).train()
        trained = time.perf_counter()
    answers = []
    peft_model.eval()
    for question in passage.questions:
        message = [{"role": "user", "content": QUESTION_PROMPT.format(title=passage.title, question=question.question)}]
        ids = tokenizer.apply_chat_template(message, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = {name: tensor.to(model.device) for name, tensor in ids.items()}
        with torch.no_grad():
            output = peft_model.generate(
                **ids, max_new_tokens=config.answer_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        answers.append(tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    score = domain.grade(passage, answers)
    peft_model.unload()
    return score, trained - started, time.perf_counter() - trained


def rounded(value: Any) -> Any:
    """``value`` with every float, however deeply nested in dicts and lists, rounded to 4 decimals."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quick", action="store_true", help="1 passage x 2 self-edits (under 5 minutes)")
    parser.add_argument("--n-passages", type=int, default=4)
    parser.add_argument("--k", type=int, default=4, help="self-edits per passage")
    parser.add_argument("--parallel", type=int, default=4, help="ours: updates trained and scored together")
    parser.add_argument(
        "--base-precisions",
        nargs="*",
        default=[],
        choices=sorted(set(BASE_PRECISIONS) - {"fp32"}),
        help="also run ours with these precisions of the frozen projections, for comparison",
    )
    parser.add_argument("--out", default="benchmarks/results/inner_loop.json")
    args = parser.parse_args()
    if args.quick:  # the peer takes ~65 s per evaluation on a 2-core CPU
        args.n_passages, args.k = 1, 2
    hf_logging.set_verbosity_error()

    config = iter2_config(args.n_passages, args.k)
    passages = select_passages(config)
    domain = KnowledgeDomain(OfflineGrader(), config.train, answer_tokens=config.answer_tokens)
    units = [
        (p, domain.to_update(p, text), unit_seed(0, p.id, i)) for p in passages for i, text in enumerate(p.self_edits)
    ]
    jobs = [Job(passage, update, seed) for passage, update, seed in units]
    device = default_device()
    peak = matmul_peak_flops(device)
    print(f"{len(units)} evaluations per side on {device}; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")

    loaded = load_model(args.model, device=device)
    bank = LoraBank(loaded.model, loaded.tokenizer, config.lora, n_slots=args.parallel)
    started = time.perf_counter()
    outcomes = InnerLoop(bank, domain).evaluate(jobs)
    synchronize(device)
    ours_seconds = time.perf_counter() - started
    ours_train_seconds = sum(o.seconds["train"] for o in outcomes)
    tokens = sum(o.train.tokens for o in outcomes)
    flops = tokens * train_flops_per_token(bank)
    ours_peak_mb = peak_memory_mb(device)
    base_mb = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20
    adapters_mb = (
        sum(p.numel() * p.element_size() for s in range(args.parallel) for p in bank.slot_parameters(s)) / 2**20
    )
    print(f"ours: {ours_seconds:.1f} s ({ours_train_seconds:.1f} s training, {tokens} tokens)")
    variants = {}
    for precision in args.base_precisions:
        variant_lora = replace(config.lora, base_precision=precision)
        variant_bank = LoraBank(
            load_model(args.model, device=device).model, loaded.tokenizer, variant_lora, n_slots=args.parallel
        )
        started = time.perf_counter()
        variant_outcomes = InnerLoop(variant_bank, domain).evaluate(jobs)
        synchronize(device)
        variants[precision] = (variant_outcomes, time.perf_counter() - started)
        del variant_bank
        train_seconds = sum(o.seconds["train"] for o in variant_outcomes)
        print(f"ours, base precision {precision}: {variants[precision][1]:.1f} s ({train_seconds:.1f} s training)")

    peer_model = load_model(args.model, device=device)
    peer_scores, peer_train_seconds = [], 0.0
    started = time.perf_counter()
    for passage, update, seed in units:
        score, train_s, answer_s = peer_evaluate(
            peer_model.model, peer_model.tokenizer, domain, passage, update, config, seed
        )
        peer_scores.append(score)
        peer_train_seconds += train_s
        print(f"peer: {passage.title}: train {train_s:.1f} s, answer {answer_s:.1f} s, reward {score.reward:.2f}")
    peer_seconds = time.perf_counter() - started

    def counts(scores) -> tuple[np.ndarray, np.ndarray]:
        verdicts = [[d["verdict"] for d in s.details if d["verdict"] != "ungraded"] for s in scores]
        return np.array([v.count("correct") for v in verdicts]), np.array([len(v) for v in verdicts])

    ours_c, ours_t = counts([o.score for o in outcomes])
    peer_c, peer_t = counts(peer_scores)
    difference = paired_difference_ci(peer_c, peer_t, ours_c, ours_t)
    precisions = f" --base-precisions {' '.join(args.base_precisions)}" if args.base_precisions else ""
    result: dict[str, Any] = {
        "command": f"benchmarks/inner_loop.py{' --quick' if args.quick else ''} --model {args.model} "
        f"--n-passages {args.n_passages} --k {args.k} --parallel {args.parallel}{precisions}",
        "machine": describe_machine(device),
        "model": args.model,
        "evaluations": len(units),
        "parallel": args.parallel,
        "peer_evals_per_min": 60 * len(units) / peer_seconds,
        "ours_evals_per_min": 60 * len(units) / ours_seconds,
        "speedup": peer_seconds / ours_seconds,
        "accuracy_peer": float(peer_c.sum() / peer_t.sum()),
        "accuracy_ours": float(ours_c.sum() / ours_t.sum()),
        "accuracy_peer_ci95": list(pooled_accuracy_ci(peer_c, peer_t)),
        "accuracy_ours_ci95": list(pooled_accuracy_ci(ours_c, ours_t)),
        "accuracy_difference_ours_minus_peer": {"diff": difference[0], "ci95": list(difference[1:])},
        "matmul_peak_gflops": peak / 1e9,
        "train_tokens": tokens,
        "ours_train_gflops": flops / ours_train_seconds / 1e9,
        "peer_train_gflops": flops / peer_train_seconds / 1e9,
        "train_flops_fraction_of_peak": flops / ours_train_seconds / peak,
        "peer_train_flops_fraction_of_peak": flops / peer_train_seconds / peak,
        "ours_seconds": {"total": ours_seconds, "train": ours_train_seconds},
        "peer_seconds": {"total": peer_seconds, "train": peer_train_seconds},
        "peak_memory": "GPU memory allocated by PyTorch" if device == "cuda" else "process resident set",
        "peak_rss_mb": ours_peak_mb,
        "peak_rss_mb_after_peer": peak_memory_mb(device),
        "model_weights_mb": base_mb - adapters_mb,
        "adapter_slots_mb": adapters_mb,
    }
    for precision, (variant_outcomes, seconds) in variants.items():
        variant_c, variant_t = counts([o.score for o in variant_outcomes])
        train_seconds = sum(o.seconds["train"] for o in variant_outcomes)
        difference = paired_difference_ci(ours_c, ours_t, variant_c, variant_t)
        result.setdefault("base_precision_variants", {})[precision] = {
            "evals_per_min": 60 * len(units) / seconds,
            "speedup_over_peer": peer_seconds / seconds,
            "seconds": {"total": seconds, "train": train_seconds},
            "train_flops_fraction_of_peak": flops / train_seconds / peak,
            "accuracy": float(variant_c.sum() / variant_t.sum()),
            "difference_vs_fp32": dict(zip(("diff", "lo", "hi"), difference)),
            "mean_final_train_loss": float(np.mean([o.train.final_loss for o in variant_outcomes])),
            "mean_final_train_loss_fp32": float(np.mean([o.train.final_loss for o in outcomes])),
        }
    result = rounded(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
