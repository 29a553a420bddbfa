"""fmlab.solvers stochastic sampling: Euler-Maruyama's orders on Ornstein-Uhlenbeck processes with a known law, the
marginal-preserving SDE family on a Gaussian (and its sign), and DDIM as an Euler step."""

import math

import numpy as np
import pytest
import torch

from fmlab import solvers as S
from fmlab.data import Gaussian, gmm_2d
from fmlab.paths import get_schedule

THETA = 2.0


def _ou_drift(x, t):
    return -THETA * x  # dx = -theta x dt + g(t) dW


def _slope(steps, errors):
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def test_weak_order_one_on_time_dependent_ou():
    """E[x_T^2] of dx = -theta x dt + sqrt(2t) dW from x0 = 1: exact e^{-2 theta} + (2 theta - 1 + e^{-2 theta}) /
    (2 theta^2) (the variance ODE dV/dt = -2 theta V + g^2). EM's weak error falls like 1/N."""
    exact = math.exp(-2 * THETA) + (2 * THETA - 1 + math.exp(-2 * THETA)) / (2 * THETA**2)
    n = 400_000
    steps, errors = (4, 8, 16, 32), []
    for k, m in enumerate(steps):
        x = torch.ones(n, 1, dtype=torch.float64)
        g = torch.Generator().manual_seed(k)
        out = S.euler_maruyama(_ou_drift, lambda t: torch.sqrt(2 * t), x, steps=m, generator=g)
        errors.append(abs(out.pow(2).mean().item() - exact))  # MC std ~ 1e-3, far below these errors
    assert errors[-1] < 0.03
    assert 0.8 < _slope(steps, errors) * -1 < 1.25, errors


def test_strong_order_one_for_additive_noise():
    """Coarse EM paths driven by the summed increments of one fine Brownian path converge to the fine solution
    pathwise like 1/N (additive noise: EM coincides with Milstein, strong order 1)."""
    n, fine = 2000, 4096
    g = torch.Generator().manual_seed(0)
    xi = torch.randn(fine, n, 1, generator=g, dtype=torch.float64)  # fine increments dW = sqrt(h_f) xi
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    sigma = lambda t: torch.full_like(t, 0.8)  # noqa: E731
    ref = S.euler_maruyama(_ou_drift, sigma, x0, steps=fine, noise=xi)
    steps, errors = (8, 16, 32, 64), []
    for m in steps:
        z = xi.reshape(m, fine // m, n, 1).sum(1) / math.sqrt(fine // m)  # the same Brownian path, coarser
        out = S.euler_maruyama(_ou_drift, sigma, x0, steps=m, noise=z)
        errors.append((out - ref).abs().mean().item())
    assert 0.85 < -_slope(steps, errors) < 1.2, errors
    # the same comparison with independent noise does not converge: the test sees the path, not only the law
    z = torch.randn(64, n, 1, generator=g, dtype=torch.float64)
    assert (S.euler_maruyama(_ou_drift, sigma, x0, steps=64, noise=z) - ref).abs().mean().item() > 20 * errors[-1]


def test_ou_law_at_the_end_matches_the_closed_form():
    """Constant g: x_T ~ N(x0 e^{-theta T}, g^2 (1 - e^{-2 theta T}) / (2 theta)) within MC and O(h) error."""
    n, g0 = 100_000, 0.7
    x0 = torch.full((n, 1), 2.0, dtype=torch.float64)
    out = S.euler_maruyama(_ou_drift, lambda t: torch.full_like(t, g0), x0, steps=200,
                           generator=torch.Generator().manual_seed(1))
    mean, var = 2 * math.exp(-THETA), g0**2 * (1 - math.exp(-2 * THETA)) / (2 * THETA)
    assert abs(out.mean().item() - mean) < 0.01
    assert abs(out.var().item() / var - 1) < 0.02


def _gaussian():
    return Gaussian(torch.tensor([1.0, -0.5], dtype=torch.float64),
                    cov=torch.tensor([[0.30, 0.12], [0.12, 0.20]], dtype=torch.float64))


def _affine_field(gauss, schedule="linear"):
    """The Gaussian's closed-form velocity A_t x + b_t (every sample shares one time, as in a solve): fast."""
    def field(x, t):
        mat, b = gauss.velocity_affine(t[0], schedule)
        return x @ mat.T + b
    return field


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.5, 2.0])
def test_marginal_sde_keeps_the_marginals_of_the_flow(schedule, eta):
    """From N(0, I) the SDE's samples have the flow's marginal N(a m, a^2 S + s^2 I) at t = 0.6 and at t = 1."""
    gauss = _gaussian()
    n = 20_000
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    field = _affine_field(gauss, schedule)
    traj = S.sample_sde(field, x0, steps=200, eta=eta, schedule=schedule, return_trajectory=True,
                        generator=torch.Generator().manual_seed(3))
    for t_check in (0.6, 1.0):
        k = int(round(t_check * 200))
        a, s, _, _ = get_schedule(schedule)(torch.tensor(t_check, dtype=torch.float64))
        mean, cov = a * gauss.means[0], a**2 * gauss.covs[0] + s**2 * torch.eye(2, dtype=torch.float64)
        xs = traj.xs[k]
        assert torch.allclose(xs.mean(0), mean, atol=0.02), (t_check, xs.mean(0), mean)
        assert torch.allclose(torch.cov(xs.T), cov, atol=0.02), (t_check, torch.cov(xs.T), cov)


