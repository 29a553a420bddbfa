"""The update field of every flow-map loss at the exact flow map of a Gaussian MIXTURE (tests/flowmap_harness.py, d).

Why a mixture: on a Gaussian the noise of a conditional target is Gaussian, hence symmetric about its mean, so any
weight that depends on the size of the residual (MeanFlow's adaptive weight), a clip, or a weight left under the
gradient leaves the expected update at zero; the Gaussian harness cannot see them. On a mixture the conditional
velocity x1 - x0 given x_s is bimodal and they move the fixed point.

The model is the exact map of `stationarity_mixture()` (two isotropic components, weights 0.65 / 0.35) by fixed-step
RK4 on the closed-form velocity, float64, plus 18 perturbation coefficients eps (zero at the exact map). For each loss
the gradient w.r.t. eps is taken on equal chunks of one batch; the test asserts |mean| < 5 SE on every coordinate
(SE = chunk spread / sqrt(chunks), plus a numerical floor 1e-4 of the update's size at a perturbed model, which
matters only for the noise-free distillation losses). With 16 chunks a coordinate passes 5 SE by chance with
probability ~1.6e-4 (Student t, 15 degrees of freedom), ~0.3% over the 18 coordinates of one loss.

Measured (`PYTHONPATH=.:tests python tests/losses/test_losses_mixture_stationarity.py`, one batch per case, seed 0; max
over the coordinates of |mean| / SE):
  - conditional-target losses (n = 6144, 16 chunks, RK4 8 steps): MeanFlow 2.84, iMF 2.76, SoFlow 2.67, ESD 1.35,
    SGFlow 2.28, CT 2.26, CTM 1.48, LSD 2.92, TVM 2.92, Shortcut 2.18, PSD 2.92, SplitMeanFlow 1.31, FMM 2.52,
    FACM from scratch without cosine, clip and adaptive weight 1.91: all pass;
  - distillation with the perfect teacher (n = 1024, RK4 16 steps; no Monte-Carlo noise, so the update is zero up
    to RK4 and finite-difference error): |mean| / |update at a perturbed model| below 5e-5 for EMD, AYF-EMD, LMD,
    AYF-LMD, PID, FreeFlow (fd and jvp), CD, FACM, PFMM: all pass;
  - the old defaults and the known biases fail (32 chunks): MeanFlow p = 1, c = 1e-3 (the old default) 8.18 at
    n = 32768 (|mean| = 0.40 of the perturbed update; 2.65 at n = 8192, so it needs the larger batch); iMF p = 1
    7.49 and SoFlow p = 1 9.56 at n = 8192; FACM from scratch (no teacher, v = x1 - x0) with its defaults (cosine
    anchor, clip 1, q = 0.5) 5.87 at n = 16384 (tested at 32768): unbiased only with cos_weight = 0, clamp = None,
    norm_p = 0, or with a teacher;
  - a misplaced stop-gradient with the right fixed point on a Gaussian: MeanFlow's weight left under the gradient
    (p = 0.5, L ~ sqrt(err)): Gaussian harness ratio 0.015 (passes there), here 7.26 at n = 32768.
Losses with a finite-difference bias run with a small step (PID h = 1e-3, CT delta = 1e-3, SoFlow l_ratio = 1e-3,
CD delta = 5e-3; FreeFlow's default h = 1e-3). A moved stop-gradient that keeps every sample's residual zero at the
exact map (ESD's spatial JVP, FreeFlow's time derivative) cannot show here: the gradient tests catch those
(tests/losses/test_losses_gradients.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from flowmap_harness import (
    F64,
    MixtureFlowMapModel,
    isotropic_mixture_velocity,
    mixture_update_field,
    stationarity,
    stationarity_mixture,
)
from torch.func import jvp

from fmlab.flowmaps import flow_map
from fmlab.losses import get_loss
from fmlab.losses.flow_matching import per_sample_mse
from fmlab.losses.flowmap_eulerian import eulerian_residual
from fmlab.paths import expand_t, path_point

THRESHOLD = 5.0  # max |mean| / SE over the 18 coordinates (module docstring)
TARGET = stationarity_mixture()


def teacher(x, t):
    """The perfect teacher: the mixture's closed-form velocity (the same function the exact model integrates)."""
    return isotropic_mixture_velocity(TARGET, x, t)


@pytest.fixture(scope="module")
def noisy_model():
    return MixtureFlowMapModel(TARGET, steps=8)


@pytest.fixture(scope="module")
def precise_model():
    return MixtureFlowMapModel(TARGET, steps=16)


# --- the machinery ---------------------------------------------------------------------------------------------

