"""Flow maps: two-time batches, forward-mode derivatives of a two-time network, samplers and teachers.

Convention (fmlab.conventions): t = 0 is noise, t = 1 is data. A flow map X(x, s, t) moves a point of the
sampling path from time s to time t (s < t goes toward the data); its average velocity u satisfies

    X(x, s, t) = x + (t - s) u(x, s, t),        u(x, t, t) = v(x, t)  (the instantaneous velocity).

A two-time model is called `model(x, s, t)` -> u [B, d] with per-sample times s, t [B]; `model(x, t)` is its
diagonal u(x, t, t) (fmlab.models.FlowMapModel), so it is a velocity field for fmlab.solvers.solve.

The exact flow map satisfies three consistency rules, which the flow-map losses enforce (Dieleman's survey
"Learning the integral of a diffusion model"; Boffi et al. 2025, "How to build a consistency model"):

    compositional  X(X(x, s, r), r, t) = X(x, s, t)                      for s <= r <= t
    Lagrangian     d/dt X(x, s, t) = v(X(x, s, t), t)                    (follow the particle: the canoe)
    Eulerian       d/ds X(x, s, t) + (dX/dx)(x, s, t) v(x, s) = 0        (fixed destination: the bridge)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from .checks import check_float
from .paths import expand_t, per_sample_time
from .solvers import Trajectory, check_grid, time_grid

__all__ = [
    "flow_map", "flow_map_jvp", "flow_map_X_jvp",
    "flow_map_fd", "partial_s", "partial_t", "diagonal_field", "sample_flow_map", "sample_consistency",
    "VelocityTeacher", "GaussianMixtureTeacher", "as_teacher", "frozen",
]


TwoTimeModel = Callable[..., Tensor]  # model(x, s, t) -> u(x, s, t); model(x, t) -> u(x, t, t)
# --- a piece several flow-map losses use -------------------------------------------------------------------

def frozen(model: nn.Module) -> Callable[..., Tensor]:
    """The model with its parameters under stop-gradient but its inputs differentiable: u_{sg(theta)}(x, s, t).

    (Detaching the output would also cut the gradient through the inputs; TVM needs the input path.)
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    return lambda *args: functional_call(model, {**params, **buffers}, args)


# --- evaluating a two-time model ---------------------------------------------------------------------------

def flow_map(model: TwoTimeModel, x: Tensor, s: Tensor | float, t: Tensor | float) -> Tensor:
    """X(x, s, t) = x + (t - s) u(x, s, t), with scalar or per-sample [B] times."""
    s, t = per_sample_time(s, x), per_sample_time(t, x)
    return x + expand_t(t - s, x) * model(x, s, t)  # X = x + (t - s) u


def flow_map_jvp(model: TwoTimeModel, x: Tensor, s: Tensor, t: Tensor, dx: Tensor | None = None,
                 ds: Tensor | None = None, dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(u, du): u(x, s, t) and its directional derivative d/de u(x + e dx, s + e ds, t + e dt) at e = 0.

    One forward-mode pass: the model's own `jvp(x, s, t, dx, ds, dt)` where it has one (fmlab.models.FlowMapModel,
    which carries the tangent through the MLP by hand), else torch.func.jvp. Both outputs stay differentiable w.r.t.
    the model's parameters, so a loss can backpropagate through the JVP (LMD) or put it under stop-gradient with
    `.detach()` (MeanFlow, LSD). Missing tangents are zero.
    """
    if isinstance(model, nn.Module) and callable(getattr(model, "jvp", None)):
        return model.jvp(x, s, t, dx, ds, dt)
    dx = torch.zeros_like(x) if dx is None else dx
    ds = torch.zeros_like(s) if ds is None else ds
    dt = torch.zeros_like(t) if dt is None else dt
    return jvp(lambda x_, s_, t_: model(x_, s_, t_), (x, s, t), (dx, ds, dt))


def flow_map_X_jvp(model: TwoTimeModel, x: Tensor, s: Tensor, t: Tensor, dx: Tensor | None = None,
                   ds: Tensor | None = None, dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(X, dX) for X = x + (t - s) u: dX = dx + (dt - ds) u + (t - s) du (one JVP)."""
    dx = torch.zeros_like(x) if dx is None else dx
    ds = torch.zeros_like(s) if ds is None else ds
    dt = torch.zeros_like(t) if dt is None else dt
    u, du = flow_map_jvp(model, x, s, t, dx, ds, dt)
    h = expand_t(t - s, x)
    return x + h * u, dx + expand_t(dt - ds, x) * u + h * du  # product rule on (t - s) u


