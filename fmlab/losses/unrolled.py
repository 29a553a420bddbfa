"""Unrolled flow matching: Windowed Trajectory FM (WT-FM), its three gradient variants, and the anchored-consistency
loss the manuscript derives from it.

Source: "When does unrolling help flow matching?" (Q. Fruytier, manuscript and blog post, 2026). The paper puts
data at t = 0 and noise at t = 1 (x_t = t x1 + (1 - t) x0 with x1 noise) and samples from t = 1 down to 0; its
clean-data head x0_hat is our x1 head. Ours: t_ours = 1 - t_paper, the paper's x0 is our x1 and its x1 our x0,
and a window of L Euler steps runs forward from t0 to t0 + L dt (toward the data).

Window (our convention). From a true path point x_{t0} (t0 <= 1 - L dt) unroll L Euler steps of the model, each
fed its own previous state. The window's states get their own letter z (x0 is noise, x1 data, x1hat the x1 head):

    z_0 = x_{t0},   z_{k+1} = z_k + dt vhat_k,   vhat_k = v_theta(z_k, t_k),   t_k = t0 + k dt,   k = 0 .. L - 1.

An x1 head predicts x1hat and moves with the velocity it implies on the linear path,
vhat_k = (x1hat_k - z_k) / (1 - t_k), i.e. z_{k+1} = (1 - dt / (1 - t_k)) z_k + dt / (1 - t_k) x1hat_k.

WT-FM terminal loss. Against the true path point of the SAME pair (x0, x1), whose velocity u = x1 - x0 is constant,

    E_L = z_L - x_{t0 + L dt} = dt sum_k (vhat_k - u) = dt sum_k e_k,
    ||E_L||^2 = dt^2 [ sum_k ||e_k||^2  +  sum_{i != j} e_i . e_j ]      (single-step terms + cross-terms).

The loss we minimise is ||E_L||^2 / (L dt)^2 = ||mean_k e_k||^2 (the manuscript's 1 / (K^2 dt^2) normalisation,
its K our L), so L = 1 is exactly conditional flow matching. (The manuscript weights the two sums with its own
w_i, w_ij from a k-step ELBO; we do not derive that and use these plain dt^2 weights.)

Three gradients of it (WTFM_VARIANTS). Writing J_k = d vhat_k / d theta for the parameter Jacobian of call k,

- full BPTT (detach=False): the gradient also flows through the generated states z_k (the chain of transition
  Jacobians I + dt d vhat / d z);
- states detached (detach=True): each call gets a stop-gradient copy of its state. The loss value is unchanged and
  the paths through the states are cut, but the cross-terms stay: the gradient is (2 / L^2) sum_k J_k^T sum_j e_j,
  so call k is still pushed by the errors e_j of the other steps (j != k);
- cross-terms dropped (detach=True, cross_terms=False): only the single-step part dt^2 sum_k ||e_k||^2 / (L dt)^2
  = sum_k ||e_k||^2 / L^2 on the detached self-generated states, gradient (2 / L^2) sum_k J_k^T e_k: a sum of
  single-step flow-matching gradients, each from a state the model reached itself. (cross_terms=False with
  detach=False keeps the paths through the states.) It is the single-step part of the WT-FM loss, so its value is
  the WT-FM loss minus the cross-terms, and detached WT-FM's gradient is its gradient plus the cross-terms'.

Anchored consistency (the manuscript's Shortcut_BPTT_Loss, translated): with the window's predictions
preds = [vhat_0, ..., vhat_{L-1}], anchor = MSE(vhat_0, u), teacher = mean(preds[1:]) (frozen when detach=True),

    loss = w_a MSE(vhat_0, u) + w_c MSE(vhat_0, teacher),          (w_a, w_c) = (0.8, 0.2)  (the manuscript's)

Where it comes from. Since mean_k vhat_k = vhat_0 / L + c teacher with c = (L - 1) / L, exactly

    ||E_L||^2 / (L dt)^2 = ||e_0 - c (vhat_0 - teacher)||^2
                         = ||e_0||^2 + c^2 ||vhat_0 - teacher||^2 - 2 c e_0 . (vhat_0 - teacher).

The WT-FM loss is the anchor, plus c^2 times this consistency term, plus one cross-term between them. Dropping that
cross-term and detaching the teacher (what the manuscript calls "dropping the cross-terms") leaves the anchored loss
with weights (1, ((L - 1) / L)^2): weighting="taylor". The default (0.8, 0.2) = 0.8 (1, 1/4) is that weighting at
L = 2 only. The manuscript writes its bound with consecutive differences instead,
||E_L||^2 / (L dt)^2 <~ ||e_0||^2 + ((L - 1) / L)^2 mean_i ||vhat_i - vhat_{i-1}||^2; summation by parts,
mean_k e_k = e_0 + sum_{i=1}^{L-1} ((L - i) / L) (vhat_i - vhat_{i-1}), and Cauchy-Schwarz give that form the weight
(L - 1)^2 (2 L - 1) / (6 L) (`difference_bound_weight`), which equals ((L - 1) / L)^2 only at L = 2 (both 1/4);
at L = 4 it is 2.625 against 0.5625. (Both bounds carry a common factor 2, from ||a + b||^2 <= 2 ||a||^2 + 2 ||b||^2.)
detach=True is the consistency / shortcut form (the later steps run without a graph, only the first call is
trained); detach=False is full BPTT through the window.

Errors are squared norms divided by the dimension (per-sample MSE, as in `flow_matching.per_sample_mse`), averaged
over the batch. Only the linear path is supported: the identity x_{t0 + L dt} - x_{t0} = L dt (x1 - x0) needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..checks import check_int
from ..paths import sample_path
from .batch import Batch, draw_times
from .flow_matching import per_sample_mse
from .registry import UNROLLED, LossSpec, register

__all__ = ["Window", "check_window", "head_velocity", "unroll_window", "unroll_batch", "error_terms", "window_batch",
           "wtfm_loss", "anchored_consistency_loss", "consistency_weights", "difference_bound_weight",
           "WINDOW_SETTINGS", "WTFM_VARIANTS"]

WINDOW_SETTINGS = {"window": 4, "steps": 16, "t0_grid": False,
                   "time_sampler": "uniform", "mu": 0.0, "sigma": 1.0}
CONSISTENCY_WEIGHTINGS = ("fixed", "taylor")
WTFM_VARIANTS = {  # the three gradients of the WT-FM loss (module docstring): name -> wtfm settings
    "full BPTT": {"detach": False, "cross_terms": True},
    "states detached": {"detach": True, "cross_terms": True},
    "cross-terms dropped": {"detach": True, "cross_terms": False},
}


@dataclass(frozen=True)
class Window:
    """An unrolled window: states z_k as xs [L + 1, B, ...] (xs[0] = x_{t0}), times ts [L + 1, B], velocities
    vs [L, B, ...].

    vs[k] is the velocity the model used for step k (for an x1 head, the velocity its prediction implies)."""

    xs: Tensor
    ts: Tensor
    vs: Tensor

    @property
    def length(self) -> int:
        return self.vs.shape[0]


def check_window(window: int, steps: int) -> None:
    """window (L) and steps (1 / dt) must be integers with 1 <= L <= steps, so that the window fits in [0, 1]."""
    for name, value in (("window", window), ("steps", steps)):
        check_int(value, name, 1)
    if window > steps:
        raise ValueError(f"window must be <= steps (L dt <= 1 with dt = 1 / steps), got window={window}, steps={steps}")


def _col(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def head_velocity(model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """The velocity the model's head implies at (x, t): a velocity head as is; an x1 head through
    v = (x1hat - x) / (1 - t) exactly (no sigma_min, so the transition is the manuscript's); other heads via model()."""
    prediction = getattr(model, "prediction", "velocity")
    if prediction == "x1":
        return (model.predict(x, t) - x) / _col(1 - t, x)  # v = (x1hat - x_t) / (1 - t)
    return model(x, t)


def unroll_window(model: nn.Module, x_start: Tensor, t_start: Tensor, dt: float, window: int,
                  detach_states: bool = False) -> Window:
    """Unroll `window` Euler steps z_{k+1} = z_k + dt v(z_k, t_k) from x_start at per-sample times t_start.

    detach_states=True feeds each call a stop-gradient copy of its state: the states still accumulate the
    predictions (same values), but no gradient flows through them into earlier steps.
    """
    if not 0 < dt <= 1:
        raise ValueError(f"dt must lie in (0, 1], got {dt}")
    if bool((t_start + window * dt > 1 + 1e-6).any()):
        raise ValueError(f"t_start + window * dt must be <= 1, got max t_start {t_start.max().item():.4g}, "
                         f"window {window}, dt {dt:.4g}")
    xs, ts, vs = [x_start], [t_start], []
    x, t = x_start, t_start
    for _ in range(window):
        v = head_velocity(model, x.detach() if detach_states else x, t)
        x = x + dt * v  # z_{k+1} = z_k + dt vhat_k
        t = t + dt
        xs.append(x)
        ts.append(t)
        vs.append(v)
    return Window(xs=torch.stack(xs), ts=torch.stack(ts), vs=torch.stack(vs))


def window_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                 window: int = 4, steps: int = 16, t0_grid: bool = False, time_sampler: str = "uniform",
                 mu: float = 0.0, sigma: float = 1.0, **_) -> Batch:
    """Window starts t0 in [0, 1 - L dt] for already coupled pairs (x0, x1) (batch.t = t0).

    t0 = (1 - L dt) tau with tau ~ time_sampler, or with t0_grid=True a uniform multiple of dt (the sampler's grid).
    The coupling (independent, minibatch OT) is drawn before, like every loss's (fmlab.train: TrainConfig.coupling).
    """
    check_window(window, steps)
    n, span = len(x1), 1.0 - window / steps
    if t0_grid:
        device = generator.device if generator is not None else x1.device
        k = torch.randint(0, steps - window + 1, (n,), generator=generator, device=device)
        t0 = (k.to(x1.dtype) / steps).to(x1.device)  # t0 = k dt, k in {0, ..., steps - L}
    else:
        t0 = span * draw_times(n, generator, x1.device, time_sampler, mu, sigma).to(x1.dtype)
    return Batch(x0=x0, x1=x1, t=t0.clamp(0.0, span), labels=labels)


