"""The command line generated from the configs: every default shown, config files and presets, one-line errors."""

import dataclasses
import json
import re
from pathlib import Path

from seal.cli import build_parser, main
from seal.domains.knowledge.evaluate import EvalConfig
from seal.executors import ExecutorSpec
from seal.loops.restem import policy_dir
from seal.models.adapters import adapter_config
from seal.runs import RunDirectory
from tests.conftest import PASSAGES_FILE

RUN = ["knowledge", "eval", "--model", "tiny-random", "--data", str(PASSAGES_FILE), "--quiet"]


def knowledge_eval_help(capsys) -> str:
    assert main(["knowledge", "eval", "--help"]) == 0
    return capsys.readouterr().out


def leaf_flags(cls: type, prefix: str = "") -> list[str]:
    """``--name`` for every field of a config dataclass, nested ones by prefix (``--lora.rank``)."""
    flags = []
    for field in dataclasses.fields(cls):
        nested = field.default_factory if field.default_factory is not dataclasses.MISSING else type(field.default)
        is_config = dataclasses.is_dataclass(nested) or dataclasses.is_dataclass(field.default)
        flags += leaf_flags(nested, f"{prefix}{field.name}.") if is_config else [f"--{prefix}{field.name}"]
    return flags


def test_help_shows_every_setting_with_its_default(capsys):
    text = knowledge_eval_help(capsys)
    usage, options = " ".join(text.split()).split(" options: ", 1)
    flags = leaf_flags(EvalConfig) + leaf_flags(ExecutorSpec, "executor.")
    assert len(flags) > 30 and "--lora.rank" in flags and "--executor.parallel" in flags
    described = {}
    for block in re.split(r"\n  (?=--)", text.split("\noptions:", 1)[1]):
        described[block.split()[0]] = " ".join(block.split())
    for flag in flags:
        assert flag in usage
        assert "default: " in described[flag], f"{flag} shows no default"
    for flag, default in [("--lora.rank", "32"), ("--train.learning_rate", "0.001"), ("--train.epochs", "10"),
                          ("--answer_tokens", "48"), ("--executor.parallel", "4")]:  # fmt: skip
        assert f"default: {default})" in described[flag]
    assert "Self-edits per passage (K)." in options  # help is the field's docstring


