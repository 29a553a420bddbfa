"""Checkers for lab 13 (CelebA-64). Linear path x_t = (1 - t) x0 + t x1, noise at t = 0, data at t = 1.

An x1 (clean-image) head x1_hat gives the velocity v_hat = (x1_hat - x_t) / (1 - t), so an error delta in x1_hat
is an error delta / (1 - t) in the velocity: plain MSE on x1 weighs the velocity error by (1 - t)^2.

Exercise 5 (code) is one training step of the image model: the student's step is run with plain SGD on a small
float64 UNet whose gradients hold stale values, so that its parameter update tells a forgotten zero_grad, a missing
backward or step, a flipped time convention or target, and a summed loss apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..losses import Batch, cfm_loss
from ..models.unet import build_unet
from . import Verdict, check_choice, check_number, verdict
from .code import STUB_MESSAGE, diagnose, gradient_of, student_or_reference

__all__ = ["X1_T", "check_x1_weight", "BLOWUP_OPTIONS", "check_blowup_head", "PLAN", "check_planned_steps",
           "check_flow_map_nfe", "STEP_SHAPE", "STEP_LR", "reference_train_step", "step_model", "step_batch",
           "check_train_step", "train_step_function", "loop_setup"]

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


# --- exercise 5 (code): one training step of the image model --------------------------------------------------------

STEP_SHAPE = (4, 3, 8, 8)  # [B, C, H, W]: B differs from H and W, so a time of shape [B] that is not reshaped fails
STEP_LR = 0.5  # the checker's SGD learning rate: the update is -STEP_LR x the gradient the step used


def reference_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x0: Tensor, x1: Tensor,
                         t: Tensor) -> float:
    """fmlab's flow-matching step on a batch of images: zero the gradients, L = mean ||v(x_t, t) - (x1 - x0)||^2
    over images and pixels (the registered `cfm` loss, x_t = (1 - t) x0 + t x1), backward, one optimizer step;
    returns L before the step."""
    optimizer.zero_grad()
    loss = cfm_loss(model, Batch(x0=x0, x1=x1, t=t))[0]
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def step_model(seed: int = 0) -> nn.Module:
    """The checker's network: a slimmed 'tiny' UNet (8 channels, two levels, attention at 4 x 4; 51k parameters)
    at 8 x 8 in float64, its weights (zero-initialised layers included) perturbed so that every parameter gets a
    gradient."""
    with torch.random.fork_rng():  # the notebook's own random stream is left alone
        torch.manual_seed(seed)
        model = build_unet("tiny", image_size=STEP_SHAPE[-1], channels=8, channel_mult=(1, 2),
                           attn_resolutions=(4,)).double()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model


def step_batch(seed: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """(x0, x1, t): noise [B, C, H, W], images in [-1, 1] of the same shape, one time per image in [0.05, 0.95]."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(STEP_SHAPE, generator=g, dtype=torch.float64)
    x1 = 2 * torch.rand(STEP_SHAPE, generator=g, dtype=torch.float64) - 1
    t = 0.05 + 0.9 * torch.rand(STEP_SHAPE[0], generator=g, dtype=torch.float64)
    return x0, x1, t


def _stale_gradients(model: nn.Module) -> list[Tensor]:
    """Leftovers of an earlier backward pass, put in every .grad before the student's step runs."""
    g = torch.Generator().manual_seed(11)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]


def _flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([x.reshape(-1) for x in tensors]).double()


def _image_mse(model: nn.Module, x: Tensor, t: Tensor, target: Tensor) -> Tensor:
    return (model(x, t) - target).pow(2).mean()


