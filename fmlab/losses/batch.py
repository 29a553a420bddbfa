"""The batch a loss sees. All randomness (noise, times, coupling) is drawn before the loss runs,
from a seeded generator, so a loss is a deterministic function of (model, batch, settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..paths import check_time, sample_times

__all__ = [
    "Batch", "draw_times", "one_time_batch", "two_time_batch", "TWO_TIME_SAMPLERS",
]


@dataclass(frozen=True)
class Batch:
    """x0 noise and x1 data (already coupled), per-sample times t (and s, r where a loss needs them),
    optional extra noise z and labels."""

    x0: Tensor
    x1: Tensor
    t: Tensor
    s: Tensor | None = None
    r: Tensor | None = None
    z: Tensor | None = None
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if self.x0.shape != self.x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(self.x0.shape)}, {tuple(self.x1.shape)}")
        for name in ("t", "s", "r"):
            value = getattr(self, name)
            if value is None:
                continue
            if value.shape != (len(self.x1),):
                raise ValueError(f"{name} must have shape [{len(self.x1)}] (one time per sample), "
                                 f"got {tuple(value.shape)}")
            check_time(value, name)


def draw_times(n: int, generator: torch.Generator | None, device, time_sampler: str = "uniform",
               mu: float = 0.0, sigma: float = 1.0) -> Tensor:
    """Per-sample times from a named sampler (see fmlab.paths.sample_times)."""
    params = {"mu": mu, "sigma": sigma} if time_sampler == "logit_normal" else {}
    return sample_times(n, time_sampler, generator, device=device, **params)


def one_time_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                   time_sampler: str = "uniform", mu: float = 0.0, sigma: float = 1.0, **_) -> Batch:
    """The flow-matching batch: t ~ time_sampler, one per sample."""
    t = draw_times(len(x1), generator, x1.device, time_sampler, mu, sigma).to(x1.dtype)
    return Batch(x0=x0, x1=x1, t=t, labels=labels)


# --- the two-time batch of flow-map losses --------------------------------------------------------------------

TWO_TIME_SAMPLERS = ("uniform", "logit_normal", "cosine")


def two_time_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                   diagonal_fraction: float = 0.25, time_sampler: str = "uniform", mu: float = 0.0,
                   sigma: float = 1.0, extra_noise: bool = False, **_: Any) -> Batch:
    """The batch of a flow-map loss: times 0 <= s <= r <= t <= 1 per sample, x0 noise and x1 data (coupled).

    Two times are drawn from `time_sampler` (fmlab.paths.sample_times: 'uniform', 'logit_normal' with mu and
    sigma, 'cosine') and sorted, s = min (toward the noise), t = max (toward the data); for 'uniform' (s, t) is
    uniform on the triangle s <= t. Then exactly round(diagonal_fraction * B) samples, chosen at random, get
    s = t (the diagonal, where u(x, t, t) is the velocity and flow-map losses reduce to flow matching).
    r = s + lam (t - s), lam ~ U(0, 1), is an intermediate time for compositional losses; `extra_noise` also
    draws z ~ N(0, I) (fresh noise for losses that re-noise). Draw order: times, diagonal mask, lam, z.
    """
    if not 0.0 <= diagonal_fraction <= 1.0:
        raise ValueError(f"diagonal_fraction must lie in [0, 1], got {diagonal_fraction}")
    if time_sampler not in TWO_TIME_SAMPLERS:
        raise ValueError(f"time_sampler must be one of {TWO_TIME_SAMPLERS}, got {time_sampler!r}")
    n, dev, dtype = len(x1), x1.device, x1.dtype
    pair = torch.stack([draw_times(n, generator, dev, time_sampler, mu, sigma) for _ in range(2)]).to(dtype)
    s, t = pair.min(0).values, pair.max(0).values
    n_diag = int(round(diagonal_fraction * n))
    if n_diag:
        diag = torch.randperm(n, generator=generator, device=dev)[:n_diag]
        s = s.clone()
        s[diag] = t[diag]  # s = t on exactly n_diag samples
    lam = torch.rand(n, generator=generator, device=dev, dtype=dtype)
    r = (s + lam * (t - s)).clamp(s, t)  # s <= r <= t
    z = torch.randn(x1.shape, generator=generator, device=dev, dtype=dtype) if extra_noise else None
    return Batch(x0=x0, x1=x1, t=t, s=s, r=r, z=z, labels=labels)
