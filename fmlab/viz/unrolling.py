"""Experiments, figures and widgets for labs 06 (parametrisation: velocity field against x1 prediction) and
07 (unrolled flow matching: window length, the detach switch, the cross-term variance, minibatch OT).

Convention (DESIGN.md): t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1, u = x1 - x0. A window of L Euler
steps of size dt starts on the true path at x_{t0} and runs forward (toward the data); see fmlab.losses.unrolled and
fmlab.diagnostics for the equations. The manuscript ("When does unrolling help flow matching?") puts data at t = 0:
its "near the data, t -> 0" is our t -> 1, and its x0_hat head is our x1 head.

Training runs are cached in memory per kernel, keyed on their configuration (fmlab.labkit.cache_key), so flipping a
switch back to a configuration already trained is instant. Render functions are pure: they take numbers / run
results and return a plotly figure.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data import sample_toy
from ..diagnostics import (
    DEFAULT_LEVELS,
    CrossTermVariance,
    KStepDecomposition,
    cross_term_grad_variance,
    grad_norms_at_levels,
    transition_jacobians,
)
from ..labkit import cache_key, fast_mode
from ..losses import get_loss
from ..losses.unrolled import unroll_window
from ..metrics import wasserstein
from ..solvers import solve
from .style import COLORS, SEQUENCE, apply_style

__all__ = [
    "LAB_MODEL", "GMM_FOR_DATA", "lab_config", "RunResult", "run", "clear_runs", "evaluate_w1", "noise_floor_w1",
    "label_of", "render_grad_norms", "render_w1_bars", "render_transition_norms", "render_window",
    "render_decomposition", "render_variance", "render_loss_curves", "render_comparison",
    "transition_norm_profile", "window_view_data", "ReplayView", "live_run",
    # lab 07
    "relative_cost", "equal_time_config", "COMPARISON", "comparison_configs", "comparison_runs", "comparison_table",
    "conclusion", "window_batch_at", "window_widget", "decomposition_widget", "variant_batch", "variant_rows",
    "variant_table", "GRADIENT_LOSSES", "call_gradients", "projections", "render_call_gradients", "gradient_view",
    "gradient_widget", "variance_live", "fm_curve", "render_unrolling_run", "unrolling_widget", "method_color",
    "TRAINING_STEP_COUNTS",
]

LAB_MODEL = {"hidden": 128, "depth": 3, "batch_size": 256, "lr": 2e-3, "warmup": 100, "ema_decay": 0.995}
GMM_FOR_DATA = {"8gaussians": "8modes"}  # toy sets whose closed-form ground truth fmlab.data ships
_RUNS: dict[Any, RunResult] = {}


# --- experiments: cached training runs with diagnostics --------------------------------------------------------

def lab_config(data: str = "moons", loss: str = "cfm", coupling: str = "independent", prediction: str | None = None,
               train_steps: int = 3000, seed: int = 0, log_every: int = 50, threads: int | None = None,
               **loss_settings: Any) -> Any:
    """A fmlab.train.TrainConfig with the labs' small model (LAB_MODEL: a 3 x 128 MLP, batch 256, lr 2e-3).

    train_steps: optimizer steps; loss_settings: the loss's own settings (for window losses `steps` = 1 / dt)."""
    from ..train import TrainConfig

    return TrainConfig(data=data, loss=loss, coupling=coupling, prediction=prediction, steps=train_steps, seed=seed,
                       log_every=log_every, ckpt_every=0, threads=threads, loss_settings=dict(loss_settings),
                       **LAB_MODEL)


def label_of(config: Any) -> str:
    """A short human label for a run: 'field', 'x1', 'WT-FM L=4 BPTT', 'anchored L=2 (detached)', '+ OT'."""
    s = config.loss_settings
    if config.loss == "cfm":
        name = "single-step FM" if config.head == "velocity" else f"FM ({config.head} head)"
    elif config.loss == "x1_prediction":
        name = "x1 prediction"
    elif config.loss == "wtfm":
        window = s.get("window", get_loss("wtfm").defaults["window"])
        name = f"WT-FM L={window} " + ("detached" if s.get("detach", False) else "BPTT")
        if not s.get("cross_terms", True):
            name = f"WT-FM L={window} cross-terms dropped" + ("" if s.get("detach", False) else " (BPTT)")
    elif config.loss == "anchored_consistency":
        window = s.get("window", get_loss("anchored_consistency").defaults["window"])
        name = f"anchored L={window} " + ("(detached)" if s.get("detach", True) else "(BPTT)")
    else:
        name = config.loss
    if config.loss == "wtfm" and config.head == "x1":
        name += " x1 head"
    return name + (" + OT" if config.coupling == "ot" else "")


@dataclass
class RunResult:
    """A finished (or running) training run and what was measured along the way.

    grad_steps / grad_norms [n, levels]: gradient norm of the run's loss at the fixed noise levels `levels`;
    var_steps / variances: cross-term gradient variance against the window length, measured during training;
    w1: {Euler steps: W1(samples, data)}; elapsed: training wall time in seconds (diagnostics excluded).
    """

    config: Any
    trainer: Any
    levels: list[float]
    grad_steps: list[int] = field(default_factory=list)
    grad_norms: list[Tensor] = field(default_factory=list)
    var_steps: list[int] = field(default_factory=list)
    variances: list[CrossTermVariance] = field(default_factory=list)
    w1: dict[int, float] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def label(self) -> str:
        return label_of(self.config)

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.trainer.log

    @property
    def model(self) -> Any:
        """The EMA model (what we sample from)."""
        return self.trainer.ema

    def norms(self) -> Tensor:
        return torch.stack(self.grad_norms) if self.grad_norms else torch.empty(0, len(self.levels))


def _data_fn(name: str) -> Callable[[int, torch.Generator], Tensor]:
    return lambda n, g: sample_toy(name, n, generator=g)


def run(config: Any, levels: Sequence[float] = DEFAULT_LEVELS, track_every: int = 0, track_loss: str | None = None,
        track_batch: int = 256, variance_every: int = 0, variance_windows: Sequence[int] = (1, 2, 4, 8),
        variance_t0: float = 0.25, variance_batches: int = 16, eval_steps: Sequence[int] = (100,),
        n_eval: int = 1000, on_update: Callable[[RunResult], Any] | None = None, progress: bool = True) -> RunResult:
    """Train `config` once per kernel (cached on every argument but `on_update` / `progress`) and return the result.

    track_every > 0: every that many steps, the gradient norm of `track_loss` (default: the run's loss) at each noise
    level in `levels` on a fresh minibatch of `track_batch` (the manuscript's gradient-norm figure).
    variance_every > 0: the cross-term gradient variance of the current model against the window lengths
    `variance_windows` (windows start at variance_t0; dt = 1 / 16 unless the loss sets `steps`).
    eval_steps: W1 of n_eval samples (Euler with that many steps, from the EMA model) against fresh data.
    on_update(result) runs after every measurement (live figures); cached calls skip straight to the end.
    """
    from ..train import Trainer

    key = cache_key("run", config, list(levels), track_every, track_loss, track_batch, variance_every,
                    list(variance_windows), variance_t0, variance_batches, list(eval_steps), n_eval)
    if key in _RUNS:
        return _RUNS[key]
    trainer = Trainer(config, data_fn=_data_fn(config.data))
    result = RunResult(config=config, trainer=trainer, levels=list(levels))
    probe = torch.Generator().manual_seed(config.seed + 1)  # diagnostics draw from their own generator
    loss_name = track_loss or config.loss
    loss_settings = config.loss_settings if loss_name == config.loss else None
    var_steps = int(config.loss_settings.get("steps", 16))
    sample_x1 = _data_fn(config.data)
    diag_time = [0.0]

    def measure(step: int) -> None:
        start = time.perf_counter()
        model = trainer.model
        if track_every and (step % track_every == 0 or step == config.steps):
            x1 = sample_x1(track_batch, probe)
            x0 = torch.randn(x1.shape, generator=probe)
            result.grad_norms.append(grad_norms_at_levels(model, loss_name, x0.to(trainer.device),
                                                          x1.to(trainer.device), levels, loss_settings, probe))
            result.grad_steps.append(step)
        if variance_every and (step % variance_every == 0 or step == config.steps):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=probe))
            result.variances.append(cross_term_grad_variance(
                model, sample_x1, variance_windows, steps=var_steps, t0=variance_t0, n_batches=variance_batches,
                batch_size=64, coupling=config.coupling, seed=seed))
            result.var_steps.append(step)
        diag_time[0] += time.perf_counter() - start
        if on_update is not None:
            on_update(result)

    for name, every in (("track_every", track_every), ("variance_every", variance_every)):
        if every < 0 or every % config.log_every:
            raise ValueError(f"{name} must be 0 or a multiple of the config's log_every ({config.log_every}), "
                             f"got {every}")
    measure(0)
    diag_time[0] = 0.0  # only measurements made during training are subtracted from its wall time
    start = time.perf_counter()
    trainer.fit(progress=progress, callback=lambda step, record: measure(step))
    result.elapsed = time.perf_counter() - start - diag_time[0]
    trainer.ema.requires_grad_(False).eval()
    for k in eval_steps:
        result.w1[int(k)] = evaluate_w1(trainer.ema, config.data, steps=int(k), n=n_eval, seed=config.seed)
    if on_update is not None:
        on_update(result)
    _RUNS[key] = result
    return result


