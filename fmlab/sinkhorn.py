"""Entropic optimal transport in torch: a log-domain Sinkhorn that runs on the tensors' device, and its bias.

Between two batches of n points with uniform weights a = b = 1/n and cost C_ij = ||x0_i - x1_j||^2, the entropic plan
(Cuturi 2013) is

    P_eps = argmin_P <P, C> - eps H(P),   P 1 = a,  P^T 1 = b,     H(P) = -sum_ij P_ij (log P_ij - 1),

of the form P_ij = exp((f_i + g_j - C_ij) / eps). Sinkhorn alternates the two marginal constraints on the potentials:

    f_i <- eps log a_i - eps logsumexp_j((g_j - C_ij) / eps),
    g_j <- eps log b_j - eps logsumexp_i((f_i - C_ij) / eps).

In the log domain nothing under- or overflows, so eps may be far below the cost scale (where POT's default
`ot.sinkhorn`, which works with exp(-C / eps), returns NaN). As eps -> 0 the plan tends to the exact OT plan (a
permutation for equal batch sizes); for eps > 0 it is blurred: each x0 spreads its mass over several x1, so pairs
drawn from it cost more than the exact ones. `sinkhorn_bias` measures that blur against eps.

Regularisation follows fmlab.couplings: `reg` is relative to the mean cost, eps = reg * mean(C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["log_sinkhorn", "sinkhorn_plan_torch", "sinkhorn_bias", "plan_statistics"]


def log_sinkhorn(cost: Tensor, eps: float, max_iter: int = 10_000, tol: float = 1e-9, check_every: int = 10
                 ) -> tuple[Tensor, int, float]:
    """(log P [n, m], iterations run, final marginal error) of the entropic plan with uniform marginals.

    cost: [n, m] (any float dtype; float64 recommended), on any device. Each iteration updates f (rows exact), then
    g (columns exact); it stops when the L1 error of the row marginal, sum_i |sum_j P_ij - 1/n|, falls below `tol`
    (checked every `check_every` iterations, the only host synchronisations) or after `max_iter` iterations.
    """
    if cost.ndim != 2 or min(cost.shape) < 1:
        raise ValueError(f"cost must be a non-empty [n, m] matrix, got shape {tuple(cost.shape)}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    n, m = cost.shape
    log_a, log_b = -math.log(n), -math.log(m)
    k = -cost / eps  # log of the Gibbs kernel, log K_ij = -C_ij / eps
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)  # potentials divided by eps
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    err, it = math.inf, 0
    for it in range(1, max_iter + 1):
        f = log_a - torch.logsumexp(k + g[None, :], dim=1)  # rows sum to 1/n
        g = log_b - torch.logsumexp(k + f[:, None], dim=0)  # columns sum to 1/m
        if it % check_every == 0 or it == max_iter:
            log_p = f[:, None] + k + g[None, :]
            err = float((log_p.exp().sum(1) - 1.0 / n).abs().sum())  # after the g-update, check the rows
            if err < tol:
                break
    return f[:, None] + k + g[None, :], it, err


def sinkhorn_plan_torch(x0: Tensor, x1: Tensor, reg: float, max_iter: int = 10_000, tol: float = 1e-9) -> Tensor:
    """The entropic plan P [n, n] (float64, on x0's device) between two batches, eps = reg * mean(C)."""
    if not (isinstance(reg, (int, float)) and math.isfinite(reg) and reg > 0):
        raise ValueError(f"reg must be a finite number > 0, got {reg!r}")
    a, b = x0.reshape(len(x0), -1).double(), x1.reshape(len(x1), -1).double().to(x0.device)
    cost = torch.cdist(a, b).pow(2)  # C_ij = ||x0_i - x1_j||^2, as fmlab.couplings.cost_matrix
    log_p, _, _ = log_sinkhorn(cost / cost.mean(), reg, max_iter, tol)  # eps = reg mean(C) on C / mean(C)
    return log_p.exp()


def sinkhorn_bias(x0: Tensor, x1: Tensor, regs: Sequence[float], max_iter: int = 10_000) -> list[dict[str, Any]]:
    """How far the Sinkhorn coupling is from exact OT, for each `reg` (relative to the mean cost), on one batch pair.

    Per reg a dict with
      reg, eps              the regularisation and eps = reg * mean(C);
      plan_cost             <P, C> / <P_exact, C>: the expected squared pairing distance of a pair drawn from the plan
                            (x0 uniform, its partner from its row, as fmlab.couplings does), over the exact OT cost;
      partners              mean over x0 of exp(entropy of its row P_i / sum P_i): the effective number of partners
                            (1 for a permutation, n for the independent coupling);
      off_permutation       (1/2) sum_ij |n P_ij - Pi_ij| / n, the total-variation distance between the plan and the
                            exact permutation Pi (0: the exact pairs, 1: disjoint);
      iterations, marginal_error   of the solve.
    Also the exact OT cost (mean squared distance of the exact pairs) and the independent coupling's, for scale.
    """
    a, b = x0.reshape(len(x0), -1).double(), x1.reshape(len(x1), -1).double().to(x0.device)
    if a.shape != b.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    n = len(a)
    cost = torch.cdist(a, b).pow(2)
    _, perm = linear_sum_assignment(cost.cpu().numpy())  # the exact OT permutation
    exact = float(cost[torch.arange(n), torch.as_tensor(perm, device=cost.device)].mean())
    independent = float(cost.mean())
    pi = torch.zeros_like(cost)
    pi[torch.arange(n), torch.as_tensor(perm, device=cost.device)] = 1.0
    rows = []
    for reg in regs:
        log_p, iters, err = log_sinkhorn(cost / cost.mean(), float(reg), max_iter)
        p = log_p.exp()
        rows.append({"reg": float(reg), "eps": float(reg) * independent, **plan_statistics(p, cost, exact),
                     "off_permutation": float(0.5 * (n * p - pi).abs().sum() / n),
                     "iterations": iters, "marginal_error": err})
        rows[-1].update(exact_cost=exact, independent_cost=independent)
    return rows


def plan_statistics(plan: Tensor, cost: Tensor, exact_cost: float) -> dict[str, float]:
    """For rows of a plan P (all of it, or the first rows) and their costs C: plan_cost, the expected cost of a pair
    drawn from P (x0 uniform, its partner from its row) over `exact_cost` (the exact OT pairs' mean cost), and
    partners, the mean over x0 of exp(entropy of its row): 1 for a permutation, n for the independent coupling."""
    row = plan / plan.sum(1, keepdim=True)  # the partner distribution of each x0
    entropy = -(row * torch.where(row > 0, row.log(), torch.zeros_like(row))).sum(1)
    return {"plan_cost": float((row * cost).sum(1).mean()) / exact_cost, "partners": float(entropy.exp().mean())}
