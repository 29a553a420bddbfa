"""Shared machinery for CODE exercises, where the student writes a function in a stub cell.

`run_student` calls the student's function and turns every way it can fail (still a stub, an exception, a result that
is not a finite array) into a message; `diagnose` compares a result with the answer and with named common mistakes,
so that feedback says *which* mistake it looks like (time convention flipped, sign flipped, shape wrong, ...);
`student_or_reference` lets later cells use the student's function once it passes, and fmlab's otherwise, saying so.
`exercise_batch` draws the fixed inputs most checkers use; `run_student_loss` runs a student's loss and returns its
value and its gradient with respect to the model's parameters, so that a checker can see a mistake (a forgotten
stop-gradient) that leaves the value unchanged and changes only the update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from . import Verdict, verdict

__all__ = ["STUB_MESSAGE", "exercise_batch", "run_student", "run_student_loss", "gradient_of", "diagnose",
           "student_or_reference", "exercise_report"]

STUB_MESSAGE = "not written yet: replace `raise NotImplementedError` in the stub with your code and run the cell again."


def _broadcast_hint(err: Exception) -> str:
    text = str(err)
    if "must match the size" in text or "broadcast" in text or "shape" in text:
        return (" This is usually broadcasting: a per-sample time t of shape [B] does not multiply a batch of shape"
                " [B, d]; write t[:, None] (shape [B, 1]) to apply it to every coordinate.")
    return ""


def exercise_batch(n: int = 16, dim: int = 2, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """(x0, x1, t): noise x0 ~ N(0, I) and data-like x1 ~ N(0, 4 I), both [n, dim], and times t [n] in [0.05, 0.95],
    float64, from a fixed seed (n = 16 > dim, so a time t of shape [n] that is not broadcast raises an error)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x1 = 2.0 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return x0, x1, t


def gradient_of(loss: Tensor, model: torch.nn.Module) -> Tensor:
    """d loss / d parameters of `model`, flattened into one float64 vector (zeros for unused parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)]
    ).double()


def run_student_loss(fn: Callable[..., Any], model: torch.nn.Module,
                     *args: Any) -> tuple[Tensor | None, Tensor | None, str | None]:
    """(value, gradient, None) for a student's loss `fn(model, *args)`, or (None, None, a message).

    The loss must be a scalar tensor that depends on the model's parameters; its gradient is `gradient_of`."""
    if not callable(fn):
        return None, None, f"expected a function, got {type(fn).__name__}: define it with `def` and pass its name."
    try:
        loss = fn(model, *args)
    except NotImplementedError:
        return None, None, STUB_MESSAGE
    except Exception as err:  # the student's code: report, do not crash the cell
        return None, None, f"your function raised {type(err).__name__}: {err}.{_broadcast_hint(err)}"
    if not isinstance(loss, Tensor):
        return None, None, f"your loss must be a torch tensor, got {type(loss).__name__}: {loss!r:.80}"
    if loss.ndim != 0:
        return None, None, (f"your loss must be one number (shape ()), got shape {tuple(loss.shape)}: average the "
                            f"per-sample errors with .mean().")
    if not bool(torch.isfinite(loss)):
        return None, None, "your loss is NaN or infinite: check for a division by zero."
    if not loss.requires_grad:
        return None, None, ("your loss does not depend on the model's parameters (no gradient flows back): did you "
                            "detach the model's output or compute it under torch.no_grad()?")
    return loss.detach().double(), gradient_of(loss, model), None


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


def exercise_report(verdicts: Mapping[str, Verdict]) -> list[str]:
    """Print which write-your-own exercises pass and which are still open (stub empty or not passing); return the
    open ones' names. `verdicts` maps an exercise's name to its checker's result."""
    open_ = [name for name, result in verdicts.items() if not result]
    done = len(verdicts) - len(open_)
    print(f"Write-your-own exercises: {done} of {len(verdicts)} pass.")
    for name in open_:
        print(f"  open: {name}")
    if not open_:
        print("  all done: later cells use your functions.")
    return open_
