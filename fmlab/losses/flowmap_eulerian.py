"""Eulerian flow-map losses: the destination stays put while the start slides along its trajectory.

Convention (fmlab.conventions): t = 0 is noise, t = 1 is data; x_s = (1 - s) x0 + s x1; a flow map
X(x, s, t) = x + (t - s) u(x, s, t) moves from s to t (s <= t, toward the data). The Eulerian rule ("the bridge":
a fixed destination seen from every point of a trajectory) says that X(x_s, s, t) does not change as x_s moves
along dx/ds = v(x, s):

    E(x, s, t) := d/ds X(x_s, s, t) = dX/ds + (dX/dx) v = v - u + (t - s) du_v = 0,

    du_v := d/ds u(x_s, s, t) along v = (du/dx) v + du/ds   (one JVP with tangent (v, 1, 0), `partial_s`).

Every loss of this module (and of fmlab.losses.consistency / meanflow) drives E to zero; they differ in where v
comes from (a teacher, the model's own diagonal, the conditional velocity x1 - x0), in what sits under
stop-gradient, and in whether the s-derivative is a JVP or a finite difference. The helpers below are shared by
those modules.

Losses here: EMD (Boffi et al. 2024), ESD (Boffi et al. 2025) and AYF-EMD (Sabour et al. 2025).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_float
from ..flowmaps import as_teacher, flow_map_jvp, partial_s
from ..paths import expand_t, path_point
from .batch import Batch, two_time_batch
from .flow_matching import per_sample_mse
from .registry import EULERIAN, LossSpec, register

__all__ = ["eulerian_residual", "adaptive_weight", "gap_batch", "emd_loss", "esd_loss",
           "ayf_emd_loss", "TWO_TIME_SETTINGS", "diagonal_mask"]

TWO_TIME_SETTINGS: dict[str, Any] = {"diagonal_fraction": 0.25, "time_sampler": "uniform", "mu": 0.0, "sigma": 1.0}


# --- shared helpers ------------------------------------------------------------------------------------------

def eulerian_residual(model: nn.Module, x: Tensor, s: Tensor, t: Tensor, v: Tensor,
                      warmup: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(E, u, du): E = v - u + warmup (t - s) du with u = u(x, s, t) and du = d/ds u along v (one JVP).

    E = d/ds X(x_s, s, t) when warmup = 1; it vanishes for the exact flow map when v is the true velocity.
    u and du stay differentiable: a loss detaches what its method puts under stop-gradient.
    """
    u, du = partial_s(model, x, s, t, v)
    return v - u + warmup * expand_t(t - s, x) * du, u, du  # E = v - u + (t - s) du


def adaptive_weight(err: Tensor, p: float, c: float) -> Tensor:
    """w = sg(1 / (err + c)^p), MeanFlow's adaptive loss weight, for a per-sample error err [B] (p = 0: w = 1).

    err here is the MEAN of the squared error over the d dimensions (fmlab's per-sample MSE). The official MeanFlow
    and iMF code weight the SUM over dimensions, w = 1 / (||Delta||^2 + c_paper)^p: that is d^-p / (err + c_paper /
    d)^p, our weight with c = c_paper / d up to the constant d^-p. SoFlow's official code weights the mean, as here.
    With p > 0 the weight depends on the noise of a conditional target, so the expected update no longer vanishes
    at the conditional mean: the fixed point becomes E[w y | x] / E[w | x] (mode seeking when the target is
    multimodal; benchmarks/meanflow_weighting.py, tests/losses/test_losses_mixture_stationarity.py).
    """
    check_float(p, "norm_p", 0.0)
    check_float(c, "norm_c", 0.0)
    if p == 0:
        return torch.ones_like(err)
    if c == 0 and bool((err.detach() == 0).any()):
        raise ValueError("norm_c must be > 0 when norm_p > 0 and an error is exactly 0 (the weight would be infinite)")
    return (err.detach() + c).pow(-p)  # w = 1 / (err + c)^p, under stop-gradient


