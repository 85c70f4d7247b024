import json

import numpy as np
import pytest

from seal.cli import main
from seal.domain import Rejection
from seal.domains.arc.augment import INVERTIBLE_FOR_VOTING
from seal.domains.arc.data import load_arc_tasks
from seal.domains.arc.domain import ArcDomain, Budget, leave_out_tasks
from seal.domains.arc.evaluate import ORACLE_GRID, ArcEvalConfig, run_arc_eval
from seal.domains.arc.grids import Pair, Task, grid_to_text
from seal.domains.arc.selfedit import MAX_SELF_EDIT_CHARS, TTTConfig, parse_ttt_config
from seal.engine.generation import SamplingConfig
from seal.engine.lora import LoraConfig
from seal.runs import RunDirectory

SMALL = Budget(max_examples=3, max_example_chars=600, max_train_tokens=1500)
CONFIG = TTTConfig(("basic", "size"), "output", 1e-3, 1)


def flip_task() -> Task:
    """Output = input mirrored left-right; three demonstrations, one test."""
    grids = [np.array(g) for g in ([[1, 0], [2, 3]], [[0, 4], [5, 0]], [[6, 7], [0, 8]], [[9, 1], [1, 2]])]
    pairs = [Pair(g, g[:, ::-1]) for g in grids]
    return Task("flip", tuple(pairs[:3]), (pairs[3],))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I would train a lot.", "no JSON object"),
        ('{"augmentations": ["basic"], "loss": "output", "learning_rate": 1e-4,}', "invalid JSON"),
        ('{"augmentations": ["basic"], "loss": "output", "learning_rate": 1e-4, "epochs": 2, "x": 1}', "unknown ['x']"),
        ('{"augmentations": ["spin"], "loss": "output", "learning_rate": 1e-4, "epochs": 2}', "unknown augmentations"),
        ('{"augmentations": [], "loss": "some", "learning_rate": 1e-4, "epochs": 2}', "loss must be one of"),
        ('{"augmentations": [], "loss": "all", "learning_rate": 1, "epochs": 2}', "outside"),
        ('{"augmentations": [], "loss": "all", "learning_rate": 1e-4, "epochs": true}', "epochs must be an integer"),
        ('{"augmentations": [], "loss": "all", "learning_rate": 1e-4, "epochs": 11}', "epochs must be an integer"),
    ],
)
def test_bad_self_edits_are_rejected_with_a_reason(text, reason):
    result = parse_ttt_config(text)
    assert isinstance(result, Rejection) and reason in result.reason


def test_valid_self_edit_in_a_fence_parses():
    config = '{"augmentations": ["basic", "basic", "repeat"], "loss": "all", "learning_rate": 0.001, "epochs": 3}'
    text = f"Sure!\n```json\n{config}\n```"
    assert parse_ttt_config(text) == TTTConfig(("basic", "repeat"), "all", 1e-3, 3)


def test_leave_out_tasks():
    pairs = flip_task().train
    tasks = leave_out_tasks(pairs)
    assert len(tasks) == 3 + 6  # leave one out, then also drop one other
    assert all(query not in context for context, query in tasks)
    assert len(leave_out_tasks(pairs[:2])) == 2


def test_ttt_update_is_deterministic_budgeted_and_masks_as_asked():
    domain = ArcDomain(SMALL)
    update = domain.ttt_update(flip_task(), CONFIG)
    again = domain.ttt_update(flip_task(), CONFIG)
    assert update == again
    assert 1 <= len(update.examples) <= 3 and update.notes and update.notes[0].startswith("budget: trained on")
    assert sum(len(e.prompt) + len(e.completion) for e in update.examples) <= SMALL.max_train_tokens
    assert all(e.chat and not e.loss_on_prompt for e in update.examples)
    assert update.train.learning_rate == 1e-3 and update.train.epochs == 1
    everything = domain.ttt_update(flip_task(), TTTConfig((), "all", 1e-3, 1))
    assert all(e.loss_on_prompt for e in everything.examples)
    roomy = ArcDomain(Budget(max_examples=1000, max_example_chars=10_000, max_train_tokens=10**7))
    plain, augmented = (
        roomy.ttt_update(flip_task(), TTTConfig((), "output", 1e-3, 1)),
        roomy.ttt_update(flip_task(), CONFIG),
    )
    assert len(plain.examples) == 9 and len(augmented.examples) > len(plain.examples)
    assert not plain.notes


