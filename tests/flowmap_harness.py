"""The Gaussian verification harness for flow-map losses (shared by every flow-map loss test).

On a Gaussian-to-Gaussian problem the exact flow map is affine in x and known in closed form
(fmlab.models.ExactFlowMapModel), so each loss can be checked three ways:

(a) at the exact solution each self-distillation residual is zero, each conditional-target term equals its
    closed-form floor (`velocity_floor`), and the expected parameter update (the gradient of the loss w.r.t.
    the zero-initialised perturbation parameters of ExactFlowMapModel, averaged over a large float64 batch)
    vanishes: `stationarity`, compared with the update at a perturbed model;
(b) a model affine in x (fmlab.models.AffineFlowMapModel), trained from scratch by the loss, approaches the
    exact map: `train_affine` then `flow_map_error` (relative RMS, tolerance stated per loss in its test);
(c) the three consistency identities hold for the exact map of a Gaussian mixture (reference flow map from
    the engine's adaptive solve): `consistency_defects`.

Usage in a loss test:
    spec = get_loss("lsd")
    res = stationarity(spec);             assert res.ratio < 0.05
    diag = exact_diagnostics(spec);       assert diag["distill"] < 1e-20
    model = train_affine(spec, steps=400); assert flow_map_error(model) < 0.1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fmlab.data.gaussian import Gaussian, GaussianMixture, gmm_2d
from fmlab.flowmaps import GaussianMixtureTeacher, flow_map
from fmlab.losses.batch import Batch
from fmlab.losses.registry import LossSpec
from fmlab.models import AffineFlowMapModel, ExactFlowMapModel

F64 = torch.float64
DIM = 2
# (s, t) pairs on which a learned map is compared with the exact one (s < t, spread over the triangle).
EVAL_PAIRS = ((0.0, 1.0), (0.0, 0.5), (0.5, 1.0), (0.2, 0.8), (0.3, 0.45), (0.7, 0.95))


def gaussian_target() -> Gaussian:
    """The test problem: N(m, S) in 2D, anisotropic and correlated (eigenvalues ~0.15 and ~1.35), mean off 0."""
    return Gaussian(torch.tensor([1.0, -0.5]), cov=torch.tensor([[1.2, 0.4], [0.4, 0.3]]))


def mixture_target() -> GaussianMixture:
    """A 2D mixture with unequal weights and correlated covariances (for the consistency identities)."""
    return gmm_2d("asymmetric")


def exact_model(target: Gaussian | None = None, perturbation_degree: int = 2) -> ExactFlowMapModel:
    """The exact flow map of `target` as a float64 two-time model with zero perturbation parameters."""
    return ExactFlowMapModel(target or gaussian_target(), perturbation_degree).double()


def loss_settings(spec: LossSpec, target: GaussianMixture | None = None, **overrides: Any) -> dict[str, Any]:
    """The spec's defaults; a `teacher` setting (distillation) gets the perfect teacher, the exact velocity."""
    target = target or gaussian_target()
    settings = spec.settings(overrides)
    if "teacher" in spec.defaults and overrides.get("teacher") is None:
        settings["teacher"] = GaussianMixtureTeacher(target)
    return settings


def draw_batch(spec: LossSpec, settings: dict[str, Any], n: int, seed: int = 0,
               target: GaussianMixture | None = None, dtype: torch.dtype = F64) -> Batch:
    """Independent coupling: x0 ~ N(0, I), x1 ~ target; then the spec's make_batch draws its times."""
    target = target or gaussian_target()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, target.dim, generator=g, dtype=F64).to(dtype)
    x1 = target.sample(n, generator=g).to(dtype)
    return spec.make_batch(x0, x1, g, **settings)


def evaluate(spec: LossSpec, model: torch.nn.Module, n: int = 4096, seed: int = 0,
             target: Gaussian | None = None, dtype: torch.dtype = F64, **overrides: Any) -> tuple[Tensor, dict]:
    """(loss, diagnostics) of `spec` for `model` on a fresh batch."""
    settings = loss_settings(spec, target, **overrides)
    batch = draw_batch(spec, settings, n, seed, target, dtype)
    return spec.fn(model, batch, **settings)