def diagonal_mask(batch: Batch) -> Tensor:
    """Samples with s = t (the diagonal, where u(x, t, t) is the velocity)."""
    return batch.s == batch.t


def gap_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
              diagonal_fraction: float = 0.0, gap_mu: float = -0.8, gap_sigma: float = 1.0, **_: Any) -> Batch:
    """Times drawn by their gap: t - s ~ logit-normal(gap_mu, gap_sigma), s ~ U(0, 1 - (t - s)).

    (Align Your Flow's interval sampling; symmetric under t -> 1 - t, so it reads the same in either convention.)
    Then round(diagonal_fraction * B) random samples get s = t. r = s + lam (t - s), lam ~ U(0, 1).
    """
    check_float(diagonal_fraction, "diagonal_fraction", 0.0, 1.0)
    check_float(gap_sigma, "gap_sigma", 0.0, strict=True)
    n, dev, dtype = len(x1), x1.device, x1.dtype
    gap = torch.sigmoid(gap_mu + gap_sigma * torch.randn(n, generator=generator, device=dev)).to(dtype)
    s = (torch.rand(n, generator=generator, device=dev).to(dtype) * (1 - gap)).clamp(0, 1)  # s ~ U(0, 1 - gap)
    t = (s + gap).clamp(max=1.0)
    n_diag = int(round(diagonal_fraction * n))
    if n_diag:
        diag = torch.randperm(n, generator=generator, device=dev)[:n_diag]
        s = s.clone()
        s[diag] = t[diag]
    lam = torch.rand(n, generator=generator, device=dev).to(dtype)
    r = (s + lam * (t - s)).clamp(s, t)
    return Batch(x0=x0, x1=x1, t=t, s=s, r=r, labels=labels)


# --- the losses --------------------------------------------------------------------------------------------

def emd_loss(model: nn.Module, batch: Batch, teacher: Any = None, **_: Any) -> tuple[Tensor, dict]:
    """Eulerian map distillation, EMD (Boffi, Albergo & Vanden-Eijnden 2024, "Flow map matching", Eq. EMD).

    Paper: L = int int E_{x_s ~ rho_s} |d_s X_{s,t}(x_s) + grad X_{s,t}(x_s) b_s(x_s)|^2 ds dt with a pretrained
    velocity b and the stochastic interpolant I_s = alpha_s x0 + beta_s x1, x0 noise at s = 0: the paper's time runs
    noise -> data like ours, so X_{s,t} = X(x, s, t) and b = the teacher v. Ours, with X = x + (t - s) u:

        L = E || v(x_s, s) - u + (t - s) du_v ||^2,     du_v = d/ds u(x_s, s, t) along v  (one JVP).

    Stop-gradient: none on the student; the teacher v is frozen. The gradient flows through the JVP
    (second-order autograd: the Eulerian term differentiates the network in x and s).
    Time sampling (defaults): (s, t) uniform on the triangle s <= t, with a fraction 0.25 of samples on the
    diagonal s = t, where the residual is v - u(x, s, s) (velocity distillation). Weighting: uniform.
    x_s is the interpolant point of an independent (or OT) pair, as in the paper.
    """
    x = path_point(batch.x0, batch.x1, batch.s)
    v = as_teacher(teacher)(x, batch.s)
    res, _, _ = eulerian_residual(model, x, batch.s, batch.t, v)
    err = per_sample_mse(res)
    return err.mean(), {"eulerian": err.mean().detach(), "n_forward": 0, "n_jvp": 1, "n_backward": 1,
                        "n_teacher": 1}