def clear_runs() -> None:
    """Forget every cached run."""
    _RUNS.clear()
    _PARAM_RUNS.clear()


def evaluate_w1(model: Any, data: str, steps: int = 100, n: int = 1000, seed: int = 0) -> float:
    """W1 between n samples of the model (Euler, `steps` steps from seeded noise) and n fresh data points."""
    g = torch.Generator().manual_seed(10_000 + seed)
    x0 = torch.randn(n, 2, generator=g)
    device = next(model.parameters()).device
    samples = solve(model, x0.to(device), steps=steps, method="euler").cpu()
    return wasserstein(samples, sample_toy(data, n, generator=g), p=1)


def noise_floor_w1(data: str, n: int = 1000, seed: int = 0) -> float:
    """W1 between two independent data samples of size n: the best any model can score at this n."""
    g = torch.Generator().manual_seed(20_000 + seed)
    return wasserstein(sample_toy(data, n, generator=g), sample_toy(data, n, generator=g), p=1)


# --- figures: parametrisation -------------------------------------------------------------------------------------

_HEAD_COLORS = {"field": COLORS["noise"], "x1": COLORS["highlight"]}


def _color(i: int, label: str) -> str:
    if "x1" in label:
        return _HEAD_COLORS["x1"]
    if label.startswith("single-step") or label == "field":
        return COLORS["model"] if "OT" not in label else COLORS["ot"]
    return SEQUENCE[(i + 1) % len(SEQUENCE)]


def render_grad_norms(curves: Mapping[str, tuple[Sequence[int], Tensor]], levels: Sequence[float],
                      upto: int | None = None, total_steps: int | None = None, log_y: bool = True) -> go.Figure:
    """Gradient norm against training step, one panel per noise level (the manuscript's figure, our time).

    curves: {label: (steps [n], norms [n, len(levels)])}; `upto` shows only measurements at steps <= upto (replay).
    """
    n = len(levels)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    titles = [f"t = {lv:g}" + (" (near data)" if lv >= 0.85 else " (near noise)" if lv <= 0.15 else "")
              for lv in levels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True, vertical_spacing=0.14,
                        horizontal_spacing=0.1)
    shown = 0
    for i, (label, (steps, norms)) in enumerate(curves.items()):
        steps_t = torch.as_tensor(list(steps))
        keep = steps_t <= upto if upto is not None else torch.ones(len(steps_t), dtype=torch.bool)
        norms = torch.as_tensor(norms)
        for j in range(n):
            y = norms[keep, j].tolist() if len(norms) else []
            fig.add_trace(go.Scatter(x=steps_t[keep].tolist(), y=y, mode="lines", name=label, legendgroup=label,
                                     showlegend=j == 0, line=dict(color=_color(i, label), width=2)),
                          row=j // cols + 1, col=j % cols + 1)
        shown = max(shown, int(steps_t[keep].max()) if bool(keep.any()) else 0)
    step_text = f" (step {shown})" if upto is not None else ""
    apply_style(fig, title=f"Gradient norm at four noise levels{step_text}")
    fig.update_yaxes(type="log" if log_y else "linear", tickformat=".3~g", title_text="||grad||")
    if log_y:
        fig.update_yaxes(dtick="D2")  # 1-2-5 ticks in each decade
    fig.update_xaxes(title_text="training step", row=rows)
    if total_steps:
        fig.update_xaxes(range=[0, total_steps])
    fig.update_layout(width=900, height=640, legend=dict(orientation="h", y=-0.14, x=0.0))
    fig.update_annotations(font_size=15)
    return fig


def render_w1_bars(table: Mapping[str, Mapping[str, float]], floors: Mapping[str, float] | None = None,
                   title: str = "Sample quality: W1 to the data (lower is better)") -> go.Figure:
    """Grouped bars: table {dataset: {label: W1}}; `floors` {dataset: data-vs-data W1} drawn as black ticks."""
    datasets = list(table)
    labels = list(dict.fromkeys(lbl for row in table.values() for lbl in row))
    fig = go.Figure()
    for i, label in enumerate(labels):
        fig.add_trace(go.Bar(x=datasets, y=[table[d].get(label) for d in datasets], name=label,
                             marker_color=_color(i, label),
                             text=[f"{table[d][label]:.3f}" if label in table[d] else "" for d in datasets],
                             textposition="outside"))
    if floors:
        fig.add_trace(go.Scatter(x=list(floors), y=list(floors.values()), mode="markers",
                                 name="noise floor (data vs data)",
                                 marker=dict(symbol="line-ew-open", size=40, color=COLORS["reference"],
                                             line=dict(width=3))))
    apply_style(fig, title=title, x_title="dataset", y_title="W1 (data units)")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.2))
    return fig


def transition_norm_profile(model: Any, x_start: Tensor, t_starts: Sequence[float], dt: float,
                            window: int = 1) -> tuple[Tensor, Tensor]:
    """Mean spectral norm of the one-step transition Jacobian T at each start time: (times [n], norms [n])."""
    norms = []
    for t0 in t_starts:
        tj = transition_jacobians(model, x_start, float(t0), dt, window)
        norms.append(tj.spectral_norm[0].mean())
    return torch.as_tensor(list(t_starts)), torch.stack(norms)


def render_transition_norms(profiles: Mapping[str, tuple[Tensor, Tensor]], dt: float) -> go.Figure:
    """Left: ||T||_2 of one Euler step (mean over particles) against t for each head. Right: the gain from the
    network's output to the next state, d x_{k+1} / d(output): dt for a field, dt / (1 - t) for an x1 head; every
    gradient that reaches the network through a state is multiplied by it."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("state Jacobian ||T|| of one step", "gain: output -> next state"))
    for i, (label, (ts, norms)) in enumerate(profiles.items()):
        fig.add_trace(go.Scatter(x=ts.tolist(), y=norms.tolist(), mode="lines+markers", name=label, legendgroup=label,
                                 line=dict(color=_color(i, label), width=3)), row=1, col=1)
        gain = (dt / (1 - ts)) if "x1" in label else torch.full_like(ts, dt)
        fig.add_trace(go.Scatter(x=ts.tolist(), y=gain.tolist(), mode="lines+markers", name=label, legendgroup=label,
                                 showlegend=False, line=dict(color=_color(i, label), width=3, dash="dot")),
                      row=1, col=2)
    fig.add_hline(y=1.0, line=dict(color=COLORS["path"], dash="dash"), row=1, col=1)
    apply_style(fig, title=f"One Euler step of each head (dt = {dt:.3g})")
    fig.update_xaxes(title_text="time t (1 = data)")
    fig.update_yaxes(title_text="spectral norm", row=1, col=1)
    fig.update_yaxes(title_text="d x_next / d output", type="log", tickformat=".3~g", dtick="D2", row=1, col=2)
    fig.update_layout(width=980, height=480, legend=dict(orientation="h", y=-0.22))
    return fig


# --- figures: unrolling -------------------------------------------------------------------------------------------

def window_view_data(model: Any, x0: Tensor, x1: Tensor, t0: float, window: int, dt: float) -> dict[str, Tensor]:
    """Everything `render_window` draws: true path points x_{t0 + k dt} and the model's unrolled states."""
    t = torch.full((len(x0),), float(t0))
    start = (1 - t0) * x0 + t0 * x1
    with torch.no_grad():
        win = unroll_window(model, start, t, dt, window)
    ks = torch.arange(window + 1, dtype=x0.dtype)
    ts = (t0 + ks * dt)[:, None, None]
    true = (1 - ts) * x0 + ts * x1  # x_{t0 + k dt} on the straight path of each pair
    return {"true": true, "unrolled": win.xs.detach(), "x0": x0, "x1": x1}


