"""Checkers for lab 06 (parametrisation: velocity field, clean-data (x1) and noise (eps) heads).

Convention: t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1, velocity u = x1 - x0. On this path the heads are
related by (fmlab.paths)

    v = (x1_hat - x_t) / (1 - t)        (x1 head: an error delta becomes delta / (1 - t), large near the data)
    v = (x_t - eps_hat) / t             (eps head, a guess of the noise x0: delta becomes delta / t, large near noise)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..paths import PREDICTIONS, convert_prediction
from . import Verdict, check_number, verdict
from .code import diagnose, exercise_batch, run_student, student_or_reference

__all__ = [
    "WEIGHT_T", "TRANSITION", "RATIO_TIMES", "EPS_ERROR", "check_x1_loss_weight", "check_x1_transition_norm",
    "check_gradient_factor_ratio", "check_eps_velocity_error",
    "HEAD_NAMES", "CONVERSIONS", "check_conversion", "conversion_function",
]


WEIGHT_T = 0.9  # exercise 1: the x1 head's loss weight at this t
TRANSITION = {"t": 0.75, "dt": 0.125, "jac": 0.5}  # exercise 2: x1 head with J_x1 = 0.5 I
RATIO_TIMES = (0.1, 0.9)  # exercise 3: the x1 head's gradient factor 1 / (1 - t) at these times
EPS_ERROR = {"t": 0.05, "delta": 0.01}  # exercise 4: an eps head off by delta at time t


def check_x1_loss_weight(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: w(t) with ||vhat - v||^2 = w(t) ||x1hat - x1||^2 at t = 0.9: w = 1 / (1 - t)^2 = 100."""
    return check_number("w(0.9)", answer, 1 / (1 - WEIGHT_T) ** 2,
                        hint="Write vhat - v with v = (x1 - x_t) / (1 - t) and vhat = (x1hat - x_t) / (1 - t).",
                        quiet=quiet)


def check_x1_transition_norm(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: ||T||_2 of one Euler step of an x1 head with J_x1 = 0.5 I at t = 0.75, dt = 1/8:
    T = (1 - dt / (1 - t)) I + dt / (1 - t) J_x1 = 0.5 I + 0.25 I = 0.75 I."""
    t, dt, j = TRANSITION["t"], TRANSITION["dt"], TRANSITION["jac"]
    c = dt / (1 - t)
    return check_number("||T|| (x1 head)", answer, (1 - c) + c * j,
                        hint="The step is x + dt (x1hat(x) - x) / (1 - t); differentiate it in x.", quiet=quiet)


def check_gradient_factor_ratio(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: the x1 head's velocity-error factor 1 / (1 - t) at t = 0.9 over the one at t = 0.1: 0.9 / 0.1 = 9."""
    lo, hi = RATIO_TIMES
    return check_number("factor(0.9) / factor(0.1)", answer, (1 - lo) / (1 - hi),
                        hint="The factor is d vhat / d x1hat = 1 / (1 - t).", quiet=quiet)


def check_eps_velocity_error(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 4: an eps head off by delta = 0.01 (in one coordinate) at t = 0.05 puts an error of size
    delta / t = 0.2 in that coordinate of the velocity, since v = (x_t - eps_hat) / t."""
    t, delta = EPS_ERROR["t"], EPS_ERROR["delta"]
    return check_number("|velocity error|", answer, delta / t,
                        hint="Write v = (x_t - eps_hat) / t and change eps_hat by delta.", quiet=quiet)


# --- exercise 5 (code): conversions between the heads ----------------------------------------------------------------

HEAD_NAMES = {"velocity": "the velocity v", "x1": "the clean-data head x1_hat", "eps": "the noise head eps_hat"}
CONVERSIONS = (("velocity", "x1"), ("x1", "velocity"), ("velocity", "eps"), ("eps", "velocity"))
SHAPE_HINT = ("Return one vector per sample, shape [B, 2] like x; t has shape [B], so write t[:, None] to broadcast it "
              "over the coordinates.")


def _heads(x0: Tensor, x1: Tensor) -> dict[str, Tensor]:
    return {"velocity": x1 - x0, "x1": x1, "eps": x0}


def check_conversion(fn: Callable[[Tensor, Tensor, Tensor], Tensor], source: str, target: str,
                     quiet: bool = False) -> Verdict:
    """Exercise 5: does fn(pred, x, t) turn the `source` head's output into the `target` head's at the point x at
    time t of the linear path? Checked on exact heads (x0, x1 known): velocity x1 - x0, x1_hat = x1, eps_hat = x0.
    Recognises the flipped sign, the flipped time convention and the other head's formula."""
    if (source, target) not in CONVERSIONS:
        raise ValueError(f"(source, target) must be one of {CONVERSIONS}, got {(source, target)!r}")
    x0, x1, t = exercise_batch(seed=6)
    x = (1 - t[:, None]) * x0 + t[:, None] * x1
    heads = _heads(x0, x1)
    name = f"{target} from {source}"
    value, problem = run_student(fn, heads[source].clone(), x.clone(), t.clone())
    if problem:
        return verdict(False, f"{name}: {problem}", quiet)
    mistakes = {
        "The sign is flipped.": -heads[target],
        "The time convention looks flipped (data at t = 0): here x_t = (1 - t) x0 + t x1, so the data weight is t "
        "and the noise weight 1 - t.": convert_prediction(heads[source], x, 1 - t, source, target),
    }
    for other in PREDICTIONS:
        if other not in (source, target):
            mistakes[f"That is {HEAD_NAMES[other]}, not {HEAD_NAMES[target]}."] = heads[other]
    if source == "velocity":
        mistakes["The time factor is missing: along the path, x1 = x_t + (1 - t) v and x0 = x_t - t v."] = \
            x + (1.0 if target == "x1" else -1.0) * heads[source]
    return diagnose(name, value, heads[target], mistakes, shape_hint=SHAPE_HINT,
                    hint="Start from x_t = (1 - t) x0 + t x1 and v = x1 - x0 and solve for the unknown.", quiet=quiet)


def conversion_function(fn: Any, source: str, target: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The student's conversion if it passes, else fmlab.paths.convert_prediction (with a note)."""
    return student_or_reference(fn, lambda pred, x, t: convert_prediction(pred, x, t, source, target),
                                lambda f, quiet: check_conversion(f, source, target, quiet),
                                f"{target}-from-{source} conversion")
