"""Checkers for lab 05 (couplings). Noise x0 ~ N(0, I) at t = 0, data x1 at t = 1, x_t = (1 - t) x0 + t x1;
a coupling pairs each x0 with an x1, exact OT with the squared distance as cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..couplings import cost_matrix, ot_permutation
from ..data import gmm_2d
from . import Verdict, check_number, verdict
from .code import run_student, student_or_reference

__all__ = ["PAIRING_X0", "PAIRING_X1", "check_ot_pairing", "check_independent_cost", "check_posterior_variance_t0",
           "ot_pair_inputs", "reference_ot_pair", "check_ot_pair", "ot_pair_function"]

PAIRING_X0 = ((-1.0, 0.0), (1.0, 0.0), (0.0, 1.0))  # exercise 1: three noise points ...
PAIRING_X1 = ((0.0, 3.0), (-2.0, -1.0), (2.0, -1.0))  # ... and three data points


def check_ot_pairing(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: the OT partner index j(i) of every x0_i among PAIRING_X1 (a list of 3 indices)."""
    x0, x1 = torch.tensor(PAIRING_X0), torch.tensor(PAIRING_X1)
    expected = ot_permutation(x0, x1).tolist()
    try:
        perm = [int(j) for j in answer]
    except (TypeError, ValueError):
        return verdict(False, f"answer with a list of 3 indices into x1, e.g. [0, 1, 2]; got {answer!r}", quiet)
    if sorted(perm) != [0, 1, 2]:
        return verdict(False, f"{perm} is not a pairing: every x1 must be used exactly once", quiet)
    cost = float((x0 - x1[perm]).pow(2).sum(1).mean())
    best = float((x0 - x1[expected]).pow(2).sum(1).mean())
    if perm == expected:
        return verdict(True, f"{perm} is the OT pairing (mean cost {best:.3f}).", quiet)
    return verdict(False, f"{perm} costs {cost:.3f} on average; a pairing with cost {best:.3f} exists. There are only "
                          f"6 pairings: try them all.", quiet)


def check_independent_cost(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: E ||x1 - x0||^2 for independent pairs on the 8-mode data = E||x0||^2 + E||x1||^2 (= 2 + 8.25)."""
    gmm = gmm_2d("8modes")
    second_moment = (gmm.weights * (gmm.means.pow(2).sum(1) + torch.diagonal(gmm.covs, dim1=1, dim2=2).sum(1))).sum()
    return check_number("E||x1 - x0||^2 (independent)", answer, 2.0 + float(second_moment), rtol=0.01,
                        hint="Expand ||x1 - x0||^2; the cross term vanishes because x0 and x1 are independent and "
                             "E[x0] = 0. E||x0||^2 = d for N(0, I).", quiet=quiet)


def check_posterior_variance_t0(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: tr Cov[x1 | x_t] at t = 0 for independent pairs on the 8-mode data (= tr Cov[x1])."""
    expected = float(gmm_2d("8modes").posterior_variance(torch.zeros(1, 2, dtype=torch.float64), 0.0)[0])
    return check_number("tr Cov[x1 | x_0] (independent)", answer, expected, rtol=0.01,
                        hint="At t = 0 the point x_t = x0 says nothing about x1: the posterior is the data "
                             "distribution itself. Add the spread of the means and the variance within a mode.",
                        quiet=quiet)


# --- exercise 4 (code): minibatch OT pairs with linear_sum_assignment ------------------------------------------------

def ot_pair_inputs(n: int = 64, seed: int = 7) -> tuple[Tensor, Tensor]:
    """(x0, x1): n noise points N(0, I) and n points of the 8 Gaussians, [n, 2] float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64), gmm_2d("8modes").sample(n, generator=g).double()


def reference_ot_pair(x0: Tensor, x1: Tensor) -> Tensor:
    """x1 reordered so that row i is the exact-OT partner of x0[i] (fmlab.couplings.ot_permutation)."""
    return x1[ot_permutation(x0, x1)]


def _rows_of(value: Tensor, x1: Tensor) -> Tensor | None:
    """For each row of value, the index of the identical row of x1, or None if some row is not a row of x1."""
    dist = torch.cdist(value, x1)
    best = dist.min(dim=1)
    return best.indices if bool((best.values < 1e-9).all()) else None


def check_ot_pair(fn: Callable[[Tensor, Tensor], Tensor], quiet: bool = False) -> Verdict:
    """Exercise 4: does fn(x0, x1) return x1 reordered by the OT permutation (squared-distance cost)?

    Checks that the result is a permutation of the rows of x1 (each used once: OT *without* replacement) and that its
    total cost equals the exact optimum n * ot.emd2(1/n, 1/n, C)."""
    x0, x1 = ot_pair_inputs()
    n = len(x0)
    value, problem = run_student(fn, x0.clone(), x1.clone())
    if problem:
        return verdict(False, f"OT pairs: {problem}", quiet)
    if value.shape != x1.shape:
        extra = (" You returned indices: return the reordered points x1[cols] instead."
                 if value.shape == (n,) else "")
        return verdict(False, f"OT pairs: expected shape {tuple(x1.shape)}, got {tuple(value.shape)}.{extra}", quiet)
    rows = _rows_of(value, x1)
    if rows is None:
        return verdict(False, "OT pairs: some returned rows are not rows of x1. Reorder x1, do not move its points.",
                       quiet)
    used = torch.bincount(rows, minlength=n)
    if bool((used != 1).any()):
        return verdict(False, f"OT pairs: not a permutation: {int((used == 0).sum())} data points are never used and "
                              f"{int((used > 1).sum())} are used more than once. That is OT with replacement (each x0 "
                              f"takes its nearest x1): a coupling must use every data point exactly once, so that x1 "
                              f"keeps the data distribution. Solve the assignment problem with "
                              f"scipy.optimize.linear_sum_assignment.", quiet)
    cost = cost_matrix(x0, x1)
    total = float((x0 - value).pow(2).sum())
    best = n * float(ot.emd2(np.full(n, 1.0 / n), np.full(n, 1.0 / n), cost.numpy()))
    if abs(total - best) <= 1e-6 * best:
        return verdict(True, f"OT pairs: a permutation with total cost {total:.3f}, the optimum (ot.emd2).", quiet)
    if torch.equal(rows, torch.arange(n)):
        return verdict(False, f"OT pairs: you returned x1 unchanged, the independent pairing (total cost {total:.1f} "
                              f"against the optimum {best:.1f}).", quiet)
    _, cols = linear_sum_assignment(cost.sqrt().numpy())
    if torch.equal(rows, torch.as_tensor(cols)):
        return verdict(False, f"OT pairs: you minimised the sum of distances ||x0 - x1||, not of squared distances "
                              f"||x0 - x1||^2 (total squared cost {total:.2f} against {best:.2f}).", quiet)
    _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
    if torch.equal(rows, torch.as_tensor(cols)):
        return verdict(False, "OT pairs: you maximised the cost (maximize=True): OT minimises it.", quiet)
    return verdict(False, f"OT pairs: a permutation, but its total cost {total:.2f} exceeds the optimum {best:.2f}. "
                          f"Build the cost matrix C_ij = ||x0_i - x1_j||^2 and return x1[cols] where "
                          f"rows, cols = linear_sum_assignment(C).", quiet)


def ot_pair_function(fn: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """The student's OT pairing if it passes exercise 4, else fmlab's (with a note)."""
    return student_or_reference(fn, reference_ot_pair, check_ot_pair, "OT pairing")