def exact_diagnostics(spec: LossSpec, n: int = 8192, seed: int = 0, target: Gaussian | None = None,
                      **overrides: Any) -> dict[str, Any]:
    """The loss and its diagnostics at the exact flow map (float64); diag['loss'] is the scalar loss."""
    loss, diag = evaluate(spec, exact_model(target), n, seed, target, **overrides)
    return {**{k: (v.item() if torch.is_tensor(v) and v.numel() == 1 else v) for k, v in diag.items()},
            "loss": loss.item()}


# --- (a) floors and stationarity ---------------------------------------------------------------------------

def velocity_floor(target: GaussianMixture, x: Tensor, t: Tensor) -> Tensor:
    """Per-sample floor of the flow-matching error, E[||(x1 - x0) - v*(x_t, t)||^2 / d | x_t = x]   [B].

    On the linear path x1 - x0 = (x1 - x_t) / (1 - t), so the floor is tr Cov[x1 | x_t] / ((1 - t)^2 d).
    For a Gaussian, tr Cov[x1 | x_t] / (1 - t)^2 = sum_i lam_i / (t^2 lam_i + (1 - t)^2) (finite at t = 1).
    """
    if isinstance(target, Gaussian):
        lam = torch.linalg.eigvalsh(target.covs[0]).to(F64)  # [d]
        t64 = t.to(F64)[:, None]
        return (lam / (t64**2 * lam + (1 - t64) ** 2)).mean(1).to(x.dtype)
    var = target.posterior_variance(x, t)
    return var / ((1 - t).clamp_min(1e-6) ** 2 * target.dim)


def fm_floor(batch: Batch, time: Tensor, mask: Tensor | None = None, target: GaussianMixture | None = None) -> float:
    """Mean velocity floor at x_time = (1 - time) x0 + time x1 over the samples in `mask` (default: all)."""
    target = target or gaussian_target()
    x = (1 - time)[:, None] * batch.x0 + time[:, None] * batch.x1
    floor = velocity_floor(target, x, time)
    return (floor if mask is None else floor[mask]).mean().item()


@dataclass(frozen=True)
class Stationarity:
    """Norms of the expected update at the exact map and at a perturbed one; ratio = exact / perturbed."""

    exact: float
    perturbed: float

    @property
    def ratio(self) -> float:
        return self.exact / max(self.perturbed, 1e-300)


def expected_update(spec: LossSpec, model: ExactFlowMapModel, n: int, seed: int, target: Gaussian,
                    **overrides: Any) -> Tensor:
    """Gradient of the loss w.r.t. the perturbation parameters (dA, db), flattened, on one batch of size n."""
    model.zero_grad(set_to_none=True)
    loss, _ = evaluate(spec, model, n, seed, target, **overrides)
    grads = torch.autograd.grad(loss, [model.backbone.dA, model.backbone.db], allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                      for g, p in zip(grads, (model.backbone.dA, model.backbone.db), strict=True)])


def stationarity(spec: LossSpec, n: int = 16384, seed: int = 0, perturb_scale: float = 0.3,
                 target: Gaussian | None = None, **overrides: Any) -> Stationarity:
    """Expected parameter update at the exact map vs at a perturbed map (same batch; float64).

    At a stationary point the exact update is zero up to Monte-Carlo noise of the conditional terms,
    O(1 / sqrt(n)); the perturbed update is O(perturb_scale). A loss whose fixed point is not the exact
    flow map (wrong stop-gradient, wrong target, wrong weighting of a biased term) shows ratio = O(1).
    """
    target = target or gaussian_target()
    model = exact_model(target)
    g_exact = expected_update(spec, model, n, seed, target, **overrides)
    model.perturb(perturb_scale, torch.Generator().manual_seed(seed + 1))
    g_pert = expected_update(spec, model, n, seed, target, **overrides)
    return Stationarity(exact=g_exact.norm().item(), perturbed=g_pert.norm().item())


