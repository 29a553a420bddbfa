"""Checkers for lab 10 (unrolled flow matching); lab 06's are in fmlab.exercises.parametrisation.

Convention: t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1. A window of L Euler steps of size dt starts on
the true path at x_{t0}.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..diagnostics import kstep_decomposition
from ..losses import Batch
from . import Verdict, check_number

__all__ = [
    "CROSS_WINDOW", "check_cross_term_count", "check_cross_share",
    "check_taylor_weight", "check_kstep_split",
]


# --- lab 10: unrolling ---------------------------------------------------------------------------------------------
# Lab 10 numbers its exercises 1-4. Its window runs through the model's own states z_k: z_0 = x_{t0},
# z_{k+1} = z_k + dt vhat_k, with the step errors e_k = vhat_k - (x1 - x0).

CROSS_WINDOW = 4  # lab 10, exercises 1 and 2 use a window of 4 steps


def check_cross_term_count(answer: Any, quiet: bool = False) -> Verdict:
    """Lab 10, exercise 1: how many cross-terms e_i . e_j (i != j, ordered pairs) has a window of L = 4?
    L (L - 1) = 12."""
    L = CROSS_WINDOW
    return check_number("number of cross-terms (L = 4)", answer, L * (L - 1), rtol=0.0, atol=0.0,
                        hint="Count ordered pairs (i, j) with i != j in ||sum_k e_k||^2.", quiet=quiet)


def check_cross_share(answer: Any, quiet: bool = False) -> Verdict:
    """Lab 10, exercise 2: every step makes the same error e: which fraction of the terminal loss are cross-terms
    (L = 4)?
    ||L e||^2 = L^2 ||e||^2, single-step part L ||e||^2: share 1 - 1/L = 0.75."""
    return check_number("cross-term share (L = 4, equal errors)", answer, 1 - 1 / CROSS_WINDOW,
                        hint="Compare ||sum_k e||^2 with sum_k ||e||^2 when all e_k are equal.", quiet=quiet)


def check_taylor_weight(answer: Any, window: int = 4, quiet: bool = False) -> Verdict:
    """Lab 10, exercise 4: the consistency weight ((L - 1) / L)^2 of the expansion of the WT-FM loss into anchor,
    consistency term and their cross-term, for L = 4 steps: 0.5625."""
    return check_number(f"((L - 1) / L)^2 for L = {window}", answer, ((window - 1) / window) ** 2,
                        hint="Read it off the expansion in section 4 (c = (L - 1) / L).", quiet=quiet)


def check_kstep_split(single: Any, cross: Any, model: nn.Module, batch: Batch, window: int, steps: int,
                      quiet: bool = False) -> Verdict:
    """Lab 10, exercise 3: your own split of the terminal loss (batch means of dt^2 sum_k ||e_k||^2 / d and of
    dt^2 sum_{i != j} e_i . e_j / d) against fmlab.diagnostics.kstep_decomposition on the same batch."""
    ref = kstep_decomposition(model, batch, window, steps)
    a = check_number("single-step part", single, float(ref.single_total), rtol=1e-3, atol=1e-7,
                     hint="dt^2 times the mean over the batch of sum_k ||e_k||^2 / d.", quiet=quiet)
    b = check_number("cross-term part", cross, float(ref.cross_total), rtol=1e-3, atol=1e-7,
                     hint="||sum_k e_k||^2 - sum_k ||e_k||^2, times dt^2 / d, batch mean.", quiet=quiet)
    ok = bool(a) and bool(b)
    return Verdict(ok, f"together {float(ref.terminal):.5g} = the terminal loss" if ok else "not yet")
