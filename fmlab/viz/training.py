"""Figures and wiring for lab 03, training flow matching: a live loss curve, particles carried from noise to
data, and the learned velocity field beside the closed-form one.

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise x0 ~ N(0, I), t = 1 is data x1; x_t = (1 - t) x0 + t x1 on the
linear path. The conditional flow-matching loss (per-sample MSE, averaged over the d coordinates) splits as

    L(theta) = E_{t, x0, x1} ||v_theta(x_t, t) - (x1 - x0)||^2 / d
             = L*  +  E_{t, x_t} ||v_theta(x_t, t) - v*(x_t, t)||^2 / d,          v* = E[x1 - x0 | x_t],

where the floor L* = E ||x1 - x0 - v*(x_t, t)||^2 / d does not depend on theta. For Gaussian-mixture data
(fmlab.data.gmm_2d) v* is closed-form, so the lab draws both terms while the network trains.

The shared 2D helpers (`grid`, `arrow_traces`, `density_contour`, `scatter`) are also used by the solver and
coupling figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..checks import check_int
from ..data import GMM_2D, GaussianMixture, data_sampler, gmm_2d
from ..labkit import cache_key, persisted, restore_trainer, trainer_state
from ..solvers import Field, solve
from .style import COLORS, FONT_SIZE, NOTEBOOK_WIDTH, apply_style, log_ticks, to_numpy

__all__ = ["EXTENT", "AXIS_X", "AXIS_Y", "grid", "arrow_traces", "density_contour", "scatter", "blend",
           "loss_floor", "field_error", "loss_decomposition", "ground_truth", "render_loss_curve", "fit",
           "fit_live", "particle_paths", "render_particle_animation", "render_field_comparison",
           "field_comparison_widget", "lab03_config", "prewarm_jobs"]

EXTENT = 4.5  # plots of 2D data cover [-EXTENT, EXTENT]^2
AXIS_X, AXIS_Y = "coordinate 1", "coordinate 2"


# --- shared 2D helpers ---------------------------------------------------------------------------------------

def grid(extent: float = EXTENT, n: int = 15) -> Tensor:
    """n * n points [n*n, 2] (float32) on a regular grid over [-extent, extent]^2, x varying fastest."""
    if not extent > 0:
        raise ValueError(f"extent must be > 0, got {extent}")
    check_int(n, "n", 2)
    axis = torch.linspace(-extent, extent, n)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def arrow_traces(points: Tensor, vectors: Tensor, scale: float, color: str, name: str,
                 showlegend: bool = True, width: float = 2.0) -> list[go.Scatter]:
    """A quiver plot as two plotly traces: shafts from p to p + scale v (one polyline broken by NaN gaps) and
    arrow-head markers at the tips, turned along v (plotly angles run clockwise from 'up'). Arrays go to plotly as
    numpy (validated and sent as typed arrays: several times faster than lists for a slider's redraw)."""
    p = points.detach().double().cpu()
    tip = p + scale * vectors.detach().double().cpu()
    gap = torch.full((len(p), 1), float("nan"), dtype=torch.float64)
    xs = to_numpy(torch.cat([p[:, :1], tip[:, :1], gap], dim=1).reshape(-1))  # x0, x1, gap, ...
    ys = to_numpy(torch.cat([p[:, 1:], tip[:, 1:], gap], dim=1).reshape(-1))
    angle = torch.rad2deg(torch.atan2(vectors[:, 0].double(), vectors[:, 1].double())).cpu()  # clockwise from up
    length = (tip - p).norm(dim=1)
    size = (4 + 40 * length).clamp(max=10).where(length > 1e-3, torch.zeros_like(length))  # no head on a dot
    shafts = go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=width), name=name,
                        legendgroup=name, showlegend=showlegend, hoverinfo="skip")
    heads = go.Scatter(x=to_numpy(tip[:, 0]), y=to_numpy(tip[:, 1]), mode="markers", legendgroup=name,
                       marker=dict(symbol="arrow", size=to_numpy(size), angle=to_numpy(angle), color=color),
                       showlegend=False, hoverinfo="skip")
    return [shafts, heads]


