"""Checkers for lab 01 (probability paths). Noise at t = 0, data at t = 1; x_t = alpha_t x1 + sigma_t x0."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..paths import get_schedule, sample_path
from . import Verdict, check_number, verdict
from .code import diagnose, exercise_batch, run_student, student_or_reference

__all__ = ["CONDITIONAL_T", "MARGINAL_T", "check_conditional_variance", "check_marginal_variance",
           "vp_crossing_time", "check_vp_crossing", "check_sample_xt", "check_conditional_velocity", "path_functions"]

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


# --- exercises 4 and 5 (code): sample x_t and its conditional velocity, linear and cosine ---------------------------

SHAPE_HINT = ("Return one point per sample, shape [B, 2] like x0 and x1; t has shape [B], so write t[:, None] to "
              "broadcast it over the coordinates.")
SCHEDULES = ("linear", "cosine")


def _schedule_name(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return schedule


def check_sample_xt(fn: Callable[[Tensor, Tensor, Tensor], Tensor], schedule: str = "linear",
                    quiet: bool = False) -> Verdict:
    """Exercises 4-5: does fn(x0, x1, t) return x_t = alpha_t x1 + sigma_t x0 (linear: alpha_t = t, sigma_t = 1 - t;
    cosine: alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2))? Recognises the flipped time convention (data at t = 0)
    and the linear path used for the cosine one."""
    schedule = _schedule_name(schedule)
    x0, x1, t = exercise_batch()
    value, problem = run_student(fn, x0.clone(), x1.clone(), t.clone())
    if problem:
        return verdict(False, f"x_t ({schedule}): {problem}", quiet)
    mistakes = {
        "The time convention is flipped (data at t = 0): in this course t = 0 is noise, so x_0 must be x0 and "
        "x_1 must be x1.": sample_path(x0, x1, 1 - t, schedule).x_t,
        "x0 and x1 are swapped: alpha_t multiplies the data x1, sigma_t the noise x0.": sample_path(x1, x0, t,
                                                                                                  schedule).x_t,
    }
    if schedule == "cosine":
        mistakes["That is the linear path (1 - t) x0 + t x1; the cosine path uses sin and cos of pi t / 2."] = \
            sample_path(x0, x1, t).x_t
        mistakes["The angle is missing its factor pi / 2: the cosine path is sin(pi t / 2) x1 + cos(pi t / 2) x0."] = \
            torch.sin(t)[:, None] * x1 + torch.cos(t)[:, None] * x0
    return diagnose(f"x_t ({schedule})", value, sample_path(x0, x1, t, schedule).x_t, mistakes,
                    shape_hint=SHAPE_HINT, hint="Check alpha_t and sigma_t at t = 0 (noise) and t = 1 (data).",
                    quiet=quiet)


def check_conditional_velocity(fn: Callable[[Tensor, Tensor, Tensor], Tensor], schedule: str = "linear",
                               quiet: bool = False) -> Verdict:
    """Exercises 4-5: does fn(x0, x1, t) return the conditional velocity d/dt x_t = alpha'_t x1 + sigma'_t x0?
    Recognises the sign flip, the flipped time convention, a missing chain-rule factor and x_t returned instead."""
    schedule = _schedule_name(schedule)
    x0, x1, t = exercise_batch()
    value, problem = run_student(fn, x0.clone(), x1.clone(), t.clone())
    if problem:
        return verdict(False, f"velocity ({schedule}): {problem}", quiet)
    exact = sample_path(x0, x1, t, schedule).dx_t
    mistakes = {
        "The velocity's sign is flipped: it must point from the noise x0 towards the data x1 (for the linear path "
        "x1 - x0, which is also what putting data at t = 0 gives: here t = 0 is noise).": -exact,
        "The time convention is flipped (data at t = 0): in this course t = 0 is noise.":
            -sample_path(x0, x1, 1 - t, schedule).dx_t,
        "That is x_t itself, not its time derivative.": sample_path(x0, x1, t, schedule).x_t,
    }
    if schedule == "cosine":
        half_pi = math.pi / 2
        mistakes["That is the linear path's velocity x1 - x0; differentiate sin(pi t / 2) and cos(pi t / 2)."] = \
            x1 - x0
        mistakes["The chain-rule factor pi / 2 is missing: d/dt sin(pi t / 2) = (pi / 2) cos(pi t / 2)."] = \
            exact / half_pi
    return diagnose(f"velocity ({schedule})", value, exact, mistakes, shape_hint=SHAPE_HINT,
                    hint="Differentiate x_t = alpha_t x1 + sigma_t x0 in t with x0 and x1 fixed.", quiet=quiet)


def path_functions(sample_fn: Any, velocity_fn: Any, schedule: str = "linear") -> tuple[Callable, Callable]:
    """(sample_xt, velocity) for `schedule`: each the student's if it passes its check, else fmlab's (with a note)."""
    schedule = _schedule_name(schedule)
    return (student_or_reference(sample_fn, lambda x0, x1, t: sample_path(x0, x1, t, schedule).x_t,
                                 lambda fn, quiet: check_sample_xt(fn, schedule, quiet), f"x_t ({schedule})"),
            student_or_reference(velocity_fn, lambda x0, x1, t: sample_path(x0, x1, t, schedule).dx_t,
                                 lambda fn, quiet: check_conditional_velocity(fn, schedule, quiet),
                                 f"conditional velocity ({schedule})"))