def _run_step(fn: Callable[..., Any]) -> tuple[Tensor | None, float | None, str | None]:
    """(parameter update, returned loss, None) of the student's step with SGD(STEP_LR) on `step_model()`, whose
    .grad fields start stale; or (None, None, a message)."""
    if not callable(fn):
        return None, None, f"expected a function, got {type(fn).__name__}: define it with `def` and pass its name."
    model = step_model()
    for p, stale in zip(model.parameters(), _stale_gradients(model), strict=True):
        p.grad = stale.clone()
    before = _flat([p.detach().clone() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=STEP_LR)
    try:
        returned = fn(model, optimizer, *step_batch())
    except NotImplementedError:
        return None, None, STUB_MESSAGE
    except Exception as err:  # the student's code: report, do not crash the cell
        hint = ""
        if "must match the size" in str(err) or "broadcast" in str(err):
            hint = (" This is usually broadcasting: t has shape [B] and the images [B, C, H, W]; write "
                    "t.view(-1, 1, 1, 1) (or t[:, None, None, None]) so that each image gets its own time.")
        return None, None, f"your function raised {type(err).__name__}: {err}.{hint}"
    try:
        value = float(returned)
    except (TypeError, ValueError, RuntimeError):
        return None, None, (f"your step must return the loss as a number (loss.item()), got "
                            f"{type(returned).__name__}: {returned!r:.80}")
    return _flat([p.detach() for p in model.parameters()]) - before, value, None


def check_train_step(fn: Callable[..., Any], quiet: bool = False) -> Verdict:
    """Exercise 5: does fn(model, optimizer, x0, x1, t) take fmlab's flow-matching step on a batch of images, and
    return the loss before the step? Compares the parameter update of an SGD step with -lr x the cfm gradient, and
    names a forgotten zero_grad, a missing backward or step, a flipped time convention or target, a summed loss and
    gradient ascent."""
    delta, value, problem = _run_step(fn)
    if problem:
        return verdict(False, f"training step: {problem}", quiet)
    if bool((delta == 0).all()):
        return verdict(False, "training step: the parameters did not change. Call optimizer.step() after "
                              "loss.backward().", quiet)
    model = step_model()
    x0, x1, t = step_batch()
    tc = t.view(-1, 1, 1, 1)
    expected_loss = cfm_loss(model, Batch(x0=x0, x1=x1, t=t))[0]
    grad = gradient_of(expected_loss, model)
    stale = _flat(_stale_gradients(model))
    mistakes = {
        "Gradients were not zeroed: PyTorch adds each backward pass to .grad, so the step used this batch's "
        "gradient plus stale ones. Call optimizer.zero_grad() before loss.backward().": -STEP_LR * (grad + stale),
        "loss.backward() was not called: optimizer.step() used whatever .grad held from before.": -STEP_LR * stale,
        "The time convention is flipped (data at t = 0): here x_t = (1 - t) x0 + t x1 and the target is x1 - x0.":
            -STEP_LR * gradient_of(_image_mse(model, tc * x0 + (1 - tc) * x1, t, x0 - x1), model),
        "The target's sign is flipped: the velocity goes from noise to data, x1 - x0.":
            -STEP_LR * gradient_of(_image_mse(model, (1 - tc) * x0 + tc * x1, t, x0 - x1), model),
        "You summed the squared error over pixels: average it (.mean()) as fmlab does, so that the learning rate "
        "does not depend on the image size.": -STEP_LR * grad * float(np.prod(STEP_SHAPE[1:])),
        "The update climbs the loss: minimise L (loss.backward(), not (-loss).backward()).": STEP_LR * grad,
    }
    update = diagnose("training step (parameter update)", delta, -STEP_LR * grad, mistakes, rtol=1e-6, atol=1e-10,
                      hint="Compute x_t = (1 - t) x0 + t x1 with t reshaped to [B, 1, 1, 1], the loss "
                           "((model(x_t, t) - (x1 - x0)) ** 2).mean(), then zero_grad, backward, step.", quiet=True)
    if not update:
        return verdict(False, update.message, quiet)
    return check_number("training step (returned loss)", value, float(expected_loss.detach()), rtol=1e-6, atol=1e-10,
                        hint="Return the loss computed before optimizer.step(), as a number: loss.item().",
                        quiet=quiet)


def train_step_function(fn: Any) -> Callable[..., float]:
    """The student's training step if it passes exercise 5, else fmlab's (with a note)."""
    return student_or_reference(fn, reference_train_step, check_train_step, "training step")


def loop_setup(plan: Any) -> tuple[nn.Module, Callable[..., Tensor]]:
    """(a fresh UNet of lab 13's plan on its device, velocity head, `data(n, generator)` -> n training images
    [n, C, H, W] in [-1, 1] on the CPU): what exercise 5's training loop needs besides the step."""
    from ..train_images import ImageStream, image_dataset

    config = plan.config("cfm")
    model = build_unet(config.preset, image_size=config.image_size, dropout=config.dropout).to(plan.device)
    return model, ImageStream(image_dataset(config).images, seed=config.seed)
