"""Checkers for lab 01 (probability paths). Noise at t = 0, data at t = 1; x_t = alpha_t x1 + sigma_t x0."""

from __future__ import annotations

from typing import Any

import torch

from ..paths import get_schedule
from . import Verdict, check_number

__all__ = ["CONDITIONAL_T", "MARGINAL_T", "check_conditional_variance", "check_marginal_variance",
           "vp_crossing_time", "check_vp_crossing"]

CONDITIONAL_T = 0.3  # exercise 1: Var of p_t(x | x1) per coordinate at this t (linear path)
MARGINAL_T = 0.5  # exercise 2: Var of x_t at this t for data at +-3 (linear path)


def check_conditional_variance(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: the variance per coordinate of p_t(x | x1) at t = 0.3 on the linear path, (1 - t)^2."""
    return check_number("Var[x_t | x1] at t = 0.3", answer, (1 - CONDITIONAL_T) ** 2,
                        hint="Only the noise term (1 - t) x0 is random once x1 is fixed.", quiet=quiet)


def check_marginal_variance(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: Var(x_t) at t = 0.5 for data at -3 and +3 (equal weights) on the linear path.

    x0 and x1 are independent, so Var(x_t) = t^2 Var(x1) + (1 - t)^2 Var(x0) = 9 t^2 + (1 - t)^2 = 2.5."""
    t = MARGINAL_T
    return check_number("Var[x_t] at t = 0.5", answer, 9 * t**2 + (1 - t) ** 2,
                        hint="x0 and x1 are independent: variances add, each scaled by its coefficient squared.",
                        quiet=quiet)


def vp_crossing_time(tol: float = 1e-10) -> float:
    """The time where the default VP schedule has alpha_t = sigma_t (log SNR = 0), by bisection."""
    sched = get_schedule("vp")
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        a, s, _, _ = sched(torch.tensor(mid, dtype=torch.float64))
        lo, hi = (mid, hi) if a < s else (lo, mid)  # alpha grows, sigma shrinks with t
    return 0.5 * (lo + hi)


def check_vp_crossing(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: the t at which alpha_t = sigma_t on the VP schedule (to within 0.01)."""
    return check_number("t where alpha_t = sigma_t (VP)", answer, vp_crossing_time(), rtol=0.0, atol=0.01,
                        hint="Read it off the log-SNR panel (log SNR = 0) or bisect on fmlab.paths.VPSchedule.",
                        quiet=quiet)