def unroll_batch(model: nn.Module, batch: Batch, window: int, steps: int,
                 detach: bool = False) -> tuple[Window, Tensor]:
    """Unroll the model over a window of L = `window` steps of dt = 1 / steps from x_{t0}, t0 = batch.t.
    Returns the window and the target velocity u = x1 - x0 of each pair."""
    check_window(window, steps)
    x_start = sample_path(batch.x0, batch.x1, batch.t).x_t  # x_{t0} = (1 - t0) x0 + t0 x1
    return unroll_window(model, x_start, batch.t, 1.0 / steps, window, detach_states=detach), batch.x1 - batch.x0


def error_terms(errors: Tensor, dt: float) -> tuple[Tensor, Tensor]:
    """From e [L, B, ...]: single-step terms dt^2 ||e_k||^2 / d [L] and cross-terms dt^2 e_i . e_j / d [L, L]
    (zero diagonal), both averaged over the batch."""
    e = errors.flatten(2)  # [L, B, D]
    gram = torch.einsum("ibd,jbd->ij", e, e) / (e.shape[1] * e.shape[2])  # mean_b e_i . e_j / D
    single = dt**2 * torch.diagonal(gram)
    cross = dt**2 * (gram - torch.diag(torch.diagonal(gram)))
    return single, cross


