"""FreeFlow: flow-map distillation without data (a predictor from the noise, plus an optional corrector).

Our convention (fmlab.conventions): t = 0 noise, t = 1 data; the student's trajectory from a noise draw x0 is its flow
map X(x0, 0, t) = x0 + t u(x0, 0, t). No data enters: x1 in the batch is ignored.

Does FreeFlow fit the mould of a loss `fn(model, batch, **settings)`? The PREDICTOR does (a data-free Lagrangian
regression, like PID but with the time derivative inside the stop-gradient target). The CORRECTOR does only
half-way: it needs an auxiliary "fake" velocity model fitted online to the student's own samples (variational
score distillation), i.e. a second network with its own optimiser, updated between student steps. Here the
corrector term takes that model as a setting (`fake`) and `freeflow_fake_loss` is the loss that trains it; a
trainer that alternates the two reproduces the method.
With `fake=None` (default) the loss is the predictor alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..flowmaps import as_teacher, flow_map, flow_map_jvp, path_point, per_sample_sq
from ..paths import expand_t
from .batch import Batch
from .registry import LAGRANGIAN, LossSpec, register

__all__ = ["freeflow_batch", "freeflow_loss", "freeflow_fake_loss"]


def freeflow_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                   **_: Any) -> Batch:
    """Data-free batch: s = 0, t ~ U(0, 1) (the predictor's time), r ~ U(0, 1) (the corrector's re-noising time)
    and fresh noise z (the corrector's re-noising draw). x1 is carried but never used."""
    n, dev, dtype = len(x0), x0.device, x0.dtype
    t = torch.rand(n, generator=generator, device=dev, dtype=dtype)
    r = torch.rand(n, generator=generator, device=dev, dtype=dtype)
    z = torch.randn(x0.shape, generator=generator, device=dev, dtype=dtype)
    return Batch(x0=x0, x1=x1, t=t, s=torch.zeros_like(t), r=r, z=z, labels=labels)


def freeflow_loss(model: nn.Module, batch: Batch, teacher: Any = None, fake: nn.Module | None = None,
                  corrector_weight: float = 1.0, derivative: str = "fd", h: float = 1e-3,
                  **_: Any) -> tuple[Tensor, dict]:
    """FreeFlow (Tong, Ma, Xie, Jaakkola 2025, "Flow Map Distillation Without Data", arXiv 2511.19428).

    Paper (a pre-trained teacher velocity; sampling starts from the prior only, never from data-noising states):
    a predictor aligns the student's generating velocity d/dt of its trajectory from the prior with the teacher's
    velocity at the student's own state, and a corrector aligns the noised marginals of the student's samples
    with the teacher's (variational score distillation against an auxiliary model fitted to student samples).
    The survey (Dieleman, "SG on FD + aux") writes the predictor in the average-velocity (V) form of the
    Lagrangian identity with the time derivative from a finite difference, all of it under stop-gradient. The
    official repository (github.com/ShangyuanTong/FreeFlow) releases model definitions, weights and sampling code
    only, no training loss, so we follow the survey. Ours (noise at t = 0, start s = 0, X = X(x0, 0, t) = x0 + t u):

        predictor  || u(x0, 0, t) - sg[ v_T(X, t) - t d/dt u(x0, 0, t) ] ||^2
                   (the Lagrangian identity d/dt X = u + t d/dt u = v_T(X, t), solved for u: survey L188-189)
        corrector  < x1_hat, sg[(1 - r)(v_F(x_r, r) - v_T(x_r, r))] >,   x1_hat = X(x0, 0, 1),
                   x_r = (1 - r) z + r x1_hat, z fresh noise,

    where (1 - r)(v_F - v_T) = D_F - D_T is the difference of the two denoisers E[x1 | x_r] on the linear path:
    the gradient moves each sample toward where the teacher's denoiser points and away from the fake's (DMD/VSD).
    d/dt u: `derivative` = 'fd' (default, the paper's finite difference; central, [u(t + h) - u(t - h)] / 2h,
    error O(h^2), h = 1e-3) or 'jvp' (forward mode, tangent (0, 0, 1), exact), both computed without a graph.
    The predictor's value equals ||d/dt X - v_T(X, t)||^2, but its gradient is 2 (u - target) . grad u only: no
    gradient through the time derivative (unlike PID, fmlab.losses.flowmap_lagrangian.pid_loss). Stop-gradient:
    the whole predictor target (teacher, arrival point X, time derivative) and the whole corrector direction.
    Default time sampling: s = 0 always (fraction of s = t rows 0), t ~ U(0, 1), re-noising time r ~ U(0, 1).
    Weight 1 on the predictor, `corrector_weight` (1) on the corrector when `fake` is given. (The paper's time
    schedules and weightings could not be checked: no training code is public.)
    """
    if derivative not in ("fd", "jvp"):
        raise ValueError(f"derivative must be 'fd' or 'jvp', got {derivative!r}")
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    field = as_teacher(teacher)
    x0, t = batch.x0, batch.t
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    u = model(x0, zero, t)  # u(x0, 0, t): the only term with gradient
    with torch.no_grad():
        if derivative == "jvp":
            _, du = flow_map_jvp(model, x0, zero, t, dt=one)  # d/dt u, forward mode
        else:
            du = (model(x0, zero, t + h) - model(x0, zero, t - h)) / (2 * h)  # central difference in t
        X = x0 + expand_t(t, x0) * u  # X(x0, 0, t)
        target = field(X, t) - expand_t(t, x0) * du  # u = v_T(X, t) - (t - 0) d/dt u
    pred = per_sample_sq(u, target)
    n_fwd, n_jvp = (2, 1) if derivative == "jvp" else (4, 0)
    loss, diag = pred.mean(), {"predictor": pred.detach().mean(), "n_forward": n_fwd, "n_jvp": n_jvp,
                                "n_backward": 1}
    if fake is not None:
        x1_hat = flow_map(model, batch.x0, zero, one)
        with torch.no_grad():
            z = torch.randn_like(x1_hat) if batch.z is None else batch.z
            x_r = path_point(z, x1_hat.detach(), batch.r)
            direction = expand_t(1 - batch.r, x_r) * (fake(x_r, batch.r) - field(x_r, batch.r))  # D_F - D_T
        corr = (x1_hat * direction).flatten(1).mean(1)
        loss = loss + corrector_weight * corr.mean()
        diag.update(corrector_gap=per_sample_sq(direction).mean(), n_forward=n_fwd + 3)
    return loss, diag


def freeflow_fake_loss(fake: nn.Module, student: nn.Module, x0: Tensor, generator: torch.Generator | None = None,
                       ) -> tuple[Tensor, dict]:
    """Train the corrector's auxiliary velocity v_F by flow matching on the student's one-step samples:
    ||v_F(x_t, t) - (x1_hat - z)||^2 with x1_hat = sg[X(x0, 0, 1)], z fresh noise, t ~ U(0, 1)."""
    with torch.no_grad():
        x1_hat = flow_map(student, x0, 0.0, 1.0)
    z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = torch.rand(len(x0), generator=generator, device=x0.device, dtype=x0.dtype)
    err = per_sample_sq(fake(path_point(z, x1_hat, t), t), x1_hat - z)
    return err.mean(), {"fake_fm": err.detach().mean(), "n_forward": 2, "n_jvp": 0, "n_backward": 1}


register(LossSpec(
    name="freeflow",
    display_name="FreeFlow", sampler="noise_only", fn=freeflow_loss, family=LAGRANGIAN,
    setting="data-free distillation",
    paper="Tong, Ma, Xie, Jaakkola 2025, Flow Map Distillation Without Data (FreeFlow)",
    convention="paper: trajectories from the prior only; ours: X(x0, 0, t) from the noise at t = 0",
    time_inputs=2, prediction="average_velocity", make_batch=freeflow_batch,
    defaults={"teacher": None, "fake": None, "corrector_weight": 1.0, "derivative": "fd", "h": 1e-3},
    summary="data-free predictor u(x0,0,t) <- sg[v_T(X, t) - t d/dt u] (+ VSD corrector, auxiliary model)"))
