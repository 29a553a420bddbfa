"""Checkers for lab 04 (solvers and step count). Sampling integrates dx/dt = v(x, t) from noise at t = 0 to
data at t = 1; a method of global order p has error ~ C N^(-p) with N steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..data import gmm_2d
from ..solvers import SOLVERS
from . import Verdict, check_number, verdict

__all__ = ["check_step_function", "check_error_ratio", "one_step_w2_answer", "check_one_step_w2"]


def check_step_function(step: Callable[..., torch.Tensor], method: str = "midpoint", quiet: bool = False) -> Verdict:
    """Exercise 1: does `step(field, x, t, dt)` make one step of `method` (compared with fmlab.solvers on the
    8-mode velocity field at a few (t, dt))?"""
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    gmm = gmm_2d("8modes")

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return gmm.velocity(x, t)

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    worst = 0.0
    for t0, dt in ((0.0, 0.5), (0.3, 0.2), (0.7, 0.25)):
        t = torch.full((16,), t0, dtype=torch.float64)
        try:
            mine = torch.as_tensor(step(field, x.clone(), t.clone(), dt), dtype=torch.float64)
        except Exception as err:  # the student's code: report, do not crash the cell
            return verdict(False, f"your step raised {type(err).__name__}: {err}", quiet)
        if mine.shape != x.shape:
            return verdict(False, f"your step returned shape {tuple(mine.shape)}, expected {tuple(x.shape)}", quiet)
        worst = max(worst, float((mine - SOLVERS[method].step(field, x, t, dt)).abs().max()))
    if worst < 1e-9:
        return verdict(True, f"your {method} step matches fmlab.solvers (max difference {worst:.1e}).", quiet)
    return verdict(False, f"your {method} step differs from fmlab.solvers by up to {worst:.3g}. Evaluate the field "
                          f"at the right (x, t) for each stage and combine the stages with the method's weights.",
                   quiet)


def check_error_ratio(method: str, answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: by what factor does the error of `method` shrink when the number of steps doubles? (2^order)"""
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    return check_number(f"error(N) / error(2N) for {method}", answer, 2.0 ** SOLVERS[method].order, rtol=0.1,
                        hint="error ~ C N^(-p): compare C N^(-p) with C (2N)^(-p).", quiet=quiet)


def one_step_w2_answer() -> float:
    """W2 between the point mass at E[x1] and the 8-mode data: sqrt(E ||x1 - E x1||^2) = sqrt(tr Cov[x1])."""
    gmm = gmm_2d("8modes")
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    spread = (gmm.weights * ((gmm.means - mean).pow(2).sum(1) + torch.diagonal(gmm.covs, dim1=1, dim2=2).sum(1))).sum()
    return math.sqrt(float(spread))


def check_one_step_w2(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: the W2 distance of one Euler step of the exact field v*(x, 0) = E[x1] - x to the 8-mode data."""
    return check_number("W2 of one exact Euler step", answer, one_step_w2_answer(), rtol=0.01,
                        hint="One step gives x0 + v*(x0, 0) = E[x1] for every x0: all mass on one point. The W2 from "
                             "a point to a distribution is the root mean squared distance to it.", quiet=quiet)
