"""Training-time diagnostics for unrolled flow matching: the terminal (L-step) loss of an unrolled window split into
single-step terms and cross-terms, the same split of its gradient network call by network call, gradient norms by
noise level, the cross-term gradient variance against the window length, and the transition Jacobians of the
velocity and x1 parametrisations.

Convention (fmlab.conventions): t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1, u = x1 - x0. A window of L
Euler steps of size dt runs forward from a true path point x_{t0} through the model's own states z_k (see
`fmlab.losses.unrolled`):

    z_0 = x_{t0},   z_{k+1} = z_k + dt vhat_k,    e_k = vhat_k - u,    ||z_L - x_{t0 + L dt}||^2 = dt^2 ||sum_k e_k||^2.

"Near the data" means t close to 1 (the manuscript's t close to 0).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .checks import check_int
from .couplings import couple
from .losses.batch import Batch
from .losses.registry import LossSpec, get_loss
from .losses.unrolled import (
    WTFM_VARIANTS,
    check_window,
    error_terms,
    head_velocity,
    unroll_batch,
    unroll_window,
    wtfm_loss,
)

__all__ = [
    "KStepDecomposition", "kstep_decomposition", "per_call_gradients", "WindowGradients", "wtfm_gradient_split",
    "variant_gradients", "grad_norm", "grad_norms_at_levels", "GradNormTracker",
    "DEFAULT_LEVELS", "CrossTermVariance", "cross_term_grad_variance", "posterior_variance_power",
    "TransitionJacobians", "transition_jacobians",
]


DEFAULT_LEVELS = (0.1, 0.4, 0.7, 0.9)  # noise levels t (0.9 is near the data: the manuscript's t = 0.1)
Level = float | tuple[float, float]
SampleFn = Callable[[int, torch.Generator], Tensor]


# --- the terminal loss: single-step terms and cross-terms ----------------------------------------------------------

@dataclass(frozen=True)
class KStepDecomposition:
    """terminal = mean_b ||z_L - x_{t0 + L dt}||^2 / d and its exact split (all batch means, divided by d):
    single [L] = dt^2 ||e_k||^2, cross [L, L] = dt^2 e_i . e_j (i != j, zero diagonal)."""

    window: int
    dt: float
    terminal: Tensor
    single: Tensor
    cross: Tensor

    @property
    def single_total(self) -> Tensor:
        return self.single.sum()

    @property
    def cross_total(self) -> Tensor:
        return self.cross.sum()

    @property
    def total(self) -> Tensor:
        """single_total + cross_total, which equals `terminal` (the expansion of ||dt sum_k e_k||^2)."""
        return self.single_total + self.cross_total


@torch.no_grad()
def kstep_decomposition(model: nn.Module, batch: Batch, window: int, steps: int) -> KStepDecomposition:
    """Measure the terminal loss (the manuscript's k-step loss, k = L) of a window on a batch (batch.t = window
    starts t0) and split it into the single-step terms dt^2 ||e_k||^2 and the cross-terms dt^2 e_i . e_j."""
    win, u = unroll_batch(model, batch, window, steps)
    dt = 1.0 / steps
    x_end = (1 - (batch.t + window * dt))[:, None] * batch.x0 + (batch.t + window * dt)[:, None] * batch.x1
    terminal = (win.xs[-1] - x_end).pow(2).flatten(1).mean(1).mean()
    single, cross = error_terms(win.vs - u, dt)
    return KStepDecomposition(window=window, dt=dt, terminal=terminal, single=single, cross=cross)


# --- the terminal loss's gradient, call by call: single-step part and cross-terms -------------------------------

class _Predict(nn.Module):
    """model.predict as a module's forward (so that torch.func.functional_call can run it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model.predict(x, t)


