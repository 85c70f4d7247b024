import json
import subprocess
import sys
from pathlib import Path

import pytest

from seal.cli import main
from seal.domain import Rejection
from seal.domains.knowledge.compare import compare_runs
from seal.domains.knowledge.data import load_passages
from seal.domains.knowledge.domain import KnowledgeDomain, self_edit_segments
from seal.domains.knowledge.evaluate import EvalConfig, run_eval
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.engine.training import TrainConfig
from seal.executors import ExecutorSpec, make_executor
from seal.grading import JudgeUnreachableError, OfflineGrader
from seal.grading.judge import JudgeRefusedError
from seal.runs import RunDirectory, RunError
from tests.conftest import PASSAGES
from tests.fake_judge import chat_reply

FAST = dict(
    model="tiny-random",
    split="all",
    sampling=SamplingConfig(temperature=1.0, max_new_tokens=12),
    lora=LoraConfig(rank=4, alpha=8),
    train=TrainConfig(epochs=1, batch_size=4),
    answer_tokens=6,
)
SUMMARY_KEYS = {"condition", "model", "n_passages", "n_questions", "accuracy", "ci95"}


def config(data, **overrides) -> EvalConfig:
    return EvalConfig(data=str(data), **{**FAST, **overrides})


def test_self_edit_becomes_passage_plus_title_prefixed_lines(squad_file):
    passage = load_passages(squad_file)[0]
    domain = KnowledgeDomain(OfflineGrader())
    update = domain.to_update(passage, "1. Built in 1871.\n\n2. By Ottilie Brask.  \n")
    completions = [e.completion for e in update.examples]
    assert completions == [
        f"Varnholt Bridge\n{passage.context}",
        "Varnholt Bridge\n1. Built in 1871.",
        "Varnholt Bridge\n2. By Ottilie Brask.",
    ]
    assert all(e.prompt == "" for e in update.examples)
    assert domain.to_update(passage, "  \n ") == Rejection("empty self-edit")
    assert self_edit_segments("a\nb", split_lines=False) == ["a\nb"]


@pytest.mark.parametrize("condition", ["base", "passage", "self-edit"])
def test_each_condition_writes_a_complete_run(tmp_path, squad_file, condition):
    summary = run_eval(config(squad_file, condition=condition, n_self_edits=2), tmp_path, progress=False)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["condition"] == condition and summary["n_passages"] == 2 and summary["n_questions"] == 3
    records = RunDirectory(tmp_path).records()
    k = 2 if condition == "self-edit" else 1
    assert len(records) == 3 * k
    assert {"passage_id", "question", "gold", "answer", "verdict", "condition"} <= set(records[0])
    assert all(r["condition"] == condition for r in records)
    assert (tmp_path / "config.json").exists() and json.loads((tmp_path / "config.json").read_text())[
        "condition"
    ] == condition
    lo, hi = summary["ci95"]
    assert lo <= summary["accuracy"] <= hi
    if condition == "base":
        assert all(r["train_tokens"] == 0 for r in records)
    else:
        assert all(r["train_tokens"] > 0 for r in records)


def test_external_self_edits_matched_by_context_and_empty_one_rejected(tmp_path, squad_file, self_edit_file):
    run_eval(
        config(squad_file, condition="external", self_edits_file=str(self_edit_file), n_self_edits=2),
        tmp_path,
        progress=False,
    )
    records = RunDirectory(tmp_path).records()
    first = [r for r in records if r["self_edit_index"] == 0]
    assert first[0]["self_edit"].startswith("Varnholt Bridge is notable") and first[0]["rejected"] is None
    second = [r for r in records if r["self_edit_index"] == 1]
    assert second and all(
        r["rejected"] == "empty self-edit" and r["verdict"] == "incorrect" and r["reward"] == 0.0 for r in second
    )
    assert RunDirectory(tmp_path).summary()["n_rejected_self_edits"] == 2