def test_closed_form_velocity_matches_the_engine_and_its_tangent_matches_autograd():
    g = torch.Generator().manual_seed(0)
    x = 1.5 * torch.randn(64, 2, generator=g, dtype=F64)
    t = torch.rand(64, generator=g, dtype=F64)
    assert torch.allclose(isotropic_mixture_velocity(TARGET, x, t), TARGET.velocity(x, t), atol=1e-12)
    dx, dt = torch.randn(64, 2, generator=g, dtype=F64), torch.randn(64, generator=g, dtype=F64)
    _, dv = isotropic_mixture_velocity(TARGET, x, t, dx, dt)
    x_, t_ = x.clone().requires_grad_(), t.clone().requires_grad_()
    v = isotropic_mixture_velocity(TARGET, x_, t_)
    rows = []
    for i in range(2):  # output i of J (dx, dt), by reverse mode (each sample's v depends on its own x, t only)
        gx, gt = torch.autograd.grad(v[:, i].sum(), (x_, t_), retain_graph=True)
        rows.append((gx * dx).sum(1) + gt * dt)
    dv_ref = torch.stack(rows, 1)
    assert torch.allclose(dv, dv_ref, atol=1e-12)


@pytest.mark.parametrize(("steps", "tol"), [(8, 3e-3), (16, 3e-4)])
def test_rk4_map_is_the_mixture_flow_map(steps, tol):
    # against the engine's adaptive DOP853 reference; the error is largest for the longest jump (0 -> 1)
    model = MixtureFlowMapModel(TARGET, steps)
    x = 1.5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    errs = []
    for s, t in ((0.0, 1.0), (0.2, 0.7), (0.6, 0.95), (0.9, 0.1)):
        with torch.no_grad():
            errs.append((flow_map(model, x, s, t) - TARGET.flow_map(x, s, t, rtol=1e-11, atol=1e-11)).abs().max())
    assert max(errs) < tol, errs
    assert torch.allclose(model(x, torch.full((64,), 0.3, dtype=F64)), TARGET.velocity(x, 0.3), atol=1e-12)  # s = t


def test_fast_jvp_equals_torch_forward_mode_with_second_order_gradients():
    # the hand-written forward mode of the exact model against torch's own (slow) forward mode: values, tangents and
    # reverse-mode gradients through both (inputs and tangents depending on a parameter a, as in FMM or EMD)
    fast, slow = MixtureFlowMapModel(TARGET, 1), MixtureFlowMapModel(TARGET, 1, fast_jvp=False)  # torch's is slow
    g = torch.Generator().manual_seed(2)
    eps = 0.1 * torch.randn(3, 3, 2, generator=g, dtype=F64)
    x, dx = torch.randn(5, 2, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64)
    s, t = 0.4 * torch.rand(5, generator=g, dtype=F64), 0.5 + 0.5 * torch.rand(5, generator=g, dtype=F64)
    a = torch.randn(5, 2, generator=g, dtype=F64, requires_grad=True)
    out = []
    for model in (fast, slow):
        with torch.no_grad():
            model.eps.copy_(eps)
        u, du = jvp(model, (x + 0.1 * a, s + 0.1 * a[:, 0], t), (dx + 0.3 * a, torch.ones_like(s), t))
        loss = (u * du).sum() + du.pow(2).sum() + model(x + 0.1 * a, s, t).pow(3).sum()
        out.append((loss, *torch.autograd.grad(loss, (a, model.eps))))
    for f, r in zip(*out, strict=True):
        assert torch.allclose(f, r, atol=1e-12)


# --- every loss whose fixed point is the exact map ------------------------------------------------------------------

NOISY = [  # conditional (Monte-Carlo) targets: the expected update is zero, each sample's is not
    ("meanflow", {}), ("imf", {}), ("soflow", {"l_ratio": 1e-3}), ("esd", {}), ("sgflow", {}), ("ct", {"delta": 1e-3}),
    ("ctm", {"teacher": teacher}), ("lsd", {}), ("tvm", {}), ("shortcut", {}), ("psd", {}), ("splitmeanflow", {}),
    ("fmm", {}), ("facm", {"teacher": None, "cos_weight": 0.0, "clamp": None, "norm_p": 0.0}),
]
NOISE_FREE = [  # distillation with the perfect teacher: each sample's residual is zero at the exact map
    ("emd", {}), ("ayf_emd", {}), ("lmd", {}), ("ayf_lagrangian", {}), ("pid", {"h": 1e-3}), ("freeflow", {}),
    ("freeflow", {"derivative": "jvp"}), ("cd", {"delta": 5e-3}), ("facm", {}), ("pfmm", {}),
]


def _label(case):
    name, settings = case
    extra = ",".join(f"{k}={v}" for k, v in settings.items() if k != "teacher")
    return f"{name}[{extra}]" if extra else name


