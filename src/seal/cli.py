"""The ``seal`` command line. Flags map one to one onto the config dataclasses."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import NoReturn

from seal.domain import RunStopped
from seal.domains.knowledge.data import SPLITS, demo_data_path
from seal.domains.knowledge.evaluate import (
    CONDITIONS,
    CPT_SELF_EDITS,
    CPT_TRAIN,
    GRADERS,
    SETTINGS,
    EvalConfig,
    run_eval,
)
from seal.domains.knowledge.prompts import DEFAULT_SELF_EDIT_PROMPT, SELF_EDIT_PROMPTS
from seal.engine.generation import SamplingConfig
from seal.engine.lora import BASE_DTYPES, BASE_PRECISIONS, LoraConfig
from seal.engine.training import TrainConfig
from seal.executors import KINDS, Executor, ExecutorSpec, make_executor
from seal.grading import OfflineGrader, calibrate, load_graded
from seal.inputs import finite_float
from seal.loops.continual import STRATEGIES, ContinualConfig
from seal.loops.restem import RestEMConfig
from seal.models import EMBEDDED_MODEL
from seal.models.loading import ModelLoadError
from seal.runs import RunError, json_safe

DEMO_CONDITIONS = ("base", "passage", "self-edit")
DATA_HELP = (
    "passages: seal's JSON list, or SQuAD rows as Hugging Face datasets writes them (default: the SQuAD file "
    "of $SEAL_DATA, of `seal data`'s directory, or of ../shared/data)"
)
SAVE_ADAPTERS_HELP = "keep every update's adapter in DIR/adapters/ (PEFT's format: peft and vLLM load it)"
SPLIT_HELP = "default: eval (the paper's 200 evaluation passages) for a file that holds them, else all"


def _add_executor_options(parser: argparse.ArgumentParser, parallel: bool = True) -> None:
    """Where the inner loop runs. Speed settings only: the results are the same, so not in the run config.
    ``parallel=False`` for commands whose work is one update at a time (continual sequences)."""
    defaults = ExecutorSpec()
    add = parser.add_argument
    if parallel:
        add("--parallel", type=int, default=defaults.parallel, help="updates trained and scored together per worker")
    add("--executor", default=defaults.kind, choices=KINDS, help="run the inner loop here or on Ray actors")
    add("--ray-address", help="address of a running Ray cluster (default: start a local one)")
    add("--workers", type=int, default=defaults.workers, help="Ray actors, each holding the model")
    add("--gpus-per-worker", type=finite_float, default=defaults.gpus_per_worker)
    add(
        "--max-error-rate",
        type=finite_float,
        default=defaults.max_error_rate,
        help="share of evaluations that may fail (errors, not rejections) before the run stops",
    )


def _executor(args: argparse.Namespace, parallel: int | None = None) -> Executor:
    spec = ExecutorSpec(
        kind=args.executor,
        parallel=args.parallel if parallel is None else parallel,
        workers=args.workers,
        address=args.ray_address,
        gpus_per_worker=args.gpus_per_worker,
        max_error_rate=args.max_error_rate,
    )
    return make_executor(spec)


def _add_lora_options(parser: argparse.ArgumentParser) -> None:
    defaults = LoraConfig()
    parser.add_argument("--lora-rank", type=int, default=defaults.rank)
    parser.add_argument("--lora-alpha", type=int, default=defaults.alpha)
    parser.add_argument(
        "--target-modules",
        default=",".join(defaults.target_modules),
        help="layers that get adapters: all-linear (every linear layer but the output projection), or "
        "comma-separated names such as q_proj,v_proj (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        default=defaults.base_dtype,
        choices=BASE_DTYPES,
        help="the frozen weights' dtype (adapters stay fp32); auto: the checkpoint's own where the device "
        "computes in it natively; bf16 halves a large model's memory (default: %(default)s)",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="let a hub model run its own modelling code")
    parser.add_argument(
        "--base-precision",
        default=defaults.base_precision,
        choices=sorted(BASE_PRECISIONS),
        help="precision of the frozen projections' matmuls (default here: %(default)s; bf16 where the "
        "hardware has native bf16 units, else fp32; bf16-backward: only the training gradient through "
        "them in bf16; adapters stay fp32)",
    )


def _lora_config(args: argparse.Namespace) -> LoraConfig:
    return LoraConfig(
        rank=args.lora_rank,
        alpha=args.lora_alpha,
        target_modules=tuple(name.strip() for name in args.target_modules.split(",") if name.strip()),
        base_dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        base_precision=args.base_precision,
    )


def _add_eval_options(parser: argparse.ArgumentParser, parallel: bool = True) -> None:
    defaults = EvalConfig()
    add = parser.add_argument
    add("--model", default=defaults.model, help=f"HF id, local directory, {EMBEDDED_MODEL} (default) or tiny-random")
    add("--seed", type=int, default=defaults.seed)
    add("--self-edit-prompt", default=DEFAULT_SELF_EDIT_PROMPT, choices=sorted(SELF_EDIT_PROMPTS))
    add("--no-split-lines", dest="split_lines", action="store_false", help="train on each self-edit as one sequence")
    add(
        "--temperature", type=finite_float, default=defaults.sampling.temperature, help="self-edit sampling temperature"
    )
    add("--top-p", type=finite_float, default=defaults.sampling.top_p)
    add("--max-tokens", type=int, default=defaults.sampling.max_new_tokens, help="self-edit length limit")
    _add_lora_options(parser)
    cpt = " (--setting cpt: %s)"
    add("--lr", type=finite_float, help=f"default: {defaults.train.learning_rate}" + cpt % CPT_TRAIN.learning_rate)
    add("--epochs", type=int, help=f"default: {defaults.train.epochs}" + cpt % CPT_TRAIN.epochs)
    add("--batch-size", type=int, help=f"default: {defaults.train.batch_size}" + cpt % CPT_TRAIN.batch_size)
    add(
        "--gradient-accumulation",
        type=int,
        help=f"batches per optimizer step; default: {defaults.train.gradient_accumulation}"
        + cpt % CPT_TRAIN.gradient_accumulation,
    )
    add(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in the backward pass: less memory for large models, more time",
    )
    add("--answer-tokens", type=int, default=defaults.answer_tokens, help="closed-book answer length limit")
    add("--grader", default=defaults.grader, choices=GRADERS)
    add(
        "--judge-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 (default: $OPENAI_BASE_URL; key from "
        "$OPENAI_API_KEY)",
    )
    add("--judge-model", help="judge model name, e.g. gpt-4.1")
    _add_executor_options(parser, parallel)
    add("--resume", action="store_true", help="continue a run in --out, skipping finished evaluations")
    add("--quiet", action="store_true", help="no progress bars")


def _train_config(args: argparse.Namespace, setting: str) -> TrainConfig:
    """The flags given, the setting's defaults for the rest."""
    defaults = CPT_TRAIN if setting == "cpt" else TrainConfig()
    given = dict(
        learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size,
        gradient_accumulation=args.gradient_accumulation, gradient_checkpointing=args.gradient_checkpointing,
    )  # fmt: skip
    return replace(defaults, **{name: value for name, value in given.items() if value is not None})