def test_external_needs_self_edits_for_every_passage(tmp_path, squad_file):
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps(
            [
                {
                    "title": "t",
                    "context": "unrelated",
                    "questions": [{"question": "q", "answer": "a"}],
                    "completions": ["x"],
                }
            ]
        )
    )
    with pytest.raises(ValueError, match="no self-edits for 2 passage"):
        run_eval(config(squad_file, condition="external", self_edits_file=str(other)), tmp_path / "run", progress=False)


def test_same_seed_same_numbers(tmp_path, squad_file):
    a = run_eval(config(squad_file, condition="self-edit"), tmp_path / "a", progress=False)
    b = run_eval(config(squad_file, condition="self-edit"), tmp_path / "b", progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(RunDirectory(tmp_path / "a").records()) == strip(RunDirectory(tmp_path / "b").records())
    assert a == b


def local(parallel: int):
    return make_executor(ExecutorSpec(parallel=parallel))


def without_timings(records):
    return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in records)


def test_interrupted_then_resumed_equals_a_straight_run(tmp_path, squad_file, monkeypatch):
    straight = config(squad_file, condition="self-edit", n_self_edits=2)
    run_eval(straight, tmp_path / "straight", progress=False, executor=local(1))

    from seal.loops.inner import InnerLoop

    calls = {"n": 0}
    real_evaluate = InnerLoop.evaluate

    def dies_in_second_passage(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run is killed while scoring the second passage's self-edits
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(InnerLoop, "evaluate", dies_in_second_passage)
    with pytest.raises(KeyboardInterrupt):
        run_eval(straight, tmp_path / "resumed", progress=False, executor=local(1))
    assert len(RunDirectory(tmp_path / "resumed").completed_units()) == 2
    monkeypatch.setattr(InnerLoop, "evaluate", real_evaluate)
    run_eval(straight, tmp_path / "resumed", resume=True, progress=False, executor=local(1))
    assert without_timings(RunDirectory(tmp_path / "resumed").records()) == without_timings(
        RunDirectory(tmp_path / "straight").records()
    )


def test_scoring_updates_together_gives_the_same_records_as_one_at_a_time(tmp_path, squad_file):
    # in fp32, where a row's answers do not depend on the batch beside it (bf16 kernels differ by batch shape)
    cfg = config(
        squad_file, condition="self-edit", n_self_edits=2, lora=LoraConfig(rank=4, alpha=8, base_precision="fp32")
    )
    one = run_eval(cfg, tmp_path / "one", progress=False, executor=local(1))
    together = run_eval(cfg, tmp_path / "together", progress=False, executor=local(3))
    assert one == together
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "train_loss")} for r in rs]  # noqa: E731
    records = {name: RunDirectory(tmp_path / name).records() for name in ("one", "together")}
    assert strip(records["one"]) == strip(records["together"])
    losses = {name: [r["train_loss"] for r in rs] for name, rs in records.items()}
    assert losses["together"] == pytest.approx(losses["one"], rel=1e-4)


def test_a_failing_unit_is_an_error_not_a_score_and_resume_retries_it(tmp_path, squad_file, monkeypatch):
    from seal.domains.knowledge.domain import KnowledgeDomain

    real_grade = KnowledgeDomain.grade

    def flaky(self, passage, answers):
        if passage.title == "Quenalite":
            raise RuntimeError("grader exploded")
        return real_grade(self, passage, answers)

    monkeypatch.setattr(KnowledgeDomain, "grade", flaky)
    lenient = make_executor(ExecutorSpec(max_error_rate=0.5))
    summary = run_eval(config(squad_file, condition="passage"), tmp_path, progress=False, executor=lenient)
    records = RunDirectory(tmp_path).records()
    (failed,) = [r for r in records if r["title"] == "Quenalite"]  # one record, no verdicts
    assert failed["error"] == "RuntimeError: grader exploded" and failed["reward"] is None and "verdict" not in failed
    assert all(r["error"] is None and r["rejected"] is None for r in records if r["title"] != "Quenalite")
    assert summary["n_errors"] == 1 and summary["n_rejected_self_edits"] == 0
    graded = sum(len(p["questions"]) for p in PASSAGES if p["title"] != "Quenalite")
    assert summary["n_passages"] == 1 and summary["n_graded_answers"] == graded  # the failure counts nowhere else
    monkeypatch.setattr(KnowledgeDomain, "grade", real_grade)
    summary = run_eval(config(squad_file, condition="passage"), tmp_path, resume=True, progress=False)
    assert summary["n_errors"] == 0 and summary["n_passages"] == 2  # --resume scored it again


