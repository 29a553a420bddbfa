"""Compositional flow-map losses (shortcut, PSD, SplitMeanFlow, FMM, PFMM) on the Gaussian harness:
(a) zero self-consistency residual and the flow-matching floor at the exact map, a vanishing expected update;
(b) an affine two-time model trained from scratch approaches the exact map."""

from __future__ import annotations

import pytest
import torch
from flowmap_harness import (
    check_contract,
    draw_batch,
    exact_model,
    flow_map_error,
    fm_floor,
    loss_settings,
    stationarity,
    train_affine,
)

from fmlab.losses import get_loss
from fmlab.losses.flowmap_compositional import shortcut_batch

LOSSES = ["shortcut", "psd", "splitmeanflow", "fmm", "pfmm"]
# (b): relative RMS flow-map error after 400 Adam steps of an affine model (untrained: 1.0). Measured ~0.05-0.08.
TOL = {"shortcut": 0.15, "psd": 0.15, "splitmeanflow": 0.15, "fmm": 0.15, "pfmm": 0.12}
# (a): which diagnostic is a self-consistency residual (exactly 0 at the exact map) and which is a flow-matching
# term with a closed-form floor, evaluated at which rows.
RESIDUAL = {"shortcut": "self_consistency", "psd": "psd", "splitmeanflow": "split", "fmm": "inverse",
            "pfmm": "distill"}
FLOOR = {"shortcut": ("fm", "diag"), "psd": ("fm", "all"), "splitmeanflow": ("fm", "diag"),
         "fmm": ("tangent", "all")}


@pytest.mark.parametrize("name", LOSSES)
def test_registered_with_documented_contract(name):
    spec = get_loss(name)
    assert spec.family == "flow map: compositional"
    check_contract(spec)


@pytest.mark.parametrize("name", LOSSES)
def test_exact_map_zero_residual_and_flow_matching_floor(name):
    spec = get_loss(name)
    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 20000, seed=1)
    _, diag = spec.fn(exact_model(), batch, **settings)
    # shortcut: the finest level's target is two Euler half-steps (d = 1/128) of the velocity, the paper's anchor
    assert diag[RESIDUAL[name]].item() < (1e-4 if name == "shortcut" else 1e-20)
    if name in FLOOR:
        key, rows = FLOOR[name]
        mask = (batch.s == batch.t) if rows == "diag" else None
        time = batch.t
        if name == "fmm":  # unordered pairs: the tangent sits at the round trip's start a (s on every second row)
            time = torch.where(torch.arange(len(batch.t)) % 2 == 1, batch.s, batch.t)
        floor = fm_floor(batch, time, mask)
        assert abs(diag[key].item() / floor - 1) < 0.06, (diag[key].item(), floor)


@pytest.mark.parametrize("name", LOSSES)
def test_expected_update_vanishes_at_the_exact_map(name):
    res = stationarity(get_loss(name))
    limit = 1e-10 if name == "pfmm" else 0.1  # pfmm has no conditional (noisy) term
    assert res.ratio < limit, res


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_affine_model_trained_from_scratch_approaches_the_exact_map(name):
    model = train_affine(get_loss(name), steps=400)
    assert flow_map_error(model) < TOL[name]


def test_shortcut_batch_uses_dyadic_steps_and_midpoints():
    x = torch.randn(4000, 2)
    b = shortcut_batch(x, x, torch.Generator().manual_seed(0), diagonal_fraction=0.75, levels=7)
    off = b.s != b.t
    assert int((~off).sum()) == 3000
    d = (b.t - b.s)[off]
    k = -torch.log2(d)
    assert torch.allclose(k, k.round(), atol=1e-5) and k.min() >= 0 and k.max() <= 6
    assert torch.allclose(b.r[off], 0.5 * (b.s + b.t)[off])
    assert torch.allclose(torch.remainder(b.s[off] / d, 1.0), torch.zeros_like(d), atol=1e-4)  # s on the 2d grid
    with pytest.raises(ValueError, match="levels"):
        shortcut_batch(x, x, levels=0)


