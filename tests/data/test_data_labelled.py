"""Labelled mixtures: class-conditional velocities against Monte Carlo, Bayes identities, the guided field and its
score form, exact tilted sampling against quadrature, and what the exact guided ODE samples (fmlab.data.labelled)."""

import math

import pytest
import torch

from fmlab.data import gmm_2d
from fmlab.data.labelled import LabelledMixture, class_data, labelled_2d, labelled_data
from fmlab.metrics import wasserstein

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def halves():
    return labelled_2d("8modes_halves")


def _mode(x: torch.Tensor) -> torch.Tensor:
    """The nearest of the 8 modes (by angle) of each point."""
    angle = torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    return torch.round(angle / (2 * math.pi / 8)).long() % 8


def test_classes_are_reweighted_sub_mixtures(halves):
    assert halves.n_classes == 2 and halves.null_label == 2
    assert torch.allclose(halves.class_prior, torch.tensor([0.5, 0.5], dtype=F64))
    g0 = halves.class_mixture(0)
    assert torch.allclose(g0.means, gmm_2d("8modes").means[:4].double())
    assert torch.allclose(g0.weights, torch.full((4,), 0.25, dtype=F64))
    x, y = halves.sample(4000, _gen(0))
    assert (y == (_mode(x.double()) >= 4).long()).double().mean() > 0.99  # the label is the component's class
    x, y = labelled_2d("8modes").sample(4000, _gen(1))
    assert (y == _mode(x.double())).double().mean() > 0.99


def test_class_posterior_is_bayes(halves):
    x = torch.randn(50, 2, generator=_gen(2), dtype=F64) * 2
    for t in (0.2, 0.7, 1.0):
        post = halves.class_posterior(x, t)
        logs = torch.stack([halves.class_mixture(c).marginal_log_prob(x, t) for c in range(2)], 1)
        bayes = torch.softmax(logs + halves.class_prior.log(), dim=1)  # P(c) p_t(x | c) / p_t(x)
        assert torch.allclose(post, bayes, atol=1e-12)


@pytest.mark.parametrize("t", [0.3, 0.6])
def test_conditional_velocity_matches_monte_carlo(halves, t):
    """E[x1 - x0 | x_t = x, c] by self-normalised importance weights of x1 ~ p(x1 | c), since
    x_t | x1 ~ N(t x1, (1-t)^2 I)."""
    c = 0
    x1 = halves.sample_class(400_000, c, _gen(3)).double()
    noise = torch.randn(6, 2, generator=_gen(5), dtype=F64)
    queries = halves.sample_class(6, c, _gen(4)).double() * t + (1 - t) * noise
    exact = halves.velocity(queries, t, c)
    for q, v in zip(queries, exact, strict=True):
        logw = -((q - t * x1) ** 2).sum(1) / (2 * (1 - t) ** 2)
        w = torch.softmax(logw, 0)
        target = x1 - (q - t * x1) / (1 - t)  # x1 - x0 with x0 = (x_t - t x1) / (1 - t)
        mc = (w[:, None] * target).sum(0)
        ess = 1 / (w**2).sum()  # effective sample size of the weights
        spread = (w[:, None] * (target - mc) ** 2).sum(0).sqrt()  # posterior std of x1 - x0 given x_t
        assert ess > 1000
        assert torch.all((mc - v).abs() < 4 * spread / ess.sqrt() + 1e-9), (mc, v, ess)


def test_unconditional_is_the_posterior_mix_and_null_label_means_no_label(halves):
    x = torch.randn(40, 2, generator=_gen(6), dtype=F64) * 2
    t = torch.rand(40, generator=_gen(7), dtype=F64)
    v = halves.mixture.velocity(x, t)
    post = halves.class_posterior(x, t)
    mix = sum(post[:, c:c + 1] * halves.velocity(x, t, c) for c in range(2))  # sum_c P(c | x) v(x, t | c)
    assert torch.allclose(mix, v, atol=1e-10)
    assert torch.allclose(halves.velocity(x, t), v, atol=1e-12)
    assert torch.allclose(halves.velocity(x, t, 2), v, atol=1e-12)
    y = torch.tensor([0, 1, 2, 1] * 10)
    per_row = halves.velocity(x, t, y)
    for c in range(3):
        ref = v if c == 2 else halves.class_mixture(c).velocity(x, t)
        assert torch.allclose(per_row[y == c], ref[y == c], atol=1e-12)


def test_guided_field_endpoints_linearity_and_score_form(halves):
    x = torch.randn(30, 2, generator=_gen(8), dtype=F64) * 2
    t, c = 0.55, 0
    v_u, v_c = halves.velocity(x, t), halves.velocity(x, t, c)
    assert torch.allclose(halves.guided_velocity(x, t, c, 0.0), v_u, atol=1e-12)
    assert torch.allclose(halves.guided_velocity(x, t, c, 1.0), v_c, atol=1e-12)
    assert torch.allclose(halves.guided_velocity(x, t, c, 3.0), v_u + 3 * (v_c - v_u), atol=1e-12)
    w = torch.linspace(0, 8, 30, dtype=F64)
    assert torch.allclose(halves.guided_velocity(x, t, c, w), v_u + w[:, None] * (v_c - v_u), atol=1e-12)
    # v = (x + (1 - t) score) / t on the linear path, so guidance on velocities is guidance on scores
    s_u, s_c = halves.score(x, t), halves.score(x, t, c)
    assert torch.allclose(v_c, (x + (1 - t) * s_c) / t, atol=1e-10)
    assert torch.allclose(halves.guided_velocity(x, t, c, 3.0), (x + (1 - t) * (s_u + 3 * (s_c - s_u))) / t, atol=1e-10)
    # the score of the tilted density is (1 - w) s_u + w s_c (autograd of tilted_log_prob)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(halves.tilted_log_prob(xr, c, 3.0, t=t).sum(), xr)
    assert torch.allclose(grad, s_u + 3 * (s_c - s_u), atol=1e-9)


