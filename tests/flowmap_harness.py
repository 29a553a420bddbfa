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
from fmlab.models import AffineFlowMapModel, ExactFlowMapModel, FlowMapModel

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


# --- (d) stationarity of the update field on a Gaussian mixture ----------------------------------------------
#
# On a Gaussian the flow map is affine and a conditional target has a symmetric (Gaussian) noise, so a loss whose
# update is biased only where the target is multimodal (an adaptive weight correlated with the noise, a cosine or a
# clip of a noisy residual) still looks stationary there. On a mixture the exact map is not available in closed
# form, so the "model" below integrates the closed-form velocity with fixed-step RK4 (differentiable in x, s and t)
# and adds a zero-initialised perturbation; the expected update w.r.t. the perturbation coefficients must vanish
# up to a Monte-Carlo error that is estimated from the per-chunk spread of the gradient.

def stationarity_mixture() -> GaussianMixture:
    """The test mixture: two isotropic components, unequal weights 0.65 / 0.35, means (-1.5, -0.3) and (1.5, 0.6),
    standard deviations 0.45 and 0.6. The modes overlap under the noise for t < ~0.6, so the conditional velocity
    x1 - x0 given x_t is bimodal there: where a mode-seeking weighting moves the fixed point."""
    return GaussianMixture(torch.tensor([[-1.5, -0.3], [1.5, 0.6]], dtype=F64), stds=torch.tensor([0.45, 0.6]),
                           weights=torch.tensor([0.65, 0.35]))