def render_window(view: Mapping[str, Tensor], t0: float, window: int, dt: float, extent: float = 3.5) -> go.Figure:
    """The unrolled window against the true path: grey segments x0 -> x1, the true points x_{t0 + k dt} (black)
    and the model's own states z_k (green), the terminal errors E_L = z_L - x_{t0 + L dt} in vermillion."""
    true, unrolled, x0, x1 = view["true"], view["unrolled"], view["x0"], view["x1"]
    fig = go.Figure()
    xs, ys = [], []
    for a, b in zip(x0.tolist(), x1.tolist(), strict=True):
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=COLORS["path"], width=1), name="path x0 -> x1"))
    fig.add_trace(go.Scatter(x=x1[:, 0].tolist(), y=x1[:, 1].tolist(), mode="markers", name="data x1",
                             marker=dict(color=COLORS["data"], size=6)))
    for name, pts, color, sym in (("true x_{t0 + k dt}", true, COLORS["reference"], "circle-open"),
                                  ("model's states z_k", unrolled, COLORS["model"], "circle")):
        px, py = [], []
        for i in range(pts.shape[1]):
            px += pts[:, i, 0].tolist() + [None]
            py += pts[:, i, 1].tolist() + [None]
        fig.add_trace(go.Scatter(x=px, y=py, mode="lines+markers", name=name, line=dict(color=color, width=2),
                                 marker=dict(color=color, size=6, symbol=sym)))
    ex, ey = [], []
    for a, b in zip(true[-1].tolist(), unrolled[-1].tolist(), strict=True):
        ex += [a[0], b[0], None]
        ey += [a[1], b[1], None]
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", name="terminal error E_L",
                             line=dict(color=COLORS["highlight"], width=3)))
    err = (true[-1] - unrolled[-1]).pow(2).sum(1).mean()
    apply_style(fig, title=f"Window of L = {window} steps from t0 = {t0:.2f} (dt = {dt:.3g}): "
                           f"mean ||E_L||^2 = {float(err):.4f}", x_title="coordinate 1", y_title="coordinate 2",
                square=True)
    fig.update_xaxes(range=[-extent, extent])
    fig.update_yaxes(range=[-extent, extent])
    fig.update_layout(legend=dict(orientation="h", y=-0.12), width=760, height=760, title_font_size=16)
    return fig


def render_decomposition(decomp: KStepDecomposition, title: str | None = None) -> go.Figure:
    """Left: the L x L matrix of terms dt^2 e_i . e_j (diagonal: single-step terms, off: cross-terms).
    Right: the totals, single + cross = the terminal loss ||E_L||^2."""
    L = decomp.window
    mat = (decomp.cross + torch.diag(decomp.single)).double()
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.22,
                        subplot_titles=("terms dt^2 e_i . e_j (per coordinate)", "sum of the terms"))
    scale = float(mat.abs().max()) or 1.0
    fig.add_trace(go.Heatmap(z=mat.tolist(), x=list(range(L)), y=list(range(L)), zmid=0.0,  # k = 0 .. L - 1
                             zmin=-scale, zmax=scale, colorscale="RdBu_r",
                             colorbar=dict(x=0.39, len=0.9, thickness=14, tickformat=".1e"),
                             hovertemplate="i=%{y}, j=%{x}: %{z:.3g}<extra></extra>"), row=1, col=1)
    names = ["single-step", "cross-terms", "terminal loss"]
    values = [float(decomp.single_total), float(decomp.cross_total), float(decomp.terminal)]
    colors = [COLORS["model"], COLORS["highlight"], COLORS["reference"]]
    fig.add_trace(go.Bar(x=names, y=values, marker_color=colors, text=[f"{v:.3g}" for v in values],
                         textposition="outside", showlegend=False), row=1, col=2)
    share = values[1] / values[2] if values[2] else 0.0
    apply_style(fig, title=title or f"terminal loss of a window of L = {L}: cross-terms are {100 * share:.0f}% of it")
    fig.update_xaxes(title_text="step j (error e_j)", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="step i (error e_i)", autorange="reversed", dtick=1, row=1, col=1)
    fig.update_yaxes(tickformat=".2~g", row=1, col=2)
    fig.update_layout(width=940, height=520)
    return fig


