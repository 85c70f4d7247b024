"""Helpers of the benchmark scripts that decide what gets measured."""

import pytest
import torch

from benchmarks.knowledge_store import added
from benchmarks.workload import balanced_shares


def test_balanced_shares_split_the_cost_evenly_and_place_every_index_once():
    costs = [5, 1, 4, 2, 3, 3]
    shares = balanced_shares(costs, 2)
    assert shares == [[0, 1, 5], [2, 3, 4]]
    assert [sum(costs[i] for i in share) for share in shares] == [9, 9]


def test_balanced_shares_leave_shares_empty_when_items_run_out():
    assert balanced_shares([2.0], 3) == [[0], [], []]
    assert balanced_shares([], 2) == [[], []]


def test_balanced_shares_need_at_least_one_part():
    with pytest.raises(ValueError, match="parts must be >= 1"):
        balanced_shares([1.0], 0)


# benchmarks/knowledge_store.py: adapters added together


def random_adapter(seed: int, rank: int = 3, sizes: tuple[int, int] = (12, 9)) -> dict:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(sizes[0], rank, generator=generator)
    b = torch.randn(rank, sizes[1], generator=generator)
    return {"layer": (a, b)}


def product(adapter: dict) -> torch.Tensor:
    a, b = adapter["layer"]
    return a.double() @ b.double()


def test_the_sum_is_exact_when_the_rank_holds_it():
    adapters = [random_adapter(seed) for seed in range(3)]
    total = sum(product(a) for a in adapters)
    for rank in (9, 12):  # 3 x 3 is enough; more is padded with zeros
        result = added(adapters, rank, scale=0.5)
        assert result["layer"][0].shape == (12, rank) and result["layer"][1].shape == (rank, 9)
        assert torch.allclose(product(result), 0.5 * total, atol=1e-5)


def test_a_smaller_rank_gives_the_best_approximation_of_that_rank():
    adapters = [random_adapter(seed) for seed in range(3)]
    total = sum(product(a) for a in adapters)
    u, sigma, v_t = torch.linalg.svd(total)
    best = u[:, :4] @ torch.diag(sigma[:4]) @ v_t[:4]  # Eckart-Young
    assert torch.allclose(product(added(adapters, 4)), best, atol=1e-5)


def test_adapters_of_other_layers_are_refused():
    with pytest.raises(ValueError, match="differ in their layers"):
        added([random_adapter(0), {"other": random_adapter(1)["layer"]}], 4)
    with pytest.raises(ValueError, match="at least one"):
        added([], 4)


# benchmarks/arc_table.py: the ARC table from run directories


ARC_SELF_EDITS = (
    '{"augmentations": ["basic", "basic"], "loss": "output", "learning_rate": 0.0001, "epochs": 2}',
    '{"augmentations": ["basic"], "loss": "output", "learning_rate": 0.001, "epochs": 2}',
)


def arc_run(directory, rewards: dict[str, list], rejected: str | None = None, cut: tuple[str, ...] = ()) -> None:
    """A finished ARC run: task id -> each configuration's reward (None: the unit failed); the units in
    ``cut`` were trained on less than their configuration asked, to fit the budget; configuration i of
    every task is ``ARC_SELF_EDITS[i]``."""
    from seal.runs import RunDirectory

    run = RunDirectory(directory)
    run.start({"condition": "x"}, resume=False)
    for task, per_config in rewards.items():
        for index, reward in enumerate(per_config):
            unit = f"{task}/{index}"
            fields = {"error": "OutOfMemoryError"} if reward is None else {}
            notes = ["budget: 2 of 5 epochs", "budget: trained on 3 of 9 examples"] if unit in cut else []
            record = {"unit": unit, "unit_lines": 1, "task_id": task, "reward": reward,
                      "self_edit": ARC_SELF_EDITS[index], "rejected": rejected if index == 0 else None,
                      "train_tokens": 100, "notes": notes, "seconds": {"train": 2.0, "answer": 1.0},
                      **fields}  # fmt: skip
            run.append_unit(unit, [record])
    scored = [r for per_config in rewards.values() for r in per_config if r is not None]
    run.write_summary(
        {"success_rate": sum(scored) / len(scored), "ci95": [0.0, 1.0], "tasks_solved": 0.5, "n_tasks": len(rewards),
         "n_errors": sum(r is None for per_config in rewards.values() for r in per_config),
         "mean_seconds_per_ttt": 3.0, "mean_train_seconds_per_ttt": 2.0, "mean_train_tokens": 100}
    )  # fmt: skip


