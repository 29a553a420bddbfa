"""Couplings pi(x0, x1) between a noise batch and a data batch.

Cost: c(x0, x1) = ||x0 - x1||^2 (squared Euclidean on flattened samples), the cost whose OT plan
makes the conditional straight-line paths cross least (Pooladian et al. 2023, Tong et al. 2024).

- "independent": pi = p0 x p1, the pairing as drawn.
- "ot": exact minibatch OT. For two batches of equal size with uniform weights the optimal plan is a
  permutation matrix (Birkhoff), so every x1 is used exactly once: no sampling with replacement, the
  failure of torchcfm's default sampler that drops and duplicates points.
- "sinkhorn": entropic OT, min <P, C> - reg H(P) (Cuturi 2013) with reg relative to mean(C); each x0 is
  kept once and its partner is drawn from the row P[i] / sum(P[i]) (so x1 may repeat: the plan is blurred).
Labels of x1 travel with x1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    "COUPLINGS", "Coupling", "cost_matrix", "ot_permutation", "sinkhorn_pairs", "couple", "pairing_cost",
]


COUPLINGS = ("independent", "ot", "sinkhorn")


@dataclass(frozen=True)
class Coupling:
    """A paired batch: x1[i] is the partner of x0[i]; labels follow x1; `index` maps back into the input x1."""

    x0: Tensor
    x1: Tensor
    labels: Tensor | None
    index: Tensor


def cost_matrix(x0: Tensor, x1: Tensor) -> Tensor:
    """C_ij = ||x0_i - x1_j||^2 on flattened samples, float64."""
    a, b = x0.reshape(len(x0), -1).double(), x1.reshape(len(x1), -1).double()
    return torch.cdist(a, b).pow(2)


def ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    """Index j(i) of the optimal assignment of x1 to x0 (exact EMD via POT's network simplex)."""
    cost = cost_matrix(x0, x1).cpu().numpy()
    n = len(cost)
    plan = ot.emd(np.full(n, 1.0 / n), np.full(n, 1.0 / n), cost, numItermax=1_000_000)
    perm = plan.argmax(axis=1)
    if len(np.unique(perm)) != n or not np.allclose(plan.max(axis=1), 1.0 / n):
        _, perm = linear_sum_assignment(cost)  # degenerate vertex: recover the permutation exactly
    return torch.as_tensor(perm, device=x1.device, dtype=torch.long)


def sinkhorn_pairs(x0: Tensor, x1: Tensor, reg: float, generator: torch.Generator | None) -> Tensor:
    """For each x0_i draw j ~ P[i, :] of the entropic plan with regularisation reg * mean(C)."""
    cost = cost_matrix(x0, x1).cpu().numpy()
    n, m = cost.shape
    plan = ot.sinkhorn(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost / cost.mean(), reg, numItermax=10_000)
    rows = torch.as_tensor(plan, dtype=torch.float64).clamp_min(0) + 1e-300
    g = generator if generator is None or generator.device.type == "cpu" else None
    return torch.multinomial(rows / rows.sum(1, keepdim=True), 1, generator=g).squeeze(1).to(x1.device)


def couple(x0: Tensor, x1: Tensor, method: str = "independent", reg: float = 0.05, labels: Tensor | None = None,
           generator: torch.Generator | None = None) -> Coupling:
    """Pair noise x0 [B, ...] with data x1 [B, ...] by 'independent', 'ot' or 'sinkhorn' (reg > 0)."""
    if method not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {method!r}")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    if labels is not None and len(labels) != len(x1):
        raise ValueError(f"labels must have one entry per x1 ({len(x1)}), got {len(labels)}")
    if method == "independent":
        index = torch.arange(len(x1), device=x1.device)
    elif method == "ot":
        index = ot_permutation(x0, x1)
    else:
        if not reg > 0:
            raise ValueError(f"sinkhorn reg must be > 0, got {reg}")
        index = sinkhorn_pairs(x0, x1, reg, generator)
    return Coupling(x0=x0, x1=x1[index], labels=None if labels is None else labels[index], index=index)


def pairing_cost(x0: Tensor, x1: Tensor) -> float:
    """Mean transport cost (1/B) sum_i ||x0_i - x1_i||^2 of a given pairing (equals ot.emd2 when optimal)."""
    return float((x0 - x1).reshape(len(x0), -1).double().pow(2).sum(1).mean())
