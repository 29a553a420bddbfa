"""MeanFlow, iMF and SoFlow against the exact Gaussian flow map (tests/flowmap_harness.py).

Closed-form floors used here (Gaussian target N(m, Q diag(lam) Q^T), linear path, var_r = r^2 lam + (1 - r)^2):
- flow matching at x_s: E||(x1 - x0) - v*||^2 / d = mean_i lam_i / var_s,i           (harness.velocity_floor);
- the MeanFlow residual at the exact map is u* - u_tgt = J (v* - (x1 - x0)) with J = dX*/dx = Q diag(sqrt(var_t /
  var_s)) Q^T, so its floor is mean_i lam_i var_t,i / var_s,i^2 (= the flow-matching floor when s = t).
"""

from __future__ import annotations

import pytest
import torch
from flowmap_harness import (
    F64,
    check_contract,
    draw_batch,
    evaluate,
    exact_model,
    flow_map_error,
    gaussian_target,
    loss_settings,
    stationarity,
    train_affine,
    velocity_error,
)
from torch.func import jvp

from fmlab.conventions import paper_average_velocity, paper_path
from fmlab.flowmaps import flow_map, partial_s
from fmlab.losses import get_loss
from fmlab.losses.flowmap_eulerian import eulerian_residual
from fmlab.losses.meanflow import soflow_batch
from fmlab.models import AffineFlowMapModel, build_model
from fmlab.paths import path_point

NAMES = ("meanflow", "imf", "soflow")