def render_variance(results: Mapping[str, CrossTermVariance], closed_form: tuple[Sequence[int], Tensor] | None = None,
                    step: int | None = None) -> go.Figure:
    """Cross-term gradient variance against the window length L (log-log). Left: as measured, one curve per run.
    Right: growth relative to L = 2, beside the closed form Var(x1 | x_t0)^L / Var(x1 | x_t0)^2."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("measured variance", "growth relative to L = 2"))
    for i, (label, r) in enumerate(results.items()):
        ws = [w for w in r.windows if w >= 2]
        var = torch.stack([r.variance[r.windows.index(w)] for w in ws]).double()
        color = COLORS["ot"] if "OT" in label else COLORS["independent"] if i == 0 else SEQUENCE[i % len(SEQUENCE)]
        for col, y in ((1, var), (2, var / var[0])):
            fig.add_trace(go.Scatter(x=ws, y=y.tolist(), mode="lines+markers", name=f"measured: {label}",
                                     legendgroup=label, showlegend=col == 1, line=dict(color=color, width=3),
                                     marker=dict(size=9)), row=1, col=col)
    if closed_form is not None:
        pairs = [(w, float(c)) for w, c in zip(closed_form[0], closed_form[1], strict=True) if w >= 2]
        fig.add_trace(go.Scatter(x=[w for w, _ in pairs], y=[c / pairs[0][1] for _, c in pairs], mode="lines+markers",
                                 name="closed form Var(x1|x_t0)^L", line=dict(color=COLORS["reference"], dash="dash"),
                                 marker=dict(symbol="diamond", size=9)), row=1, col=2)
    t0 = next(iter(results.values())).t0 if results else 0.0
    when = f", training step {step}" if step is not None else ""
    apply_style(fig, title=f"Cross-term gradient variance against the window length (t0 = {t0:g}{when})")
    fig.update_yaxes(type="log", dtick=1, tickformat=".0e")
    fig.update_yaxes(title_text="variance (trace)", row=1, col=1)
    fig.update_yaxes(title_text="variance(L) / variance(2)", row=1, col=2)
    fig.update_xaxes(type="log", tickvals=[2, 4, 8, 16], title_text="window length L")
    fig.update_layout(width=980, height=500, legend=dict(orientation="h", y=-0.22))
    return fig


def render_loss_curves(results: Sequence[RunResult], key: str = "first_step_fm", x: str = "elapsed_s",
                       title: str = "Training curves") -> go.Figure:
    """A logged quantity against wall time (x='elapsed_s') or step (x='step') for several runs."""
    fig = go.Figure()
    for i, r in enumerate(results):
        pts = [(rec[x], rec.get(key, rec["loss"])) for rec in r.log]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=r.label,
                                 line=dict(color=_color(i, r.label), width=2)))
    apply_style(fig, title=title, x_title="training time (s)" if x == "elapsed_s" else "training step", y_title=key)
    fig.update_yaxes(type="log")
    return fig


METHOD_COLORS = {"single-step FM": COLORS["model"], "WT-FM": COLORS["highlight"], "WT-FM detached": "#0072B2",
                 "anchored": "#CC79A7", "WT-FM cross-terms dropped": "#E69F00"}


def method_color(label: str) -> str:
    """One colour per method family (OT variants share it and get a hatch pattern)."""
    if label.startswith("single-step"):
        return METHOD_COLORS["single-step FM"]
    if label.startswith("anchored"):
        return METHOD_COLORS["anchored"]
    if label.startswith("WT-FM") and "cross-terms dropped" in label:
        return METHOD_COLORS["WT-FM cross-terms dropped"]
    if label.startswith("WT-FM") and "detached" in label:
        return METHOD_COLORS["WT-FM detached"]
    return METHOD_COLORS["WT-FM"] if label.startswith("WT-FM") else COLORS["path"]


def render_comparison(results: Sequence[RunResult], steps: int, floor: float | None = None,
                      title: str | None = None) -> go.Figure:
    """Horizontal bars of W1 at `steps` Euler steps for several runs (colour: method; hatched: minibatch OT),
    annotated with their step count and measured training time."""
    labels = [r.label for r in results]
    values = [r.w1[steps] for r in results]
    text = [f"{v:.3f}  ({r.config.steps} steps, {r.elapsed:.0f} s)" for v, r in zip(values, results, strict=True)]
    fig = go.Figure(go.Bar(y=labels, x=values, orientation="h", text=text, textposition="outside",
                           marker=dict(color=[method_color(lbl) for lbl in labels],
                                       pattern=dict(shape=["/" if lbl.endswith("+ OT") else "" for lbl in labels]))))
    if floor is not None:
        fig.add_vline(x=floor, line=dict(color=COLORS["reference"], dash="dash"),
                      annotation_text="noise floor", annotation_position="top")
    apply_style(fig, title=title or f"W1 to the data, Euler with {steps} steps (lower is better; hatched: OT)",
                x_title="W1 (data units)")
    fig.update_xaxes(range=[0, 1.6 * max(values + [floor or 0.0])])
    fig.update_layout(width=920, height=max(320, 56 * len(labels) + 150), margin=dict(l=230))
    return fig


# --- lab 06: parametrisation runs -------------------------------------------------------------------------------

PARAM_DATASETS = ("moons", "scurve", "swissroll")
EVAL_LOSS_N = 4096  # held-out (x0, x1, t) triples of the velocity-equivalent loss
MATCHED_BATCHES = 16  # minibatches averaged for a gradient norm at one checkpoint
_PARAM_RUNS: dict[Any, ParametrisationRun] = {}


def head_conversions(times: Sequence[float] = (0.02, 0.5, 0.98), delta: float = 0.01, mixture: str = "8modes",
                     n: int = 512, seed: int = 0) -> dict[float, dict[str, float]]:
    """The three heads of the exact flow of a closed-form 2D mixture (fmlab.data.gmm_2d(mixture), float64), at points
    x_t of its marginal at each time t, converted with fmlab.paths.convert_prediction:

    'x1 exact' / 'eps exact': the largest |v - v*| after converting the exact x1 head (the denoiser E[x1 | x_t]) and
    the exact eps head (E[x0 | x_t] = eps_from_x1 of it) to a velocity, v* the mixture's own velocity (about 1e-15);
    'x1 gain' / 'eps gain': |velocity error| / delta when each head is off by delta in every coordinate:
    1 / (1 - t) for x1 (ill-conditioned at the data end) and 1 / t for eps (at the noise end).
    """
    from ..data import gmm_2d
    from ..paths import convert_prediction, eps_from_x1

    gmm = gmm_2d(mixture)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t_value in times:
        t = torch.full((n,), float(t_value), dtype=torch.float64)
        x1 = gmm.sample(n, generator=g).double()
        x_t = (1 - t[:, None]) * torch.randn(n, 2, generator=g, dtype=torch.float64) + t[:, None] * x1
        v_star = gmm.velocity(x_t, t)
        heads = {"x1": gmm.denoiser(x_t, t)}
        heads["eps"] = eps_from_x1(heads["x1"], x_t, t)
        row = {}
        for name, head in heads.items():
            v = convert_prediction(head, x_t, t, name, "velocity")
            v_off = convert_prediction(head + delta, x_t, t, name, "velocity")
            row[f"{name} exact"] = float((v - v_star).abs().max())
            row[f"{name} gain"] = float((v_off - v).abs().mean() / delta)
        out[float(t_value)] = row
    return out


def x1_loss_identities(model: Any, batch: Any) -> dict[str, float]:
    """For an x1-head model on a batch (x0, x1, t), with the exact conversion v_hat = (x1_hat - x_t) / (1 - t):

    'weighted x1' = mean ||x1_hat - x1||^2 / (1 - t)^2 and 'velocity' = mean ||v_hat - (x1 - x0)||^2 (equal: the same
    function of the weights), 'gradient gap' = |grad weighted x1 - grad velocity| / |grad velocity| (0 up to
    rounding); 'plain x1' = mean ||x1_hat - x1||^2 and 'velocity x (1-t)^2' = mean (1 - t)^2 ||v_hat - u||^2
    (equal: plain x1 MSE is the velocity loss with weight (1 - t)^2, small near the data). Per-sample errors are
    means over coordinates, as in fmlab.losses."""
    from ..losses.flow_matching import per_sample_mse
    from ..paths import sample_path, velocity_from_x1

    path = sample_path(batch.x0, batch.x1, batch.t)
    x1_hat = model.predict(path.x_t, batch.t)
    v_hat = velocity_from_x1(x1_hat, path.x_t, batch.t)
    x1_err, v_err = per_sample_mse(x1_hat, batch.x1), per_sample_mse(v_hat, path.dx_t)
    w = (1 - batch.t).pow(2)
    values = {"weighted x1": (x1_err / w).mean(), "velocity": v_err.mean(), "plain x1": x1_err.mean(),
              "velocity x (1-t)^2": (w * v_err).mean()}
    params = [p for p in model.parameters() if p.requires_grad]
    g_x1 = torch.autograd.grad(values["weighted x1"], params, retain_graph=True)
    g_v = torch.autograd.grad(values["velocity"], params)
    gap = torch.sqrt(sum((a - b).pow(2).sum() for a, b in zip(g_x1, g_v, strict=True)))
    scale = torch.sqrt(sum(b.pow(2).sum() for b in g_v))
    return {**{k: float(v.detach()) for k, v in values.items()}, "gradient gap": float(gap / scale)}


def parametrisation_configs(data: str, steps: int, seed: int = 0, log_every: int = 50) -> list[Any]:
    """The two runs of lab 06 on one dataset: the field (`cfm`, velocity head) and x1 prediction (`x1_prediction`,
    x1 head, weight 1 / ((1 - t)^2 + 1e-3): the velocity loss seen through the x1 head)."""
    return [lab_config(data, "cfm", train_steps=steps, seed=seed, log_every=log_every),
            lab_config(data, "x1_prediction", prediction="x1", train_steps=steps, seed=seed, log_every=log_every)]


def head_label(result: Any) -> str:
    return "x1 prediction" if result.config.head == "x1" else "field"


def grad_norm_curves(results: Sequence[Any]) -> dict[str, tuple[list[int], Tensor]]:
    """{label: (steps, norms [n, levels])} of runs (RunResult or ParametrisationRun) that tracked gradient norms."""
    results = [getattr(r, "result", r) for r in results]
    return {head_label(r) if r.config.loss in ("cfm", "x1_prediction") else r.label: (r.grad_steps, r.norms())
            for r in results}


def velocity_equivalent_loss(model: Any, data: str, n: int = EVAL_LOSS_N, seed: int = 0) -> float:
    """E[w(t) ||x1_hat - x1||^2], w = 1 / ((1 - t)^2 + 1e-3), on a fixed held-out set of n triples (x0 ~ N(0, I),
    x1 ~ data, t ~ U[0, 1]): the `x1_prediction` loss, one yardstick for both heads. With x1_hat = x_t + (1 - t) v_hat
    the x1 error is (1 - t) times the velocity error, so for either head this is the flow-matching loss
    ||v_hat - (x1 - x0)||^2 with its weight capped at 1000 within about 0.03 of the data."""
    from ..losses import Batch

    g = torch.Generator().manual_seed(30_000 + seed)
    x1 = sample_toy(data, n, generator=g)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(n, generator=g)
    device = next(model.parameters()).device
    batch = Batch(x0=x0.to(device), x1=x1.to(device), t=t.to(device))
    with torch.no_grad():
        value, _ = get_loss("x1_prediction").fn(model, batch)
    return float(value)


@dataclass
class ParametrisationRun:
    """A lab-06 run (`result`) and, at each tracked step (result.grad_steps), the velocity-equivalent loss of the
    trained (not EMA) weights on a fixed held-out set and a copy of those weights: what comparing the heads at
    matched loss needs."""

    result: RunResult
    losses: list[float] = field(default_factory=list)
    states: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def config(self) -> Any:
        return self.result.config

    @property
    def label(self) -> str:
        return head_label(self.result)

    @property
    def model(self) -> Any:
        return self.result.model

    @property
    def w1(self) -> dict[int, float]:
        return self.result.w1

    @property
    def steps(self) -> list[int]:
        return self.result.grad_steps


def parametrisation_run(config: Any, track_every: int = 50, n_eval: int = 1000,
                        on_update: Callable[[RunResult], Any] | None = None, progress: bool = True
                        ) -> ParametrisationRun:
    """Train `config` with `run` (gradient norms at DEFAULT_LEVELS every `track_every` steps, W1 of the EMA model
    with 100 Euler steps) and record the velocity-equivalent loss and the weights at every tracked step. Cached per
    kernel on the arguments."""
    key = cache_key("parametrisation_run", config, track_every, n_eval)
    if key in _PARAM_RUNS:
        return _PARAM_RUNS[key]
    losses: list[float] = []
    states: list[dict[str, Tensor]] = []

    def update(result: RunResult) -> None:
        if len(losses) < len(result.grad_steps):  # a new measurement: the live weights are at that step
            model = result.trainer.model
            losses.append(velocity_equivalent_loss(model, config.data, seed=config.seed))
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        if on_update is not None:
            on_update(result)

    kwargs = dict(levels=DEFAULT_LEVELS, track_every=track_every, eval_steps=(100,), n_eval=n_eval)
    result = run(config, on_update=update, progress=progress, **kwargs)
    if len(losses) != len(result.grad_steps):  # `run` had it cached (no callbacks): train again, recording
        for k in [k for k, v in _RUNS.items() if v is result]:
            del _RUNS[k]
        losses.clear()
        states.clear()
        result = run(config, on_update=update, progress=progress, **kwargs)
    record = ParametrisationRun(result, losses, states)
    _PARAM_RUNS[key] = record
    return record


def gradients_at(run_: ParametrisationRun, index: int, n_batches: int = MATCHED_BATCHES, batch_size: int = 256,
                 seed: int = 0) -> Tensor:
    """Mean over n_batches fresh minibatches of the gradient norm of the run's own loss at each of DEFAULT_LEVELS,
    for the weights saved at tracked step run_.steps[index]: [len(DEFAULT_LEVELS)]."""
    model = copy.deepcopy(run_.result.trainer.model)
    model.load_state_dict(run_.states[index])
    g = torch.Generator().manual_seed(40_000 + seed)
    device = next(model.parameters()).device
    norms = []
    for _ in range(n_batches):
        x1 = sample_toy(run_.config.data, batch_size, generator=g)
        x0 = torch.randn(x1.shape, generator=g)
        norms.append(grad_norms_at_levels(model, run_.config.loss, x0.to(device), x1.to(device), DEFAULT_LEVELS,
                                          run_.config.loss_settings, g))
    return torch.stack(norms).mean(0)


@dataclass
class MatchedGradients:
    """The two heads' gradient norms (mean over MATCHED_BATCHES minibatches, at DEFAULT_LEVELS) compared two ways.

    Matched loss: `target` is the lowest velocity-equivalent loss both runs reach; each run is taken at the first
    tracked step where its loss is <= target (`steps`). Equal steps: both runs at their last step (`final_step`).
    """

    target: float
    steps: dict[str, int]
    matched: dict[str, Tensor]
    final_step: int
    final: dict[str, Tensor]

    @property
    def matched_ratio(self) -> Tensor:
        return self.matched["x1 prediction"] / self.matched["field"]

    @property
    def final_ratio(self) -> Tensor:
        return self.final["x1 prediction"] / self.final["field"]


def matched_gradients(runs: Sequence[ParametrisationRun], n_batches: int = MATCHED_BATCHES,
                      seed: int = 0) -> MatchedGradients:
    """Compare a field run and an x1 run (same data and budget) at matched velocity-equivalent loss and at equal
    steps (see MatchedGradients). The step-0 measurement (initialisation) is never a match."""
    by_label = {r.label: r for r in runs}
    if set(by_label) != {"field", "x1 prediction"}:
        raise ValueError(f"runs must be one field run and one x1 prediction run, got {[r.label for r in runs]}")
    if any(len(r.losses) < 2 for r in runs):
        raise ValueError("each run needs tracked losses after step 0 (train with track_every > 0)")
    target = max(min(r.losses[1:]) for r in runs)
    steps, matched, final = {}, {}, {}
    for label, r in by_label.items():
        index = next(i for i in range(1, len(r.losses)) if r.losses[i] <= target)
        steps[label] = r.steps[index]
        matched[label] = gradients_at(r, index, n_batches, seed=seed)
        final[label] = gradients_at(r, len(r.losses) - 1, n_batches, seed=seed)
    return MatchedGradients(target=target, steps=steps, matched=matched,
                            final_step=by_label["field"].steps[-1], final=final)


def parametrisation_live(data: str = "moons", steps: int = 3000, track_every: int = 50, n_eval: int = 1000,
                         show: bool = True, seed: int = 0) -> tuple[list[ParametrisationRun], ReplayView]:
    """Train the field and the x1 head on `data`, the gradient-norm figure redrawn live, then replayable."""
    from IPython.display import display

    done: list[ParametrisationRun] = []

    def render(results: Sequence[Any], upto: int | None) -> go.Figure:
        return render_grad_norms(grad_norm_curves(results), DEFAULT_LEVELS, upto=upto, total_steps=steps)

    view = ReplayView(lambda upto: render(done, upto))
    if show:
        display(view.box)
    for config in parametrisation_configs(data, steps, seed=seed, log_every=track_every):
        def update(result: RunResult) -> None:
            view.render = lambda upto, result=result: render([*done, result], upto)
            view.live(None)

        done.append(parametrisation_run(config, track_every, n_eval, on_update=update))
        view.render = lambda upto: render(done, upto)
    view.finish(done[0].steps)
    return done, view


def parametrisation_table(steps: int, n_eval: int = 1000, track_every: int = 50, seed: int = 0,
                          datasets: Sequence[str] = PARAM_DATASETS) -> dict[str, dict[str, ParametrisationRun]]:
    """{dataset: {'field': run, 'x1 prediction': run}} (cached runs; moons reuses lab 06's live runs when the
    arguments match)."""
    table: dict[str, dict[str, ParametrisationRun]] = {}
    for data in datasets:
        for config in parametrisation_configs(data, steps, seed=seed, log_every=track_every):
            r = parametrisation_run(config, track_every, n_eval)
            table.setdefault(data, {})[r.label] = r
    return table


def summarise_gradients(results: Sequence[Any], skip_first: int = 1) -> dict[str, dict[str, Tensor]]:
    """{label: {'mean': [levels], 'max': [levels], 'cv': [levels]}} over the tracked measurements (the first
    `skip_first`, at initialisation, left out); cv = std / mean, how spiky the curve is."""
    out = {}
    for label, (_, norms) in grad_norm_curves(results).items():
        n = norms[skip_first:] if len(norms) > skip_first else norms
        out[label] = {"mean": n.mean(0), "max": n.max(0).values, "cv": n.std(0) / n.mean(0)}
    return out


__all__ += [  # lab 06
    "PARAM_DATASETS", "EVAL_LOSS_N", "MATCHED_BATCHES", "head_conversions", "x1_loss_identities",
    "parametrisation_configs", "head_label", "grad_norm_curves", "velocity_equivalent_loss", "ParametrisationRun",
    "parametrisation_run", "gradients_at", "MatchedGradients", "matched_gradients", "parametrisation_live",
    "parametrisation_table", "summarise_gradients",
]


def samples_of(model: Any, n: int = 1000, steps: int = 100, seed: int = 0) -> Tensor:
    """n samples from seeded noise with `steps` Euler steps."""
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(10_000 + seed))
    device = next(model.parameters()).device
    return solve(model, x0.to(device), steps=steps, method="euler").cpu()


def render_samples(samples: Mapping[str, Mapping[str, Tensor]], data: Mapping[str, Tensor],
                   w1: Mapping[str, Mapping[str, float]] | None = None, extent: float = 3.2) -> go.Figure:
    """A grid: one row per dataset, one column per head, model samples (green / vermillion) over the data."""
    rows, cols = list(samples), list(dict.fromkeys(c for row in samples.values() for c in row))
    titles = [f"{d}: {c}" + (f" (W1 {w1[d][c]:.3f})" if w1 and c in w1.get(d, {}) else "") for d in rows for c in cols]
    fig = make_subplots(rows=len(rows), cols=len(cols), subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.08)
    for i, d in enumerate(rows, start=1):
        for j, c in enumerate(cols, start=1):
            ref = data[d]
            fig.add_trace(go.Scatter(x=ref[:, 0].tolist(), y=ref[:, 1].tolist(), mode="markers", name="data x1",
                                     marker=dict(color=COLORS["data"], size=3, opacity=0.25), legendgroup="data",
                                     showlegend=i == 1 and j == 1), row=i, col=j)
            pts = samples[d].get(c)
            if pts is not None:
                color = _HEAD_COLORS["x1"] if "x1" in c else COLORS["model"]
                fig.add_trace(go.Scatter(x=pts[:, 0].tolist(), y=pts[:, 1].tolist(), mode="markers", name=c,
                                         marker=dict(color=color, size=4, opacity=0.8), legendgroup=c,
                                         showlegend=i == 1), row=i, col=j)
            fig.update_xaxes(range=[-extent, extent], row=i, col=j)
            fig.update_yaxes(range=[-extent, extent], scaleanchor=f"x{(i - 1) * len(cols) + j}", row=i, col=j)
    apply_style(fig, title="Samples (Euler, 100 steps) over the data")
    fig.update_layout(width=360 * len(cols) + 80, height=330 * len(rows) + 120, legend=dict(orientation="h", y=-0.05))
    fig.update_annotations(font_size=14)
    return fig


def transition_profiles(models: Mapping[str, Any], data: str = "moons", n: int = 256, n_times: int = 15,
                        euler_steps: int = 16, seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """{label: (t [n_times], mean ||T|| [n_times])}: one-step transition Jacobians along each model's own flow,
    at states generated by the model itself from seeded noise."""
    dt = 1.0 / euler_steps
    ts = torch.linspace(0.0, 1.0 - dt, n_times)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g)
    out = {}
    for label, model in models.items():
        with torch.no_grad():
            traj = solve(model, x0, steps=200, method="euler", return_trajectory=True)
        norms = []
        for t in ts.tolist():
            x = traj.xs[min(int(round(t * 200)), 200)]
            norms.append(transition_jacobians(model, x, t, dt, 1).spectral_norm[0].mean())
        out[label] = (ts, torch.stack(norms))
    return out


def transition_widget(models: Mapping[str, Any], euler_steps: int = 16) -> Any:
    """A slider for the Euler step count (dt = 1 / steps) over `render_transition_norms` (redraws on release)."""
    from .widgets import int_slider, interactive_view

    memo: dict[int, go.Figure] = {}

    def render(euler_steps: int) -> go.Figure:
        if euler_steps not in memo:
            memo[euler_steps] = render_transition_norms(transition_profiles(models, euler_steps=euler_steps),
                                                        1.0 / euler_steps)
        return memo[euler_steps]

    return interactive_view(render, {"euler_steps": int_slider("Euler steps (dt = 1/steps)", 4, 64, euler_steps,
                                                                continuous_update=False)})


# --- lab 07: unrolling runs -----------------------------------------------------------------------------------

STEP_OVERHEAD = 3.0  # per-step cost outside the network passes (data, batch, optimiser, EMA), in forward passes


def relative_cost(loss: str, settings: Mapping[str, Any]) -> float:
    """Wall time of one training step relative to single-step FM, from a cost model: a forward pass costs 1, a
    backward 2, plus a fixed per-step overhead of about one forward + backward (STEP_OVERHEAD = 3). FM: 3 + 3;
    WT-FM (BPTT, detached, with or without cross-terms): 3 + 3 L; anchored BPTT: 3 + 3 L; anchored detached:
    3 + 3 + (L - 1) (no-graph calls). It underestimates the WT-FM / FM ratios `python benchmarks/unrolling.py cost`
    measures by 7% to 18% (benchmarks/README.md), so at "equal time" unrolled losses get slightly more, never less."""
    if loss in ("cfm", "x1_prediction"):
        return 1.0
    spec = get_loss(loss)
    window = int(settings.get("window", spec.defaults.get("window", 1)))
    detach = bool(settings.get("detach", spec.defaults.get("detach", False)))
    passes = 3 + (window - 1) if loss == "anchored_consistency" and detach else 3 * window
    return (STEP_OVERHEAD + passes) / (STEP_OVERHEAD + 3)


def equal_time_config(data: str, loss: str, base_steps: int, coupling: str = "independent", seed: int = 0,
                      **settings: Any) -> Any:
    """A config whose step count gives it the training time of `base_steps` single-step FM steps (relative_cost)."""
    n = max(20, int(round(base_steps / relative_cost(loss, settings))))
    return lab_config(data, loss, coupling=coupling, train_steps=n, seed=seed, log_every=_log_every(n), **settings)


def _log_every(steps: int) -> int:
    return max(1, steps // 40)


COMPARISON = (
    ("cfm", {}),
    ("wtfm", {"window": 4, "steps": 16, "detach": False}),
    ("wtfm", {"window": 4, "steps": 16, "detach": True}),
    ("wtfm", {"window": 4, "steps": 16, "detach": True, "cross_terms": False}),
    ("anchored_consistency", {"window": 2, "steps": 16, "detach": True}),
)


def comparison_configs(data: str, base_steps: int, couplings: Sequence[str] = ("independent", "ot"),
                       methods: Sequence[tuple[str, dict]] = COMPARISON, seed: int = 0) -> list[Any]:
    """The lab's equal-compute comparison: every method x coupling."""
    return [equal_time_config(data, loss, base_steps, coupling=c, seed=seed, **settings)
            for c in couplings for loss, settings in methods]


