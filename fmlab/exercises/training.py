"""Checkers for lab 03 (training flow matching). Linear path x_t = (1 - t) x0 + t x1, noise at t = 0.

The loss a network can reach is bounded below by the floor L* = E ||x1 - x0 - v*(x_t, t)||^2 / d, with
v*(x, t) = E[x1 - x0 | x_t = x] the marginal velocity (closed-form for Gaussian mixtures).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ..data import gmm_2d
from ..losses import Batch, cfm_loss
from ..metrics import noise_floor, wasserstein
from ..models.parametrisation import build_model
from ..solvers import solve
from ..viz.training import loss_floor
from . import Verdict, check_array, check_choice, check_number, verdict
from .code import (
    STUB_MESSAGE,
    diagnose,
    exercise_batch,
    gradient_of,
    run_student,
    run_student_loss,
    student_or_reference,
)

__all__ = ["NOISE_X", "check_velocity_at_noise", "floor_answer", "check_loss_floor", "WHERE_OPTIONS",
           "check_where_error", "reference_cfm_loss", "loss_model", "check_cfm_loss", "cfm_function",
           "check_euler_sampler", "euler_function", "LOOP_STEPS", "LOOP_BATCH", "LOOP_LR", "LOOP_W2", "sample_8modes",
           "loop_floor", "check_training_loop"]

NOISE_X = (1.0, 1.0)  # exercise 1: the point x at t = 0, mixture "asymmetric"


def check_velocity_at_noise(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 1: v*(x, 0) at x = (1, 1) for gmm_2d('asymmetric'). At t = 0, x_t = x0 tells nothing about x1,
    so v*(x, 0) = E[x1 - x0 | x0 = x] = E[x1] - x."""
    x = torch.tensor([NOISE_X], dtype=torch.float64)
    expected = gmm_2d("asymmetric").velocity(x, 0.0)[0]
    return check_array("v*((1, 1), 0)", answer, expected, rtol=1e-3, atol=1e-3,
                       hint="At t = 0 the point is pure noise, independent of x1: E[x1 - x0 | x0 = x] = E[x1] - x, "
                            "and E[x1] is the weighted mean of the component means.", quiet=quiet)


@lru_cache(maxsize=4)
def floor_answer(name: str = "8modes") -> float:
    """The loss floor L* of gmm_2d(name) by Monte Carlo with 200 000 draws (standard error ~0.3%)."""
    return loss_floor(gmm_2d(name), n=200_000, seed=123)


def check_loss_floor(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: L* = E_{t, x0, x1} ||x1 - x0 - v*(x_t, t)||^2 / 2 for the 8-mode data (to 3%)."""
    return check_number("L* for 8modes", answer, floor_answer("8modes"), rtol=0.03, atol=0.0,
                        hint="Draw t ~ U[0, 1], x0 ~ N(0, I), x1 from the mixture, form x_t = (1 - t) x0 + t x1 and "
                             "average ||(x1 - x0) - gmm.velocity(x_t, t)||^2 / 2 over many draws (>= 20 000).",
                        quiet=quiet)


WHERE_OPTIONS = ("near the modes", "where p_t has little mass", "the same everywhere")


def check_where_error(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: where is the learned field furthest from the closed form?"""
    return check_choice("where the learned field is least accurate", answer, WHERE_OPTIONS[1], WHERE_OPTIONS,
                        hint="The loss only samples points x_t ~ p_t: what does the network learn where no x_t lands?",
                        quiet=quiet)


# --- exercise 4 (code): the conditional flow-matching loss ----------------------------------------------------------

def reference_cfm_loss(model: nn.Module, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """fmlab's registered `cfm` loss on the batch (x0, x1, t): batch mean of ||v(x_t, t) - (x1 - x0)||^2 / d."""
    return cfm_loss(model, Batch(x0=x0, x1=x1, t=t))[0]


def loss_model(seed: int = 0, time_inputs: int = 1) -> nn.Module:
    """A small float64 MLP (hidden 32, depth 2) with fixed random weights: the network the loss checkers use."""
    torch.manual_seed(seed)
    return build_model(hidden=32, depth=2, time_inputs=time_inputs).double()


def _mse(model: nn.Module, x: Tensor, t: Tensor, target: Tensor) -> Tensor:
    return (model(x, t) - target).pow(2).mean()


def check_cfm_loss(fn: Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor], quiet: bool = False) -> Verdict:
    """Exercise 4: does fn(model, x0, x1, t) equal fmlab's `cfm` loss on a fixed batch, in value and in gradient?

    Recognises the flipped time convention, the flipped target, a sum over coordinates and the model evaluated at the
    wrong point."""
    model = loss_model()
    x0, x1, t = exercise_batch(n=32, seed=3)
    value, grad, problem = run_student_loss(fn, model, x0.clone(), x1.clone(), t.clone())
    if problem:
        return verdict(False, f"cfm loss: {problem}", quiet)
    expected = reference_cfm_loss(model, x0, x1, t)
    tc = t[:, None]
    x_t = (1 - tc) * x0 + tc * x1
    with torch.no_grad():
        mistakes = {
            "The time convention is flipped (data at t = 0): here x_t = (1 - t) x0 + t x1 and the target is x1 - x0.":
                _mse(model, tc * x0 + (1 - tc) * x1, t, x0 - x1),
            "The target's sign is flipped: the velocity goes from noise to data, x1 - x0.":
                _mse(model, x_t, t, x0 - x1),
            "You summed the squared error over the coordinates: fmlab averages it (mean over coordinates and batch), "
            "which only rescales the loss but is what the check compares with.":
                (model(x_t, t) - (x1 - x0)).pow(2).sum(1).mean(),
            "The model is evaluated at the data x1: it must see the point on the path, x_t = (1 - t) x0 + t x1.":
                _mse(model, x1, t, x1 - x0),
            "The model is evaluated at the noise x0: it must see the point on the path, x_t = (1 - t) x0 + t x1.":
                _mse(model, x0, t, x1 - x0),
        }
    first = diagnose("cfm loss (value)", value, expected.detach(), mistakes, rtol=1e-6, quiet=True)
    if not first:
        return verdict(False, first.message, quiet)
    return diagnose("cfm loss (value and gradient)", grad, gradient_of(expected, model), rtol=1e-6, atol=1e-10,
                    hint="The value matches but the gradient does not: is part of the loss detached or computed "
                         "under torch.no_grad()?", quiet=quiet)


def cfm_function(fn: Any) -> Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]:
    """The student's cfm loss if it passes exercise 4, else fmlab's (with a note)."""
    return student_or_reference(fn, reference_cfm_loss, check_cfm_loss, "cfm loss")


