"""Exact log-likelihoods of a flow model by the instantaneous change of variables (Chen et al. 2018, neural ODEs;
Grathwohl et al. 2019, FFJORD), with the exact divergence or Hutchinson's trace estimator.

Convention: noise p_0 = N(0, I) at t = 0, data at t = 1, and the model moves points by dx/dt = v(x, t). The continuity
equation d p_t / dt + div(p_t v) = 0 gives, along a trajectory x_t of the ODE,

    d/dt log p_t(x_t) = -div v(x_t, t),   so   log p_1(x_1) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt,

where x_0 is where x_1 came from: integrate the ODE backward from t = 1 to t = 0. We integrate the augmented state
(x, l) with dl/dt = div v backward from (x_1, 0); then l(0) = -int_0^1 div v dt and log p_1(x_1) = log N(x_0) + l(0).

Divergences: `divergence` is exact (one autograd pass per dimension, d in all); `hutchinson_divergence` is
Hutchinson's unbiased estimate z^T (dv/dx) z with E[z z^T] = I (one pass). With probes K, `log_likelihood` traces
every point K times, each with its own z held fixed along the trajectory (FFJORD's choice), and reports the mean of
the K estimates and its standard error std / sqrt(K). Fields must treat samples independently (no batch statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_int
from .solvers import SOLVERS, Field, solve, solve_adaptive

__all__ = ["divergence", "hutchinson_divergence", "PROBE_KINDS", "ESTIMATORS", "LogLikelihood", "log_likelihood",
           "standard_normal_log_prob", "bits_per_dim"]

PROBE_KINDS = ("rademacher", "gaussian")
ESTIMATORS = ("exact", "hutchinson")
Divergence = Callable[[Field, Tensor, Tensor], Tensor]


def _exact(field: Field, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(v, div v) at (x, t), the divergence sum_i d v_i / d x_i by one autograd pass per dimension."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = field(x, t)
        flat = v.reshape(len(x), -1)
        total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for i in range(flat.shape[1]):
            (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < flat.shape[1] - 1)
            total = total + grad.reshape(len(x), -1)[:, i]  # d v_i / d x_i
    return v.detach(), total.detach()


def _hutchinson(field: Field, x: Tensor, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """(v, z^T (dv/dx) z) at (x, t): one vector-Jacobian product."""
    if z.shape != x.shape:
        raise ValueError(f"z must have the shape of x {tuple(x.shape)}, got {tuple(z.shape)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = field(x, t)
        (grad,) = torch.autograd.grad((v * z).sum(), x)  # z^T dv/dx
    return v.detach(), (grad * z).reshape(len(x), -1).sum(1).detach()


def divergence(field: Field, x: Tensor, t: Tensor) -> Tensor:
    """div v(x, t) = sum_i d v_i / d x_i for x [B, ...] (features flattened), exactly: one autograd pass per
    dimension. [B]"""
    return _exact(field, x, t)[1]


def hutchinson_divergence(field: Field, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
    """Hutchinson's estimate z^T (dv/dx) z of div v (unbiased when E[z z^T] = I), one autograd pass. [B]"""
    return _hutchinson(field, x, t, z)[1]


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I) = -|x|^2 / 2 - (d / 2) log(2 pi) per sample [B] (features flattened)."""
    flat = x.reshape(len(x), -1)
    return -0.5 * flat.pow(2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def bits_per_dim(log_prob: Tensor | float, dim: int) -> Tensor | float:
    """-log p / (d ln 2): the negative log-likelihood in bits per coordinate (a density: may be negative)."""
    check_int(dim, "dim", 1)
    return -log_prob / (dim * math.log(2))


@dataclass(frozen=True)
class LogLikelihood:
    """log p_1(x) [B] estimated by the ODE, its standard error [B] (0 for the exact trace; NaN for one probe: one
    estimate has no spread), the noise x0 [B, ...] each point came from, log N(x0) [B], the divergence integral
    int_0^1 div v dt [B] (mean over probes) and the number of field evaluations per traced copy."""

    log_prob: Tensor
    std_error: Tensor
    x0: Tensor
    log_prob_noise: Tensor
    divergence_integral: Tensor
    nfe: int


def _probes(shape: torch.Size, kind: str, generator: torch.Generator | None, dtype: torch.dtype,
            device: torch.device) -> Tensor:
    z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return z if kind == "gaussian" else torch.sign(z) + (z == 0)  # Rademacher: +-1 with equal probability


def log_likelihood(field: Field, x: Tensor, steps: int = 100, method: str = "rk4",
                   estimator: str | Divergence = "exact", probes: int = 1, probe: str = "rademacher",
                   generator: torch.Generator | None = None, rtol: float = 1e-6, atol: float = 1e-6) -> LogLikelihood:
    """log p_1(x) of the flow dx/dt = field(x, t) from N(0, I) at t = 0, for data points x [B, ...].

    method: a fixed-step solver of fmlab.solvers.SOLVERS with `steps` steps, or "adaptive" (scipy's DOP853 with
    rtol / atol; `steps` unused). estimator: "exact" (d autograd passes per evaluation), "hutchinson" (`probes`
    independent Rademacher or Gaussian probes per point, each fixed along its trajectory; the result is their mean
    with its standard error), or a callable (field, x, t) -> div [B] used like "exact".
    """
    if isinstance(estimator, str) and estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS} or a callable (field, x, t) -> [B], got {estimator!r}")
    if method != "adaptive" and method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)} or 'adaptive', got {method!r}")
    if probe not in PROBE_KINDS:
        raise ValueError(f"probe must be one of {PROBE_KINDS}, got {probe!r}")
    check_int(probes, "probes", 1)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape [B, d, ...] with B >= 1, got {tuple(x.shape)}")
    k = probes if estimator == "hutchinson" else 1
    xs = x.detach().repeat(k, *([1] * (x.ndim - 1)))  # [K B, ...]: K copies, each with its own probe
    n, d = len(xs), xs[0].numel()
    if estimator == "hutchinson":
        z = _probes(xs.shape, probe, generator, xs.dtype, xs.device)
        both: Callable[[Field, Tensor, Tensor], tuple[Tensor, Tensor]] = lambda f, y, t: _hutchinson(f, y, t, z)  # noqa: E731
    elif estimator == "exact":
        both = _exact
    else:
        def both(f: Field, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            with torch.no_grad():
                v = f(y, t)
            with torch.enable_grad():  # the solve runs under no_grad; an autograd divergence needs it back
                div = estimator(f, y, t)
            return v, torch.as_tensor(div, dtype=y.dtype, device=y.device)

    def augmented(y: Tensor, t: Tensor) -> Tensor:  # y = (x, l): dx/dt = v, dl/dt = div v
        v, div = both(field, y[:, :d].reshape(xs.shape), t)
        return torch.cat([v.reshape(n, d).to(y.dtype), div.reshape(n, 1).to(y.dtype)], dim=1)

    y1 = torch.cat([xs.reshape(n, d), torch.zeros(n, 1, dtype=xs.dtype, device=xs.device)], dim=1)
    if method == "adaptive":
        y0, nfe = solve_adaptive(augmented, y1, 1.0, 0.0, rtol=rtol, atol=atol), -1
    else:
        y0, nfe = solve(augmented, y1, steps=steps, method=method, t_start=1.0, t_end=0.0), steps * SOLVERS[method].nfe
    x0 = y0[:, :d].reshape(xs.shape)
    noise_lp = standard_normal_log_prob(x0)
    estimates = (noise_lp + y0[:, d]).reshape(k, -1)  # log N(x0) + l(0), l(0) = -int div v dt; [K, B]
    if k > 1:
        std_error = estimates.std(0) / math.sqrt(k)
    else:
        std_error = torch.full_like(estimates[0], float("nan") if estimator == "hutchinson" else 0.0)
    b = len(x)
    return LogLikelihood(log_prob=estimates.mean(0), std_error=std_error, x0=x0[:b], log_prob_noise=noise_lp[:b],
                         divergence_integral=-y0[:, d].reshape(k, -1).mean(0), nfe=nfe)
