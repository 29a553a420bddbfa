"""Parametrisation wrappers: the same backbone trained as a velocity field, an x1 (clean-data)
predictor, an eps (noise) predictor, or a two-time average-velocity / flow-map network.

Contract (ARCHITECTURE.md, "Models"): `model(x, t)` always returns the velocity, so every solver can use any model;
`model.predict(x, t)` returns the head in its own parametrisation (what a loss on that head needs).
A class-conditional backbone (n_classes > 0, fmlab.models.conditioning) is called `model(x, t, y)`; `model(x, t)` is
its unconditional (null-label) field.
A two-time model returns the average velocity u(x, s, t) from `model(x, s, t)` and, on its diagonal,
the instantaneous velocity `model(x, t) = u(x, t, t)`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_choice
from ..paths import PREDICTIONS, Schedule, convert_prediction, get_schedule
from .embeddings import DEFAULT_TIME_FREQ_MAX
from .mlp import MLP

__all__ = [
    "FLOW_MAP_PREDICTIONS", "Parametrised", "FlowMapModel", "build_model", "wrap_backbone",
]


FLOW_MAP_PREDICTIONS = ("average_velocity",)


class Parametrised(nn.Module):
    """Wrap a one-time backbone whose output is a 'velocity', 'x1' or 'eps' prediction."""

    def __init__(self, backbone: nn.Module, prediction: str = "velocity", schedule: str | Schedule = "linear",
                 sigma_min: float = 1e-3):
        super().__init__()
        check_choice(prediction, "prediction", PREDICTIONS)
        self.backbone, self.prediction = backbone, prediction
        self.schedule = get_schedule(schedule)
        self.sigma_min = sigma_min  # keeps x1 -> velocity finite at t = 1, where 1 - t = 0
        self.config: dict[str, Any] = {}

    def predict(self, x: Tensor, t: Tensor, y: Tensor | int | None = None) -> Tensor:
        return self.backbone(x, t) if y is None else self.backbone(x, t, y=y)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | int | None = None) -> Tensor:
        """Velocity v(x, t) (or v(x, t | y)); an x1 head gives v = (x1_hat - x) / (1 - t) on the linear path."""
        return convert_prediction(self.predict(x, t, y), x, t, self.prediction, "velocity", self.schedule,
                                  eps=self.sigma_min if self.prediction != "velocity" else 0.0)


class FlowMapModel(nn.Module):
    """Wrap a two-time backbone as an average velocity u(x, s, t); X(x, s, t) = x + (t - s) u(x, s, t)."""

    prediction = "average_velocity"

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.config: dict[str, Any] = {}

    def forward(self, x: Tensor, s: Tensor, t: Tensor | None = None) -> Tensor:
        if t is None:  # diagonal: u(x, t, t) is the instantaneous velocity
            return self.backbone(x, s, s)
        return self.backbone(x, s, t)

    def predict(self, x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        return self.backbone(x, s, t)

    def flow_map(self, x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """X(x, s, t) = x + (t - s) u(x, s, t)."""
        return x + _col(t - s, x) * self.backbone(x, s, t)

    def jvp(self, x: Tensor, s: Tensor, t: Tensor, dx: Tensor | None = None, ds: Tensor | None = None,
            dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(u, du): u(x, s, t) and d/de u(x + e dx, s + e ds, t + e dt) at e = 0 (None tangents are zero): the
        backbone's own `jvp` where it has one (fmlab.models.MLP), else torch.func.jvp."""
        if hasattr(self.backbone, "jvp"):
            return self.backbone.jvp((x, s, t), (dx, ds, dt))
        filled = tuple(torch.zeros_like(p) if d is None else d for p, d in ((x, dx), (s, ds), (t, dt)))
        return torch.func.jvp(self.backbone, (x, s, t), filled)


def _col(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def build_model(dim: int = 2, prediction: str = "velocity", time_inputs: int = 1, hidden: int = 256,
                depth: int = 4, time_condition: str = "st", schedule: str = "linear", n_classes: int = 0,
                time_freq_max: float = DEFAULT_TIME_FREQ_MAX) -> nn.Module:
    """Build an MLP model from a plain config dict (what checkpoints store to rebuild it). n_classes > 0: a
    class-conditional one-time model `model(x, t, y)` (fmlab.models.conditioning); time_freq_max: the highest
    frequency of the time embedding (fmlab.models.FourierTimeEmbedding)."""
    config = dict(dim=dim, prediction=prediction, time_inputs=time_inputs, hidden=hidden, depth=depth,
                  time_condition=time_condition, schedule=schedule, time_freq_max=float(time_freq_max))
    if n_classes:
        if time_inputs != 1:
            raise ValueError(f"n_classes > 0 needs a one-time model (time_inputs=1), got time_inputs={time_inputs}")
        config["n_classes"] = n_classes  # only when conditional: unconditional configs stay as they were
    backbone = MLP(dim, hidden, depth, time_inputs, time_condition, n_classes=n_classes, time_freq_max=time_freq_max)
    model = wrap_backbone(backbone, prediction, time_inputs, schedule)
    model.config = config
    return model


def wrap_backbone(backbone: nn.Module, prediction: str, time_inputs: int, schedule: str = "linear") -> nn.Module:
    """A one-time backbone in its parametrisation head (Parametrised), a two-time one as a FlowMapModel."""
    if time_inputs == 2:
        if prediction not in FLOW_MAP_PREDICTIONS + ("velocity",):
            raise ValueError(f"a two-time model predicts {FLOW_MAP_PREDICTIONS}, got prediction={prediction!r}")
        return FlowMapModel(backbone)
    return Parametrised(backbone, prediction, schedule)