def test_a_config_file_sets_anything_and_flags_after_it_win(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("condition: base\nanswer_tokens: 5\nlora:\n  rank: 4\n  alpha: 8\n")
    argv = [*RUN, "--config", str(settings), "--answer_tokens", "6", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (recorded["condition"], recorded["answer_tokens"], recorded["lora"]["rank"]) == ("base", 6, 4)


def test_presets_are_shipped_config_files_and_the_cpt_setting_brings_its_own(capsys, tmp_path):
    parser = build_parser()
    from seal.cli import with_presets

    def parsed(*flags):
        return parser.parse_args(with_presets(["knowledge", "eval", *flags, "--out", "x"])).knowledge.eval

    paper = parsed("--preset", "paper")
    assert (tuple(paper.lora.target_modules), paper.answer_prompt, paper.answer_tokens) == (
        ("q_proj", "v_proj"),
        "paper",
        64,
    )
    cpt = parsed("--setting", "cpt", "--train.epochs", "1")
    assert (cpt.n_self_edits, cpt.train.batch_size, cpt.train.gradient_accumulation, cpt.train.epochs) == (5, 4, 2, 1)
    single = parsed()
    assert (single.n_self_edits, single.train.batch_size, single.train.epochs) == (1, 1, 10)
    in_a_file = tmp_path / "cpt.yaml"
    in_a_file.write_text("setting: cpt\ntrain:\n  epochs: 2\n")
    cpt = parsed("--config", str(in_a_file))  # a config file's setting brings the setting's defaults too
    assert (cpt.setting, cpt.n_self_edits, cpt.train.batch_size, cpt.train.epochs) == ("cpt", 5, 4, 2)
    single = parsed(f"--config={in_a_file}", "--setting", "single")  # the last one given decides
    assert (single.setting, single.n_self_edits, single.train.batch_size) == ("single", 1, 1)
    assert main(["knowledge", "eval", "--preset", "fast", "--out", "x"]) == 2
    assert "no such preset for `seal knowledge eval` (presets: cpt, paper)" in capsys.readouterr().err
    trained = parser.parse_args(with_presets(["knowledge", "train", "--preset", "paper", "--out", "x"]))
    assert tuple(trained.knowledge.train.lora.target_modules) == ("q_proj", "v_proj")  # one file for the domain
    assert main(["knowledge", "train", "--preset", "cpt", "--out", "x"]) == 2  # the CPT setting is eval's only
    assert "(presets: paper)" in capsys.readouterr().err


def test_help_names_the_presets_of_the_commands_that_take_settings(capsys):
    assert main(["knowledge", "eval", "--help"]) == 0
    assert "--preset {cpt,paper}: a shipped config file" in capsys.readouterr().out
    assert main(["knowledge", "compare", "--help"]) == 0
    assert "--preset" not in capsys.readouterr().out
    assert main(["knowledge", "compare", "runs/a", "--preset", "paper"]) == 2  # takes no settings, so no preset
    assert "unrecognized arguments: --preset paper" in capsys.readouterr().err


def test_bad_flags_are_one_line(capsys):
    for argv, message in [
        (["knowledge", "eval", "--lora.rank", "many", "--out", "x"], "--lora.rank: Expected a <class 'int'>"),
        (["knowledge", "eval", "--condition", "base"], "the following arguments are required: --out"),
        (["knowledge", "eval", "--lora.rank", "0", "--out", "x"], "LoRA rank must be >= 1"),
        (["knowledge", "nonsense"], "nonsense"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("seal: error: ") and "\n" not in err and message in err, err


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert json.loads((tmp_path / "runs" / "python-demo" / "summary.json").read_text())["n_passages"] == 2


def test_the_readme_serving_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("```python\n")[2].split("```", 1)[0]
    assert 'seal.SelfAdaptingModel(state="runs/my-knowledge")' in example
    quick = 'seal.ServeConfig(model="tiny-random", train=seal.TrainConfig(epochs=1)), state="runs/my-knowledge"'
    monkeypatch.chdir(tmp_path)
    exec(compile("import seal\n" + example.replace('state="runs/my-knowledge"', quick), "README.md", "exec"), {})
    assert (tmp_path / "runs" / "my-knowledge" / "state.sqlite").exists()


def test_the_demo_prints_its_conditions_and_a_seal_row_for_a_policy(tmp_path, capsys, policy_dir):
    fast = ["--model", "tiny-random", "--train.epochs", "1", "--sampling.max_new_tokens", "8", "--quiet"]
    assert main(["knowledge", "demo", *fast, "--seal_policy", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "adapter_config.json: not a readable adapter config" in capsys.readouterr().err
    other_base = ["knowledge", "demo", *fast, "--model", "smollm2-135m", "--seal_policy", str(policy_dir)]
    assert main([*other_base, "--out", str(tmp_path / "x")]) == 2  # refused before any run
    assert "was trained from tiny-random, not from --model smollm2-135m" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    argv = ["knowledge", "demo", *fast, "--seal_policy", str(tmp_path / "round-2" / "policy")]
    assert main([*argv, "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    seal_run = json.loads((tmp_path / "demo" / "seal" / "config.json").read_text())
    assert (seal_run["condition"], seal_run["model"]) == ("self-edit", str(tmp_path / "round-2" / "policy"))
    rows = [line.split("  ")[0] for line in printed.splitlines()]
    assert rows[2:6] == ["base", "passage", "self-edit, tiny-random", "self-edit, round-2/policy"]
    assert "self-edit, round-2/policy - base" in rows
    assert printed.rstrip().endswith("/demo/{base,passage,self-edit,seal}")
    own, seal = (
        [r["self_edit"] for r in RunDirectory(tmp_path / "demo" / row).records()] for row in ("self-edit", "seal")
    )
    assert own != seal  # the policy wrote the SEAL row's self-edits


def test_make_demo_takes_the_committed_final_policy_of_the_table_2_run():
    root = Path(__file__).resolve().parents[1]
    (policy,) = re.findall(r"^SEAL_POLICY := (\S+)$", (root / "Makefile").read_text(), re.MULTILINE)
    run = (root / policy).parents[1]
    final_round = json.loads((run / "config.json").read_text())["restem"]["rounds"]
    assert root / policy == policy_dir(run, final_round)
    assert adapter_config(root / policy)["base_model_name_or_path"] == "smollm2-135m"  # the demo's --model
    assert (root / policy / "adapter_model.safetensors").stat().st_size <= 25 * 2**20