def wtfm_loss(model: nn.Module, batch: Batch, window: int = 4, steps: int = 16, detach: bool = False,
              cross_terms: bool = True, **_) -> tuple[Tensor, dict]:
    """Windowed Trajectory Flow Matching: ||z_L - x_{t0 + L dt}||^2 / (L dt)^2 over an unrolled window.

    batch.t holds the window starts t0 (see `window_batch`). detach=False: full BPTT through the generated states;
    detach=True: stop-gradient between steps (the cross-terms stay in the gradient). cross_terms=False: only the
    single-step part dt^2 sum_k ||e_k||^2 / (L dt)^2 (with detach=True: a sum of single-step FM losses on the
    model's own states). Diagnostics: `terminal` (||E_L||^2 / d, state units), its split into
    `single` = dt^2 sum_k ||e_k||^2 / d and `cross` = dt^2 sum_{i != j} e_i . e_j / d (terminal = single + cross),
    and `first_step_fm` = ||e_0||^2 / d (single-step FM on the first prediction).
    """
    if not isinstance(cross_terms, bool):
        raise ValueError(f"cross_terms must be True or False, got {cross_terms!r}")
    dt = 1.0 / steps
    win, u = unroll_batch(model, batch, window, steps, detach)
    x_end = sample_path(batch.x0, batch.x1, batch.t + window * dt).x_t  # true x_{t0 + L dt}, same (x0, x1)
    terminal = per_sample_mse(win.xs[-1], x_end)  # ||E_L||^2 / d
    if cross_terms:
        loss = (terminal / (window * dt) ** 2).mean()  # ||mean_k e_k||^2: the mean velocity error of the window
    else:
        single_terms = (win.vs - u).pow(2).flatten(2).mean(2).sum(0)  # sum_k ||e_k||^2 / d
        loss = (single_terms / window**2).mean()  # dt^2 sum_k ||e_k||^2 / (L dt)^2
    with torch.no_grad():
        errors = win.vs - u  # e_k = vhat_k - (x1 - x0)
        single, cross = error_terms(errors, dt)
        diag = {"terminal": terminal.mean().detach(), "single": single.sum(), "cross": cross.sum(),
                "first_step_fm": per_sample_mse(win.vs[0], u).mean(),
                "n_forward": window, "n_jvp": 0, "n_backward": 1}
    return loss, diag


