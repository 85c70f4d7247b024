import pytest
import torch

from seal.engine.arithmetic import added


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
