"""Classifier-free guidance (CFG) for class-conditional models: the guided field and a sampler.

A conditional model trained with label dropout (fmlab.train, p_uncond) holds two velocity fields in one network:
the class-conditional v(x, t | y) = model(x, t, y) and the unconditional v(x, t) = model(x, t, C), C being the null
label (fmlab.models.conditioning). Guidance with scale w samples by solving dx/dt = v_w from noise at t = 0 to
data at t = 1, with

    v_w(x, t | y) = v(x, t) + w (v(x, t | y) - v(x, t))        (Ho & Salimans 2022, in velocities; Zheng et al. 2023)

w = 0: the unconditional model; w = 1: the conditional model; w > 1: past it, away from the unconditional field.
Ho & Salimans write (1 + w') eps_c - w' eps_u, so their w' = 0 is our w = 1 (w' = w - 1). What v_w samples is not
the tilted density p(x | y)^w p(x)^(1 - w) (fmlab.data.labelled works that out exactly for Gaussian mixtures).

Cost: `guided_field` evaluates both fields in one batched network call on [x; x] with labels [y; C] (2B rows), so one
guided step costs one call of twice the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .models.conditioning import null_label
from .solvers import Field

__all__ = ["cfg_combine", "guided_field", "sample_guided", "cycle_labels"]

Combine = Callable[[Tensor, Tensor, Tensor | float], Tensor]


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, w: Tensor | float) -> Tensor:
    """v_w = v_uncond + w (v_cond - v_uncond); w a float or one scale per sample [B] (broadcast over features)."""
    if v_cond.shape != v_uncond.shape:
        raise ValueError(f"v_cond and v_uncond must have the same shape, got {tuple(v_cond.shape)} and "
                         f"{tuple(v_uncond.shape)}")
    w = _per_sample_scale(w, v_cond)
    return v_uncond + w * (v_cond - v_uncond)


def _per_sample_scale(w: Tensor | float, v: Tensor) -> Tensor:
    """w as a tensor that broadcasts against v [B, ...]: a scalar, or [B] -> [B, 1, ..., 1]."""
    w = torch.as_tensor(w, dtype=v.dtype, device=v.device)
    if w.ndim == 0:
        return w
    if w.shape != (v.shape[0],):
        raise ValueError(f"w must be a float or have shape [B] = [{v.shape[0]}], got {tuple(w.shape)}")
    return w.reshape(-1, *([1] * (v.ndim - 1)))


def guided_field(model: nn.Module, labels: Tensor | int, w: Tensor | float = 1.0,
                 combine: Combine = cfg_combine) -> Field:
    """The field (x, t) -> v_w(x, t | labels) of a class-conditional model (see the module docstring).

    labels: an int (every sample) or a long tensor [B]; w: a float or one scale per sample [B]. Both fields come from
    one call model([x; x], [t; t], [labels; C]). `combine(v_cond, v_uncond, w)` forms the guided velocity
    (default cfg_combine; the lab passes a student's version).
    """
    c = null_label(model)  # ValueError for an unconditional model

    def field(x: Tensor, t: Tensor) -> Tensor:
        n = x.shape[0]
        y = torch.as_tensor(labels, device=x.device).long()
        y = y.expand(n) if y.ndim == 0 else y
        if y.shape != (n,):
            raise ValueError(f"labels must be an int or have shape [B] = [{n}], got {tuple(y.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(n) if t.ndim == 0 else t
        v = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, c)]))
        v_cond, v_uncond = v[:n], v[n:]
        return combine(v_cond, v_uncond, w)

    return field


def cycle_labels(n: int, n_classes: int) -> Tensor:
    """Labels 0, 1, ..., C - 1, 0, 1, ... [n]: every class in turn (what samplers use when no label is given)."""
    return torch.arange(n) % n_classes


@torch.no_grad()
def sample_guided(model: nn.Module, x0: Tensor, labels: Tensor | int | None = None, w: Tensor | float = 1.0,
                  steps: int = 100, method: str = "euler", combine: Combine = cfg_combine) -> Tensor:
    """Carry noise x0 [B, ...] from t = 0 to t = 1 along the guided field v_w (`steps` fixed steps of `method`, each
    field evaluation one network call on 2B rows). labels None: every class in turn (cycle_labels)."""
    from .solvers import solve

    was_training = model.training
    model.eval()
    try:
        if labels is None:
            labels = cycle_labels(x0.shape[0], null_label(model)).to(x0.device)
        return solve(guided_field(model, labels, w, combine), x0, steps=steps, method=method)
    finally:
        model.train(was_training)