def meanflow_floor(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample floor mean_i lam_i var_t,i / var_s,i^2 of the MeanFlow residual at the exact map."""
    lam = torch.linalg.eigvalsh(gaussian_target().covs[0]).to(F64)
    s, t = s.to(F64)[:, None], t.to(F64)[:, None]
    var_s, var_t = s**2 * lam + (1 - s) ** 2, t**2 * lam + (1 - t) ** 2
    return (lam * var_t / var_s**2).mean(1)


def _batch(name: str, n: int = 8192, **overrides):
    spec = get_loss(name)
    settings = loss_settings(spec, **overrides)
    return draw_batch(spec, settings, n, seed=0), settings


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_its_contract(name):
    spec = get_loss(name)
    check_contract(spec)
    assert spec.family == "flow map: Eulerian" and spec.setting == "marginal-from-conditional"
    assert "teacher" not in spec.defaults  # learns from the conditional path alone


def test_meanflow_target_is_the_papers_in_paper_symbols():
    # u_tgt(paper) = v - (t - r)(v d_z u + d_t u) with v = eps - x, evaluated on our model seen in the paper's time,
    # must be minus our target (x1 - x0) + (t - s) d/ds u (fmlab.conventions: u_paper = -u).
    torch.manual_seed(0)
    model = build_model(time_inputs=2, hidden=32, depth=2).double()
    g = torch.Generator().manual_seed(1)
    n = 16
    x, eps = torch.randn(n, 2, generator=g, dtype=F64) + 1, torch.randn(n, 2, generator=g, dtype=F64)
    t_p, r_p = torch.sort(torch.rand(2, n, generator=g, dtype=F64), dim=0).values.flip(0)  # t_p >= r_p
    z = paper_path(x, eps, t_p)
    u_p = paper_average_velocity(model)
    v_p = eps - x
    u_paper, du_paper = jvp(lambda z_, r_, t_: u_p(z_, r_, t_), (z, r_p, t_p), (v_p, torch.zeros(n, dtype=F64),
                                                                             torch.ones(n, dtype=F64)))
    tgt_paper = v_p - (t_p - r_p)[:, None] * du_paper
    s, t = 1 - t_p, 1 - r_p  # our times
    u, du = partial_s(model, z, s, t, x - eps)
    tgt_ours = (x - eps) + (t - s)[:, None] * du
    assert torch.allclose(u_paper, -u, atol=1e-12)
    assert torch.allclose(tgt_paper, -tgt_ours, atol=1e-10)


def test_meanflow_at_the_exact_map_sits_on_its_closed_form_floors():
    batch, settings = _batch("meanflow")
    diag = batch.s == batch.t
    _, d = get_loss("meanflow").fn(exact_model(), batch, **settings)
    floor = meanflow_floor(batch.s, batch.t)
    assert abs(d["fm"].item() - floor[diag].mean().item()) < 0.04 * floor[diag].mean().item()
    assert abs(d["meanflow"].item() - floor[~diag].mean().item()) < 0.06 * floor[~diag].mean().item()
    # the floor of an off-diagonal pair differs from the flow-matching floor at s: the check can fail
    fm_only = meanflow_floor(batch.s, batch.s)[~diag].mean().item()
    assert abs(fm_only - floor[~diag].mean().item()) > 0.1 * fm_only


def test_imf_v_loss_is_flow_matching_at_the_exact_map():
    # with the exact velocity as JVP tangent, V = u - (t - s) du = v*(x_s, s): the v-loss sits on the FM floor at s
    batch, settings = _batch("imf")
    _, d = get_loss("imf").fn(exact_model(), batch, **settings)
    floor = meanflow_floor(batch.s, batch.s).mean().item()
    assert abs(d["v_loss"].item() - floor) < 0.04 * floor
    assert abs(d["aux_v"].item() - floor) < 0.04 * floor


def test_soflow_floors_at_the_exact_map():
    batch, settings = _batch("soflow")
    diag = batch.s == batch.t
    assert diag.float().mean().item() == pytest.approx(0.75, abs=1e-3)
    _, d = get_loss("soflow").fn(exact_model(), batch, **settings)
    fm = meanflow_floor(batch.s, batch.s)[diag].mean().item()
    cons = meanflow_floor(batch.s, batch.t)[~diag].mean().item()
    assert abs(d["fm"].item() - fm) < 0.04 * fm
    assert abs(d["consistency"].item() - cons) < 0.1 * cons  # finite difference: O(l_ratio) off the floor


@pytest.mark.parametrize("name", NAMES)
def test_exact_map_is_a_stationary_point(name):
    # the default, unweighted (p = 0): the expected update vanishes up to Monte-Carlo noise of the conditional target
    assert get_loss(name).defaults["norm_p"] == 0.0
    res = stationarity(get_loss(name), n=65536)
    assert res.ratio < 0.05, res
    # the papers' adaptive weight p = 1 looks stationary here too: on a Gaussian the target's noise is symmetric.
    # On a mixture it is not (tests/losses/test_losses_mixture_stationarity.py shows the bias)
    res_paper = stationarity(get_loss(name), n=65536, norm_p=1.0)
    assert res_paper.ratio < 0.1, res_paper


def test_imf_counts_each_rows_velocity_once():
    """On the diagonal V = u(x, s, s): the auxiliary velocity loss runs on the off-diagonal rows only, so an
    all-diagonal batch gives plain flow matching (not twice it) and an off-diagonal row gives V-loss + velocity loss."""
    spec = get_loss("imf")
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(0))
    from fmlab.losses.flow_matching import fm_error

    for fraction in (1.0, 0.0):
        settings = loss_settings(spec, diagonal_fraction=fraction)
        batch = draw_batch(spec, settings, 256, seed=0)
        loss, d = spec.fn(model, batch, **settings)
        fm = fm_error(model, batch.x0, batch.x1, batch.s).mean().item()
        expected = fm if fraction == 1.0 else d["v_loss"].item() + fm
        assert abs(loss.item() - expected) < 1e-12 * expected, (fraction, loss.item(), expected)


def test_stationarity_detects_a_wrong_target():
    # a MeanFlow target with the wrong sign of the JVP term has a different fixed point
    spec = get_loss("meanflow")

    def wrong(model, batch, norm_p=0.0, **_):
        x = path_point(batch.x0, batch.x1, batch.s)
        v = batch.x1 - batch.x0
        _, u, du = eulerian_residual(model, x, batch.s, batch.t, v)
        tgt = (v - (batch.t - batch.s)[:, None] * du).detach()
        return (u - tgt).pow(2).mean(), {}

    import dataclasses

    assert stationarity(dataclasses.replace(spec, fn=wrong), n=16384).ratio > 0.3


def test_soflow_gradient_is_that_of_the_scaled_squared_consistency_error():
    torch.manual_seed(0)
    model = build_model(time_inputs=2, hidden=32, depth=2).double()
    batch, settings = _batch("soflow", n=64, diagonal_fraction=0.0, norm_p=0.0)
    loss, _ = get_loss("soflow").fn(model, batch, **settings)
    g1 = torch.autograd.grad(loss, list(model.parameters()))
    x, s, r, t = path_point(batch.x0, batch.x1, batch.s), batch.s, batch.r, batch.t
    X_s = flow_map(model, x, s, t)
    with torch.no_grad():
        X_r = flow_map(model, path_point(batch.x0, batch.x1, r), r, t)
    ref = ((X_s - X_r).pow(2).mean(1) / (2 * (t - s) * (r - s))).mean()  # ||X_s - sg X_r||^2 / (2 d (t-s)(r-s))
    g2 = torch.autograd.grad(ref, list(model.parameters()))
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_soflow_difference_quotient_tends_to_minus_the_eulerian_residual():
    torch.manual_seed(0)
    model = build_model(time_inputs=2, hidden=32, depth=2).double()
    errs = []
    for ratio in (1e-2, 1e-3):
        batch, _ = _batch("soflow", n=256, diagonal_fraction=0.0, l_ratio=ratio)
        x = path_point(batch.x0, batch.x1, batch.s)
        with torch.no_grad():
            X_s = flow_map(model, x, batch.s, batch.t)
            X_r = flow_map(model, path_point(batch.x0, batch.x1, batch.r), batch.r, batch.t)
        delta = (X_s - X_r) / (batch.r - batch.s)[:, None]
        res, _, _ = eulerian_residual(model, x, batch.s, batch.t, batch.x1 - batch.x0)
        errs.append((delta + res.detach()).abs().max().item() / res.abs().max().item())
    assert errs[1] < 0.2 * errs[0] and errs[1] < 0.05  # first order in l_ratio


def test_soflow_batch_times():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    b = soflow_batch(x0, x1, g, diagonal_fraction=0.3, l_ratio=0.1)
    off = b.s < b.t
    assert (b.s == b.t).sum().item() == 300 and off.sum().item() == 700
    assert bool(((b.t - b.s)[off] >= 1e-4 - 1e-7).all())
    assert torch.allclose(b.r, b.s + 0.1 * (b.t - b.s))
    with pytest.raises(ValueError, match="l_ratio"):
        soflow_batch(x0, x1, g, l_ratio=0.0)
    with pytest.raises(ValueError, match="diagonal_fraction"):
        soflow_batch(x0, x1, g, diagonal_fraction=1.5)


@pytest.mark.parametrize(("name", "tol"), [("meanflow", 0.3), ("imf", 0.2), ("soflow", 0.2)])
def test_affine_model_trained_from_scratch_approaches_the_exact_map(name, tol):
    untrained = flow_map_error(AffineFlowMapModel(2))  # u = 0 at init: error 1
    model = train_affine(get_loss(name), steps=200, lr=2e-2)
    err = flow_map_error(model)
    assert untrained == pytest.approx(1.0) and err < tol, err
    assert velocity_error(model) < tol


def test_losses_are_deterministic_given_the_batch_and_count_passes():
    model = exact_model()
    for name in NAMES:
        l1, d = evaluate(get_loss(name), model, n=128, seed=3)
        l2, _ = evaluate(get_loss(name), model, n=128, seed=3)
        assert l1.item() == l2.item()
        assert d["n_backward"] == 1 and d["n_jvp"] == (0 if name == "soflow" else 1)