def isotropic_mixture_velocity(target: GaussianMixture, x: Tensor, t: Tensor, dx: Tensor | None = None,
                               dt: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """The marginal velocity of an isotropic mixture on the linear path in plain operations, valid slightly outside
    [0, 1] (no time check; the finite-difference losses step past t = 1), and, given tangents (dx, dt), also its
    directional derivative dv (hand-derived forward mode; torch's forward mode is slow here):

        v(x, t) = sum_k pi_k v_k,   v_k = mu_k + g_k z_k,   z_k = x - t mu_k,   g_k = (t lam_k - (1 - t)) / c_k,
        c_k = t^2 lam_k + (1 - t)^2,   pi = softmax_k(log w_k - |z_k|^2 / (2 c_k) - (d / 2) log c_k).

    (GaussianMixture.velocity is the engine's version, checked equal in the test, as is dv against autograd.)"""
    if target.q is not None or target.lam.shape[-1] != 1:
        raise ValueError("isotropic_mixture_velocity needs an isotropic mixture (GaussianMixture(..., stds=[K]))")
    mu, lam, log_w = target.means, target.lam[:, 0], target.log_weights  # [K, d], [K], [K] (float64)
    a = t.reshape(-1, 1)  # [B, 1]
    c = a * a * lam + (1 - a) ** 2  # [B, K]
    z = x[:, None, :] - a[:, :, None] * mu  # x - t mu_k, [B, K, d]
    z2 = (z * z).sum(-1)
    pi = torch.softmax(log_w - 0.5 * (z2 / c + x.shape[1] * torch.log(c)), dim=1)
    g = (a * lam - (1 - a)) / c
    v_k = mu + g[..., None] * z
    v = (pi[..., None] * v_k).sum(1)
    if dx is None:
        return v
    da = dt.reshape(-1, 1)
    dc = 2 * (a * lam - (1 - a)) * da  # d c_k
    dz = dx[:, None, :] - da[:, :, None] * mu
    dg = ((lam + 1) * da - g * dc) / c
    dlogit = -(z * dz).sum(-1) / c + 0.5 * z2 * dc / c**2 - 0.5 * x.shape[1] * dc / c
    dpi = pi * (dlogit - (pi * dlogit).sum(1, keepdim=True))
    dv_k = dg[..., None] * z + g[..., None] * dz
    return v, (dpi[..., None] * v_k + pi[..., None] * dv_k).sum(1)


def rk4_average_velocity(field: Callable[..., Any], x: Tensor, s: Tensor, t: Tensor, steps: int,
                         tangents: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """(X(x, s, t) - x) / (t - s) for the ODE dx/dr = field(x, r), by `steps` RK4 steps, written as the mean of the
    steps' stage averages (k1 + 2 k2 + 2 k3 + k4) / 6: no division by t - s, smooth across s = t, equal to
    field(x, s) there; backward jumps (t < s) work the same. With `tangents` (dx, ds, dt) it also propagates the
    directional derivative through every stage, field(y, r, dy, dr) -> (v, dv), and returns (u, du)."""
    h = ((t - s) / steps).reshape(-1, 1)
    if tangents is None:
        y, r, total = x, s, torch.zeros_like(x)
        for _ in range(steps):
            k1 = field(y, r)
            k2 = field(y + 0.5 * h * k1, r + 0.5 * h[:, 0])
            k3 = field(y + 0.5 * h * k2, r + 0.5 * h[:, 0])
            k4 = field(y + h * k3, r + h[:, 0])
            incr = (k1 + 2 * k2 + 2 * k3 + k4) / 6  # the step's average velocity
            y, r, total = y + h * incr, r + h[:, 0], total + incr
        return total / steps
    dx, ds, dt = tangents
    dh = ((dt - ds) / steps).reshape(-1, 1)
    y, dy, r, dr = x, dx, s, ds
    total, dtotal = torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(steps):
        k1, dk1 = field(y, r, dy, dr)
        k2, dk2 = field(y + 0.5 * h * k1, r + 0.5 * h[:, 0], dy + 0.5 * (dh * k1 + h * dk1), dr + 0.5 * dh[:, 0])
        k3, dk3 = field(y + 0.5 * h * k2, r + 0.5 * h[:, 0], dy + 0.5 * (dh * k2 + h * dk2), dr + 0.5 * dh[:, 0])
        k4, dk4 = field(y + h * k3, r + h[:, 0], dy + dh * k3 + h * dk3, dr + dh[:, 0])
        incr, dincr = (k1 + 2 * k2 + 2 * k3 + k4) / 6, (dk1 + 2 * dk2 + 2 * dk3 + dk4) / 6
        y, dy = y + h * incr, dy + dh * incr + h * dincr
        r, dr = r + h[:, 0], dr + dh[:, 0]
        total, dtotal = total + incr, dtotal + dincr
    return total / steps, dtotal / steps


class _ExactAverageVelocity(torch.autograd.Function):
    """u*(x, s, t) = fn(x, s, t) with a hand-written forward mode.

    torch's forward-mode AD costs about a millisecond per operation here (it runs Python decompositions), and the
    RK4 solve has about a thousand, so torch.func.jvp of the plain solve takes seconds. Under torch.func.jvp this
    Function returns the tangent fn(x, s, t, tangents) computes (the same RK4 with the tangent propagated in plain
    operations), which
    stays differentiable in reverse mode through the inputs and the tangents; reverse mode through the output is
    torch.func.vjp of fn. Both are checked against a plain solve in tests/losses/test_losses_mixture_stationarity.py."""

    @staticmethod
    def forward(fn: Callable[..., Any], x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        return fn(x, s, t)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.fn = inputs[0]
        ctx.save_for_backward(*inputs[1:])
        ctx.save_for_forward(*inputs[1:])

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple:
        _, pullback = torch.func.vjp(ctx.fn, *ctx.saved_tensors)
        return (None, *pullback(grad_out))

    @staticmethod
    def jvp(ctx: Any, _: Any, dx: Tensor, ds: Tensor, dt: Tensor) -> Tensor:
        x, s, t = ctx.saved_tensors
        zero = lambda d, like: torch.zeros_like(like) if d is None else d  # noqa: E731
        return ctx.fn(x, s, t, (zero(dx, x), zero(ds, s), zero(dt, t)))[1]


class MixtureAverageVelocity(torch.nn.Module):
    """u(x, s, t) = u*(x, s, t) + sum_{a, b, j} eps[a, b, j] tau_a(s, t) f_b(x) e_j, with u* the RK4 average
    velocity of the mixture's exact velocity, tau = (1, s, t), f = (1, x_1, x_2) and e_j the unit vectors:
    18 perturbation coefficients eps (an nn.Parameter, zero: the exact map). `fast_jvp=False` runs the solve
    through torch's forward mode directly (slow; the reference for _ExactAverageVelocity)."""

    def __init__(self, target: GaussianMixture, steps: int = 16, fast_jvp: bool = True):
        super().__init__()
        if target.dim != 2:
            raise ValueError(f"the perturbation basis is written for d = 2, got d = {target.dim}")
        self.target, self.steps, self.fast_jvp = target, steps, fast_jvp
        self.eps = torch.nn.Parameter(torch.zeros(3, 3, 2, dtype=F64))

    def exact(self, x: Tensor, s: Tensor, t: Tensor, tangents: tuple[Tensor, Tensor, Tensor] | None = None) -> Any:
        """u*(x, s, t) by RK4 on the closed-form velocity (and its directional derivative along `tangents`)."""
        field = lambda *a: isotropic_mixture_velocity(self.target, *a)  # noqa: E731
        return rk4_average_velocity(field, x, s, t, self.steps, tangents)

    def forward(self, x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        s, t = (torch.as_tensor(r, dtype=x.dtype).expand(len(x)) for r in (s, t))  # floats or [B]
        u = _ExactAverageVelocity.apply(self.exact, x, s, t) if self.fast_jvp else self.exact(x, s, t)
        tau = torch.stack([torch.ones_like(s), s, t], dim=1)  # [B, 3]
        f = torch.cat([torch.ones_like(x[:, :1]), x], dim=1)  # [B, 3]
        return u + torch.einsum("ba,bc,acj->bj", tau, f, self.eps)


class MixtureFlowMapModel(FlowMapModel):
    """The exact flow map of an isotropic Gaussian mixture (RK4, `steps` steps) as a float64 two-time model, with
    the 18 zero-initialised perturbation coefficients of MixtureAverageVelocity (`.eps`)."""

    def __init__(self, target: GaussianMixture | None = None, steps: int = 16, fast_jvp: bool = True):
        super().__init__(MixtureAverageVelocity(target or stationarity_mixture(), steps, fast_jvp))

    @property
    def eps(self) -> torch.nn.Parameter:
        return self.backbone.eps


@dataclass(frozen=True)
class UpdateField:
    """The expected update d loss / d eps at eps = 0, estimated from `chunks` equal chunks of one batch:
    mean [P] and its standard error se [P] (spread of the chunk gradients / sqrt(chunks)); `scale` is the norm of
    the update at a perturbed model (eps ~ 0.1 N(0, 1)); a numerical floor rel_floor * scale / sqrt(P) is added to
    the standard error (RK4 and finite-difference errors of a noise-free loss)."""

    mean: Tensor
    se: Tensor
    scale: float
    rel_floor: float = 1e-4

    @property
    def z(self) -> Tensor:
        floor = self.rel_floor * self.scale / math.sqrt(self.mean.numel())
        return self.mean.abs() / torch.sqrt(self.se**2 + floor**2)

    @property
    def max_z(self) -> float:
        return self.z.max().item()

    @property
    def relative(self) -> float:
        """|mean| / scale: the size of the update at the exact map against that at a perturbed one."""
        return self.mean.norm().item() / max(self.scale, 1e-300)

    def __str__(self) -> str:
        return f"max |mean| / SE = {self.max_z:.2f}, |mean| / scale = {self.relative:.2e}"


def _rows(batch: Batch, idx: slice) -> Batch:
    pick = lambda v: None if v is None else v[idx]  # noqa: E731
    return Batch(x0=batch.x0[idx], x1=batch.x1[idx], t=batch.t[idx], s=pick(batch.s), r=pick(batch.r),
                 z=pick(batch.z), labels=pick(batch.labels))


def mixture_update_field(spec: LossSpec, settings: dict[str, Any] | None = None, n: int = 2048, chunks: int = 32,
                         seed: int = 0, model: MixtureFlowMapModel | None = None,
                         target: GaussianMixture | None = None, rel_floor: float = 1e-4) -> UpdateField:
    """The expected update of `spec` (with `settings`: the spec's defaults merged with these; pass a teacher
    explicitly) at the exact mixture map, per chunk of one batch of n independent pairs (x0 ~ N(0, I), x1 ~ the
    mixture), and its scale at a perturbed model (one chunk)."""
    target = target or stationarity_mixture()
    model = model or MixtureFlowMapModel(target)
    settings = spec.settings(settings)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, target.dim, generator=g, dtype=F64)
    x1 = target.sample(n, generator=g).to(F64)
    batch = spec.make_batch(x0, x1, g, **settings)
    size = n // chunks

    def grad(rows: Batch) -> Tensor:
        loss, _ = spec.fn(model, rows, **settings)
        return torch.autograd.grad(loss, model.eps)[0].flatten()

    with torch.no_grad():
        model.eps.zero_()
    grads = torch.stack([grad(_rows(batch, slice(i * size, (i + 1) * size))) for i in range(chunks)])
    with torch.no_grad():
        model.eps.copy_(0.1 * torch.randn(model.eps.shape, generator=torch.Generator().manual_seed(seed + 1),
                                          dtype=F64))
    scale = grad(_rows(batch, slice(0, size))).norm().item()
    with torch.no_grad():
        model.eps.zero_()
    return UpdateField(mean=grads.mean(0), se=grads.std(0) / math.sqrt(chunks), scale=scale, rel_floor=rel_floor)
