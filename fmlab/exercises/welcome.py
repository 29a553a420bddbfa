"""Checkers for lab 00 (welcome). Linear path x_t = (1 - t) x0 + t x1, noise at t = 0, data at t = 1."""

from __future__ import annotations

from typing import Any

from . import Verdict, check_number

__all__ = ["check_time_on_path"]


def check_time_on_path(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise: with x0 = (0, 0) and x1 = (2, 1), at which t is x_t = (1.5, 0.75)?  x_t = t x1 here, so t = 0.75."""
    return check_number("t", answer, 0.75, rtol=0.0, atol=1e-3,
                        hint="With x0 = 0 the path is x_t = t x1: compare (1.5, 0.75) with (2, 1).", quiet=quiet)
