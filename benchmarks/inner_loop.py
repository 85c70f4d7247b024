"""The inner loop side by side: the usual way (PEFT + Trainer + generate, per self-edit) against ours.

Same machine, same model, same self-edits (the paper's iter2 self-edits of the first eval passages),
same hyper-parameters (LoRA r32/alpha64 on all projections, lr 1e-3, 10 epochs, batch 1, greedy
answers of at most 48 tokens, the offline grader). One evaluation = train a fresh adapter on
passage + self-edit, answer the passage's questions closed-book, grade.

- peer: per self-edit, ``get_peft_model`` on the base model, a ``transformers.Trainer``, then
  ``generate`` question by question, then ``unload()`` - written plainly, as a user would.
- ours: :class:`seal.loops.inner.InnerLoop` over a :class:`seal.engine.lora.LoraBank` with
  ``--parallel`` slots (K updates trained in one pass, answers generated in one batch), in this
  process; with ``--workers W`` (CPU only) also on W one-core Ray workers, the jobs split between
  them by training tokens (one share each, so neither waits on the other), each worker running its
  share through one ``InnerLoop`` with up to ``--parallel`` slots, on the executor that
  ``seal knowledge eval --executor ray --workers W`` uses. The figures of the workers are then
  reported as ours, those of the single process under ``ours_in_process``. The peer stays one
  process, as a user would run it. Ours runs in the production default precision
  (``LoraConfig().base_precision``: ``bf16`` frozen projections where the hardware has native bf16
  units, else ``fp32``); the peer in the model's own fp32, as ``Trainer`` and ``generate`` do
  unless told otherwise.

    .venv/bin/python benchmarks/inner_loop.py [--quick] [--model smollm2-135m] [--out PATH]
        [--parallel 16] [--workers 2] [--base-precisions fp32 bf16-backward]

``--base-precisions`` also runs ours in process with each given ``LoraConfig.base_precision``
(``fp32``; ``bf16``: the frozen projections through a bf16 copy; ``bf16-backward``: only the
training gradient through them) and reports its speed and its accuracy against ours in process in
the default precision. The training rate is given against the fp32 matmul peak, and also against
the bf16 peak, both measured by the script. On a GPU the peak is
measured there and ``peak_rss_mb`` holds the peak GPU memory allocated by PyTorch instead
(``peak_memory`` says which).

Writes benchmarks/results/inner_loop.json (or --out). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging
from workload import balanced_shares, iter2_config

from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.evaluate import EvalConfig, select_passages
from seal.domains.knowledge.prompts import ANSWER_PROMPTS
from seal.engine.bank import LoraBank
from seal.engine.lora import BASE_PRECISIONS, LoraConfig
from seal.engine.training import tokenize_example
from seal.executors import ExecutorSpec, make_executor
from seal.grading import OfflineGrader
from seal.loops.inner import InnerLoop, Job, Outcome
from seal.machine import default_device, describe, has_native_bf16, peak_memory_mb
from seal.models import load_model
from seal.seeding import unit_seed
from seal.stats import paired_difference_ci, pooled_accuracy_ci


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak_flops(device: str, dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10) -> float:
    """Best ``dtype`` matmul FLOP/s of this process on ``device`` (same threads and precision settings
    as the runs: on a GPU, TF32 stays off as PyTorch's default leaves it)."""
    if device == "cuda":
        size *= 4
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def describe_machine(device: str) -> dict[str, Any]:
    """The machine as runs record it, and the versions of the libraries either side runs on."""
    return {**describe(device), **{name: version(name) for name in ("transformers", "peft", "accelerate")}}


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
    dataset = [{"input_ids": tokenize_example(tokenizer, e)[0]} for e in update.examples]
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
        message = [
            {
                "role": "user",
                "content": ANSWER_PROMPTS[config.answer_prompt].format(title=passage.title, question=question.question),
            }
        ]
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


def job_tokens(tokenizer, job: Job) -> int:
    """Training tokens of one epoch of ``job``'s update: what its share of a worker's time scales with."""
    update = job.update
    return sum(len(tokenize_example(tokenizer, e)[0]) for e in update.examples)


def evaluate_share(bank: LoraBank, share: tuple[list[int], list[Job]], domain: KnowledgeDomain):
    """On a worker: its share of the jobs through the inner loop; returns the worker's process id, the
    jobs' indices, their outcomes and the seconds it took."""
    indices, jobs = share
    started = time.perf_counter()
    outcomes = InnerLoop(bank, domain).evaluate(jobs)
    return os.getpid(), indices, outcomes, time.perf_counter() - started


def worker_process(bank: LoraBank, task: int) -> tuple[int, float]:
    """On a worker: its process id and peak resident set so far, in MB."""
    return os.getpid(), peak_memory_mb("cpu")


def train_seconds(outcomes: list[Outcome]) -> float:
    return sum(o.seconds["train"] for o in outcomes)


@dataclass
class OursRun:
    """One run of ours: outcomes in job order, wall seconds, and per process: outcomes, seconds, peak MB."""

    outcomes: list[Outcome]
    seconds: float
    processes: list[tuple[list[Outcome], float, float]]
    startup_seconds: float = 0.0

    def train_flops_per_second(self, flops_per_token: float) -> float:
        """Summed over processes running side by side: each one's trained FLOPs over its training seconds."""
        return sum(
            sum(o.train.tokens for o in outcomes) * flops_per_token / train_seconds(outcomes)
            for outcomes, _, _ in self.processes
        )


def run_in_process(bank: LoraBank, domain: KnowledgeDomain, jobs: list[Job], device: str) -> OursRun:
    started = time.perf_counter()
    outcomes = InnerLoop(bank, domain).evaluate(jobs)
    synchronize(device)
    seconds = time.perf_counter() - started
    return OursRun(outcomes, seconds, [(outcomes, seconds, peak_memory_mb(device))])


def run_on_workers(
    model: str,
    lora: LoraConfig,
    domain: KnowledgeDomain,
    jobs: list[Job],
    costs: list[int],
    workers: int,
    parallel: int,
) -> OursRun:
    """The jobs split by training tokens over ``workers`` Ray actors of one core each, as ``seal knowledge
    eval --executor ray --workers N`` runs them. Start-up (Ray, the actors, their model loads) is timed apart."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default (15) starves workers beside a busy driver
    started = time.perf_counter()
    shares = [share for share in balanced_shares(costs, workers) if share]
    spec = ExecutorSpec(
        kind="ray", workers=len(shares), parallel=min(parallel, max(map(len, shares))), cpus_per_worker=1
    )
    executor = make_executor(spec)
    executor.use(model, lora)
    loaded = {pid for pid, _ in executor.map(worker_process, range(len(shares)))}  # each actor loads the model
    assert len(loaded) == len(shares), "expected one task per worker"
    warm = time.perf_counter()
    outcomes: list[Outcome | None] = [None] * len(jobs)
    processes = {}  # process id -> (outcomes, seconds)
    task = partial(evaluate_share, domain=domain)
    for pid, indices, share_outcomes, seconds in executor.map(task, [(s, [jobs[i] for i in s]) for s in shares]):
        for index, outcome in zip(indices, share_outcomes):
            outcomes[index] = outcome
        processes[pid] = (share_outcomes, seconds)
    seconds = time.perf_counter() - warm
    peaks = dict(executor.map(worker_process, range(len(shares))))
    executor.close()
    ray.shutdown()
    return OursRun(
        outcomes,  # type: ignore[arg-type]
        seconds,
        [(o, s, peaks[pid]) for pid, (o, s) in processes.items()],
        startup_seconds=warm - started,
    )


def correct_and_graded(scores) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluation: answers graded correct, answers graded."""
    verdicts = [[d["verdict"] for d in s.details if d["verdict"] != "ungraded"] for s in scores]
    return np.array([v.count("correct") for v in verdicts]), np.array([len(v) for v in verdicts])


def ours_figures(run: OursRun, peer_scores, peer_seconds: float, flops_per_token: float, peak: float) -> dict:
    """Speed, accuracy (against the peer's, paired by evaluation), training rate and memory of one run of ours."""
    ours_c, ours_t = correct_and_graded([o.score for o in run.outcomes])
    peer_c, peer_t = correct_and_graded(peer_scores)
    difference = paired_difference_ci(peer_c, peer_t, ours_c, ours_t)
    rate = run.train_flops_per_second(flops_per_token)
    return {
        "evals_per_min": 60 * len(run.outcomes) / run.seconds,
        "speedup": peer_seconds / run.seconds,
        "accuracy": float(ours_c.sum() / ours_t.sum()),
        "accuracy_ci95": list(pooled_accuracy_ci(ours_c, ours_t)),
        "accuracy_difference_minus_peer": {"diff": difference[0], "ci95": list(difference[1:])},
        "train_gflops": rate / 1e9,
        "train_flops_fraction_of_peak": rate / peak,
        "seconds": {
            "total": run.seconds,
            "startup": run.startup_seconds,
            "per_process": [
                {
                    "evaluations": len(outcomes),
                    "train_tokens": sum(o.train.tokens for o in outcomes),
                    "train": train_seconds(outcomes),
                    "answer_and_grade": seconds - train_seconds(outcomes),
                    "total": seconds,
                }
                for outcomes, seconds, _ in run.processes
            ],
        },
        "peak_rss_mb": sum(mb for _, _, mb in run.processes),
        "peak_rss_mb_per_process": [mb for _, _, mb in run.processes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quick", action="store_true", help="1 passage x 2 self-edits (under 5 minutes)")
    parser.add_argument("--n-passages", type=int, default=4)
    parser.add_argument("--k", type=int, default=4, help="self-edits per passage")
    parser.add_argument("--parallel", type=int, default=4, help="ours: updates trained and scored together")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ours: also run on this many one-core Ray workers (CPU only) and report that as ours",
    )
    parser.add_argument(
        "--base-precisions",
        nargs="*",
        default=[],
        choices=sorted(BASE_PRECISIONS),
        help="also run ours (in process) with these precisions of the frozen projections, for comparison "
        "with the default one",
    )
    parser.add_argument("--out", default="benchmarks/results/inner_loop.json")
    args = parser.parse_args()
    if args.quick:  # the peer takes ~65 s per evaluation on a 2-core CPU
        args.n_passages, args.k = 1, 2
    device = default_device()
    if args.workers < 1 or (args.workers > 1 and device != "cpu"):
        parser.error(f"--workers must be 1, or more on a CPU-only machine; got {args.workers} on {device}")
    hf_logging.set_verbosity_error()
    config = iter2_config(args.n_passages, args.k)
    default_precision = config.lora.base_precision
    if default_precision in args.base_precisions:
        parser.error(f"--base-precisions: {default_precision} is the default here, which ours always runs")

    passages = select_passages(config)
    domain = KnowledgeDomain(OfflineGrader(), config.train, answer_tokens=config.answer_tokens)
    units = [
        (p, domain.to_update(p, text), unit_seed(0, p.id, i)) for p in passages for i, text in enumerate(p.self_edits)
    ]
    jobs = [Job(passage, update, seed) for passage, update, seed in units]
    # emulated bf16 (no native units) is so slow that one timed multiply is plenty
    peak_bf16 = matmul_peak_flops(device, torch.bfloat16, repeats=10 if has_native_bf16(device) else 1)
    peak = matmul_peak_flops(device)
    print(
        f"{len(units)} evaluations per side on {device}; ours in {default_precision}; matmul peak "
        f"{peak / 1e9:.0f} GFLOP/s in fp32, {peak_bf16 / 1e9:.0f} in bf16"
    )

    loaded = load_model(args.model, device=device)
    bank = LoraBank(loaded.model, loaded.tokenizer, config.lora, n_slots=args.parallel)
    flops_per_token = train_flops_per_token(bank)
    in_process = run_in_process(bank, domain, jobs, device)
    print(f"ours in process: {in_process.seconds:.1f} s")
    base_mb = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20
    adapters_mb = (
        sum(p.numel() * p.element_size() for s in range(args.parallel) for p in bank.slot_parameters(s)) / 2**20
    )
    variants = {}
    for precision in args.base_precisions:
        variant_lora = replace(config.lora, base_precision=precision)
        bank = LoraBank(load_model(args.model, device=device).model, loaded.tokenizer, variant_lora, args.parallel)
        variants[precision] = run_in_process(bank, domain, jobs, device)
        print(f"ours in process, base precision {precision}: {variants[precision].seconds:.1f} s")
    on_workers = None
    if args.workers > 1:
        costs = [job_tokens(loaded.tokenizer, job) for job in jobs]
        on_workers = run_on_workers(args.model, config.lora, domain, jobs, costs, args.workers, args.parallel)
        print(f"ours on {args.workers} workers: {on_workers.seconds:.1f} s")

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

    def figures(run: OursRun) -> dict:
        return ours_figures(run, peer_scores, peer_seconds, flops_per_token, peak)

    ours = figures(on_workers or in_process)
    peer_c, peer_t = correct_and_graded(peer_scores)
    tokens = sum(o.train.tokens for o in in_process.outcomes)
    precisions = f" --base-precisions {' '.join(args.base_precisions)}" if args.base_precisions else ""
    result: dict[str, Any] = {
        "command": f"benchmarks/inner_loop.py{' --quick' if args.quick else ''} --model {args.model} "
        f"--n-passages {args.n_passages} --k {args.k} --parallel {args.parallel} --workers {args.workers}"
        f"{precisions}",
        "machine": describe_machine(device),
        "model": args.model,
        "evaluations": len(units),
        "parallel": args.parallel,
        "ours_is": f"{args.workers} one-core Ray workers" if on_workers else "one process",
        "ours_base_precision": default_precision,
        "peer_evals_per_min": 60 * len(units) / peer_seconds,
        "ours_evals_per_min": ours["evals_per_min"],
        "speedup": ours["speedup"],
        "accuracy_peer": float(peer_c.sum() / peer_t.sum()),
        "accuracy_ours": ours["accuracy"],
        "accuracy_peer_ci95": list(pooled_accuracy_ci(peer_c, peer_t)),
        "accuracy_ours_ci95": ours["accuracy_ci95"],
        "accuracy_difference_ours_minus_peer": ours["accuracy_difference_minus_peer"],
        "matmul_peak_gflops": peak / 1e9,
        "train_tokens": tokens,
        "ours_train_gflops": ours["train_gflops"],
        "peer_train_gflops": tokens * flops_per_token / peer_train_seconds / 1e9,
        "train_flops_fraction_of_peak": ours["train_flops_fraction_of_peak"],
        "matmul_peak_gflops_bf16": peak_bf16 / 1e9,
        "train_flops_fraction_of_bf16_peak": ours["train_gflops"] * 1e9 / peak_bf16,
        "peer_train_flops_fraction_of_peak": tokens * flops_per_token / peer_train_seconds / peak,
        "ours_seconds": ours["seconds"],
        "peer_seconds": {"total": peer_seconds, "train": peer_train_seconds},
        "peak_memory": "GPU memory allocated by PyTorch" if device == "cuda" else "resident set, summed over processes",
        "peak_rss_mb": ours["peak_rss_mb"],
        "peak_rss_mb_per_process": ours["peak_rss_mb_per_process"],
        "peak_rss_mb_driver_after_peer": peak_memory_mb(device),
        "model_weights_mb": base_mb - adapters_mb,
        "adapter_slots_mb": adapters_mb,
    }
    if on_workers:
        result["ours_in_process"] = figures(in_process)
        result["largest_reward_difference_workers_vs_in_process"] = max(
            abs(a.reward - b.reward) for a, b in zip(on_workers.outcomes, in_process.outcomes)
        )
    default_c, default_t = correct_and_graded([o.score for o in in_process.outcomes])
    default_loss = float(np.mean([o.train.final_loss for o in in_process.outcomes]))
    for precision, run in variants.items():
        variant_c, variant_t = correct_and_graded([o.score for o in run.outcomes])
        difference = paired_difference_ci(default_c, default_t, variant_c, variant_t)
        result.setdefault("base_precision_variants", {})[precision] = {
            **figures(run),
            f"difference_vs_{default_precision}_in_process": dict(zip(("diff", "lo", "hi"), difference)),
            "mean_final_train_loss": float(np.mean([o.train.final_loss for o in run.outcomes])),
            f"mean_final_train_loss_{default_precision}": default_loss,
        }
    result = rounded(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