def test_too_many_failures_stop_the_run_keeping_what_was_scored(tmp_path, squad_file, monkeypatch):
    from seal.domain import RunStopped
    from seal.domains.knowledge.domain import KnowledgeDomain

    monkeypatch.setattr(KnowledgeDomain, "grade", lambda self, passage, answers: 1 / 0)
    with pytest.raises(
        RunStopped, match=r"1 evaluations failed, more than --executor.max_error_rate 0.1 allows \(first: "
    ):
        run_eval(config(squad_file, condition="passage"), tmp_path, progress=False, executor=local(1))
    assert [r["error"] for r in RunDirectory(tmp_path).records()] == ["ZeroDivisionError: division by zero"]


def test_out_of_memory_retries_in_halves_and_stops_when_one_update_does_not_fit(tmp_path, squad_file, monkeypatch):
    import torch

    from seal.domain import RunStopped
    from seal.engine.bank import LoraBank

    real_train = LoraBank.train
    sizes = []

    def fits_one_at_a_time(self, jobs, *args, **kwargs):
        sizes.append(len(jobs))
        if len(jobs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(self, jobs, *args, **kwargs)

    monkeypatch.setattr(LoraBank, "train", fits_one_at_a_time)
    summary = run_eval(config(squad_file, condition="passage"), tmp_path / "a", progress=False, executor=local(2))
    assert sizes == [2, 1, 1] and summary["n_errors"] == 0 and summary["n_passages"] == 2

    def never_fits(self, jobs, *args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 GB")

    monkeypatch.setattr(LoraBank, "train", never_fits)
    with pytest.raises(RunStopped, match="one update alone does not fit in memory on cpu"):
        run_eval(config(squad_file, condition="passage"), tmp_path / "b", progress=False, executor=local(2))


def test_a_group_that_fails_in_training_is_retried_one_update_at_a_time(tmp_path, squad_file, monkeypatch):
    from seal.engine.bank import LoraBank

    real_train = LoraBank.train

    def fails_for_quenalite(self, jobs, progress=None):
        if any("Quenalite" in e.completion for job in jobs for e in job.examples):
            raise RuntimeError("NaN loss")
        return real_train(self, jobs, progress)

    monkeypatch.setattr(LoraBank, "train", fails_for_quenalite)
    lenient = make_executor(ExecutorSpec(parallel=2, max_error_rate=0.5))
    run_eval(config(squad_file, condition="passage"), tmp_path, progress=False, executor=lenient)
    errors = {r["title"]: r["error"] for r in RunDirectory(tmp_path).records()}
    assert errors == {"Varnholt Bridge": None, "Quenalite": "RuntimeError: NaN loss"}


def test_rerun_after_a_failed_model_load_is_not_locked(tmp_path, squad_file):
    with pytest.raises(Exception, match="does not exist"):
        run_eval(config(squad_file, condition="base", model="./no-such-model"), tmp_path, progress=False)
    assert run_eval(config(squad_file, condition="base"), tmp_path, progress=False)["n_passages"] == 2


def test_resume_skips_finished_units_and_recovers_a_torn_write(tmp_path, squad_file):
    cfg = config(squad_file, condition="self-edit", n_passages=1)
    run_eval(cfg, tmp_path, progress=False)
    first = RunDirectory(tmp_path).records()
    with pytest.raises(RunError, match="--resume"):
        run_eval(cfg, tmp_path, progress=False)
    with open(tmp_path / "results.jsonl", "a") as handle:  # a unit killed half-way through its write
        handle.write(json.dumps({**first[0], "unit": "deadbeef/0", "unit_lines": 2}) + "\n" + '{"unit": "tor')
    summary = run_eval(config(squad_file, condition="self-edit"), tmp_path, resume=True, progress=False)
    records = RunDirectory(tmp_path).records()
    assert records[: len(first)] == first  # finished work untouched, not recomputed
    assert all(r["unit"] != "deadbeef/0" for r in records)
    assert summary["n_passages"] == 2 and len(records) == 3
    with pytest.raises(RunError, match="changed: seed"):
        run_eval(config(squad_file, condition="self-edit", seed=1), tmp_path, resume=True, progress=False)


def _scored_run(directory, condition, verdicts, policy=None):
    """A finished run whose passages (ids -> verdicts of their questions) are as given."""
    run = RunDirectory(directory)
    run.start({"condition": condition}, resume=False)
    for passage, marks in verdicts.items():
        records = [
            {"unit": f"{passage}/0", "unit_lines": len(marks), "passage_id": passage, "self_edit_index": 0,
             "verdict": "correct" if mark else "incorrect"}
            for mark in marks
        ]  # fmt: skip
        run.append_unit(f"{passage}/0", records)
    correct = sum(sum(m) for m in verdicts.values())
    graded = sum(len(m) for m in verdicts.values())
    run.write_summary(
        {"condition": condition, "model": "m", "policy": policy, "n_passages": len(verdicts), "n_questions": graded,
         "n_self_edits": 1, "accuracy": correct / graded, "ci95": [0.1, 0.9], "best_accuracy": None}
    )  # fmt: skip


def test_compare_pairs_the_runs_on_the_passages_both_scored(tmp_path):
    _scored_run(tmp_path / "base", "base", {"a": [0, 0], "b": [1, 0], "c": [0, 0]})
    _scored_run(tmp_path / "passage", "passage", {"a": [1, 1], "b": [1, 0], "c": [1, 0], "d": [0, 0]})
    table = compare_runs([tmp_path / "base", tmp_path / "passage"])
    rows = [line.split() for line in table.splitlines()]
    assert ["base", "single", "m", "3", "6", "16.7%", "[10.0%,", "90.0%]", "-"] in rows
    assert ["passage", "single", "m", "4", "8", "50.0%", "[10.0%,", "90.0%]", "-"] in rows
    difference = next(row for row in rows if row[:3] == ["passage", "-", "base"])
    assert difference[3:5] == ["3", "+50.0%"]  # d is not in base: 4/6 - 1/6 over a, b, c
    low, high = (float(cell.strip("[],%")) for cell in difference[5:7])
    assert 0 <= low < 50 < high <= 100  # no passage lost, so no resample of them can be negative


def test_compare_names_who_wrote_the_self_edits(tmp_path):
    _scored_run(tmp_path / "own", "self-edit", {"a": [0, 1]})
    _scored_run(tmp_path / "seal", "self-edit", {"a": [1, 1]}, policy="runs/restem/round-2/policy")
    rows = [line.split("  ")[0] for line in compare_runs([tmp_path / "own", tmp_path / "seal"]).splitlines()]
    assert "self-edit (by round-2/policy)" in rows and "self-edit" in rows
    assert "self-edit (by round-2/policy) - self-edit" in rows
    _scored_run(tmp_path / "own-seed-1", "self-edit", {"a": [1, 0]})  # same condition and model: named by directory
    rows = [line.split("  ")[0] for line in compare_runs([tmp_path / "own", tmp_path / "own-seed-1"]).splitlines()]
    assert "self-edit, m (own-seed-1) - self-edit, m (own)" in rows


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"title": "t", "context": "c", "questions": []}]))
    code = main(
        [
            "knowledge",
            "eval",
            "--condition",
            "base",
            "--data",
            str(bad),
            "--model",
            "tiny-random",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"seal: error: {bad}: item 0: field 'questions' must be a non-empty list"
    assert not (tmp_path / "o").exists()  # stopped before any model work


def test_cli_eval_end_to_end(tmp_path, squad_file, capsys):
    args = [
        "knowledge",
        "eval",
        "--condition",
        "passage",
        "--data",
        str(squad_file),
        "--split",
        "all",
        "--model",
        "tiny-random",
        "--train.epochs",
        "1",
        "--lora.rank",
        "4",
        "--answer_tokens",
        "4",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "passage" in out and "tiny-random" in out and str(tmp_path / "run") in out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["epochs"] == 1


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("seal")
    result = subprocess.run([str(script), "knowledge", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "grade-calibration" in result.stdout


def test_grade_calibration_cli_json(tmp_path, capsys):
    graded = tmp_path / "graded.json"
    questions = [
        {
            "question": "Who built it?",
            "answer": "Ottilie Brask",
            "baseline_answer": "It was built by Ottilie Brask.",
            "baseline_correct": True,
            "adapter_answer": "Anselm Kroy built it.",
            "adapter_correct": False,
        },
        {
            "question": "When?",
            "answer": "1871",
            "baseline_answer": "In 1871.",
            "baseline_correct": False,
            "adapter_answer": "1871",
            "adapter_correct": True,
        },
    ]
    graded.write_text(json.dumps({"articles": [{"title": "t", "completions": [{"questions": questions}]}]}))
    assert main(["knowledge", "grade-calibration", "--graded", str(graded), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # the offline grader says correct, incorrect, correct, correct; the reference says T, F, F, T
    assert result["n"] == 4 and result["agreement"] == 0.75 and result["kappa"] == pytest.approx(0.5)
    assert str(graded) in result["files"]


def test_judge_grader_end_to_end_and_unreachable_judge(tmp_path, squad_file, fake_judge):
    server = fake_judge(lambda body: chat_reply("yes"))
    judged = config(squad_file, condition="base", grader="judge", judge_url=server.url, judge_model="judge")
    assert run_eval(judged, tmp_path / "yes", progress=False)["accuracy"] == 1.0

    refusing = fake_judge(lambda body: (401, {"error": {"message": "bad key"}}))
    judged = config(squad_file, condition="base", grader="judge", judge_url=refusing.url, judge_model="judge")
    with pytest.raises(JudgeRefusedError, match="answered HTTP 401: check the API key"):
        run_eval(judged, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists() and len(refusing.calls) == 1  # one request, before any model work

    closed = config(
        squad_file, condition="base", grader="judge", judge_url="http://127.0.0.1:9/v1", judge_model="judge"
    )
    with pytest.raises(JudgeUnreachableError, match="unreachable"):
        run_eval(closed, tmp_path / "closed", progress=False)
    assert not (tmp_path / "closed").exists()


def test_answers_a_failing_judge_left_ungraded_are_graded_on_resume_and_never_paid_twice(
    tmp_path, squad_file, fake_judge
):
    judge_up = {"now": True}

    def judge(body):
        if body.get("max_tokens") == 1 or judge_up["now"]:
            return chat_reply("yes")
        return 503, {"error": {"message": "overloaded"}}, {"Retry-After": "0"}

    server = fake_judge(judge)
    judged = config(
        squad_file, condition="base", grader="judge", judge_url=server.url, judge_model=f"judge-{tmp_path.name}"
    )
    judge_up["now"] = False
    summary = run_eval(judged, tmp_path, progress=False)
    assert summary["n_ungraded_answers"] == 3 and summary["accuracy"] is None  # nothing graded: no accuracy
    assert {r["reward"] for r in RunDirectory(tmp_path).records()} == {None}
    assert "n/a" in compare_runs([tmp_path])  # printed, not a crash
    judge_up["now"] = True
    calls = len(server.calls)
    summary = run_eval(judged, tmp_path, resume=True, progress=False)
    assert summary["n_ungraded_answers"] == 0 and summary["accuracy"] == 1.0
    assert len(server.calls) - calls == 1 + 3  # the check, then each answer once
    calls = len(server.calls)
    run_eval(judged, tmp_path, resume=True, progress=False)
    assert len(server.calls) - calls == 1  # only the check: every verdict is on disk
