import math
import warnings

import numpy as np
import ot
import pytest
import torch

from fmlab.couplings import couple, pairing_cost, sinkhorn_rows
from fmlab.sinkhorn import log_sinkhorn, sinkhorn_bias, sinkhorn_plan_torch


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) * 0.5 + 2


@pytest.mark.parametrize("eps", [1.0, 0.1, 1e-3])
def test_two_point_plan_is_the_closed_form(eps):
    # C = [[0, c], [c, 0]]: P = diag(u) K diag(v) has cross ratio P11 P22 / (P12 P21) = exp(2c / eps); with the
    # marginals 1/2, P11 = P22 = p, P12 = P21 = 1/2 - p, so p / (1/2 - p) = exp(c / eps).
    c = 1.0
    cost = torch.tensor([[0.0, c], [c, 0.0]], dtype=torch.float64)
    log_p, _, _ = log_sinkhorn(cost, eps)
    p = 0.5 / (1 + math.exp(-c / eps))
    expected = torch.tensor([[p, 0.5 - p], [0.5 - p, p]], dtype=torch.float64)
    assert torch.allclose(log_p.exp(), expected, rtol=1e-12, atol=1e-300)


def test_marginals_and_agreement_with_pot():
    x0, x1 = _batch()
    cost = torch.cdist(x0.double(), x1.double()).pow(2)
    cost = cost / cost.mean()
    log_p, iters, err = log_sinkhorn(cost, 0.05)
    p = log_p.exp()
    n = len(p)
    assert err < 1e-9 and iters < 10_000
    assert torch.allclose(p.sum(0), torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(p.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-9)
    ref = ot.sinkhorn(np.full(n, 1 / n), np.full(n, 1 / n), cost.numpy(), 0.05, method="sinkhorn_log",
                      numItermax=10_000, stopThr=1e-12)
    assert np.allclose(p.numpy(), ref, rtol=1e-5, atol=1e-12)


def test_device_coupling_matches_pots_plan_and_draws_like_it():
    x0, x1 = _batch(48, seed=1)
    a, b = sinkhorn_rows(x0, x1, 0.1), sinkhorn_rows(x0, x1, 0.1, on_device=True)
    assert a.shape == b.shape == (48, 48) and torch.allclose(a, b, rtol=1e-5, atol=1e-12)
    labels = torch.arange(48)
    c = couple(x0, x1, "sinkhorn_device", reg=0.1, labels=labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1[c.labels], c.x1)
    d = couple(x0, x1, "sinkhorn_device", reg=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(c.index, d.index)  # seeded


def test_small_reg_stays_finite_and_tends_to_exact_ot():
    x0, x1 = _batch(64, seed=2)
    with warnings.catch_warnings():  # POT's exp-domain ot.sinkhorn underflows here (and warns): rows of zeros
        warnings.simplefilter("ignore")
        pot = sinkhorn_rows(x0, x1, 1e-3)
    assert float(pot.sum(1).min()) < 1e-100
    plan = sinkhorn_plan_torch(x0, x1, reg=1e-3)
    assert torch.isfinite(plan).all() and torch.allclose(plan.sum(1), torch.full((64,), 1 / 64, dtype=plan.dtype))
    exact = couple(x0, x1, "ot")
    cost = torch.cdist(x0.double(), x1.double()).pow(2)
    assert float((plan * cost).sum()) == pytest.approx(pairing_cost(exact.x0, exact.x1), rel=1e-3)


def test_bias_shrinks_with_reg():
    x0, x1 = _batch(64, seed=3)
    rows = sinkhorn_bias(x0, x1, [1.0, 0.1, 0.01, 0.001])
    costs = [r["plan_cost"] for r in rows]
    partners = [r["partners"] for r in rows]
    off = [r["off_permutation"] for r in rows]
    assert costs == sorted(costs, reverse=True) and 1 - 1e-9 <= costs[-1] < 1.001
    assert partners == sorted(partners, reverse=True) and partners[0] > 50 and partners[-1] < 3  # of n = 64
    assert off == sorted(off, reverse=True) and off[0] > 0.9 and off[-1] < 0.4
    assert rows[0]["exact_cost"] < rows[0]["independent_cost"]
    assert rows[0]["eps"] == pytest.approx(rows[0]["independent_cost"])


def test_bad_input():
    cost = torch.ones(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        log_sinkhorn(cost, 0.0)
    with pytest.raises(ValueError, match=r"cost must be a non-empty \[n, m\] matrix"):
        log_sinkhorn(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        log_sinkhorn(cost, 1.0, max_iter=0)
    with pytest.raises(ValueError, match="reg must be a finite number > 0"):
        sinkhorn_plan_torch(torch.zeros(3, 2), torch.zeros(3, 2), reg=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        sinkhorn_bias(torch.zeros(3, 2), torch.zeros(4, 2), [0.1])


def test_plan_statistics_of_a_permutation_and_of_the_independent_plan():
    from fmlab.sinkhorn import plan_statistics

    cost = torch.tensor([[1.0, 4.0], [9.0, 2.0]], dtype=torch.float64)
    exact = plan_statistics(torch.eye(2, dtype=torch.float64) / 2, cost, exact_cost=1.5)
    assert exact == pytest.approx({"plan_cost": 1.0, "partners": 1.0})
    uniform = plan_statistics(torch.full((2, 2), 0.25, dtype=torch.float64), cost, exact_cost=1.5)
    assert uniform == pytest.approx({"plan_cost": 4.0 / 1.5, "partners": 2.0})
