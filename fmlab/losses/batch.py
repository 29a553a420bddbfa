"""The batch a loss sees. All randomness (noise, times, coupling) is drawn before the loss runs,
from a seeded generator, so a loss is a deterministic function of (model, batch, settings)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..paths import check_time, sample_times


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
