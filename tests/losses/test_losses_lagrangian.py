"""Lagrangian flow-map losses (LMD, LSD, AYF-LMD, TVM, PID) and FreeFlow's data-free predictor/corrector on the
Gaussian harness: (a) zero Lagrangian residual / flow-matching floor and a vanishing expected update at the exact
map; (b) an affine two-time model trained from scratch approaches the exact map."""

from __future__ import annotations

import pytest
import torch
from flowmap_harness import (
    check_contract,
    draw_batch,
    exact_model,
    flow_map_error,
    fm_floor,
    gaussian_target,
    loss_settings,
    stationarity,
    train_affine,
)

from fmlab.flowmaps import GaussianMixtureTeacher
from fmlab.losses import get_loss
from fmlab.losses.freeflow import freeflow_fake_loss
from fmlab.models import AffineFlowMapModel, build_model

LOSSES = ["lmd", "lsd", "ayf_lagrangian", "tvm", "pid", "freeflow"]
FROM_NOISE = ("pid", "freeflow")  # data-free: only X(x0, 0, t) is trained
NOISE_PAIRS = ((0.0, 1.0), (0.0, 0.5), (0.0, 0.25), (0.0, 0.8))
# (b): relative RMS flow-map error after 400 Adam steps (untrained: 1.0). Measured ~0.05-0.07.
TOL = {"lmd": 0.12, "lsd": 0.15, "ayf_lagrangian": 0.15, "tvm": 0.15, "pid": 0.12, "freeflow": 0.12}
RESIDUAL = {"lmd": "lagrangian", "lsd": "lagrangian", "ayf_lagrangian": "lagrangian", "tvm": "terminal",
            "pid": "lagrangian", "freeflow": "predictor"}


@pytest.mark.parametrize("name", LOSSES)
def test_registered_with_documented_contract(name):
    spec = get_loss(name)
    assert spec.family == "flow map: Lagrangian"
    check_contract(spec)


@pytest.mark.parametrize("name", LOSSES)
def test_exact_map_zero_residual_and_flow_matching_floor(name):
    spec = get_loss(name)
    settings = loss_settings(spec, **({"derivative": "jvp"} if name == "freeflow" else {}))  # fd: test below
    batch = draw_batch(spec, settings, 20000, seed=1)
    _, diag = spec.fn(exact_model(), batch, **settings)
    limit = 1e-8 if name == "pid" else 1e-20  # PID: O(h^4) finite-difference error of the squared residual
    assert diag[RESIDUAL[name]].item() < limit
    if name in ("lsd", "tvm"):
        floor = fm_floor(batch, batch.t)
        assert abs(diag["fm"].item() / floor - 1) < 0.06, (diag["fm"].item(), floor)


@pytest.mark.parametrize("name", LOSSES)
def test_expected_update_vanishes_at_the_exact_map(name):
    res = stationarity(get_loss(name))
    # pid, freeflow: finite-difference bias O(h^2) (h = 1e-2 and 1e-3)
    limit = {"lsd": 0.1, "tvm": 0.1, "pid": 1e-3, "freeflow": 1e-5}.get(name, 1e-10)
    assert res.ratio < limit, res


def test_freeflow_predictor_with_a_jvp_is_exactly_stationary_and_its_fd_converges():
    spec = get_loss("freeflow")
    assert stationarity(spec, derivative="jvp").ratio < 1e-10
    model = exact_model()
    residual = {}
    for h in (2e-3, 1e-3):
        settings = loss_settings(spec, h=h)
        _, diag = spec.fn(model, draw_batch(spec, settings, 4096, seed=0), **settings)
        residual[h] = diag["predictor"].item() ** 0.5
    assert 3.0 < residual[2e-3] / residual[1e-3] < 5.0 and residual[1e-3] < 1e-6  # central difference: O(h^2)
    with pytest.raises(ValueError, match="derivative"):
        spec.fn(model, draw_batch(spec, loss_settings(spec), 8), **{**loss_settings(spec), "derivative": "euler"})


def test_freeflow_predictor_value_is_the_lagrangian_residual_but_its_gradient_is_not():
    """||u - sg[v_T(X, t) - t du/dt]||^2 has the value ||d/dt X - v_T(X, t)||^2; only u carries the gradient."""
    from fmlab.flowmaps import flow_map_X_jvp

    spec = get_loss("freeflow")
    settings = loss_settings(spec, derivative="jvp")
    batch = draw_batch(spec, settings, 512, seed=0)
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(0))
    loss, _ = spec.fn(model, batch, **settings)
    zero = torch.zeros_like(batch.t)
    X, dX = flow_map_X_jvp(model, batch.x0, zero, batch.t, dt=torch.ones_like(batch.t))
    old = (dX - settings["teacher"](X.detach(), batch.t)).pow(2).mean(1).mean()  # the previous, PID-style form
    assert abs(loss.item() - old.item()) < 1e-12 * old.item()
    g_new = torch.autograd.grad(loss, model.backbone.dA)[0]
    g_old = torch.autograd.grad(old, model.backbone.dA)[0]
    assert (g_new - g_old).abs().max() > 1e-3 * g_old.abs().max()