def density_contour(gmm: GaussianMixture, t: float, extent: float = EXTENT, n: int = 61,
                    showscale: bool = False) -> go.Contour:
    """Contour lines of the marginal density p_t of the mixture (grey), for orientation behind other traces."""
    pts = grid(extent, n)
    dens = gmm.marginal_log_prob(pts, float(t)).exp().reshape(n, n)
    axis = to_numpy(torch.linspace(-extent, extent, n))
    return go.Contour(x=axis, y=axis, z=to_numpy(dens), contours=dict(coloring="lines"), ncontours=8,
                      line=dict(width=1), colorscale=[[0, "#cccccc"], [1, "#777777"]], showscale=showscale,
                      name="density p_t", hoverinfo="skip")


def scatter(x: Tensor, color: str, name: str, size: float = 4, opacity: float = 0.7,
            showlegend: bool = True) -> go.Scatter:
    """Points [n, 2] as a marker trace."""
    x = x.detach().cpu()
    return go.Scatter(x=to_numpy(x[:, 0]), y=to_numpy(x[:, 1]), mode="markers", name=name, showlegend=showlegend,
                      marker=dict(color=color, size=size, opacity=opacity))


def blend(color_a: str, color_b: str, w: float) -> str:
    """The hex colour (1 - w) a + w b (w in [0, 1]): particles fade from the noise to the model colour."""
    w = min(max(float(w), 0.0), 1.0)
    a = [int(color_a[i:i + 2], 16) for i in (1, 3, 5)]
    b = [int(color_b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round((1 - w) * u + w * v):02x}" for u, v in zip(a, b, strict=True))


def _square(fig: go.Figure, extent: float, row: int | None = None, col: int | None = None) -> None:
    kw = {} if row is None else {"row": row, "col": col}
    fig.update_xaxes(range=[-extent, extent], title_text=AXIS_X, **kw)
    fig.update_yaxes(range=[-extent, extent], title_text=AXIS_Y, **kw)


# --- ground truth: the loss floor and the field error ------------------------------------------------------------

def _path_batch(gmm: GaussianMixture, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, t, x1 - x0) for n draws t ~ U[0, 1], x0 ~ N(0, I), x1 ~ data, from a generator seeded with seed."""
    g = torch.Generator().manual_seed(seed)
    x1 = gmm.sample(n, generator=g).double()
    x0 = torch.randn(x1.shape, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    return (1 - t[:, None]) * x0 + t[:, None] * x1, t, x1 - x0  # x_t = (1 - t) x0 + t x1, u = x1 - x0


def loss_floor(gmm: GaussianMixture, n: int = 20000, seed: int = 0) -> float:
    """Monte Carlo L* = E_{t, x0, x1} ||x1 - x0 - v*(x_t, t)||^2 / d: the lowest flow-matching loss any network
    can reach (the conditional targets x1 - x0 scatter around their mean v* at every x_t)."""
    x_t, t, u = _path_batch(gmm, n, seed)
    return float((u - gmm.velocity(x_t, t)).pow(2).mean())


def field_error(field: Field, gmm: GaussianMixture, n: int = 4000, seed: int = 1) -> float:
    """Monte Carlo E_{t, x_t ~ p_t} ||v_theta(x_t, t) - v*(x_t, t)||^2 / d: how far the field is from the optimum,
    i.e. the part of the loss that training can still remove."""
    x_t, t, _ = _path_batch(gmm, n, seed)
    with torch.no_grad():
        v = _as_f64(field(x_t.float(), t.float()))
    return float((v - gmm.velocity(x_t, t)).pow(2).mean())


def loss_decomposition(field: Field, gmm: GaussianMixture, n: int = 20000, seed: int = 0) -> dict[str, float]:
    """On one Monte Carlo batch of n draws: the flow-matching loss of `field`, the floor L* and the field error,
    which satisfy loss = floor + field_error up to Monte Carlo noise (the cross term has mean zero)."""
    x_t, t, u = _path_batch(gmm, n, seed)
    with torch.no_grad():
        v = _as_f64(field(x_t.float(), t.float()))
    v_star = gmm.velocity(x_t, t)
    return {"loss": float((v - u).pow(2).mean()),  # E ||v_theta - (x1 - x0)||^2 / d
            "floor": float((u - v_star).pow(2).mean()),  # E ||(x1 - x0) - v*||^2 / d
            "field_error": float((v - v_star).pow(2).mean())}  # E ||v_theta - v*||^2 / d


def _as_f64(v: Tensor) -> Tensor:
    return v.detach().cpu().double()


# --- training with a live loss curve ------------------------------------------------------------------------------

def ground_truth(name: str) -> GaussianMixture | None:
    """The closed-form mixture behind a dataset name: gmm_2d names, and '8gaussians' (= gmm_2d('8modes'))."""
    if name in GMM_2D:
        return gmm_2d(name)
    return gmm_2d("8modes") if name == "8gaussians" else None


def _optimum_known(config: Any) -> GaussianMixture | None:
    """The mixture whose velocity v* is the optimum of `config`'s loss: plain CFM with independent pairs only
    (other couplings and reflow change the target field)."""
    if config.loss != "cfm" or config.coupling != "independent":
        return None
    return ground_truth(config.data)


def render_loss_curve(log: Sequence[dict[str, Any]], floor: float | None = None, total_steps: int | None = None,
                      title: str | None = None) -> go.Figure:
    """Training loss against step (log y axis) from trainer records {'step', 'loss', optional 'field_error'};
    with the floor L* as a dashed line, so loss - floor = field error is visible while training runs."""
    steps = [r["step"] for r in log]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=[r["loss"] for r in log], mode="lines+markers", name="training loss",
                             line=dict(color=COLORS["model"], width=3), marker=dict(size=5)))
    err = [(r["step"], r["field_error"]) for r in log if r.get("field_error") is not None]
    fig.add_trace(go.Scatter(x=[s for s, _ in err], y=[e for _, e in err], mode="lines+markers",
                             name="field error E‖v<sub>θ</sub> − v*‖²/d", line=dict(color=COLORS["highlight"],
                             width=2, dash="dot"), marker=dict(size=5)))
    xmax = total_steps if total_steps is not None else (max(steps) if steps else 1)
    if floor is not None:
        fig.add_trace(go.Scatter(x=[0, xmax], y=[floor, floor], mode="lines", name=f"floor L* = {floor:.3f}",
                                 line=dict(color=COLORS["reference"], width=2, dash="dash")))
    if title is None:
        last = f"{log[-1]['loss']:.3f} at step {log[-1]['step']}" if log else "not started"
        title = f"Flow-matching loss: {last}"
    apply_style(fig, title=title, x_title="training step", y_title="loss (mean squared error per coordinate)")
    fig.update_yaxes(type="log", **log_ticks([y for trace in fig.data for y in trace.y]))
    fig.update_xaxes(range=[0, xmax])
    fig.update_layout(legend=dict(orientation="h", x=0.0, y=-0.22, yanchor="top"), height=560, margin=dict(b=120))
    return fig


_LIVE: dict[str, Any] = {}  # the figure that the running fit reports to (set only while fit_live trains)


def fit(config: Any, teacher: Any = None, progress: bool = True) -> Any:
    """Train `config` (a fmlab.train.TrainConfig) once on `data_sampler(config.data)`; returns the Trainer.

    `teacher`: a TrainConfig whose (cached) EMA model is the reflow teacher (loss 'reflow'). When the optimum is
    closed-form (CFM, independent coupling, mixture data) records carry 'field_error' (see `field_error`).
    A second call with equal arguments returns the same trainer at once, and a new kernel loads it from disk
    (fmlab.labkit.persisted). `progress`: a tqdm bar while it trains.
    """

    def from_state(state: dict[str, Any]) -> Any:
        _LIVE.clear()  # nothing trains live here (a teacher missing from the cache trains silently)
        return restore_trainer(_build(config, teacher), state)

    return persisted(cache_key("fmlab.viz.training.fit", config, teacher), lambda: _fit(config, teacher, progress),
                     trainer_state, from_state)


def _build(config: Any, teacher: Any) -> Any:
    """The untrained Trainer of `config` (with the trained teacher's EMA model for reflow)."""
    from ..train import Trainer

    runtime = {} if teacher is None else {"teacher": fit(teacher).ema}
    return Trainer(config, data_fn=data_sampler(config.data), runtime_settings=runtime)


def _fit(config: Any, teacher: Any, progress: bool) -> Any:
    sink, progress = _LIVE.pop("callback", None), _LIVE.pop("progress", progress)  # the teacher trains silently
    trainer = _build(config, teacher)
    gmm = _optimum_known(config)

    def callback(step: int, record: dict[str, Any]) -> None:
        if gmm is not None:
            record["field_error"] = field_error(trainer.ema, gmm, n=2000)
        if sink is not None:
            sink(trainer)

    trainer.fit(progress=progress, callback=callback)
    trainer.ema.requires_grad_(False).eval()
    return trainer


def fit_live(config: Any, teacher: Any = None, show: bool = True, progress: bool = True) -> Any:
    """`fit(config)` with a progress bar and a loss curve (a plotly FigureWidget) redrawn at every log record.

    Cached: a second call with an equal config returns the same trainer at once and draws its final curve.
    """
    from .widgets import figure_widget, show_final, show_live, update_figure

    gmm = _optimum_known(config)
    floor = loss_floor(gmm) if gmm is not None else None
    title = f"Training {config.loss} ({config.coupling} coupling) on {config.data}"
    widget = figure_widget(render_loss_curve([], floor, config.steps, title=title))
    if show:
        show_live(widget)
    _LIVE.update(callback=lambda tr: _update_curve(widget, tr.log, f"{title}: step {tr.step} of {config.steps}"),
                 progress=progress)
    try:
        trainer = fit(config, teacher)
    finally:
        _LIVE.clear()
    final = f"{title}: loss {trainer.log[-1]['loss']:.3f} after {trainer.step} steps"
    update_figure(widget, render_loss_curve(trainer.log, floor, config.steps, final))
    if show:
        show_final(widget)
    return trainer


def _update_curve(widget: go.FigureWidget, log: Sequence[dict[str, Any]], title: str) -> None:
    """Set the loss and field-error traces of a live `render_loss_curve` widget in place (cheap: no re-styling)."""
    err = [(r["step"], r["field_error"]) for r in log if r.get("field_error") is not None]
    floor = [y for trace in widget.data[2:] for y in (trace.y or ())]
    ticks = log_ticks([r["loss"] for r in log] + [e for _, e in err] + floor)
    with widget.batch_update():
        widget.data[0].x, widget.data[0].y = [r["step"] for r in log], [r["loss"] for r in log]
        widget.data[1].x, widget.data[1].y = [s for s, _ in err], [e for _, e in err]
        widget.layout.yaxis.update(tickvals=ticks.get("tickvals"), ticktext=ticks.get("ticktext"))
        widget.layout.title.text = title


# --- particles carried from noise to data ------------------------------------------------------------------------

def particle_paths(field: Field, n: int = 400, steps: int = 50, method: str = "rk4", seed: int = 0) -> Any:
    """Trajectory (xs [steps+1, n, 2], ts) of n noise particles x0 ~ N(0, I) (seeded) solved to t = 1."""
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return solve(field, x0, steps=steps, method=method, return_trajectory=True)


def render_particle_animation(xs: Tensor, ts: Tensor, data: Tensor | None = None, n_trails: int = 30,
                              max_frames: int = 51, title: str = "Particles carried by the learned flow",
                              extent: float = EXTENT) -> go.Figure:
    """An animated figure (play button and time slider) of particles xs [n+1, B, 2] at times ts [n+1].

    Particles fade from the noise colour (t = 0) to the model colour (t = 1); `data` (if given) is drawn behind
    them; the first n_trails particles leave a grey trail up to the current time.
    """
    if xs.ndim != 3 or xs.shape[-1] != 2 or xs.shape[0] != len(ts):
        raise ValueError(f"xs must have shape [len(ts), B, 2], got {tuple(xs.shape)} with {len(ts)} times")
    xs, ts = xs.detach().cpu(), ts.detach().cpu().double()
    idx = torch.linspace(0, len(ts) - 1, min(max_frames, len(ts))).round().long().unique()
    trails = xs[:, :n_trails]

    def trail_xy(k: int) -> tuple[list, list]:
        xs_: list[float | None] = []
        ys_: list[float | None] = []
        for j in range(trails.shape[1]):
            xs_ += trails[: k + 1, j, 0].tolist() + [None]
            ys_ += trails[: k + 1, j, 1].tolist() + [None]
        return xs_, ys_

    def frame_traces(k: int) -> list[go.Scatter]:
        tx, ty = trail_xy(k)
        color = blend(COLORS["noise"], COLORS["model"], float(ts[k]))
        return [go.Scatter(x=tx, y=ty, mode="lines", line=dict(color=COLORS["path"], width=1), name="trails"),
                go.Scatter(x=xs[k, :, 0].tolist(), y=xs[k, :, 1].tolist(), mode="markers", name="particles x_t",
                           marker=dict(color=color, size=5, opacity=0.85))]

    fig = go.Figure()
    fig.add_trace(scatter(data, COLORS["data"], "data x1", size=4, opacity=0.25) if data is not None
                  else go.Scatter(x=[], y=[], mode="markers", name="data x1"))
    for trace in frame_traces(int(idx[0])):
        fig.add_trace(trace)
    fig.frames = [go.Frame(data=frame_traces(int(k)), traces=[1, 2], name=f"{float(ts[k]):.2f}") for k in idx]
    slider_steps = [dict(method="animate", label=f"{float(ts[k]):.2f}",
                         args=[[f"{float(ts[k]):.2f}"], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                                              transition=dict(duration=0))]) for k in idx]
    play = dict(label="▶ play", method="animate",
                args=[None, dict(frame=dict(duration=80, redraw=False), transition=dict(duration=0), fromcurrent=True)])
    pause = dict(label="❚❚ pause", method="animate",
                 args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])
    apply_style(fig, title=title, x_title=AXIS_X, y_title=AXIS_Y, square=True)
    fig.update_layout(
        height=700, width=820, margin=dict(b=150, r=180),
        updatemenus=[dict(type="buttons", buttons=[play, pause], direction="down", x=1.02, y=0.55,
                          xanchor="left", yanchor="top", showactive=False, font=dict(size=FONT_SIZE - 2))],
        sliders=[dict(steps=slider_steps, active=0, x=0.0, y=-0.13, len=1.0, xanchor="left", yanchor="top",
                      currentvalue=dict(prefix="time t = ", font=dict(size=FONT_SIZE)), pad=dict(t=10))],
        legend=dict(x=1.02, y=1.0, xanchor="left"))
    fig.update_xaxes(range=[-extent, extent], constrain="domain")
    fig.update_yaxes(range=[-extent, extent], constrain="domain")
    return fig


