"""Checkers for lab 11 (flow maps). Noise at t = 0, data at t = 1; X(x, s, t) = x + (t - s) u(x, s, t).

The exercises use one-dimensional Gaussian data x1 ~ N(M, SD^2) on the linear path x_r = (1 - r) x0 + r x1,
whose marginals are N(r M, var_r) with var_r = r^2 SD^2 + (1 - r)^2, and whose flow map is affine in x:

    X(x, s, t) = t M + sqrt(var_t / var_s) (x - s M).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jvp

from ..losses import Batch
from ..losses.flowmap_compositional import convex_target
from ..losses.meanflow import meanflow_loss
from . import Verdict, check_choice, check_number, verdict
from .code import diagnose, exercise_batch, gradient_of, run_student, run_student_loss
from .training import loss_model

__all__ = ["M", "SD", "gaussian_flow_map_1d", "gaussian_velocity_1d", "check_flow_map_1d", "check_velocity_limit",
           "check_rule_for_loss", "RULES", "VELOCITY_POINT", "two_time_inputs", "reference_meanflow_loss",
           "check_meanflow_loss", "reference_shortcut_target", "check_shortcut_target"]

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



# --- exercises 4 and 5 (code): the MeanFlow loss with torch.func.jvp, and a compositional target ----------------------

def two_time_inputs(n: int = 32, seed: int = 8) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(x0, x1, s, r, t): a batch [n, 2] and times s < r < t in [0, 1] (r = s + 0.3 (t - s), not the midpoint)."""
    x0, x1, _ = exercise_batch(n=n, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    s, t = torch.rand(2, n, generator=g, dtype=torch.float64).sort(dim=0).values
    return x0, x1, s, s + 0.3 * (t - s), t


def reference_meanflow_loss(model: nn.Module, x0: Tensor, x1: Tensor, s: Tensor, t: Tensor) -> Tensor:
    """fmlab's registered `meanflow` loss (no adaptive weight) on the batch (x0, x1) at times (s, t)."""
    return meanflow_loss(model, Batch(x0=x0, x1=x1, t=t, s=s))[0]


def _meanflow_variant(model: nn.Module, x0: Tensor, x1: Tensor, s: Tensor, t: Tensor, ds: float = 1.0,
                      dt: float = 0.0, sign: float = 1.0, detach: bool = True) -> Tensor:
    """MeanFlow loss with the JVP tangent (v, ds, dt), the sign of the (t - s) term and the stop-gradient as given."""
    x = (1 - s[:, None]) * x0 + s[:, None] * x1
    v = x1 - x0
    u, du = jvp(lambda a, b, c: model(a, b, c), (x, s, t), (v, torch.full_like(s, ds), torch.full_like(t, dt)))
    target = v + sign * (t - s)[:, None] * du
    return (u - (target.detach() if detach else target)).pow(2).mean()


def check_meanflow_loss(fn: Callable[..., Tensor], quiet: bool = False) -> Verdict:
    """Exercise 4: does fn(model, x0, x1, s, t) equal fmlab's MeanFlow loss on a fixed batch and seed, in value AND
    in gradient? The gradient tells a forgotten stop-gradient apart (same value, different update)."""
    model = loss_model(time_inputs=2)
    x0, x1, s, _, t = two_time_inputs()
    value, grad, problem = run_student_loss(fn, model, x0.clone(), x1.clone(), s.clone(), t.clone())
    if problem:
        return verdict(False, f"MeanFlow loss: {problem}", quiet)
    expected = reference_meanflow_loss(model, x0, x1, s, t)
    mistakes = {
        "The JVP tangent is wrong: the total derivative d/ds u(x_s, s, t) moves x along v = x1 - x0 AND s by 1, "
        "with t fixed: tangents (v, 1, 0). You differentiated in t instead of s.":
            _meanflow_variant(model, x0, x1, s, t, ds=0.0, dt=1.0),
        "The JVP tangent misses the time direction: use (v, ones_like(s), zeros_like(t)), not (v, 0, 0).":
            _meanflow_variant(model, x0, x1, s, t, ds=0.0),
        "The sign of the (t - s) term is flipped: in our time (data at t = 1) the target is v + (t - s) d/ds u. The "
        "paper puts data at t = 0, where it reads v - (t - r) d/dt u.": _meanflow_variant(model, x0, x1, s, t, sign=-1),
    }
    first = diagnose("MeanFlow loss (value)", value, expected.detach(), {k: v.detach() for k, v in mistakes.items()},
                     rtol=1e-6, quiet=True)
    if not first:
        return verdict(False, first.message, quiet)
    no_sg = gradient_of(_meanflow_variant(model, x0, x1, s, t, detach=False), model)
    return diagnose("MeanFlow loss (value and gradient)", grad, gradient_of(expected, model),
                    {"The value is right but the gradient is not: you forgot the stop-gradient on the target. Detach "
                     "the whole target v + (t - s) du (JVP included), so that only u(x_s, s, t) is trained.": no_sg},
                    rtol=1e-6, atol=1e-10, hint="The value is right but the gradient is not: check what you detach.",
                    quiet=quiet)


def reference_shortcut_target(model: nn.Module, x: Tensor, s: Tensor, r: Tensor, t: Tensor) -> Tensor:
    """sg[lam u(x, s, r) + (1 - lam) u(X(x, s, r), r, t)], lam = (r - s) / (t - s): fmlab's compositional target."""
    return convex_target(model, x, s, r, t)[0]


def check_shortcut_target(fn: Callable[..., Tensor], quiet: bool = False) -> Verdict:
    """Exercise 5: does fn(model, x, s, r, t) return the two-jump target for u(x, s, t): jump s -> r, then r -> t
    from where the first jump landed, the average velocity weighted by the time each jump takes, under
    stop-gradient? Recognises the plain average, the second jump from the wrong point, swapped weights and a
    target that still carries a gradient."""
    model = loss_model(time_inputs=2)
    x0, x1, s, r, t = two_time_inputs()
    x = (1 - s[:, None]) * x0 + s[:, None] * x1
    seen: dict[str, bool] = {}
    if not callable(fn):
        return verdict(False, f"compositional target: expected a function, got {type(fn).__name__}.", quiet)

    def watched(*args: Any) -> Any:
        out = fn(*args)
        seen["grad"] = isinstance(out, Tensor) and out.requires_grad
        return out

    value, problem = run_student(watched, model, x.clone(), s.clone(), r.clone(), t.clone())
    if problem:
        return verdict(False, f"compositional target: {problem}", quiet)
    expected = reference_shortcut_target(model, x, s, r, t)
    lam = ((r - s) / (t - s))[:, None]
    with torch.no_grad():
        u1 = model(x, s, r)
        x_r = x + (r - s)[:, None] * u1
        mistakes = {
            "You averaged the two velocities with equal weights: weight each by the time its jump takes, "
            "(r - s) / (t - s) and (t - r) / (t - s) (equal only when r is the midpoint).":
                0.5 * (u1 + model(x_r, r, t)),
            "The second jump starts from x: it must start where the first one landed, X(x, s, r) = x + (r - s) "
            "u(x, s, r).": lam * u1 + (1 - lam) * model(x, r, t),
            "The weights are swapped: the first jump (s -> r) takes a fraction (r - s) / (t - s) of the time.":
                (1 - lam) * u1 + lam * model(x_r, r, t),
            "That is the landing point X(x, s, t), not an average velocity: divide the displacement by (t - s).":
                x + (r - s)[:, None] * u1 + (t - r)[:, None] * model(x_r, r, t),
        }
    result = diagnose("compositional target", value, expected, mistakes, rtol=1e-6,
                      shape_hint="Return one velocity per sample, shape [B, 2]; the times have shape [B], so write "
                                 "(r - s)[:, None].", hint="X(x, s, t) = X(X(x, s, r), r, t): write both sides as "
                                                           "x + (time) * (average velocity) and solve for u(x, s, t).",
                      quiet=True)
    if result and seen.get("grad"):
        return verdict(False, "compositional target: the value is right, but it still carries a gradient: a target "
                              "must sit under stop-gradient (compute it under torch.no_grad() or .detach() it), or "
                              "the loss would train the two small jumps towards the big one too.", quiet)
    return verdict(bool(result), result.message, quiet)