def comparison_runs(configs: Sequence[Any], eval_steps: Sequence[int] = (16, 100), n_eval: int = 1000
                    ) -> list[RunResult]:
    return [run(c, eval_steps=eval_steps, n_eval=n_eval) for c in configs]


def comparison_table(results: Sequence[RunResult], eval_steps: Sequence[int] = (16, 100)) -> str:
    """A text table of the comparison (method, coupling, steps, W1 at each Euler step count, training time)."""
    head = f"{'method':<31}{'coupling':<13}{'steps':>6}" + "".join(f"{'W1@' + str(k):>9}" for k in eval_steps)
    lines = [head + f"{'time s':>8}", "-" * (len(head) + 8)]
    for r in results:
        lines.append(f"{r.label.replace(' + OT', ''):<31}{r.config.coupling:<13}{r.config.steps:>6}"
                     + "".join(f"{r.w1[k]:>9.3f}" for k in eval_steps) + f"{r.elapsed:>8.1f}")
    return "\n".join(lines)


def conclusion(results: Sequence[RunResult], euler_steps: int = 16, noise: float = 0.0) -> str:
    """The lab's verdict, in sentences that quote this run's numbers (W1 at `euler_steps` Euler steps).

    noise: a relative W1 difference below it is reported as "within noise" (e.g. the spread between seeds that
    benchmarks/unrolling.py measured), not as a win or a loss."""
    w1 = {r.label: r.w1[euler_steps] for r in results}

    def rel(a: str, b: str) -> str:
        change = 100 * (w1[a] / w1[b] - 1)
        within = " within noise" if abs(change) < 100 * noise else ""
        return f"{w1[a]:.3f} vs {w1[b]:.3f} ({change:+.0f}%{within})"

    lines = []
    for suffix, name in (("", "independent coupling"), (" + OT", "minibatch OT")):
        fm, bptt = "single-step FM" + suffix, "WT-FM L=4 BPTT" + suffix
        det, anc = "WT-FM L=4 detached" + suffix, "anchored L=2 (detached)" + suffix
        drop = "WT-FM L=4 cross-terms dropped" + suffix
        if not all(k in w1 for k in (fm, bptt, det, anc)):
            continue
        if abs(w1[bptt] / w1[fm] - 1) < noise:
            verdict = "is within noise of"
        else:
            verdict = "is not better than" if w1[bptt] >= w1[fm] else "beats"
        dropped = f"; WT-FM with the cross-terms dropped {rel(drop, fm)}" if drop in w1 else ""
        lines.append(f"With {name}: full BPTT (L = 4) {verdict} single-step FM at equal compute, W1 {rel(bptt, fm)}; "
                     f"detached WT-FM {rel(det, fm)}{dropped}; anchored consistency {rel(anc, fm)}.")
    pairs = [(k, k + " + OT") for k in w1 if not k.endswith(" + OT") and k + " + OT" in w1]
    if pairs:
        better = [k for k, o in pairs if w1[o] < w1[k]]
        clear = [k for k, o in pairs if w1[o] < (1 - noise) * w1[k]]
        mean_gain = 100 * sum(1 - w1[o] / w1[k] for k, o in pairs) / len(pairs)
        beyond = f", by more than the noise ({100 * noise:.0f}%) for {len(clear)}" if noise > 0 else ""
        lines.append(f"Minibatch OT lowers W1 for {len(better)} of {len(pairs)} methods{beyond} (mean change "
                     f"{-mean_gain:+.0f}%).")
    return "\n".join(lines)


