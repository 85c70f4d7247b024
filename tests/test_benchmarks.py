"""Helpers of the benchmark scripts that decide what gets measured."""

import pytest

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