class _PerCall(nn.Module):
    """Runs `model` with a fresh leaf copy of its parameters at every call, so that d loss / d copy_k is the part of
    d loss / d theta that flows through network call k (the sum over k is the whole gradient).

    functional_call swaps a module's parameters for the duration of a call, so it runs on a private deep copy of
    `model`: the caller's module is never touched, and per-call gradients computed on one model from two threads
    (a widget's background render beside a notebook cell) cannot see each other's parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        private = copy.deepcopy(model)
        self.inner, self.predictor = private, _Predict(private)
        self.prediction = getattr(model, "prediction", "velocity")
        self.names = [name for name, _ in model.named_parameters()]
        self.copies: list[list[Tensor]] = []

    def _copy(self) -> list[Tensor]:
        params = [p.detach().clone().requires_grad_(True) for p in self.inner.parameters()]
        self.copies.append(params)
        return params

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.func.functional_call(self.inner, dict(zip(self.names, self._copy(), strict=True)), (x, t))

    def predict(self, x: Tensor, t: Tensor) -> Tensor:
        named = {"model." + n: p for n, p in zip(self.names, self._copy(), strict=True)}
        return torch.func.functional_call(self.predictor, named, (x, t))


def per_call_gradients(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor]) -> Tensor:
    """[calls, P]: row k is the gradient of loss_fn(model) with respect to the parameters as used by the k-th network
    call (flattened in model.parameters() order); the rows sum to d loss / d theta. A call made without a graph
    (under no_grad, e.g. a detached teacher) gets a zero row. The model itself is never called, swapped or changed
    (its parameters and .grad are untouched; the calls run on a private copy), so this is safe beside other threads
    that use the model."""
    wrapped = _PerCall(model)
    value = loss_fn(wrapped)
    if not wrapped.copies:
        raise ValueError("loss_fn never called the model")
    leaves = [p for params in wrapped.copies for p in params]
    grads = torch.autograd.grad(value, leaves, allow_unused=True) if value.requires_grad else [None] * len(leaves)
    flat = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads, strict=True)]
    n = len(wrapped.names)
    return torch.stack([torch.cat([g.flatten() for g in flat[k * n:(k + 1) * n]]) for k in range(len(wrapped.copies))])


@dataclass(frozen=True)
class WindowGradients:
    """The gradient of the WT-FM loss split, network call by network call, into its two parts:
    single [L, P] = d (dt^2 sum_k ||e_k||^2 / d) / d theta_k and cross [L, P] = d (dt^2 sum_{i != j} e_i . e_j / d)
    / d theta_k (both / (L dt)^2, as in the loss), theta_k the parameters as used by call k (`per_call_gradients`).

    With detach=True, call k's single part is (2 / L^2) J_k^T e_k and its cross part (2 / L^2) J_k^T sum_{j != k} e_j
    (J_k = d vhat_k / d theta, per coordinate and batch mean): detaching the states leaves the cross-terms in.
    """

    window: int
    steps: int
    detach: bool
    cross_terms: bool
    single: Tensor
    cross: Tensor

    @property
    def total(self) -> Tensor:
        """d loss / d theta [P] (the sum over calls of both parts)."""
        return (self.single + self.cross).sum(0)

    @property
    def per_call(self) -> Tensor:
        """[L]: the norm of the gradient that flows through each call."""
        return (self.single + self.cross).norm(dim=1)

    @property
    def cross_share(self) -> float:
        """The cross-terms' share of the gradient: <g_cross, g> / ||g||^2 with g = g_single + g_cross, so that the
        single-step share is 1 minus it (0 when the gradient is 0)."""
        g = self.total
        norm2 = float(g.pow(2).sum())
        return float(self.cross.sum(0) @ g) / norm2 if norm2 > 0 else 0.0


def wtfm_gradient_split(model: nn.Module, batch: Batch, window: int, steps: int, detach: bool = False,
                        cross_terms: bool = True) -> WindowGradients:
    """Split the gradient of `fmlab.losses.unrolled.wtfm_loss` (same settings) into its single-step part and its
    cross-terms, for every network call of the window. cross_terms=False: the cross part is zero."""
    def loss(terms: bool) -> Callable[[nn.Module], Tensor]:
        return lambda m: wtfm_loss(m, batch, window=window, steps=steps, detach=detach, cross_terms=terms)[0]

    single = per_call_gradients(model, loss(False))
    has_cross = cross_terms and window > 1  # a window of one step has no cross-terms
    cross = per_call_gradients(model, loss(True)) - single if has_cross else torch.zeros_like(single)
    return WindowGradients(window=window, steps=steps, detach=detach, cross_terms=cross_terms, single=single,
                           cross=cross)


def variant_gradients(model: nn.Module, batch: Batch, window: int, steps: int,
                      variants: Mapping[str, Mapping[str, bool]] | None = None) -> dict[str, dict[str, float]]:
    """The three gradients of the WT-FM loss side by side (default `fmlab.losses.unrolled.WTFM_VARIANTS`: full BPTT,
    states detached, cross-terms dropped): for each, the loss value, ||g||, the cross-terms' share of g
    (`WindowGradients.cross_share`) and the cosine between g and the full-BPTT gradient."""
    variants = dict(WTFM_VARIANTS if variants is None else variants)
    splits = {name: wtfm_gradient_split(model, batch, window, steps, **settings) for name, settings in variants.items()}
    reference = wtfm_gradient_split(model, batch, window, steps, detach=False).total
    out = {}
    for name, split in splits.items():
        g = split.total
        with torch.no_grad():
            value, _ = wtfm_loss(model, batch, window=window, steps=steps, detach=split.detach,
                                 cross_terms=split.cross_terms)
        cosine = float(torch.nn.functional.cosine_similarity(g, reference, dim=0))
        out[name] = {"loss": float(value), "grad_norm": float(g.norm()), "cross_share": split.cross_share,
                     "cosine_to_bptt": cosine}
    return out


# --- gradient norms by noise level -------------------------------------------------------------------------------

def _params(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad")
    return params


def grad_norm(model: nn.Module, loss: Tensor) -> float:
    """||d loss / d theta||_2 over all trainable parameters (leaves every .grad untouched)."""
    params = _params(model)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return float(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))


def _spec(loss: str | LossSpec) -> LossSpec:
    return get_loss(loss) if isinstance(loss, str) else loss


def _max_start(settings: dict) -> float:
    """Latest time a batch may start at: 1 - L dt for window losses, 1 otherwise."""
    if "window" in settings and "steps" in settings:
        check_window(settings["window"], settings["steps"])
        return 1.0 - settings["window"] / settings["steps"]
    return 1.0


def _level_times(level: Level, n: int, generator: torch.Generator | None, like: Tensor, t_max: float) -> Tensor:
    """A fixed time t, or a bucket (lo, hi) sampled uniformly, as [n] times clamped to [0, t_max]."""
    if isinstance(level, (tuple, list)):
        lo, hi = (float(v) for v in level)
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"a bucket level must be (lo, hi) with 0 <= lo < hi <= 1, got {level}")
        t = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=like.dtype).to(like.device)
    else:
        if not 0 <= float(level) <= 1:
            raise ValueError(f"a level must be a time in [0, 1] or a bucket (lo, hi), got {level}")
        t = torch.full((n,), float(level), dtype=like.dtype, device=like.device)
    return t.clamp(0.0, t_max)


def grad_norms_at_levels(model: nn.Module, loss: str | LossSpec, x0: Tensor, x1: Tensor,
                         levels: Sequence[Level] = DEFAULT_LEVELS, settings: dict | None = None,
                         generator: torch.Generator | None = None) -> Tensor:
    """Gradient norm ||d L / d theta|| of a registered loss on the minibatch (x0, x1) with every time set to one
    noise level, for each level: [len(levels)].

    A level is a time t or a bucket (lo, hi) (times uniform inside it). Window losses get their start t0 = level,
    clamped to 1 - L dt so that the window fits. Works for any loss whose batch time is `t` and any head.
    """
    spec = _spec(loss)
    settings = spec.settings(settings)
    batch = spec.make_batch(x0, x1, generator, **settings)
    t_max = _max_start(settings)
    norms = []
    for level in levels:
        b = dataclasses.replace(batch, t=_level_times(level, len(x1), generator, x1, t_max))
        value, _ = spec.fn(model, b, **settings)
        norms.append(grad_norm(model, value))
    return torch.tensor(norms)


class GradNormTracker:
    """Record the gradient norm of a loss at fixed noise levels while a model trains (the manuscript's figure:
    gradient norm against training step at four noise levels).

    Each `measure(model, step)` draws a fresh minibatch (x0 ~ N(0, I), x1 = sample_x1(n, g)) from the tracker's own
    seeded generator, so tracking does not disturb the training RNG. `steps` and `norms` [n_measurements, levels]
    hold the history; call it from a trainer callback every few steps.
    """

    def __init__(self, loss: str | LossSpec, sample_x1: SampleFn, levels: Sequence[Level] = DEFAULT_LEVELS,
                 batch_size: int = 256, settings: dict | None = None, seed: int = 0):
        check_int(batch_size, "batch_size", 1)
        self.spec, self.sample_x1 = _spec(loss), sample_x1
        self.levels, self.batch_size = list(levels), batch_size
        self.settings = self.spec.settings(settings)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps: list[int] = []
        self._norms: list[Tensor] = []

    def measure(self, model: nn.Module, step: int) -> Tensor:
        device = next(model.parameters()).device
        x1 = self.sample_x1(self.batch_size, self.generator)
        x0 = torch.randn(x1.shape, generator=self.generator, dtype=x1.dtype)
        norms = grad_norms_at_levels(model, self.spec, x0.to(device), x1.to(device), self.levels, self.settings,
                                     self.generator)
        self.steps.append(int(step))
        self._norms.append(norms)
        return norms

    @property
    def norms(self) -> Tensor:
        return torch.stack(self._norms) if self._norms else torch.empty(0, len(self.levels))


# --- cross-term gradient variance against the window length ------------------------------------------------------

@dataclass(frozen=True)
class CrossTermVariance:
    """variance[i]: trace of the covariance across minibatches of the cross-term gradient for window windows[i];
    mean_norm[i]: the norm of its mean (the signal); t0: the window start."""

    windows: list[int]
    variance: Tensor
    mean_norm: Tensor
    t0: float
    steps: int
    coupling: str


def _cross_term(model: nn.Module, batch: Batch, window: int, steps: int, normalise: bool, detach: bool) -> Tensor:
    """dt^2 sum_{i != j} mean_b e_i . e_j / d with graph (full BPTT unless detach), / (L dt)^2 if normalise."""
    win, u = unroll_batch(model, batch, window, steps, detach=detach)
    e = (win.vs - u).flatten(2)  # [L, B, D]
    total = e.sum(0)  # sum_k e_k
    cross = (total.pow(2).sum(-1) - e.pow(2).sum(-1).sum(0)).mean() / e.shape[2]  # ||sum e||^2 - sum ||e||^2
    dt = 1.0 / steps
    return cross / window**2 if normalise else dt**2 * cross  # (dt^2 cross) / (L dt)^2 = cross / L^2


def cross_term_grad_variance(model: nn.Module, sample_x1: SampleFn, windows: Sequence[int] = (1, 2, 4, 8),
                             steps: int = 16, t0: float = 0.25, n_batches: int = 32, batch_size: int = 64,
                             coupling: str = "independent", normalise: bool = True, detach: bool = False,
                             seed: int = 0) -> CrossTermVariance:
    """Estimate Var_minibatch[grad_theta C_L] for each window length L, C_L the cross-term part of the terminal loss.

    The same n_batches minibatches (x0, x1, coupled by `coupling`) serve every L (common random numbers); every
    window starts at t0 (so that Var(x1 | x_t0) is one number per target, see `posterior_variance_power`).
    normalise=True measures the cross-terms as they enter the WT-FM loss, divided by (L dt)^2; False gives the raw
    dt^2 sum_{i != j} e_i . e_j, whose variance is the normalised one times (L dt)^4 (16 times more growth per
    doubling of L): quote growth with L together with the normalisation.
    variance = (1 / (n - 1)) sum_b ||g_b - g_mean||^2 (trace of the covariance). L = 1 has no cross-terms: 0.
    """
    windows = [int(w) for w in windows]
    for w in windows:
        check_window(w, steps)
    if not 0 <= t0 <= 1 - max(windows) / steps:
        raise ValueError(f"t0 must lie in [0, 1 - max(windows) / steps] = [0, {1 - max(windows) / steps:.4g}], "
                         f"got {t0}")
    check_int(n_batches, "n_batches (two at least, for a variance)", 2)
    g = torch.Generator().manual_seed(seed)
    params = _params(model)
    device = params[0].device
    batches = []
    for _ in range(n_batches):
        x1 = sample_x1(batch_size, g).to(device)
        x0 = torch.randn(x1.shape, generator=g, dtype=x1.dtype).to(device)
        if coupling != "independent":
            x1 = couple(x0, x1, coupling, generator=g).x1
        batches.append(Batch(x0=x0, x1=x1, t=torch.full((batch_size,), t0, dtype=x1.dtype, device=device)))
    variances, means = [], []
    for w in windows:
        flat = []
        for b in batches:
            if w == 1:
                flat.append(torch.zeros(sum(p.numel() for p in params), device=device))
                continue
            grads = torch.autograd.grad(_cross_term(model, b, w, steps, normalise, detach), params, allow_unused=True)
            flat.append(torch.cat([(torch.zeros_like(p) if gr is None else gr).flatten()
                                   for p, gr in zip(params, grads, strict=True)]))
        stack = torch.stack(flat)  # [n_batches, P]
        mean = stack.mean(0)
        variances.append((stack - mean).pow(2).sum(1).sum() / (n_batches - 1))
        means.append(mean.norm())
    return CrossTermVariance(windows=windows, variance=torch.stack(variances).detach().cpu(),
                             mean_norm=torch.stack(means).detach().cpu(), t0=float(t0), steps=steps,
                             coupling=coupling)


def posterior_variance_power(target, t0: float, windows: Sequence[int], n: int = 4096, seed: int = 0,
                             per_dim: bool = True) -> tuple[float, Tensor]:
    """The closed form beside the measurement: vbar = E_{x_t0} tr Cov[x1 | x_t0] (/ d if per_dim) for a Gaussian
    mixture `target` (fmlab.data.GaussianMixture), Monte Carlo over x_t0 ~ p_t0; returns (vbar, vbar ** L per L).

    The manuscript's heuristic: the cross-term gradient variance compounds like Var(x1 | x_t)^L. Var has units
    (data units)^2, so Var^L is not scale-free: rescaling the data, x1 -> a x1, multiplies Var by about a^2 while
    the data's spread is small against the noise at t (by less beyond), Var^L by about a^(2L), and whether Var^L
    grows or decays with L depends on whether vbar is above or below 1 in the data's units
    (`tests/test_diagnostics.py`; `python benchmarks/unrolling.py variance` measures what the variance does).
    """
    g = torch.Generator().manual_seed(seed)
    x1 = target.sample(n, generator=g).double()
    x0 = torch.randn(x1.shape, generator=g, dtype=torch.float64)
    x_t = (1 - t0) * x0 + t0 * x1  # x_t0 ~ p_t0
    vbar = float(target.posterior_variance(x_t, t0).mean()) / (x1.shape[1] if per_dim else 1)
    return vbar, torch.tensor([vbar ** int(w) for w in windows], dtype=torch.float64)


# --- transition Jacobians of the two parametrisations -----------------------------------------------------------

@dataclass(frozen=True)
class TransitionJacobians:
    """jac [L, B, d, d]: T_k = d z_{k+1} / d z_k along the model's own window; spectral_norm [L, B] = ||T_k||_2;
    xs [L + 1, B, d] the states, ts [L + 1, B] their times."""

    jac: Tensor
    spectral_norm: Tensor
    xs: Tensor
    ts: Tensor


def _step_jacobian(model: nn.Module, x: Tensor, t: Tensor, dt: float) -> Tensor:
    """Per-sample Jacobian of x -> x + dt v(x, t) [B, d, d] (rows: outputs), one backward per output coordinate."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = x + dt * head_velocity(model, x, t)  # T(x) = x + dt vhat(x, t)
        rows = [torch.autograd.grad(out[:, i].sum(), x, retain_graph=i < x.shape[1] - 1)[0] for i in
                range(x.shape[1])]
    return torch.stack(rows, dim=1).detach()


def transition_jacobians(model: nn.Module, x_start: Tensor, t_start: Tensor | float, dt: float,
                         window: int) -> TransitionJacobians:
    """The transition Jacobians of `window` Euler steps of the model from x_start [B, d] at t_start.

    Velocity head: T = I + dt J_v. x1 head: T = (1 - dt / (1 - t)) I + dt / (1 - t) J_x1 (its velocity is
    (x1hat - x) / (1 - t)), whose dt / (1 - t) grows to 1 near the data where a velocity head stays near I.
    """
    if x_start.ndim != 2:
        raise ValueError(f"x_start must have shape [B, d], got {tuple(x_start.shape)}")
    t = torch.as_tensor(t_start, dtype=x_start.dtype, device=x_start.device)
    t = t.expand(x_start.shape[0]).clone() if t.ndim == 0 else t
    with torch.no_grad():
        win = unroll_window(model, x_start, t, dt, window)
    jac = torch.stack([_step_jacobian(model, win.xs[k], win.ts[k], dt) for k in range(window)])
    return TransitionJacobians(jac=jac, spectral_norm=torch.linalg.matrix_norm(jac, ord=2), xs=win.xs, ts=win.ts)
