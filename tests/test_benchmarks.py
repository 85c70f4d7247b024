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
