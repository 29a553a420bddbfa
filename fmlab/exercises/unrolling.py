"""Checkers for lab 06 (parametrisation: velocity field against x1 prediction) and lab 07 (unrolled flow matching).

Convention: t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1. A velocity head v and an x1 head x1hat are
related by v = (x1hat - x_t) / (1 - t); a window of L Euler steps of size dt starts on the true path at x_{t0}.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..diagnostics import kstep_decomposition
from ..losses import Batch
from . import Verdict, check_number

__all__ = [
    "WEIGHT_T", "TRANSITION", "RATIO_TIMES", "check_x1_loss_weight", "check_x1_transition_norm",
    "check_gradient_factor_ratio", "CROSS_WINDOW", "check_cross_term_count", "check_cross_share",
    "check_taylor_weight", "check_kstep_split",
]

# --- lab 06: parametrisation ---------------------------------------------------------------------------------------

WEIGHT_T = 0.9  # exercise 1: the x1 head's loss weight at this t
TRANSITION = {"t": 0.75, "dt": 0.125, "jac": 0.5}  # exercise 2: x1 head with J_x1 = 0.5 I
RATIO_TIMES = (0.1, 0.9)  # exercise 3: the x1 head's gradient factor 1 / (1 - t) at these times


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


# --- lab 07: unrolling ---------------------------------------------------------------------------------------------
# Lab 07 numbers its exercises 1-4. Its window runs through the model's own states z_k: z_0 = x_{t0},
# z_{k+1} = z_k + dt vhat_k, with the step errors e_k = vhat_k - (x1 - x0).

CROSS_WINDOW = 4  # lab 07, exercises 1 and 2 use a window of 4 steps


def check_cross_term_count(answer: Any, quiet: bool = False) -> Verdict:
    """Lab 07, exercise 1: how many cross-terms e_i . e_j (i != j, ordered pairs) has a window of L = 4?
    L (L - 1) = 12."""
    L = CROSS_WINDOW
    return check_number("number of cross-terms (L = 4)", answer, L * (L - 1), rtol=0.0, atol=0.0,
                        hint="Count ordered pairs (i, j) with i != j in ||sum_k e_k||^2.", quiet=quiet)


def check_cross_share(answer: Any, quiet: bool = False) -> Verdict:
    """Lab 07, exercise 2: every step makes the same error e: which fraction of the terminal loss are cross-terms
    (L = 4)?
    ||L e||^2 = L^2 ||e||^2, single-step part L ||e||^2: share 1 - 1/L = 0.75."""
    return check_number("cross-term share (L = 4, equal errors)", answer, 1 - 1 / CROSS_WINDOW,
                        hint="Compare ||sum_k e||^2 with sum_k ||e||^2 when all e_k are equal.", quiet=quiet)


def check_taylor_weight(answer: Any, window: int = 4, quiet: bool = False) -> Verdict:
    """Lab 07, exercise 4: the consistency weight ((L - 1) / L)^2 of the expansion of the WT-FM loss into anchor,
    consistency term and their cross-term, for L = 4 steps: 0.5625."""
    return check_number(f"((L - 1) / L)^2 for L = {window}", answer, ((window - 1) / window) ** 2,
                        hint="Read it off the expansion in section 4 (c = (L - 1) / L).", quiet=quiet)


def check_kstep_split(single: Any, cross: Any, model: nn.Module, batch: Batch, window: int, steps: int,
                      quiet: bool = False) -> Verdict:
    """Lab 07, exercise 3: your own split of the terminal loss (batch means of dt^2 sum_k ||e_k||^2 / d and of
    dt^2 sum_{i != j} e_i . e_j / d) against fmlab.diagnostics.kstep_decomposition on the same batch."""
    ref = kstep_decomposition(model, batch, window, steps)
    a = check_number("single-step part", single, float(ref.single_total), rtol=1e-3, atol=1e-7,
                     hint="dt^2 times the mean over the batch of sum_k ||e_k||^2 / d.", quiet=quiet)
    b = check_number("cross-term part", cross, float(ref.cross_total), rtol=1e-3, atol=1e-7,
                     hint="||sum_k e_k||^2 - sum_k ||e_k||^2, times dt^2 / d, batch mean.", quiet=quiet)
    ok = bool(a) and bool(b)
    return Verdict(ok, f"together {float(ref.terminal):.5g} = the terminal loss" if ok else "not yet")
