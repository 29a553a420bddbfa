import numpy as np
import ot
import pytest
import torch

from fmlab.couplings import cost_matrix, couple, pairing_cost


def _batch(n=64, seed=0, d=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * 0.5 + 3


def test_ot_pairing_cost_equals_pot_emd2():
    x0, x1 = _batch(128)
    c = couple(x0, x1, "ot")
    n = len(x0)
    emd2 = ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), cost_matrix(x0, x1).numpy())
    assert pairing_cost(c.x0, c.x1) == pytest.approx(emd2, rel=1e-9)
    assert pairing_cost(c.x0, c.x1) < pairing_cost(x0, x1)


def test_ot_is_a_permutation_every_point_used_once():
    x0, x1 = _batch(200, seed=1)
    c = couple(x0, x1, "ot")
    assert sorted(c.index.tolist()) == list(range(200))
    assert torch.equal(c.x1, x1[c.index]) and torch.equal(c.x0, x0)


def test_ot_on_images_flattens():
    x0, x1 = torch.randn(16, 3, 4, 4), torch.randn(16, 3, 4, 4)
    c = couple(x0, x1, "ot")
    assert c.x1.shape == x1.shape and sorted(c.index.tolist()) == list(range(16))


def test_labels_travel_with_x1():
    x0, x1 = _batch(50, seed=2)
    labels = torch.arange(50)
    for method in ("independent", "ot", "sinkhorn"):
        c = couple(x0, x1, method, labels=labels, generator=torch.Generator().manual_seed(0))
        assert torch.equal(x1[c.labels], c.x1)


def test_sinkhorn_approaches_ot_as_reg_shrinks_and_is_seeded():
    x0, x1 = _batch(64, seed=3)
    exact = couple(x0, x1, "ot")
    ot_cost = pairing_cost(exact.x0, exact.x1)
    costs = []
    for reg in (1.0, 0.01):
        c = couple(x0, x1, "sinkhorn", reg=reg, generator=torch.Generator().manual_seed(0))
        costs.append(pairing_cost(c.x0, c.x1))
    assert costs[1] < costs[0] and costs[1] < 1.05 * ot_cost
    a = couple(x0, x1, "sinkhorn", generator=torch.Generator().manual_seed(5)).index
    b = couple(x0, x1, "sinkhorn", generator=torch.Generator().manual_seed(5)).index
    assert torch.equal(a, b)


def test_bad_input():
    x0, x1 = _batch(8)
    with pytest.raises(ValueError, match="coupling must be one of"):
        couple(x0, x1, "hungarian")
    with pytest.raises(ValueError, match="same shape"):
        couple(x0, x1[:4], "ot")
    with pytest.raises(ValueError, match="reg"):
        couple(x0, x1, "sinkhorn", reg=0.0)


def test_exact_solvers_give_the_same_permutation():
    from fmlab.couplings import ot_permutation

    for n, seed in ((64, 0), (300, 1)):
        x0, x1 = _batch(n, seed=seed)
        a = ot_permutation(x0, x1, "network_simplex")
        b = ot_permutation(x0, x1, "assignment")
        assert torch.equal(a, b) and torch.equal(ot_permutation(x0, x1), a)
    with pytest.raises(ValueError, match="solver must be one of"):
        ot_permutation(x0, x1, "greedy")


def test_solve_then_draw_is_couple():
    from fmlab.couplings import partners, solve_coupling

    x0, x1 = _batch(40, seed=4)
    for method in ("independent", "ot", "sinkhorn"):
        solution = solve_coupling(x0, x1, method, 0.05)
        index = partners(solution, torch.Generator().manual_seed(3))
        assert torch.equal(index, couple(x0, x1, method, generator=torch.Generator().manual_seed(3)).index)
