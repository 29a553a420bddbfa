"""Time-conditioned MLP backbones for 2D (and other low-dimensional) data.

One time input: `mlp(x, t)`. Two time inputs (flow maps): `mlp(x, s, t)`, conditioned either on
both times ("st") or on the time and the interval length ("t_delta": (t, t - s), as in MeanFlow).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import DEFAULT_TIME_FREQ_MAX, FourierTimeEmbedding

TIME_CONDITIONS = ("st", "t_delta")


class MLP(nn.Module):
    """Plain MLP on [x, emb(t)] (or [x, emb(a), emb(b)] for two times) with SiLU activations.

    The time embedding (FourierTimeEmbedding) has `n_freqs` frequencies log-spaced from 1 to `time_freq_max`.
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, time_inputs: int = 1,
                 time_condition: str = "st", n_freqs: int = 16, time_freq_max: float = DEFAULT_TIME_FREQ_MAX):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden and depth must be >= 1, got {dim}, {hidden}, {depth}")
        if time_inputs not in (1, 2):
            raise ValueError(f"time_inputs must be 1 or 2, got {time_inputs}")
        if time_condition not in TIME_CONDITIONS:
            raise ValueError(f"time_condition must be one of {TIME_CONDITIONS}, got {time_condition!r}")
        self.dim, self.time_inputs, self.time_condition = dim, time_inputs, time_condition
        self.embed = FourierTimeEmbedding(n_freqs, w_max=time_freq_max)
        width = dim + time_inputs * self.embed.dim
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(width if i == 0 else hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, *times: Tensor) -> Tensor:
        if len(times) != self.time_inputs:
            raise ValueError(f"this MLP takes {self.time_inputs} time input(s), got {len(times)}")
        times = tuple(_per_sample(t, x) for t in times)
        if self.time_inputs == 2 and self.time_condition == "t_delta":
            s, t = times
            times = (t, t - s)
        return self.net(torch.cat([x, *(self.embed(t) for t in times)], dim=-1))


def _per_sample(t: Tensor | float, x: Tensor) -> Tensor:
    """Accept a scalar or a [B] time and return a [B] tensor on x's device and dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(x.shape[0])
