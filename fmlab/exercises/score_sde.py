"""Checkers for the score-and-SDE lab. Convention: noise at t = 0, data at t = 1, linear path x_t = (1 - t) x0 + t x1,
score s(x, t) = grad_x log p_t(x) = (t v(x, t) - x) / (1 - t), and the SDE family

    dx = [v + eta (1 - t) s] dt + sqrt(2 eta (1 - t)) dW      (g(t)^2 = 2 eta sigma_t, sigma_t = 1 - t).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..data import gmm_2d
from ..paths import score_from_velocity
from . import Verdict, check_array, check_number, verdict
from .code import diagnose, run_student, student_or_reference

__all__ = ["score_inputs", "check_score_from_velocity", "score_function", "sde_step_inputs", "reference_sde_step",
           "check_sde_step", "DDIM_SETUP", "ddim_answer", "check_ddim_step", "min_snr_switch_answer",
           "check_min_snr_switch"]

SHAPE_HINT = ("Return one vector per sample, shape [B, 2] like v and x; t has shape [B], so write t[:, None] to "
              "broadcast it over the coordinates.")


# --- exercise 1 (code): the score from the velocity -------------------------------------------------------------------

def score_inputs(n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(v, x, t, exact score) on the 8-mode mixture: v [n, 2] its closed-form velocity at points x [n, 2], times
    t [n] in [0.05, 0.95], float64."""
    gmm = gmm_2d("8modes")
    g = torch.Generator().manual_seed(seed)
    x = 2.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return gmm.velocity(x, t), x, t, gmm.score(x, t)


def check_score_from_velocity(fn: Callable[[Tensor, Tensor, Tensor], Tensor], quiet: bool = False) -> Verdict:
    """Exercise 1: does fn(v, x, t) return the score (t v - x) / (1 - t) of the linear path? Compared with the
    closed-form score of the 8-mode mixture; recognises the usual mistakes."""
    v, x, t, exact = score_inputs()
    value, problem = run_student(fn, v.clone(), x.clone(), t.clone())
    if problem:
        return verdict(False, f"score: {problem}", quiet)
    tc = t[:, None]
    mistakes = {
        "The sign is flipped: the score points towards higher density, from x towards t v (the data side).":
            (x - tc * v) / (1 - tc),
        "The time convention looks flipped (data at t = 0, noise at t = 1): in this course the noise level is "
        "sigma_t = 1 - t and the data weight alpha_t = t.": ((1 - tc) * v - x) / tc,
        "The time convention looks flipped (data at t = 0) and the velocity reversed: here t = 0 is noise, and v "
        "points from noise to data.": (-(1 - tc) * v - x) / tc,
        "That is E[x0 | x_t] = x - t v, the noise head. The score is that divided by -(1 - t).": x - tc * v,
        "That is the denoiser E[x1 | x_t] = x + (1 - t) v, not the score.": x + (1 - tc) * v,
        "You divided by (1 - t)^2: that is the score from the x1 head, (t x1 - x) / (1 - t)^2. From the velocity it "
        "is (t v - x) / (1 - t).": (tc * v - x) / (1 - tc) ** 2,
        "The factor t on v is missing: E[x0 | x] = x - t v, so the score is (t v - x) / (1 - t).": (v - x) / (1 - tc),
    }
    return diagnose("score", value, exact, mistakes, rtol=1e-6, atol=1e-8, shape_hint=SHAPE_HINT,
                    hint="Start from grad log p_t = -E[x0 | x_t] / (1 - t) and E[x0 | x_t] = x - t v.", quiet=quiet)


def score_function(fn: Any) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The student's score-from-velocity if it passes exercise 1, else fmlab.paths.score_from_velocity (with a note)."""
    return student_or_reference(fn, lambda v, x, t: score_from_velocity(v, x, t), check_score_from_velocity,
                                "score from the velocity")


# --- exercise 2 (code): one Euler-Maruyama step of the SDE family -----------------------------------------------------

def sde_step_inputs(seed: int = 1) -> tuple[Tensor, Tensor, Tensor, float, float, Tensor]:
    """(v, x, t, dt, eta, z): a batch of 16 points of the 8-mode mixture with its velocity, t [16], dt = 0.05,
    eta = 0.7 and standard normal z [16, 2]."""
    v, x, t, _ = score_inputs(seed=seed)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    return v, x, t, 0.05, 0.7, z


def reference_sde_step(v: Tensor, x: Tensor, t: Tensor, dt: float, eta: float, z: Tensor) -> Tensor:
    """x + [v + eta (1 - t) s] dt + sqrt(2 eta (1 - t) dt) z with s = (t v - x) / (1 - t); the drift is
    v - eta (x - t v) (fmlab.solvers.marginal_sde_drift on the linear path)."""
    tc = t[:, None]
    return x + dt * (v - eta * (x - tc * v)) + torch.sqrt(2 * eta * (1 - tc) * dt) * z


