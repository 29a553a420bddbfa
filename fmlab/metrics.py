"""Sample-quality and path-geometry metrics: Wasserstein (exact and sliced), MMD, noise floor, straightness.

Samples are tensors [n, ...]; features are flattened, so [n, d] points and [n, C, H, W] images both work.
Weights are uniform (1/n on each sample). All distances are computed in float64 on the CPU and returned as
Python floats.

Cost of exact W_p: POT's network simplex on an n x m cost matrix, roughly O(n^3) time and O(n m) memory;
n = m = 2000 in 2D takes about 1 s, n = m = 1000 about 0.2 s (2 CPU cores). Use `sliced_wasserstein` or
`mmd` for larger samples.

Time convention (ARCHITECTURE.md, "Time"): a trajectory runs from noise (t = 0) to data (t = 1).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import ot
import torch
from torch import Tensor

from .solvers import Field, Trajectory, solve

__all__ = [
    "wasserstein", "sliced_wasserstein", "mmd", "METRICS", "noise_floor",
    "straightness", "path_length_ratio", "w2_vs_steps",
]


def _flat_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Both samples as float64 CPU [n, D]; ValueError if empty or if feature shapes differ."""
    for name, z in (("x", x), ("y", y)):
        if z.ndim < 1 or z.shape[0] < 1:
            raise ValueError(f"{name} must be a non-empty sample [n, ...] with n >= 1, got shape {tuple(z.shape)}")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"y must have the same feature shape as x, got {tuple(y.shape[1:])} and {tuple(x.shape[1:])}")
    return (z.detach().reshape(len(z), -1).to("cpu", torch.float64) for z in (x, y))


def _check_p(p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"p must be a number >= 1 (1 for W1, 2 for W2, ...), got {p!r}")


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not hasattr(value, "__index__") or operator.index(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def wasserstein(x: Tensor, y: Tensor, p: int = 2) -> float:
    """Exact W_p between the empirical measures (1/n) sum delta_{x_i} and (1/m) sum delta_{y_j}.

    W_p^p = min_{P in U(1/n, 1/m)} sum_ij P_ij ||x_i - y_j||^p (earth mover's distance, POT `ot.emd2`),
    returned as W_p = (W_p^p)^(1/p). Sizes n and m may differ. Raises RuntimeError if the network simplex
    stops before optimality (its iteration cap is set far above what problems of this size need).
    """
    _check_p(p)
    a, b = _flat_pair(x, y)
    n, m = len(a), len(b)
    cost = torch.cdist(a, b).pow(p).numpy()  # C_ij = ||x_i - y_j||^p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns and returns a wrong value on failure; we raise instead
        value, log = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost,
                             numItermax=max(10_000_000, 100 * n * m), log=True)
    if log["result_code"] != 1:
        raise RuntimeError(f"wasserstein: exact OT did not reach the optimum ({log['warning']})")
    return float(max(value, 0.0)) ** (1.0 / p)  # W_p = (min <P, C>)^(1/p)


def sliced_wasserstein(x: Tensor, y: Tensor, n_projections: int = 256, p: int = 2,
                       generator: torch.Generator | None = None) -> float:
    """Monte Carlo sliced W_p: SW_p = (E_theta W_p^p(theta^T x, theta^T y))^(1/p), theta uniform on the sphere.

    Each 1D W_p is exact (quantile functions, POT `ot.sliced_wasserstein_distance`), sizes may differ. The
    directions come from `generator` (torch's global RNG if None). SW_p <= W_p; in 1D SW_p = W_p.
    Cost O(n_projections (n log n + m log m)).
    """
    _check_p(p)
    _check_count(n_projections, "n_projections")
    a, b = _flat_pair(x, y)
    theta = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # columns uniform on the unit sphere S^{D-1}
    return float(ot.sliced_wasserstein_distance(a.numpy(), b.numpy(), projections=theta.numpy(), p=p))


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)) -> float:
    """Unbiased estimate of MMD^2 with the kernel k(a, b) = sum_h exp(-||a - b||^2 / (2 h^2)) over h in `bandwidths`.

    MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y), estimated with the off-diagonal means of K_xx and K_yy
    (U-statistics) and the full mean of K_xy. It is 0 in expectation for identical distributions, so the
    estimate can be slightly negative. Bandwidths are in data units; the default suits data of unit scale
    (the 2D toy sets); rescale them for other data. Needs n, m >= 2. Memory O((n + m)^2).
    """
    a, b = _flat_pair(x, y)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"x and y need at least 2 samples each for the unbiased MMD, got {len(a)} and {len(b)}")
    hs = [float(h) for h in np.atleast_1d(np.asarray(bandwidths, dtype=np.float64))]
    if not hs or not all(h > 0 for h in hs):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive numbers, got {bandwidths!r}")

    def kernel(u: Tensor, v: Tensor) -> Tensor:
        d2 = torch.cdist(u, v).pow(2)
        return sum(torch.exp(-d2 / (2 * h**2)) for h in hs)  # k = sum_h exp(-||u - v||^2 / (2 h^2))

    n, m = len(a), len(b)
    kxx = (kernel(a, a).sum() - n * len(hs)) / (n * (n - 1))  # off-diagonal mean; k(x, x) = len(bandwidths)
    kyy = (kernel(b, b).sum() - m * len(hs)) / (m * (m - 1))
    kxy = kernel(a, b).mean()
    return float(kxx + kyy - 2 * kxy)