def partial_t(model: TwoTimeModel, x: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(u, d/dt u(x, s, t)) by one JVP with tangent (0, 0, 1)."""
    return flow_map_jvp(model, x, s, t, dt=torch.ones_like(t))


def partial_s(model: TwoTimeModel, x: Tensor, s: Tensor, t: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(u, d/ds u + (du/dx) v) by one JVP with tangent (v, 1, 0): the Eulerian (total) derivative along v."""
    return flow_map_jvp(model, x, s, t, dx=v, ds=torch.ones_like(s))


def flow_map_fd(model: TwoTimeModel, x: Tensor, s: Tensor, t: Tensor, dx: Tensor | None = None,
                ds: Tensor | None = None, dt: Tensor | None = None, h: float = 1e-3,
                central: bool = True) -> tuple[Tensor, Tensor]:
    """(u, du) like flow_map_jvp but du by finite differences (SoFlow, PID): 2 (central) or 1 extra forward.

    central: du = (u(p + h d) - u(p - h d)) / 2h, error O(h^2); else du = (u(p + h d) - u(p)) / h, error O(h).
    Times are not clamped to [0, 1]: the network is evaluated a distance h outside where needed.
    """
    check_float(h, "h", 0.0, strict=True)
    dx = torch.zeros_like(x) if dx is None else dx
    ds = torch.zeros_like(s) if ds is None else ds
    dt = torch.zeros_like(t) if dt is None else dt
    u = model(x, s, t)
    plus = model(x + h * dx, s + h * ds, t + h * dt)
    if not central:
        return u, (plus - u) / h
    minus = model(x - h * dx, s - h * ds, t - h * dt)
    return u, (plus - minus) / (2 * h)


def diagonal_field(model: TwoTimeModel) -> Callable[[Tensor, Tensor], Tensor]:
    """The flow map's diagonal as a velocity field: field(x, t) = u(x, t, t) (for fmlab.solvers.solve)."""
    return lambda x, t: model(x, t, t)


# --- samplers --------------------------------------------------------------------------------------------

def _grid(steps: int | None, grid: Tensor | Sequence[float] | None, t_start: float, t_end: float) -> list[float]:
    if (steps is None) == (grid is None):
        raise ValueError("give exactly one of steps (int >= 1) or grid (sequence of times), not both or neither")
    return time_grid(steps, t_start, t_end).tolist() if grid is None else check_grid(grid)


@torch.no_grad()
def sample_flow_map(model: TwoTimeModel, x0: Tensor, steps: int | None = None,
                    grid: Tensor | Sequence[float] | None = None, t_start: float = 0.0, t_end: float = 1.0,
                    return_trajectory: bool = False) -> Tensor | Trajectory:
    """Jump along a grid: x_{i+1} = X(x_i, t_i, t_{i+1}) (one network call per jump).

    Give `steps` (uniform grid from t_start to t_end; steps = 1 is one-step generation from noise) or `grid`
    (strictly monotone times in [0, 1]; a decreasing grid jumps backward, data -> noise, which a flow map trained
    only on s <= t has not learned). Returns the final state or a Trajectory (xs [n+1, B, d], ts, nfe = n).
    """
    times = _grid(steps, grid, t_start, t_end)
    xs, x = [x0], x0
    for a, b in zip(times[:-1], times[1:], strict=True):
        x = flow_map(model, x, a, b)
        xs.append(x)
    if not return_trajectory:
        return x
    return Trajectory(xs=torch.stack(xs), ts=torch.tensor(times, dtype=x0.dtype, device=x0.device),
                      nfe=len(times) - 1)


@torch.no_grad()
def sample_consistency(model: TwoTimeModel, x0: Tensor, grid: Tensor | Sequence[float] | None = None,
                       steps: int | None = None, generator: torch.Generator | None = None,
                       return_trajectory: bool = False) -> Tensor | Trajectory:
    """Consistency-style multistep sampling with re-noising (Song et al. 2023, Algorithm 1, in our time).

    On an increasing grid 0 = t_0 < ... < t_n = 1: start from x = x0 at t_0; at each t_i jump to the data,
    x1_hat = X(x, t_i, 1); then, unless t_{i+1} = 1, re-noise onto the linear path with FRESH noise z:
    x = (1 - t_{i+1}) z + t_{i+1} x1_hat. The last x1_hat is the sample (n network calls). Unlike
    sample_flow_map, the state forgets its noise at every step (a stochastic sampler). Trajectory xs holds the
    states x at t_0..t_{n-1} and the final sample at t_n.
    """
    times = _grid(steps, grid, 0.0, 1.0)
    if times[-1] != 1.0 or times[0] >= times[-1]:
        raise ValueError(f"grid must increase and end at t = 1 (the data), got {times[0]} ... {times[-1]}")
    xs, x = [x0], x0
    x1_hat = x0
    for i, a in enumerate(times[:-1]):
        x1_hat = flow_map(model, x, a, 1.0)  # jump to the data
        b = times[i + 1]
        if b < 1.0:
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x = (1 - b) * z + b * x1_hat  # x_b = (1 - b) z + b x1_hat: fresh noise on the linear path
            xs.append(x)
    xs.append(x1_hat)
    if not return_trajectory:
        return x1_hat
    return Trajectory(xs=torch.stack(xs), ts=torch.tensor(times, dtype=x0.dtype, device=x0.device),
                      nfe=len(times) - 1)


# --- teachers (velocity fields for distillation) -------------------------------------------------------------

class VelocityTeacher:
    """A frozen velocity field teacher(x, t) -> v [B, d], evaluated without gradients.

    Wraps any field: a trained flow-matching model (`model(x, t)`), the diagonal of a two-time model, or a
    closed-form velocity. The teacher's output is a constant for the student's loss.
    """

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor], name: str = "teacher"):
        self.field, self.name = field, name

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.field(x.detach(), per_sample_time(t, x).detach())

    def differentiable(self, x: Tensor, t: Tensor) -> Tensor:
        """v(x, t) with gradients flowing back into x (not into the teacher's parameters, which no optimiser
        of the student holds). Used by losses that differentiate through the teacher's input (LMD)."""
        return self.field(x, per_sample_time(t, x))

    def __repr__(self) -> str:
        return f"VelocityTeacher({self.name})"


