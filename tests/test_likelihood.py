"""fmlab.likelihood: the ODE log-likelihood equals the closed-form density of a Gaussian (exact trace within 1e-3,
Hutchinson within its standard error) and of a Gaussian mixture; divergences against finite differences."""

import math

import pytest
import torch

from fmlab import likelihood as L
from fmlab.data import Gaussian, gmm_2d

GAUSS = Gaussian(torch.tensor([1.0, -0.5], dtype=torch.float64),
                 cov=torch.tensor([[0.30, 0.12], [0.12, 0.20]], dtype=torch.float64))


def _field(gmm, schedule="linear"):
    return lambda x, t: gmm.velocity(x, t, schedule)


def _points(n, seed=0):
    return GAUSS.sample(n, generator=torch.Generator().manual_seed(seed))


def test_exact_trace_matches_the_gaussian_density_within_1e3():
    x = _points(32)
    out = L.log_likelihood(_field(GAUSS), x, steps=100, method="rk4")
    assert (out.log_prob - GAUSS.log_prob(x)).abs().max() < 1e-3
    assert torch.equal(out.std_error, torch.zeros(32, dtype=torch.float64))
    assert out.nfe == 400
    # x0 is where the flow came from: pushing it forward lands on x
    assert torch.allclose(GAUSS.flow_map_exact(out.x0, 0.0, 1.0), x, atol=1e-6)


def test_adaptive_solver_is_a_tighter_reference_and_other_schedules_work():
    x = _points(16, seed=1)
    out = L.log_likelihood(_field(GAUSS, "cosine"), x, method="adaptive", rtol=1e-9, atol=1e-9)
    assert (out.log_prob - GAUSS.log_prob(x)).abs().max() < 1e-6


def test_the_integral_matters_a_coarse_euler_solve_is_off():
    x = _points(32, seed=2)
    coarse = L.log_likelihood(_field(GAUSS), x, steps=4, method="euler")
    assert (coarse.log_prob - GAUSS.log_prob(x)).abs().max() > 1e-2  # the test above can fail


def test_hutchinson_is_within_its_standard_error():
    """z-scores (estimate - truth) / SE over 200 points: none beyond 4.5, mean square near 1."""
    x = _points(200, seed=3)
    out = L.log_likelihood(_field(GAUSS), x, steps=50, estimator="hutchinson", probes=16,
                           generator=torch.Generator().manual_seed(0))
    truth = L.log_likelihood(_field(GAUSS), x, steps=50).log_prob  # same discretisation: isolates the estimator
    z = (out.log_prob - truth) / out.std_error
    assert bool((out.std_error > 1e-3).all())  # a real spread: the Jacobian has off-diagonal entries
    assert z.abs().max() < 4.5
    assert 0.6 < z.pow(2).mean().item() < 1.5, z.pow(2).mean()
    assert (out.log_prob - GAUSS.log_prob(x)).abs().max() < 4.5 * out.std_error.max() + 1e-3


def test_one_probe_has_no_standard_error_and_gaussian_probes_work():
    x = _points(8, seed=4)
    one = L.log_likelihood(_field(GAUSS), x, steps=20, estimator="hutchinson", probes=1)
    assert bool(torch.isnan(one.std_error).all())
    gauss_probe = L.log_likelihood(_field(GAUSS), x, steps=20, estimator="hutchinson", probes=64, probe="gaussian",
                                   generator=torch.Generator().manual_seed(1))
    assert ((gauss_probe.log_prob - GAUSS.log_prob(x)).abs() < 5 * gauss_probe.std_error + 1e-3).all()


def test_mixture_log_likelihood_by_the_ode_is_the_closed_form_density():
    gmm = gmm_2d("8modes")
    x = gmm.sample(16, generator=torch.Generator().manual_seed(5)).double()
    out = L.log_likelihood(_field(gmm), x, steps=50, method="rk4")
    assert (out.log_prob - gmm.log_prob(x)).abs().max() < 1e-3


def test_a_callable_estimator_is_used_like_the_exact_one():
    x = _points(8, seed=6)
    exact = L.log_likelihood(_field(GAUSS), x, steps=20)
    mine = L.log_likelihood(_field(GAUSS), x, steps=20, estimator=L.divergence)
    assert torch.allclose(mine.log_prob, exact.log_prob, atol=1e-12)


def test_a_callable_estimator_may_use_autograd_without_enabling_it():
    """A student's divergence calls torch.autograd.grad directly; the backward solve runs under no_grad."""
    def plain_autograd_divergence(field, x, t):
        x = x.detach().requires_grad_(True)
        v = field(x, t)
        return sum(torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))

    x = _points(8, seed=6)
    exact = L.log_likelihood(_field(GAUSS), x, steps=20)
    mine = L.log_likelihood(_field(GAUSS), x, steps=20, estimator=plain_autograd_divergence)
    assert torch.allclose(mine.log_prob, exact.log_prob, atol=1e-12)


def test_divergence_matches_finite_differences_and_hutchinson_is_unbiased():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    field = lambda x, t: net(torch.cat([x, t[:, None]], 1))  # noqa: E731
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    h, fd = 1e-6, torch.zeros(5, dtype=torch.float64)
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = h
        fd += (field(x + e, t)[:, i] - field(x - e, t)[:, i]) / (2 * h)
    div = L.divergence(field, x, t)
    assert torch.allclose(div, fd, atol=1e-7)
    probes = 20_000
    xs, ts = x.repeat(probes, 1), t.repeat(probes)
    z = torch.randn(xs.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = L.hutchinson_divergence(field, xs, ts, z).reshape(probes, 5)
    assert ((est.mean(0) - div).abs() < 5 * est.std(0) / math.sqrt(probes)).all()


def test_bits_per_dim_and_normal_log_prob():
    assert L.bits_per_dim(-2 * math.log(2), 2) == pytest.approx(1.0)
    x = torch.zeros(3, 2)
    assert torch.allclose(L.standard_normal_log_prob(x), torch.full((3,), -math.log(2 * math.pi)))
    with pytest.raises(ValueError, match="dim"):
        L.bits_per_dim(1.0, 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimator="trace"), "estimator must be one of"),
    (dict(method="dopri"), "method must be one of"),
    (dict(probe="uniform"), "probe must be one of"),
    (dict(probes=0), "probes must be"),
])
def test_bad_arguments_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.log_likelihood(_field(GAUSS), _points(2), **kwargs)