METRICS: dict[str, Callable[[Tensor, Tensor], float]] = {
    "w1": lambda x, y: wasserstein(x, y, p=1),
    "w2": lambda x, y: wasserstein(x, y, p=2),
    "sw2": lambda x, y: sliced_wasserstein(x, y, p=2, generator=torch.Generator().manual_seed(0)),
    "mmd": mmd,
}


def noise_floor(sample_fn: Callable[..., Tensor], n: int, metric: str = "w2", repeats: int = 3,
                seed: int = 0) -> tuple[float, float]:
    """The metric between two independent data samples of size n: the best score any model can get at that n.

    `sample_fn(n, generator=g)` must return n data points (e.g. functools.partial(sample_toy, "moons")).
    Draws `repeats` pairs from a generator seeded with `seed` and returns (mean, std) over the repeats
    (std with ddof=1, 0.0 for one repeat). Metrics: see METRICS ("w1", "w2", "sw2", "mmd").
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    _check_count(n, "n")
    _check_count(repeats, "repeats")
    g = torch.Generator().manual_seed(seed)
    values = [METRICS[metric](sample_fn(n, generator=g), sample_fn(n, generator=g)) for _ in range(repeats)]
    std = float(np.std(values, ddof=1)) if repeats > 1 else 0.0
    return float(np.mean(values)), std


# --- path geometry ------------------------------------------------------------------------------------

def _states(traj: Trajectory | Tensor, ts: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """xs as float64 [n+1, B, D] and ts [n+1] (a bare tensor gets a uniform grid on [0, 1])."""
    if isinstance(traj, Trajectory):
        xs, ts = traj.xs, traj.ts if ts is None else ts
    else:
        xs = traj
    if xs.ndim < 3 or xs.shape[0] < 2 or xs.shape[1] < 1:
        raise ValueError(f"traj must hold states [n+1, B, ...] with n >= 1 steps and B >= 1, got {tuple(xs.shape)}")
    ts = torch.linspace(0, 1, xs.shape[0], dtype=torch.float64) if ts is None else ts.detach().cpu().double()
    if ts.shape != (xs.shape[0],):
        raise ValueError(f"ts must have shape [{xs.shape[0]}] (one time per state), got {tuple(ts.shape)}")
    if not bool((ts.diff() > 0).all()):
        raise ValueError("ts must be strictly increasing")
    return xs.detach().cpu().double().reshape(xs.shape[0], xs.shape[1], -1), ts


def straightness(traj: Trajectory | Tensor, ts: Tensor | None = None) -> float:
    """Straightness of Liu et al. (2023, rectified flow): S = E_x (1/T) int ||(x_end - x_start) / T - v_t||^2 dt.

    T = t_end - t_start (1 for a full noise -> data solve, giving Liu's int_0^1 E||(X_1 - X_0) - v_t||^2 dt).
    v_t is the finite difference (x_{k+1} - x_k) / (t_{k+1} - t_k) of the trajectory (for Euler steps: the field
    itself). 0 for straight constant-speed paths. `traj` is a Trajectory or states xs [n+1, B, ...]; a bare
    tensor is taken on a uniform grid over [0, 1] unless `ts` is given.
    """
    xs, ts = _states(traj, ts)
    dt = ts.diff()  # [n]
    total = ts[-1] - ts[0]
    v = xs.diff(dim=0) / dt[:, None, None]  # v_k = (x_{k+1} - x_k) / dt_k, [n, B, D]
    chord = (xs[-1] - xs[0]) / total  # constant-speed velocity of the straight path
    err = (chord - v).pow(2).sum(-1).mean(-1)  # E_x ||chord - v_k||^2, [n]
    return float((dt * err).sum() / total)  # (1/T) sum_k dt_k E||...||^2


def path_length_ratio(traj: Trajectory | Tensor) -> float:
    """Mean over particles of (path length) / ||x_end - x_start||: 1 for straight lines, > 1 for curved paths.

    Path length = sum_k ||x_{k+1} - x_k|| along the stored states. A particle whose endpoints coincide
    divides by 1e-12 (its ratio is huge unless it never moved).
    """
    xs, _ = _states(traj)
    length = xs.diff(dim=0).norm(dim=-1).sum(0)  # sum_k ||x_{k+1} - x_k||, [B]
    chord = (xs[-1] - xs[0]).norm(dim=-1)
    return float((length / chord.clamp_min(1e-12)).mean())


def w2_vs_steps(field: Field, x0: Tensor, data: Tensor, steps: Sequence[int], method: str = "euler",
                p: int = 2) -> dict[int, float]:
    """{steps: W_p(solve(field, x0, steps, method), data)}: sample quality against the step budget.

    Integrates from noise x0 at t = 0 to t = 1 for each step count (NFE = steps * evaluations per step).
    """
    _check_p(p)
    steps = list(steps)
    if not steps:
        raise ValueError("steps must be a non-empty sequence of integers >= 1")
    return {int(k): wasserstein(solve(field, x0, steps=k, method=method), data, p=p) for k in steps}