# --- exercise 5 (code): the Euler sampler ---------------------------------------------------------------------------

def _euler(field: Callable, x: Tensor, steps: int, dt: float | None = None, times: str = "start",
           n: int | None = None, sign: float = 1.0) -> Tensor:
    """Variants of the Euler loop, for the checker's named mistakes."""
    dt = 1.0 / steps if dt is None else dt
    for k in range(steps if n is None else n):
        tk = {"start": k * dt, "end": (k + 1) * dt, "reversed": 1 - k * dt}[times]
        x = x + sign * dt * field(x, torch.full((len(x),), tk, dtype=x.dtype))
    return x


def check_euler_sampler(fn: Callable[[Callable, Tensor, int], Tensor], quiet: bool = False) -> Verdict:
    """Exercise 5: does fn(field, x0, steps) integrate dx/dt = field(x, t) from t = 0 to 1 with `steps` Euler steps?
    Compared with fmlab.solvers.solve(..., method='euler') on the 8-Gaussian closed-form field, 8 steps."""
    gmm = gmm_2d("8modes")

    def field(x: Tensor, t: Tensor) -> Tensor:
        return gmm.velocity(x, t)

    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    steps = 8
    value, problem = run_student(fn, field, x0.clone(), steps)
    if problem:
        return verdict(False, f"Euler sampler: {problem}", quiet)
    mistakes = {
        "The sign is flipped: an Euler step adds dt times the velocity, x <- x + dt v(x, t).":
            _euler(field, x0, steps, sign=-1.0),
        "The field is evaluated at the end of each step (t_{k+1}); Euler uses the start, t_k = k / steps.":
            _euler(field, x0, steps, times="end"),
        "The times run backwards (data at t = 0): sampling starts from noise at t = 0 and ends at t = 1.":
            _euler(field, x0, steps, times="reversed"),
        "One step is missing: take exactly `steps` steps, from t = 0 to t = 1.": _euler(field, x0, steps, n=steps - 1),
        "The step size is 1 / (steps - 1) (a linspace with `steps` points has steps - 1 gaps): use dt = 1 / steps.":
            _euler(field, x0, steps - 1),
    }
    return diagnose("Euler sampler", value, solve(field, x0, steps=steps, method="euler"), mistakes, rtol=1e-9,
                    atol=1e-9, shape_hint="Return only the final state x_1 [B, 2], not the whole trajectory.",
                    hint="Loop k = 0, ..., steps - 1: t = k / steps, x = x + dt * field(x, t) with t of shape [B].",
                    quiet=quiet)


def euler_function(fn: Any) -> Callable[[Callable, Tensor, int], Tensor]:
    """The student's Euler sampler if it passes exercise 5, else fmlab's solve (with a note)."""
    return student_or_reference(fn, lambda field, x0, steps: solve(field, x0, steps=steps, method="euler"),
                                check_euler_sampler, "Euler sampler")


# --- exercise 6 (code): the training loop ---------------------------------------------------------------------------

