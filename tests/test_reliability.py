"""Hostile inputs and faults: each ends in a correct result, or one clear line and a non-zero exit,
and no record is lost or written twice. Each test here failed before its fix."""

import json
import subprocess
import sys
import textwrap

import pytest

from seal.cli import main
from seal.runs import AppendOnlyLog, RunDirectory, RunError
from tests.conftest import PASSAGES_FILE

EVAL = ["knowledge", "eval", "--model", "tiny-random", "--split", "all", "--answer_tokens", "4", "--quiet"]


def one_line_error(capsys, argv) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr; return it."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("seal") and "\n" not in err, err
    return err


def test_a_second_writer_of_a_run_directory_is_refused(tmp_path):
    holder = textwrap.dedent(
        f"""
        from seal.runs import RunDirectory
        RunDirectory({str(tmp_path)!r}).start({{"seed": 0}}, resume=False)
        print("started", flush=True)
        input()
        """
    )
    other = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "started"
        with pytest.raises(RunError, match=rf"being written by process {other.pid}: one run directory, one writer"):
            RunDirectory(tmp_path).start({"seed": 0}, resume=True)
    finally:
        other.communicate("\n", timeout=30)
    RunDirectory(tmp_path).start({"seed": 0}, resume=True)  # the lock went with its process


def test_a_corrupt_line_stops_the_reader_and_loses_nothing(tmp_path):
    log = AppendOnlyLog(tmp_path / "results.jsonl")
    for unit in ("a", "b", "c"):
        log.append_unit(unit, [{"x": 1}, {"x": 2}])
    lines = log.path.read_text().splitlines()
    lines[2] = '{"unit": "b", "unit_lines": 2, "x": 1'  # garbled in the middle
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunError, match=r"results.jsonl, line 3: not a JSON record .*fix or remove that line"):
        log.records()
    lines[2] = json.dumps({"x": 1})  # a record without its unit
    written = "\n".join(lines) + "\n"
    log.path.write_text(written)
    with pytest.raises(RunError, match="line 3: a record without its unit key"):
        log.completed_units()
    log.drop_torn_tail()
    assert log.path.read_text() == written  # nothing valid is rewritten away


def test_a_unit_written_twice_counts_once_and_its_latest_write_wins(tmp_path):
    log = AppendOnlyLog(tmp_path / "results.jsonl")
    log.append_unit("a", [{"v": 1}, {"v": 1}])
    log.append_unit("b", [{"v": 1}])
    log.append_unit("a", [{"v": 2}, {"v": 2}])  # e.g. re-graded, or a second writer before the lock existed
    with open(log.path, "a") as handle:
        handle.write(json.dumps({"unit": "b", "unit_lines": 1, "v": 3}))  # torn: no newline
    assert log.records() == [
        {"unit": "b", "unit_lines": 1, "v": 1},
        {"unit": "a", "unit_lines": 2, "v": 2},
        {"unit": "a", "unit_lines": 2, "v": 2},
    ]
    log.drop_torn_tail()
    log.append_unit("c", [{"v": 1}])
    assert log.completed_units() == {"a", "b", "c"}


def test_an_existing_run_is_refused_without_resume_even_before_any_result(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    err = one_line_error(
        capsys, [*EVAL, "--condition", "base", "--data", str(PASSAGES_FILE), "--out", str(tmp_path / "run")]
    )
    assert "already holds a run: pass --resume" in err
    assert (tmp_path / "run" / "config.json").read_text() == "{}"  # untouched


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d, "is a directory, expected a JSON file"),
        (
            lambda d: (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000) and d / "deep.json",
            "nested too deeply",
        ),
        (lambda d: (d / "latin1.json").write_bytes(b'[{"title": "\xe9"}]') and d / "latin1.json", "not UTF-8"),
    ],
)
def test_unreadable_data_is_one_line_naming_the_file(tmp_path, capsys, make, message):
    path = make(tmp_path)
    err = one_line_error(capsys, [*EVAL, "--condition", "base", "--data", str(path), "--out", str(tmp_path / "out")])
    assert str(path) in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        (lambda d: (d / "file").write_text("x") and d / "file", "is a file, not a directory"),
        (lambda d: (d / "file").write_text("x") and d / "file" / "run", "cannot write there"),
        (lambda d: "/proc/seal-probe/run", "cannot write there"),
    ],
)
def test_an_unusable_out_is_one_line(tmp_path, capsys, out, message):
    target = out(tmp_path)
    err = one_line_error(capsys, [*EVAL, "--condition", "base", "--data", str(PASSAGES_FILE), "--out", str(target)])
    assert f"--out {target}" in err and message in err


