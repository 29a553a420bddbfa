"""Checkers for the likelihood lab. Convention: noise N(0, I) at t = 0, data at t = 1, dx/dt = v(x, t); along a
trajectory d/dt log p_t(x_t) = -div v(x_t, t), so log p_1(x_1) = log N(x_0) - int_0^1 div v dt (fmlab.likelihood)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..likelihood import divergence
from . import Verdict, check_number, verdict
from .code import diagnose, run_student, student_or_reference

__all__ = ["exercise_field", "divergence_inputs", "check_divergence", "divergence_function",
           "check_log_density_change", "BPD_NATS", "check_bits_per_dim", "check_probes_for_half_se"]


def exercise_field(x: Tensor, t: Tensor) -> Tensor:
    """v(x, t) = (t x1^2 + sin x2, x1 x2 - cos x1): div v = 2 t x1 + x1; its Jacobian is not symmetric."""
    x1, x2 = x[:, 0], x[:, 1]
    return torch.stack([t * x1**2 + torch.sin(x2), x1 * x2 - torch.cos(x1)], dim=1)


def divergence_inputs(n: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)


def check_divergence(fn: Callable[..., Tensor], quiet: bool = False) -> Verdict:
    """Exercise 1: does fn(field, x, t) return div v = sum_i d v_i / d x_i, one number per sample [B]? Checked on
    `exercise_field`, whose divergence is 2 t x1 + x1."""
    x, t = divergence_inputs()
    value, problem = run_student(fn, exercise_field, x.clone(), t.clone())
    if problem:
        return verdict(False, f"divergence: {problem}", quiet)
    exact = 2 * t * x[:, 0] + x[:, 0]
    if value.shape == (len(x), 2):
        return verdict(False, f"divergence: expected shape ({len(x)},), got {tuple(value.shape)}: that looks like the "
                              "diagonal d v_i / d x_i per coordinate. Sum it over the coordinates.", quiet)
    if value.ndim == 0:
        return verdict(False, f"divergence: expected shape ({len(x)},), got a single number: you summed over the "
                              "batch. Keep one divergence per sample (sum over coordinates only).", quiet)
    x1, x2 = x[:, 0], x[:, 1]
    all_entries = 2 * t * x1 + torch.cos(x2) + x2 + torch.sin(x1) + x1  # sum of every Jacobian entry
    mistakes = {
        "That is the sum of every entry of the Jacobian: the gradient of v.sum() adds d v_j / d x_i over j. Take only "
        "the diagonal: the gradient of v[:, i].sum(), entry i, for each i.": all_entries,
        "The sign is flipped: div v = + sum_i d v_i / d x_i.": -exact,
        "Only the first coordinate's d v_1 / d x_1 = 2 t x1: add d v_2 / d x_2 too.": 2 * t * x1,
    }
    return diagnose("divergence", value, exact, mistakes, rtol=1e-6, atol=1e-8,
                    shape_hint="Return one divergence per sample: shape [B].",
                    hint="For each coordinate i, take the gradient of v[:, i].sum() with respect to x and keep its "
                         "column i; add these up.", quiet=quiet)


def divergence_function(fn: Any) -> Callable[..., Tensor]:
    """The student's divergence if it passes exercise 1, else fmlab.likelihood.divergence (with a note)."""
    return student_or_reference(fn, divergence, check_divergence, "divergence")


def check_log_density_change(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 2: the field v(x) = -x in 2D moves a particle from t = 0 to t = 1; by how much does log p_t(x_t)
    change along it? d/dt log p = -div v = +2, so +2."""
    value = None
    try:
        value = float(torch.as_tensor(answer, dtype=torch.float64).reshape(()))
    except (TypeError, ValueError, RuntimeError):
        pass
    if value is not None and abs(value + 2) < 1e-3:
        return verdict(False, "-2 is div v, not the change of log p: along a trajectory d/dt log p = -div v. A "
                              "contracting field packs the same mass into less space, so the density rises.", quiet)
    if value is not None and abs(value - 1) < 1e-3:
        return verdict(False, "1 is the answer in one dimension: in 2D, div(-x) = -1 - 1 = -2.", quiet)
    return check_number("change of log p_t(x_t)", answer, 2.0, rtol=1e-3, atol=1e-3,
                        hint="Integrate d/dt log p_t(x_t) = -div v(x_t, t) from 0 to 1.", quiet=quiet)


BPD_NATS = 2.1  # the negative log-likelihood of exercise 4, in nats per 2D point


def check_bits_per_dim(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 4: a model's NLL is 2.1 nats per 2D point; how many bits per dimension is that? 2.1 / (2 ln 2)."""
    expected = BPD_NATS / (2 * math.log(2))
    known = {BPD_NATS / math.log(2): "That is bits per point: divide by the dimension d = 2 too.",
             BPD_NATS / 2: "That is nats per dimension: divide by ln 2 to turn nats into bits.",
             BPD_NATS * math.log(2) / 2: "Multiply by 1 / ln 2 (log2 e = 1.44), not by ln 2."}
    try:
        value = float(torch.as_tensor(answer, dtype=torch.float64).reshape(()))
    except (TypeError, ValueError, RuntimeError):
        value = None
    for wrong, message in known.items():
        if value is not None and abs(value - wrong) < 2e-3:
            return verdict(False, f"{value:.3f}: {message}", quiet)
    return check_number("bits per dimension", answer, expected, rtol=2e-3, atol=1e-3,
                        hint="bits/dim = NLL in nats / (d ln 2).", quiet=quiet)


def check_probes_for_half_se(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: by what factor must the number of Hutchinson probes grow to halve the standard error? (4)"""
    try:
        value = float(torch.as_tensor(answer, dtype=torch.float64).reshape(()))
    except (TypeError, ValueError, RuntimeError):
        value = None
    if value is not None and abs(value - 2) < 1e-6:
        return verdict(False, "Twice the probes divide the standard error by sqrt(2) only: SE = std / sqrt(K).", quiet)
    return check_number("factor on the number of probes", answer, 4.0, rtol=1e-3, atol=1e-3,
                        hint="The K estimates are independent: SE = std / sqrt(K).", quiet=quiet)
