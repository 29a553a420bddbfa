"""Flow-map infrastructure: two-time batches, JVP helpers, samplers, teachers, the affine / exact models and
the verification harness itself (tests/flowmap_harness.py)."""

from __future__ import annotations

import pytest
import torch
from flowmap_harness import (
    F64,
    consistency_defects,
    exact_model,
    flow_map_error,
    fm_floor,
    gaussian_target,
    mixture_reference,
    stationarity,
    train_affine,
    velocity_error,
)

from fmlab.flowmaps import (
    GaussianMixtureTeacher,
    VelocityTeacher,
    as_teacher,
    diagonal_field,
    flow_map,
    flow_map_fd,
    flow_map_jvp,
    flow_map_X_jvp,
    partial_s,
    partial_t,
    sample_consistency,
    sample_flow_map,
)
from fmlab.losses.batch import two_time_batch
from fmlab.losses.flow_matching import per_sample_mse
from fmlab.losses.registry import EULERIAN, LossSpec
from fmlab.models import AffineFlowMapModel, ExactFlowMapModel, build_model
from fmlab.solvers import solve


def _points(n: int = 64, seed: int = 0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=dtype)
    s = 0.6 * torch.rand(n, generator=g, dtype=dtype)
    t = s + (1 - s) * torch.rand(n, generator=g, dtype=dtype)
    return x, s, t


# --- two_time_batch ------------------------------------------------------------------------------------------

def test_two_time_batch_orders_times_and_sets_exact_diagonal_fraction():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(4000, 2), torch.randn(4000, 2)
    b = two_time_batch(x0, x1, g, diagonal_fraction=0.25, extra_noise=True)
    assert bool((b.s <= b.r).all()) and bool((b.r <= b.t).all())
    assert int((b.s == b.t).sum()) == 1000  # exactly round(0.25 * 4000)
    off = b.s != b.t
    # uniform on the triangle s <= t: E[s] = 1/3, E[t] = 2/3
    assert abs(b.s[off].mean().item() - 1 / 3) < 0.02 and abs(b.t.mean().item() - 2 / 3) < 0.02
    assert b.z is not None and b.z.shape == x1.shape
    none = two_time_batch(x0, x1, torch.Generator().manual_seed(0), diagonal_fraction=0.0)
    assert int((none.s == none.t).sum()) == 0 and none.z is None
    again = two_time_batch(x0, x1, torch.Generator().manual_seed(0), diagonal_fraction=0.25, extra_noise=True)
    assert torch.equal(again.s, b.s) and torch.equal(again.r, b.r)


def test_two_time_batch_rejects_bad_settings():
    x = torch.randn(8, 2)
    with pytest.raises(ValueError, match="diagonal_fraction"):
        two_time_batch(x, x, diagonal_fraction=1.5)
    with pytest.raises(ValueError, match="time_sampler"):
        two_time_batch(x, x, time_sampler="beta")


def test_two_time_batch_logit_normal_concentrates_times():
    x = torch.randn(4000, 2)
    b = two_time_batch(x, x, torch.Generator().manual_seed(1), time_sampler="logit_normal", mu=0.0, sigma=0.3)
    assert b.s.min() > 0.05 and b.t.max() < 0.95


# --- exact and affine models ---------------------------------------------------------------------------------

def test_exact_model_matches_closed_form_flow_map_and_velocity():
    target = gaussian_target()
    model = exact_model(target)
    x, s, t = _points()
    assert torch.allclose(flow_map(model, x, s, t), target.flow_map_exact(x, s, t), atol=1e-12)
    assert torch.allclose(model(x, t), target.velocity(x, t), atol=1e-12)  # diagonal = velocity
    a, b = target.velocity_affine(0.4)
    tt = torch.full((len(x),), 0.4, dtype=F64)
    assert torch.allclose(model(x, tt, tt), x @ a.to(F64).T + b.to(F64), atol=1e-6)
    # smooth across s = t: u(x, s, s + e) -> v(x, s)
    assert torch.allclose(model(x, s, s + 1e-7), model(x, s, s), atol=1e-5)


def test_exact_model_perturbation_changes_the_map_and_resets():
    model = exact_model()
    x, s, t = _points()
    u0 = model(x, s, t)
    model.perturb(0.3, torch.Generator().manual_seed(0))
    assert (model(x, s, t) - u0).abs().max() > 1e-2
    model.perturb(0.0)
    assert torch.allclose(model(x, s, t), u0)
    with pytest.raises(ValueError, match="perturbation_degree"):
        ExactFlowMapModel(gaussian_target(), perturbation_degree=-1)


def test_affine_model_starts_at_zero_and_is_affine_in_x():
    model = AffineFlowMapModel(2).double()
    x, s, t = _points()
    assert torch.equal(model(x, s, t), torch.zeros_like(x))
    torch.nn.init.normal_(model.backbone.net[-1].weight)
    y = torch.randn_like(x)
    u = lambda z: model(z, s, t)  # noqa: E731
    assert torch.allclose(u(2 * x - y) - 2 * u(x) + u(y), torch.zeros_like(x), atol=1e-10)  # affine in x