def test_the_score_correction_has_the_right_sign():
    """Flip the sign of (g^2 / 2) score and the marginal is lost: the test can fail."""
    gauss = _gaussian()
    n, eta = 20_000, 1.0
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    field = _affine_field(gauss)
    good = S.sample_sde(field, x0, steps=200, eta=eta, generator=torch.Generator().manual_seed(5))
    score = lambda x, t: S.marginal_sde_drift(field, 1.0)(x, t) - field(x, t)  # noqa: E731  (= sigma grad log p)
    wrong_drift = lambda x, t: field(x, t) - eta * score(x, t)  # noqa: E731
    bad = S.euler_maruyama(wrong_drift, S.noise_level_diffusion(eta), x0, steps=200,
                           generator=torch.Generator().manual_seed(5))
    cov = gauss.covs[0]
    assert torch.allclose(torch.cov(good.T), cov, atol=0.02)
    assert (torch.cov(bad.T) - cov).abs().max() > 0.2


def test_score_from_the_velocity_equals_the_closed_form_score_drift():
    gmm = gmm_2d("8modes")
    x = torch.randn(64, 2, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64) * 0.95
    field = lambda x, t: gmm.velocity(x, t, "cosine")  # noqa: E731
    score = lambda x, t: gmm.score(x, t, "cosine")  # noqa: E731
    converted = S.marginal_sde_drift(field, 1.3, "cosine")(x, t)
    explicit = S.marginal_sde_drift(field, 1.3, "cosine", score=score)(x, t)
    assert torch.allclose(converted, explicit, atol=1e-9)
    assert not torch.allclose(converted, field(x, t), atol=1e-3)


def test_noise_level_zero_is_the_euler_ode_solve():
    gmm = gmm_2d("two_modes")
    x0 = torch.randn(128, 2, dtype=torch.float64)
    field = lambda x, t: gmm.velocity(x, t)  # noqa: E731
    assert torch.equal(S.sample_sde(field, x0, steps=16, eta=0.0), S.solve(field, x0, steps=16))
    g = S.noise_level_diffusion(1.5)
    assert torch.allclose(g(torch.tensor([0.0, 0.75, 1.0])), torch.tensor([3.0, 0.75, 0.0]).sqrt())


def test_ddim_is_euler_on_the_linear_path_and_euler_in_y_rho_on_the_cosine_path():
    gmm = gmm_2d("asymmetric")
    x = 2 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((64,), 0.3, dtype=torch.float64)
    lin = lambda x, t: gmm.velocity(x, t)  # noqa: E731
    assert torch.allclose(S.ddim_step(lin, x, t, 0.55), S.Euler.step(lin, x, t, 0.25), atol=1e-12)
    cos = lambda x, t: gmm.velocity(x, t, "cosine")  # noqa: E731
    ddim = S.ddim_step(cos, x, t, 0.55, "cosine")
    assert (ddim - S.Euler.step(cos, x, t, 0.25)).abs().max() > 1e-2  # not Euler in t ...
    sched = get_schedule("cosine")
    (a, s, _, _), (a2, s2, _, _) = sched(torch.tensor(0.3)), sched(torch.tensor(0.55))
    from fmlab.paths import eps_from_velocity
    eps = eps_from_velocity(cos(x, t), x, t, "cosine")
    y_next = x / a + (s2 / a2 - s / a) * eps  # ... but Euler in y = x / a, rho = s / a: dy / drho = eps_hat
    assert torch.allclose(ddim, a2 * y_next, atol=1e-12)


def test_ddim_converges_to_the_ode_solution():
    gmm = gmm_2d("two_modes")
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    field = lambda x, t: gmm.velocity(x, t, "cosine")  # noqa: E731
    ref = S.solve_adaptive(field, x0, 0.0, 0.95, rtol=1e-10, atol=1e-10)
    errors = []
    for n in (20, 40, 80):
        x, grid = x0, torch.linspace(0, 0.95, n + 1, dtype=torch.float64)
        for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
            x = S.ddim_step(field, x, t0.expand(32), t1, "cosine")
        errors.append((x - ref).norm(dim=1).max().item())
    assert 0.8 < -_slope((20, 40, 80), errors) < 1.3, errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=4, t_start=1.0, t_end=0.0), "forward in time"),
    (dict(steps=4, noise=torch.zeros(3, 5, 2)), "noise must have shape"),
    (dict(), "exactly one of steps"),
])
def test_euler_maruyama_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.euler_maruyama(_ou_drift, lambda t: t, torch.zeros(5, 2), **kwargs)


def test_noise_level_must_be_non_negative():
    with pytest.raises(ValueError, match="eta"):
        S.noise_level_diffusion(-1.0)
    with pytest.raises(ValueError, match="eta"):
        S.sample_sde(lambda x, t: x, torch.zeros(2, 2), steps=2, eta=float("nan"))
