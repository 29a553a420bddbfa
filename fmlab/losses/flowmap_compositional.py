"""Compositional flow-map losses: two jumps must equal one, X(X(x, s, r), r, t) = X(x, s, t).

Our convention (fmlab.conventions): t = 0 noise, t = 1 data, x_r = (1 - r) x0 + r x1, a two-time model returns the
average velocity u(x, s, t) and X(x, s, t) = x + (t - s) u(x, s, t). Dividing the composition rule by (t - s)
gives it for u: with lam = (r - s) / (t - s),

    u(x, s, t) = lam u(x, s, r) + (1 - lam) u(X(x, s, r), r, t)                                      (*)

(a convex combination of the two shorter average velocities). Shortcut models (r = midpoint, dyadic times),
progressive self-distillation (PSD) and SplitMeanFlow all regress u(x, s, t) on a stop-gradient version of the
right-hand side of (*); they differ in where r sits, how (s, t) are drawn and how the diagonal is trained.
Flow map matching (FMM) enforces the composition with the inverse, X(X(x, t, s), s, t) = x, together with the
tangent condition; progressive flow map matching (PFMM) distils a teacher's composition of K jumps into one.
Errors are per-sample squared norms divided by the dimension (as in fmlab.losses.flow_matching), batch-averaged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..flowmaps import as_teacher, flow_map, flow_map_X_jvp, fm_error, path_point, per_sample_sq
from ..paths import expand_t
from .batch import Batch, two_time_batch
from .registry import COMPOSITIONAL, LossSpec, register

__all__ = [
    "SELF", "TWO_TIME", "shortcut_batch", "shortcut_loss", "psd_loss", "splitmeanflow_loss", "fmm_loss",
    "pfmm_loss", "convex_target",
]


SELF = "self-distillation"
TWO_TIME = {"diagonal_fraction": 0.0, "time_sampler": "uniform", "mu": 0.0, "sigma": 1.0}


def _diagnostics(n_forward: int, n_jvp: int = 0, **terms: Tensor) -> dict[str, Any]:
    return {**{k: v.detach().mean() for k, v in terms.items()}, "n_forward": n_forward, "n_jvp": n_jvp,
            "n_backward": 1}


def convex_target(model: nn.Module, x: Tensor, s: Tensor, r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """sg[lam u(x, s, r) + (1 - lam) u(X(x, s, r), r, t)], lam = (r - s) / (t - s) (1/2 where t = s); and lam."""
    gap = t - s
    lam = torch.where(gap > 0, (r - s) / gap.clamp_min(1e-12), torch.full_like(gap, 0.5))
    with torch.no_grad():
        u1 = model(x, s, r)
        x_r = x + expand_t(r - s, x) * u1  # X(x, s, r)
        u2 = model(x_r, r, t)
        return expand_t(lam, x) * u1 + expand_t(1 - lam, x) * u2, lam


# --- shortcut models -----------------------------------------------------------------------------------------

def shortcut_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                   diagonal_fraction: float = 0.75, levels: int = 7, **_: Any) -> Batch:
    """Shortcut models' times: a fraction `diagonal_fraction` of rows are flow-matching rows (s = r = t ~ U(0, 1));
    the others take a dyadic step d = 2^-k, k ~ U{0, ..., levels - 1}, s = j d with j ~ U{0, ..., 2^k - 1},
    t = s + d and the midpoint r = s + d / 2 (levels = 7: d from 1 down to 1/64, half-steps down to 1/128)."""
    if not 0.0 <= diagonal_fraction <= 1.0:
        raise ValueError(f"diagonal_fraction must lie in [0, 1], got {diagonal_fraction}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    n, dev, dtype = len(x1), x1.device, x1.dtype
    t_fm = torch.rand(n, generator=generator, device=dev, dtype=dtype)
    k = torch.randint(0, levels, (n,), generator=generator, device=dev)
    d = torch.pow(2.0, -k.to(dtype))
    j = torch.floor(torch.rand(n, generator=generator, device=dev, dtype=dtype) / d)  # j in {0, ..., 2^k - 1}
    s = j * d
    t, r = s + d, s + d / 2
    diag = torch.zeros(n, dtype=torch.bool, device=dev)
    diag[torch.randperm(n, generator=generator, device=dev)[: int(round(diagonal_fraction * n))]] = True
    s, r, t = (torch.where(diag, t_fm, v) for v in (s, r, t))
    return Batch(x0=x0, x1=x1, t=t.clamp(0, 1), s=s.clamp(0, 1), r=r.clamp(0, 1), labels=labels)


def shortcut_loss(model: nn.Module, batch: Batch, levels: int = 7, **_: Any) -> tuple[Tensor, dict]:
    """Shortcut models (Frans, Hafner, Levine, Abbeel 2024, "One step diffusion via shortcut models").

    Paper (x_t = (1 - t) x0 + t x1, noise at t = 0 as ours; s_theta(x_t, t, d) a step of size d):
        L = E ||s(x_t, t, 0) - (x1 - x0)||^2  +  E ||s(x_t, t, 2d) - sg[(s(x_t, t, d) + s(x'_{t+d}, t + d, d)) / 2]||^2,
        x'_{t+d} = x_t + d s(x_t, t, d),
    with d on a dyadic grid down to 1/128, where "the smallest step's target is the flow-matching velocity": the
    official code (kvfrans/shortcut-models, `get_targets`) conditions the flow-matching rows and the finest
    half-step d = 1/128 on the same step code log2(128), so the finest self-consistency target is built from two
    Euler steps of the d = 0 velocity. Ours: s(x, t, d) = u(x, t, t + d). With s = t_paper, t = s + 2d, r = s + d:
        flow-matching rows (s = t):  ||u(x_t, t, t) - (x1 - x0)||^2
        self-consistency rows:       ||u(x_s, s, t) - sg[(u(x_s, s, r) + u(X(x_s, s, r), r, t)) / 2]||^2
        finest level (2d = 2^-(levels-1), half-step d = 2^-levels):
                                     ||u(x_s, s, t) - sg[(u(x_s, s, s) + u(x'_r, r, r)) / 2]||^2,
                                     x'_r = x_s + d u(x_s, s, s)
    i.e. rule (*) at the midpoint, anchored at the bottom to the diagonal (the velocity). Stop-gradient: the whole
    two-half-step target. Default time sampling (shortcut_batch): a fraction 0.75 of the rows are s = t
    flow-matching rows (t ~ U(0, 1)); the other 0.25 use dyadic steps 2d = 2^-k, k ~ U{0..levels-1} (levels = 7),
    s on the grid of multiples of 2d. Weight 1 on both terms; the loss is the batch mean over all rows (each row
    carries one of the two terms).
    """
    diag = batch.s == batch.t
    fm = fm_error(model, batch.x0[diag], batch.x1[diag], batch.t[diag])
    off = ~diag
    s, r, t = batch.s[off], batch.r[off], batch.t[off]
    x_s = path_point(batch.x0[off], batch.x1[off], s)
    target, _ = convex_target(model, x_s, s, r, t)  # midpoint: lam = 1/2
    finest = (t - s) < 1.5 * 2.0 ** -(levels - 1)  # the smallest step 2d = 2^-(levels - 1)
    if bool(finest.any()):
        anchored = _diagonal_target(model, x_s[finest], s[finest], r[finest])
        target = target.index_put((finest.nonzero().squeeze(1),), anchored)
    sc = per_sample_sq(model(x_s, s, t), target)
    loss = (fm.sum() + sc.sum()) / len(batch.t)
    return loss, _diagnostics(4, fm=fm if fm.numel() else fm.new_zeros(1),
                              self_consistency=sc if sc.numel() else sc.new_zeros(1))


@torch.no_grad()
def _diagonal_target(model: nn.Module, x: Tensor, s: Tensor, r: Tensor) -> Tensor:
    """sg[(u(x, s, s) + u(x', r, r)) / 2], x' = x + (r - s) u(x, s, s): two Euler half-steps of the velocity."""
    v1 = model(x, s, s)
    v2 = model(x + expand_t(r - s, x) * v1, r, r)
    return 0.5 * (v1 + v2)


# --- progressive self-distillation (PSD) ---------------------------------------------------------------------

def psd_loss(model: nn.Module, batch: Batch, split: str = "uniform", **_: Any) -> tuple[Tensor, dict]:
    """Progressive self-distillation, PSD (Boffi, Albergo, Vanden-Eijnden 2025, "How to build a consistency model:
    learning flow maps via self-distillation"; code github.com/nmboffi/flow-maps).

    Paper (I_t = alpha_t x0 + beta_t x1, noise at t = 0 as ours; X_{s,t}(x) = x + (t - s) v_{s,t}(x)):
        L = E ||v_{t,t}(I_t) - dI_t/dt||^2  +  E ||X_{s,t}(I_s) - sg[X_{u,t}(X_{s,u}(I_s))]||^2,
    the second term written in the code for the average velocity as ||v_{s,t} - sg[(1 - h) v_{s,u} + h v_{u,t}]||^2
    ("uniform": u uniform in [s, t]) or with u the midpoint and weights 1/2 ("midpoint"). Ours (v = u, u = r):
        ||u(x_t, t, t) - (x1 - x0)||^2  +  ||u(x_s, s, t) - sg[lam u(x_s, s, r) + (1 - lam) u(X(x_s, s, r), r, t)]||^2
    with lam = (r - s) / (t - s), rule (*) in u-space (= the X-space error divided by (t - s)^2).
    Stop-gradient: both sub-jumps of the target (the code's "convex" option). Default time sampling: (s, t)
    uniform on the triangle s <= t, r uniform in [s, t] (split="uniform") or r = (s + t) / 2 ("midpoint"); fraction
    of s = t samples 0 (the diagonal is trained by the flow-matching term, evaluated at time t for every row, as
    in the official code). Weight 1 (the code's optional learned weight exp(-w) L + w is omitted).
    """
    if split not in ("uniform", "midpoint"):
        raise ValueError(f"split must be 'uniform' or 'midpoint', got {split!r}")
    s, t = batch.s, batch.t
    r = batch.r if split == "uniform" else 0.5 * (s + t)
    fm = fm_error(model, batch.x0, batch.x1, t)
    x_s = path_point(batch.x0, batch.x1, s)
    target, _ = convex_target(model, x_s, s, r, t)
    psd = per_sample_sq(model(x_s, s, t), target)
    return (fm + psd).mean(), _diagnostics(4, fm=fm, psd=psd)


# --- SplitMeanFlow -------------------------------------------------------------------------------------------

def splitmeanflow_loss(model: nn.Module, batch: Batch, **_: Any) -> tuple[Tensor, dict]:
    """SplitMeanFlow (Guo et al. 2025, "SplitMeanFlow: interval splitting consistency in few-step generative
    modeling", arXiv 2507.16884).

    Paper (z_t = (1 - t) x + t eps: data at t = 0, noise at t = 1; u(z_t, r, t) averages over [r, t], r < t):
    draw r < t and lam ~ U(0, 1), s = (1 - lam) t + lam r;
        u2 = u(z_t, s, t),  z_s = z_t - (t - s) u2,  u1 = u(z_s, r, s),
        L = ||u(z_t, r, t) - sg[(1 - lam) u1 + lam u2]||^2,   and on a fraction p of the batch (r = t)
        L = ||u(z_t, t, t) - v||^2 (the boundary condition; v = eps - x from scratch, or a teacher's velocity in
    the paper's main, distillation setting). Ours (t_ours = 1 - t_paper, u_ours = -u_paper): the first jump is from
    our s to our r, r = s + lam (t - s):
        ||u(x_s, s, t) - sg[lam u(x_s, s, r) + (1 - lam) u(X(x_s, s, r), r, t)]||^2,   lam = (r - s) / (t - s),
    and on the s = t rows ||u(x_t, t, t) - (x1 - x0)||^2: the from-scratch variant only (no teacher setting; the
    registry's `teacher` key would turn the zoo's run of this loss into a distillation run). It is PSD's target
    (rule (*)) with MeanFlow's batch layout: rows either train the boundary or the splitting, never both.
    Stop-gradient: the whole target (both sub-jumps). Default time sampling: (s, t) uniform on the triangle,
    lam ~ U(0, 1); fraction of s = t rows 0.5 (the reference implementations' flow ratio; the paper treats it as a
    hyperparameter). Weight 1.
    """
    diag = batch.s == batch.t
    fm = fm_error(model, batch.x0[diag], batch.x1[diag], batch.t[diag])
    off = ~diag
    s, r, t = batch.s[off], batch.r[off], batch.t[off]
    x_s = path_point(batch.x0[off], batch.x1[off], s)
    target, _ = convex_target(model, x_s, s, r, t)
    split = per_sample_sq(model(x_s, s, t), target)
    loss = (fm.sum() + split.sum()) / len(batch.t)
    return loss, _diagnostics(4, fm=fm if fm.numel() else fm.new_zeros(1),
                              split=split if split.numel() else split.new_zeros(1))


# --- flow map matching (FMM) ---------------------------------------------------------------------------------

def fmm_loss(model: nn.Module, batch: Batch, unordered: bool = True, **_: Any) -> tuple[Tensor, dict]:
    """Flow map matching, FMM (Boffi, Albergo, Vanden-Eijnden 2024, "Flow map matching", arXiv 2406.07507,
    Prop. 3.11 / Lagrangian FMM).

    Paper (I_t = alpha_t x0 + beta_t x1, noise at t = 0 as ours; (s, t) uniform on [0, 1]^2, unordered):
        L = E ||d/dt X_{s,t}(X_{t,s}(I_t)) - dI_t/dt||^2  +  E ||X_{s,t}(X_{t,s}(I_t)) - I_t||^2.
    The map jumps from the path point I_t to time s, then back to t; the round trip must return to I_t
    (invertibility, the composition X_{s,t} o X_{t,s} = X_{t,t} = id) and its time derivative at the arrival is
    regressed on the conditional velocity (a marginal-from-conditional target: its minimiser is the marginal
    velocity). Ours: with (a, b) the pair's start and turning times, y = X(x_a, a, b), then (X, dX/dt) =
    (X(y, b, a), d/da X(y, b, a)) from one JVP with tangent (0, 0, 1) at fixed y:
        ||d/da X(y, b, a) - (x1 - x0)||^2  +  ||X(y, b, a) - x_a||^2.
    Our batch holds s <= t; with `unordered` (default) every second row (rows are i.i.d.) runs the round trip the
    other way, a = s, b = t (toward the data and back), the others a = t, b = s (toward the noise and back), so
    (a, b) is the paper's unordered pair; `unordered=False` keeps only a = t, b = s. The paper restricts |t - s| for
    stability (not done here: every gap up to 1 is drawn). Stop-gradient: none (gradients flow through both jumps
    and through the JVP). Default time sampling: (s, t) uniform on the triangle, fraction of s = t rows 0 (there
    the first term is flow matching and the second vanishes). Weight 1. The model must represent jumps in both
    directions (inputs with s > t).
    """
    a, b = batch.t, batch.s
    if unordered:
        other_way = torch.arange(len(a), device=a.device) % 2 == 1  # i.i.d. rows: half of them start at s
        a, b = torch.where(other_way, batch.s, a), torch.where(other_way, batch.t, b)
    x_a = path_point(batch.x0, batch.x1, a)
    y = flow_map(model, x_a, a, b)  # X(x_a, a, b): the first jump
    X, dX = flow_map_X_jvp(model, y, b, a, dt=torch.ones_like(a))  # back: X(y, b, a) and d/da
    tangent = per_sample_sq(dX, batch.x1 - batch.x0)
    inverse = per_sample_sq(X, x_a)
    return (tangent + inverse).mean(), _diagnostics(2, 1, tangent=tangent, inverse=inverse)


# --- progressive flow map matching (PFMM) ---------------------------------------------------------------------

def _teacher_jump(teacher: Any, x: Tensor, a: Tensor, b: Tensor, steps: int) -> Tensor:
    """One teacher jump a -> b: a flow-map teacher's X(x, a, b), or `steps` Heun steps of a velocity teacher."""
    if hasattr(teacher, "flow_map") and not isinstance(teacher, nn.Module):
        return teacher.flow_map(x, a, b)  # GaussianMixtureTeacher: exact / reference map
    if getattr(teacher, "prediction", None) == "average_velocity":
        return flow_map(teacher, x, a, b)
    field = as_teacher(teacher)
    h = (b - a) / steps
    for i in range(steps):  # Heun: x + h/2 (v(x, r) + v(x + h v(x, r), r + h))
        r = a + i * h
        k1 = field(x, r)
        k2 = field(x + expand_t(h, x) * k1, r + h)
        x = x + expand_t(h / 2, x) * (k1 + k2)
    return x


def pfmm_loss(model: nn.Module, batch: Batch, teacher: Any = None, jumps: int = 2, teacher_steps: int = 4,
              **_: Any) -> tuple[Tensor, dict]:
    """Progressive flow map matching, PFMM (Boffi, Albergo, Vanden-Eijnden 2024, "Flow map matching", Sec. 3.3).

    Paper (noise at t = 0 as ours): distil a teacher flow map X^T applied K times into one jump,
        L = E ||X_{s,t}(I_s) - X^T_{t_{K-1},t} o ... o X^T_{s,t_1}(I_s)||^2,   s = t_0 < t_1 < ... < t_K = t uniform.
    Ours: the same with K = `jumps` (default 2, the survey's cost estimate), written for u (the X error divided
    by (t - s)^2): ||u(x_s, s, t) - sg[(X^T(x_s) - x_s) / (t - s)]||^2. The teacher is a trained two-time model,
    the GaussianMixtureTeacher (exact map: a perfect teacher) or a velocity field, whose jumps are then
    `teacher_steps` Heun steps each (a discretisation error the student inherits). Stop-gradient: the teacher's
    composition (it has no trainable parameters here). Default time sampling: (s, t) uniform on the triangle,
    fraction of s = t rows 0 (on the diagonal both sides equal x: the diagonal is not trained). Weight 1.
    """
    if teacher is None:
        raise ValueError("pfmm needs settings['teacher']: a trained two-time (flow map) model, a GaussianMixture "
                         "teacher or a velocity field")
    if jumps < 1 or teacher_steps < 1:
        raise ValueError(f"jumps and teacher_steps must be >= 1, got {jumps}, {teacher_steps}")
    if hasattr(teacher, "velocity") and hasattr(teacher, "means"):  # a GaussianMixture: its perfect teacher
        teacher = as_teacher(teacher)
    s, t = batch.s, batch.t
    x_s = path_point(batch.x0, batch.x1, s)
    with torch.no_grad():
        x = x_s
        for k in range(jumps):
            a, b = s + (t - s) * k / jumps, s + (t - s) * (k + 1) / jumps
            x = _teacher_jump(teacher, x, a, b, teacher_steps)
        gap = expand_t(t - s, x_s)
        target = torch.where(gap > 0, (x - x_s) / gap.clamp_min(1e-12), torch.zeros_like(x))
    u = model(x_s, s, t)
    err = per_sample_sq(u, target) * (t > s).to(u.dtype)
    return err.mean(), _diagnostics(1, distill=err, n_teacher=torch.tensor(float(jumps)))


# --- registry ------------------------------------------------------------------------------------------------

_CONV_OURS = "noise at t=0, data at t=1 (as ours); u(x_s, s, t) with s < t"
_KW = dict(family=COMPOSITIONAL, time_inputs=2, prediction="average_velocity")

register(LossSpec(
    name="shortcut", display_name="Shortcut", fn=shortcut_loss, setting=SELF, make_batch=shortcut_batch,
    paper="Frans, Hafner, Levine, Abbeel 2024, One Step Diffusion via Shortcut Models",
    convention="paper: noise at t=0 as ours; s(x_t, t, d) = u(x_t, t, t + d)",
    defaults={"diagonal_fraction": 0.75, "levels": 7},
    summary="u(x,s,t) <- sg[mean of two half-jumps], the finest from the velocity; 3/4 flow matching rows", **_KW))

register(LossSpec(
    name="psd", display_name="PSD", fn=psd_loss, setting=SELF, make_batch=two_time_batch,
    paper="Boffi, Albergo, Vanden-Eijnden 2025, How to build a consistency model (PSD)",
    convention=_CONV_OURS, defaults={**TWO_TIME, "split": "uniform"},
    summary="FM at t + u(x,s,t) <- sg[convex combination of two sub-jumps], r ~ U[s,t]", **_KW))

register(LossSpec(
    name="splitmeanflow", display_name="SplitMeanFlow", fn=splitmeanflow_loss, setting=SELF, make_batch=two_time_batch,
    paper="Guo et al. 2025, SplitMeanFlow: Interval Splitting Consistency in Few-Step Generative Modeling",
    convention="paper: data at t=0, u over [r, t]; ours: t -> 1 - t, u -> -u, first sub-jump s -> r",
    defaults={**TWO_TIME, "diagonal_fraction": 0.5},
    summary="boundary FM rows (1/2) or interval-splitting rows with sg target", **_KW))

register(LossSpec(
    name="fmm", display_name="FMM", fn=fmm_loss, setting="marginal-from-conditional", make_batch=two_time_batch,
    paper="Boffi, Albergo, Vanden-Eijnden 2024, Flow Map Matching (Lagrangian FMM, Prop. 3.11)",
    convention=_CONV_OURS, defaults={**TWO_TIME, "unordered": True},
    summary="round trip X(X(x_a,a,b),b,a) = x_a and its d/da = x1 - x0, (a, b) unordered", **_KW))

register(LossSpec(
    name="pfmm", display_name="PFMM", fn=pfmm_loss, setting="distillation", make_batch=two_time_batch,
    paper="Boffi, Albergo, Vanden-Eijnden 2024, Flow Map Matching (progressive FMM)",
    convention=_CONV_OURS, defaults={**TWO_TIME, "teacher": None, "jumps": 2, "teacher_steps": 4},
    summary="one jump <- sg[teacher's K jumps]", **_KW))
