"""Checkers for lab 03 (training flow matching). Linear path x_t = (1 - t) x0 + t x1, noise at t = 0.

The loss a network can reach is bounded below by the floor L* = E ||x1 - x0 - v*(x_t, t)||^2 / d, with
v*(x, t) = E[x1 - x0 | x_t = x] the marginal velocity (closed-form for Gaussian mixtures).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from ..data import gmm_2d
from ..viz.training import loss_floor
from . import Verdict, check_array, check_choice, check_number

__all__ = ["NOISE_X", "check_velocity_at_noise", "floor_answer", "check_loss_floor", "WHERE_OPTIONS",
           "check_where_error"]

NOISE_X = (1.0, 1.0)  # exercise 1: the point x at t = 0, mixture "asymmetric"


def check_velocity_at_noise(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: v*(x, 0) at x = (1, 1) for gmm_2d('asymmetric'). At t = 0, x_t = x0 tells nothing about x1,
    so v*(x, 0) = E[x1 - x0 | x0 = x] = E[x1] - x."""
    x = torch.tensor([NOISE_X], dtype=torch.float64)
    expected = gmm_2d("asymmetric").velocity(x, 0.0)[0]
    return check_array("v*((1, 1), 0)", answer, expected, rtol=1e-3, atol=1e-3,
                       hint="At t = 0 the point is pure noise, independent of x1: E[x1 - x0 | x0 = x] = E[x1] - x, "
                            "and E[x1] is the weighted mean of the component means.", quiet=quiet)


@lru_cache(maxsize=4)
def floor_answer(name: str = "8modes") -> float:
    """The loss floor L* of gmm_2d(name) by Monte Carlo with 200 000 draws (standard error ~0.3%)."""
    return loss_floor(gmm_2d(name), n=200_000, seed=123)


def check_loss_floor(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: L* = E_{t, x0, x1} ||x1 - x0 - v*(x_t, t)||^2 / 2 for the 8-mode data (to 3%)."""
    return check_number("L* for 8modes", answer, floor_answer("8modes"), rtol=0.03, atol=0.0,
                        hint="Draw t ~ U[0, 1], x0 ~ N(0, I), x1 from the mixture, form x_t = (1 - t) x0 + t x1 and "
                             "average ||(x1 - x0) - gmm.velocity(x_t, t)||^2 / 2 over many draws (>= 20 000).",
                        quiet=quiet)


WHERE_OPTIONS = ("near the modes", "where p_t has little mass", "the same everywhere")


def check_where_error(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: where is the learned field furthest from the closed form?"""
    return check_choice("where the learned field is least accurate", answer, WHERE_OPTIONS[1], WHERE_OPTIONS,
                        hint="The loss only samples points x_t ~ p_t: what does the network learn where no x_t lands?",
                        quiet=quiet)