def test_tvm_uses_the_ema_model_for_the_terminal_velocity():
    import copy

    spec = get_loss("tvm")
    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 256, seed=0)
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(0))
    same = copy.deepcopy(model).requires_grad_(False)
    other = copy.deepcopy(model).perturb(0.3, torch.Generator().manual_seed(1)).requires_grad_(False)
    loss, _ = spec.fn(model, batch, **settings)
    loss_same, _ = spec.fn(model, batch, **{**settings, "ema": same})
    loss_other, _ = spec.fn(model, batch, **{**settings, "ema": other})
    assert abs(loss.item() - loss_same.item()) < 1e-12 and abs(loss.item() - loss_other.item()) > 1e-4
    g, g_same = (torch.autograd.grad(v, model.backbone.dA)[0] for v in (loss, loss_same))
    assert torch.allclose(g, g_same, atol=1e-12)  # same weights: the EMA call's gradient still flows through X
    assert all(p.grad is None for p in other.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_affine_model_trained_from_scratch_approaches_the_exact_map(name):
    model = train_affine(get_loss(name), steps=400)
    pairs = NOISE_PAIRS if name in FROM_NOISE else None
    err = flow_map_error(model, pairs=pairs) if pairs else flow_map_error(model)
    assert err < TOL[name]


def test_lmd_differentiates_through_the_jvp_and_the_teacher_input():
    """LMD has no stop-gradient: its update differs from the one with the teacher's input detached."""
    spec = get_loss("lmd")
    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 512, seed=0)
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(0))

    def grad(teacher):
        model.zero_grad()
        loss, _ = spec.fn(model, batch, teacher=teacher)
        return torch.autograd.grad(loss, model.backbone.dA)[0]

    full = grad(settings["teacher"])
    target = gaussian_target()
    detached = grad(lambda x, t: target.velocity(x.detach(), t))  # the teacher's input cut off
    assert (full - detached).abs().max() > 1e-3


def test_lsd_and_tvm_differ_only_in_the_gradient_through_the_arrival_point():
    """Same loss value; TVM's terminal velocity keeps the gradient path through X, LSD's does not."""
    batch = draw_batch(get_loss("lsd"), loss_settings(get_loss("lsd")), 512, seed=0)
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(0))
    out = {}
    for name in ("lsd", "tvm"):
        loss, _ = get_loss(name).fn(model, batch)
        out[name] = (loss.item(), torch.autograd.grad(loss, model.backbone.dA)[0])
    assert abs(out["lsd"][0] - out["tvm"][0]) < 1e-12
    assert (out["lsd"][1] - out["tvm"][1]).abs().max() > 1e-4


def test_ayf_surrogate_gradient_is_the_lagrangian_residual_step():
    """Without tangent normalisation, grad <X, sg g> = grad (1/2)||X - sg[X - g]||^2 (per-sample mean over d)."""
    spec = get_loss("ayf_lagrangian")
    settings = loss_settings(spec, tangent_c=0.0)
    batch = draw_batch(spec, settings, 256, seed=0)
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(1))
    loss, _ = spec.fn(model, batch, **settings)
    g_ayf = torch.autograd.grad(loss, model.backbone.dA)[0]
    from fmlab.flowmaps import flow_map, flow_map_X_jvp
    from fmlab.paths import path_point

    x_s = path_point(batch.x0, batch.x1, batch.s)
    with torch.no_grad():
        X_sg, dX = flow_map_X_jvp(model, x_s, batch.s, batch.t, dt=torch.ones_like(batch.t))
        g = dX - settings["teacher"](X_sg, batch.t)
    X = flow_map(model, x_s, batch.s, batch.t)
    ref = 0.5 * (X - (X_sg - g)).pow(2).mean(1).mean()
    g_ref = torch.autograd.grad(ref, model.backbone.dA)[0]
    assert torch.allclose(g_ayf, g_ref, atol=1e-12)
    with pytest.raises(ValueError, match="tangent_c"):
        spec.fn(model, batch, teacher=settings["teacher"], tangent_c=-1.0)


def test_pid_finite_difference_is_second_order_and_one_sided_first_order():
    spec = get_loss("pid")
    model = exact_model()
    errs = {}
    for central in (True, False):
        for h in (0.02, 0.01):
            settings = loss_settings(spec, h=h, central=central)
            _, diag = spec.fn(model, draw_batch(spec, settings, 4096, seed=0), **settings)
            errs[central, h] = diag["lagrangian"].item() ** 0.5
    assert 3.0 < errs[True, 0.02] / errs[True, 0.01] < 5.0  # O(h^2)
    assert 1.6 < errs[False, 0.02] / errs[False, 0.01] < 2.5  # O(h)
    with pytest.raises(ValueError, match="h must"):
        spec.make_batch(torch.zeros(4, 2), torch.zeros(4, 2), h=0.7)


def test_freeflow_corrector_vanishes_when_the_fake_model_equals_the_teacher():
    spec = get_loss("freeflow")
    target = gaussian_target()
    teacher = GaussianMixtureTeacher(target)
    settings = loss_settings(spec, teacher=teacher, fake=teacher.field, derivative="jvp")  # fd: an O(h^2) push
    batch = draw_batch(spec, settings, 1024, seed=0)
    model = exact_model(target)
    loss, diag = spec.fn(model, batch, **settings)
    assert diag["corrector_gap"].item() < 1e-20 and diag["n_forward"] == 5  # 2 predictor (jvp) + 3 corrector
    g = torch.autograd.grad(loss, model.backbone.db)[0]
    assert g.abs().max() < 1e-12
    # a wrong fake model gives a non-zero corrector push
    wrong = lambda x, t: teacher(x, t) + 0.3  # noqa: E731
    loss, diag = spec.fn(model, batch, **{**settings, "fake": wrong})
    assert diag["corrector_gap"].item() > 1e-3


def test_freeflow_fake_loss_fits_student_samples():
    student = AffineFlowMapModel(2)
    fake = build_model(2, hidden=16, depth=2)
    loss, diag = freeflow_fake_loss(fake, student, torch.randn(64, 2), torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and diag["n_backward"] == 1
    assert all(p.grad is None for p in student.parameters())  # the student is not trained by it