# --- learned against closed-form field ---------------------------------------------------------------------------

def render_field_comparison(field: Field, gmm: GaussianMixture, t: float = 0.5, extent: float = EXTENT,
                            n_arrows: int = 15, n_heat: int = 41) -> go.Figure:
    """Three panels at time t: the closed-form marginal velocity v*(x, t) = E[x1 - x0 | x_t = x] (black), the
    learned v_theta(x, t) (green), and the error ||v_theta - v*|| as a heat map under the contours of p_t.

    Arrows of both panels share one scale (a grid spacing per 90th-percentile speed of v*). The title reports
    the p_t-weighted error E_{x ~ p_t} ||v_theta - v*||^2 / d at this t (Monte Carlo, 2000 seeded draws).
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    t = float(t)
    pts = grid(extent, n_arrows)
    tt = torch.full((len(pts),), t)
    with torch.no_grad():
        v_true = gmm.velocity(pts.double(), t).float()
        v_model = field(pts, tt).detach().cpu().float()
    speed = v_true.norm(dim=1)
    scale = 0.9 * (2 * extent / (n_arrows - 1)) / max(float(speed.quantile(0.9)), 1e-6)
    heat = grid(extent, n_heat)
    with torch.no_grad():
        err = (field(heat, torch.full((len(heat),), t)).detach().cpu().double() - gmm.velocity(heat.double(), t))
    err = err.norm(dim=1).reshape(n_heat, n_heat)
    g = torch.Generator().manual_seed(2)
    x1 = gmm.sample(2000, generator=g).double()
    x_t = (1 - t) * torch.randn(x1.shape, generator=g, dtype=torch.float64) + t * x1  # x_t ~ p_t
    with torch.no_grad():
        weighted = float((_as_f64(field(x_t.float(), torch.full((len(x_t),), t))) - gmm.velocity(x_t, t))
                         .pow(2).mean())
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=(
        "closed form v*(x, t)", "learned v<sub>θ</sub>(x, t)", "error ‖v<sub>θ</sub> − v*‖"))
    contour = density_contour(gmm, t, extent)
    for col, (v, color, name) in enumerate(((v_true, COLORS["reference"], "closed form v*"),
                                            (v_model, COLORS["model"], "learned v_θ")), start=1):
        fig.add_trace(contour, row=1, col=col)
        for trace in arrow_traces(pts, v, scale, color, name, width=1.5):
            fig.add_trace(trace, row=1, col=col)
    axis = to_numpy(torch.linspace(-extent, extent, n_heat))
    cap = max(float(err.quantile(0.95)), 1e-6)
    fig.add_trace(go.Heatmap(x=axis, y=axis, z=to_numpy(err), zmin=0, zmax=cap, colorscale="Reds",
                             colorbar=dict(title="‖error‖", x=1.0, len=0.8), name="error"), row=1, col=3)
    fig.add_trace(density_contour(gmm, t, extent), row=1, col=3)
    title = f"Velocity at t = {t:.2f}: p<sub>t</sub>-weighted error E‖v<sub>θ</sub> − v*‖²/d = {weighted:.3f}"
    apply_style(fig, title=title)
    fig.update_layout(width=NOTEBOOK_WIDTH, height=440, showlegend=False)
    for col in (1, 2, 3):
        _square(fig, extent, row=1, col=col)
        fig.update_yaxes(scaleanchor=f"x{'' if col == 1 else col}", scaleratio=1, row=1, col=col)
        if col > 1:
            fig.update_yaxes(title_text="", row=1, col=col)
    return fig


def field_comparison_widget(field: Field, gmm: GaussianMixture, t: float = 0.5, **kwargs: Any) -> Any:
    """A t slider (redraws on release) over `render_field_comparison`."""
    from .widgets import interactive_view, slider

    control = slider("time t", 0.0, 1.0, 0.05, t)  # redraws while dragging (fast enough: labs/README.md, latency)
    return interactive_view(render_field_comparison, {"t": control}, field=field, gmm=gmm, **kwargs)


# --- pre-warming ----------------------------------------------------------------------------------------------

def lab03_config(fast: bool) -> Any:
    """The network of labs 03 (training) and 04 (solvers): their CONFIG cell."""
    from ..train import TrainConfig

    return TrainConfig(data="8modes", loss="cfm", coupling="independent", steps=400 if fast else 4000, batch_size=256,
                       hidden=128, depth=3, lr=3e-3, warmup=30 if fast else 100, log_every=20 if fast else 100,
                       seed=0, threads=1)


def prewarm_jobs(fast: bool) -> list:
    """Lab 03's training run (`fit_live(CONFIG)`) for `python -m fmlab prewarm` (fmlab.prewarm)."""
    from ..prewarm import job

    config = lab03_config(fast)
    return [job("03", "fmlab.viz.training:fit", config, progress=False, cost=config.steps)]