# --- JVP helpers ---------------------------------------------------------------------------------------------

def test_flow_map_jvp_matches_finite_differences_and_backpropagates():
    torch.manual_seed(0)
    model = build_model(2, prediction="average_velocity", time_inputs=2, hidden=32, depth=2).double()
    x, s, t = _points(16)
    dx, ds, dt = torch.randn_like(x), torch.rand_like(s), torch.rand_like(t)
    u, du = flow_map_jvp(model, x, s, t, dx, ds, dt)
    # central differences err ~ h^2 |d^3 u| / 6; the time embedding has frequencies up to 200, so h = 1e-6
    _, du_fd = flow_map_fd(model, x, s, t, dx, ds, dt, h=1e-6)
    assert torch.allclose(u, model(x, s, t))
    assert torch.allclose(du, du_fd, atol=1e-5, rtol=1e-5)
    _, du_fwd = flow_map_fd(model, x, s, t, dx, ds, dt, h=1e-5, central=False)
    assert (du_fwd - du).abs().max() < 2e-2 and (du_fwd - du).abs().max() > (du_fd - du).abs().max()
    du.pow(2).sum().backward()  # LMD differentiates through the JVP
    assert model.backbone.net[0].weight.grad is not None and model.backbone.net[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="h must be"):
        flow_map_fd(model, x, s, t, h=0.0)


def test_exact_map_satisfies_lagrangian_eulerian_and_compositional_rules_via_jvp():
    model = exact_model()
    x, s, t = _points()
    # Lagrangian: d/dt X(x, s, t) = v(X(x, s, t), t)
    X, dX = flow_map_X_jvp(model, x, s, t, dt=torch.ones_like(t))
    assert torch.allclose(dX, model(X, t), atol=1e-10)
    # Eulerian: d/ds X + (dX/dx) v(x, s) = 0, one JVP with tangent (v(x, s), 1, 0)
    _, dX_e = flow_map_X_jvp(model, x, s, t, dx=model(x, s), ds=torch.ones_like(s))
    assert dX_e.abs().max() < 1e-10
    # compositional: X(X(x, s, r), r, t) = X(x, s, t)
    r = 0.5 * (s + t)
    assert torch.allclose(flow_map(model, flow_map(model, x, s, r), r, t), X, atol=1e-12)
    # partial_t / partial_s are the same JVPs on u
    _, du_t = partial_t(model, x, s, t)
    _, du_ref = flow_map_jvp(model, x, s, t, dt=torch.ones_like(t))
    assert torch.allclose(du_t, du_ref)
    _, du_s = partial_s(model, x, s, t, v=model(x, s))
    # Eulerian on u: (t - s) (d/ds u + du/dx v) = u - v(x, s)
    assert torch.allclose((t - s)[:, None] * du_s, model(x, s, t) - model(x, s), atol=1e-10)


def test_a_wrong_map_violates_the_jvp_rules():
    model = exact_model()
    model.perturb(0.2, torch.Generator().manual_seed(3))
    x, s, t = _points()
    X, dX = flow_map_X_jvp(model, x, s, t, dt=torch.ones_like(t))
    assert (dX - model(X, t)).abs().max() > 1e-2


# --- samplers ------------------------------------------------------------------------------------------------

