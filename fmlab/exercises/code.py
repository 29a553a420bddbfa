"""Shared machinery for CODE exercises, where the student writes a function in a stub cell.

`run_student` calls the student's function and turns every way it can fail (still a stub, an exception, a result that
is not a finite array) into a message; `diagnose` compares a result with the answer and with named common mistakes,
so that feedback says *which* mistake it looks like (time convention flipped, sign flipped, shape wrong, ...);
`student_or_reference` lets later cells use the student's function once it passes, and fmlab's otherwise, saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from . import Verdict, verdict

__all__ = ["STUB_MESSAGE", "run_student", "diagnose", "student_or_reference"]

STUB_MESSAGE = "not written yet: replace `raise NotImplementedError` in the stub with your code and run the cell again."


def _broadcast_hint(err: Exception) -> str:
    text = str(err)
    if "must match the size" in text or "broadcast" in text or "shape" in text:
        return (" This is usually broadcasting: a per-sample time t of shape [B] does not multiply a batch of shape"
                " [B, d]; write t[:, None] (shape [B, 1]) to apply it to every coordinate.")
    return ""


def run_student(fn: Callable[..., Any], *args: Any) -> tuple[Tensor | None, str | None]:
    """(result as a float64 tensor, None) or (None, a message explaining what went wrong)."""
    if not callable(fn):
        return None, f"expected a function, got {type(fn).__name__}: define it with `def` and pass its name."
    try:
        out = fn(*args)
    except NotImplementedError:
        return None, STUB_MESSAGE
    except Exception as err:  # the student's code: report, do not crash the cell
        return None, f"your function raised {type(err).__name__}: {err}.{_broadcast_hint(err)}"
    try:
        value = torch.as_tensor(out, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None, f"your function must return a tensor, got {type(out).__name__}: {out!r:.80}"
    if not bool(torch.isfinite(value).all()):
        return None, "your function returned NaN or infinite values: check for a division by zero."
    return value, None


def diagnose(name: str, value: Tensor, expected: Tensor, mistakes: Mapping[str, Tensor] | None = None,
             rtol: float = 1e-6, atol: float = 1e-8, shape_hint: str = "", hint: str = "",
             quiet: bool = False) -> Verdict:
    """Compare `value` with `expected`: right shape and values, or which named mistake it matches, or how far off.

    `mistakes` maps an explanation (what the student probably did) to the result of that mistake on the same input.
    """
    expected = expected.to(torch.float64)
    if value.shape != expected.shape:
        return verdict(False, f"{name}: expected shape {tuple(expected.shape)}, got {tuple(value.shape)}. "
                              f"{shape_hint}".strip(), quiet)
    err = (value - expected).abs()
    if bool((err <= atol + rtol * expected.abs()).all()):
        return verdict(True, f"{name}: correct (max error {err.max().item():.1e}).", quiet)
    for explanation, wrong in (mistakes or {}).items():
        wrong = wrong.to(torch.float64)
        if wrong.shape == value.shape and torch.allclose(value, wrong, rtol=rtol, atol=atol):
            return verdict(False, f"{name}: not yet. {explanation}", quiet)
    return verdict(False, f"{name}: off by up to {err.max().item():.3g} (relative "
                          f"{(err / expected.abs().clamp_min(1e-12)).max().item():.2g}). {hint}".strip(), quiet)


def student_or_reference(student_fn: Any, reference_fn: Callable[..., Any], check: Callable[..., Verdict],
                         what: str) -> Callable[..., Any]:
    """The student's function if `check(student_fn, quiet=True)` passes, else `reference_fn`; prints which is used."""
    result = check(student_fn, quiet=True)
    if result:
        print(f"Using your {what}: it passed the check.")
        return student_fn
    reason = "your stub is still empty" if STUB_MESSAGE in result.message else "yours does not pass the check yet"
    print(f"Note: using fmlab's {what}, because {reason}. Finish the exercise and re-run this cell to use your own.")
    return reference_fn
