"""Probability paths, schedules, prediction conversions (velocity, x1, eps and the score), log-SNR, time samplers and
loss weightings.

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise x0 ~ N(0, I), t = 1 is data x1. A schedule gives

    x_t = alpha_t * x1 + sigma_t * x0,        dx_t/dt = d_alpha_t * x1 + d_sigma_t * x0,

with alpha_0 = 0, sigma_0 = 1 and alpha_1 = 1, sigma_1 = 0. The linear (CondOT) path is
alpha_t = t, sigma_t = 1 - t, so x_t = (1 - t) x0 + t x1 and dx_t = x1 - x0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .checks import check_choice, check_float, check_int

__all__ = [
    "per_sample_time",
    "ScheduleOutput", "Schedule", "LinearSchedule", "CosineSchedule", "VPSchedule",
    "SCHEDULES", "get_schedule", "PathSample", "sample_path", "path_point", "expand_t", "unit_time",
    "velocity_from_x1", "x1_from_velocity", "velocity_from_eps", "eps_from_velocity",
    "x1_from_eps", "eps_from_x1", "convert_prediction", "PREDICTIONS",
    "sample_times", "TIME_SAMPLERS", "loss_weight", "WEIGHTINGS", "check_time",
    "score_from_eps", "eps_from_score", "score_from_x1", "x1_from_score", "score_from_velocity",
    "velocity_from_score", "score_from_prediction", "prediction_from_score", "log_snr", "d_log_snr", "x1_error_gain",
]


class ScheduleOutput(NamedTuple):
    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


class Schedule:
    """A path schedule t -> (alpha_t, sigma_t, d alpha/dt, d sigma/dt)."""

    name = "schedule"

    def __call__(self, t: Tensor) -> ScheduleOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearSchedule(Schedule):
    """CondOT / rectified-flow path: alpha = t, sigma = 1 - t (Lipman et al. 2023, Liu et al. 2023)."""

    name = "linear"

    def __call__(self, t: Tensor) -> ScheduleOutput:
        return ScheduleOutput(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))


class CosineSchedule(Schedule):
    """Trigonometric path: alpha = sin(pi t / 2), sigma = cos(pi t / 2) (variance preserving, alpha^2 + sigma^2 = 1)."""

    name = "cosine"

    def __call__(self, t: Tensor) -> ScheduleOutput:
        h = 0.5 * math.pi
        return ScheduleOutput(torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t), -h * torch.sin(h * t))


class VPSchedule(Schedule):
    """Variance-preserving path of DDPM/score SDEs with a linear beta(r), r = 1 - t (Song et al. 2021).

    In the papers' time r (data at r = 0): alpha(r) = exp(-0.5 int_0^r beta), beta(r) = b_min + r (b_max - b_min).
    Ours: alpha_t = exp(-T(1 - t) / 2) with T(r) = b_min r + (b_max - b_min) r^2 / 2, sigma_t = sqrt(1 - alpha_t^2).
    alpha_0 is exp(-T(1)/2) ~ 6.6e-3 (not exactly 0), as in the papers.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"VPSchedule needs 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    def __call__(self, t: Tensor) -> ScheduleOutput:
        r = 1 - t
        integral = self.beta_min * r + 0.5 * (self.beta_max - self.beta_min) * r**2  # int_0^r beta
        beta = self.beta_min + (self.beta_max - self.beta_min) * r
        alpha = torch.exp(-0.5 * integral)
        sigma = torch.sqrt((1 - alpha**2).clamp_min(0))
        d_alpha = 0.5 * beta * alpha  # d/dt = -d/dr
        d_sigma = -alpha * d_alpha / sigma.clamp_min(1e-6)  # d sigma = -alpha d_alpha / sigma; finite at t = 1
        return ScheduleOutput(alpha, sigma, d_alpha, d_sigma)

    def __repr__(self) -> str:
        return f"VPSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


SCHEDULES: dict[str, Callable[[], Schedule]] = {
    "linear": LinearSchedule, "cosine": CosineSchedule, "vp": VPSchedule,
}


def get_schedule(schedule: str | Schedule) -> Schedule:
    """Return a schedule object from a name ('linear', 'cosine', 'vp') or pass one through."""
    if isinstance(schedule, Schedule):
        return schedule
    check_choice(schedule, "schedule", sorted(SCHEDULES))
    return SCHEDULES[schedule]()