def test_sample_flow_map_with_exact_model_is_exact_for_any_number_of_jumps():
    target = gaussian_target()
    model = exact_model(target)
    x0 = torch.randn(256, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = target.flow_map_exact(x0, 0.0, 1.0)
    for steps in (1, 2, 5):
        assert torch.allclose(sample_flow_map(model, x0, steps=steps), ref, atol=1e-10)
    traj = sample_flow_map(model, x0, grid=[0.0, 0.1, 0.7, 1.0], return_trajectory=True)
    assert traj.nfe == 3 and traj.xs.shape == (4, 256, 2)
    assert torch.allclose(traj.xs[2], target.flow_map_exact(x0, 0.0, 0.7), atol=1e-10)
    with pytest.raises(ValueError, match="exactly one"):
        sample_flow_map(model, x0)


def test_diagonal_used_as_velocity_field_converges_to_the_flow_map():
    target = gaussian_target()
    model = exact_model(target)
    x0 = torch.randn(256, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = target.flow_map_exact(x0, 0.0, 1.0)
    err = [(solve(model, x0, steps=n, method="rk4") - ref).abs().max().item() for n in (4, 8)]
    assert err[1] < 1e-4 and err[0] / err[1] > 8  # 4th order
    assert torch.allclose(solve(diagonal_field(model), x0, steps=8, method="rk4"), solve(model, x0, steps=8,
                                                                                        method="rk4"))


def test_sample_consistency_with_exact_model_samples_the_target():
    target = gaussian_target()
    model = exact_model(target)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, 2, dtype=F64, generator=g)
    one = sample_consistency(model, x0, grid=[0.0, 1.0])
    assert torch.allclose(one, target.flow_map_exact(x0, 0.0, 1.0), atol=1e-10)  # one step: deterministic jump
    traj = sample_consistency(model, x0, steps=4, generator=g, return_trajectory=True)
    x = traj.x
    assert traj.nfe == 4 and traj.xs.shape[0] == 5
    assert (x.mean(0) - target.means[0]).abs().max() < 0.03
    assert (torch.cov(x.T) - target.covs[0]).abs().max() < 0.05
    assert not torch.allclose(x, one)  # re-noising forgets the initial noise
    with pytest.raises(ValueError, match="end at t = 1"):
        sample_consistency(model, x0, grid=[0.0, 0.5])


# --- teachers ------------------------------------------------------------------------------------------------

def test_teachers_wrap_closed_form_and_trained_models_without_gradients():
    target = gaussian_target()
    x, _, t = _points(dtype=torch.float32)
    teacher = as_teacher(target)
    assert isinstance(teacher, GaussianMixtureTeacher)
    assert torch.allclose(teacher(x, t), target.velocity(x, t))
    assert torch.allclose(teacher.flow_map(x[:4].double(), 0.2, 0.6), target.flow_map_exact(x[:4].double(), 0.2, 0.6),
                          atol=1e-7)
    fm = build_model(2, hidden=16, depth=2)
    v = as_teacher(fm)(x, t)
    assert not v.requires_grad and torch.allclose(v, fm(x, t))
    two = build_model(2, prediction="average_velocity", time_inputs=2, hidden=16, depth=2)
    assert torch.allclose(as_teacher(two)(x, t), two(x, t, t))
    assert isinstance(as_teacher(lambda y, r: y), VelocityTeacher)
    with pytest.raises(ValueError, match="teacher"):
        as_teacher(None)


# --- the harness itself ----------------------------------------------------------------------------------------

def _diagonal_fm(model, batch, scale: float = 1.0, **_):
    """Test-only loss: flow matching on the diagonal, u(x_t, t, t) -> scale (x1 - x0)."""
    x_t = (1 - batch.t)[:, None] * batch.x0 + batch.t[:, None] * batch.x1
    err = per_sample_mse(model(x_t, batch.t, batch.t), scale * (batch.x1 - batch.x0))
    return err.mean(), {"fm": err.mean().detach(), "n_forward": 1, "n_jvp": 0, "n_backward": 1}


def _exact_target_fm(model, batch, **_):
    """Test-only loss: regress u(x_s, s, t) on the exact average velocity (an oracle flow-map matching)."""
    target = gaussian_target()
    x_s = (1 - batch.s)[:, None] * batch.x0 + batch.s[:, None] * batch.x1
    u_star = exact_model(target)(x_s.double(), batch.s.double(), batch.t.double()).detach().to(x_s.dtype)
    err = per_sample_mse(model(x_s, batch.s, batch.t), u_star)
    return err.mean(), {"n_forward": 1, "n_jvp": 0, "n_backward": 1}


_SPEC = dict(family=EULERIAN, setting="test", paper="-", convention="ours", time_inputs=2,
             make_batch=two_time_batch, defaults={"diagonal_fraction": 1.0, "scale": 1.0})


def test_harness_floor_and_stationarity_detect_a_biased_target():
    spec = LossSpec(name="diag_fm", fn=_diagonal_fm, **_SPEC)
    from flowmap_harness import draw_batch, loss_settings

    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 20000, seed=0)
    _, diag = spec.fn(exact_model(), batch)
    floor = fm_floor(batch, batch.t)
    assert abs(diag["fm"].item() / floor - 1) < 0.05
    good = stationarity(spec)
    bad = stationarity(spec, scale=1.1)  # a 10% wrong target moves the fixed point
    assert good.ratio < 0.05 and bad.ratio > 5 * good.ratio, (good, bad)


def test_harness_training_and_error_measure_the_distance_to_the_exact_map():
    spec = LossSpec(name="oracle_fmm", fn=_exact_target_fm,
                    **{**_SPEC, "defaults": {"diagonal_fraction": 0.25}})
    untrained = AffineFlowMapModel(2)
    assert flow_map_error(untrained) > 0.9  # u = 0: X = x
    model = train_affine(spec, steps=300)
    assert flow_map_error(model) < 0.08 and velocity_error(model) < 0.1


def test_harness_consistency_identities_hold_for_the_mixture_reference_map():
    X, v, X_times = mixture_reference()
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    defects = consistency_defects(X, v, x, s=0.3, r=0.5, t=0.7, X_times=X_times)
    assert max(defects.values()) < 1e-4, defects
    # a one-step Euler map X = x + (t - s) v(x, s) breaks all three
    euler = lambda y, s, t: y + (t - s) * v(y, s)  # noqa: E731
    wrong = consistency_defects(euler, v, x, s=0.3, r=0.5, t=0.7)
    assert min(wrong.values()) > 1e-2, wrong
    with pytest.raises(ValueError, match="need 2h"):
        consistency_defects(X, v, x, s=0.0, r=0.5, t=0.9)