def _eval_config(args: argparse.Namespace, **overrides: object) -> EvalConfig:
    setting = getattr(args, "setting", "single")
    n_self_edits = getattr(args, "n_self_edits", None)
    fields = dict(
        condition=getattr(args, "condition", "self-edit"),
        setting=setting,
        model=args.model,
        policy=getattr(args, "policy", None),
        data=getattr(args, "data", None),
        split=getattr(args, "split", "all"),
        n_passages=getattr(args, "n_passages", None),
        n_self_edits=n_self_edits or (CPT_SELF_EDITS if setting == "cpt" else 1),
        self_edits_file=getattr(args, "self_edits", None),
        self_edit_prompt=args.self_edit_prompt,
        split_lines=args.split_lines,
        sampling=SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_tokens),
        lora=_lora_config(args),
        train=_train_config(args, setting),
        answer_tokens=args.answer_tokens,
        grader=args.grader,
        judge_url=args.judge_url,
        judge_model=args.judge_model,
        seed=args.seed,
    )
    fields.update(overrides)
    return EvalConfig(**fields)  # type: ignore[arg-type]


def cmd_eval(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.compare import summary_table

    summary = run_eval(_eval_config(args), args.out, args.resume, not args.quiet, _executor(args), args.save_adapters)
    print(summary_table([summary]))
    print(f"\nrun directory: {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    """Base, passage and self-edit conditions on the built-in invented passages; resumes if run before."""
    from seal.domains.knowledge.compare import compare_runs

    out = Path(args.out)
    directories = []
    executor = _executor(args)
    for condition in DEMO_CONDITIONS:
        config = _eval_config(args, condition=condition, data=str(demo_data_path()), split="all")
        print(f"== {condition}", file=sys.stderr)
        run_eval(config, out / condition, True, not args.quiet, executor)
        directories.append(out / condition)
    print(compare_runs(directories))
    print(f"\nrun directories: {out}/{{{','.join(DEMO_CONDITIONS)}}}")


def cmd_train(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.report import write_report
    from seal.domains.knowledge.train import KnowledgeTrainConfig, run_train
    from seal.loops.restem import RestEMConfig

    evaluation = _eval_config(args, condition="self-edit", split="eval", n_passages=args.n_eval_passages)
    restem = RestEMConfig(
        rounds=args.rounds,
        k=args.k,
        eval_repeats=args.eval_repeats,
        top_m=args.top_m,
        beat_baseline=args.beat_baseline,
        sampling=evaluation.sampling,
        sft=TrainConfig(learning_rate=args.sft_lr, epochs=args.sft_epochs, batch_size=args.sft_batch_size),
        lora=evaluation.lora,
        seed=args.seed,
    )
    config = KnowledgeTrainConfig(evaluation, restem, args.n_passages, args.external_self_edits)
    run_train(config, args.out, args.resume, not args.quiet, _executor(args))
    print(write_report(args.out).read_text().split("Paired differences")[0].strip())
    print(f"\nreport: {Path(args.out) / 'report.md'}")


def cmd_report(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.report import write_report

    print(f"report: {write_report(args.dir)}")


def cmd_compare(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.compare import compare_runs

    print(compare_runs(args.dirs))


def cmd_grade_calibration(args: argparse.Namespace) -> None:
    grader = OfflineGrader()
    labelled = {path: load_graded(path) for path in args.graded}
    per_file = {path: calibrate(grader, pairs) for path, pairs in labelled.items()}
    overall = calibrate(grader, [pair for pairs in labelled.values() for pair in pairs])
    if args.json:
        print(
            json.dumps(json_safe({**asdict(overall), "files": {p: asdict(s) for p, s in per_file.items()}}), indent=2)
        )
        return
    width = max(len(name) for name in [*per_file, "overall"])
    print(f"{'file':<{width}} {'n':>6} {'agreement':>10} {'kappa':>7} {'precision':>10} {'recall':>7}")
    for name, s in [*per_file.items(), ("overall", overall)]:
        print(f"{name:<{width}} {s.n:>6} {s.agreement:>10.1%} {s.kappa:>7.3f} {s.precision:>10.1%} {s.recall:>7.1%}")


def cmd_continual(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.continual import MEASURES, run_continual

    evaluation = _eval_config(args, condition="self-edit")
    config = ContinualConfig(args.sequences, args.steps, args.strategy, args.replay_ratio, args.seed)
    executor = _executor(args, parallel=1)  # a sequence is one update at a time; sequences spread over workers
    summary = run_continual(
        evaluation, config, args.out, args.policy, args.resume, not args.quiet, executor, args.save_adapters
    )
    width = max(map(len, MEASURES))
    for name, meaning in MEASURES.items():
        lo, hi = summary[f"{name}_ci95"]
        print(f"{name:<{width}} {summary[name]:.1%} [{lo:.1%}, {hi:.1%}]  ({meaning})")
    print(f"\nrun directory: {args.out} (matrix.json, forgetting.png, first_passage.png)")


def cmd_continual_compare(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.continual import compare

    print(compare(args.dirs))


def _add_arc_options(parser: argparse.ArgumentParser) -> None:
    from seal.domains.arc.domain import Budget
    from seal.domains.arc.evaluate import ArcEvalConfig

    defaults, budget = ArcEvalConfig(), Budget()
    add = parser.add_argument
    add("--out", required=True, help="run directory")
    add("--model", default=defaults.model, help=f"HF id, local directory, {EMBEDDED_MODEL} (default) or tiny-random")
    add("--max-grid", type=int, help="keep tasks whose grids are all at most this many cells on a side")
    add("--tasks-file", help="ARC JSON a user supplies: {task_id: {train: [...], test: [...]}}")
    add("--k", type=int, default=defaults.k, help="configurations sampled per task")
    add("--temperature", type=finite_float, default=defaults.sampling.temperature)
    add("--top-p", type=finite_float, default=defaults.sampling.top_p)
    add("--max-tokens", type=int, default=defaults.sampling.max_new_tokens, help="self-edit length limit")
    _add_lora_options(parser)
    add("--max-examples", type=int, default=budget.max_examples, help="TTT examples per self-edit, at most")
    add("--max-example-tokens", type=int, default=budget.max_example_chars, help="context budget per example")
    add(
        "--no-constrain",
        dest="constrain",
        action="store_false",
        help="sample configurations as free text (default: under their JSON schema, valid by construction)",
    )
    add("--max-train-tokens", type=int, default=budget.max_train_tokens, help="TTT tokens per self-edit (x epochs)")
    add("--seed", type=int, default=defaults.seed)
    _add_executor_options(parser)
    add("--resume", action="store_true", help="continue a run in --out, skipping finished evaluations")
    add("--quiet", action="store_true", help="no progress bars")


def _arc_config(args: argparse.Namespace, **overrides: object):
    from seal.domains.arc.domain import Budget
    from seal.domains.arc.evaluate import ArcEvalConfig

    fields = dict(
        model=args.model,
        max_grid=args.max_grid,
        tasks_file=args.tasks_file,
        k=args.k,
        sampling=SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_tokens),
        lora=_lora_config(args),
        budget=Budget(args.max_examples, args.max_example_tokens, args.max_train_tokens),
        constrain=args.constrain,
        seed=args.seed,
    )
    fields.update(overrides)
    return ArcEvalConfig(**fields)  # type: ignore[arg-type]


def cmd_arc_eval(args: argparse.Namespace) -> None:
    from seal.domains.arc.evaluate import run_arc_eval

    if args.condition == "seal" and not args.policy:
        raise ValueError("--condition seal needs --policy DIR (a policy from `seal arc train`)")
    model = args.policy if args.condition == "seal" else args.model
    config = _arc_config(args, condition=args.condition, tasks=args.tasks, model=model)
    summary = run_arc_eval(config, args.out, args.resume, not args.quiet, _executor(args))
    print(json.dumps(summary, indent=2))
    print(f"\nrun directory: {args.out}")


def cmd_arc_train(args: argparse.Namespace) -> None:
    from seal.domains.arc.evaluate import run_arc_train
    from seal.loops.restem import RestEMConfig

    config = _arc_config(args, condition="seal", tasks=args.eval_tasks)
    restem = RestEMConfig(
        rounds=args.rounds,
        k=args.k,
        eval_repeats=1,
        top_m=args.top_m,
        beat_baseline=True,
        sampling=config.sampling,
        sft=TrainConfig(learning_rate=args.sft_lr, epochs=args.sft_epochs, batch_size=args.sft_batch_size),
        lora=config.lora,
        seed=args.seed,
    )
    summaries = run_arc_train(config, restem, args.tasks, args.out, args.resume, not args.quiet, _executor(args))
    for round_index, summary in enumerate(summaries):
        lo, hi = summary["ci95"]
        print(f"round {round_index}: success rate {summary['success_rate']:.1%} [{lo:.1%}, {hi:.1%}]")
    print(f"\nrun directory: {args.out}")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def cmd_data_squad(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.sources import build_squad

    print(f"wrote {build_squad(Path(args.out), args.source)}")


def cmd_data_seal_reference(args: argparse.Namespace) -> None:
    from seal.domains.knowledge.sources import build_seal_reference

    for path in build_seal_reference(Path(args.out), Path(args.source)):
        print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    from seal.domains.knowledge.sources import default_data_root

    parser = _Parser(prog="seal", description="Self-Adapting Language Models (SEAL)")
    domains = parser.add_subparsers(dest="domain", required=True)
    data = domains.add_parser("data", help="get the data: SQuAD, and the SEAL paper's reference files")
    data_commands = data.add_subparsers(dest="command", required=True)
    squad = data_commands.add_parser(
        "squad", help="SQuAD v1.1 validation in seal's layout, from the hub or a local file (checked: the paper's 200)"
    )
    squad.add_argument(
        "--from",
        dest="source",
        help="local SQuAD rows (JSON lines or parquet, as datasets writes them); default: download rajpurkar/squad",
    )
    squad.add_argument("--out", default=str(default_data_root()), help="data directory (default: %(default)s)")
    squad.set_defaults(run=cmd_data_squad)
    reference = data_commands.add_parser("seal-reference", help="the SEAL repository's self-edit and graded files")
    reference.add_argument("--from", dest="source", required=True, help="a checkout of the SEAL repository")
    reference.add_argument("--out", default=str(default_data_root()), help="data directory (default: %(default)s)")
    reference.set_defaults(run=cmd_data_seal_reference)
    knowledge = domains.add_parser("knowledge", help="knowledge incorporation (SQuAD passages)")
    commands = knowledge.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("eval", help="score one condition of the paper's Table 2")
    evaluate.add_argument("--condition", required=True, choices=CONDITIONS)
    evaluate.add_argument(
        "--setting",
        default="single",
        choices=SETTINGS,
        help="single: one update per passage (default); cpt: one update on every passage, all questions asked",
    )
    evaluate.add_argument("--policy", help="--setting cpt: the model that writes the self-edits (default: --model)")
    evaluate.add_argument("--out", required=True, help="run directory")
    evaluate.add_argument("--save-adapters", action="store_true", help=SAVE_ADAPTERS_HELP)
    evaluate.add_argument("--data", help=DATA_HELP)
    evaluate.add_argument("--split", choices=SPLITS, help=SPLIT_HELP)
    evaluate.add_argument("--n-passages", type=int)
    evaluate.add_argument(
        "--n-self-edits", type=int, help=f"K self-edits per passage (default: 1; --setting cpt: {CPT_SELF_EDITS})"
    )
    evaluate.add_argument("--self-edits", help="self-edit file for --condition external (SEAL's completions schema)")
    _add_eval_options(evaluate)
    evaluate.set_defaults(run=cmd_eval)

    demo = commands.add_parser("demo", help="base / passage / self-edit on built-in invented passages")
    demo.add_argument("--out", default="runs/demo")
    _add_eval_options(demo)
    demo.set_defaults(run=cmd_demo)

    train = commands.add_parser("train", help="ReST-EM: teach the model to write self-edits that work")
    restem_defaults = RestEMConfig()
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--data", help=DATA_HELP)
    train.add_argument("--rounds", type=int, default=restem_defaults.rounds)
    train.add_argument("--n-passages", type=int, default=24, help="training passages (from --split train)")
    train.add_argument("--k", type=int, default=restem_defaults.k, help="self-edits sampled per passage and round")
    train.add_argument(
        "--eval-repeats", type=int, default=restem_defaults.eval_repeats, help="inner-loop runs per reward"
    )
    train.add_argument("--top-m", type=int, default=restem_defaults.top_m, help="self-edits kept per passage")
    train.add_argument(
        "--no-beat-baseline",
        dest="beat_baseline",
        action="store_false",
        help="keep self-edits even when they do not beat training on the passage alone",
    )
    train.add_argument("--sft-lr", type=finite_float, default=restem_defaults.sft.learning_rate)
    train.add_argument("--sft-epochs", type=int, default=restem_defaults.sft.epochs)
    train.add_argument("--sft-batch-size", type=int, default=restem_defaults.sft.batch_size)
    train.add_argument("--n-eval-passages", type=int, default=50, help="held-out eval passages per round")
    train.add_argument("--external-self-edits", help="also evaluate this self-edit file as a baseline")
    _add_eval_options(train)
    train.set_defaults(run=cmd_train)

    report = commands.add_parser("report", help="report.md and plots of a `train` run directory")
    report.add_argument("dir")
    report.set_defaults(run=cmd_report)

    compare = commands.add_parser("compare", help="conditions side by side with paired bootstrap CIs")
    compare.add_argument("dirs", nargs="+")
    compare.set_defaults(run=cmd_compare)

    calibration = commands.add_parser("grade-calibration", help="offline grader vs reference (GPT-4.1) verdicts")
    calibration.add_argument("--graded", nargs="+", required=True, help="graded JSON files")
    calibration.add_argument("--json", action="store_true")
    calibration.set_defaults(run=cmd_grade_calibration)
    continual = domains.add_parser("continual", help="sequential self-edits on eval passages: forgetting")
    continual.add_argument("--out", required=True, help="run directory")
    continual.add_argument("--save-adapters", action="store_true", help=SAVE_ADAPTERS_HELP)
    continual.add_argument("--data", help=DATA_HELP)
    continual.add_argument("--split", choices=SPLITS, help=SPLIT_HELP)
    continual_defaults = ContinualConfig()
    continual.add_argument("--sequences", type=int, default=continual_defaults.sequences, help="sequences of passages")
    continual.add_argument("--steps", type=int, default=continual_defaults.steps, help="passages per sequence")
    continual.add_argument(
        "--strategy", default=continual_defaults.strategy, choices=STRATEGIES, help="merge (the paper) or replay"
    )
    continual.add_argument(
        "--replay-ratio",
        type=finite_float,
        default=continual_defaults.replay_ratio,
        help="replay: old sequences per new one",
    )
    continual.add_argument("--policy", help="a model that writes the self-edits (default: the model being updated)")
    _add_eval_options(continual, parallel=False)
    continual.set_defaults(run=cmd_continual)

    continual_compare = domains.add_parser("continual-compare", help="strategies side by side, paired by sequence")
    continual_compare.add_argument("dirs", nargs="+")
    continual_compare.set_defaults(run=cmd_continual_compare)

    arc = domains.add_parser("arc", help="few-shot learning on ARC-AGI-1 (test-time training)")
    arc_commands = arc.add_subparsers(dest="command", required=True)
    arc_eval = arc_commands.add_parser("eval", help="score one condition of the paper's Table 1")
    arc_eval.add_argument("--condition", required=True, choices=("icl", "ttt-self-edit", "seal", "oracle"))
    arc_eval.add_argument("--tasks", default="seal-eval", help="seal-train, seal-eval, arc1-train, arc1-eval or ids")
    arc_eval.add_argument("--policy", help="policy directory for --condition seal")
    _add_arc_options(arc_eval)
    arc_eval.set_defaults(run=cmd_arc_eval)

    arc_train = arc_commands.add_parser("train", help="ReST-EM on ARC with the shared engine")
    restem_defaults = RestEMConfig()
    arc_train.add_argument("--tasks", default="seal-train", help="training tasks")
    arc_train.add_argument("--eval-tasks", default="seal-eval", help="held-out tasks evaluated every round")
    arc_train.add_argument("--rounds", type=int, default=1)
    arc_train.add_argument("--top-m", type=int, default=restem_defaults.top_m)
    arc_train.add_argument("--sft-lr", type=finite_float, default=restem_defaults.sft.learning_rate)
    arc_train.add_argument("--sft-epochs", type=int, default=restem_defaults.sft.epochs)
    arc_train.add_argument("--sft-batch-size", type=int, default=restem_defaults.sft.batch_size)
    _add_arc_options(arc_train)
    arc_train.set_defaults(run=cmd_arc_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a bad flag (reported in one line by the parser)
        return int(stop.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RunError, RunStopped, ModelLoadError) as error:
        if os.environ.get("SEAL_DEBUG"):
            raise
        print(f"seal: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