def unit_time(value: float, name: str = "t") -> float:
    """`value` as a float, or a ValueError naming `name` if it lies outside [0, 1] (a single time, e.g. a slider's)."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def check_time(t: Tensor, name: str = "t") -> None:
    """Raise a ValueError naming `name` if any time lies outside [0, 1] or is NaN."""
    if not t.numel():
        return
    low, high = (v.item() for v in torch.aminmax(t))  # one reduction, not four
    if not (0 <= low and high <= 1):  # NaN fails too
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]")


def per_sample_time(t: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or per-sample time as a [B] tensor on x's device and dtype (B = x.shape[0])."""
    if isinstance(t, Tensor) and t.ndim == 1 and t.dtype == x.dtype and t.device == x.device:
        return t.reshape(x.shape[0])  # already per-sample: skip the conversion (a hand JVP calls this per input)
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(x.shape[0])


def expand_t(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a per-sample time [B] (or a scalar) against x [B, ...] as [B, 1, ..., 1]."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t has batch size {t.shape[0]} but x has {x.shape[0]}")
    return t.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class PathSample:
    """One draw from a conditional path: endpoints, times, the point x_t and its velocity dx_t."""

    x0: Tensor
    x1: Tensor
    t: Tensor
    x_t: Tensor
    dx_t: Tensor


def sample_path(x0: Tensor, x1: Tensor, t: Tensor, schedule: str | Schedule = "linear") -> PathSample:
    """x_t = alpha_t x1 + sigma_t x0 and dx_t = d_alpha_t x1 + d_sigma_t x0 for paired (x0, x1)."""
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    check_time(t)
    a, s, da, ds = get_schedule(schedule)(expand_t(t, x1))
    return PathSample(x0=x0, x1=x1, t=t, x_t=a * x1 + s * x0, dx_t=da * x1 + ds * x0)