@pytest.mark.parametrize("case", NOISY, ids=_label)
def test_expected_update_vanishes_for_losses_with_conditional_targets(case, noisy_model):
    name, settings = case
    field = mixture_update_field(get_loss(name), settings, n=6144, chunks=16, model=noisy_model)
    assert field.max_z < THRESHOLD, f"{name}: {field}"


@pytest.mark.parametrize("case", NOISE_FREE, ids=_label)
def test_expected_update_vanishes_for_distillation_with_the_perfect_teacher(case, precise_model):
    name, settings = case
    settings = {"teacher": MixtureFlowMapModel(TARGET, 16).requires_grad_(False) if name == "pfmm" else teacher,
                **settings}
    field = mixture_update_field(get_loss(name), settings, n=1024, chunks=4, model=precise_model)
    assert field.max_z < THRESHOLD and field.relative < 2e-4, f"{name}: {field}"


# --- the same test sees the biases ------------------------------------------------------------------------------------

BIASED = [  # (loss, settings, batch size, why): the heavy-tailed p = 1 weight of MeanFlow needs the largest batch
    ("meanflow", {"norm_p": 1.0, "norm_c": 1e-3}, 32768, "the old default: adaptive weight p = 1"),
    ("imf", {"norm_p": 1.0, "norm_c": 0.01}, 8192, "the old default: adaptive weight p = 1"),
    ("soflow", {"norm_p": 1.0, "norm_c": 0.01, "l_ratio": 1e-3}, 8192, "the old default: adaptive weight p = 1"),
    ("facm", {"teacher": None}, 32768, "from scratch: cosine anchor, clip and adaptive weight of a noisy residual"),
]


@pytest.mark.parametrize("case", BIASED, ids=lambda c: _label(c[:2]))
def test_biased_weightings_and_from_scratch_facm_fail_stationarity(case, noisy_model):
    name, settings, n, _ = case
    field = mixture_update_field(get_loss(name), settings, n=n, chunks=32, model=noisy_model)
    assert field.max_z > THRESHOLD, f"{name} {settings}: {field}"


def _meanflow_with_the_weight_under_the_gradient(model, batch, norm_p=0.0, norm_c=1e-3, **_):
    """MeanFlow with the adaptive weight NOT detached: L = err / (err + c)^p with gradient through the weight."""
    x = path_point(batch.x0, batch.x1, batch.s)
    v = batch.x1 - batch.x0
    _, u, du = eulerian_residual(model, x, batch.s, batch.t, v)
    err = per_sample_mse(u, (v + expand_t(batch.t - batch.s, x) * du).detach())
    return (err / (err + norm_c).pow(norm_p)).mean(), {}


def test_a_weight_left_under_the_gradient_passes_on_a_gaussian_and_fails_on_the_mixture(noisy_model):
    spec = dataclasses.replace(get_loss("meanflow"), fn=_meanflow_with_the_weight_under_the_gradient)
    weight = {"norm_p": 0.5, "norm_c": 1e-3}  # L ~ sqrt(err): an L1-like, median-seeking regression
    assert stationarity(spec, n=65536, **weight).ratio < 0.1  # Gaussian harness: symmetric noise, looks stationary
    field = mixture_update_field(spec, weight, n=32768, chunks=32, model=noisy_model)
    assert field.max_z > THRESHOLD, field


def report() -> None:
    """Print every case's statistics (the numbers quoted in the module docstring):
    PYTHONPATH=.:tests python tests/losses/test_losses_mixture_stationarity.py"""
    torch.set_num_threads(1)
    noisy, precise = MixtureFlowMapModel(TARGET, 8), MixtureFlowMapModel(TARGET, 16)
    rows = [(c, 6144, 16, noisy, "pass") for c in NOISY]
    rows += [((n, {"teacher": MixtureFlowMapModel(TARGET, 16).requires_grad_(False) if n == "pfmm" else teacher,
                   **st}), 1024, 4, precise, "pass") for n, st in NOISE_FREE]
    rows += [((n, st), size, 32, noisy, "fail") for n, st, size, _ in BIASED]
    for (name, settings), n, chunks, model, expect in rows:
        field = mixture_update_field(get_loss(name), settings, n=n, chunks=chunks, model=model)
        print(f"{_label((name, settings)):60s} n={n:6d} expect {expect}: {field}", flush=True)
    spec = dataclasses.replace(get_loss("meanflow"), fn=_meanflow_with_the_weight_under_the_gradient)
    weight = {"norm_p": 0.5, "norm_c": 1e-3}
    gauss = stationarity(spec, n=65536, **weight).ratio
    field = mixture_update_field(spec, weight, n=32768, chunks=32, model=noisy)
    print(f"meanflow, weight under the gradient (p = 0.5): Gaussian ratio {gauss:.3f}; mixture n=32768: {field}")


if __name__ == "__main__":
    report()