def esd_loss(model: nn.Module, batch: Batch, **_: Any) -> tuple[Tensor, dict]:
    """Eulerian self-distillation, ESD (Boffi, Albergo & Vanden-Eijnden 2025, "How to build a consistency model";
    code github.com/nmboffi/flow-maps, `esd_term` with stopgrad_type "full", the setting of its ESD experiments).

    Paper (time noise -> data, like ours): L = E |b_{t,t}(I_t) - dI_t/dt|^2 + E |d_s X_{s,t}(I_s) + sg[grad X_{s,t}
    (I_s) b_{s,s}(I_s)]|^2 with b_{s,s} = u(., s, s) the model's own velocity under stop-gradient; the code computes
    d_s X by a JVP in s with gradient and the advective term grad X b by a JVP in x with tangent b, all under
    stop-gradient ("avoid backpropagating through the spatial Jacobian"). With X = x + (t - s) u, d_s X = -u +
    (t - s) d_s u and (grad X) b = b + (t - s)(du/dx) b, so ours reads

        off-diagonal (s < t):  || b - u(x_s, s, t) + (t - s) (d_s u + sg[(du/dx) b]) ||^2,   b = sg[u(x_s, s, s)];
        diagonal (s = t):      || (x1 - x0) - u(x_s, s, s) ||^2   (flow matching trains the diagonal),

    both the one formula E = b - u + (t - s)(d_s u + sg[(du/dx) b]) with b = x1 - x0 on the diagonal rows.
    d_s u: a JVP with tangent (0, 1, 0) whose output keeps its graph; (du/dx) b: a second JVP with tangent (b, 0, 0)
    run without a graph. Stop-gradient: the self-teacher velocity b and the spatial JVP; the gradient flows through
    u and through d_s u (second order in s only). The code evaluates the stop-gradient terms with `teacher_params`
    (the online or an EMA copy); here they use the online parameters. Time sampling (defaults): (s, t) uniform on
    the triangle, a fraction 0.25 on the diagonal (the paper's checker runs use 0.75 and a separate diagonal batch;
    with 0.25 the self-teacher is trained too rarely and ESD diverges on the checkerboard, with 0.75 it does not:
    benchmarks/esd_diagonal.py).
    Weighting: uniform (the paper's learned weights exp(-w_{s,t}) L + w_{s,t} are not used).
    """
    x = path_point(batch.x0, batch.x1, batch.s)
    s, t = batch.s, batch.t
    diag = diagonal_mask(batch)
    with torch.no_grad():
        b_self = model(x, s, s)  # the self-teacher b = u(x, s, s), sg
    b = torch.where(diag.reshape(-1, *([1] * (x.ndim - 1))), batch.x1 - batch.x0, b_self)
    u, du_s = flow_map_jvp(model, x, s, t, ds=torch.ones_like(s))  # d/ds u, differentiated
    with torch.no_grad():
        _, du_x = flow_map_jvp(model, x, s, t, dx=b)  # sg[(du/dx) b]: the spatial JVP, not differentiated
    res = b - u + expand_t(t - s, x) * (du_s + du_x)  # E = b - u + (t - s)(d_s u + sg[(du/dx) b])
    err = per_sample_mse(res)
    return err.mean(), {"eulerian": _masked_mean(err, ~diag), "fm": _masked_mean(err, diag),
                        "n_forward": 1, "n_jvp": 2, "n_backward": 1}


