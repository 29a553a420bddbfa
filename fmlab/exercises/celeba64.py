"""Checkers for lab 13 (CelebA-64). Linear path x_t = (1 - t) x0 + t x1, noise at t = 0, data at t = 1.

An x1 (clean-image) head x1_hat gives the velocity v_hat = (x1_hat - x_t) / (1 - t), so an error delta in x1_hat
is an error delta / (1 - t) in the velocity: plain MSE on x1 weighs the velocity error by (1 - t)^2.
"""

from __future__ import annotations

from typing import Any

from . import Verdict, check_choice, check_number

__all__ = ["X1_T", "check_x1_weight", "BLOWUP_OPTIONS", "check_blowup_head", "PLAN", "check_planned_steps",
           "check_flow_map_nfe"]

X1_T = 0.9  # exercise 1


def check_x1_weight(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: plain MSE on an x1 head equals w(t) x (velocity MSE); w(0.9) = (1 - 0.9)^2 = 0.01."""
    return check_number(f"w({X1_T})", answer, (1 - X1_T) ** 2, rtol=1e-3, atol=1e-6,
                        hint="Write v_hat - v in terms of x1_hat - x1 using v = (x1 - x_t) / (1 - t), then square.",
                        quiet=quiet)


BLOWUP_OPTIONS = ("velocity", "x1", "eps")


def check_blowup_head(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: which head's conversion to a velocity divides by (1 - t), so that its errors blow up near the
    data (t -> 1)?"""
    return check_choice("the head whose velocity errors blow up at t -> 1", answer, "x1", BLOWUP_OPTIONS,
                        hint="v = (x1 - x_t) / (1 - t) and v = (x_t - x0) / t: which denominator vanishes at t = 1?",
                        quiet=quiet)


PLAN = {"images_per_s": 2400.0, "budget_s": 600.0, "batch_size": 128}  # exercise 3


def check_planned_steps(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: steps that fit 10 minutes at 2400 images/s with batch 128: floor(600 x 2400 / 128) = 11250."""
    expected = int(PLAN["budget_s"] * PLAN["images_per_s"] // PLAN["batch_size"])
    return check_number("training steps", answer, expected, rtol=0.0, atol=0.5,
                        hint="images in the budget = seconds x images per second; each step eats one batch.",
                        quiet=quiet)


def check_flow_map_nfe(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 4: network evaluations for 4-step sampling with a flow map (one per jump) plus 4 Heun steps of a
    velocity field (two per step): 4 + 8 = 12."""
    return check_number("network evaluations", answer, 12, rtol=0.0, atol=0.5,
                        hint="A flow-map jump X(x, s, t) is one call; a Heun step evaluates the field twice.",
                        quiet=quiet)