class GaussianMixtureTeacher(VelocityTeacher):
    """The perfect teacher: the closed-form marginal velocity of a Gaussian mixture (fmlab.data.gaussian).

    Distilling from it isolates the distillation error (the teacher has none). `flow_map(x, s, t)` is the
    reference flow map (an adaptive float64 solve of the same velocity).
    """

    def __init__(self, target: Any, schedule: str = "linear"):
        self.target, self.schedule = target, schedule
        super().__init__(lambda x, t: target.velocity(x, t, schedule), name=f"exact velocity of {target!r}")
        self._exact = getattr(target, "n_components", 0) == 1 and hasattr(target, "flow_map_exact")

    def differentiable(self, x: Tensor, t: Tensor) -> Tensor:
        """The closed-form velocity with autograd through x (fmlab.data.gaussian is differentiable in x)."""
        return self.target.velocity(x, per_sample_time(t, x), self.schedule)

    def flow_map(self, x: Tensor, s: Tensor | float, t: Tensor | float) -> Tensor:
        """Exact for a Gaussian (closed form); otherwise the adaptive DOP853 reference (one solve per (s, t))."""
        if self._exact:
            return self.target.flow_map_exact(x, s, t, self.schedule)
        return self.target.flow_map(x, s, t, self.schedule)


def as_teacher(teacher: Any) -> VelocityTeacher:
    """Turn a setting `teacher` into a VelocityTeacher: a GaussianMixture (closed form), a two-time model (its
    diagonal), a velocity model or any callable field(x, t)."""
    from .data.gaussian import GaussianMixture

    if teacher is None:
        raise ValueError("this loss needs settings['teacher']: a trained velocity model, a two-time model, "
                         "a GaussianMixture (closed-form velocity) or a callable field(x, t)")
    if isinstance(teacher, VelocityTeacher):
        return teacher
    if isinstance(teacher, GaussianMixture):
        return GaussianMixtureTeacher(teacher)
    if getattr(teacher, "prediction", None) == "average_velocity":
        return VelocityTeacher(teacher, name=f"diagonal of {type(teacher).__name__}")
    if callable(teacher):
        return VelocityTeacher(teacher, name=type(teacher).__name__)
    raise ValueError(f"teacher must be a model, a GaussianMixture or a callable field(x, t), got {type(teacher)}")


