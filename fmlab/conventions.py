"""The one converter between our time convention and the "data at 0" convention of many papers.

Ours (ARCHITECTURE.md, "Time"): noise at t = 0, data at t = 1, x_t = (1 - t) x0 + t x1, velocity v = dx/dt = x1 - x0;
a flow map X(x, s, t) = x + (t - s) u(x, s, t) moves from s to t (s < t goes toward data).

Papers' ("data at 0": MeanFlow, the unrolling manuscript, Dieleman's flow-map survey, EDM-style time):
tau = 1 - t, z_tau = (1 - tau) x + tau eps (x data, eps noise), v_paper = dz/dtau = eps - x, and MeanFlow's
average velocity moves from tau = t_p down to tau = r_p < t_p: z_{r_p} = z_{t_p} - (t_p - r_p) u_paper(z, r_p, t_p).

Hence, with tau = 1 - t:
    v_paper(z, tau)        = -v(z, 1 - tau)
    u_paper(z, r_p, t_p)   = -u(z, s = 1 - t_p, t = 1 - r_p)
so a formula written in the paper's symbols can be checked numerically on our models by wrapping them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

__all__ = [
    "to_paper_time", "from_paper_time", "paper_velocity", "paper_average_velocity", "paper_path",
]


Field = Callable[[Tensor, Tensor], Tensor]
TwoTimeField = Callable[[Tensor, Tensor, Tensor], Tensor]


def to_paper_time(t: Tensor) -> Tensor:
    """tau = 1 - t (data at tau = 0)."""
    return 1 - t


def from_paper_time(tau: Tensor) -> Tensor:
    """t = 1 - tau (data at t = 1)."""
    return 1 - tau


def paper_velocity(field: Field) -> Field:
    """v_paper(z, tau) = dz/dtau = -v(z, 1 - tau)."""
    return lambda z, tau: -field(z, 1 - tau)


def paper_average_velocity(model: TwoTimeField) -> TwoTimeField:
    """u_paper(z, r, t) with z_r = z_t - (t - r) u_paper, from our u(x, s, t): -u(z, 1 - t, 1 - r)."""
    return lambda z, r, t: -model(z, 1 - t, 1 - r)


def paper_path(x: Tensor, eps: Tensor, tau: Tensor) -> Tensor:
    """z_tau = (1 - tau) x + tau eps: the same point as our x_t with x1 = x, x0 = eps, t = 1 - tau."""
    tau = tau.reshape(-1, *([1] * (x.ndim - 1)))
    return (1 - tau) * x + tau * eps
