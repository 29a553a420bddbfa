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

__all__ = [
    "FLOW_MATCHING", "UNROLLED", "COMPOSITIONAL", "LAGRANGIAN", "EULERIAN", "FAMILIES", "SAMPLERS",
    "CONVENTION_OURS", "flipped_convention", "LossSpec", "register", "get_loss", "list_losses",
]


LossFn = Callable[..., tuple[Any, dict[str, Any]]]

# The families a loss belongs to (LossSpec.family): what its target enforces.
FLOW_MATCHING = "flow matching"
UNROLLED = "unrolled"
COMPOSITIONAL = "flow map: compositional"
LAGRANGIAN = "flow map: Lagrangian"
EULERIAN = "flow map: Eulerian"
FAMILIES = (FLOW_MATCHING, UNROLLED, COMPOSITIONAL, LAGRANGIAN, EULERIAN)

# How a model trained by the loss generates (LossSpec.sampler; fmlab.sampling.generate runs it):
#   "ode": integrate the velocity model(x, t) from t = 0 to 1 (Euler by default, any fmlab.solvers method);
#   "flowmap": jump x_{i+1} = X(x_i, t_i, t_{i+1}) on a uniform grid (the diagonal u(x, t, t) is a velocity too);
#   "consistency": jump to the data X(x, t_i, 1), re-noise to t_{i+1} with fresh noise (CT, CD, FACM train only
#       jumps that end at t = 1);
#   "noise_only": X(x0, 0, 1) in one call from the noise (PID, FreeFlow train only jumps that start at t = 0).
SAMPLERS = ("ode", "flowmap", "consistency", "noise_only")

# Time conventions (LossSpec.convention): ours is noise at t = 0, data at t = 1 (fmlab.conventions).
CONVENTION_OURS = "noise at t=0, data at t=1 (as ours)"


def flipped_convention(paper: str, ours: str) -> str:
    """The convention note of a loss whose paper puts the data at t = 0: what the paper writes, then how it reads
    in our time (t -> 1 - t; fmlab.conventions converts)."""
    return f"paper: data at t=0, {paper}; ours: t -> 1 - t, {ours}"


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
    display_name: str = ""  # how labs and tables name it ("MeanFlow"); the registry name when empty
    sampler: str = ""  # one of SAMPLERS; empty: "ode" for one time input, "flowmap" for two

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"loss {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.time_inputs not in (1, 2):
            raise ValueError(f"loss {self.name!r}: time_inputs must be 1 or 2, got {self.time_inputs!r}")
        sampler = self.sampler or ("ode" if self.time_inputs == 1 else "flowmap")
        if sampler not in SAMPLERS or (sampler == "ode") != (self.time_inputs == 1):
            allowed = ("ode",) if self.time_inputs == 1 else SAMPLERS[1:]
            raise ValueError(f"loss {self.name!r}: sampler must be one of {allowed}, got {sampler!r}")
        object.__setattr__(self, "sampler", sampler)  # frozen: fill the defaults once
        object.__setattr__(self, "display_name", self.display_name or self.name)

    def settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with overrides; an unknown key is an error that lists the known ones."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(f"loss {self.name!r} has no setting(s) {unknown}; allowed: {sorted(self.defaults)}")
        return {**self.defaults, **overrides}


_REGISTRY: dict[str, LossSpec] = {}


def register(spec: LossSpec) -> LossSpec:
    """Add `spec` to the registry (each name once)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"loss {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_loss(name: str) -> LossSpec:
    """The registered loss called `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"loss must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def list_losses(family: str | None = None) -> list[LossSpec]:
    """Every registered loss, in registration order, or those of one family."""
    return [s for s in _REGISTRY.values() if family is None or s.family == family]