def test_velocity_is_differentiable_in_x(halves):
    x = torch.randn(4, 2, generator=_gen(9), dtype=F64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda z: halves.guided_velocity(z, 0.6, y, 2.5), (x,))
    assert torch.autograd.gradcheck(lambda z: halves.score(z, 0.6, y), (x,))


@pytest.mark.parametrize("w", [0.5, 1.0, 3.0])
def test_tilted_sampler_matches_quadrature(halves, w):
    """Rejection samples of p(x | c)^w p(x)^(1 - w) against the density integrated on a fine grid."""
    n = 40_000
    x = halves.sample_tilted(n, 0, w, _gen(10)).double()
    axis = torch.linspace(-5.5, 5.5, 441, dtype=F64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    dens = halves.tilted_log_prob(pts, 0, w).exp()
    dens = dens / dens.sum()
    mean_q = (dens[:, None] * pts).sum(0)
    mode_q = torch.zeros(8, dtype=F64).index_add_(0, _mode(pts), dens)
    se = x.std(0) / math.sqrt(n)
    assert torch.all((x.mean(0) - mean_q).abs() < 4 * se + 1e-3), (x.mean(0), mean_q)
    mode_mc = torch.bincount(_mode(x), minlength=8).double() / n
    assert torch.all((mode_mc - mode_q).abs() < 4 * torch.sqrt(mode_q * (1 - mode_q) / n) + 1e-3), (mode_mc, mode_q)
    if w == 1.0:  # the tilt at w = 1 is the class itself
        assert torch.allclose(mode_q[:4], torch.full((4,), 0.25, dtype=F64), atol=1e-3)


def test_guided_flow_is_converged_and_samples_the_class_at_w_1(halves):
    x0 = torch.randn(100, 2, generator=_gen(11), dtype=F64).repeat(2, 1)
    w = torch.tensor([1.0, 8.0], dtype=F64).repeat_interleave(100)
    fine = halves.guided_flow(x0, 0, w, steps=200)
    assert (halves.guided_flow(x0, 0, w, steps=50) - fine).abs().max() < 1e-4  # the labs' 50 RK4 steps
    n = 1000
    x0 = torch.randn(n, 2, generator=_gen(12), dtype=F64)
    floor = wasserstein(halves.sample_class(n, 0, _gen(13)), halves.sample_class(n, 0, _gen(14)))
    at_1 = halves.guided_flow(x0, 0, 1.0, steps=50)
    assert wasserstein(at_1, halves.sample_class(n, 0, _gen(15))) < 1.5 * floor
    at_0 = halves.guided_flow(x0, 0, 0.0, steps=50)
    assert wasserstein(at_0, halves.mixture.sample(n, generator=_gen(16))) < 1.5 * floor


def test_guidance_does_not_sample_the_tilted_density(halves):
    """At w = 4 the exact guided ODE drops the border modes 0 and 3 of class 0; the tilted density keeps them."""
    n = 1000
    x0 = torch.randn(n, 2, generator=_gen(17), dtype=F64)
    guided = halves.guided_flow(x0, 0, 4.0, steps=50)
    tilted = halves.sample_tilted(n, 0, 4.0, _gen(18)).double()
    floor = wasserstein(halves.sample_class(n, 0, _gen(19)), halves.sample_class(n, 0, _gen(20)))
    assert wasserstein(guided, tilted) > 3 * floor
    border = lambda x: torch.isin(_mode(x), torch.tensor([0, 3])).double().mean().item()  # noqa: E731
    assert border(guided) < 0.2 and border(tilted) > 0.4


def test_labelled_data_and_class_data():
    fn, c = labelled_data("8modes_halves")
    x, y = fn(64, _gen(0))
    assert c == 2 and x.dtype == torch.float32 and x.shape == (64, 2) and y.dtype == torch.long
    fn, c = labelled_data("moons")
    assert c == 2 and fn(10, _gen(0))[1].shape == (10,)
    x = class_data("8gaussians", 50, 3, _gen(1))
    assert x.shape == (50, 2) and torch.all(_mode(x.double()) == 3)
    with pytest.raises(ValueError, match="labelled set"):
        labelled_data("checkerboard")
    with pytest.raises(ValueError, match="class must be"):
        class_data("moons", 5, 2)


@pytest.mark.parametrize("call, match", [
    (lambda L: L.velocity(torch.zeros(3, 2), 0.5, torch.tensor([0, 3, 1])), "labels y must lie"),
    (lambda L: L.velocity(torch.zeros(3, 2), 0.5, torch.tensor([0.0, 1.0, 1.0])), "integers"),
    (lambda L: L.velocity(torch.zeros(3, 2), 0.5, torch.tensor([0, 1])), r"shape \[B\]"),
    (lambda L: L.guided_velocity(torch.zeros(3, 2), 0.5, 0, torch.ones(2)), "w must be"),
    (lambda L: L.sample_tilted(10, 0, -1.0), "guidance scale w"),
    (lambda L: L.class_mixture(2), "class must be"),
    (lambda L: LabelledMixture(gmm_2d("two_modes"), [0, 2]), "every class"),
    (lambda L: LabelledMixture(gmm_2d("two_modes"), [0, 1], ["a"]), "class_names"),
    (lambda L: labelled_2d("nope"), "name must be one of"),
])
def test_bad_input(halves, call, match):
    with pytest.raises(ValueError, match=match):
        call(halves)
