"""A registry that names every loss, so labs, benchmarks and the CLI select them by name.

A loss is `fn(model, batch, **settings) -> (loss, diagnostics)`: a scalar to backpropagate and a
dict of named diagnostics (per-term values as detached tensors, and the number of network forward
passes `n_forward`, JVPs `n_jvp` and backward passes `n_backward` it causes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .batch import one_time_batch

LossFn = Callable[..., tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss and what a reader needs to place it."""

    name: str
    fn: LossFn
    family: str
    setting: str  # "marginal-from-conditional", "distillation", "self-distillation", ...
    paper: str
    convention: str  # the paper's time convention and how it maps onto ours
    time_inputs: int = 1  # 1: model(x, t); 2: model(x, s, t)
    prediction: str = "velocity"  # the head the loss trains by default
    make_batch: Callable[..., Any] = one_time_batch
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with overrides; an unknown key is an error that lists the known ones."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(f"loss {self.name!r} has no setting(s) {unknown}; allowed: {sorted(self.defaults)}")
        return {**self.defaults, **overrides}


_REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"loss {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_loss(name: str) -> LossSpec:
    if name not in _REGISTRY:
        raise ValueError(f"loss must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def list_losses(family: str | None = None) -> list[LossSpec]:
    return [s for s in _REGISTRY.values() if family is None or s.family == family]
