"""ODE solvers for velocity fields: fixed-step Runge-Kutta methods and an adaptive reference solver.

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise, t = 1 is data; sampling integrates dx/dt = v(x, t) forward
from t = 0 to t = 1. A field is called as `field(x, t)` with x [B, ...] and a per-sample time t [B].

- `SOLVERS`: registry of step methods ("euler", "midpoint", "heun", "rk4"), each with `nfe` (field
  evaluations per step) and `step(field, x, t, dt) -> x_next`.
- `solve`: fixed-step integration on a uniform grid (`steps`) or a given grid (`t_grid`).
- `solve_adaptive`: a high-accuracy reference (scipy's DOP853, float64), forward or backward in time.
- `euler_maruyama`: the Euler-Maruyama scheme for an Ito SDE dx = f dt + g(t) dW; `sample_sde` samples with the
  family of SDEs that share the flow's marginals (noise level eta, eta = 0 the ODE); `ddim_step` is DDIM's update.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from .paths import Schedule, eps_from_velocity, expand_t, get_schedule, unit_time, x1_from_velocity

__all__ = [
    "check_grid",
    "Field", "Step", "Euler", "Midpoint", "Heun", "RK4", "SOLVERS", "Trajectory",
    "nfe", "time_grid", "solve", "solve_adaptive",
    "Drift", "Diffusion", "euler_maruyama", "noise_level_diffusion", "marginal_sde_drift", "sample_sde", "ddim_step",
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


def check_grid(t_grid: Tensor | Sequence[float]) -> list[float]:
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
    grid = time_grid(steps, t_start, t_end).tolist() if t_grid is None else check_grid(t_grid)
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


# --- stochastic sampling --------------------------------------------------------------------------------------
# An Ito SDE dx = f(x, t) dt + g(t) dW (W a standard Brownian motion, g a scalar per sample: additive noise) has the
# Euler-Maruyama step x_{k+1} = x_k + f(x_k, t_k) h + g(t_k) sqrt(h) z_k, z_k ~ N(0, I): weak order 1 in general,
# strong order 1/2 in general and 1 for additive noise (g independent of x, as here).
#
# The marginal-preserving family. For dx = f dt + g dW the density obeys the Fokker-Planck equation
#     d p / dt = -div(p f) + (g^2 / 2) lap p.
# With f = v + (g^2 / 2) grad log p_t and lap p = div(p grad log p), the two g terms cancel and what is left,
# d p / dt = -div(p v), is the continuity equation of the ODE dx = v dt: for every g the SDE
#     dx = [v(x, t) + (g(t)^2 / 2) grad log p_t(x)] dt + g(t) dW            (t from noise 0 to data 1)
# has the marginals p_t of the flow. The sign is + in our time direction (noise -> data); papers that integrate
# backward from data at 0 write the same SDE with a minus sign in reverse time (Song et al. 2021, eq. 6).
# fmlab parametrises g by a noise level eta >= 0 as g(t) = sqrt(2 eta sigma_t): the correction is then
# (g^2 / 2) grad log p = eta sigma_t grad log p = -eta E[x0 | x_t] (Tweedie), finite at both ends, and eta = 0 is the
# ODE. Karras et al. (2022, EDM) write the same family with g^2 = 2 beta(t) sigma_t^2.

Drift = Callable[[Tensor, Tensor], Tensor]
Diffusion = Callable[[Tensor], Tensor]


def euler_maruyama(drift: Drift, diffusion: Diffusion, x: Tensor, steps: int | None = None,
                   t_grid: Tensor | Sequence[float] | None = None, t_start: float = 0.0, t_end: float = 1.0,
                   generator: torch.Generator | None = None, noise: Tensor | None = None,
                   return_trajectory: bool = False) -> Tensor | Trajectory:
    """Integrate the Ito SDE dx = drift(x, t) dt + diffusion(t) dW forward in time with Euler-Maruyama steps

        x_{k+1} = x_k + drift(x_k, t_k) h_k + diffusion(t_k) sqrt(h_k) z_k,        z_k ~ N(0, I).

    Give exactly one of `steps` (uniform grid from t_start to t_end) or `t_grid` (strictly increasing times in
    [0, 1]). `diffusion(t)` takes t [B] and returns g [B] (or a float): one scalar per sample, the same for every
    coordinate. The z_k come from `noise` [n_steps, B, ...] if given (to share one Brownian path between solves),
    else from `generator` (torch's global RNG if None) on x's device. Runs under torch.no_grad(). Returns the final
    state, or a Trajectory (xs [n+1, B, ...], ts, nfe = n drift calls) if return_trajectory.
    """
    if (steps is None) == (t_grid is None):
        raise ValueError("give exactly one of steps (int >= 1) or t_grid (sequence of times), not both or neither")
    grid = time_grid(steps, t_start, t_end).tolist() if t_grid is None else check_grid(t_grid)
    if grid[-1] < grid[0]:
        raise ValueError("euler_maruyama integrates forward in time: t_grid must increase (t_end > t_start)")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape [B, ...] with B >= 1, got {tuple(x.shape)}")
    n = len(grid) - 1
    if noise is not None and tuple(noise.shape) != (n, *x.shape):
        raise ValueError(f"noise must have shape [n_steps, *x.shape] = {(n, *x.shape)}, got {tuple(noise.shape)}")
    xs = [x]
    with torch.no_grad():
        for k, (t0, t1) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
            t = torch.full((x.shape[0],), t0, dtype=x.dtype, device=x.device)
            h = t1 - t0
            z = noise[k] if noise is not None else torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                                              device=x.device)
            g = expand_t(diffusion(t), x)
            x = x + h * drift(x, t) + g * (h**0.5) * z  # x + f h + g sqrt(h) z
            if return_trajectory:
                xs.append(x)
    if not return_trajectory:
        return x
    return Trajectory(xs=torch.stack(xs), ts=torch.tensor(grid, dtype=x.dtype, device=x.device), nfe=n)


def _check_eta(eta: float) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta (the noise level) must be a finite number >= 0, got {eta!r}")
    return float(eta)


def noise_level_diffusion(eta: float, schedule: str | Schedule = "linear") -> Diffusion:
    """g(t) = sqrt(2 eta sigma_t): the diffusion of the marginal-preserving SDE at noise level eta (linear path:
    sqrt(2 eta (1 - t)), no noise at the data end)."""
    eta, sched = _check_eta(eta), get_schedule(schedule)
    return lambda t: torch.sqrt(2 * eta * sched(t).sigma.clamp_min(0))


def marginal_sde_drift(field: Field, eta: float, schedule: str | Schedule = "linear",
                       score: Field | None = None) -> Drift:
    """The drift f = v + (g^2 / 2) grad log p_t = v + eta sigma_t score of the SDE with g(t) = sqrt(2 eta sigma_t).

    Without `score`, the score comes from the velocity by `fmlab.paths`: eta sigma score = -eta E[x0 | x_t] with
    E[x0 | x_t] = eps_from_velocity(v) (no division by sigma, so finite at t = 1). Linear path: f = v - eta (x - t v).
    """
    eta, sched = _check_eta(eta), get_schedule(schedule)

    def drift(x: Tensor, t: Tensor) -> Tensor:
        v = field(x, t)
        if eta == 0:
            return v
        if score is None:
            return v - eta * eps_from_velocity(v, x, t, sched)  # v + eta sigma s, with sigma s = -E[x0 | x]
        return v + eta * expand_t(sched(t).sigma, x) * score(x, t)

    return drift


def sample_sde(field: Field, x: Tensor, steps: int, eta: float = 1.0, schedule: str | Schedule = "linear",
               score: Field | None = None, generator: torch.Generator | None = None, noise: Tensor | None = None,
               t_start: float = 0.0, t_end: float = 1.0, return_trajectory: bool = False) -> Tensor | Trajectory:
    """Sample from noise x at t_start to t_end with the marginal-preserving SDE at noise level eta (Euler-Maruyama):

        dx = [v(x, t) + eta sigma_t grad log p_t(x)] dt + sqrt(2 eta sigma_t) dW.

    `field` is the velocity model v(x, t); `score(x, t)` the score, or None to convert it from the velocity.
    eta = 0 is exactly the Euler ODE solve; every eta has the same marginals p_t in the limit of small steps.
    """
    return euler_maruyama(marginal_sde_drift(field, eta, schedule, score), noise_level_diffusion(eta, schedule), x,
                          steps=steps, t_start=t_start, t_end=t_end, generator=generator, noise=noise,
                          return_trajectory=return_trajectory)


def ddim_step(field: Field, x: Tensor, t: Tensor, t_next: float | Tensor,
              schedule: str | Schedule = "linear") -> Tensor:
    """One deterministic DDIM step (Song, Meng & Ermon 2021, eta = 0) from t to t_next, in fmlab's time.

    Predict x1_hat and eps_hat at (x, t) from the velocity, then put them back at the new noise level:
    x_next = a(t_next) x1_hat + s(t_next) eps_hat. On the linear path this is exactly the Euler step
    x + (t_next - t) v (x1_hat - eps_hat = v); on other schedules it is the Euler step of the same ODE in the
    variables y = x / a and rho = s / a (dy / d rho = eps_hat). Papers' alpha_bar(r) with data at r = 0 is our a_t^2.
    """
    v = field(x, t)
    x1 = x1_from_velocity(v, x, t, schedule)
    x0 = eps_from_velocity(v, x, t, schedule)
    a, s, _, _ = get_schedule(schedule)(expand_t(torch.as_tensor(t_next, dtype=x.dtype, device=x.device)
                                                 .expand(x.shape[0]), x))
    return a * x1 + s * x0  # x_next = a' x1_hat + s' eps_hat
