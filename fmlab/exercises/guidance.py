"""Checkers for the guidance lab. Convention: noise at t = 0, data at t = 1; the guided field with scale w is

    v_w(x, t | c) = v(x, t) + w (v(x, t | c) - v(x, t))        (fmlab.guidance.cfg_combine)

w = 0: the unconditional field, w = 1: the conditional one. Ho & Salimans (2022) write (1 + w') eps_c - w' eps_u, so
their w' is our w - 1. The tilted density p(x | c)^w p(x)^(1 - w) is sampled for w >= 1 by drawing x ~ p(x | c) and
accepting with probability P(c | x)^(w - 1) (fmlab.data.labelled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..data.labelled import labelled_2d
from ..guidance import cfg_combine
from . import Verdict, check_number, verdict
from .code import diagnose, run_student, student_or_reference

__all__ = ["combine_inputs", "check_guided_velocity", "guidance_rule", "HO_SALIMANS_W", "check_ho_salimans",
           "TILT_SETUP", "check_acceptance"]

SHAPE_HINT = "Return one velocity per sample, shape [B, 2] like v_cond and v_uncond."


# --- exercise 1 (code): the guided velocity ---------------------------------------------------------------------------

def combine_inputs(n: int = 16, seed: int = 0, w: float = 2.5) -> tuple[Tensor, Tensor, float]:
    """(v_cond, v_uncond, w): the exact class-0 and unconditional velocities [n, 2] of the labelled 8 Gaussians at
    random points and times in [0.05, 0.95] (float64), and a scale w."""
    mix = labelled_2d("8modes_halves")
    g = torch.Generator().manual_seed(seed)
    x = 2.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return mix.velocity(x, t, 0), mix.velocity(x, t), w


def check_guided_velocity(fn: Callable[[Tensor, Tensor, float], Tensor], quiet: bool = False) -> Verdict:
    """Exercise 1: does fn(v_cond, v_uncond, w) return v_uncond + w (v_cond - v_uncond)? Recognises the usual
    mistakes."""
    v_c, v_u, w = combine_inputs()
    value, problem = run_student(fn, v_c.clone(), v_u.clone(), w)
    if problem:
        return verdict(False, f"guided velocity: {problem}", quiet)
    mistakes = {
        "The two fields are swapped: guidance starts from the unconditional field v_uncond and moves towards "
        "(and past) the conditional one, v_uncond + w (v_cond - v_uncond).": v_c + w * (v_u - v_c),
        "That is Ho & Salimans' form (1 + w) v_cond - w v_uncond, whose w is our w - 1: with it w = 0 would already "
        "be the conditional model. Here w = 0 must give v_uncond and w = 1 v_cond.": (1 + w) * v_c - w * v_u,
        "The base field is missing: w (v_cond - v_uncond) is only the step from v_uncond; add v_uncond.":
            w * (v_c - v_u),
        "You scaled the conditional field alone (w v_cond): guidance scales the *difference* of the two fields.":
            w * v_c,
    }
    ok = diagnose("guided velocity", value, cfg_combine(v_c, v_u, w), mistakes, shape_hint=SHAPE_HINT,
                  hint="Check your formula at w = 0 (it must give v_uncond) and w = 1 (v_cond).", quiet=True)
    if ok:  # also right at the two ends (catches rules that agree at w = 2.5 only by accident)
        for w_end, expected in ((0.0, v_u), (1.0, v_c)):
            end, problem = run_student(fn, v_c.clone(), v_u.clone(), w_end)
            if problem or not torch.allclose(end, expected, rtol=1e-6, atol=1e-8):
                return verdict(False, f"guided velocity: right at w = 2.5 but not at w = {w_end:g}, where it must "
                                      f"equal {'v_uncond' if w_end == 0 else 'v_cond'}.", quiet)
    return verdict(bool(ok), ok.message, quiet)


def guidance_rule(fn: Any) -> Callable[[Tensor, Tensor, Any], Tensor]:
    """The student's guided velocity if it passes exercise 1, else fmlab.guidance.cfg_combine (with a note)."""
    return student_or_reference(fn, cfg_combine, check_guided_velocity, "guided velocity")


# --- exercise 2: translating Ho & Salimans' guidance weight -----------------------------------------------------------

HO_SALIMANS_W = 2.0  # a paper's w' in (1 + w') eps_c - w' eps_u


def check_ho_salimans(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: a paper uses (1 + w') v_c - w' v_u with w' = 2. Which w of ours gives the same field?"""
    value = answer if isinstance(answer, (int, float)) and not isinstance(answer, bool) else None
    if value is not None and abs(value - (HO_SALIMANS_W - 1)) < 1e-6:
        return verdict(False, "w = 1 would be our conditional model. Expand (1 + w') v_c - w' v_u = v_u + (1 + w')"
                              " (v_c - v_u) and read off w.", quiet)
    return check_number("w", answer, HO_SALIMANS_W + 1, rtol=0, atol=1e-6,
                        hint="Write (1 + w') v_c - w' v_u in the form v_u + w (v_c - v_u).", quiet=quiet)


# --- exercise 3: the acceptance probability of the tilted sampler -----------------------------------------------------

TILT_SETUP = {"w": 3.0, "class_posterior": 0.6}


def check_acceptance(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: drawing x ~ p(x | c) for the tilted density at w = 3, with P(c | x) = 0.6 at the draw: the
    acceptance probability P(c | x)^(w - 1)."""
    w, p = TILT_SETUP["w"], TILT_SETUP["class_posterior"]
    value = answer if isinstance(answer, (int, float)) and not isinstance(answer, bool) else None
    if value is not None and abs(value - p ** w) < 1e-6:
        return verdict(False, "That is P(c | x)^w. The proposal p(x | c) already carries one factor of "
                              "P(c | x) / P(c); only w - 1 are left to apply.", quiet)
    return check_number("acceptance probability", answer, p ** (w - 1), rtol=1e-3, atol=1e-6,
                        hint="p(x | c)^w p(x)^(1 - w) = p(x | c) (P(c | x) / P(c))^(w - 1): accept with the factor "
                             "that is not yet in the proposal.", quiet=quiet)
