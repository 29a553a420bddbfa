"""Checkers for lab 12 (the loss zoo). Time runs from noise at t = 0 to data at t = 1; a flow map
X(x, s, t) = x + (t - s) u(x, s, t) jumps from s to t, and u(x, t, t) is the velocity."""

from __future__ import annotations

import math
from typing import Any

from ..viz.loss_zoo import rule_of, sampler_of
from . import Verdict, check_choice, check_number

__all__ = ["check_meanflow_target", "check_gaussian_jump", "check_rule", "check_sampler", "meanflow_target_answer",
           "gaussian_jump_answer"]

RULE_OPTIONS = ("compositional", "Lagrangian", "Eulerian")
SAMPLER_OPTIONS = ("flowmap", "consistency", "noise_only")


def meanflow_target_answer() -> float:
    """Exercise 1: u(x, s, t) = 2 x + s - t at x = 1, s = 0.25, t = 0.75, conditional velocity v = 3:
    u_tgt = v + (t - s)(du/dx v + du/ds) = 3 + 0.5 (2 * 3 + 1) = 6.5."""
    v, s, t, du_dx, du_ds = 3.0, 0.25, 0.75, 2.0, 1.0
    return v + (t - s) * (du_dx * v + du_ds)  # u_tgt = v + (t - s) d/ds u along v


def check_meanflow_target(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: the MeanFlow target in our time convention for the toy average velocity above."""
    return check_number("MeanFlow target u_tgt", answer, meanflow_target_answer(), rtol=1e-3, quiet=quiet,
                        hint="In our time the identity reads u = v + (t - s) d/ds u, and d/ds u along the path is "
                             "(du/dx) v + du/ds. A sign slip (t - s vs s - t) is the classic error.")


def gaussian_jump_answer() -> float:
    """Exercise 2: data N(2, 0.25) in 1D, x = 0 at s = 0.5, jump to t = 1:
    X = t m + sqrt(var_t / var_s)(x - s m), var_r = r^2 lam + (1 - r)^2."""
    m, lam, x, s, t = 2.0, 0.25, 0.0, 0.5, 1.0
    var_s, var_t = s**2 * lam + (1 - s) ** 2, t**2 * lam + (1 - t) ** 2
    return t * m + math.sqrt(var_t / var_s) * (x - s * m)


def check_gaussian_jump(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: the exact flow map of a 1D Gaussian target."""
    return check_number("X(0, 0.5, 1)", answer, gaussian_jump_answer(), rtol=1e-3, quiet=quiet,
                        hint="Standardise at time s, rescale at time t: X = t m + sqrt(var_t / var_s)(x - s m) with "
                             "var_r = r^2 lam + (1 - r)^2 the variance of x_r.")


def check_rule(loss: str, answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: which consistency rule does `loss` enforce ('compositional', 'Lagrangian' or 'Eulerian')?"""
    return check_choice(f"rule of {loss}", answer, rule_of(loss), RULE_OPTIONS, quiet=quiet,
                        hint="Ask what the loss differentiates or compares: two jumps against one (compositional), "
                             "the destination time t (Lagrangian), or the start s with the start point riding along "
                             "the flow (Eulerian).")


def check_sampler(loss: str, answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 4: how must a model trained by `loss` be sampled in several steps?"""
    return check_choice(f"sampler for {loss}", answer, sampler_of(loss), SAMPLER_OPTIONS, quiet=quiet,
                        hint="Which (s, t) pairs did the loss ever train? Jumps to the data only need re-noising in "
                             "between; maps that always start from the noise cannot restart from the middle.")
