"""Checkers for lab 06 (parametrisation: velocity field, clean-data (x1) and noise (eps) heads).

Convention: t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1, velocity u = x1 - x0. On this path the heads are
related by (fmlab.paths)

    v = (x1_hat - x_t) / (1 - t)        (x1 head: an error delta becomes delta / (1 - t), large near the data)
    v = (x_t - eps_hat) / t             (eps head, a guess of the noise x0: delta becomes delta / t, large near noise)
"""

from __future__ import annotations

from typing import Any

from . import Verdict, check_number

__all__ = [
    "WEIGHT_T", "TRANSITION", "RATIO_TIMES", "EPS_ERROR", "check_x1_loss_weight", "check_x1_transition_norm",
    "check_gradient_factor_ratio", "check_eps_velocity_error",
]


WEIGHT_T = 0.9  # exercise 1: the x1 head's loss weight at this t
TRANSITION = {"t": 0.75, "dt": 0.125, "jac": 0.5}  # exercise 2: x1 head with J_x1 = 0.5 I
RATIO_TIMES = (0.1, 0.9)  # exercise 3: the x1 head's gradient factor 1 / (1 - t) at these times
EPS_ERROR = {"t": 0.05, "delta": 0.01}  # exercise 4: an eps head off by delta at time t


def check_x1_loss_weight(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: w(t) with ||vhat - v||^2 = w(t) ||x1hat - x1||^2 at t = 0.9: w = 1 / (1 - t)^2 = 100."""
    return check_number("w(0.9)", answer, 1 / (1 - WEIGHT_T) ** 2,
                        hint="Write vhat - v with v = (x1 - x_t) / (1 - t) and vhat = (x1hat - x_t) / (1 - t).",
                        quiet=quiet)


def check_x1_transition_norm(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: ||T||_2 of one Euler step of an x1 head with J_x1 = 0.5 I at t = 0.75, dt = 1/8:
    T = (1 - dt / (1 - t)) I + dt / (1 - t) J_x1 = 0.5 I + 0.25 I = 0.75 I."""
    t, dt, j = TRANSITION["t"], TRANSITION["dt"], TRANSITION["jac"]
    c = dt / (1 - t)
    return check_number("||T|| (x1 head)", answer, (1 - c) + c * j,
                        hint="The step is x + dt (x1hat(x) - x) / (1 - t); differentiate it in x.", quiet=quiet)


def check_gradient_factor_ratio(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: the x1 head's velocity-error factor 1 / (1 - t) at t = 0.9 over the one at t = 0.1: 0.9 / 0.1 = 9."""
    lo, hi = RATIO_TIMES
    return check_number("factor(0.9) / factor(0.1)", answer, (1 - lo) / (1 - hi),
                        hint="The factor is d vhat / d x1hat = 1 / (1 - t).", quiet=quiet)


def check_eps_velocity_error(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 4: an eps head off by delta = 0.01 (in one coordinate) at t = 0.05 puts an error of size
    delta / t = 0.2 in that coordinate of the velocity, since v = (x_t - eps_hat) / t."""
    t, delta = EPS_ERROR["t"], EPS_ERROR["delta"]
    return check_number("|velocity error|", answer, delta / t,
                        hint="Write v = (x_t - eps_hat) / t and change eps_hat by delta.", quiet=quiet)
