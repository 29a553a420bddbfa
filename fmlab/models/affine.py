"""Two-time models that are affine in x: a learnable one and the exact Gaussian-to-Gaussian flow map.

For Gaussian data x1 ~ N(m, S) and noise x0 ~ N(0, I) on the linear path x_r = (1 - r) x0 + r x1, every
marginal is Gaussian, N(r m, Q diag(var_r) Q^T) with var_r = r^2 lam + (1 - r)^2 (S = Q diag(lam) Q^T), and the
flow map is affine in x (Gaussian.flow_map_exact):

    X(x, s, t) = t m + Q diag(sqrt(var_t / var_s)) Q^T (x - s m).

So a model u(x, s, t) = A(s, t) x + b(s, t) can represent it exactly, which is what the flow-map tests use:
a loss whose fixed point is the true flow map must drive such a model there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..paths import per_sample_time
from .parametrisation import FlowMapModel

__all__ = ["AffineAverageVelocity", "AffineFlowMapModel", "ExactAverageVelocity", "ExactFlowMapModel",
           "exact_average_velocity"]


class AffineAverageVelocity(nn.Module):
    """u(x, s, t) = A(s, t) x + b(s, t) with [A | b] = MLP(s, t, t - s) (SiLU; last layer zero: u = 0 at init)."""

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 2):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden and depth must be >= 1, got {dim}, {hidden}, {depth}")
        self.dim = dim
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(3 if i == 0 else hidden, hidden), nn.SiLU()]
        last = nn.Linear(hidden, dim * dim + dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def coefficients(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """A(s, t) [B, d, d] and b(s, t) [B, d]."""
        out = self.net(torch.stack([s, t, t - s], dim=-1))
        d = self.dim
        return out[:, : d * d].reshape(-1, d, d), out[:, d * d:]

    def forward(self, x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        s, t = per_sample_time(s, x), per_sample_time(t, x)
        a, b = self.coefficients(s, t)
        return torch.einsum("bij,bj->bi", a, x) + b  # u = A(s, t) x + b(s, t)


class AffineFlowMapModel(FlowMapModel):
    """A two-time model affine in x: forward(x, s, t) = A(s, t) x + b(s, t); forward(x, t) = u(x, t, t)."""

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 2):
        super().__init__(AffineAverageVelocity(dim, hidden, depth))
        self.config = dict(kind="affine", dim=dim, hidden=hidden, depth=depth)


def exact_average_velocity(x: Tensor, s: Tensor, t: Tensor, mean: Tensor, lam: Tensor, q: Tensor) -> Tensor:
    """Average velocity of the Gaussian flow map on the linear path, smooth across s = t (no 0 / 0).

    u = (X - x) / (t - s) with X above. Since t m - s m = (t - s) m and
    sqrt(var_t) - sqrt(var_s) = (var_t - var_s) / (sqrt(var_t) + sqrt(var_s)),  var_t - var_s = (t - s) g,
    g = (t + s)(lam + 1) - 2, the factor (t - s) cancels:

        u(x, s, t) = m + Q diag(g / ((sqrt(var_t) + sqrt(var_s)) sqrt(var_s))) Q^T (x - s m).

    At s = t this is the velocity m + Q diag((t (lam + 1) - 1) / var_t) Q^T (x - t m). Differentiable in x, s, t.
    """
    s_, t_ = s[:, None], t[:, None]
    var_s = s_**2 * lam + (1 - s_) ** 2  # var_r = r^2 lam + (1 - r)^2
    var_t = t_**2 * lam + (1 - t_) ** 2
    g = (t_ + s_) * (lam + 1) - 2  # (var_t - var_s) / (t - s)
    gain = g / ((var_t.sqrt() + var_s.sqrt()) * var_s.sqrt())
    z = (x - s_ * mean) @ q  # Q^T (x - s m), as rows
    return mean + (gain * z) @ q.T


class ExactAverageVelocity(nn.Module):
    """The exact average velocity of a Gaussian target plus a zero-initialised, affine-in-x perturbation

        u(x, s, t) = u_exact(x, s, t) + sum_k phi_k(s, t) (dA_k x + db_k),   phi_k = monomials s^i t^j, i + j <= p,

    whose parameters dA [K, d, d] and db [K, d] start at 0. At 0 the model is exact, and the gradient of a loss
    w.r.t. (dA, db) is the expected parameter update at the exact solution: it vanishes if the exact map is a
    stationary point of the loss (tested for every flow-map loss). Linear path only.
    """

    def __init__(self, target: Any, perturbation_degree: int = 2):
        super().__init__()
        if perturbation_degree < 0:
            raise ValueError(f"perturbation_degree must be >= 0, got {perturbation_degree}")
        if getattr(target, "n_components", None) != 1:
            raise ValueError("target must be a fmlab.data.gaussian.Gaussian (one component)")
        dtype = target.dtype
        cov = target.covs[0].to(torch.float64)
        lam, q = torch.linalg.eigh(cov)  # S = Q diag(lam) Q^T
        self.register_buffer("mean", target.means[0].to(torch.float64))  # float64, cast to x's dtype on use
        self.register_buffer("lam", lam.clamp_min(0))
        self.register_buffer("q", q)
        d = target.dim
        self.powers = [(i, j) for n in range(perturbation_degree + 1) for i, j in _pairs(n)]
        self.dA = nn.Parameter(torch.zeros(len(self.powers), d, d, dtype=dtype))
        self.db = nn.Parameter(torch.zeros(len(self.powers), d, dtype=dtype))

    def basis(self, s: Tensor, t: Tensor) -> Tensor:
        """phi_k(s, t) = s^i t^j for (i, j) in self.powers, [B, K]."""
        return torch.stack([s**i * t**j for i, j in self.powers], dim=-1)

    def forward(self, x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        s, t = per_sample_time(s, x), per_sample_time(t, x)
        u = exact_average_velocity(x, s, t, *(b.to(x.dtype) for b in (self.mean, self.lam, self.q)))
        phi = self.basis(s, t)
        return u + torch.einsum("bk,kij,bj->bi", phi, self.dA, x) + phi @ self.db  # + sum_k phi_k (dA_k x + db_k)


class ExactFlowMapModel(FlowMapModel):
    """The exact flow map of a Gaussian target as a two-time model (u = (X_exact - x) / (t - s), diagonal = the
    velocity), with the zero-initialised perturbation parameters of ExactAverageVelocity."""

    def __init__(self, target: Any, perturbation_degree: int = 2):
        super().__init__(ExactAverageVelocity(target, perturbation_degree))
        self.config = dict(kind="exact_gaussian", perturbation_degree=perturbation_degree)

    def perturb(self, scale: float, generator: torch.Generator | None = None) -> ExactFlowMapModel:
        """Set the perturbation to N(0, scale^2 / K) entries (in place) and return self; scale = 0 resets it."""
        with torch.no_grad():
            for p in (self.backbone.dA, self.backbone.db):
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p)
                p.copy_(scale / math.sqrt(len(self.backbone.powers)) * noise)
        return self


def _pairs(n: int) -> list[tuple[int, int]]:
    """(i, j) with i + j = n: exponents of s and t."""
    return [(n - k, k) for k in range(n + 1)] if n else [(0, 0)]

