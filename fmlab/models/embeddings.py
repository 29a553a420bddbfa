"""Time embeddings that stay differentiable in t (forward-mode JVPs need d/dt of the network)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..checks import check_int

__all__ = [
    "FourierTimeEmbedding",
]


class FourierTimeEmbedding(nn.Module):
    """emb(t) = [t, sin(w_k t), cos(w_k t)] with w_k log-spaced in [w_min, w_max] (Tancik et al. 2020).

    Smooth in t, so torch.func.jvp along t is exact. Output width is 2 * n_freqs + 1.
    """

    def __init__(self, n_freqs: int = 16, w_min: float = 1.0, w_max: float = 200.0):
        super().__init__()
        check_int(n_freqs, "n_freqs", 1)
        freqs = torch.exp(torch.linspace(math.log(w_min), math.log(w_max), n_freqs))
        self.register_buffer("freqs", freqs, persistent=False)
        self.dim = 2 * n_freqs + 1

    def forward(self, t: Tensor) -> Tensor:
        angles = t[:, None] * self.freqs  # [B, n_freqs]
        return torch.cat([t[:, None], torch.sin(angles), torch.cos(angles)], dim=-1)
