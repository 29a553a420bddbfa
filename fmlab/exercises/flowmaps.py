"""Checkers for lab 08 (flow maps). Noise at t = 0, data at t = 1; X(x, s, t) = x + (t - s) u(x, s, t).

The exercises use one-dimensional Gaussian data x1 ~ N(M, SD^2) on the linear path x_r = (1 - r) x0 + r x1,
whose marginals are N(r M, var_r) with var_r = r^2 SD^2 + (1 - r)^2, and whose flow map is affine in x:

    X(x, s, t) = t M + sqrt(var_t / var_s) (x - s M).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import Verdict, check_choice, check_number, verdict

__all__ = ["M", "SD", "gaussian_flow_map_1d", "gaussian_velocity_1d", "check_flow_map_1d", "check_velocity_limit",
           "check_rule_for_loss", "RULES", "VELOCITY_POINT"]

M, SD = 2.0, 0.5  # the data N(M, SD^2)
VELOCITY_POINT = (0.0, 0.5)  # exercise 2: (x, s) at which u(x, s, t) is asked for as t -> s
RULES = ("compositional", "Lagrangian", "Eulerian")


def _var(r: torch.Tensor) -> torch.Tensor:
    return r**2 * SD**2 + (1 - r) ** 2  # var_r = r^2 SD^2 + (1 - r)^2


def gaussian_flow_map_1d(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The reference: X(x, s, t) = t M + sqrt(var_t / var_s) (x - s M)."""
    return t * M + torch.sqrt(_var(t) / _var(s)) * (x - s * M)


def gaussian_velocity_1d(x: float, t: float) -> float:
    """v(x, t) = d/dt X at t = s: M + (t (SD^2 + 1) - 1) / var_t (x - t M)."""
    var = t**2 * SD**2 + (1 - t) ** 2
    return M + (t * (SD**2 + 1) - 1) / var * (x - t * M)


def check_flow_map_1d(fn: Callable[[Any, Any, Any], Any], quiet: bool = False) -> Verdict:
    """Exercise 1: `fn(x, s, t)` returns X(x, s, t) for the 1D Gaussian data N(2, 0.5^2), elementwise on tensors."""
    if not callable(fn):
        return verdict(False, f"pass a function fn(x, s, t), got {type(fn).__name__}", quiet)
    g = torch.Generator().manual_seed(8)
    x = 2 * torch.randn(200, generator=g, dtype=torch.float64)
    s = 0.8 * torch.rand(200, generator=g, dtype=torch.float64)
    t = s + (1 - s) * torch.rand(200, generator=g, dtype=torch.float64)
    try:
        got = torch.as_tensor(fn(x, s, t), dtype=torch.float64)
    except Exception as err:  # report, do not crash the student's cell
        return verdict(False, f"your function raised {type(err).__name__}: {err}", quiet)
    want = gaussian_flow_map_1d(x, s, t)
    if got.shape != want.shape:
        return verdict(False, f"expected one value per input (shape {tuple(want.shape)}), got {tuple(got.shape)}",
                       quiet)
    err = (got - want).abs().max().item()
    if err < 1e-6:
        return verdict(True, "X(x, s, t) matches the exact Gaussian flow map.", quiet)
    same = torch.allclose(torch.as_tensor(fn(x, s, s), dtype=torch.float64), x, atol=1e-6)
    hint = "" if same else " Check the boundary condition X(x, s, s) = x first."
    return verdict(False, f"off by up to {err:.3g}.{hint} Standardise at time s (subtract s M, divide by the std "
                          "at s), then un-standardise at time t.", quiet)


def check_velocity_limit(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: lim_{t -> s} u(x, s, t) at x = 0, s = 0.5 for the data N(2, 0.5^2) (= the velocity v(x, s))."""
    x, s = VELOCITY_POINT
    return check_number("u(0, 0.5, t) as t -> 0.5", answer, gaussian_velocity_1d(x, s), rtol=1e-3, atol=1e-3,
                        hint="As t -> s the average velocity becomes the instantaneous velocity d/dt X at t = s.",
                        quiet=quiet)


def check_rule_for_loss(loss: str, answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: which consistency rule (compositional, Lagrangian, Eulerian) does registered loss `loss` enforce?"""
    from ..losses import get_loss

    family = get_loss(loss).family
    expected = next((r for r in RULES if r.lower() in family.lower()), None)
    if expected is None:
        raise ValueError(f"loss {loss!r} (family {family!r}) is not a flow-map loss")
    return check_choice(f"the rule behind {loss!r}", answer, expected, RULES,
                        hint="Does it compare two jumps with one, differentiate in the destination time t, or in "
                             "the start time s (with a Jacobian-vector product along the velocity)?", quiet=quiet)

