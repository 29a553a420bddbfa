"""fmlab.paths score conversions: every head converts to the closed-form score grad log p_t of a Gaussian mixture."""

import math

import pytest
import torch

from fmlab import paths as P
from fmlab.data import gmm_2d

pytestmark = pytest.mark.usefixtures("float64")

SCHEDULES = ["linear", "cosine", "vp"]


def _points(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return x, t


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_head_converts_to_the_closed_form_score(schedule):
    gmm = gmm_2d("asymmetric")
    x, t = _points()
    score = gmm.score(x, t, schedule)
    v = gmm.velocity(x, t, schedule)
    x1 = gmm.denoiser(x, t, schedule)
    x0 = P.eps_from_velocity(v, x, t, schedule)
    assert torch.allclose(P.score_from_velocity(v, x, t, schedule), score, atol=1e-9, rtol=1e-9)
    assert torch.allclose(P.score_from_x1(x1, x, t, schedule), score, atol=1e-9, rtol=1e-9)
    assert torch.allclose(P.score_from_eps(x0, x, t, schedule), score, atol=1e-9, rtol=1e-9)
    for head, pred in (("velocity", v), ("x1", x1), ("eps", x0)):
        assert torch.allclose(P.score_from_prediction(pred, x, t, head, schedule), score, atol=1e-9, rtol=1e-9)
        assert torch.allclose(P.prediction_from_score(score, x, t, head, schedule), pred, atol=1e-8, rtol=1e-8)
    assert torch.allclose(P.velocity_from_score(score, x, t, schedule), v, atol=1e-8, rtol=1e-8)
    assert torch.allclose(P.x1_from_score(score, x, t, schedule), x1, atol=1e-8, rtol=1e-8)  # Tweedie
    assert torch.allclose(P.eps_from_score(score, x, t, schedule), x0, atol=1e-9)


def test_linear_score_from_velocity_is_the_textbook_formula():
    x, t = _points()
    v = torch.randn_like(x)
    want = (t[:, None] * v - x) / (1 - t[:, None])  # s = (t v - x) / (1 - t)
    assert torch.allclose(P.score_from_velocity(v, x, t), want, atol=1e-12)
    assert torch.allclose(P.velocity_from_score(want, x, t), v, atol=1e-9)


def test_score_is_the_gradient_of_the_log_density():
    """The conversions agree with autograd of the closed-form marginal log-density (not only with gmm.score)."""
    gmm = gmm_2d("8modes")
    x, t = _points(16, seed=3)
    x = x.requires_grad_(True)
    logp = gmm.marginal_log_prob(x, t, "cosine").sum()
    (grad,) = torch.autograd.grad(logp, x)
    v = gmm.velocity(x.detach(), t, "cosine")
    assert torch.allclose(P.score_from_velocity(v, x.detach(), t, "cosine"), grad, atol=1e-8)


def test_score_at_t0_is_the_noise_score():
    x = torch.randn(8, 2, dtype=torch.float64)
    t = torch.zeros(8, dtype=torch.float64)
    v = gmm_2d("two_modes").velocity(x, t)
    assert torch.allclose(P.score_from_velocity(v, x, t), -x)  # p_0 = N(0, I): grad log p = -x


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_log_snr_and_its_derivative(schedule):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    a, s, _, _ = P.get_schedule(schedule)(t)
    assert torch.allclose(P.log_snr(t, schedule), torch.log(a**2 / s**2))
    h = 1e-6
    fd = (P.log_snr(t + h, schedule) - P.log_snr(t - h, schedule)) / (2 * h)
    assert torch.allclose(P.d_log_snr(t, schedule), fd, rtol=1e-5)
    assert bool((P.d_log_snr(t, schedule) > 0).all())  # increasing from noise to data
    if schedule == "linear":
        assert torch.allclose(P.log_snr(t), 2 * torch.log(t / (1 - t)))
        assert P.log_snr(torch.tensor(0.5, dtype=torch.float64)).item() == 0.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_x1_error_gain_matches_a_perturbed_conversion(schedule):
    x, t = _points(32, seed=1)
    x1 = torch.randn_like(x)
    d = 1e-3 * torch.randn_like(x)
    for head in P.PREDICTIONS:
        moved = P.convert_prediction(x1 + d, x, t, "x1", head, schedule) - P.convert_prediction(x1, x, t, "x1", head,
                                                                                                schedule)
        gain = P.x1_error_gain(t, head, schedule)[:, None]
        assert torch.allclose(moved, gain * d, atol=1e-10, rtol=1e-6), head
    lin = P.x1_error_gain(torch.tensor([0.75]), "velocity")
    assert math.isclose(lin.item(), 4.0)  # 1 / (1 - t)


def test_bad_head_names_are_errors():
    x, t = _points(4)
    with pytest.raises(ValueError, match="source must be one of"):
        P.score_from_prediction(x, x, t, "score")
    with pytest.raises(ValueError, match="target must be one of"):
        P.prediction_from_score(x, x, t, "noise")
    with pytest.raises(ValueError, match="prediction must be one of"):
        P.x1_error_gain(t, "v")