def test_a_valid_configuration_beyond_the_budget_trains_fewer_epochs_instead_of_being_rejected():
    domain = ArcDomain(SMALL)
    update = domain.ttt_update(flip_task(), TTTConfig((), "output", 1e-3, 10))
    smallest = min(len(e.prompt) + len(e.completion) for e in update.examples)
    assert update.train.epochs == SMALL.max_train_tokens // smallest < 10
    assert f"budget: {update.train.epochs} of 10 epochs" in update.notes
    tokens_per_epoch = sum(len(e.prompt) + len(e.completion) for e in update.examples)
    assert tokens_per_epoch * update.train.epochs <= SMALL.max_train_tokens


def test_the_answer_budget_does_not_look_at_the_test_output():
    test_input = np.zeros((2, 2), dtype=np.int64)
    grows = Task("grows", flip_task().train, (Pair(test_input, np.zeros((6, 6), dtype=np.int64)),))
    unknown = Task("grows", flip_task().train, (Pair(test_input, None),))
    budget = ArcDomain().queries(grows).max_new_tokens
    assert budget == ArcDomain().queries(unknown).max_new_tokens == 2 * 2 * (2 * 2 + 1) + 8  # twice the seen 2x2


def test_a_task_counts_as_solved_when_a_configuration_solves_every_test_input():
    from seal.domains.arc.evaluate import summarise

    def unit(task, index, reward, **fields):
        return {"unit": f"{task}/{index}", "task_id": task, "reward": reward, "rejected": None, "train_tokens": 10,
                "seconds": {"train": 1.0}, **fields}  # fmt: skip

    records = [unit("half", 0, 0.5), unit("half", 1, 0.0), unit("whole", 0, 1.0), unit("whole", 1, 0.0),
               unit("whole", 2, None, error="OutOfMemoryError")]  # fmt: skip
    summary = summarise(records, ArcEvalConfig(), ["half", "whole"])
    assert summary["tasks_solved"] == 0.5  # one of two test inputs is success 0.5, not a solved task
    assert summary["success_rate"] == pytest.approx(1.5 / 4) and summary["n_errors"] == 1
    assert summary["mean_train_seconds_per_ttt"] == 1.0


def test_voting_maps_answers_back():
    task = flip_task()
    truth = task.test[0].output
    queries = ArcDomain().queries(task)
    assert len(queries.messages) == len(task.test) * len(INVERTIBLE_FOR_VOTING)
    in_each_frame = [f"Here:\n{grid_to_text(t(truth))}\n" for t in INVERTIBLE_FOR_VOTING]
    score = ArcDomain().grade(task, in_each_frame)
    assert score.reward == 1.0 and score.details[0]["votes"] == len(INVERTIBLE_FOR_VOTING)

    score = ArcDomain().grade(task, ["no idea"] * len(INVERTIBLE_FOR_VOTING))
    assert score.reward == 0.0 and score.details[0]["answer"] is None


def test_the_second_most_voted_answer_is_the_second_attempt():
    task = flip_task()
    truth = task.test[0].output
    wrong, other = (truth + 1) % 10, (truth + 2) % 10
    n = len(INVERTIBLE_FOR_VOTING)
    in_frame = [lambda grid, t=t: f"{grid_to_text(t(grid))}" for t in INVERTIBLE_FOR_VOTING]
    mostly_wrong = [frame(wrong if i < n - 2 else truth) for i, frame in enumerate(in_frame)]
    (detail,) = ArcDomain().grade(task, mostly_wrong).details
    assert detail["answer"] == grid_to_text(wrong) and detail["attempts"] == [grid_to_text(wrong), grid_to_text(truth)]
    assert detail["correct"]  # right at the second attempt
    once_each = [frame(g) for frame, g in zip(in_frame, [wrong, other, truth] + [wrong] * (n - 3))]
    # truth ties with other for second place; a tie goes to the answer seen first (the identity frame first)
    assert not ArcDomain().grade(task, once_each).details[0]["correct"]


def tiny_config(condition, tasks="6150a2bd,44f52bb0", constrain=True):
    return ArcEvalConfig(
        condition=condition, model="tiny-random", tasks=tasks, k=2, constrain=constrain,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=MAX_SELF_EDIT_CHARS if constrain else 16),
        lora=LoraConfig(4, 8), budget=SMALL,
    )  # fmt: skip


