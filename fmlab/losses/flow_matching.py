"""Single-step flow matching: conditional FM with a velocity target, its x1-prediction form, reflow.

All three regress the network onto the conditional velocity of the linear path
    x_t = (1 - t) x0 + t x1,   u_t(x_t | x0, x1) = x1 - x0,
whose minimiser is the marginal velocity v*(x, t) = E[x1 - x0 | x_t = x] (Lipman et al. 2023).
Errors are mean squared over the non-batch dimensions (per-sample MSE), then averaged over the batch.

Labels: cfm, x1_prediction (and the trainer's conditional runs) pass `batch.labels` to a class-conditional model,
`model(x_t, t, y)`, whose minimiser is then the class-conditional velocity E[x1 - x0 | x_t = x, y]; without labels
they call `model(x_t, t)`. `LABEL_LOSSES` lists the losses that take labels; the others ignore them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.conditioning import label_args
from ..paths import convert_prediction, loss_weight, sample_path
from .batch import Batch, one_time_batch
from .registry import FLOW_MATCHING, LossSpec, register

__all__ = [
    "FM_SETTINGS", "per_sample_mse", "cfm_loss", "x1_prediction_loss", "reflow_pairs", "reflow_batch",
    "CONVENTION_SAME",
]


LABEL_LOSSES = ("cfm", "x1_prediction")  # losses that pass batch.labels to the model (class-conditional training)
FM_SETTINGS = {"time_sampler": "uniform", "mu": 0.0, "sigma": 1.0, "weighting": "none", "gamma": 5.0}


def per_sample_mse(a: Tensor, b: Tensor) -> Tensor:
    """||a - b||^2 / d for each sample: [B]."""
    return (a - b).pow(2).flatten(1).mean(1)


def cfm_loss(model: nn.Module, batch: Batch, weighting: str = "none", gamma: float = 5.0, **_) -> tuple[Tensor, dict]:
    """Conditional flow matching (Lipman et al. 2023; Liu et al. 2023; Albergo & Vanden-Eijnden 2023).

    L = E_{t, x0, x1} w(t) ||v_theta(x_t, t) - (x1 - x0)||^2. Papers' convention: Lipman et al. put noise
    at t = 0 and data at t = 1 like us (their psi_t(x) = (1 - (1 - s_min) t) x + t x1 with s_min = 0).
    `model(x, t)` returns a velocity whatever the head, so an x1 head trained here gets the implicit
    weight 1 / (1 - t)^2 on its x1 error.
    """
    path = sample_path(batch.x0, batch.x1, batch.t)
    v = model(path.x_t, batch.t, *label_args(batch.labels))  # v(x_t, t) or, with labels, v(x_t, t, y)
    err = per_sample_mse(v, path.dx_t)
    w = loss_weight(batch.t, weighting, gamma=gamma, prediction="velocity")
    loss = (w * err).mean()
    return loss, {"mse": err.mean().detach(), "n_forward": 1, "n_jvp": 0, "n_backward": 1}


def x1_prediction_loss(model: nn.Module, batch: Batch, eps: float = 1e-3, **_) -> tuple[Tensor, dict]:
    """x1 (clean-data) prediction with the velocity-equivalent weight 1 / ((1 - t)^2 + eps).

    Since v = (x1 - x_t) / (1 - t) on the linear path, ||v_hat - v||^2 = ||x1_hat - x1||^2 / (1 - t)^2,
    so this is flow matching seen through an x1 head, with eps keeping the weight finite at the data.
    The unrolling manuscript ("When does unrolling help flow matching?") puts data at t = 0 and writes the
    weight 1 / (t^2 + eps); with t_paper = 1 - t_ours it is ours. The 1 / (1 - t) factor in the head's
    gradient is what makes x1 prediction's gradient norm blow up near the data.
    """
    path = sample_path(batch.x0, batch.x1, batch.t)
    prediction = getattr(model, "prediction", "velocity")
    x1_hat = convert_prediction(model.predict(path.x_t, batch.t, *label_args(batch.labels)), path.x_t, batch.t,
                                prediction, "x1")
    err = per_sample_mse(x1_hat, batch.x1)
    w = 1.0 / ((1 - batch.t).pow(2) + eps)
    loss = (w * err).mean()
    return loss, {"x1_mse": err.mean().detach(), "n_forward": 1, "n_jvp": 0, "n_backward": 1}


@torch.no_grad()
def reflow_pairs(teacher: nn.Module, x0: Tensor, steps: int = 100, method: str = "euler") -> Tensor:
    """x1 = ODE-solve of the teacher's velocity from x0 (Liu et al. 2023, rectified flow)."""
    from ..solvers import solve  # solvers import models/paths only; import here keeps module load light

    return solve(teacher, x0, steps=steps, method=method)


def reflow_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, teacher: nn.Module | None = None,
                 teacher_steps: int = 100, teacher_method: str = "euler", **settings) -> Batch:
    """Replace the data by the teacher's generated partner of each x0 (the data batch x1 is ignored)."""
    if teacher is None:
        raise ValueError("reflow needs settings['teacher']: a trained velocity model whose ODE generates the pairs")
    params = next(iter(teacher.parameters()), None) if isinstance(teacher, nn.Module) else None
    device = x0.device if params is None else params.device  # the trainer builds batches on the CPU
    pairs = reflow_pairs(teacher, x0.to(device), teacher_steps, teacher_method)
    return one_time_batch(x0, pairs.to(x1.device, x1.dtype), generator, **settings)


CONVENTION_SAME = "noise at t=0, data at t=1 (as ours)"

register(LossSpec(
    name="cfm", display_name="flow matching", fn=cfm_loss, family=FLOW_MATCHING, setting="marginal-from-conditional",
    paper="Lipman et al. 2023, Flow Matching for Generative Modeling; Liu et al. 2023; Tong et al. 2024 (OT-CFM)",
    convention=CONVENTION_SAME, defaults=dict(FM_SETTINGS),
    summary="regress v(x_t, t) on x1 - x0"))

register(LossSpec(
    name="x1_prediction",
    display_name="x1 prediction", fn=x1_prediction_loss, family=FLOW_MATCHING, setting="marginal-from-conditional",
    paper="unrolling manuscript: When does unrolling help flow matching? (x1 / clean-data head)",
    convention="paper: data at t=0, weight 1/(t^2+eps); ours: t -> 1 - t, weight 1/((1-t)^2+eps)",
    prediction="x1", defaults={**FM_SETTINGS, "eps": 1e-3},
    summary="regress x1_hat(x_t, t) on x1 with weight 1/((1-t)^2+eps)"))

register(LossSpec(
    name="reflow", display_name="Reflow", fn=cfm_loss, family=FLOW_MATCHING, setting="distillation (generated pairs)",
    paper="Liu et al. 2023, Flow Straight and Fast: rectified flow",
    convention=CONVENTION_SAME, make_batch=reflow_batch,
    defaults={**FM_SETTINGS, "teacher": None, "teacher_steps": 100, "teacher_method": "euler"},
    summary="CFM on (x0, ODE_teacher(x0)) pairs"))

