"""Consistency models as Eulerian flow-map losses: CT, CD (Song et al. 2023), CTM (Kim et al. 2024), FACM (Peng et al.
2025).

Convention (fmlab.conventions): t = 0 is noise, t = 1 is data, x_s = (1 - s) x0 + s x1,
X(x, s, t) = x + (t - s) u(x, s, t).
A consistency function f(x, s) (Song et al.: data at sigma = 0, f(x, sigma) -> clean data) is our flow map to the
data, f(x, s) = X(x, s, 1), and its self-consistency "f is constant along each trajectory" is the Eulerian rule with
the destination fixed at t = 1: d/ds X(x_s, s, 1) = 0 (fmlab.losses.flowmap_eulerian). CT and CD enforce it between
two neighbouring start times s < r = s + delta on one trajectory; CTM enforces it for any destination t; FACM in
continuous time (a JVP), anchored by flow matching on the diagonal.

Models trained by CT, CD and FACM only learn jumps to t = 1: sample them in one step, or with the consistency
multistep sampler that re-noises in between (fmlab.flowmaps.sample_consistency).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..checks import check_choice, check_float, check_int
from ..flowmaps import as_teacher, flow_map
from ..paths import expand_t, path_point
from .batch import Batch, draw_times, two_time_batch
from .flow_matching import per_sample_mse
from .flowmap_eulerian import (
    TWO_TIME_SETTINGS,
    adaptive_weight,
    diagonal_mask,
    eulerian_residual,
)
from .registry import EULERIAN, LossSpec, register

__all__ = ["consistency_batch", "facm_batch", "ct_loss", "cd_loss", "ctm_loss", "facm_loss", "teacher_solve"]

DISTANCES = ("l2", "pseudo_huber")


# --- batches -----------------------------------------------------------------------------------------------

def consistency_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                      time_sampler: str = "uniform", mu: float = 0.0, sigma: float = 1.0, delta: float = 0.02,
                      **_: Any) -> Batch:
    """Neighbouring start times on one trajectory, destination the data: s in [0, 1 - delta], r = s + delta, t = 1.

    s is drawn from `time_sampler` (fmlab.paths.sample_times) and squeezed into [0, 1 - delta]; no sample has s = t.
    """
    check_float(delta, "delta", 0.0, 1.0, strict=True, strict_high=True)
    n = len(x1)
    s = draw_times(n, generator, x1.device, time_sampler, mu, sigma).to(x1.dtype) * (1 - delta)
    return Batch(x0=x0, x1=x1, s=s, r=(s + delta).clamp(max=1.0), t=torch.ones_like(s), labels=labels)


def facm_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
               p_mean: float = -0.8, p_std: float = 1.6, **_: Any) -> Batch:
    """FACM's time sampler: s = 1 - (2 / pi) arctan(exp(p_mean + p_std z)), z ~ N(0, 1); destination t = 1, r = s.

    (FACM's own time already runs noise -> data like ours, with sigma = exp(N(-0.8, 1.6)) a noise-to-signal ratio.)
    """
    check_float(p_std, "p_std", 0.0, strict=True)
    z = torch.randn(len(x1), generator=generator, device=x1.device)
    s = (1 - (2 / math.pi) * torch.atan(torch.exp(p_mean + p_std * z))).to(x1.dtype).clamp(0, 1)
    return Batch(x0=x0, x1=x1, s=s, r=s, t=torch.ones_like(s), labels=labels)


# --- shared pieces -----------------------------------------------------------------------------------------

def _distance(a: Tensor, b: Tensor, kind: str, huber_c: float) -> Tensor:
    """Per-sample distance: 'l2' = ||a - b||^2 / d; 'pseudo_huber' = sqrt(||a - b||^2 + c^2) - c (Song & Dhariwal
    2023, iCT)."""
    if kind == "l2":
        return per_sample_mse(a, b)
    if kind == "pseudo_huber":
        return torch.sqrt((a - b).pow(2).flatten(1).sum(1) + huber_c**2) - huber_c
    raise ValueError(f"distance must be one of {DISTANCES}, got {kind!r}")


@torch.no_grad()
def teacher_solve(teacher: Any, x: Tensor, s: Tensor, r: Tensor, steps: int = 1, method: str = "heun") -> Tensor:
    """Integrate the teacher's ODE dx/dt = v(x, t) from per-sample times s to r in `steps` equal steps.

    'euler': x + h v(x, t);  'heun': x + h/2 (v(x, t) + v(x + h v(x, t), t + h)). Teacher calls: steps (x2 for heun).
    """
    check_choice(method, "method", ("euler", "heun"))
    check_int(steps, "steps", 1)
    v = as_teacher(teacher)
    h = (r - s) / steps
    hx = expand_t(h, x)
    time = s
    for _ in range(steps):
        k1 = v(x, time)
        if method == "euler":
            x = x + hx * k1  # x + h v(x, t)
        else:
            k2 = v(x + hx * k1, time + h)
            x = x + 0.5 * hx * (k1 + k2)  # Heun: trapezoid on (k1, k2)
        time = time + h
    return x


def _frozen(model: nn.Module):
    """The model with its parameters under stop-gradient (gradients still flow through its inputs)."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    return lambda x, s, t: functional_call(model, params, (x, s, t))


# --- the losses --------------------------------------------------------------------------------------------

def ct_loss(model: nn.Module, batch: Batch, distance: str = "l2", huber_c: float = 7.6e-4,
            **_: Any) -> tuple[Tensor, dict]:
    """Consistency training, CT (Song et al. 2023; improved CT: Song & Dhariwal 2023; ECT: Geng et al. 2024).

    Paper (EDM time, data at sigma = 0): L = lambda(sigma_n) d(f(x + sigma_{n+1} z, sigma_{n+1}),
    sg f(x + sigma_n z, sigma_n)) with the same data x and noise z at both noise levels, lambda = 1 / (sigma_{n+1} -
    sigma_n) (iCT), d = pseudo-Huber (iCT) or squared L2, and sg = the online network (iCT) rather than an EMA.
    Ours (linear path; f(x, s) = X(x, s, 1); the noisier level is the smaller time s, the target the later r):

        L = (1 / delta) d( X(x_s, s, 1), sg X(x_r, r, 1) ),   x_s, x_r on the same segment (x0, x1), r = s + delta.

    The pair (x_s, x_r) is the conditional path's exact step: an unbiased one-sample stand-in for the ODE step, so
    the expected update vanishes at the exact map up to O(delta). Stop-gradient: on the target X(x_r, r, 1).
    Time sampling (defaults): s uniform on [0, 1 - delta], delta = 0.02 fixed (ECT anneals delta from 1, diffusion
    pretraining, toward 0; set `delta` per stage to reproduce that); fraction 0 of samples with s = t (the
    destination is always the data). Weighting 1 / delta. Distance 'l2' (per-sample mean square) by default;
    'pseudo_huber' with c = 0.00054 sqrt(d) (= 7.6e-4 in 2D) is iCT's.
    """
    delta = batch.r - batch.s
    X_s = flow_map(model, path_point(batch.x0, batch.x1, batch.s), batch.s, batch.t)
    with torch.no_grad():
        X_r = flow_map(model, path_point(batch.x0, batch.x1, batch.r), batch.r, batch.t)  # sg target, same (x0, x1)
    per = _distance(X_s, X_r, distance, huber_c) / delta  # lambda = 1 / delta
    return per.mean(), {"consistency": per.mean().detach(), "n_forward": 2, "n_jvp": 0, "n_backward": 1}


def cd_loss(model: nn.Module, batch: Batch, teacher: Any = None, teacher_method: str = "heun", distance: str = "l2",
            huber_c: float = 7.6e-4, **_: Any) -> tuple[Tensor, dict]:
    """Consistency distillation, CD (Song et al. 2023): CT with the neighbour x_r given by one teacher ODE step.

    Paper (EDM time): L = lambda d(f(x_{n+1}, sigma_{n+1}), sg f(x_hat_n, sigma_n)), x_hat_n = one Heun step of the
    teacher's probability-flow ODE from x_{n+1}. Ours (f(x, s) = X(x, s, 1), the noisier level is the smaller s):

        L = (1 / delta) d( X(x_s, s, 1), sg X(x_hat_r, r, 1) ),   x_hat_r = Heun step of dx/dt = v_teacher from s to r.

    At the exact map with a perfect teacher the residual is the solver's local error, O(delta^3) for Heun.
    Stop-gradient: on the target (and the teacher). Time sampling, fraction and weighting as in `ct_loss`:
    s uniform on [0, 1 - delta], delta = 0.02, fraction 0 of samples with s = t, weight 1 / delta.
    """
    delta = batch.r - batch.s
    x = path_point(batch.x0, batch.x1, batch.s)
    X_s = flow_map(model, x, batch.s, batch.t)
    with torch.no_grad():
        x_r = teacher_solve(teacher, x, batch.s, batch.r, 1, teacher_method)  # the teacher's step s -> r
        X_r = flow_map(model, x_r, batch.r, batch.t)
    per = _distance(X_s, X_r, distance, huber_c) / delta
    return per.mean(), {"consistency": per.mean().detach(), "n_forward": 2, "n_jvp": 0, "n_backward": 1,
                        "n_teacher": 2 if teacher_method == "heun" else 1}


def ctm_loss(model: nn.Module, batch: Batch, teacher: Any = None, teacher_steps: int = 2,
             teacher_method: str = "heun", data_space: bool = True, **_: Any) -> tuple[Tensor, dict]:
    """Consistency trajectory models, CTM (Kim et al. 2024), without the GAN term.

    Paper (EDM time, data at 0; G(x_t, t, s) jumps from t down to s): soft consistency
    d( G_sg(G(x_t, t, s), s, 0), G_sg(G_sg(Solver(x_t, t, u; teacher), u, s), s, 0) ), u ~ U[s, t), plus DSM on the
    denoiser. Ours (start s, destination t, intermediate r, s <= r <= t; the subscript sg = frozen parameters):

        off-diagonal:  || X_sg( X(x_s, s, t), t, 1 ) - X_sg( sg X(x_hat_r, r, t), t, 1 ) ||^2,
                       x_hat_r = teacher ODE from s to r (`teacher_steps` Heun steps);
        diagonal:      || u(x_s, s, s) - (x1 - x0) ||^2   (the DSM / flow-matching term on the diagonal).

    Comparing through the frozen map to the data (`data_space`) is CTM's choice; it matters only when t < 1.
    Stop-gradient: on the target jump and on the parameters of the outer map X_sg(., t, 1) (gradients still flow
    through its input). Time sampling (defaults): (s, t) uniform on the triangle, r = s + U(0, 1)(t - s), a fraction
    0.25 of samples on the diagonal. Weighting: uniform (CTM's adaptive DSM/GAN weights are not used).
    """
    diag = diagonal_mask(batch)
    off = ~diag
    x = path_point(batch.x0, batch.x1, batch.s)
    per = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    n_fwd = 0
    if bool(diag.any()):
        u_diag = model(x[diag], batch.s[diag], batch.s[diag])
        per = per.index_put((diag.nonzero().squeeze(1),), per_sample_mse(u_diag, (batch.x1 - batch.x0)[diag]))
        n_fwd += 1
    if bool(off.any()):
        s, r, t = batch.s[off], batch.r[off], batch.t[off]
        X_st = flow_map(model, x[off], s, t)
        with torch.no_grad():
            x_r = teacher_solve(teacher, x[off], s, r, teacher_steps, teacher_method)
            X_rt = flow_map(model, x_r, r, t)
        n_fwd += 2
        if data_space:
            outer = _frozen(model)
            one = torch.ones_like(t)
            X_st = X_st + expand_t(one - t, X_st) * outer(X_st, t, one)  # X_sg(X_st, t, 1), input differentiable
            with torch.no_grad():
                X_rt = X_rt + expand_t(one - t, X_rt) * outer(X_rt, t, one)
            n_fwd += 2
        per = per.index_put((off.nonzero().squeeze(1),), per_sample_mse(X_st, X_rt))
    n_teacher = teacher_steps * (2 if teacher_method == "heun" else 1)
    return per.mean(), {"consistency": _mean(per, off), "fm": _mean(per, diag), "n_forward": n_fwd, "n_jvp": 0,
                        "n_backward": 1, "n_teacher": n_teacher}


def facm_loss(model: nn.Module, batch: Batch, teacher: Any = None, relax_p: float = 0.5, clamp: float | None = 1.0,
              norm_p: float = 0.5, norm_c: float = 1e-3, cos_weight: float = 1.0, **_: Any) -> tuple[Tensor, dict]:
    """Flow-anchored consistency model, FACM (Peng et al. 2025, official code `FACMLoss`).

    Paper (its time runs noise -> data like ours: x_t = t x1 + (1 - t) x0, F(x_t, t, 1) the average velocity to the
    data): CM term || F - sg[F - alpha clip(g, -1, 1)] ||^2 normalised and weighted by cos(pi t / 2), with
    g = F - v - (1 - t) dF/dt (dF/dt along v, one JVP), alpha = 1 - t^p (p = 0.5); plus the flow-matching anchor
    MSE + (1 - cosine similarity) between F on the diagonal and v. Ours (u = F; s the start, destination 1):

        CM:  e = || u(x_s, s, 1) - sg[u - alpha clip(-E)] ||^2,   E = v - u + (1 - s) du_v,   alpha = 1 - s^p,
             term = cos(pi s / 2) e / sg(e + c)^q            (q = `norm_p` = 0.5, c = 1e-3);
        FM:  || u(x_s, s, s) - v ||^2 / d + k (1 - cos(u(x_s, s, s), v))    (the anchor, on the diagonal; k = 1).

    (`cos_weight` k = 0 drops the cosine term; with it, fitting is markedly slower on low-dimensional data, where a
    velocity near zero makes the direction term stiff.)

    v is the teacher's velocity (distillation, the paper's main setting) or, with teacher None, the conditional
    velocity x1 - x0 (FACM from scratch). When is the fixed point the exact map? With a teacher, at the exact map
    E = 0 and u(x, s, s) = v for every sample, so each sample's update vanishes whatever the clip, the cosine term
    and the weights: unbiased. From scratch, v = x1 - x0 is noisy given x_s and three pieces are nonlinear in it:
    the cosine anchor (its minimiser is a mean direction, not the mean velocity), the clip of g (g is linear in v,
    clip(g) is not) and the adaptive normaliser (q > 0 correlates the weight with the noise). FACM from scratch is
    unbiased only with cos_weight = 0, clamp = None and norm_p = 0; the defaults (k = 1, clip 1, q = 0.5) move the
    fixed point (measured: tests/losses/test_losses_mixture_stationarity.py). Our two-time network holds both, so
    the anchor sits on the diagonal s = t (the official code's auxiliary-time option; its default instead shifts the
    anchor's time to 2 - t).
    Stop-gradient: the whole CM target (JVP included) and the adaptive normaliser; the anchor is plain regression.
    Time sampling (defaults): s = 1 - (2/pi) arctan(exp(N(-0.8, 1.6))), destination t = 1; every sample gives both
    terms, so a fraction 1 of samples also yields a diagonal (s = t) anchor evaluation. Weighting: cos(pi s / 2) on
    the CM term, 1 on the anchor.
    """
    x = path_point(batch.x0, batch.x1, batch.s)
    v = (batch.x1 - batch.x0) if teacher is None else as_teacher(teacher)(x, batch.s)
    u_fm = model(x, batch.s, batch.s)
    fm = per_sample_mse(u_fm, v) + cos_weight * (1 - F.cosine_similarity(u_fm.flatten(1), v.flatten(1), dim=1))
    res, u, _ = eulerian_residual(model, x, batch.s, batch.t, v)
    g = -res.detach()  # FACM's g = F - v_bar = u - v - (1 - s) du = -E
    if clamp is not None:
        g = g.clamp(-clamp, clamp)
    alpha = expand_t(1 - batch.s.pow(relax_p), x)  # alpha = 1 - s^p
    err = per_sample_mse(u, (u - alpha * g).detach())
    cm = torch.cos(0.5 * math.pi * batch.s) * err * adaptive_weight(err, norm_p, norm_c)
    loss = (cm + fm).mean()
    return loss, {"cm": cm.mean().detach(), "fm": fm.mean().detach(),
                  "eulerian": per_sample_mse(res).mean().detach(),
                  "n_forward": 1, "n_jvp": 1, "n_backward": 1, "n_teacher": 0 if teacher is None else 1}


def _mean(values: Tensor, mask: Tensor) -> Tensor:
    return values[mask].mean().detach() if bool(mask.any()) else torch.zeros((), dtype=values.dtype)


CT_SETTINGS = {"time_sampler": "uniform", "mu": 0.0, "sigma": 1.0, "delta": 0.02, "distance": "l2",
               "huber_c": 7.6e-4}
EDM_CONVENTION = ("paper: EDM time, data at sigma = 0, f(x, sigma) -> data; "
                  "ours: f(x, s) = X(x, s, 1), noisier = smaller s")

register(LossSpec(
    name="ct",
    display_name="CT", sampler="consistency", fn=ct_loss, family=EULERIAN, setting="marginal-from-conditional",
    paper="Song, Dhariwal, Chen & Sutskever 2023, Consistency models (CT); Song & Dhariwal 2023 (iCT); "
          "Geng et al. 2024 (ECT)",
    convention=EDM_CONVENTION, time_inputs=2, prediction="average_velocity", make_batch=consistency_batch,
    defaults=dict(CT_SETTINGS),
    summary="X(x_s, s, 1) vs sg X(x_{s+delta}, s+delta, 1) on the same noise-data segment"))

register(LossSpec(
    name="cd", display_name="CD", sampler="consistency", fn=cd_loss, family=EULERIAN, setting="distillation",
    paper="Song, Dhariwal, Chen & Sutskever 2023, Consistency models (CD)",
    convention=EDM_CONVENTION, time_inputs=2, prediction="average_velocity", make_batch=consistency_batch,
    defaults={**CT_SETTINGS, "teacher": None, "teacher_method": "heun"},
    summary="X(x_s, s, 1) vs sg X(teacher step s -> s+delta, s+delta, 1)"))

register(LossSpec(
    name="ctm", display_name="CTM", fn=ctm_loss, family=EULERIAN, setting="distillation",
    paper="Kim et al. 2024, Consistency trajectory models (CTM), soft consistency + DSM, no GAN",
    convention="paper: EDM time, G(x_t, t, s) jumps down to s < t; ours: start s, destination t, s <= r <= t",
    time_inputs=2, prediction="average_velocity", make_batch=two_time_batch,
    defaults={**TWO_TIME_SETTINGS, "teacher": None, "teacher_steps": 2, "teacher_method": "heun", "data_space": True},
    summary="X(x_s, s, t) vs sg X(teacher solve s -> r, r, t), compared after the frozen jump to the data"))

register(LossSpec(
    name="facm", display_name="FACM", sampler="consistency", fn=facm_loss, family=EULERIAN, setting="distillation",
    paper="Peng et al. 2025, Flow-anchored consistency models (FACM)",
    convention="paper: x_t = t x1 + (1 - t) x0 (noise -> data, like ours); F(x_t, t, 1) = u(x, s = t, 1)",
    time_inputs=2, prediction="average_velocity", make_batch=facm_batch,
    defaults={"p_mean": -0.8, "p_std": 1.6, "teacher": None, "relax_p": 0.5, "clamp": 1.0, "norm_p": 0.5,
              "norm_c": 1e-3, "cos_weight": 1.0},
    summary="continuous-time CM to the data (relaxed, clipped sCM tangent) + flow-matching anchor on the diagonal"))
