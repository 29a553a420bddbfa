"""Generate with a trained model the way its loss trained it: one entry point for the trainers, the CLI and the labs.

Time runs from noise at t = 0 to data at t = 1 (ARCHITECTURE.md, "Time"). Each registered loss names its sampler
(`LossSpec.sampler`, fmlab.losses.registry.SAMPLERS):

- "ode": integrate dx/dt = v(x, t) with an fmlab.solvers method (Euler unless `method` says otherwise);
- "flowmap": jump x_{i+1} = X(x_i, t_i, t_{i+1}) on the uniform grid (fmlab.flowmaps.sample_flow_map); an ODE
  method instead integrates the diagonal u(x, t, t), which a flow-map loss also trains as the velocity;
- "consistency": x1_hat = X(x, t_i, 1), then re-noise to t_{i+1} with fresh noise (fmlab.flowmaps.
  sample_consistency): CT, CD and FACM train only jumps that end at t = 1, so neither grid jumps nor the
  diagonal ODE are theirs;
- "noise_only": X(x0, 0, t_k) from the noise itself (PID, FreeFlow train only jumps that start at t = 0); the
  sample is X(x0, 0, 1), one network call whatever `steps` is (the trajectory holds X(x0, 0, t_k)).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .checks import check_choice, check_float, check_int
from .flowmaps import flow_map, sample_consistency, sample_flow_map
from .losses import LossSpec, get_loss
from .solvers import SOLVERS, Trajectory, solve

__all__ = ["methods_for", "sample_methods", "trajectory", "generate", "generate_images"]


def _spec(loss: LossSpec | str) -> LossSpec:
    return loss if isinstance(loss, LossSpec) else get_loss(loss)


def methods_for(loss: LossSpec | str) -> tuple[str, ...]:
    """The sampling methods a model trained by `loss` supports; the first is its default."""
    spec = _spec(loss)
    solvers = tuple(sorted(SOLVERS))
    if spec.sampler == "ode":
        return ("euler",) + tuple(m for m in solvers if m != "euler")
    if spec.sampler == "flowmap":
        return ("flowmap",) + solvers
    return (spec.sampler,)


def sample_methods() -> list[str]:
    """Every method name `generate` knows: the ODE solvers and the flow-map samplers."""
    return sorted(SOLVERS) + ["flowmap", "consistency", "noise_only"]


def _sample(model: Any, spec: LossSpec, x0: Tensor, steps: int, method: str | None,
            generator: torch.Generator | None, keep: bool) -> Tensor | Trajectory:
    """Run `method` (default: the loss's own, `methods_for(spec)[0]`); the Trajectory if `keep`, else only the
    final state (no intermediate states held: image sampling would store every step)."""
    check_int(steps, "steps", 1)
    method = method or methods_for(spec)[0]
    allowed = methods_for(spec)
    if method not in allowed:
        raise ValueError(f"method for a model trained with {spec.name!r} must be one of {allowed} (its sampler is "
                         f"{spec.sampler!r}), got {method!r}")
    if method == "flowmap":
        return sample_flow_map(model, x0, steps=steps, return_trajectory=keep)
    if method == "consistency":
        return sample_consistency(model, x0, steps=steps, generator=generator, return_trajectory=keep)
    if method == "noise_only":
        if not keep:
            return flow_map(model, x0, 0.0, 1.0)  # X(x0, 0, 1): one call whatever `steps` is
        ts = torch.linspace(0, 1, steps + 1, dtype=x0.dtype, device=x0.device)
        xs = [x0] + [flow_map(model, x0, 0.0, float(t)) for t in ts[1:]]  # X(x0, 0, t_k): each from the noise
        return Trajectory(xs=torch.stack(xs), ts=ts, nfe=1)
    return solve(model, x0, steps=steps, method=method, return_trajectory=keep)


def trajectory(model: Any, loss: LossSpec | str, x0: Tensor, steps: int, method: str | None = None,
               generator: torch.Generator | None = None) -> Trajectory:
    """The states of `steps`-step sampling from noise x0 (t = 0) to data (t = 1) with `loss`'s sampler (or
    `method`, one of `methods_for(loss)`). `generator` draws the consistency sampler's fresh noise."""
    return _sample(model, _spec(loss), x0, steps, method, generator, keep=True)


@torch.no_grad()
def generate(model: Any, loss: LossSpec | str, x0: Tensor, steps: int, method: str | None = None,
             generator: torch.Generator | None = None, labels: Tensor | int | None = None,
             guidance: float | None = None) -> Tensor:
    """Samples at t = 1 from noise x0 after `steps` steps of `loss`'s sampler (see `trajectory`); a "noise_only"
    loss makes one call, X(x0, 0, 1). A class-conditional velocity model given `labels` (an int or [B]; None: every
    class in turn) or `guidance` (the scale w; None: 1, the conditional model) integrates the classifier-free
    guided field v_w = v(x, t | null) + w (v(x, t | y) - v(x, t | null)) of fmlab.guidance instead."""
    spec = _spec(loss)
    if labels is not None or guidance is not None:
        return _generate_guided(model, spec, x0, steps, method, labels, 1.0 if guidance is None else guidance)
    return _sample(model, spec, x0, steps, method, generator, keep=False)


@torch.no_grad()
def generate_images(model: Any, x0: Tensor, steps: int, method: str | None = None, loss: str | None = None,
                    labels: Tensor | int | None = None, guidance: float | None = None) -> Tensor:
    """Noise x0 [n, C, H, W] (t = 0) carried to images (t = 1) in `steps` steps of the sampler `loss` trained
    for (`generate`), or of `method`. Without a loss: Euler steps of a velocity model, flow-map jumps of a
    two-time one. A class-conditional model given `labels` or `guidance` follows the guided field (see
    `generate`). Output clamped to [-1, 1]."""
    if loss is None:  # no loss named: the plain sampler of the model's kind
        loss = "cfm" if model.config.get("time_inputs", 1) == 1 else "meanflow"
    was_training = model.training
    model.eval()
    try:
        return generate(model, loss, x0, steps, method, labels=labels, guidance=guidance).clamp(-1.0, 1.0)
    finally:
        model.train(was_training)


def _generate_guided(model: Any, spec: LossSpec, x0: Tensor, steps: int, method: str | None,
                     labels: Tensor | int | None, guidance: float) -> Tensor:
    from .guidance import sample_guided
    from .models.conditioning import n_classes_of

    if n_classes_of(model) == 0:
        raise ValueError("labels and guidance need a class-conditional model (trained with n_classes > 0, CLI --cond); "
                         "this model is unconditional")
    if spec.sampler != "ode":
        raise ValueError(f"guided sampling integrates a velocity; a model trained with {spec.name!r} samples with "
                         f"{spec.sampler!r}")
    method = method or "euler"
    check_choice(method, "method", tuple(sorted(SOLVERS)))
    check_int(steps, "steps", 1)
    check_float(guidance, "guidance")
    return sample_guided(model, x0, labels, guidance, steps=steps, method=method)
