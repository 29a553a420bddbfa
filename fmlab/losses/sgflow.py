"""SGFlow: a JVP-only Eulerian objective whose update is not the gradient of any loss (a non-gradient vector
flow), with the true flow map as its unique stationary point.

Our convention (fmlab.conventions): t = 0 noise, t = 1 data; f(x, s, t) = X(x, s, t) = x + (t - s) u(x, s, t); the path
point x_s = (1 - s) x0 + s x1 moves with the conditional velocity xdot = x1 - x0, whose conditional mean is the
marginal velocity v(x_s, s) = E[xdot | x_s].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..flowmaps import flow_map_X_jvp, path_point, per_sample_sq
from .batch import Batch, two_time_batch
from .registry import EULERIAN, LossSpec, register

__all__ = [
    "sgflow_loss",
]


def sgflow_loss(model: nn.Module, batch: Batch, **_: Any) -> tuple[Tensor, dict]:
    """SGFlow ("Flow map learning via non-gradient vector flow", ICLR 2026, OpenReview C1bkDPqvDW).

    Paper: f(t, u, x) maps from time t to u with f = x + (u - t) f~(t, u, x), f~(t, t, x) the implied velocity;
    trained from scratch with stop-gradients so that no nested model call is differentiated. In our notation
    (ours, as issue 6 states the loss; s the start, t the destination, X = x_s the path point, Xdot = x1 - x0):
        L_sg = E[ ||d_s f + (d_x f) Xdot||^2  -  ||(d_x f)(Xdot - sg[f~(s, s, X)])||^2 ],   f = f(X, s, t).
    Write a = d_s f + (d_x f) Xdot and b = d_s f + (d_x f) sg[v_theta] with v_theta = f~(s, s, X) = u(X, s, s);
    since (d_x f)(Xdot - v) = a - b, L_sg = ||a||^2 - ||a - b||^2 = 2 <a, b> - ||b||^2. Both a and b are JVPs of
    X with tangents (Xdot, 1, 0) and (sg[v_theta], 1, 0) (computed as one JVP on the doubled batch).
    Why it works: b is the Eulerian residual with the model's own velocity, zero at the exact map. There
    a - b = (d_x f)(Xdot - v) has zero conditional mean given X, so the update 2 <a - b, delta b> averages to zero:
    the exact map is stationary although ||a||^2 alone (the Eulerian residual with the conditional velocity) is
    biased. On the diagonal t = s, d_s f = -u(X, s, s) and d_x f = I, so the update is exactly flow matching's
    gradient for u(X, s, s) -> Xdot: the model trains its own velocity.
    Stability: in expectation over xdot given X, L_sg = ||d_s f + (d_x f) v||^2 - ||(d_x f)(v - sg v_theta)||^2 with
    v the marginal velocity, so while v_theta is still wrong the objective is unbounded below in d_x f. In
    benchmarks/flowmaps.py (2000 steps, lr 2e-3, grad clip 1) it trains on moons and diverges on the checkerboard.
    Stop-gradient: the velocity v_theta inside the second tangent only; gradients flow through both JVPs.
    Default time sampling: (s, t) uniform on the triangle s <= t with a fraction 0.25 of s = t rows (they train
    the diagonal). Weight 1. (The paper's own time sampling and weighting could not be checked offline.)
    Diagnostics: 'eulerian_cond' = ||a||^2, 'eulerian_self' = ||b||^2 (zero at the exact map), 'variance' =
    ||a - b||^2 (the subtracted conditional-noise term).
    """
    s, t = batch.s, batch.t
    x_s = path_point(batch.x0, batch.x1, s)
    xdot = batch.x1 - batch.x0
    with torch.no_grad():
        v = model(x_s, s, s)  # sg[f~(s, s, X)]
    n = len(s)
    two = lambda z: torch.cat([z, z])  # noqa: E731
    _, dX = flow_map_X_jvp(model, two(x_s), two(s), two(t), dx=torch.cat([xdot, v]), ds=torch.ones(2 * n).to(s))
    a, b = dX[:n], dX[n:]  # a = d_s f + (d_x f) xdot,  b = d_s f + (d_x f) sg[v]
    a2, b2, var = per_sample_sq(a), per_sample_sq(b), per_sample_sq(a, b)
    loss = (a2 - var).mean()  # ||a||^2 - ||(d_x f)(xdot - sg v)||^2
    return loss, {"eulerian_cond": a2.detach().mean(), "eulerian_self": b2.detach().mean(),
                  "variance": var.detach().mean(), "n_forward": 1, "n_jvp": 2, "n_backward": 1}


register(LossSpec(
    name="sgflow",
    display_name="SGFlow", fn=sgflow_loss, family=EULERIAN, setting="self-distillation", make_batch=two_time_batch,
    paper="Flow Map Learning via Non-Gradient Vector Flow (SGFlow), ICLR 2026",
    convention="paper: f(t, u, x) from t to u, f = x + (u - t) f~; ours: X(x, s, t) = x + (t - s) u(x, s, t)",
    time_inputs=2, prediction="average_velocity",
    defaults={"diagonal_fraction": 0.25, "time_sampler": "uniform", "mu": 0.0, "sigma": 1.0},
    summary="||a||^2 - ||a - b||^2 with Eulerian JVPs along xdot and along sg[own velocity]"))
