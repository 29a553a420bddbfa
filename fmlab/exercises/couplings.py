"""Checkers for lab 05 (couplings). Noise x0 ~ N(0, I) at t = 0, data x1 at t = 1, x_t = (1 - t) x0 + t x1;
a coupling pairs each x0 with an x1, exact OT with the squared distance as cost."""

from __future__ import annotations

from typing import Any

import torch

from ..couplings import ot_permutation
from ..data import gmm_2d
from . import Verdict, check_number, verdict

__all__ = ["PAIRING_X0", "PAIRING_X1", "check_ot_pairing", "check_independent_cost", "check_posterior_variance_t0"]

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
