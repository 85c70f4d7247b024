"""``seal knowledge ...`` and ``seal data ...``: the knowledge domain's commands."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser, Namespace

from seal.commands import Command, add_config, add_executor, add_run_options, config, executor, register
from seal.domains.knowledge.compare import compare_runs, percent, summary_table
from seal.domains.knowledge.continual import MEASURES, compare, run_continual
from seal.domains.knowledge.data import demo_data_path
from seal.domains.knowledge.evaluate import EvalConfig, run_eval
from seal.domains.knowledge.report import write_report
from seal.domains.knowledge.sources import build_seal_reference, build_squad, default_data_root
from seal.domains.knowledge.train import KnowledgeTrainConfig, run_train
from seal.grading import OfflineGrader, calibrate, load_graded
from seal.loops.continual import ContinualConfig
from seal.loops.restem import RestEMConfig
from seal.models.adapters import adapter_config
from seal.runs import json_safe

DEMO_CONDITIONS = ("base", "passage", "self-edit")
# what a command fixes itself, or takes from the evaluation's settings, is not a flag of it
NOT_FOR_TRAINING = {"condition", "setting", "policy", "self_edits_file", "n_self_edits"}
SHARED_WITH_RESTEM = {"sampling", "lora", "seed"}


def _eval_arguments(parser: ArgumentParser) -> None:
    add_config(parser)
    parser.add_class_arguments(EvalConfig, None)
    add_executor(parser)
    add_run_options(parser, save_adapters=True)


def _eval(args: Namespace) -> None:
    summary = run_eval(
        config(EvalConfig, args),
        args.out,
        resume=args.resume,
        progress=not args.quiet,
        executor=executor(args),
        save_adapters=args.save_adapters,
    )
    print(summary_table([summary]))
    print(f"\nrun directory: {args.out}")


def _cpt_setting(argv: list[str]) -> list[str]:
    """``--setting cpt``, or a ``--config`` file's ``setting: cpt``, brings that setting's defaults (the
    official CPT run's) before any file or flag; the last one given decides, as in parsing."""
    setting = None
    for flag, value in zip(argv, argv[1:] + [""]):
        name, _, inline = flag.partition("=")
        value = inline or value
        if name == "--setting":
            setting = value
        elif name == "--config":
            setting = _setting_in(value) or setting
    return ["cpt"] if setting == "cpt" else []


def _setting_in(path: str) -> str | None:
    """The ``setting`` a config file gives (None if it gives none, or cannot be read: parsing says why)."""
    try:
        settings = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return settings.get("setting") if isinstance(settings, dict) else None


def _demo_arguments(parser: ArgumentParser) -> None:
    add_config(parser)
    skip = {"condition", "setting", "policy", "data", "split", "n_passages", "self_edits_file"}
    parser.add_class_arguments(EvalConfig, None, skip=skip)
    parser.add_argument(
        "--seal_policy", help="a ReST-EM policy (its round-R/policy directory): adds the SEAL row, self-edits it writes"
    )
    add_executor(parser)
    parser.add_argument("--out", default="runs/demo", help="where the runs go, one directory per row")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _demo(args: Namespace) -> None:
    """Base, passage and self-edit (and SEAL, given a policy) on the built-in invented passages; resumes
    (here: reprints) if run before."""
    rows = {condition: {"condition": condition} for condition in DEMO_CONDITIONS}
    if args.seal_policy:  # SEAL as ReST-EM evaluates it: the policy writes self-edits and is updated by them
        _check_policy(args.seal_policy, args.model)
        rows["seal"] = {"condition": "self-edit", "model": args.seal_policy}
    out, work = Path(args.out), executor(args)
    for name, overrides in rows.items():
        print(f"== {name}", file=sys.stderr)
        settings = config(EvalConfig, args, data=str(demo_data_path()), split="all", **overrides)
        run_eval(settings, out / name, resume=True, progress=not args.quiet, executor=work)
    print(compare_runs([out / name for name in rows]))
    print(f"\nrun directories: {out}/{{{','.join(rows)}}}")


def _check_policy(policy: str, model: str) -> None:
    """Refuse, before any run, a ``--seal_policy`` that is not an adapter trained from ``model``."""
    base = adapter_config(policy)["base_model_name_or_path"]
    if base != model:
        raise ValueError(f"--seal_policy {policy} was trained from {base}, not from --model {model}")


def _train_arguments(parser: ArgumentParser) -> None:
    add_config(parser)
    parser.add_class_arguments(EvalConfig, None, skip=NOT_FOR_TRAINING)
    parser.set_defaults(n_passages=50)  # held-out passages evaluated each round
    parser.add_class_arguments(RestEMConfig, "restem", skip=SHARED_WITH_RESTEM)
    parser.add_argument("--n_train_passages", type=int, default=24, help="training passages (split train)")
    parser.add_argument("--external_self_edits", help="also evaluate this self-edit file as a baseline")
    add_executor(parser)
    add_run_options(parser)


def _train(args: Namespace) -> None:
    evaluation = config(EvalConfig, args, condition="self-edit")
    restem = replace(args.restem, sampling=evaluation.sampling, lora=evaluation.lora, seed=evaluation.seed)
    settings = KnowledgeTrainConfig(evaluation, restem, args.n_train_passages, args.external_self_edits)
    run_train(settings, args.out, resume=args.resume, progress=not args.quiet, executor=executor(args))
    print(write_report(args.out).read_text().split("Paired differences")[0].strip())
    print(f"\nreport: {Path(args.out) / 'report.md'}")


def _grade_calibration(args: Namespace) -> None:
    grader = OfflineGrader()
    labelled = {path: load_graded(Path(path)) for path in args.graded}
    per_file = {path: calibrate(grader, pairs) for path, pairs in labelled.items()}
    overall = calibrate(grader, [pair for pairs in labelled.values() for pair in pairs])
    if args.json:
        files = {p: asdict(s) for p, s in per_file.items()}
        print(json.dumps(json_safe({**asdict(overall), "files": files}), indent=2))
        return
    width = max(len(name) for name in [*per_file, "overall"])
    print(f"{'file':<{width}} {'n':>6} {'agreement':>10} {'kappa':>7} {'precision':>10} {'recall':>7}")
    for name, s in [*per_file.items(), ("overall", overall)]:
        print(f"{name:<{width}} {s.n:>6} {s.agreement:>10.1%} {s.kappa:>7.3f} {s.precision:>10.1%} {s.recall:>7.1%}")


def _continual_arguments(parser: ArgumentParser) -> None:
    add_config(parser)
    parser.add_class_arguments(EvalConfig, None, skip=NOT_FOR_TRAINING | {"n_passages"})
    parser.add_class_arguments(ContinualConfig, "continual", skip={"seed"})
    parser.add_argument("--policy", help="a model that writes the self-edits (default: the model being updated)")
    add_executor(parser)
    add_run_options(parser, save_adapters=True)


def _continual(args: Namespace) -> None:
    evaluation = config(EvalConfig, args, condition="self-edit")
    settings = replace(args.continual, seed=evaluation.seed)
    work = executor(args, parallel=1)  # a sequence is one update at a time; sequences spread over workers
    summary = run_continual(
        evaluation,
        settings,
        args.out,
        policy=args.policy,
        resume=args.resume,
        progress=not args.quiet,
        executor=work,
        save_adapters=args.save_adapters,
    )
    width = max(map(len, MEASURES))
    for name, meaning in MEASURES.items():
        lo, hi = summary[f"{name}_ci95"]
        print(f"{name:<{width}} {percent(summary[name])} [{percent(lo)}, {percent(hi)}]  ({meaning})")
    print(f"\nrun directory: {args.out} (matrix.json, forgetting.png, first_passage.png)")


def _directory(parser: ArgumentParser) -> None:
    parser.add_argument("dir", help="a run directory")


def _directories(parser: ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="run directories; differences are taken against the first")


def _calibration_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--graded", nargs="+", required=True, help="files of answers graded by a judge")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _data_arguments(required: bool, help: str):
    def arguments(parser: ArgumentParser) -> None:
        parser.add_argument("--from", dest="source", required=required, help=help)
        parser.add_argument("--out", default=str(default_data_root()), help="the data directory")

    return arguments


register(
    "knowledge",
    "knowledge incorporation (SQuAD passages)",
    {
        "eval": Command("score one condition of the paper's Table 2", _eval_arguments, _eval, _cpt_setting),
        "demo": Command("base / passage / self-edit (/ SEAL) on built-in invented passages", _demo_arguments, _demo),
        "train": Command("ReST-EM: teach the model to write self-edits that work", _train_arguments, _train),
        "report": Command(
            "report.md and plots of a train run", _directory, lambda args: print(f"report: {write_report(args.dir)}")
        ),
        "compare": Command(
            "runs side by side with paired bootstrap CIs", _directories, lambda args: print(compare_runs(args.dirs))
        ),
        "grade-calibration": Command(
            "the offline grader against a judge's verdicts", _calibration_arguments, _grade_calibration
        ),
        "continual": Command("sequential self-edits: forgetting", _continual_arguments, _continual),
        "continual-compare": Command(
            "continual strategies side by side, paired by sequence",
            _directories,
            lambda args: print(compare(args.dirs)),
        ),
    },
)
register(
    "data",
    "the data: SQuAD, and the SEAL paper's reference files",
    {
        "squad": Command(
            "SQuAD v1.1 validation in seal's layout (checked: the paper's 200 evaluation passages)",
            _data_arguments(False, "local SQuAD rows (JSON lines or parquet); default: download rajpurkar/squad"),
            lambda args: print(f"wrote {build_squad(Path(args.out), args.source)}"),
        ),
        "seal-reference": Command(
            "the SEAL repository's self-edit and graded files",
            _data_arguments(True, "a checkout of the SEAL repository"),
            lambda args: print(
                "\n".join(f"wrote {p}" for p in build_seal_reference(Path(args.out), Path(args.source)))
            ),
        ),
    },
)
