"""ODE solvers for velocity fields: fixed-step Runge-Kutta methods and an adaptive reference solver.

Convention (DESIGN.md): t = 0 is noise, t = 1 is data; sampling integrates dx/dt = v(x, t) forward
from t = 0 to t = 1. A field is called as `field(x, t)` with x [B, ...] and a per-sample time t [B].

- `SOLVERS`: registry of step methods ("euler", "midpoint", "heun", "rk4"), each with `nfe` (field
  evaluations per step) and `step(field, x, t, dt) -> x_next`.
- `solve`: fixed-step integration on a uniform grid (`steps`) or a given grid (`t_grid`).
- `solve_adaptive`: a high-accuracy reference (scipy's DOP853, float64), forward or backward in time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .paths import expand_t, unit_time

__all__ = [
    "Field", "Step", "Euler", "Midpoint", "Heun", "RK4", "SOLVERS", "Trajectory",
    "nfe", "time_grid", "solve", "solve_adaptive",
]

Field = Callable[[Tensor, Tensor], Tensor]


# --- step methods ----------------------------------------------------------------------------
# Each step maps x(t) to an approximation of x(t + dt) for dx/dt = f(x, t). `t` is a per-sample
# time [B]; `dt` a float or a per-sample [B] step. Local error O(dt^(p+1)), global error O(dt^p).

class Step:
    """A one-step method: `nfe` field evaluations per step, global order `order`."""

    name = "step"
    nfe = 0
    order = 0

    @staticmethod
    def step(field: Field, x: Tensor, t: Tensor, dt: float | Tensor) -> Tensor:
        raise NotImplementedError


class Euler(Step):
    name, nfe, order = "euler", 1, 1

    @staticmethod
    def step(field: Field, x: Tensor, t: Tensor, dt: float | Tensor) -> Tensor:
        h = expand_t(dt, x)
        return x + h * field(x, t)  # x + dt f(x, t)


class Midpoint(Step):
    name, nfe, order = "midpoint", 2, 2

    @staticmethod
    def step(field: Field, x: Tensor, t: Tensor, dt: float | Tensor) -> Tensor:
        h = expand_t(dt, x)
        k1 = field(x, t)
        return x + h * field(x + 0.5 * h * k1, t + 0.5 * dt)  # x + dt f(x + dt/2 k1, t + dt/2)


class Heun(Step):
    name, nfe, order = "heun", 2, 2

    @staticmethod
    def step(field: Field, x: Tensor, t: Tensor, dt: float | Tensor) -> Tensor:
        h = expand_t(dt, x)
        k1 = field(x, t)
        k2 = field(x + h * k1, t + dt)
        return x + 0.5 * h * (k1 + k2)  # trapezoid: x + dt/2 (f(x, t) + f(x + dt k1, t + dt))


class RK4(Step):
    name, nfe, order = "rk4", 4, 4

    @staticmethod
    def step(field: Field, x: Tensor, t: Tensor, dt: float | Tensor) -> Tensor:
        h = expand_t(dt, x)
        k1 = field(x, t)
        k2 = field(x + 0.5 * h * k1, t + 0.5 * dt)
        k3 = field(x + 0.5 * h * k2, t + 0.5 * dt)
        k4 = field(x + h * k3, t + dt)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)  # classical Runge-Kutta, weights (1, 2, 2, 1) / 6


SOLVERS: dict[str, type[Step]] = {cls.name: cls for cls in (Euler, Midpoint, Heun, RK4)}


def _method(method: str) -> type[Step]:
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    return SOLVERS[method]


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def nfe(method: str, steps: int) -> int:
    """Number of field evaluations of `steps` steps of `method` (steps * evaluations per step)."""
    _check_steps(steps)
    return int(steps) * _method(method).nfe


# --- fixed-step integration ----------------------------------------------------------------------

@dataclass(frozen=True)
class Trajectory:
    """States xs [n+1, B, ...] at times ts [n+1] (xs[0] is the input, xs[-1] the result); nfe field calls."""

    xs: Tensor
    ts: Tensor
    nfe: int

    @property
    def x(self) -> Tensor:
        """The final state xs[-1]."""
        return self.xs[-1]


def time_grid(steps: int, t_start: float = 0.0, t_end: float = 1.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """Uniform grid of steps + 1 times from t_start to t_end (t_end < t_start runs backward, data -> noise)."""
    _check_steps(steps)
    unit_time(t_start, "t_start"), unit_time(t_end, "t_end")
    if t_start == t_end:
        raise ValueError(f"t_start and t_end must differ, got both {t_start}")
    return torch.linspace(t_start, t_end, int(steps) + 1, dtype=torch.float64).to(dtype)


def _check_grid(t_grid: Tensor | Sequence[float]) -> list[float]:
    grid = torch.as_tensor(t_grid, dtype=torch.float64).detach().cpu()
    if grid.ndim != 1 or len(grid) < 2:
        raise ValueError(f"t_grid must be a 1-D sequence of at least 2 times, got shape {tuple(grid.shape)}")
    if not bool(torch.isfinite(grid).all()) or bool((grid < 0).any()) or bool((grid > 1).any()):
        raise ValueError(f"t_grid must lie in [0, 1], got values in [{grid.min().item():.4g}, {grid.max().item():.4g}]")
    diff = grid.diff()
    if not (bool((diff > 0).all()) or bool((diff < 0).all())):
        raise ValueError("t_grid must be strictly monotone (all increasing, or all decreasing to run backward)")
    return grid.tolist()


def solve(field: Field, x: Tensor, steps: int | None = None, method: str = "euler",
          t_grid: Tensor | Sequence[float] | None = None, t_start: float = 0.0, t_end: float = 1.0,
          return_trajectory: bool = False, keep_graph: bool = False) -> Tensor | Trajectory:
    """Integrate dx/dt = field(x, t) from x at the first grid time to the last with a fixed-step method.

    Give exactly one of `steps` (uniform grid of `steps` steps from t_start to t_end) or `t_grid` (strictly
    monotone times in [0, 1]; decreasing runs backward, data -> noise). The field sees x [B, ...] and a time
    tensor t [B] in x's dtype. Field evaluations: steps * SOLVERS[method].nfe (see `nfe`).
    Without keep_graph the solve runs under torch.no_grad(); with it, gradients flow back through every step.
    Returns the final state [B, ...], or a Trajectory (xs [n+1, B, ...], ts [n+1], nfe) if return_trajectory.
    """
    stepper = _method(method)
    if (steps is None) == (t_grid is None):
        raise ValueError("give exactly one of steps (int >= 1) or t_grid (sequence of times), not both or neither")
    grid = time_grid(steps, t_start, t_end).tolist() if t_grid is None else _check_grid(t_grid)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape [B, ...] with B >= 1, got {tuple(x.shape)}")
    xs = [x]
    with contextlib.nullcontext() if keep_graph else torch.no_grad():
        for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
            t = torch.full((x.shape[0],), t0, dtype=x.dtype, device=x.device)
            x = stepper.step(field, x, t, t1 - t0)
            if return_trajectory:
                xs.append(x)
    if not return_trajectory:
        return x
    ts = torch.tensor(grid, dtype=x.dtype, device=x.device)
    return Trajectory(xs=torch.stack(xs), ts=ts, nfe=(len(grid) - 1) * stepper.nfe)


# --- adaptive reference ----------------------------------------------------------------------------

def solve_adaptive(field: Field, x: Tensor, t_start: float, t_end: float, rtol: float = 1e-8, atol: float = 1e-8,
                   t_eval: Sequence[float] | None = None) -> Tensor:
    """Reference solution of dx/dt = field(x, t) from t_start to t_end by scipy's DOP853 (order 8, adaptive).

    The whole batch is one flattened float64 ODE state (one field call per stage for all samples); the field is
    called with x [B, ...] in x's dtype and device and t [B], so pass a float64 x (and a float64 field) for a
    reference accurate to ~rtol. t_end < t_start integrates backward (data -> noise); times are not restricted
    to [0, 1]. Runs without grad. Returns x's dtype/device: [B, ...], or [len(t_eval), B, ...] at the times
    t_eval (ordered in the direction of integration, inside [t_start, t_end]).
    """
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not tol > 0:
            raise ValueError(f"{name} must be > 0, got {tol}")
    t_start, t_end = float(t_start), float(t_end)
    if not (np.isfinite(t_start) and np.isfinite(t_end)):
        raise ValueError(f"t_start and t_end must be finite, got {t_start}, {t_end}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape [B, ...] with B >= 1, got {tuple(x.shape)}")
    evals = None if t_eval is None else _check_eval(t_eval, t_start, t_end)
    shape, dtype, device = x.shape, x.dtype, x.device
    y0 = x.detach().reshape(-1).to(torch.float64).cpu().numpy()

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).to(device=device, dtype=dtype).reshape(shape)
        v = field(xt, torch.full((shape[0],), t, dtype=dtype, device=device))
        return v.detach().reshape(-1).to(torch.float64).cpu().numpy()

    if t_start == t_end:
        ys = np.repeat(y0[:, None], 1 if evals is None else len(evals), axis=1)
    else:
        with torch.no_grad():
            sol = solve_ivp(rhs, (t_start, t_end), y0, method="DOP853", rtol=rtol, atol=atol,
                            t_eval=[t_end] if evals is None else evals)
        if not sol.success:
            raise RuntimeError(f"solve_adaptive: DOP853 failed from t={t_start} to t={t_end}: {sol.message}")
        ys = sol.y
    out = torch.from_numpy(np.ascontiguousarray(ys.T)).to(device=device, dtype=dtype)  # [n_eval, B * D]
    out = out.reshape(-1, *shape)
    return out[0] if evals is None else out


def _check_eval(t_eval: Sequence[float], t_start: float, t_end: float) -> list[float]:
    ev = np.asarray(t_eval, dtype=np.float64)
    if ev.ndim != 1 or len(ev) < 1:
        raise ValueError(f"t_eval must be a non-empty 1-D sequence of times, got shape {ev.shape}")
    lo, hi = min(t_start, t_end), max(t_start, t_end)
    if (ev < lo).any() or (ev > hi).any():
        raise ValueError(f"t_eval must lie in [{lo}, {hi}] (between t_start and t_end), got {ev.tolist()}")
    diff = np.diff(ev) * (1.0 if t_end >= t_start else -1.0)
    if (diff < 0).any() or (t_start == t_end and len(ev) > 0 and (ev != t_start).any()):
        raise ValueError("t_eval must be sorted in the direction of integration (from t_start to t_end)")
    return ev.tolist()
