"""Checkers for lab 04 (solvers and step count). Sampling integrates dx/dt = v(x, t) from noise at t = 0 to
data at t = 1; a method of global order p has error ~ C N^(-p) with N steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..data import Gaussian, gmm_2d
from ..solvers import SOLVERS
from ..viz.solvers import measured_order as fitted_order
from . import Verdict, check_number, verdict
from .code import run_student, student_or_reference

__all__ = ["ORDER_STEPS", "measured_order", "check_solver_order", "step_function",
           "check_step_function", "check_error_ratio", "one_step_w2_answer", "check_one_step_w2"]


def check_step_function(step: Callable[..., torch.Tensor], method: str = "midpoint", quiet: bool = False) -> Verdict:
    """Exercise 1: does `step(field, x, t, dt)` make one step of `method` (compared with fmlab.solvers on the
    8-mode velocity field at a few (t, dt))?"""
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    gmm = gmm_2d("8modes")

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return gmm.velocity(x, t)

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    worst = 0.0
    for t0, dt in ((0.0, 0.5), (0.3, 0.2), (0.7, 0.25)):
        t = torch.full((16,), t0, dtype=torch.float64)
        try:
            mine = torch.as_tensor(step(field, x.clone(), t.clone(), dt), dtype=torch.float64)
        except Exception as err:  # the student's code: report, do not crash the cell
            return verdict(False, f"your step raised {type(err).__name__}: {err}", quiet)
        if mine.shape != x.shape:
            return verdict(False, f"your step returned shape {tuple(mine.shape)}, expected {tuple(x.shape)}", quiet)
        worst = max(worst, float((mine - SOLVERS[method].step(field, x, t, dt)).abs().max()))
    if worst < 1e-9:
        return verdict(True, f"your {method} step matches fmlab.solvers (max difference {worst:.1e}).", quiet)
    return verdict(False, f"your {method} step differs from fmlab.solvers by up to {worst:.3g}. Evaluate the field "
                          f"at the right (x, t) for each stage and combine the stages with the method's weights.",
                   quiet)


def check_error_ratio(method: str, answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: by what factor does the error of `method` shrink when the number of steps doubles? (2^order)"""
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    return check_number(f"error(N) / error(2N) for {method}", answer, 2.0 ** SOLVERS[method].order, rtol=0.1,
                        hint="error ~ C N^(-p): compare C N^(-p) with C (2N)^(-p).", quiet=quiet)


def one_step_w2_answer() -> float:
    """W2 between the point mass at E[x1] and the 8-mode data: sqrt(E ||x1 - E x1||^2) = sqrt(tr Cov[x1])."""
    gmm = gmm_2d("8modes")
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    spread = (gmm.weights * ((gmm.means - mean).pow(2).sum(1) + torch.diagonal(gmm.covs, dim1=1, dim2=2).sum(1))).sum()
    return math.sqrt(float(spread))


def check_one_step_w2(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: the W2 distance of one Euler step of the exact field v*(x, 0) = E[x1] - x to the 8-mode data."""
    return check_number("W2 of one exact Euler step", answer, one_step_w2_answer(), rtol=0.01,
                        hint="One step gives x0 + v*(x0, 0) = E[x1] for every x0: all mass on one point. The W2 from "
                             "a point to a distribution is the root mean squared distance to it.", quiet=quiet)


# --- exercise 4 (code): Heun or RK4, and its measured order of convergence -------------------------------------------

ORDER_STEPS = (8, 16, 32, 64)  # step counts of the convergence study


def _order_problem() -> tuple[Gaussian, torch.Tensor]:
    """A Gaussian N(m, diag(s^2)) whose flow is closed-form (Gaussian.flow_map_exact), and 16 start points."""
    gauss = Gaussian(torch.tensor([1.0, -0.5], dtype=torch.float64), std=torch.tensor([0.5, 2.0], dtype=torch.float64))
    return gauss, torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def measured_order(step: Callable[..., torch.Tensor],
                   steps: tuple[int, ...] = ORDER_STEPS) -> tuple[float, list[float]]:
    """(p, errors): the max error at t = 1 of `steps` uniform steps of step(field, x, t, dt) from t = 0 on the Gaussian
    test problem, and p the least-squares slope of -log(error) against log(N): the global order of convergence."""
    gauss, x0 = _order_problem()
    exact = gauss.flow_map_exact(x0, 0.0, 1.0)
    errors = []
    for n in steps:
        x, dt = x0.clone(), 1.0 / n
        for k in range(n):
            x = torch.as_tensor(step(gauss.velocity, x, torch.full((len(x),), k * dt, dtype=x.dtype), dt),
                                dtype=torch.float64)
        errors.append(float((x - exact).abs().max()))
    return fitted_order(list(steps), errors), errors


def check_solver_order(step: Callable[..., torch.Tensor], method: str = "heun", quiet: bool = False) -> Verdict:
    """Exercise 4: is step(field, x, t, dt) one step of `method` ('heun' or 'rk4')? Measures its order of convergence
    on a Gaussian whose flow is closed-form (N = 8, 16, 32, 64 steps) and compares one step with fmlab.solvers."""
    if method not in ("heun", "rk4"):
        raise ValueError(f"method must be 'heun' or 'rk4', got {method!r}")
    expected = SOLVERS[method].order
    gauss, x0 = _order_problem()
    t = torch.full((16,), 0.25, dtype=torch.float64)
    value, problem = run_student(step, gauss.velocity, x0.clone(), t.clone(), 0.25)
    if problem:
        return verdict(False, f"{method} step: {problem}", quiet)
    if value.shape != x0.shape:
        return verdict(False, f"{method} step: expected shape {tuple(x0.shape)}, got {tuple(value.shape)}. Return the "
                              f"new state x_(k+1), one point per sample.", quiet)
    try:
        order, errors = measured_order(step)
    except Exception as err:  # the student's code, or errors that are not positive and finite
        return verdict(False, f"{method} step: the convergence study failed: {type(err).__name__}: {err}", quiet)
    same = check_step_function(step, method, quiet=True)
    report = f"measured order {order:.2f} (errors {', '.join(f'{e:.1e}' for e in errors)} at N = {ORDER_STEPS})"
    if same:
        return verdict(True, f"{method} step: correct; {report}, expected {expected}.", quiet)
    if torch.allclose(value, SOLVERS["euler"].step(gauss.velocity, x0, t, 0.25)):
        return verdict(False, f"{method} step: not yet. That is an Euler step (order 1): the later stages must enter "
                              f"the update. {report}.", quiet)
    if torch.allclose(value, 2 * x0 - SOLVERS[method].step(gauss.velocity, x0, t, 0.25)):
        return verdict(False, f"{method} step: not yet. The sign of the update is flipped: x_(k+1) = x_k + dt * (...)."
                              f" {report}.", quiet)
    if abs(order - expected) < 0.3:
        return verdict(False, f"{method} step: order {order:.2f} is right, but the step is not {method}'s (another "
                              f"method of the same order?). Compare your stages and weights with the table.", quiet)
    return verdict(False, f"{method} step: {report}, expected order {expected}. Check at which (x, t) each stage "
                          f"evaluates the field (t, t + dt / 2, t + dt) and the weights of the final combination.",
                   quiet)


def step_function(fn: Any, method: str = "heun") -> Callable[..., torch.Tensor]:
    """The student's step if it passes exercise 4 for `method`, else fmlab.solvers' (with a note)."""
    return student_or_reference(fn, SOLVERS[method].step, lambda f, quiet: check_solver_order(f, method, quiet),
                                f"{method} step")