@pytest.mark.parametrize(
    "flag, value",
    [("--train.learning_rate", "nan"), ("--train.learning_rate", "inf"), ("--sampling.temperature", "nan"),
     ("--sampling.top_p", "-inf")],
)  # fmt: skip
def test_non_finite_numbers_are_refused_naming_the_flag(tmp_path, capsys, flag, value):
    err = one_line_error(capsys, [*EVAL, "--condition", "base", f"{flag}={value}", "--out", str(tmp_path / "o")])
    assert err.startswith(f"seal: error: {flag}: ") and value in err


def test_a_directory_that_is_not_a_model_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    argv = [*EVAL, "--condition", "base", "--data", str(PASSAGES_FILE), "--out", str(tmp_path / "out")]
    argv[argv.index("tiny-random")] = str(tmp_path / "not-a-model")
    err = one_line_error(capsys, argv)
    assert "holds no config.json: not a transformers checkpoint" in err
    assert not (tmp_path / "out").exists()


def test_pickled_weights_that_could_run_code_are_refused_in_one_line(tmp_path, capsys, tiny):
    import torch

    class Runs:
        def __reduce__(self):
            return (print, ("this ran",))

    model_dir = tmp_path / "pickled"
    tiny.model.config.save_pretrained(model_dir)
    tiny.tokenizer.save_pretrained(model_dir)
    torch.save({"weight": Runs()}, model_dir / "pytorch_model.bin")
    argv = [*EVAL, "--condition", "base", "--data", str(PASSAGES_FILE), "--out", str(tmp_path / "out")]
    argv[argv.index("tiny-random")] = str(model_dir)
    err = one_line_error(capsys, argv)
    assert "pytorch_model.bin: refused: a pickle holding more than tensors" in err
    assert "this ran" not in capsys.readouterr().out and not (tmp_path / "out").exists()


def long_passage_file(tmp_path) -> str:
    """A passage far longer than tiny-random's 2,048-token context."""
    context = " ".join(f"Fact {i}: the Varnholt Bridge has pillar {i}." for i in range(600))
    path = tmp_path / "long.json"
    path.write_text(
        json.dumps([{"title": "Long", "context": context, "questions": [{"question": "Q?", "answer": "A"}]}])
    )
    return str(path)


def test_a_passage_too_long_for_the_context_is_refused_before_any_work(tmp_path, capsys):
    argv = [*EVAL, "--condition", "self-edit", "--data", long_passage_file(tmp_path), "--out", str(tmp_path / "out")]
    err = one_line_error(capsys, argv)
    assert "passage 'Long'" in err and "exceeds the 2048 tokens of tiny-random's context" in err
    assert not (tmp_path / "out").exists()


def test_a_passage_longer_than_a_training_sequence_is_trained_whole_in_windows(tmp_path):
    from seal.domains.knowledge.evaluate import EvalConfig, run_eval
    from seal.engine.lora import LoraConfig
    from seal.engine.training import TrainConfig

    config = EvalConfig(
        condition="passage", model="tiny-random", data=long_passage_file(tmp_path), split="all", answer_tokens=4,
        lora=LoraConfig(rank=4, alpha=8), train=TrainConfig(epochs=1, max_seq_len=512),
    )  # fmt: skip
    run_eval(config, tmp_path / "out", progress=False)
    (record,) = RunDirectory(tmp_path / "out").records()
    assert record["error"] is None and record["train_tokens"] > 6 * 512  # all of it, not its first 511 tokens