@pytest.mark.parametrize("condition", ["icl", "ttt-self-edit", "oracle"])
def test_conditions_write_complete_runs(tmp_path, condition):
    summary = run_arc_eval(tiny_config(condition), tmp_path, progress=False)
    expected_units = {"icl": 1, "ttt-self-edit": 2, "oracle": len(ORACLE_GRID)}[condition]
    records = RunDirectory(tmp_path).records()
    assert len({r["unit"] for r in records}) == 2 * expected_units
    assert summary["n_tasks"] == 2 and summary["configs_per_task"] == expected_units
    assert {"success_rate", "ci95", "tasks_solved", "mean_train_tokens", "mean_seconds_per_ttt"} <= set(summary)
    if condition == "oracle":
        assert all(r["train_tokens"] > 0 for r in records) and summary["mean_train_tokens"] > 0
        assert any(r["notes"] for r in records)  # the budget cap is recorded
    if condition == "ttt-self-edit":  # sampled under the schema: even tiny-random's configurations are valid
        assert summary["n_rejected"] == 0 and all(r["train_tokens"] > 0 for r in records)
        assert all(isinstance(parse_ttt_config(r["self_edit"]), TTTConfig) for r in records)


def test_free_text_configurations_are_rejected_with_their_reasons(tmp_path):
    summary = run_arc_eval(tiny_config("ttt-self-edit", constrain=False), tmp_path, progress=False)
    records = RunDirectory(tmp_path).records()
    assert summary["n_rejected"] == 4 and summary["rejections"]  # tiny-random writes no valid configuration
    assert all(r["rejected"] and r["correct"] is False and r["reward"] == 0.0 for r in records)


def test_cli_invalid_tasks_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "tasks.json"
    bad.write_text(json.dumps({"t1": {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}}))
    code = main(["arc", "eval", "--condition", "icl", "--tasks_file", str(bad), "--model", "tiny-random", "--out",
                 str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"seal: error: {bad}: task t1: train[0].input") and "\n" not in err


def test_cli_seal_needs_a_policy(tmp_path, capsys):
    assert main(["arc", "eval", "--condition", "seal", "--out", str(tmp_path)]) == 2
    assert "--policy" in capsys.readouterr().err


def test_arc_train_keeps_every_rewarded_configuration_by_default():
    from seal.cli import build_parser

    def restem(*flags):
        return build_parser().parse_args(["arc", "train", *flags, "--out", "x"]).arc.train.restem

    defaults = restem()
    assert (defaults.top_m, defaults.rounds) == (None, 1)
    assert restem("--restem.top_m", "2").top_m == 2
    assert restem("--restem.top_m", "2", "--restem.top_m", "null").top_m is None


def test_max_grid_filter_gives_a_cpu_sized_set():
    tasks = load_arc_tasks("seal-eval", max_grid=10)
    assert [t.id for t in tasks] == ["66e6c45b", "68b67ca3", "af24b4cc", "b1fc8b8e", "c7d4e6ad"]


def test_training_on_an_evaluation_task_is_refused(tmp_path):
    from seal.domains.arc.evaluate import run_arc_train
    from seal.loops.restem import RestEMConfig

    with pytest.raises(ValueError, match="share 1 task"):
        run_arc_train(tiny_config("seal", tasks="6150a2bd"), RestEMConfig(), "44f52bb0,6150a2bd", tmp_path)


def test_arc_train_runs_through_the_shared_restem_engine(tmp_path):
    from seal.domains.arc.evaluate import run_arc_train
    from seal.engine.training import TrainConfig
    from seal.loops.restem import RestEMConfig
    from seal.models.adapters import is_adapter_dir
    from seal.runs import AppendOnlyLog

    config = tiny_config("seal", tasks="6150a2bd")
    restem = RestEMConfig(rounds=1, k=2, sampling=config.sampling, sft=TrainConfig(epochs=1), lora=config.lora)
    summaries = run_arc_train(config, restem, "44f52bb0,5582e5ca", tmp_path, resume=False, progress=False)
    assert [s["n_tasks"] for s in summaries] == [1, 1]
    assert [s["condition"] for s in summaries] == ["ttt-self-edit", "seal"]  # round 0: the model's own configs
    rewards = AppendOnlyLog(tmp_path / "round-1" / "rewards.jsonl").records()
    assert sorted(r["unit"] for r in rewards) == sorted(
        f"{t}/{i}" for t in ("44f52bb0", "5582e5ca") for i in ("baseline", 0, 1)
    )
    assert is_adapter_dir(tmp_path / "round-1" / "policy")
    assert RunDirectory(tmp_path / "round-1" / "eval").summary()["model"] == str(tmp_path / "round-1" / "policy")
