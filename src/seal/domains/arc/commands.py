"""``seal arc ...``: the ARC domain's commands."""

from __future__ import annotations

import json
from dataclasses import replace

from jsonargparse import ArgumentParser, Namespace

from seal.commands import Command, add_config, add_executor, add_run_options, config, executor, register
from seal.domains.arc.evaluate import ArcEvalConfig, run_arc_eval, run_arc_train
from seal.loops.restem import RestEMConfig


def _eval_arguments(parser: ArgumentParser) -> None:
    add_config(parser)
    parser.add_class_arguments(ArcEvalConfig, None)
    parser.add_argument("--policy", help="--condition seal: the policy (a `seal arc train` round's policy directory)")
    add_executor(parser)
    add_run_options(parser)


def _eval(args: Namespace) -> None:
    if args.condition == "seal" and not args.policy:
        raise ValueError("--condition seal needs --policy DIR (a policy from `seal arc train`)")
    settings = config(ArcEvalConfig, args, **({"model": args.policy} if args.condition == "seal" else {}))
    summary = run_arc_eval(settings, args.out, resume=args.resume, progress=not args.quiet, executor=executor(args))
    print(json.dumps(summary, indent=2))
    print(f"\nrun directory: {args.out}")


def _train_arguments(parser: ArgumentParser) -> None:
    add_config(parser)
    parser.add_class_arguments(ArcEvalConfig, None, skip={"condition"})
    parser.add_class_arguments(RestEMConfig, "restem", skip={"k", "sampling", "lora", "seed", "eval_repeats"})
    # the paper keeps every ARC self-edit that solves its task, not the best one per task
    parser.set_defaults({"restem.rounds": 1, "restem.top_m": None})
    parser.add_argument("--train_tasks", default="seal-train", help="the tasks ReST-EM trains on (never eval tasks)")
    add_executor(parser)
    add_run_options(parser)


def _train(args: Namespace) -> None:
    evaluation = config(ArcEvalConfig, args, condition="seal")
    restem = replace(
        args.restem, k=evaluation.k, sampling=evaluation.sampling, lora=evaluation.lora, seed=evaluation.seed
    )
    summaries = run_arc_train(
        evaluation,
        restem,
        args.train_tasks,
        args.out,
        resume=args.resume,
        progress=not args.quiet,
        executor=executor(args),
    )
    for round_index, summary in enumerate(summaries):
        lo, hi = summary["ci95"]
        print(f"round {round_index}: success rate {summary['success_rate']:.1%} [{lo:.1%}, {hi:.1%}]")
    print(f"\nrun directory: {args.out}")


register(
    "arc",
    "few-shot learning on ARC-AGI-1 (test-time training)",
    {
        "eval": Command("score one condition of the paper's Table 1", _eval_arguments, _eval),
        "train": Command("ReST-EM on ARC with the shared engine", _train_arguments, _train),
    },
)
