"""Time-conditioned MLP backbones for 2D (and other low-dimensional) data.

One time input: `mlp(x, t)`. Two time inputs (flow maps): `mlp(x, s, t)`, conditioned either on
both times ("st") or on the time and the interval length ("t_delta": (t, t - s), as in MeanFlow).
With n_classes = C > 0 the network also takes a class label: `mlp(x, t, y)` (y = C or None: no label), its
embedding added to each time's Fourier features (fmlab.models.conditioning).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..paths import per_sample_time
from .conditioning import LabelEmbedding, check_n_classes, split_label
from .embeddings import FourierTimeEmbedding

__all__ = [
    "TIME_CONDITIONS", "MLP",
]


TIME_CONDITIONS = ("st", "t_delta")


class MLP(nn.Module):
    """Plain MLP on [x, emb(t)] (or [x, emb(a), emb(b)] for two times) with SiLU activations; with n_classes > 0,
    on [x, emb(t) + e(y)] (e: a LabelEmbedding)."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, time_inputs: int = 1,
                 time_condition: str = "st", n_freqs: int = 16, n_classes: int = 0):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden and depth must be >= 1, got {dim}, {hidden}, {depth}")
        if time_inputs not in (1, 2):
            raise ValueError(f"time_inputs must be 1 or 2, got {time_inputs}")
        if time_condition not in TIME_CONDITIONS:
            raise ValueError(f"time_condition must be one of {TIME_CONDITIONS}, got {time_condition!r}")
        self.dim, self.time_inputs, self.time_condition = dim, time_inputs, time_condition
        self.embed = FourierTimeEmbedding(n_freqs)
        width = dim + time_inputs * self.embed.dim
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(width if i == 0 else hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)
        self.n_classes = check_n_classes(n_classes)
        self.label = LabelEmbedding(n_classes, self.embed.dim) if n_classes else None

    def forward(self, x: Tensor, *times: Tensor, y: Tensor | int | None = None) -> Tensor:
        times, y = split_label(times, self.time_inputs, y, self.n_classes)
        times = tuple(per_sample_time(t, x) for t in times)
        if self.time_inputs == 2 and self.time_condition == "t_delta":
            s, t = times
            times = (t, t - s)
        feats = [self.embed(t) for t in times]
        if self.label is not None:
            e = self.label(y, x.shape[0], x.device)  # e(y) [B, emb], added to each time's features
            feats = [f + e.to(f.dtype) for f in feats]
        return self.net(torch.cat([x, *feats], dim=-1))