def test_the_arc_table_pairs_seal_with_its_baseline_and_leaves_failed_units_out(tmp_path):
    import json

    from benchmarks.arc_table import table

    root = tmp_path / "b"
    arc_run(
        root / "ttt-self-edit", {"t1": [0.0, 0.0], "t2": [0.5, 0.0]}, rejected="keys must be exactly x; unknown [y]"
    )
    arc_run(root / "seal", {"t1": [1.0, None], "t2": [0.5, 0.5]}, cut=("t1/0", "t1/1", "t2/1"))
    arc_run(root / "oracle-x4", {"t1": [1.0, 0.0], "t2": [0.0, 0.0]})
    arc_run(root / "seal-x4", {"t1": [1.0, 1.0], "t2": [1.0, 0.0]})
    arc_run(root / "ttt-self-edit-x4", {"t1": [0.0, 1.0], "t2": [0.0, 0.0]})
    (root / "train" / "round-1").mkdir(parents=True)
    kept = {"n_items": 46, "kept": [{"item_id": "a"}, {"item_id": "a"}, {"item_id": "b"}]}
    (root / "train" / "round-1" / "kept.json").write_text(json.dumps(kept))
    lines = table(tmp_path, "b", "seal-eval", {"ttt-self-edit": "ttt-self-edit"})
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines if line.startswith("| ")}
    assert rows["ttt-self-edit"][4:8] == ["2 keys must be exactly x", "0", "0", "2.0"]
    assert rows["seal"][4:7] == ["none", "1", "2"]  # the failed unit t1/1 is not counted as cut
    assert rows["oracle, 4x the budget"][1] == "25.0%"
    assert rows["seal, 4x the budget"][1] == "75.0%"
    # seal's scored units: t1/0 and t2/0 (basic named twice, which counts once) and t2/1
    assert (
        '- seal: 2 distinct of 3; most common {"augmentations": ["basic"], "loss": "output", "learning_rate": 0.0001,'
        ' "epochs": 2} (2 of 3)'
    ) in lines
    assert next(line for line in lines if line.startswith("- ttt-self-edit:")).startswith(
        "- ttt-self-edit: 1 distinct of 2;"
    )
    assert "- round-1: kept 3 rewarded configurations, from 2 of 46 training tasks" in lines
    difference = next(line for line in lines if line.startswith("seal - ttt-self-edit"))
    # t1: 1/1 - 0/2, t2: 1/2 - 0.5/2, pooled (1 + 1) / 3 - 0.5 / 4; the failed unit is no configuration
    assert difference.startswith(f"seal - ttt-self-edit: {2 / 3 - 0.5 / 4:+.1%}")
    assert "over 2 tasks x 2 configurations" in difference
    assert "  per task: t1 +1.00, t2 +0.25" in lines
    # each seal row is paired with ttt-self-edit at its own budget
    pairs = [line.split(":")[0] for line in lines if " - ttt-self-edit" in line]
    assert pairs == ["seal - ttt-self-edit", "seal, 4x the budget - ttt-self-edit, 4x the budget"]
    larger = next(line for line in lines if line.startswith("seal, 4x the budget - "))
    assert larger.startswith(f"seal, 4x the budget - ttt-self-edit, 4x the budget: {3 / 4 - 1 / 4:+.1%}")
    assert "  per task: t1 +0.50, t2 +0.50" in lines


def test_the_arc_plot_draws_the_finished_conditions_of_each_set(tmp_path):
    from benchmarks.arc_table import conditions, plot

    root = tmp_path / "b"
    for condition in ("oracle", "icl", "seal"):
        arc_run(root / condition, {"t1": [1.0, 0.0]})
    (root / "ttt-self-edit").mkdir()  # started, not finished: no summary
    assert list(conditions(root, {"ttt-self-edit": "ttt-self-edit"})) == ["icl", "seal", "oracle"]
    plot(tmp_path, tmp_path / "arc.png")  # set A has no run: its panel says so
    assert (tmp_path / "arc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