def consistency_weights(window: int, weighting: str = "fixed", anchor_weight: float = 0.8,
                        consistency_weight: float = 0.2) -> tuple[float, float]:
    """(w_a, w_c): 'fixed' gives the given pair (default 0.8, 0.2, the manuscript's); 'taylor' gives
    (1, ((L - 1) / L)^2), L = window: the weights of the exact expansion of the WT-FM loss in the anchor and the
    mean-teacher consistency term (module docstring), equal to 0.8 / 0.2 up to a factor only at L = 2."""
    if weighting not in CONSISTENCY_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {CONSISTENCY_WEIGHTINGS}, got {weighting!r}")
    if weighting == "taylor":
        return 1.0, ((window - 1) / window) ** 2  # ||mean e||^2 = ||e_0 - c (vhat_0 - teacher)||^2, c = (L-1)/L
    if anchor_weight < 0 or consistency_weight < 0:
        raise ValueError(f"anchor_weight and consistency_weight must be >= 0, got {anchor_weight}, "
                         f"{consistency_weight}")
    return float(anchor_weight), float(consistency_weight)


def difference_bound_weight(window: int) -> float:
    """The consistency weight of the manuscript's bound in its consecutive-difference form:
    ||mean_k e_k||^2 <= 2 (||e_0||^2 + w mean_{i=1..L-1} ||vhat_i - vhat_{i-1}||^2) with
    w = (L - 1) sum_{m=1}^{L-1} (m / L)^2 = (L - 1)^2 (2 L - 1) / (6 L) (summation by parts, then Cauchy-Schwarz;
    tight when vhat_i - vhat_{i-1} is proportional to (L - i) / L). 1/4 at L = 2, 2.625 at L = 4."""
    check_window(window, window)
    return (window - 1) ** 2 * (2 * window - 1) / (6 * window)