# --- (b) convergence of an affine model --------------------------------------------------------------------

def train_affine(spec: LossSpec, steps: int = 400, batch_size: int = 256, lr: float = 2e-2, seed: int = 0,
                 target: Gaussian | None = None, hidden: int = 64, dtype: torch.dtype = torch.float32,
                 **overrides: Any) -> AffineFlowMapModel:
    """Train AffineFlowMapModel from scratch with `spec` (Adam, cosine-decayed lr) on independent pairs."""
    target = target or gaussian_target()
    torch.set_num_threads(1)  # tiny 2D problem: threads only contend on a shared CPU
    torch.manual_seed(seed)
    model = AffineFlowMapModel(target.dim, hidden=hidden).to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    settings = loss_settings(spec, target, **overrides)
    for i in range(steps):
        batch = draw_batch(spec, settings, batch_size, seed=seed * 100_003 + i, target=target, dtype=dtype)
        loss, _ = spec.fn(model, batch, **settings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


@torch.no_grad()
def flow_map_error(model: torch.nn.Module, target: Gaussian | None = None, pairs=EVAL_PAIRS, n: int = 2048,
                   seed: int = 123) -> float:
    """Relative RMS error of X(x, s, t) against the exact map, x ~ p_s, pooled over `pairs`:

        sqrt( sum ||X_model - X_exact||^2 / sum ||X_exact - x||^2 ).
    """
    target = target or gaussian_target()
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    num = den = 0.0
    for s, t in pairs:
        x0 = torch.randn(n, target.dim, generator=g, dtype=F64)
        x1 = target.sample(n, generator=g).to(F64)
        x = ((1 - s) * x0 + s * x1).to(dtype)  # x ~ p_s
        exact = target.flow_map_exact(x.to(F64), s, t)
        num += (flow_map(model, x, s, t).to(F64) - exact).pow(2).sum().item()
        den += (exact - x.to(F64)).pow(2).sum().item()
    return math.sqrt(num / den)


@torch.no_grad()
def velocity_error(model: torch.nn.Module, target: Gaussian | None = None, times=(0.1, 0.3, 0.5, 0.7, 0.9),
                   n: int = 2048, seed: int = 321) -> float:
    """Relative RMS error of the diagonal u(x, t, t) against the exact velocity, x ~ p_t, pooled over times."""
    target = target or gaussian_target()
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    num = den = 0.0
    for t in times:
        x0 = torch.randn(n, target.dim, generator=g, dtype=F64)
        x = ((1 - t) * x0 + t * target.sample(n, generator=g).to(F64)).to(dtype)
        tt = torch.full((n,), t, dtype=dtype)
        v = target.velocity(x.to(F64), t)
        num += (model(x, tt, tt).to(F64) - v).pow(2).sum().item()
        den += v.pow(2).sum().item()
    return math.sqrt(num / den)


# --- (c) the three consistency identities ------------------------------------------------------------------

FlowMapFn = Callable[[Tensor, Tensor | float, Tensor | float], Tensor]
FieldFn = Callable[[Tensor, Tensor | float], Tensor]
FlowMapTimesFn = Callable[[Tensor, float, list[float]], Tensor]  # (x, s, [t_1..t_k]) -> [k, B, d]


def _d5(values: list[Tensor], h: float) -> Tensor:
    """Five-point central difference f'(0) from f(-2h), f(-h), f(h), f(2h): error O(h^4)."""
    m2, m1, p1, p2 = values
    return (-p2 + 8 * p1 - 8 * m1 + m2) / (12 * h)


def consistency_defects(X: FlowMapFn, v: FieldFn, x: Tensor, s: float, r: float, t: float, h: float = 3e-3,
                        X_times: FlowMapTimesFn | None = None) -> dict[str, float]:
    """Max-abs defects of the three consistency rules at points x (at time s), s < r < t:

        compositional  X(X(x, s, r), r, t) - X(x, s, t)
        Lagrangian     d/dt X(x, s, t) - v(X(x, s, t), t)
        Eulerian       d/ds X(x, s, t) + (dX/dx)(x, s, t) v(x, s)     (dX/dx v: derivative along x + e v(x, s))

    Derivatives are five-point central differences with step h (error O(h^4)); `X_times(x, s, ts)`, if given,
    evaluates X(x, s, t') at several end times in one call (one ODE solve with dense output). With a reference
    map solved to ~1e-9 the exact map's defects are ~1e-5 or less; a wrong map (or a wrong sign) gives O(1e-2+).
    """
    if not (2 * h < s < r < t < 1 - 2 * h):
        raise ValueError(f"need 2h < s < r < t < 1 - 2h, got s={s}, r={r}, t={t}, h={h}")
    offsets = (-2 * h, -h, h, 2 * h)
    vx = v(x, s)
    n = len(x)
    moved = X(torch.cat([x] + [x + e * vx for e in offsets]), s, t)  # X(x + e v(x, s), s, t) in one call
    X_st, along_v = moved[:n], [moved[(i + 1) * n:(i + 2) * n] for i in range(4)]
    comp = X(X(x, s, r), r, t) - X_st
    if X_times is not None:
        later = list(X_times(x, s, [t + e for e in offsets]))
    else:
        later = [X(x, s, t + e) for e in offsets]
    lag = _d5(later, h) - v(X_st, t)
    eul = _d5([X(x, s + e, t) for e in offsets], h) + _d5(along_v, h)
    return {name: d.abs().max().item() for name, d in (("compositional", comp), ("lagrangian", lag),
                                                        ("eulerian", eul))}


def mixture_reference(target: GaussianMixture | None = None,
                      tol: float = 1e-9) -> tuple[FlowMapFn, FieldFn, FlowMapTimesFn]:
    """(X, v, X_times) of a Gaussian mixture: the reference flow map (the engine's adaptive DOP853 solve,
    GaussianMixture.flow_map), the exact velocity, and X at several end times from one solve."""
    from fmlab.solvers import solve_adaptive

    target = target or mixture_target()

    def X(x: Tensor, s: Tensor | float, t: Tensor | float) -> Tensor:
        return target.flow_map(x, s, t, rtol=tol, atol=tol)

    def v(x: Tensor, t: Tensor | float) -> Tensor:
        return target.velocity(x, t)

    def X_times(x: Tensor, s: float, ts: list[float]) -> Tensor:
        return solve_adaptive(v, x, s, max(ts), tol, tol, t_eval=sorted(ts))

    return X, v, X_times


# --- the contract every flow-map loss meets ----------------------------------------------------------------

DOC_KEYWORDS = ("stop-gradient", "weight", "fraction", "ours")


def check_contract(spec: LossSpec, n: int = 64) -> dict[str, Any]:
    """A registered flow-map loss: docstring states stop-gradient, weighting, diagonal fraction and our convention;
    diagnostics count passes; the loss is a finite scalar and a deterministic function of its batch."""
    doc = (spec.fn.__doc__ or "").lower()
    missing = [k for k in DOC_KEYWORDS if k not in doc]
    assert not missing, f"{spec.name}: docstring lacks {missing}"
    assert spec.time_inputs == 2 and spec.paper and spec.convention and spec.family and spec.setting
    model = AffineFlowMapModel(DIM).double()
    torch.nn.init.normal_(model.backbone.net[-1].weight, std=0.1)
    loss1, diag = evaluate(spec, model, n=n, seed=5)
    loss2, _ = evaluate(spec, model, n=n, seed=5)
    assert loss1.ndim == 0 and torch.isfinite(loss1), f"{spec.name}: loss {loss1}"
    assert loss1.item() == loss2.item(), f"{spec.name}: not deterministic given its batch"
    for key in ("n_forward", "n_jvp", "n_backward"):
        assert key in diag, f"{spec.name}: diagnostics lack {key}"
    return diag
