"""Seeded 2D toy datasets for the labs (the data x1 at t = 1; noise x0 ~ N(0, I) lives at t = 0).

Every sampler draws from a `torch.Generator` (or the global RNG) and returns float32 points [n, 2] and long
labels [n]. Scales are chosen so that each set lives roughly in [-4, 4]^2 and is comparable with N(0, I):

| name           | shape                                                            | label               |
|----------------|------------------------------------------------------------------|---------------------|
| "moons"        | textbook two moons (= sklearn make_moons), unscaled, noise 0.05  | 0 outer, 1 inner    |
| "8gaussians"   | 8 Gaussians, centres on a circle of radius 2 sqrt 2, std 0.5/sqrt 2 | mode k at angle 2 pi k / 8 |
| "checkerboard" | uniform on the 8 dark squares of a 4 x 4 board covering [-4, 4]^2 | 0                   |
| "spirals"      | two interleaved Archimedean arms r = theta / 3, theta <= 3 pi, noise 0.1 | arm 0 or 1   |
| "swissroll"    | 2D swiss roll (theta cos theta, theta sin theta) / 5, theta in [1.5 pi, 4.5 pi], noise 0.1 | 0 |
| "scurve"       | 3D S-curve (sin u, 2 v, sign(u)(cos u - 1)) projected on (x, z), times 1.5, noise 0.05 | 0 |
| "circles"      | two concentric circles of radius 3 and 1.5, noise 0.08             | 0 outer, 1 inner    |

"moons" is deliberately the unscaled textbook sampler: outer arc (cos th, sin th), inner arc
(1 - cos th, 1 - sin th - 0.5), th ~ U[0, pi], Gaussian noise std 0.05, n // 2 outer points (sklearn's split).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["TOY_DATASETS", "sample_toy", "EIGHT_GAUSSIANS_RADIUS", "EIGHT_GAUSSIANS_STD"]

EIGHT_GAUSSIANS_RADIUS = 2.0 * math.sqrt(2.0)  # centres 2 sqrt(2) (cos 2 pi k / 8, sin 2 pi k / 8)
EIGHT_GAUSSIANS_STD = 0.5 / math.sqrt(2.0)

Sampler = Callable[[int, torch.Generator | None], tuple[Tensor, Tensor]]


def _rand(n: int, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _randn(shape: tuple[int, ...], g: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _shuffle(x: Tensor, y: Tensor, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(len(x), generator=g)
    return x[perm], y[perm]


def _moons(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    n_out = n // 2  # sklearn's split: n // 2 outer, the rest inner
    th = math.pi * _rand(n, g)  # th ~ U[0, pi]
    outer = torch.stack([torch.cos(th), torch.sin(th)], dim=1)  # (cos th, sin th)
    inner = torch.stack([1 - torch.cos(th), 1 - torch.sin(th) - 0.5], dim=1)  # (1 - cos th, 1 - sin th - 0.5)
    label = (torch.arange(n) >= n_out).long()
    x = torch.where(label[:, None].bool(), inner, outer) + 0.05 * _randn((n, 2), g)
    return _shuffle(x, label, g)


def _eight_gaussians(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    k = torch.randint(0, 8, (n,), generator=g)
    angle = 2 * math.pi * k.double() / 8
    centre = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centre + EIGHT_GAUSSIANS_STD * _randn((n, 2), g), k


def _checkerboard(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    # a 4 x 4 board of side-2 squares on [-4, 4]^2; square (i, j) is dark when i + j is even
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + col % 2  # same parity as col
    u = torch.stack([col, row], dim=1).double() + torch.stack([_rand(n, g), _rand(n, g)], dim=1)
    return 2 * u - 4, torch.zeros(n, dtype=torch.long)


def _spirals(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    arm = torch.randint(0, 2, (n,), generator=g)
    theta = 3 * math.pi * torch.sqrt(_rand(n, g))  # sqrt: uniform density along the arm's area
    phase = theta + math.pi * arm.double()  # arm 1 is arm 0 rotated by pi
    x = (theta / 3)[:, None] * torch.stack([torch.cos(phase), torch.sin(phase)], dim=1)  # r = theta / 3
    return x + 0.1 * _randn((n, 2), g), arm


def _swissroll(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    theta = 1.5 * math.pi * (1 + 2 * _rand(n, g))  # sklearn make_swiss_roll's t
    x = theta[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1) / 5
    return x + 0.1 * _randn((n, 2), g), torch.zeros(n, dtype=torch.long)


def _scurve(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    u = 3 * math.pi * (_rand(n, g) - 0.5)  # sklearn make_s_curve's t
    depth = 2 * _rand(n, g)  # the S-curve's y coordinate, dropped by the projection
    xyz = torch.stack([torch.sin(u), depth, torch.sign(u) * (torch.cos(u) - 1)], dim=1)
    x = 1.5 * xyz[:, [0, 2]]  # project on the (x, z) plane: the letter S, in [-1.5, 1.5] x [-3, 3]
    return x + 0.05 * _randn((n, 2), g), torch.zeros(n, dtype=torch.long)


def _circles(n: int, g: torch.Generator | None) -> tuple[Tensor, Tensor]:
    label = (torch.arange(n) >= n // 2).long()  # n // 2 outer (radius 3), the rest inner (radius 1.5)
    radius = 3.0 - 1.5 * label.double()
    th = 2 * math.pi * _rand(n, g)
    x = radius[:, None] * torch.stack([torch.cos(th), torch.sin(th)], dim=1) + 0.08 * _randn((n, 2), g)
    return _shuffle(x, label, g)


TOY_DATASETS: dict[str, Sampler] = {
    "moons": _moons, "8gaussians": _eight_gaussians, "checkerboard": _checkerboard, "spirals": _spirals,
    "swissroll": _swissroll, "scurve": _scurve, "circles": _circles,
}


def sample_toy(name: str, n: int, generator: torch.Generator | None = None,
               return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Draw n points of the 2D toy set `name` as float32 [n, 2] (and long labels [n] if return_labels).

    The same generator seed gives identical samples; generator=None uses torch's global RNG. Samples are
    drawn on the CPU (move them with .to(device)).
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"name must be one of {sorted(TOY_DATASETS)}, got {name!r}")
    if isinstance(n, bool) or not hasattr(n, "__index__") or operator.index(n) < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    n = operator.index(n)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator, got device {generator.device}")
    x, labels = TOY_DATASETS[name](n, generator)
    x = x.to(torch.float32)
    return (x, labels) if return_labels else x
