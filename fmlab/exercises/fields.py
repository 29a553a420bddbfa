"""Checkers for lab 02 (vector fields and the marginalisation trick). Linear path x_t = (1 - t) x0 + t x1."""

from __future__ import annotations

from typing import Any

import torch

from ..data.gaussian import worked_example_1d
from . import Verdict, check_array, check_number

__all__ = ["VELOCITY_X", "VELOCITY_X1", "VELOCITY_T", "WORKED_X", "WORKED_T", "check_conditional_velocity",
           "marginal_velocity_answer", "check_marginal_velocity", "loss_constant", "check_loss_constant"]

VELOCITY_X, VELOCITY_X1, VELOCITY_T = (0.0, 0.0), (2.0, 1.0), 0.5  # exercise 1
WORKED_X, WORKED_T = 0.1, 0.5  # exercises 2 and 3: data at -3 and +3


def check_conditional_velocity(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: u_t(x | x1) at x = (0, 0), x1 = (2, 1), t = 0.5: (x1 - x) / (1 - t) = (4, 2)."""
    x, x1 = torch.tensor(VELOCITY_X), torch.tensor(VELOCITY_X1)
    return check_array("u_t(x | x1)", answer, (x1 - x) / (1 - VELOCITY_T),
                       hint="The particle must cover x1 - x in the remaining time 1 - t.", quiet=quiet)


def marginal_velocity_answer() -> float:
    """u_t(x) for data at +-3 at x = 0.1, t = 0.5 from fmlab's closed form (= 2 (3 tanh(0.6) - 0.1))."""
    x = torch.tensor([[WORKED_X]], dtype=torch.float64)
    return worked_example_1d().velocity(x, WORKED_T).item()


def check_marginal_velocity(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: the marginal velocity u_t(x) at x = 0.1, t = 0.5 for data at -3 and +3."""
    return check_number("u_t(0.1) at t = 0.5", answer, marginal_velocity_answer(), rtol=5e-3,
                        hint="Weight the two conditional velocities (x1 - x) / (1 - t) by the posterior "
                             "P(x1 | x_t = x), proportional to N(x; t x1, (1 - t)^2).", quiet=quiet)


def loss_constant(t: float = WORKED_T, n_grid: int = 20001) -> float:
    """E[Var(x1 - x0 | x_t)] at a fixed t for data at +-3: the integral of p_t(x) Var(x1 | x_t = x) / (1 - t)^2
    over x, by the trapezoidal rule on [-3 t - 10 (1 - t), 3 t + 10 (1 - t)]."""
    data = worked_example_1d()
    half = 3 * t + 10 * (1 - t)
    x = torch.linspace(-half, half, n_grid, dtype=torch.float64)[:, None]
    integrand = data.marginal_log_prob(x, t).exp() * data.posterior_variance(x, t) / (1 - t) ** 2
    return torch.trapezoid(integrand, x[:, 0]).item()


def check_loss_constant(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: the gap between the conditional and the marginal loss at t = 0.5 for data at +-3 (to 5%)."""
    return check_number("E[Var(x1 - x0 | x_t)] at t = 0.5", answer, loss_constant(), rtol=0.05, atol=0.0,
                        hint="Var(x1 - x0 | x_t) = Var(x1 | x_t) / (1 - t)^2; average posterior_variance over "
                             "samples x_t (or average ||(x1 - x0) - u_t(x_t)||^2).", quiet=quiet)
