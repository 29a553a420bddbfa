"""Time embeddings that stay differentiable in t (forward-mode JVPs need d/dt of the network)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..checks import check_int

__all__ = [
    "DEFAULT_TIME_FREQ_MAX", "FourierTimeEmbedding",
]

# The highest frequency w_max of the MLP's time embedding. 10, not the 200 of image models: t lives in [0, 1], and with
# w_max = 200 a trained v_theta wiggles in t on a scale of ~0.01, so midpoint, Heun and RK4 show their orders only past
# ~100 steps and JVP losses (d/dt of the network) degrade; with 10 the orders are textbook from 8 steps at the same W2
# (benchmarks/time_embedding.py; table in benchmarks/README.md). Checkpoints without it rebuild with 200
# (fmlab.train.LEGACY_TIME_FREQ_MAX).
DEFAULT_TIME_FREQ_MAX = 10.0


class FourierTimeEmbedding(nn.Module):
    """emb(t) = [t, sin(w_k t), cos(w_k t)] with w_k log-spaced in [w_min, w_max] (Tancik et al. 2020).

    Smooth in t, so torch.func.jvp along t is exact. Output width is 2 * n_freqs + 1.
    """

    def __init__(self, n_freqs: int = 16, w_min: float = 1.0, w_max: float = DEFAULT_TIME_FREQ_MAX):
        super().__init__()
        check_int(n_freqs, "n_freqs", 1)
        if not 0 < w_min <= w_max:
            raise ValueError(f"the frequencies need 0 < w_min <= w_max, got w_min={w_min}, w_max={w_max}")
        freqs = torch.exp(torch.linspace(math.log(w_min), math.log(w_max), n_freqs))
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = 2 * n_freqs + 1

    def forward(self, t: Tensor) -> Tensor:
        angles = t[:, None] * self.freqs  # [B, n_freqs]
        return torch.cat([t[:, None], torch.sin(angles), torch.cos(angles)], dim=-1)