def window_batch_at(data: str, n: int, t0: float, seed: int = 0) -> Any:
    """A batch of n independent pairs (x0 ~ N(0, I), x1 ~ data) whose windows all start at t0."""
    from ..losses import Batch

    g = torch.Generator().manual_seed(seed)
    x1 = sample_toy(data, n, generator=g)
    x0 = torch.randn(x1.shape, generator=g)
    return Batch(x0=x0, x1=x1, t=torch.full((n,), float(t0)))


def _fit_window(window: int, t0: float, euler_steps: int) -> tuple[int, float]:
    """Clamp the window to the step count (L <= 1 / dt) and its start so that it ends by t = 1."""
    window = min(window, euler_steps)
    return window, min(t0, 1.0 - window / euler_steps)


EULER_STEPS_SLIDER = ("Euler steps (dt = 1/steps)", 4, 64)  # the window's step size, as in lab 06


def window_widget(model: Any, data: str = "8gaussians", n: int = 12, euler_steps: int = 16, seed: int = 0) -> Any:
    """Sliders for the window length L, its start t0 and the step count 1 / dt over `render_window` (the model's
    own states z_k against the true path points of the same pairs)."""
    from .widgets import int_slider, interactive_view, slider

    batch = window_batch_at(data, n, 0.0, seed)

    def render(window: int, t0: float, euler_steps: int) -> go.Figure:
        window, t0 = _fit_window(window, t0, euler_steps)
        dt = 1.0 / euler_steps
        return render_window(window_view_data(model, batch.x0, batch.x1, t0, window, dt), t0, window, dt)

    return interactive_view(render, {"window": int_slider("window length L", 1, 16, 4),
                                     "t0": slider("window start t0", 0.0, 1.0, 0.05, 0.3),
                                     "euler_steps": int_slider(*EULER_STEPS_SLIDER, euler_steps)})


def decomposition_widget(model: Any, data: str = "8gaussians", n: int = 512, euler_steps: int = 16,
                         seed: int = 0) -> Any:
    """Sliders for L, t0 and the step count 1 / dt over `render_decomposition` of the terminal loss on a fixed batch."""
    from ..diagnostics import kstep_decomposition
    from .widgets import int_slider, interactive_view, slider

    def render(window: int, t0: float, euler_steps: int) -> go.Figure:
        window, t0 = _fit_window(window, t0, euler_steps)
        batch = window_batch_at(data, n, t0, seed)
        d = kstep_decomposition(model, batch, window, euler_steps)
        share = float(d.cross_total / d.terminal) if float(d.terminal) else 0.0
        return render_decomposition(d, f"terminal loss, L = {window}, t0 = {t0:.2f}, dt = 1/{euler_steps}: "
                                       f"cross-terms {100 * share:.0f}% of {float(d.terminal):.2e}")

    return interactive_view(render, {"window": int_slider("window length L", 1, 8, 4, continuous_update=False),
                                     "t0": slider("window start t0", 0.0, 0.5, 0.05, 0.2, continuous_update=False),
                                     "euler_steps": int_slider(*EULER_STEPS_SLIDER, euler_steps,
                                                               continuous_update=False)})


def variant_batch(data: str, n: int, window: int, euler_steps: int, seed: int = 0) -> Any:
    """n independent pairs with window starts t0 drawn as in training (`fmlab.losses.unrolled.window_batch`)."""
    from ..losses.unrolled import window_batch

    g = torch.Generator().manual_seed(seed)
    x1 = sample_toy(data, n, generator=g)
    x0 = torch.randn(x1.shape, generator=g)
    return window_batch(x0, x1, torch.Generator().manual_seed(seed), window=window, steps=euler_steps)


