"""Checkers for lab 00 (welcome). Linear path x_t = (1 - t) x0 + t x1, noise at t = 0, data at t = 1."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..metrics import wasserstein
from . import Verdict, check_number, verdict

__all__ = ["check_time_on_path", "STEPS_TOLERANCE", "check_min_steps"]

STEPS_TOLERANCE = 0.10  # exercise 2: within 10 % of the 50-step W2


def check_time_on_path(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise: with x0 = (0, 0) and x1 = (2, 1), at which t is x_t = (1.5, 0.75)?  x_t = t x1 here, so t = 0.75."""
    return check_number("t", answer, 0.75, rtol=0.0, atol=1e-3,
                        hint="With x0 = 0 the path is x_t = t x1: compare (1.5, 0.75) with (2, 1).", quiet=quiet)


def check_min_steps(answer: Any, model: nn.Module, data: Tensor, quiet: bool = False) -> Verdict:
    """Exercise 2: is `answer` the smallest number of Euler steps k whose W2 (1000 samples of `model` from the seeded
    noise of `sample_model`, against `data`) is within 10 % of the 50-step W2? Right when k passes and k - 1 does
    not (three W2 evaluations, so the check is fast; the model is the student's trained one)."""
    from ..viz.welcome import sample_model  # viz imports plotly: keep this module light to import

    if isinstance(answer, bool) or not isinstance(answer, int) or not 1 <= answer <= 50:
        return verdict(False, f"k: answer with a whole number of steps between 1 and 50, got {answer!r}.", quiet)

    def w2(k: int) -> float:
        return wasserstein(sample_model(model, len(data), steps=k), data)

    target = (1 + STEPS_TOLERANCE) * w2(50)
    here = w2(answer)
    if here > target:
        return verdict(False, f"k = {answer}: W2 = {here:.3f} is more than 10 % above the 50-step value "
                              f"({target / (1 + STEPS_TOLERANCE):.3f}): you need more steps.", quiet)
    if answer > 1:
        below = w2(answer - 1)
        if below <= target:
            return verdict(False, f"k = {answer} is within 10 % (W2 = {here:.3f}), but so is k = {answer - 1} "
                                  f"(W2 = {below:.3f}): look for a smaller k.", quiet)
    fewer = f", and k = {answer - 1} is not" if answer > 1 else ""
    return verdict(True, f"k = {answer}: W2 = {here:.3f} is within 10 % of the 50-step value "
                         f"{target / (1 + STEPS_TOLERANCE):.3f}{fewer}.", quiet)
