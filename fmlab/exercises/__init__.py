"""Answer checkers for the labs' "Your turn" exercises: one module per lab (fmlab.exercises.paths, .fields, ...).

Every checker prints a short verdict a student can act on and returns True/False, so a notebook cell may also
`assert` it. The shared helpers here compare numbers, arrays and choices with a tolerance and say how far off an
answer is without giving the solution away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Verdict", "verdict", "check_number", "check_array", "check_choice"]

PASS, FAIL = "\u2713", "\u2717"  # check mark, ballot x: in every common font, unlike the emoji


class Verdict:
    """The result of a check: truthy when correct; prints as the message shown to the student."""

    def __init__(self, ok: bool, message: str, printed: bool = False):
        self.ok, self.message, self.printed = bool(ok), message, printed

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"{PASS if self.ok else FAIL} {self.message}"

    def _ipython_display_(self) -> None:
        """A checker ending a notebook cell shows its message once: not again if `verdict` printed it."""
        if not self.printed:
            print(repr(self))


def verdict(ok: bool, message: str, quiet: bool = False) -> Verdict:
    """Print (unless quiet) and return a Verdict."""
    result = Verdict(ok, message, printed=not quiet)
    if not quiet:
        print(repr(result))
    return result


def _as_float(answer: Any) -> float | None:
    try:
        value = float(torch.as_tensor(answer, dtype=torch.float64).reshape(()))
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


def check_number(name: str, answer: Any, expected: float, rtol: float = 1e-2, atol: float = 1e-3,
                 hint: str = "", quiet: bool = False) -> Verdict:
    """Is `answer` within atol + rtol |expected| of `expected`? The message names `name` and, if wrong, the hint."""
    value = _as_float(answer)
    if value is None:
        return verdict(False, f"{name}: expected a single finite number, got {answer!r}", quiet)
    ok = abs(value - expected) <= atol + rtol * abs(expected)
    if ok:
        return verdict(True, f"{name} = {value:.4g}: correct.", quiet)
    direction = "too large" if value > expected else "too small"
    return verdict(False, f"{name} = {value:.4g} is {direction}. {hint}".strip(), quiet)


def check_array(name: str, answer: Any, expected: torch.Tensor, rtol: float = 1e-2, atol: float = 1e-3,
                hint: str = "", quiet: bool = False) -> Verdict:
    """Does `answer` have the shape of `expected` and match it elementwise within atol + rtol |expected|?"""
    try:
        value = torch.as_tensor(answer, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return verdict(False, f"{name}: expected an array-like of shape {tuple(expected.shape)}, got {answer!r}", quiet)
    expected = expected.to(torch.float64)
    if value.shape != expected.shape:
        return verdict(False, f"{name}: expected shape {tuple(expected.shape)}, got {tuple(value.shape)}", quiet)
    err = (value - expected).abs()
    bad = err > atol + rtol * expected.abs()
    if not bool(bad.any()):
        return verdict(True, f"{name}: correct (max error {err.max().item():.2g}).", quiet)
    return verdict(False, f"{name}: {int(bad.sum())} of {bad.numel()} entries are off (max error "
                          f"{err.max().item():.3g}). {hint}".strip(), quiet)


def check_choice(name: str, answer: Any, expected: Any, options: Sequence[Any], hint: str = "",
                 quiet: bool = False) -> Verdict:
    """Is `answer` (one of `options`) the expected choice?"""
    if answer not in options:
        return verdict(False, f"{name}: answer with one of {list(options)}, got {answer!r}", quiet)
    if answer == expected:
        return verdict(True, f"{name}: {answer!r} is right.", quiet)
    return verdict(False, f"{name}: {answer!r} is not it. {hint}".strip(), quiet)