def anchored_consistency_loss(model: nn.Module, batch: Batch, window: int = 2, steps: int = 16, detach: bool = True,
                              anchor_weight: float = 0.8, consistency_weight: float = 0.2, weighting: str = "fixed",
                              **_) -> tuple[Tensor, dict]:
    """w_a MSE(vhat_0, x1 - x0) + w_c MSE(vhat_0, mean(vhat_1, ..., vhat_{L-1})) over an unrolled window (L >= 2).

    detach=True: the later steps run under no_grad from the detached first step (a frozen self-teacher: consistency
    / shortcut models, one backward through one network call). detach=False: the teacher keeps its graph and the
    gradient flows through the later predictions and the generated states (full BPTT).
    """
    check_window(window, steps)
    if window < 2:
        raise ValueError(f"window must be >= 2 for anchored consistency (the teacher is steps 2..L), got {window}")
    w_a, w_c = consistency_weights(window, weighting, anchor_weight, consistency_weight)
    dt = 1.0 / steps
    x_start = sample_path(batch.x0, batch.x1, batch.t).x_t
    u = batch.x1 - batch.x0
    v0 = head_velocity(model, x_start, batch.t)  # first prediction, with graph
    x_next = x_start + dt * v0
    if detach:
        with torch.no_grad():
            later = unroll_window(model, x_next.detach(), batch.t + dt, dt, window - 1).vs
    else:
        later = unroll_window(model, x_next, batch.t + dt, dt, window - 1).vs
    teacher = later.mean(0)  # teacher = mean(preds[1:]) = mean of vhat_1 .. vhat_{L-1}
    anchor = per_sample_mse(v0, u).mean()  # single-step FM on the first prediction
    consistency = per_sample_mse(v0, teacher).mean()
    loss = w_a * anchor + w_c * consistency
    return loss, {"anchor": anchor.detach(), "consistency": consistency.detach(), "w_anchor": w_a,
                  "w_consistency": w_c, "n_forward": window, "n_jvp": 0, "n_backward": 1}


_CONVENTION = ("paper: data at t=0, noise at t=1 (x_t = t x1 + (1-t) x0, x1 = noise), sampling from t=1 to 0, head "
               "x0_hat; ours: t -> 1 - t, x0 <-> x1 (their x0_hat is our x1 head), windows run forward from t0")
_PAPER = "Fruytier 2026, When does unrolling help flow matching? (manuscript and blog post)"

register(LossSpec(
    name="wtfm",
    display_name="WT-FM", fn=wtfm_loss, family=UNROLLED, setting="marginal-from-conditional (unrolled window)",
    paper=_PAPER, convention=_CONVENTION, make_batch=window_batch,
    defaults={**WINDOW_SETTINGS, "detach": False, "cross_terms": True},
    summary="unroll L Euler steps from x_t0, penalise ||z_L - x_{t0+L dt}||^2 / (L dt)^2 (BPTT or detached), or "
            "with cross_terms=False only its single-step terms"))

register(LossSpec(
    name="anchored_consistency", display_name="anchored consistency", fn=anchored_consistency_loss, family=UNROLLED,
    setting="self-distillation (anchored consistency)", paper=_PAPER, convention=_CONVENTION,
    make_batch=window_batch,
    defaults={**WINDOW_SETTINGS, "window": 2, "detach": True, "anchor_weight": 0.8, "consistency_weight": 0.2,
              "weighting": "fixed"},
    summary="0.8 MSE(v0, x1 - x0) + 0.2 MSE(v0, mean of the window's later predictions), teacher detached or not"))