def ayf_emd_loss(model: nn.Module, batch: Batch, teacher: Any = None, tangent_warmup: float = 1.0,
                 tangent_norm: float = 0.1, **_: Any) -> tuple[Tensor, dict]:
    """AYF-EMD: Align Your Flow's Eulerian map distillation (Sabour, Fidler & Kreis 2025, Algorithm 1).

    Paper (data at time 0; the student jumps from t down to s < t, f(x_t, t, s) = x_t + (s - t) F(x_t, t, s)):
    grad L = E[ w sign(t - s) grad_theta f^T sg(df/dt) ], df/dt along the teacher's ODE, implemented as
    || F - sg(F - g / (||g|| + c)) ||^2 with the tangent g = F - v + r (t - s) dF/dt (r: tangent warm-up, c = 0.1).
    With tau = 1 - t (fmlab.conventions): F = -u, v_paper = -v and d/dt_paper = -d/ds, so g is our Eulerian residual
    E = v - u + r (t - s) du_v and the loss reads, in ours,

        L = E || u(x_s, s, t) - sg[ u + E / (||E|| + c) ] ||^2,     gradient -2 E / (||E|| + c) . grad u.

    Stop-gradient: on the whole tangent (no second-order terms, unlike EMD); only u carries gradient.
    The tangent normalisation (c = `tangent_norm`) bounds each sample's push; `tangent_warmup` r < 1 scales the
    JVP term (the paper ramps r from 0 to 1 over the first iterations; r < 1 moves the fixed point, so keep 1.0
    once warmed up). Time sampling (defaults): the paper's interval sampling, t - s ~ logit-normal(-0.8, 1.0),
    s ~ U(0, 1 - (t - s)), fraction 0 of samples on the diagonal (as s -> t the gradient tends to normalised flow
    matching on the teacher). Weighting: uniform w = 1.
    """
    check_float(tangent_norm, "tangent_norm", 0.0, strict=True)
    check_float(tangent_warmup, "tangent_warmup", 0.0, 1.0)
    x = path_point(batch.x0, batch.x1, batch.s)
    v = as_teacher(teacher)(x, batch.s)
    res, u, _ = eulerian_residual(model, x, batch.s, batch.t, v, warmup=tangent_warmup)
    res = res.detach()
    norm = res.flatten(1).norm(dim=1).reshape(-1, *([1] * (res.ndim - 1)))
    target = (u + res / (norm + tangent_norm)).detach()  # sg[u + E / (||E|| + c)]
    loss = per_sample_mse(u, target).mean()
    return loss, {"eulerian": per_sample_mse(res).mean(), "tangent_norm": norm.mean(),
                  "n_forward": 0, "n_jvp": 1, "n_backward": 1, "n_teacher": 1}


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return values[mask].mean().detach() if bool(mask.any()) else torch.zeros((), dtype=values.dtype)


CONVENTION_NOISE_TO_DATA = "time runs noise (0) -> data (1) like ours; X_{s,t} = X(x, s, t), b = v"

register(LossSpec(
    name="emd", display_name="EMD", fn=emd_loss, family=EULERIAN, setting="distillation",
    paper="Boffi, Albergo & Vanden-Eijnden 2024, Flow map matching (EMD)", convention=CONVENTION_NOISE_TO_DATA,
    time_inputs=2, prediction="average_velocity", make_batch=two_time_batch,
    defaults={**TWO_TIME_SETTINGS, "teacher": None},
    summary="|| d/ds X(x_s, s, t) along the teacher's v ||^2, differentiated through the JVP"))

register(LossSpec(
    name="esd", display_name="ESD", fn=esd_loss, family=EULERIAN, setting="self-distillation",
    paper="Boffi, Albergo & Vanden-Eijnden 2025, How to build a consistency model (ESD)",
    convention=CONVENTION_NOISE_TO_DATA, time_inputs=2, prediction="average_velocity", make_batch=two_time_batch,
    defaults=dict(TWO_TIME_SETTINGS),
    summary="EMD with the model's own sg velocity u(x, s, s), the spatial JVP under sg, plus flow matching"))

register(LossSpec(
    name="ayf_emd", display_name="AYF (Eulerian)", fn=ayf_emd_loss, family=EULERIAN, setting="distillation",
    paper="Sabour, Fidler & Kreis 2025, Align Your Flow (AYF-EMD, Algorithm 1)",
    convention="paper: data at 0, f(x_t, t, s) with s < t; ours: tau = 1 - t, F = -u, tangent g = our residual E",
    time_inputs=2, prediction="average_velocity", make_batch=gap_batch,
    defaults={"diagonal_fraction": 0.0, "gap_mu": -0.8, "gap_sigma": 1.0, "teacher": None, "tangent_warmup": 1.0,
              "tangent_norm": 0.1},
    summary="push u along the normalised, stop-gradient Eulerian tangent E / (||E|| + c) (sCM-style)"))
