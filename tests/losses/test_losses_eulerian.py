"""Eulerian flow-map losses (EMD, ESD, AYF-EMD) against the exact Gaussian flow map (tests/flowmap_harness.py)."""

from __future__ import annotations

import pytest
import torch
from flowmap_harness import (
    F64,
    check_contract,
    draw_batch,
    exact_diagnostics,
    exact_model,
    flow_map_error,
    fm_floor,
    gaussian_target,
    loss_settings,
    stationarity,
    train_affine,
    velocity_error,
)

from fmlab.data.gaussian import Gaussian
from fmlab.flowmaps import GaussianMixtureTeacher, flow_map
from fmlab.losses import get_loss
from fmlab.losses.flowmap_eulerian import adaptive_weight, eulerian_residual, gap_batch
from fmlab.models import AffineFlowMapModel, build_model
from fmlab.paths import path_point

NAMES = ("emd", "esd", "ayf_emd")


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_its_contract(name):
    spec = get_loss(name)
    check_contract(spec)
    assert spec.family == "flow map: Eulerian"
    assert spec.setting == ("self-distillation" if name == "esd" else "distillation")


def test_eulerian_residual_is_the_derivative_of_the_destination_along_the_trajectory():
    # E = d/ds X(x + (s' - s) v, s', t) at s' = s, checked against a central difference
    torch.manual_seed(0)
    model = build_model(time_inputs=2, hidden=32, depth=2).double()
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(32, 2, generator=g, dtype=F64), torch.randn(32, 2, generator=g, dtype=F64)
    s, t = 0.3 * torch.rand(32, generator=g, dtype=F64), 0.5 + 0.5 * torch.rand(32, generator=g, dtype=F64)
    res, u, _ = eulerian_residual(model, x, s, t, v)
    h = 1e-5
    fd = (flow_map(model, x + h * v, s + h, t) - flow_map(model, x - h * v, s - h, t)) / (2 * h)
    assert torch.allclose(res, fd, atol=1e-7)
    assert torch.allclose(u, model(x, s, t))


@pytest.mark.parametrize("name", ["emd", "ayf_emd"])
def test_distillation_residual_vanishes_at_the_exact_map(name):
    d = exact_diagnostics(get_loss(name))
    assert d["eulerian"] < 1e-24 and d["loss"] < 1e-24
    assert stationarity(get_loss(name), n=4096).ratio < 1e-10


def test_esd_residual_vanishes_and_its_diagonal_term_sits_on_the_flow_matching_floor():
    spec = get_loss("esd")
    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 8192, seed=0)
    diag = batch.s == batch.t
    _, d = spec.fn(exact_model(), batch, **settings)
    assert d["eulerian"].item() < 1e-24  # the self-teacher is the exact velocity
    floor = fm_floor(batch, batch.s, diag)
    assert abs(d["fm"].item() - floor) < 0.04 * floor
    assert stationarity(spec, n=16384).ratio < 0.08  # only Monte-Carlo noise of the flow-matching term


def test_stationarity_fails_for_a_wrong_teacher_or_a_warmup_below_one():
    wrong = GaussianMixtureTeacher(Gaussian(torch.tensor([0.0, 0.5]), std=0.7))  # another target's velocity
    assert stationarity(get_loss("emd"), n=4096, teacher=wrong).ratio > 0.2
    # AYF's tangent warm-up r < 1 changes the fixed point (so the paper ramps r up to 1)
    assert stationarity(get_loss("ayf_emd"), n=4096, tangent_warmup=0.5).ratio > 0.2