def variant_rows(model: Any, data: str = "8gaussians", windows: Sequence[int] = (1, 2, 4, 8), n: int = 512,
                 euler_steps: int = 16, seed: int = 0) -> list[dict[str, Any]]:
    """For each L and each WT-FM variant (full BPTT, states detached, cross-terms dropped): the loss, ||grad||, the
    cross-terms' share of the gradient and its cosine to the full-BPTT gradient (`fmlab.diagnostics.
    variant_gradients`), on one batch per L."""
    from ..diagnostics import variant_gradients

    rows = []
    for w in windows:
        batch = variant_batch(data, n, w, euler_steps, seed)
        for name, r in variant_gradients(model, batch, w, euler_steps).items():
            rows.append({"L": w, "variant": name, **r})
    return rows


def variant_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """`variant_rows` as a text table."""
    head = f"{'L':>2}  {'variant':<20}{'loss':>9}{'|grad|':>9}{'cross-term share':>18}{'cosine to BPTT':>16}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['L']:>2}  {r['variant']:<20}{r['loss']:>9.4f}{r['grad_norm']:>9.4f}"
                     f"{100 * r['cross_share']:>17.0f}%{r['cosine_to_bptt']:>16.4f}")
    return "\n".join(lines)


GRADIENT_LOSSES = {"WT-FM (terminal loss)": "wtfm", "anchored consistency": "anchored_consistency"}


def call_gradients(model: Any, batch: Any, loss: str, window: int, steps: int, detach: bool,
                   cross_terms: bool = True) -> dict[str, Tensor]:
    """{part: [L, P]}: the gradient of each part of the loss through each network call of the window
    (`fmlab.diagnostics.per_call_gradients`). WT-FM: single-step terms and cross-terms; anchored consistency
    (weights 0.8 / 0.2): anchor and consistency term."""
    from ..diagnostics import per_call_gradients, wtfm_gradient_split
    from ..losses.unrolled import anchored_consistency_loss

    if loss == "wtfm":
        split = wtfm_gradient_split(model, batch, window, steps, detach=detach, cross_terms=cross_terms)
        return {"single-step terms": split.single, "cross-terms": split.cross}
    if loss == "anchored_consistency":
        def part(w_a: float, w_c: float) -> Tensor:
            return per_call_gradients(model, lambda m: anchored_consistency_loss(
                m, batch, window=window, steps=steps, detach=detach, anchor_weight=w_a, consistency_weight=w_c)[0])

        return {"anchor": part(0.8, 0.0), "consistency": part(0.0, 0.2)}
    raise ValueError(f"loss must be one of {sorted(GRADIENT_LOSSES.values())}, got {loss!r}")


_PART_COLORS = {"single-step terms": COLORS["model"], "cross-terms": COLORS["highlight"], "anchor": COLORS["model"],
                "consistency": "#CC79A7"}


def projections(parts: Mapping[str, Tensor]) -> dict[str, float]:
    """{part: <g_part, g> / ||g||}: how much of ||g|| (g the whole gradient) each part supplies along g's direction.
    They sum to ||g||; divided by ||g|| they are the parts' shares (`WindowGradients.cross_share`)."""
    totals = {name: rows.sum(0) for name, rows in parts.items()}
    g = sum(totals.values())
    norm = float(g.norm())
    return {name: (float(v @ g) / norm if norm > 0 else 0.0) for name, v in totals.items()}


def render_call_gradients(variants: Mapping[str, Mapping[str, Tensor]], selected: str, title: str) -> go.Figure:
    """Left: for the selected variant, the norm of each part's gradient through each network call k (and of their
    sum, black). Right: every variant's ||grad|| as a bar split into the parts' projections onto its direction."""
    parts = variants[selected]
    calls = list(range(next(iter(parts.values())).shape[0]))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.16,
                        subplot_titles=(f"{selected}: gradient through each network call",
                                        "||grad||, split by part (projection onto grad)"))
    for name, rows in parts.items():
        fig.add_trace(go.Bar(x=calls, y=rows.norm(dim=1).tolist(), name=name, legendgroup=name, offsetgroup=name,
                             marker_color=_PART_COLORS.get(name, COLORS["path"])), row=1, col=1)
    total = sum(parts.values()).norm(dim=1)
    fig.add_trace(go.Scatter(x=calls, y=total.tolist(), mode="markers", name="both parts together",
                             marker=dict(color=COLORS["reference"], symbol="diamond", size=11)), row=1, col=1)
    names = list(variants)
    base = [0.0] * len(names)
    for part in parts:  # stacked: one offset group, each part starting where the previous ended
        values = [projections(variants[v]).get(part, 0.0) for v in names]
        fig.add_trace(go.Bar(x=names, y=values, base=list(base), name=part, legendgroup=part, showlegend=False,
                             offsetgroup="projection", marker_color=_PART_COLORS.get(part, COLORS["path"]),
                             marker_line=dict(color=[COLORS["reference"] if v == selected else "rgba(0,0,0,0)"
                                                     for v in names], width=3)), row=1, col=2)
        base = [b + v for b, v in zip(base, values, strict=True)]
    apply_style(fig, title=title)
    fig.update_layout(barmode="group", width=1060, height=540, legend=dict(orientation="h", y=-0.22),
                      title_font_size=15)
    fig.update_xaxes(title_text="network call k (prediction v\u0302_k)", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="gradient norm", row=1, col=1)
    fig.update_yaxes(title_text="projection onto grad", row=1, col=2)
    return fig


def gradient_view(model: Any, batch: Any, loss: str, window: int, steps: int, detach: bool,
                  cross_terms: bool = True) -> go.Figure:
    """The per-call gradient of the current model on `batch` for one setting, beside the other settings of the
    same loss (WT-FM: full BPTT, states detached, cross-terms dropped; anchored: teacher detached or not)."""
    from ..losses.unrolled import WTFM_VARIANTS

    if loss == "wtfm":
        settings = dict(WTFM_VARIANTS)
        chosen = next((name for name, s in settings.items() if s == {"detach": detach, "cross_terms": cross_terms}),
                      "BPTT, cross-terms dropped")
        settings.setdefault(chosen, {"detach": detach, "cross_terms": cross_terms})
    else:
        settings = {"teacher detached": {"detach": True}, "full BPTT": {"detach": False}}
        chosen = "teacher detached" if detach else "full BPTT"
    variants = {name: call_gradients(model, batch, loss, window, steps, **s) for name, s in settings.items()}
    g = {name: sum(parts.values()).sum(0) for name, parts in variants.items()}
    bptt = g["full BPTT"]
    cosine = float(torch.nn.functional.cosine_similarity(g[chosen], bptt, dim=0))
    second = list(variants[chosen])[1]  # the cross-terms (WT-FM) or the consistency term (anchored)
    norm = float(g[chosen].norm())
    share = projections(variants[chosen])[second] / norm if norm > 0 else 0.0
    name = "WT-FM" if loss == "wtfm" else "anchored consistency"
    title = (f"{name}, {chosen}, L = {window}, dt = 1/{steps}: ||grad|| = {norm:.3g}, {second} "
             f"{100 * share:.0f}% of it, cosine to full BPTT {cosine:.3f}")
    return render_call_gradients(variants, chosen, title)


def gradient_widget(model: Any, data: str = "8gaussians", n: int = 256, euler_steps: int = 16,
                    seed: int = 0) -> Any:
    """Loss, L, step count, detach and cross-terms controls over `gradient_view` for the current model on a fixed
    set of pairs: nothing trains, every change redraws at once."""
    from .widgets import checkbox, dropdown, enable_when, int_slider, interactive_view

    def render(loss: str, window: int, euler_steps: int, detach: bool, cross_terms: bool) -> go.Figure:
        window = min(window, euler_steps)
        if loss == "anchored_consistency":
            window = max(window, 2)  # the teacher is the mean of the predictions after the first
        batch = variant_batch(data, n, window, euler_steps, seed)
        return gradient_view(model, batch, loss, window, euler_steps, detach, cross_terms)

    view = interactive_view(render, {
        "loss": dropdown("loss", GRADIENT_LOSSES),
        "window": int_slider("window length L", 1, 8, 4, continuous_update=False),
        "euler_steps": int_slider(*EULER_STEPS_SLIDER, euler_steps, continuous_update=False),
        "detach": checkbox("detach (stop-gradient between steps)", False),
        "cross_terms": checkbox("keep the cross-terms (WT-FM)", True)})
    enable_when(view.controls["cross_terms"], view.controls["loss"], lambda loss: loss == "wtfm")
    return view


