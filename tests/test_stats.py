import numpy as np
import pytest

from seal.domains.knowledge.evaluate import EvalConfig, per_passage_counts, summarise
from seal.stats import paired_difference_ci, pooled_accuracy_ci


def record(passage, index, verdict, question="q"):
    return {
        "unit": f"{passage}/{index}",
        "unit_lines": 2,
        "passage_id": passage,
        "self_edit_index": index,
        "verdict": verdict,
        "question": question,
        "rejected": None,
    }


RECORDS = [
    # passage a: self-edit 0 gets 2/2, self-edit 1 gets 0/2
    record("a", 0, "correct"), record("a", 0, "correct"),
    record("a", 1, "incorrect"), record("a", 1, "incorrect"),
    # passage b: self-edit 0 gets 1/1 graded (one ungraded), self-edit 1 gets 1/2
    record("b", 0, "correct"), record("b", 0, "ungraded"),
    record("b", 1, "correct"), record("b", 1, "incorrect"),
]  # fmt: skip


def test_counts_pool_questions_and_skip_ungraded():
    assert per_passage_counts(RECORDS) == {"a": {0: (2, 2), 1: (0, 2)}, "b": {0: (1, 1), 1: (1, 2)}}


def test_summary_numbers_by_hand():
    summary = summarise(RECORDS, EvalConfig(condition="self-edit", n_self_edits=2))
    assert summary["accuracy"] == pytest.approx(4 / 7)  # pooled over graded answers and self-edits
    assert summary["best_accuracy"] == pytest.approx(3 / 3)  # a: 2/2, b: 1/1
    assert summary["n_passages"] == 2 and summary["n_questions"] == 4
    assert summary["n_graded_answers"] == 7 and summary["n_ungraded_answers"] == 1
    lo, hi = summary["ci95"]
    assert lo < summary["accuracy"] < hi


def test_pooled_ci_brackets_the_estimate_and_shrinks_with_data():
    correct, total = np.array([3, 1, 4, 2]), np.array([5, 5, 5, 5])
    lo, hi = pooled_accuracy_ci(correct, total)
    assert lo <= 0.5 <= hi
    lo_big, hi_big = pooled_accuracy_ci(np.tile(correct, 25), np.tile(total, 25))
    assert hi_big - lo_big < (hi - lo) / 3


def test_pooled_ci_of_a_constant_is_a_point():
    assert pooled_accuracy_ci(np.array([2, 2]), np.array([2, 2])) == (1.0, 1.0)


def test_paired_difference():
    a_correct, b_correct, total = np.array([1, 2, 0, 3]), np.array([2, 3, 1, 4]), np.array([4, 4, 4, 4])
    delta, lo, hi = paired_difference_ci(a_correct, total, b_correct, total)
    assert delta == pytest.approx(0.25)
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)  # every passage improves by exactly 1/4
    same = paired_difference_ci(a_correct, total, a_correct, total)
    assert same == (0.0, 0.0, 0.0)


def test_nothing_graded_gives_nan_not_an_error():
    lo, hi = pooled_accuracy_ci(np.array([0, 0]), np.array([0, 0]))
    assert np.isnan(lo) and np.isnan(hi)
