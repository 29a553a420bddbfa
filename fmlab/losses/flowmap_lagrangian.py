"""Lagrangian flow-map losses: follow the particle. The exact map satisfies

    d/dt X(x, s, t) = v(X(x, s, t), t),        X(x, s, s) = x                                         (L)

(the arrival point moves with the velocity found where it arrives: "the canoe"). With X = x + (t - s) u,
d/dt X = u + (t - s) d/dt u, computed by one forward-mode JVP with tangent (0, 0, 1) (fmlab.flowmaps), or by
finite differences (PID). The losses differ in where v comes from (a teacher: distillation; the model's own
diagonal: self-distillation), where the stop-gradients sit, and how the residual is turned into an update.

Our convention (fmlab.conventions): t = 0 noise, t = 1 data, x_s = (1 - s) x0 + s x1, jumps from s to t >= s.
Errors are per-sample squared norms divided by the dimension, averaged over the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..flowmaps import as_teacher, flow_map, flow_map_X_jvp, fm_error, frozen, path_point, per_sample_sq
from ..paths import expand_t
from .batch import Batch, two_time_batch
from .registry import LAGRANGIAN, LossSpec, register

__all__ = [
    "TWO_TIME", "lmd_loss", "lsd_loss", "ayf_tangent", "ayf_lagrangian_loss", "tvm_loss", "pid_batch", "pid_loss",
]


TWO_TIME = {"diagonal_fraction": 0.0, "time_sampler": "uniform", "mu": 0.0, "sigma": 1.0}


def _diag(n_forward: int, n_jvp: int, **terms: Tensor) -> dict[str, Any]:
    return {**{k: v.detach().mean() for k, v in terms.items()}, "n_forward": n_forward, "n_jvp": n_jvp,
            "n_backward": 1}


def _arrival(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """x_s on the path, and (X, d/dt X) at (x_s, s, t) from one JVP; both keep their graphs."""
    x_s = path_point(batch.x0, batch.x1, batch.s)
    X, dX = flow_map_X_jvp(model, x_s, batch.s, batch.t, dt=torch.ones_like(batch.t))
    return x_s, X, dX


# --- Lagrangian map distillation (LMD) -------------------------------------------------------------------------

def lmd_loss(model: nn.Module, batch: Batch, teacher: Any = None, **_: Any) -> tuple[Tensor, dict]:
    """Lagrangian map distillation, LMD (Boffi, Albergo, Vanden-Eijnden 2024, "Flow map matching", Prop. 3.7).

    Paper (noise at t = 0 as ours; b a pre-trained velocity):
        L = E_{s,t} w_{s,t} E ||d/dt X_{s,t}(I_s) - b_t(X_{s,t}(I_s))||^2.
    Ours: ||d/dt X(x_s, s, t) - v_T(X(x_s, s, t), t)||^2 with the teacher v_T (`teacher`: a trained velocity model,
    the diagonal of a two-time model, or a GaussianMixture's closed-form velocity). Stop-gradient: none. The
    gradient flows through the JVP d/dt X (differentiating a forward-mode derivative in reverse mode) and through
    the arrival point X into the teacher's input (the teacher's own parameters are not trained; the closed-form
    mixture velocity is differentiable in x too). Default time sampling: (s, t) uniform on the triangle s <= t,
    fraction of s = t rows 0 (at s = t the residual is u(x, t, t) - v_T(x, t): velocity distillation). Weight 1.
    """
    field = as_teacher(teacher)
    _, X, dX = _arrival(model, batch)
    res = per_sample_sq(dX, field.differentiable(X, batch.t))
    return res.mean(), _diag(2, 1, lagrangian=res)


# --- Lagrangian self-distillation (LSD) ------------------------------------------------------------------------

def lsd_loss(model: nn.Module, batch: Batch, rescale: bool = False, **_: Any) -> tuple[Tensor, dict]:
    """Lagrangian self-distillation, LSD (Boffi, Albergo, Vanden-Eijnden 2025, "How to build a consistency model";
    code github.com/nmboffi/flow-maps, `lsd_term`).

    Paper (noise at t = 0 as ours; X_{s,t}(x) = x + (t - s) v_{s,t}(x), v_{t,t} the implied velocity):
        L = E ||v_{t,t}(I_t) - dI_t/dt||^2  +  E ||d/dt X_{s,t}(I_s) - sg[v_{t,t}(sg[X_{s,t}(I_s)])]||^2.
    Ours: ||u(x_t, t, t) - (x1 - x0)||^2 + ||d/dt X(x_s, s, t) - sg[u(X, t, t)]||^2 with X = X(x_s, s, t) and the
    same (x0, x1) for both terms. Stop-gradient: the model's own velocity at the arrival point (value and input,
    the code's "convex" option); the gradient flows through the JVP d/dt X. `rescale` divides the residual by
    (t - s) (the code's rescale_lsd, off by default). Default time sampling: (s, t) uniform on the triangle,
    fraction of s = t rows 0 (the diagonal is trained by the flow-matching term at time t on every row). Weight 1
    (the code's optional learned weight exp(-w) L + w is omitted).
    """
    fm = fm_error(model, batch.x0, batch.x1, batch.t)
    _, X, dX = _arrival(model, batch)
    with torch.no_grad():
        v = model(X.detach(), batch.t, batch.t)  # sg[u(sg[X], t, t)]
    res = dX - v
    if rescale:
        res = res / expand_t((batch.t - batch.s).clamp_min(1e-3), res)
    lag = per_sample_sq(res)
    return (fm + lag).mean(), _diag(3, 1, fm=fm, lagrangian=lag)


# --- Align Your Flow, Lagrangian form ---------------------------------------------------------------------------

@torch.no_grad()
def ayf_tangent(model: nn.Module, batch: Batch, teacher: Any, tangent_c: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x_s, g_hat, ||g||^2 per sample): AYF's stop-gradient tangent at x_s = (1 - s) x0 + s x1, the Lagrangian
    residual g = d/dt X(x_s, s, t) - v_T(X, t) normalised to g / (||g|| + c) (c = tangent_c; 0: not normalised)."""
    if tangent_c < 0:
        raise ValueError(f"tangent_c must be >= 0, got {tangent_c}")
    field = as_teacher(teacher)
    x_s = path_point(batch.x0, batch.x1, batch.s)
    X, dX = flow_map_X_jvp(model, x_s, batch.s, batch.t, dt=torch.ones_like(batch.t))
    g = dX - field(X, batch.t)
    res = per_sample_sq(g)
    if tangent_c > 0:
        g = g / (g.flatten(1).norm(dim=1) + tangent_c).reshape(-1, *([1] * (g.ndim - 1)))
    return x_s, g, res


def ayf_lagrangian_loss(model: nn.Module, batch: Batch, teacher: Any = None, tangent_c: float = 0.1,
                        **_: Any) -> tuple[Tensor, dict]:
    """Align Your Flow, Lagrangian map distillation AYF-LMD (Sabour, Fidler, Kreis 2025, "Align Your Flow: scaling
    continuous-time flow map distillation", arXiv 2506.14603).

    Paper (data at t = 0, noise at t = 1; f_theta(x_t, t, s) jumps from t down to s, v_phi the teacher): the
    discrete loss ||f_theta(x_t, t, s) - sg[f_theta-(x_t, t, s + e) + e v_phi(f_theta-(x_t, t, s + e), s + e)]||^2
    (one teacher Euler step after the student's jump) has, as e -> 0, the gradient of the surrogate
        L = E w(t, s) < f_theta(x_t, t, s), sg[ d/ds f_theta-(x_t, t, s) - v_phi(f_theta-(x_t, t, s), s) ] >,
    with the sCM-style tangent normalisation g -> g / (||g|| + c). Ours (t_paper -> 1 - t; the jump from s to t):
        L = E < X(x_s, s, t), sg[g / (||g|| + c)] >,   g = d/dt X(x_s, s, t) - v_T(X(x_s, s, t), t)   (per sample,
    <.,.> the mean over dimensions). Its gradient is that of (1/2) ||X - sg[X - g]||^2: a Lagrangian residual step.
    The value of L is not a residual (diagnostics report ||g||^2 as 'lagrangian'). Stop-gradient: the whole
    tangent g (its JVP runs on the current parameters without a graph). Default time sampling: (s, t) uniform on
    the triangle, fraction of s = t rows 0. Weight w = 1; tangent normalisation c = `tangent_c` (0: none).
    """
    x_s, g, res = ayf_tangent(model, batch, teacher, tangent_c)
    X = flow_map(model, x_s, batch.s, batch.t)
    surrogate = (X * g).flatten(1).mean(1)
    return surrogate.mean(), _diag(3, 1, lagrangian=res)


# --- terminal velocity matching (TVM) ---------------------------------------------------------------------------

def tvm_loss(model: nn.Module, batch: Batch, ema: nn.Module | None = None, **_: Any) -> tuple[Tensor, dict]:
    """Terminal velocity matching, TVM (Zhou, Parger, Haque, Song 2025, "Terminal Velocity Matching",
    arXiv 2511.19797).

    Paper (data at t = 0, noise at t = 1; f(x_t, t, s) = x_t + (s - t) F(x_t, t, s) jumps from t to s; u the
    instantaneous velocity u(x, s) = F(x, s, s)): regularise the map at its TERMINAL time s,
        L = E ||d/ds f_theta(x_t, t, s) - u_theta-(f_theta(x_t, t, s), s)||^2 + E ||u_theta(x_s, s) - v(x_s | x)||^2,
    the second term flow matching at the terminal time on the same noisy pair. Ours (t_paper -> 1 - t):
        ||d/dt X(x_s, s, t) - u_sg(X(x_s, s, t), t, t)||^2  +  ||u(x_t, t, t) - (x1 - x0)||^2,
    where u_sg is the model with its PARAMETERS under stop-gradient (theta-) but its input X differentiable: the
    gradient flows through the JVP d/dt X and through the arrival point X into the frozen terminal velocity. This
    is where TVM differs from LSD (which stops the gradient at X as well). Default time sampling: (s, t) uniform on
    the triangle, fraction of s = t rows 0 (the flow-matching term at time t trains the diagonal on every row).
    Weight 1 on both terms. EMA: the paper evaluates one call with EMA weights; `ema` (a model of the same
    architecture holding the EMA parameters, e.g. fmlab.train.Trainer.ema, passed as a runtime setting) takes the
    terminal velocity's place, u_ema(X, t, t), still differentiable in X; None (default) uses sg(theta). The paper's
    training code is not public (github.com/lumalabs/tvm lists training scripts as to do), so which call uses the
    EMA follows the survey's reading. (The paper's W2 bound and its architecture changes for Lipschitz control are
    not reproduced; its exact time sampling and weighting could not be checked.)
    """
    fm = fm_error(model, batch.x0, batch.x1, batch.t)
    _, X, dX = _arrival(model, batch)
    v = frozen(model if ema is None else ema)(X, batch.t, batch.t)  # u_{sg(theta)}(X, t, t), differentiable in X
    term = per_sample_sq(dX, v)
    return (fm + term).mean(), _diag(3, 1, fm=fm, terminal=term)


# --- physics-informed distillation (PID) ------------------------------------------------------------------------

def pid_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
              h: float = 1e-2, **_: Any) -> Batch:
    """PID's data-free batch: s = 0 (every trajectory starts from the noise x0), t ~ U(h, 1 - h); x1 is unused."""
    if not 0 < h < 0.5:
        raise ValueError(f"h must lie in (0, 0.5), got {h}")
    n = len(x0)
    t = h + (1 - 2 * h) * torch.rand(n, generator=generator, device=x0.device, dtype=x0.dtype)
    s = torch.zeros_like(t)
    return Batch(x0=x0, x1=x1, t=t, s=s, r=s, labels=labels)


def pid_loss(model: nn.Module, batch: Batch, teacher: Any = None, h: float = 1e-2, central: bool = True,
             **_: Any) -> tuple[Tensor, dict]:
    """Physics-informed distillation, PID (Tee et al. 2024, "Physics Informed Distillation for Diffusion Models",
    TMLR).

    Paper (EDM convention: sigma from sigma_max (noise) down to 0 (data)): a student x_theta(z, sigma) gives the
    whole teacher trajectory from the noise z, with the boundary x_theta(z, sigma_max) = z, trained like a PINN:
    the residual of the teacher's ODE, d x_theta / d sigma - v_phi(x_theta, sigma), with the time derivative taken
    by NUMERICAL DIFFERENTIATION (no JVP) and the teacher term under stop-gradient; data-free (noise only).
    Ours: the trajectory is our flow map from the noise, X(x0, 0, t) = x0 + t u(x0, 0, t) (boundary built in), and
        R = [X(x0, 0, t + h) - X(x0, 0, t - h)] / 2h - sg[v_T(X(x0, 0, t), t)],   L = ||R||^2
    (central difference, O(h^2); `central=False` uses the one-sided [X(t) - X(t - h)] / h). Stop-gradient: the
    teacher term; the gradient flows through every finite-difference evaluation. Default time sampling: s = 0
    always (fraction of s = t rows 0), t ~ U(h, 1 - h), h = 0.01. Weight 1 (the paper uses LPIPS on images; squared
    error here).
    """
    field = as_teacher(teacher)
    x0, t = batch.x0, batch.t
    zero = torch.zeros_like(t)
    X_t = flow_map(model, x0, zero, t)
    X_minus = flow_map(model, x0, zero, t - h)
    if central:
        X_plus = flow_map(model, x0, zero, t + h)
        dX = (X_plus - X_minus) / (2 * h)
    else:
        dX = (X_t - X_minus) / h
    v = field(X_t.detach(), t)
    res = per_sample_sq(dX, v)
    return res.mean(), _diag(3 if central else 2, 0, lagrangian=res)


# --- registry -----------------------------------------------------------------------------------------------------

_KW = dict(family=LAGRANGIAN, time_inputs=2, prediction="average_velocity")
_OURS = "noise at t=0, data at t=1 (as ours); X(x_s, s, t), s <= t"
_FLIP = "paper: data at t=0, map from t down to s; ours: t -> 1 - t, jump from s up to t"

register(LossSpec(
    name="lmd", display_name="LMD", fn=lmd_loss, setting="distillation", make_batch=two_time_batch,
    paper="Boffi, Albergo, Vanden-Eijnden 2024, Flow Map Matching (Lagrangian map distillation)",
    convention=_OURS, defaults={**TWO_TIME, "teacher": None},
    summary="d/dt X = v_teacher(X, t), differentiated through the JVP and the teacher's input", **_KW))

register(LossSpec(
    name="lsd", display_name="LSD", fn=lsd_loss, setting="self-distillation", make_batch=two_time_batch,
    paper="Boffi, Albergo, Vanden-Eijnden 2025, How to build a consistency model (LSD)",
    convention=_OURS, defaults={**TWO_TIME, "rescale": False},
    summary="FM at t + d/dt X = sg[u(X, t, t)]", **_KW))

register(LossSpec(
    name="ayf_lagrangian",
    display_name="AYF (Lagrangian)", fn=ayf_lagrangian_loss, setting="distillation", make_batch=two_time_batch,
    paper="Sabour, Fidler, Kreis 2025, Align Your Flow (AYF-LMD)",
    convention=_FLIP, defaults={**TWO_TIME, "teacher": None, "tangent_c": 0.1},
    summary="<X, sg[normalised Lagrangian residual]> surrogate", **_KW))

register(LossSpec(
    name="tvm", display_name="TVM", fn=tvm_loss, setting="self-distillation", make_batch=two_time_batch,
    paper="Zhou, Parger, Haque, Song 2025, Terminal Velocity Matching",
    convention=_FLIP, defaults={**TWO_TIME, "ema": None},
    summary="FM at t + d/dt X = u_{sg(theta)}(X, t, t), gradient through X", **_KW))

register(LossSpec(
    name="pid",
    display_name="PID", sampler="noise_only", fn=pid_loss, setting="data-free distillation", make_batch=pid_batch,
    paper="Tee et al. 2024, Physics Informed Distillation for Diffusion Models",
    convention="paper: EDM sigma from sigma_max (noise) to 0; ours: X(x0, 0, t), t from 0 (noise) to 1",
    defaults={"teacher": None, "h": 1e-2, "central": True},
    summary="finite-difference ODE residual of X(x0, 0, t) against the teacher, from noise only", **_KW))