def variance_live(data: str = "8gaussians", steps: int = 2000, every: int = 250, windows: Sequence[int] = (1, 2, 4, 8),
                  t0: float = 0.25, batches: int = 16, n_eval: int = 1000, show: bool = True
                  ) -> tuple[list[RunResult], ReplayView]:
    """Train single-step FM with independent and with OT coupling; the cross-term gradient variance against L is
    measured every `every` steps on the model being trained and drawn live, with Var(x1 | x_t0)^L beside it
    (closed form for mixtures fmlab.data ships, e.g. 8gaussians)."""
    from ..data import gmm_2d
    from ..diagnostics import posterior_variance_power

    closed = None
    if data in GMM_FOR_DATA:
        closed = (list(windows), posterior_variance_power(gmm_2d(GMM_FOR_DATA[data]), t0, windows)[1])
    configs = [lab_config(data, "cfm", coupling=c, train_steps=steps, log_every=every) for c in ("independent", "ot")]

    def render(results: Sequence[RunResult], upto: int | None) -> go.Figure:
        latest = {}
        for r in results:
            pick = [i for i, s in enumerate(r.var_steps) if upto is None or s <= upto]
            if pick:
                latest["independent" if r.config.coupling == "independent" else "OT"] = r.variances[pick[-1]]
        step = upto if upto is not None else (results[-1].var_steps[-1] if results and results[-1].var_steps else 0)
        return render_variance(latest, closed, step=step)

    return live_run(configs, render, lambda r: r.var_steps, show=show, variance_every=every,
                    variance_windows=windows, variance_t0=t0, variance_batches=batches, eval_steps=(100,),
                    n_eval=n_eval)


FM_KEYS = ("mse", "first_step_fm", "anchor")  # the single-step FM error each loss logs for its first prediction


def fm_curve(result: RunResult) -> tuple[list[float], list[float]]:
    """(training time in single-step FM steps, by relative_cost; single-step FM error of the first prediction)."""
    cost = relative_cost(result.config.loss, result.config.loss_settings)
    xs, ys = [], []
    for rec in result.log:
        key = next((k for k in FM_KEYS if k in rec), "loss")
        xs.append(rec["step"] * cost)
        ys.append(rec[key])
    return xs, ys


def render_unrolling_run(result: RunResult, baseline: RunResult, euler_steps: int = 16, n: int = 600,
                         note: str = "") -> go.Figure:
    """Left: samples of the run (Euler, `euler_steps` steps) over the data. Right: single-step FM error of the
    first prediction against training time, for the run and for single-step FM (same coupling, same compute)."""
    data = sample_toy(result.config.data, n, generator=torch.Generator().manual_seed(7))
    pts = samples_of(result.model, n, euler_steps)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12,
                        subplot_titles=(f"samples, {euler_steps} Euler steps", "FM error of the first prediction"))
    fig.add_trace(go.Scatter(x=data[:, 0].tolist(), y=data[:, 1].tolist(), mode="markers", name="data x1",
                             marker=dict(color=COLORS["data"], size=3, opacity=0.35)), row=1, col=1)
    fig.add_trace(go.Scatter(x=pts[:, 0].tolist(), y=pts[:, 1].tolist(), mode="markers", name=result.label,
                             marker=dict(color=COLORS["model"], size=3, opacity=0.7)), row=1, col=1)
    for r, color, dash in ((baseline, COLORS["reference"], "dash"), (result, COLORS["model"], "solid")):
        xs, ys = fm_curve(r)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=r.label + (" (baseline)" if r is baseline else ""),
                                 line=dict(color=color, dash=dash, width=2), showlegend=r is baseline), row=1, col=2)
    fig.update_xaxes(range=[-3.2, 3.2], row=1, col=1)
    fig.update_yaxes(range=[-3.2, 3.2], scaleanchor="x", row=1, col=1)
    fig.update_xaxes(title_text="training time (in single-step FM steps)", row=1, col=2)
    fig.update_yaxes(title_text="MSE / coordinate", row=1, col=2)
    w1, w1b = result.w1[euler_steps], baseline.w1[euler_steps]
    apply_style(fig, title=f"{result.label}: W1 = {w1:.3f} vs single-step FM {w1b:.3f} "
                           f"({euler_steps} steps){note}")
    fig.update_layout(width=1000, height=500, legend=dict(orientation="h", y=-0.15), title_font_size=17)
    return fig


def _w1_at(result: RunResult, steps: int, n_eval: int) -> float:
    """W1 of a finished run at `steps` Euler steps, evaluated once and kept in result.w1 (no retraining)."""
    if steps not in result.w1:
        result.w1[steps] = evaluate_w1(result.model, result.config.data, steps=steps, n=n_eval, seed=result.config.seed)
    return result.w1[steps]


TRAINING_STEP_COUNTS = (8, 16, 32)  # the window's dt = 1 / steps offered by the training view


def unrolling_widget(data: str = "8gaussians", base_steps: int = 2000, n_eval: int = 1000,
                     euler_steps: int = 16) -> Any:
    """Loss, window length L, step count (dt), detach, cross-terms and OT controls driving equal-compute training
    runs (cached: flipping a control back to a trained configuration is instant). Each run is sampled with the
    Euler step of its window; the single-step FM baseline (same coupling) is trained once and sampled the same way."""
    import ipywidgets as W

    from .widgets import View, checkbox, dropdown, enable_when, int_slider

    def render(loss: str, window: int, euler_steps: int, detach: bool, cross_terms: bool, ot: bool) -> go.Figure:
        note = ""
        window = min(window, euler_steps)
        if loss == "anchored_consistency" and window < 2:
            window, note = 2, " (anchored needs L >= 2)"
        coupling = "ot" if ot else "independent"
        base = run(equal_time_config(data, "cfm", base_steps, coupling=coupling), eval_steps=(16, 100),
                   n_eval=n_eval, progress=False)
        settings = {"window": window, "steps": euler_steps, "detach": detach}
        if loss == "wtfm" and not cross_terms:  # only when off: the default run is the comparison's (cached)
            settings["cross_terms"] = False
        result = run(equal_time_config(data, loss, base_steps, coupling=coupling, **settings), eval_steps=(16, 100),
                     n_eval=n_eval, progress=False)
        _w1_at(base, euler_steps, n_eval)
        _w1_at(result, euler_steps, n_eval)
        return render_unrolling_run(result, base, euler_steps, note=note)

    controls = {"loss": dropdown("loss", {"WT-FM (terminal loss)": "wtfm",
                                          "anchored consistency": "anchored_consistency"}),
                "window": int_slider("window length L", 1, 8, 4, continuous_update=False),
                "euler_steps": dropdown("Euler steps (dt = 1/steps)", list(TRAINING_STEP_COUNTS), euler_steps),
                "detach": checkbox("detach (stop-gradient between steps)", False),
                "cross_terms": checkbox("keep the cross-terms (WT-FM)", True),
                "ot": checkbox("minibatch OT coupling", False)}
    view = View(render, controls, per_row=3)
    enable_when(controls["cross_terms"], controls["loss"], lambda loss: loss == "wtfm")
    view.children = (W.HTML("<i>Each new setting trains once (a few seconds to a minute); settings seen "
                            "before redraw at once.</i>"),) + tuple(view.children)
    return view


# --- widgets: live figures and replay -----------------------------------------------------------------------------

class ReplayView:
    """A live FigureWidget redrawn by `render(upto=step)` while a run trains, then replayable with a play control
    and a step slider (ipywidgets.Play linked to an IntSlider)."""

    def __init__(self, render: Callable[[int | None], go.Figure], steps: Sequence[int] = (0,),
                 interval_ms: int = 300):
        import ipywidgets as W

        from .widgets import figure_widget

        self.render = render
        self.figure = figure_widget(render(None))
        self.slider = W.IntSlider(value=0, min=0, max=max(1, len(steps) - 1), description="measurement",
                                  continuous_update=True, style={"description_width": "initial"})
        self.play = W.Play(value=0, min=0, max=self.slider.max, interval=interval_ms, description="play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.steps = list(steps)
        self.slider.observe(lambda change: self._show(change["new"]), names="value")
        self.box = W.VBox([W.HBox([self.play, self.slider]), self.figure])

    def live(self, upto: int | None = None) -> None:
        """Redraw with everything measured so far (called from a training callback)."""
        from .widgets import update_figure

        update_figure(self.figure, self.render(upto))

    def finish(self, steps: Sequence[int]) -> None:
        """Training done: the slider now replays the measurements at `steps`."""
        self.steps = list(steps)
        top = max(1, len(self.steps) - 1)
        self.play.max = self.slider.max = top
        self.slider.value = top
        self.live(None)

    def _show(self, index: int) -> None:
        if self.steps:
            self.live(self.steps[min(index, len(self.steps) - 1)])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)


def live_run(configs: Sequence[Any], render: Callable[[Sequence[RunResult], int | None], go.Figure],
             steps_of: Callable[[RunResult], Sequence[int]], show: bool = True, **run_kwargs: Any
             ) -> tuple[list[RunResult], ReplayView]:
    """Train several configs one after the other, redrawing one figure live as each measures, then make it
    replayable. render(results, upto) draws all runs; steps_of(result) lists the steps to replay."""
    from IPython.display import display

    done: list[RunResult] = []
    view = ReplayView(lambda upto: render(done, upto))
    if show:
        display(view.box)
    for config in configs:
        def update(result: RunResult) -> None:
            view.render = lambda upto, result=result: render(done + [result], upto)
            view.live(None)

        done.append(run(config, on_update=update, **run_kwargs))
        view.render = lambda upto: render(done, upto)
    view.finish(steps_of(done[0]) if done else [0])
    return done, view


def fast() -> bool:
    """FMLAB_FAST=1: the labs shrink their training (same code path)."""
    return fast_mode()
