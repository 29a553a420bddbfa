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
from .embeddings import DEFAULT_TIME_FREQ_MAX, FourierTimeEmbedding
from .tangent import fourier_jvp, sequential_jvp, supports_tangents

__all__ = [
    "TIME_CONDITIONS", "MLP",
]


TIME_CONDITIONS = ("st", "t_delta")


class MLP(nn.Module):
    """Plain MLP on [x, emb(t)] (or [x, emb(a), emb(b)] for two times) with SiLU activations; with n_classes > 0,
    on [x, emb(t) + e(y)] (e: a LabelEmbedding).

    The time embedding (FourierTimeEmbedding) has `n_freqs` frequencies log-spaced from 1 to `time_freq_max`.
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, time_inputs: int = 1,
                 time_condition: str = "st", n_freqs: int = 16, n_classes: int = 0,
                 time_freq_max: float = DEFAULT_TIME_FREQ_MAX):
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

    def jvp(self, primals: tuple, tangents: tuple) -> tuple[Tensor, Tensor]:
        """(mlp(x, *times), its derivative along (dx, *dtimes)) in one pass that carries the tangent beside the
        value (fmlab.models.tangent); None tangents are zero. Both outputs are differentiable in the parameters.
        If a layer has no tangent rule (a replaced activation or embedding) or the MLP is class-conditional (its
        jvp is then of the unlabelled model(x, *times)), torch.func.jvp does it instead."""
        if len(primals) != 1 + self.time_inputs or len(tangents) != len(primals):
            raise ValueError(f"this MLP takes x and {self.time_inputs} time(s), and one tangent for each; got "
                             f"{len(primals)} primals and {len(tangents)} tangents")
        x, *times = primals
        dx, *dtimes = tangents
        times = [per_sample_time(t, x) for t in times]
        dtimes = [None if d is None else per_sample_time(d, x) for d in dtimes]
        if type(self.embed) is not FourierTimeEmbedding or self.label is not None or not supports_tangents(self.net):
            filled = [torch.zeros_like(p) if d is None else d for p, d in zip([x, *times], [dx, *dtimes], strict=True)]
            return torch.func.jvp(self, (x, *times), tuple(filled))
        if self.time_inputs == 2 and self.time_condition == "t_delta":  # (s, t) -> (t, t - s)
            (s, t), (ds, dt) = times, dtimes
            times = [t, t - s]
            if ds is not None:
                dt = -ds if dt is None else dt - ds  # d(t - s) = dt - ds
            dtimes = [dtimes[1], dt]
        parts, dparts = [x], [torch.zeros_like(x) if dx is None else dx]
        for t, dt in zip(times, dtimes, strict=True):
            e, de = fourier_jvp(self.embed, t, dt)
            parts.append(e)
            dparts.append(torch.zeros_like(e) if de is None else de)
        return sequential_jvp(self.net, torch.cat(parts, dim=-1), torch.cat(dparts, dim=-1))


