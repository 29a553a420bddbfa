"""Couplings pi(x0, x1) between a noise batch and a data batch.

Cost: c(x0, x1) = ||x0 - x1||^2 (squared Euclidean on flattened samples), the cost whose OT plan
makes the conditional straight-line paths cross least (Pooladian et al. 2023, Tong et al. 2024).

- "independent": pi = p0 x p1, the pairing as drawn.
- "ot": exact minibatch OT. For two batches of equal size with uniform weights the optimal plan is a
  permutation matrix (Birkhoff), so every x1 is used exactly once: no sampling with replacement, the
  failure of torchcfm's default sampler that drops and duplicates points.
- "sinkhorn": entropic OT, min <P, C> - reg H(P) (Cuturi 2013) with reg relative to mean(C); each x0 is
  kept once and its partner is drawn from the row P[i] / sum(P[i]) (so x1 may repeat: the plan is blurred).
- "sinkhorn_device": the same plan by a log-domain Sinkhorn in torch (fmlab.sinkhorn) on the inputs' device:
  stable for small reg and fast on a GPU; partners are drawn on the CPU generator as for "sinkhorn".
Labels of x1 travel with x1.

A coupling has a model-independent part, `solve_coupling` (the permutation, or the plan's rows), and a random
part, `draw_partners` (Sinkhorn's partner draws); fmlab.prefetch runs the first ahead of training on worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["COUPLINGS", "EXACT_SOLVERS", "ASSIGNMENT_MAX_BATCH", "Coupling", "cost_matrix", "ot_permutation",
           "sinkhorn_rows", "draw_partners", "solve_coupling", "stand_in_solution", "partners",
           "couple", "pairing_cost"]

COUPLINGS = ("independent", "ot", "sinkhorn", "sinkhorn_device")
EXACT_SOLVERS = ("auto", "network_simplex", "assignment")
# "auto": the assignment solver up to this batch size, the network simplex above (benchmarks/cfm.py --solvers: on
# an idle core the simplex takes 0.78-0.85x the assignment solver's time at 256 points and 1.13x at 128).
ASSIGNMENT_MAX_BATCH = 128


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


def ot_permutation(x0: Tensor, x1: Tensor, solver: str = "auto") -> Tensor:
    """Index j(i) of the optimal assignment of x1 to x0, exact.

    solver: 'network_simplex' (POT's ot.emd, whose plan is a permutation matrix for equal uniform weights),
    'assignment' (SciPy's linear_sum_assignment on the square cost matrix: the same optimum, a permutation by
    construction) or 'auto' (assignment up to ASSIGNMENT_MAX_BATCH points, where it is the faster one). Both are
    exact, so they give the same permutation whenever the optimum is unique (always, for continuous data).
    """
    if solver not in EXACT_SOLVERS:
        raise ValueError(f"solver must be one of {EXACT_SOLVERS}, got {solver!r}")
    cost = cost_matrix(x0, x1).cpu().numpy()
    n = len(cost)
    if solver == "assignment" or (solver == "auto" and n <= ASSIGNMENT_MAX_BATCH):
        _, perm = linear_sum_assignment(cost)
        return torch.as_tensor(perm, device=x1.device, dtype=torch.long)
    plan = ot.emd(np.full(n, 1.0 / n), np.full(n, 1.0 / n), cost, numItermax=1_000_000)
    perm = plan.argmax(axis=1)
    if len(np.unique(perm)) != n or not np.allclose(plan.max(axis=1), 1.0 / n):
        _, perm = linear_sum_assignment(cost)  # degenerate vertex: recover the permutation exactly
    return torch.as_tensor(perm, device=x1.device, dtype=torch.long)


def sinkhorn_rows(x0: Tensor, x1: Tensor, reg: float, on_device: bool = False) -> Tensor:
    """The entropic plan with regularisation reg * mean(C), clamped at 0 plus 1e-300 so that every row can be
    drawn from: [B, B] float64 on the CPU. on_device: fmlab.sinkhorn's log-domain solver on x0's device, else POT."""
    if on_device:
        from .sinkhorn import sinkhorn_plan_torch

        return sinkhorn_plan_torch(x0, x1, reg).cpu().clamp_min(0) + 1e-300
    cost = cost_matrix(x0, x1).cpu().numpy()
    n, m = cost.shape
    plan = ot.sinkhorn(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost / cost.mean(), reg, numItermax=10_000)
    return torch.as_tensor(plan, dtype=torch.float64).clamp_min(0) + 1e-300


def draw_partners(rows: Tensor, generator: torch.Generator | None) -> Tensor:
    """For each row i draw j ~ rows[i] / sum(rows[i]) (one exponential per entry from `generator`) [B] on the CPU."""
    g = generator if generator is None or generator.device.type == "cpu" else None
    return torch.multinomial(rows / rows.sum(1, keepdim=True), 1, generator=g).squeeze(1)


def solve_coupling(x0: Tensor, x1: Tensor, method: str, reg: float = 0.05, solver: str = "auto") -> Tensor:
    """The model-independent, deterministic part of a coupling (no random numbers drawn), on the CPU:
    'independent' -> arange(B); 'ot' -> the optimal permutation [B]; 'sinkhorn' / 'sinkhorn_device' -> the plan's
    rows [B, B] (`sinkhorn_rows`), from which `draw_partners` draws."""
    if method == "independent":
        return torch.arange(len(x1))
    if method == "ot":
        return ot_permutation(x0, x1, solver).cpu()
    return sinkhorn_rows(x0, x1, reg, on_device=method == "sinkhorn_device")


def stand_in_solution(method: str, n: int) -> Tensor:
    """A solution of `solve_coupling`'s shape whose `partners` draw as many random numbers as the real one's: the
    identity (nothing drawn), or uniform plan rows (one draw per row). fmlab.prefetch counts draws with it."""
    return torch.arange(n) if method in ("independent", "ot") else torch.ones(n, n, dtype=torch.float64)


def partners(solution: Tensor, generator: torch.Generator | None) -> Tensor:
    """The index of each x0's partner from `solve_coupling`'s output: a permutation as it is, plan rows by a draw."""
    return solution if solution.ndim == 1 else draw_partners(solution, generator)


def couple(x0: Tensor, x1: Tensor, method: str = "independent", reg: float = 0.05, labels: Tensor | None = None,
           generator: torch.Generator | None = None, solver: str = "auto") -> Coupling:
    """Pair noise x0 [B, ...] with data x1 [B, ...] by 'independent', 'ot', 'sinkhorn' or 'sinkhorn_device'
    (reg > 0); `solver` picks the exact OT solver (see `ot_permutation`)."""
    if method not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {method!r}")
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    if labels is not None and len(labels) != len(x1):
        raise ValueError(f"labels must have one entry per x1 ({len(x1)}), got {len(labels)}")
    if method.startswith("sinkhorn") and not reg > 0:
        raise ValueError(f"sinkhorn reg must be > 0, got {reg}")
    index = partners(solve_coupling(x0, x1, method, reg, solver), generator).to(x1.device)
    return Coupling(x0=x0, x1=x1[index], labels=None if labels is None else labels[index], index=index)


def pairing_cost(x0: Tensor, x1: Tensor) -> float:
    """Mean transport cost (1/B) sum_i ||x0_i - x1_i||^2 of a given pairing (equals ot.emd2 when optimal)."""
    return float((x0 - x1).reshape(len(x0), -1).double().pow(2).sum(1).mean())
