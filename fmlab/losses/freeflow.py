"""FreeFlow: flow-map distillation without data (a predictor from the noise, plus an optional corrector).

Our convention (DESIGN.md): t = 0 noise, t = 1 data; the student's trajectory from a noise draw x0 is its flow
map X(x0, 0, t) = x0 + t u(x0, 0, t). No data enters: x1 in the batch is ignored.

Does FreeFlow fit the mould of a loss `fn(model, batch, **settings)`? The PREDICTOR does (a data-free Lagrangian
residual, like PID but with a JVP). The CORRECTOR does only half-way: it needs an auxiliary "fake" velocity
model fitted online to the student's own samples (variational score distillation), i.e. a second network with
its own optimiser, updated between student steps. Here the corrector term takes that model as a setting (`fake`)
and `freeflow_fake_loss` is the loss that trains it; a trainer that alternates the two reproduces the method.
With `fake=None` (default) the loss is the predictor alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..flowmaps import as_teacher, flow_map, flow_map_X_jvp, path_point, per_sample_sq
from ..paths import expand_t
from .batch import Batch
from .registry import LossSpec, register


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
                  corrector_weight: float = 1.0, **_: Any) -> tuple[Tensor, dict]:
    """FreeFlow (Tong, Ma, Xie, Jaakkola 2025, "Flow Map Distillation Without Data", arXiv 2511.19428).

    Paper (a pre-trained teacher velocity; sampling starts from the prior only, never from data-noising states):
    a predictor aligns the student's generating velocity d/dt of its trajectory from the prior with the teacher's
    velocity at the student's own state, and a corrector aligns the noised marginals of the student's samples
    with the teacher's (variational score distillation against an auxiliary model fitted to student samples).
    Ours (noise at t = 0): with X = X(x0, 0, t) and one JVP for d/dt X,
        predictor  ||d/dt X(x0, 0, t) - sg[v_T(X, t)]||^2
        corrector  < x1_hat, sg[(1 - r)(v_F(x_r, r) - v_T(x_r, r))] >,   x1_hat = X(x0, 0, 1),
                   x_r = (1 - r) z + r x1_hat, z fresh noise,
    where (1 - r)(v_F - v_T) = D_F - D_T is the difference of the two denoisers E[x1 | x_r] on the linear path:
    the gradient moves each sample toward where the teacher's denoiser points and away from the fake's (DMD/VSD).
    Stop-gradient: the teacher velocity in the predictor (the gradient flows through the JVP) and the whole
    corrector direction. Default time sampling: s = 0 always (fraction of s = t rows 0), t ~ U(0, 1), re-noising
    time r ~ U(0, 1). Weight 1 on the predictor, `corrector_weight` (1) on the corrector when `fake` is given.
    (The paper's time schedules and weightings could not be checked offline.)
    """
    field = as_teacher(teacher)
    t, zero = batch.t, torch.zeros_like(batch.t)
    X, dX = flow_map_X_jvp(model, batch.x0, zero, t, dt=torch.ones_like(t))
    with torch.no_grad():
        v = field(X.detach(), t)
    pred = per_sample_sq(dX, v)
    loss, diag = pred.mean(), {"predictor": pred.detach().mean(), "n_forward": 2, "n_jvp": 1, "n_backward": 1}
    if fake is not None:
        x1_hat = flow_map(model, batch.x0, zero, torch.ones_like(t))
        with torch.no_grad():
            z = torch.randn_like(x1_hat) if batch.z is None else batch.z
            x_r = path_point(z, x1_hat.detach(), batch.r)
            direction = expand_t(1 - batch.r, x_r) * (fake(x_r, batch.r) - field(x_r, batch.r))  # D_F - D_T
        corr = (x1_hat * direction).flatten(1).mean(1)
        loss = loss + corrector_weight * corr.mean()
        diag.update(corrector_gap=per_sample_sq(direction).mean(), n_forward=5)
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
    name="freeflow", fn=freeflow_loss, family="flow map: Lagrangian", setting="data-free distillation",
    paper="Tong, Ma, Xie, Jaakkola 2025, Flow Map Distillation Without Data (FreeFlow)",
    convention="paper: trajectories from the prior only; ours: X(x0, 0, t) from the noise at t = 0",
    time_inputs=2, prediction="average_velocity", make_batch=freeflow_batch,
    defaults={"teacher": None, "fake": None, "corrector_weight": 1.0},
    summary="data-free predictor d/dt X(x0,0,t) = v_T(X, t) (+ VSD corrector with an auxiliary model)"))