def path_point(x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
    """x_t = (1 - t) x0 + t x1 on the linear path (per-sample t [B] or a scalar): `sample_path(...).x_t` alone."""
    t = expand_t(t, x1)
    return (1 - t) * x0 + t * x1


# --- conversions between predictions --------------------------------------------------
# From x_t = a x1 + s x0 and v = da x1 + ds x0 (a 2x2 linear system in (x1, x0)):
#   x1 = (ds x_t - s v) / (a ds - s da),   x0 = (a v - da x_t) / (a ds - s da).
# For the linear path, det = -1: x1 = x_t + (1 - t) v and v = (x1 - x_t) / (1 - t).

def _coeffs(x_t: Tensor, t: Tensor, schedule: str | Schedule) -> ScheduleOutput:
    return get_schedule(schedule)(expand_t(t, x_t))


def x1_from_velocity(v: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear") -> Tensor:
    a, s, da, ds = _coeffs(x_t, t, schedule)
    return (ds * x_t - s * v) / (a * ds - s * da)


def eps_from_velocity(v: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear") -> Tensor:
    a, s, da, ds = _coeffs(x_t, t, schedule)
    return (a * v - da * x_t) / (a * ds - s * da)


def velocity_from_x1(x1: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear",
                     eps: float = 0.0) -> Tensor:
    """v = da x1 + ds x0 with x0 = (x_t - a x1) / s; for the linear path v = (x1 - x_t) / (1 - t).

    `eps` is added to sigma to keep the division finite at t = 1 (sigma = 0)."""
    a, s, da, ds = _coeffs(x_t, t, schedule)
    return da * x1 + ds * (x_t - a * x1) / (s + eps)


def velocity_from_eps(x0: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear",
                      eps: float = 0.0) -> Tensor:
    """v = da x1 + ds x0 with x1 = (x_t - s x0) / a; for the linear path v = (x_t - x0) / t."""
    a, s, da, ds = _coeffs(x_t, t, schedule)
    return da * (x_t - s * x0) / (a + eps) + ds * x0


def x1_from_eps(x0: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear", eps: float = 0.0) -> Tensor:
    a, s, _, _ = _coeffs(x_t, t, schedule)
    return (x_t - s * x0) / (a + eps)


def eps_from_x1(x1: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear", eps: float = 0.0) -> Tensor:
    a, s, _, _ = _coeffs(x_t, t, schedule)
    return (x_t - a * x1) / (s + eps)


PREDICTIONS = ("velocity", "x1", "eps")


def convert_prediction(pred: Tensor, x_t: Tensor, t: Tensor, source: str, target: str,
                       schedule: str | Schedule = "linear", eps: float = 0.0) -> Tensor:
    """Convert a network output between 'velocity', 'x1' (clean data) and 'eps' (noise x0) heads."""
    check_choice(source, "source", PREDICTIONS)
    check_choice(target, "target", PREDICTIONS)
    if source == target:
        return pred
    v = {"velocity": lambda: pred,
         "x1": lambda: velocity_from_x1(pred, x_t, t, schedule, eps),
         "eps": lambda: velocity_from_eps(pred, x_t, t, schedule, eps)}[source]()
    if target == "velocity":
        return v
    return (x1_from_velocity if target == "x1" else eps_from_velocity)(v, x_t, t, schedule)


# --- time samplers ---------------------------------------------------------------------

def _uniform(n: int, g: torch.Generator | None, device, **_) -> Tensor:
    return torch.rand(n, generator=g, device=device)


def _logit_normal(n: int, g: torch.Generator | None, device, mu: float = 0.0, sigma: float = 1.0, **_) -> Tensor:
    """t = sigmoid(mu + sigma z), z ~ N(0, 1) (Esser et al. 2024, SD3)."""
    return torch.sigmoid(mu + sigma * torch.randn(n, generator=g, device=device))


def _cosine(n: int, g: torch.Generator | None, device, **_) -> Tensor:
    """t = 1 - cos(pi u / 2): denser near noise where the linear path's velocity is hardest to learn."""
    u = torch.rand(n, generator=g, device=device)
    return 1 - torch.cos(0.5 * math.pi * u)


TIME_SAMPLERS = {"uniform": _uniform, "logit_normal": _logit_normal, "cosine": _cosine}


def sample_times(n: int, kind: str = "uniform", generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, **params: float) -> Tensor:
    """Draw n times in [0, 1] from 'uniform', 'logit_normal' (mu, sigma) or 'cosine'."""
    check_choice(kind, "time sampler", sorted(TIME_SAMPLERS))
    check_int(n, "n", 1)
    if kind == "logit_normal":
        check_float(params.get("sigma", 1.0), "logit_normal sigma", 0.0, strict=True)
    if device is None and generator is not None:
        device = generator.device
    return TIME_SAMPLERS[kind](n, generator, device, **params)


# --- loss weightings -----------------------------------------------------------------------

WEIGHTINGS = ("none", "min_snr")


def loss_weight(t: Tensor, kind: str = "none", schedule: str | Schedule = "linear", gamma: float = 5.0,
                prediction: str = "velocity") -> Tensor:
    """Per-sample weight w(t) for a squared-error loss on the given head.

    'min_snr' (Hang et al. 2023, "Efficient diffusion training via Min-SNR weighting"): weight the
    clean-data error by min(SNR_t, gamma), SNR_t = alpha_t^2 / sigma_t^2. A head error is c_t times the
    x1 error, with c = 1 (x1), a / s (eps) and da - ds a / s (velocity; 1 / (1 - t) on the linear path),
    so the head's weight is w = min(SNR, gamma) / c^2. On a VP path this gives the paper's
    min(SNR, gamma) / SNR for eps and min(SNR, gamma) for x1.
    """
    check_choice(kind, "weighting", WEIGHTINGS)
    check_choice(prediction, "prediction", PREDICTIONS)
    if kind == "none":
        return torch.ones_like(t)
    check_float(gamma, "min_snr gamma", 0.0, strict=True)
    a, s, da, ds = get_schedule(schedule)(t)
    s = s.clamp_min(1e-6)
    snr = a**2 / s**2
    c = {"x1": torch.ones_like(t), "eps": a / s, "velocity": da - ds * a / s}[prediction]
    return torch.clamp(snr, max=gamma) / c.pow(2).clamp_min(1e-12)


# --- the score and log-SNR -------------------------------------------------------------------------
# The conditional path p_t(x | x1) = N(a x1, s^2 I) has the score -(x - a x1) / s^2 = -x0 / s. The marginal score is
# its posterior average (the marginalisation trick of the velocity, applied to the score; Tweedie's formula):
#
#     grad_x log p_t(x) = -E[x0 | x_t = x] / s_t,
#
# so the score is the noise head divided by -s, and every head converts to it. Linear path (a = t, s = 1 - t):
#     score = (t v - x_t) / (1 - t) = (t x1 - x_t) / (1 - t)^2 = -eps / (1 - t).

def score_from_eps(x0: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear",
                   eps: float = 0.0) -> Tensor:
    """score = -E[x0 | x_t] / s (Tweedie). `eps` is added to sigma to keep the division finite at t = 1."""
    _, s, _, _ = _coeffs(x_t, t, schedule)
    return -x0 / (s + eps)


def eps_from_score(score: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear") -> Tensor:
    """E[x0 | x_t] = -s score (finite everywhere, no division)."""
    _, s, _, _ = _coeffs(x_t, t, schedule)
    return -s * score


def score_from_x1(x1: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear",
                  eps: float = 0.0) -> Tensor:
    """score = (a x1 - x_t) / s^2 (x0 = (x_t - a x1) / s); linear: (t x1 - x_t) / (1 - t)^2."""
    a, s, _, _ = _coeffs(x_t, t, schedule)
    return (a * x1 - x_t) / (s + eps) ** 2


def x1_from_score(score: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear",
                  eps: float = 0.0) -> Tensor:
    """Tweedie's denoiser E[x1 | x_t] = (x_t + s^2 score) / a; `eps` is added to alpha (alpha = 0 at t = 0)."""
    a, s, _, _ = _coeffs(x_t, t, schedule)
    return (x_t + s**2 * score) / (a + eps)


def score_from_velocity(v: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear",
                        eps: float = 0.0) -> Tensor:
    """score = -eps_from_velocity / s = (da x_t - a v) / (s (a ds - s da)); linear: (t v - x_t) / (1 - t).

    `eps` is added to sigma (the division by s is the only singular one: s = 0 at t = 1)."""
    a, s, da, ds = _coeffs(x_t, t, schedule)
    return (da * x_t - a * v) / ((s + eps) * (a * ds - s * da))


def velocity_from_score(score: Tensor, x_t: Tensor, t: Tensor, schedule: str | Schedule = "linear",
                        eps: float = 0.0) -> Tensor:
    """v = da x1 + ds x0 with x0 = -s score and x1 = (x_t + s^2 score) / a; linear: v = (x_t + (1 - t) score) / t.

    At t = 0 the score (-x_t, whatever the data) says nothing about the data: `eps` is added to alpha."""
    return velocity_from_eps(eps_from_score(score, x_t, t, schedule), x_t, t, schedule, eps)


def score_from_prediction(pred: Tensor, x_t: Tensor, t: Tensor, source: str, schedule: str | Schedule = "linear",
                          eps: float = 0.0) -> Tensor:
    """The score grad log p_t(x_t) from a 'velocity', 'x1' or 'eps' head (`eps` guards the division by sigma)."""
    check_choice(source, "source", PREDICTIONS)
    x0 = pred if source == "eps" else convert_prediction(pred, x_t, t, source, "eps", schedule)
    return score_from_eps(x0, x_t, t, schedule, eps)


def prediction_from_score(score: Tensor, x_t: Tensor, t: Tensor, target: str, schedule: str | Schedule = "linear",
                          eps: float = 0.0) -> Tensor:
    """A 'velocity', 'x1' or 'eps' head from the score (`eps` guards the division by alpha for 'velocity', 'x1')."""
    check_choice(target, "target", PREDICTIONS)
    x0 = eps_from_score(score, x_t, t, schedule)
    return x0 if target == "eps" else convert_prediction(x0, x_t, t, "eps", target, schedule, eps)


def log_snr(t: Tensor, schedule: str | Schedule = "linear") -> Tensor:
    """lambda_t = log(alpha_t^2 / sigma_t^2), increasing from noise to data; linear: 2 log(t / (1 - t))."""
    a, s, _, _ = get_schedule(schedule)(t)
    return 2 * (torch.log(a) - torch.log(s))


def d_log_snr(t: Tensor, schedule: str | Schedule = "linear") -> Tensor:
    """d lambda / dt = 2 (da / a - ds / s) > 0; linear: 2 / (t (1 - t))."""
    a, s, da, ds = get_schedule(schedule)(t)
    return 2 * (da / a - ds / s)


def x1_error_gain(t: Tensor, prediction: str, schedule: str | Schedule = "linear") -> Tensor:
    """c_t with (head error) = c_t (x1 error) at fixed x_t: 1 for 'x1', -a / s for 'eps', da - ds a / s for 'velocity'.

    From x0 = (x_t - a x1) / s and v = da x1 + ds x0: an x1 error d moves eps by -a d / s and v by (da - ds a / s) d.
    Linear path: eps gain -t / (1 - t), velocity gain 1 / (1 - t). A loss w ||head error||^2 is
    w c_head^2 / c_other^2 ||other head's error||^2: the weighting of one head seen from another."""
    check_choice(prediction, "prediction", PREDICTIONS)
    a, s, da, ds = get_schedule(schedule)(t)
    return {"x1": torch.ones_like(t), "eps": -a / s, "velocity": da - ds * a / s}[prediction]