def test_emd_differentiates_through_the_jvp_and_ayf_does_not():
    torch.manual_seed(0)
    model = AffineFlowMapModel(2).double()
    torch.nn.init.normal_(model.backbone.net[-1].weight, std=0.3)
    spec = get_loss("emd")
    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 256, seed=1)
    loss, _ = spec.fn(model, batch, **settings)
    g_full = torch.autograd.grad(loss, list(model.parameters()))
    # the same residual with the JVP term detached (a stop-gradient EMD does not exist in the paper)
    x = path_point(batch.x0, batch.x1, batch.s)
    v = settings["teacher"](x, batch.s)
    res, u, du = eulerian_residual(model, x, batch.s, batch.t, v)
    res_sg = v - u + (batch.t - batch.s)[:, None] * du.detach()
    g_sg = torch.autograd.grad(res_sg.pow(2).mean(), list(model.parameters()))
    diff = sum((a - b).norm() ** 2 for a, b in zip(g_full, g_sg, strict=True)) ** 0.5
    assert diff > 0.05 * sum(a.norm() ** 2 for a in g_full) ** 0.5
    # AYF: the gradient is -2 E_n . grad u / d (only u carries gradient)
    spec = get_loss("ayf_emd")
    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 256, seed=1)
    loss, _ = spec.fn(model, batch, **settings)
    g_ayf = torch.autograd.grad(loss, list(model.parameters()))
    x = path_point(batch.x0, batch.x1, batch.s)
    res, u, _ = eulerian_residual(model, x, batch.s, batch.t, settings["teacher"](x, batch.s))
    e_n = (res / (res.norm(dim=1, keepdim=True) + 0.1)).detach()
    g_ref = torch.autograd.grad(-(u * e_n).sum(1).mean(), list(model.parameters()))  # d/d theta of -<u, E_n> / d
    for a, b in zip(g_ayf, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_missing_teacher_and_bad_settings_raise():
    spec = get_loss("emd")
    settings = spec.settings()
    batch = draw_batch(spec, settings, 8, seed=0)
    with pytest.raises(ValueError, match="teacher"):
        spec.fn(exact_model(), batch, **settings)
    with pytest.raises(ValueError, match="tangent_norm"):
        get_loss("ayf_emd").fn(exact_model(), batch, teacher=gaussian_target(), tangent_norm=0.0)
    with pytest.raises(ValueError, match="tangent_warmup"):
        get_loss("ayf_emd").fn(exact_model(), batch, teacher=gaussian_target(), tangent_warmup=1.5)


def test_gap_batch_draws_the_interval_length():
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0, x1 = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
    b = gap_batch(x0, x1, g, diagonal_fraction=0.1, gap_mu=-0.8, gap_sigma=1.0)
    assert bool((b.s <= b.t).all()) and bool((b.s >= 0).all()) and bool((b.t <= 1).all())
    assert (b.s == b.t).sum().item() == 2000
    gap = (b.t - b.s)[b.s < b.t]
    median = torch.sigmoid(torch.tensor(-0.8)).item()  # the logit-normal median
    assert gap.median().item() == pytest.approx(median, abs=0.02)
    with pytest.raises(ValueError, match="diagonal_fraction"):
        gap_batch(x0, x1, g, diagonal_fraction=-0.1)
    with pytest.raises(ValueError, match="gap_sigma"):
        gap_batch(x0, x1, g, gap_sigma=0.0)


def test_adaptive_weight():
    err = torch.tensor([0.0, 1.0, 3.0], requires_grad=True)
    assert torch.equal(adaptive_weight(err, 0.0, 1e-3), torch.ones(3))
    w = adaptive_weight(err, 1.0, 1.0)
    assert torch.allclose(w, torch.tensor([1.0, 0.5, 0.25])) and not w.requires_grad
    assert torch.allclose(adaptive_weight(err, 0.5, 1.0), torch.tensor([1.0, 0.5**0.5, 0.5]))
    with pytest.raises(ValueError, match="norm_p"):
        adaptive_weight(err, -1.0, 1e-3)
    with pytest.raises(ValueError, match="norm_c"):
        adaptive_weight(err, 1.0, 0.0)  # an error of exactly 0 would get an infinite weight


@pytest.mark.parametrize(("name", "tol"), [("emd", 0.1), ("esd", 0.25), ("ayf_emd", 0.25)])
def test_affine_model_trained_from_scratch_approaches_the_exact_map(name, tol):
    assert flow_map_error(AffineFlowMapModel(2)) == pytest.approx(1.0)  # u = 0 at init
    model = train_affine(get_loss(name), steps=200, lr=2e-2)
    assert flow_map_error(model) < tol
    assert velocity_error(model) < 2 * tol
