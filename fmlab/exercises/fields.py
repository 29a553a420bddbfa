"""Checkers for lab 02 (vector fields and the marginalisation trick). Linear path x_t = (1 - t) x0 + t x1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..data.gaussian import EmpiricalDistribution, worked_example_1d
from . import Verdict, check_array, check_number, verdict
from .code import diagnose, exercise_batch, run_student, student_or_reference

__all__ = ["VELOCITY_X", "VELOCITY_X1", "VELOCITY_T", "WORKED_X", "WORKED_T", "check_conditional_velocity",
           "marginal_velocity_answer", "check_marginal_velocity", "loss_constant", "check_loss_constant",
           "MIXTURE_MEANS", "MIXTURE_WEIGHTS", "check_conditional_field", "mixture_inputs", "reference_marginal_field",
           "check_marginal_field", "marginal_field_function"]

VELOCITY_X, VELOCITY_X1, VELOCITY_T = (0.0, 0.0), (2.0, 1.0), 0.5  # exercise 1
WORKED_X, WORKED_T = 0.1, 0.5  # exercises 2 and 3: data at -3 and +3


def check_conditional_velocity(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: u_t(x | x1) at x = (0, 0), x1 = (2, 1), t = 0.5: (x1 - x) / (1 - t) = (4, 2)."""
    x, x1 = torch.tensor(VELOCITY_X), torch.tensor(VELOCITY_X1)
    return check_array("u_t(x | x1)", answer, (x1 - x) / (1 - VELOCITY_T),
                       hint="The particle must cover x1 - x in the remaining time 1 - t.", quiet=quiet)


def marginal_velocity_answer() -> float:
    """v*(x, t) for data at +-3 at x = 0.1, t = 0.5 from fmlab's closed form (= 2 (3 tanh(0.6) - 0.1))."""
    x = torch.tensor([[WORKED_X]], dtype=torch.float64)
    return worked_example_1d().velocity(x, WORKED_T).item()


def check_marginal_velocity(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: the marginal velocity v*(x, t) at x = 0.1, t = 0.5 for data at -3 and +3."""
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


# --- exercises 4 and 5 (code): the conditional field and the marginal field of a 1D two-point mixture -----------------

SHAPE_HINT = ("Return one vector per sample, shape [B, 2] like x; t has shape [B], so write t[:, None] to broadcast it "
              "over the coordinates.")
MIXTURE_MEANS = (-1.0, 2.0)  # exercise 5: data at -1 (weight 0.3) and +2 (weight 0.7), one dimension
MIXTURE_WEIGHTS = (0.3, 0.7)


def check_conditional_field(fn: Callable[[Tensor, Tensor, Tensor], Tensor], quiet: bool = False) -> Verdict:
    """Exercise 4: does fn(x, x1, t) return u_t(x | x1) = (x1 - x) / (1 - t) on a batch x, x1 [16, 2], t [16]?"""
    x, x1, t = exercise_batch(seed=4)
    value, problem = run_student(fn, x.clone(), x1.clone(), t.clone())
    if problem:
        return verdict(False, f"u_t(x | x1): {problem}", quiet)
    tc = t[:, None]
    mistakes = {
        "The sign is flipped: the field must carry x towards the data point x1, i.e. along x1 - x.":
            (x - x1) / (1 - tc),
        "The time convention looks flipped (data at t = 0): here the data is reached at t = 1, so the time left is "
        "1 - t, not t.": (x1 - x) / tc,
        "The division by the time left is missing: the particle must cover x1 - x in the remaining time 1 - t.":
            x1 - x,
    }
    return diagnose("u_t(x | x1)", value, (x1 - x) / (1 - tc), mistakes, shape_hint=SHAPE_HINT,
                    hint="On the linear path x = (1 - t) x0 + t x1: eliminate x0 from the velocity x1 - x0.",
                    quiet=quiet)


def mixture_inputs(n: int = 32, seed: int = 5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x, t, means, weights): points x [n] in (-4, 4), times t [n] in [0.05, 0.95] and the mixture's means [2] and
    weights [2], float64."""
    g = torch.Generator().manual_seed(seed)
    x = 8 * torch.rand(n, generator=g, dtype=torch.float64) - 4
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return x, t, torch.tensor(MIXTURE_MEANS, dtype=torch.float64), torch.tensor(MIXTURE_WEIGHTS, dtype=torch.float64)


def reference_marginal_field(x: Tensor, t: Tensor, means: Tensor, weights: Tensor) -> Tensor:
    """v*(x, t) [B] of the 1D point-mass mixture sum_k w_k delta(x1 - m_k): fmlab's closed form."""
    mixture = EmpiricalDistribution(means[:, None], weights)
    return mixture.velocity(x[:, None], t)[:, 0]


def check_marginal_field(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], quiet: bool = False) -> Verdict:
    """Exercise 5: does fn(x, t, means, weights) return the marginal field
    v*(x, t) = sum_k pi_k(x) (m_k - x) / (1 - t) of the two-point mixture, pi_k the posterior weights?
    Compared with fmlab's closed form at 32 random (x, t)."""
    x, t, means, weights = mixture_inputs()
    value, problem = run_student(fn, x.clone(), t.clone(), means.clone(), weights.clone())
    if problem:
        return verdict(False, f"v*(x, t): {problem}", quiet)
    exact = reference_marginal_field(x, t, means, weights)
    fields = (means[None, :] - x[:, None]) / (1 - t[:, None])  # u_t(x | m_k), [B, 2]

    def posterior(var: Tensor) -> Tensor:
        logits = weights.log()[None, :] - (x[:, None] - t[:, None] * means[None, :]) ** 2 / (2 * var)
        return torch.softmax(logits, dim=1)

    mistakes = {
        "You averaged with the mixture weights w_k: the marginal field weighs each data point by its posterior "
        "weight pi_k(x) = w_k N(x; t m_k, (1 - t)^2) / sum_j w_j N(x; t m_j, (1 - t)^2).": (weights * fields).sum(1),
        "The sign is flipped: each conditional field points from x towards its data point, (m_k - x) / (1 - t).":
            -exact,
        "The posterior weights use the wrong variance: x_t given x1 = m_k is N(t m_k, (1 - t)^2), not N(t m_k, 1).":
            (posterior(torch.ones_like(t)[:, None]) * fields).sum(1),
        "The posterior weights use the standard deviation (1 - t) where the variance (1 - t)^2 belongs.":
            (posterior((1 - t)[:, None]) * fields).sum(1),
        "The time convention looks flipped (data at t = 0): here x_t = (1 - t) x0 + t x1, so component k sits at "
        "t m_k with width 1 - t.": reference_marginal_field(x, 1 - t, means, weights) * -1,
    }
    return diagnose("v*(x, t)", value, exact, mistakes,
                    shape_hint="Return one number per point, shape [B] like x (x and t are 1D here).",
                    hint="Compute log w_k - (x - t m_k)^2 / (2 (1 - t)^2) for both k, softmax over k, then average "
                         "the two conditional fields with these weights.", quiet=quiet)


def marginal_field_function(fn: Any) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """The student's marginal field if it passes exercise 5, else fmlab's closed form (with a note)."""
    return student_or_reference(fn, reference_marginal_field, check_marginal_field, "marginal field")
