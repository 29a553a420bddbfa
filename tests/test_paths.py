import dataclasses
import math

import pytest
import torch

from fmlab import paths as P

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("name", ["linear", "cosine", "vp"])
def test_schedule_derivatives_match_finite_differences(name):
    sched = P.get_schedule(name)
    t = torch.linspace(0.05, 0.95, 19)
    h = 1e-6
    out = sched(t)
    assert torch.allclose((sched(t + h).alpha - sched(t - h).alpha) / (2 * h), out.d_alpha, atol=1e-6)
    assert torch.allclose((sched(t + h).sigma - sched(t - h).sigma) / (2 * h), out.d_sigma, atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine", "vp"])
def test_schedule_endpoints_noise_at_zero_data_at_one(name):
    a, s, _, _ = P.get_schedule(name)(torch.tensor([0.0, 1.0]))
    assert a[0] < 1e-2 and abs(s[0] - 1) < 1e-4  # noise at t = 0 (VP's alpha_0 = 6.6e-3 as in the papers)
    assert abs(a[1] - 1) < 1e-12 and abs(s[1]) < 1e-6  # data at t = 1


def test_variance_preserving_schedules():
    t = torch.rand(50)
    for name in ("cosine", "vp"):
        a, s, _, _ = P.get_schedule(name)(t)
        assert torch.allclose(a**2 + s**2, torch.ones_like(t))


def test_linear_path_sample():
    x0, x1, t = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8)
    ps = P.sample_path(x0, x1, t)
    assert torch.allclose(ps.x_t, (1 - t[:, None]) * x0 + t[:, None] * x1)
    assert torch.allclose(ps.dx_t, x1 - x0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ps.x_t = x0  # type: ignore[misc]


@pytest.mark.parametrize("name", ["linear", "cosine", "vp"])
def test_prediction_conversions_round_trip(name):
    x0, x1, t = torch.randn(16, 3), torch.randn(16, 3), torch.rand(16) * 0.9 + 0.05
    ps = P.sample_path(x0, x1, t, name)
    assert torch.allclose(P.x1_from_velocity(ps.dx_t, ps.x_t, t, name), x1, atol=1e-8)
    assert torch.allclose(P.eps_from_velocity(ps.dx_t, ps.x_t, t, name), x0, atol=1e-8)
    assert torch.allclose(P.velocity_from_x1(x1, ps.x_t, t, name), ps.dx_t, atol=1e-8)
    assert torch.allclose(P.velocity_from_eps(x0, ps.x_t, t, name), ps.dx_t, atol=1e-8)
    for src, value in (("velocity", ps.dx_t), ("x1", x1), ("eps", x0)):
        for dst, want in (("velocity", ps.dx_t), ("x1", x1), ("eps", x0)):
            assert torch.allclose(P.convert_prediction(value, ps.x_t, t, src, dst, name), want, atol=1e-7)


def test_linear_velocity_from_x1_is_textbook_formula():
    x_t, x1, t = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0.1, 0.3, 0.5, 0.9])
    assert torch.allclose(P.velocity_from_x1(x1, x_t, t), (x1 - x_t) / (1 - t[:, None]))


def test_time_samplers_ranges_and_moments():
    g = torch.Generator().manual_seed(0)
    u = P.sample_times(200_000, "uniform", g)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 5e-3
    ln = P.sample_times(200_000, "logit_normal", g, mu=0.5, sigma=1.0)
    assert abs(torch.logit(ln).mean() - 0.5) < 1e-2 and abs(torch.logit(ln).std() - 1.0) < 1e-2
    c = P.sample_times(200_000, "cosine", g)
    # P(t < 1 - cos(pi/4)) = 1/2 for t = 1 - cos(pi u / 2), u uniform
    assert abs((c < 1 - math.cos(math.pi / 4)).double().mean() - 0.5) < 5e-3


def test_time_samplers_are_seeded():
    a = P.sample_times(10, "logit_normal", torch.Generator().manual_seed(3))
    b = P.sample_times(10, "logit_normal", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_min_snr_weights():
    t = torch.tensor([0.2, 0.5, 0.9])
    w_x1 = P.loss_weight(t, "min_snr", gamma=5.0, prediction="x1")
    snr = (t / (1 - t)) ** 2
    assert torch.allclose(w_x1, torch.clamp(snr, max=5.0))
    # velocity error = x1 error / (1 - t) on the linear path: weight times (1-t)^-2 gives the x1 weighting back
    w_v = P.loss_weight(t, "min_snr", gamma=5.0, prediction="velocity")
    assert torch.allclose(w_v / (1 - t) ** 2, w_x1)
    assert torch.equal(P.loss_weight(t, "none"), torch.ones(3))


def test_check_time_accepts_the_closed_unit_interval_and_rejects_the_rest():
    P.check_time(torch.tensor([0.0, 0.5, 1.0]))
    P.check_time(torch.tensor([]))
    for bad, shown in (([0.5, 1.2], r"\[0.5, 1.2\]"), ([-0.1, 0.3], r"\[-0.1, 0.3\]"), ([float("nan"), 0.5], "nan")):
        with pytest.raises(ValueError, match="s must lie in.*" + shown):
            P.check_time(torch.tensor(bad), "s")


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="schedule"):
        P.get_schedule("quadratic")
    with pytest.raises(ValueError, match="t must lie in"):
        P.sample_path(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="same shape"):
        P.sample_path(torch.zeros(2, 2), torch.zeros(3, 2), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="time sampler"):
        P.sample_times(4, "beta")
    with pytest.raises(ValueError, match="weighting"):
        P.loss_weight(torch.rand(2), "p2")