LOOP_STEPS, LOOP_BATCH, LOOP_LR = 600, 256, 2e-3  # exercise 6: what the checker passes to the student's loop
LOOP_W2 = 0.6  # pass when W2(1000 samples, 1000 data) <= this (the floor at n = 1000 is ~0.30)
LOOP_SAMPLES, LOOP_SOLVER_STEPS = 1000, 50


def sample_8modes(n: int) -> Tensor:
    """n float32 draws from the 8 Gaussians (gmm_2d('8modes')), from torch's global generator."""
    return gmm_2d("8modes").sample(n).float()


@lru_cache(maxsize=1)
def loop_floor() -> tuple[float, float]:
    """(mean, std) of W2 between two independent 1000-point samples of the 8 Gaussians, 3 repeats: the best any
    model can score at this sample size."""
    gmm = gmm_2d("8modes")
    return noise_floor(lambda n, generator=None: gmm.sample(n, generator=generator).float(), LOOP_SAMPLES, repeats=3)


class _Monitor:
    """Counts backward passes and optimizer steps, and sees whether the gradient at each step is only the last
    backward's (zero_grad called) or an accumulation of several."""

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fresh: dict[int, Tensor] = {}
        self.backwards = self.steps = self.accumulated = 0
        self.handles = [p.register_hook(self._grad_hook(i)) for i, p in enumerate(self.params)]
        self.handles.append(register_optimizer_step_pre_hook(self._step_hook))

    def _grad_hook(self, i: int) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            if i == 0:
                self.backwards += 1
            self.fresh[i] = grad.detach().clone()
        return hook

    def _step_hook(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        self.steps += 1
        p = self.params[0]
        if p.grad is not None and 0 in self.fresh and not torch.allclose(p.grad, self.fresh[0]):
            self.accumulated += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def check_training_loop(fn: Callable[..., Any], loss_fn: Callable[..., Tensor] | None = None,
                        steps: int = LOOP_STEPS, quiet: bool = False) -> Verdict:
    """Exercise 6: train a fresh model with fn(model, loss_fn, sample_8modes, steps, batch_size, lr) and check that
    the W2 distance of 1000 samples (50 Euler steps) to 1000 data points is at most LOOP_W2.

    `loss_fn` defaults to fmlab's cfm loss. Names the usual mistakes: no optimizer step, no backward, gradients
    accumulated because zero_grad is missing."""
    loss_fn = reference_cfm_loss if loss_fn is None else loss_fn
    with torch.random.fork_rng():  # seeded for a reproducible verdict; the notebook's own random stream is kept
        torch.manual_seed(0)
        return _train_and_judge(fn, loss_fn, steps, quiet)


def _train_and_judge(fn: Callable[..., Any], loss_fn: Callable[..., Tensor], steps: int, quiet: bool) -> Verdict:
    model = build_model(hidden=64, depth=3)
    before = [p.detach().clone() for p in model.parameters()]
    monitor = _Monitor(model)
    try:
        fn(model, loss_fn, sample_8modes, steps, LOOP_BATCH, LOOP_LR)
    except NotImplementedError:
        return verdict(False, f"training loop: {STUB_MESSAGE}", quiet)
    except Exception as err:  # the student's code: report, do not crash the cell
        return verdict(False, f"training loop: your function raised {type(err).__name__}: {err}", quiet)
    finally:
        monitor.remove()
    if monitor.backwards == 0:
        return verdict(False, "training loop: loss.backward() was never called, so no gradient was computed.", quiet)
    if monitor.steps == 0 or all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)):
        return verdict(False, "training loop: the parameters did not change. Create the optimizer on "
                              "model.parameters() and call opt.step() after loss.backward().", quiet)
    if monitor.accumulated > monitor.steps // 2:
        return verdict(False, f"training loop: at {monitor.accumulated} of {monitor.steps} steps the gradient was "
                              f"the sum of several backward passes: call opt.zero_grad() before loss.backward() "
                              f"(PyTorch adds gradients up until you zero them).", quiet)
    if monitor.steps != steps:
        return verdict(False, f"training loop: took {monitor.steps} optimizer steps, expected steps = {steps}.", quiet)
    g = torch.Generator().manual_seed(123)
    samples = solve(model, torch.randn(LOOP_SAMPLES, 2, generator=g), steps=LOOP_SOLVER_STEPS)
    w2 = wasserstein(samples, gmm_2d("8modes").sample(LOOP_SAMPLES, generator=g).float())
    floor, _ = loop_floor()
    if w2 <= LOOP_W2:
        return verdict(True, f"training loop: W2 = {w2:.3f} after {steps} steps (target <= {LOOP_W2}; the floor of "
                             f"two data samples of this size is {floor:.2f}).", quiet)
    return verdict(False, f"training loop: W2 = {w2:.3f} after {steps} steps, above the target {LOOP_W2} (floor "
                          f"{floor:.2f}). Draw a fresh batch each step (x1 = sample_data(batch_size), "
                          f"x0 = torch.randn_like(x1), t = torch.rand(batch_size)) and use Adam with the given lr.",
                   quiet)