def test_psd_midpoint_split_and_bad_split():
    spec = get_loss("psd")
    settings = loss_settings(spec, split="midpoint")
    batch = draw_batch(spec, settings, 512, seed=0)
    _, diag = spec.fn(exact_model(), batch, **settings)
    assert diag["psd"].item() < 1e-20
    with pytest.raises(ValueError, match="split"):
        spec.fn(exact_model(), batch, split="random")


def test_self_consistency_residual_detects_a_non_composing_map():
    """A perturbed map breaks composition: the residuals become O(perturbation^2) > 0."""
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(0))
    for name in ("shortcut", "psd", "splitmeanflow", "fmm"):
        spec = get_loss(name)
        settings = loss_settings(spec)
        _, diag = spec.fn(model, draw_batch(spec, settings, 2048, seed=0), **settings)
        assert diag[RESIDUAL[name]].item() > 1e-4, name


def test_pfmm_with_a_velocity_teacher_and_a_missing_teacher():
    from flowmap_harness import gaussian_target

    from fmlab.flowmaps import as_teacher

    spec = get_loss("pfmm")
    teacher = as_teacher(gaussian_target()).field  # a plain velocity field: Heun sub-steps
    settings = loss_settings(spec, teacher=teacher, teacher_steps=8)
    _, diag = spec.fn(exact_model(), draw_batch(spec, settings, 1024, seed=0), **settings)
    assert 0 < diag["distill"].item() < 1e-5  # Heun discretisation error only
    with pytest.raises(ValueError, match="teacher"):
        spec.fn(exact_model(), draw_batch(spec, settings, 8), teacher=None)


def test_shortcut_finest_level_is_anchored_to_the_velocity():
    """With one level every self-consistency row is the finest: its target is the mean of two Euler half-steps of
    the velocity u(., r, r); the residual at the exact map is their O(d^2) error in X, so it shrinks ~16x in mean
    square when the step halves (levels 7 -> 8)."""
    spec = get_loss("shortcut")
    model = exact_model()
    settings = loss_settings(spec, diagonal_fraction=0.0, levels=1)
    batch = draw_batch(spec, settings, 64, seed=0)
    loss, _ = spec.fn(model, batch, **settings)
    s, r, t = batch.s, batch.r, batch.t
    x = (1 - s[:, None]) * batch.x0 + s[:, None] * batch.x1
    with torch.no_grad():
        v1 = model(x, s, s)
        target = 0.5 * (v1 + model(x + (r - s)[:, None] * v1, r, r))
        ref = (model(x, s, t) - target).pow(2).mean(1).mean()
    assert abs(loss.item() - ref.item()) < 1e-12
    res = {}
    for levels in (7, 8):
        settings = loss_settings(spec, diagonal_fraction=0.0, levels=levels)
        _, diag = spec.fn(model, draw_batch(spec, settings, 20000, seed=1), **settings)
        res[levels] = diag["self_consistency"].item()
    assert 0 < res[8] < res[7] / 4  # finest share 1/levels, error per finest row ~ d^2: ratio ~ 16 x 8/7


def test_fmm_runs_half_the_round_trips_the_other_way():
    spec = get_loss("fmm")
    model = exact_model().perturb(0.3, torch.Generator().manual_seed(0))
    settings = loss_settings(spec)
    batch = draw_batch(spec, settings, 256, seed=0)
    both, _ = spec.fn(model, batch, **settings)
    forward, _ = spec.fn(model, batch, **{**settings, "unordered": False})
    assert abs(both.item() - forward.item()) > 1e-4 * forward.item()
    odd = torch.arange(256) % 2 == 1
    flipped = type(batch)(x0=batch.x0, x1=batch.x1, s=torch.where(odd, batch.t, batch.s),
                          t=torch.where(odd, batch.s, batch.t), r=batch.r)  # swap the odd rows by hand
    by_hand, _ = spec.fn(model, flipped, **{**settings, "unordered": False})
    assert abs(both.item() - by_hand.item()) < 1e-12