def check_sde_step(fn: Callable[..., Tensor], quiet: bool = False) -> Verdict:
    """Exercise 2: does fn(v, x, t, dt, eta, z) make one Euler-Maruyama step of the marginal-preserving SDE?"""
    v, x, t, dt, eta, z = sde_step_inputs()
    value, problem = run_student(fn, v.clone(), x.clone(), t.clone(), dt, eta, z.clone())
    if problem:
        return verdict(False, f"SDE step: {problem}", quiet)
    tc = t[:, None]
    noise = torch.sqrt(2 * eta * (1 - tc) * dt) * z
    mistakes = {
        "The score correction has the wrong sign: in our time direction (noise -> data) the drift is "
        "v + (g^2 / 2) s, which pulls particles up the density.": x + dt * (v + eta * (x - tc * v)) + noise,
        "The noise is scaled by dt: a Brownian increment over dt has standard deviation sqrt(dt), so add "
        "g sqrt(dt) z.": x + dt * (v - eta * (x - tc * v)) + torch.sqrt(2 * eta * (1 - tc)) * dt * z,
        "The noise uses g^2 where it needs g = sqrt(2 eta (1 - t)).":
            x + dt * (v - eta * (x - tc * v)) + 2 * eta * (1 - tc) * math.sqrt(dt) * z,
        "The time convention looks flipped: here the noise level is sigma_t = 1 - t (noise at t = 0), so "
        "g(t)^2 = 2 eta (1 - t).": x + dt * (v - eta * (x - tc * v)) + torch.sqrt(2 * eta * tc * dt) * z,
        "The score correction is missing: noise alone changes the marginals; the drift must be "
        "v + (g^2 / 2) s to undo its spreading.": x + dt * v + noise,
    }
    return diagnose("SDE step", value, reference_sde_step(v, x, t, dt, eta, z), mistakes, shape_hint=SHAPE_HINT,
                    hint="x_next = x + (v + (g^2 / 2) s) dt + g sqrt(dt) z, with g^2 = 2 eta (1 - t) and "
                         "s = (t v - x) / (1 - t).", quiet=quiet)


# --- exercise 3: one DDIM step by hand --------------------------------------------------------------------------------

DDIM_SETUP = {"x": (1.0, -0.5), "t": 0.25, "x1_hat": (2.0, 0.0), "t_next": 0.5}


def ddim_answer() -> Tensor:
    """x_next = t' x1_hat + (1 - t') eps_hat with eps_hat = (x - t x1_hat) / (1 - t) (consistent with x)."""
    x, x1 = torch.tensor(DDIM_SETUP["x"], dtype=torch.float64), torch.tensor(DDIM_SETUP["x1_hat"], dtype=torch.float64)
    t, t2 = DDIM_SETUP["t"], DDIM_SETUP["t_next"]
    eps = (x - t * x1) / (1 - t)
    return t2 * x1 + (1 - t2) * eps


def check_ddim_step(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 3: the DDIM step from x = (1, -0.5) at t = 0.25 to t' = 0.5 when the network predicts
    x1_hat = (2, 0)."""
    return check_array("x at t' = 0.5", answer, ddim_answer(), rtol=1e-3, atol=1e-3,
                       hint="First eps_hat = (x - t x1_hat) / (1 - t), then x' = t' x1_hat + (1 - t') eps_hat. "
                            "Check: it equals the Euler step x + (t' - t) v with v = (x1_hat - x) / (1 - t).",
                       quiet=quiet)


# --- exercise 4: where min-SNR starts capping -------------------------------------------------------------------------

def min_snr_switch_answer(gamma: float = 5.0) -> float:
    """The time t where SNR = t^2 / (1 - t)^2 = gamma on the linear path: sqrt(gamma) / (1 + sqrt(gamma))."""
    return math.sqrt(gamma) / (1 + math.sqrt(gamma))


def check_min_snr_switch(answer: Any, quiet: bool = False) -> Verdict:
    """Exercise 4: at which t does the min-SNR-5 weight min(SNR, 5) stop following the SNR (linear path)?"""
    expected = min_snr_switch_answer(5.0)
    value = torch.as_tensor(answer, dtype=torch.float64) if isinstance(answer, (int, float)) else None
    if value is not None and abs(float(value) - (1 - expected)) < 2e-3:
        return verdict(False, f"t = {float(value):.3f} is the answer with data at t = 0. Here data sit at t = 1: "
                              "SNR = alpha^2 / sigma^2 = t^2 / (1 - t)^2 grows towards the data.", quiet)
    return check_number("t where SNR = 5", answer, expected, rtol=2e-3, atol=1e-3,
                        hint="Solve t / (1 - t) = sqrt(5).", quiet=quiet)
