"""Figures for lab 01 (probability paths): conditional and marginal paths, schedules, the 1D worked example.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data x1. A schedule gives x_t = alpha_t x1 + sigma_t x0, so

    conditional path   p_t(x | x1) = N(alpha_t x1, sigma_t^2 I)          (linear: N(t x1, (1 - t)^2 I))
    marginal path      p_t(x) = E_{x1 ~ data} p_t(x | x1)                  (closed form for a Gaussian mixture)

Every render function is pure (same arguments, same figure) and cheap enough for a slider: samples are drawn once
per (data, n, seed) and cached; moving t only rescales them (x_t = alpha_t x1 + sigma_t x0 with x0, x1 fixed).
"""

from __future__ import annotations

import functools
import math

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data.gaussian import EmpiricalDistribution, gmm_2d, worked_example_1d
from ..paths import SCHEDULES, get_schedule, unit_time
from .style import COLORS, FONT_SIZE, NOTEBOOK_WIDTH, apply_style, to_numpy
from .widgets import View, dropdown, interactive_view, t_slider

__all__ = ["square_grid", "SCHEDULE_LABELS", "MIXTURES", "schedule_values", "path_samples", "render_conditional_path",
           "render_marginal_path", "render_paths", "render_schedules", "render_worked_example",
           "worked_example_check", "paths_widget", "schedules_widget", "worked_example_widget", "segments"]

SCHEDULE_LABELS = {"linear": "linear / CondOT", "cosine": "cosine", "vp": "variance preserving (VP)"}
MIXTURES = ("asymmetric", "two_modes", "8modes")
LIM = 5.0  # 2D panels show [-LIM, LIM]^2
WIDE = (NOTEBOOK_WIDTH, 540)  # two-panel figures


def _check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    return schedule


def _check_mixture(mixture: str) -> str:
    if mixture not in MIXTURES:
        raise ValueError(f"mixture must be one of {list(MIXTURES)}, got {mixture!r}")
    return mixture


def schedule_values(schedule: str, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) of a named schedule as float64 tensors (t a float or a tensor of times)."""
    out = get_schedule(_check_schedule(schedule))(torch.as_tensor(t, dtype=torch.float64))
    return out.alpha, out.sigma


# --- cached samples -------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def path_samples(mixture: str, n: int = 800, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Fixed (x0, x1) pairs [n, 2] for a named 2D mixture: x0 ~ N(0, I), x1 ~ mixture (independent, seeded)."""
    g = torch.Generator().manual_seed(seed)
    x1 = gmm_2d(_check_mixture(mixture)).sample(n, generator=g).double()
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x0, x1


@functools.lru_cache(maxsize=4)
def _noise(n: int, seed: int) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@functools.lru_cache(maxsize=8)
def square_grid(lim: float, res: int) -> tuple[Tensor, Tensor]:
    """(axis [res], points [res * res, 2]) of a res x res grid over [-lim, lim]^2, rows = y (float64, cached)."""
    axis = torch.linspace(-lim, lim, res, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return axis, torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


@functools.lru_cache(maxsize=256)
def _marginal_density(mixture: str, schedule: str, t: float, res: int) -> Tensor:
    """p_t(x) on a res x res grid over [-LIM, LIM]^2 (rows = y), cached per slider position."""
    _, pts = square_grid(LIM, res)
    return gmm_2d(mixture).marginal_log_prob(pts, t, schedule).exp().reshape(res, res)


# --- trace builders ------------------------------------------------------------------------------------------



def _circle(center: Tensor, radius: float, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    a = torch.linspace(0, 2 * math.pi, n, dtype=torch.float64)
    return to_numpy(center[0] + radius * a.cos()), to_numpy(center[1] + radius * a.sin())


def segments(start: Tensor, end: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Line segments start_i -> end_i [n, 2] as the x and y arrays of one trace (NaN breaks the line)."""
    gap = torch.full_like(start[:, :1], float("nan"))
    xs = torch.cat([start[:, :1], end[:, :1], gap], dim=1).reshape(-1)
    ys = torch.cat([start[:, 1:2], end[:, 1:2], gap], dim=1).reshape(-1)
    return to_numpy(xs), to_numpy(ys)


def _conditional_traces(t: float, x1: tuple[float, float], schedule: str, n: int, seed: int) -> list[go.Scatter]:
    a, s = (float(v) for v in schedule_values(schedule, t))
    target = torch.tensor(x1, dtype=torch.float64)
    x0 = _noise(n, seed)
    xt = a * target + s * x0  # x_t = alpha_t x1 + sigma_t x0
    k = min(25, n)
    lx, ly = segments(x0[:k], target.expand(k, 2))
    traces = [
        go.Scatter(x=lx, y=ly, mode="lines", line=dict(color=COLORS["path"], width=1), opacity=0.5,
                   name="paths x0 -> x1", hoverinfo="skip"),
        go.Scatter(x=to_numpy(x0[:, 0]), y=to_numpy(x0[:, 1]), mode="markers", name="noise x0 (t = 0)",
                   marker=dict(color=COLORS["noise"], size=4), opacity=0.25),
    ]
    traces.append(go.Scatter(x=to_numpy(xt[:, 0]), y=to_numpy(xt[:, 1]), mode="markers", name="x_t ~ p_t(x | x1)",
                             marker=dict(color=COLORS["highlight"], size=4), opacity=0.7))
    for r, dash in ((1.0, "solid"), (2.0, "dot")):
        cx, cy = _circle(a * target, r * s)
        traces.append(go.Scatter(x=cx, y=cy, mode="lines", line=dict(color=COLORS["reference"], width=2.5, dash=dash),
                                 name="1 and 2 sigma_t circles", hoverinfo="skip", showlegend=r == 1.0))
    star = dict(color=COLORS["data"], size=18, symbol="star", line=dict(color="black", width=1))
    traces.append(go.Scatter(x=[x1[0]], y=[x1[1]], mode="markers", name="data point x1", marker=star))
    return traces


def _marginal_traces(t: float, mixture: str, schedule: str, n: int, seed: int, res: int) -> list:
    a, s = (float(v) for v in schedule_values(schedule, t))
    x0, x1 = path_samples(mixture, n, seed)
    xt = a * x1 + s * x0  # x_t = alpha_t x1 + sigma_t x0, each x1 drawn from the mixture
    axis, _ = square_grid(LIM, res)
    dens = _marginal_density(mixture, schedule, round(t, 6), res)
    return [
        go.Contour(x=to_numpy(axis), y=to_numpy(axis), z=to_numpy(dens), name="p_t(x) (closed form)",
                   colorscale=[[0, "rgba(255,255,255,0)"], [1, "rgba(0,0,0,0.55)"]], showscale=False,
                   contours=dict(coloring="fill", showlines=True), line=dict(width=0.5, color="rgba(0,0,0,0.3)"),
                   ncontours=12, hoverinfo="skip", showlegend=True),
        go.Scatter(x=to_numpy(x1[:, 0]), y=to_numpy(x1[:, 1]), mode="markers", name="data x1 (t = 1)",
                   marker=dict(color=COLORS["data"], size=4), opacity=0.35),
        go.Scatter(x=to_numpy(xt[:, 0]), y=to_numpy(xt[:, 1]), mode="markers", name="x_t ~ p_t(x)",
                   marker=dict(color=COLORS["highlight"], size=4), opacity=0.7),
    ]


def _square_axes(fig: go.Figure, n_cols: int) -> None:
    for i in range(1, n_cols + 1):
        fig.update_xaxes(range=[-LIM, LIM], title_text="x (first coordinate)", row=1, col=i, constrain="domain")
        fig.update_yaxes(range=[-LIM, LIM], title_text="y (second coordinate)", row=1, col=i,
                         scaleanchor="x" if i == 1 else f"x{i}", scaleratio=1, constrain="domain")


# --- render functions -----------------------------------------------------------------------------------------------

def render_conditional_path(t: float = 0.5, x1: tuple[float, float] = (2.0, 1.0), schedule: str = "linear",
                            n: int = 300, seed: int = 0) -> go.Figure:
    """The conditional path p_t(x | x1) = N(alpha_t x1, sigma_t^2 I) of one data point: samples x_t, 1 and 2 sigma_t
    circles, the noise x0 and straight paths x0 -> x1 (linear path) it comes from."""
    t, schedule = unit_time(t), _check_schedule(schedule)
    a, s = (float(v) for v in schedule_values(schedule, t))
    fig = go.Figure(_conditional_traces(t, tuple(x1), schedule, n, seed))
    title = f"Conditional path at t = {t:.2f} ({schedule}): N({a:.2f} x1, {s:.2f}^2 I)"
    apply_style(fig, title, "x (first coordinate)", "y (second coordinate)", square=True)
    fig.update_xaxes(range=[-LIM, LIM])
    return fig.update_yaxes(range=[-LIM, LIM])


def render_marginal_path(t: float = 0.5, mixture: str = "asymmetric", schedule: str = "linear", n: int = 800,
                         seed: int = 0, res: int = 70) -> go.Figure:
    """The marginal path p_t(x) of a 2D Gaussian mixture: closed-form density (filled contours) and samples x_t."""
    t, schedule, mixture = unit_time(t), _check_schedule(schedule), _check_mixture(mixture)
    fig = go.Figure(_marginal_traces(t, mixture, schedule, n, seed, res))
    apply_style(fig, f"Marginal path p_t(x) at t = {t:.2f} ({schedule}, data: {mixture})",
                "x (first coordinate)", "y (second coordinate)", square=True)
    fig.update_xaxes(range=[-LIM, LIM])
    return fig.update_yaxes(range=[-LIM, LIM])


def render_paths(t: float = 0.5, schedule: str = "linear", mixture: str = "asymmetric",
                 x1: tuple[float, float] = (2.0, 1.0), n: int = 500, seed: int = 0, res: int = 70) -> go.Figure:
    """Side by side at the same t: the conditional path of one data point x1 and the marginal path of a mixture."""
    t, schedule, mixture = unit_time(t), _check_schedule(schedule), _check_mixture(mixture)
    a, s = (float(v) for v in schedule_values(schedule, t))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        f"conditional p_t(x | x1) = N({a:.2f} x1, {s:.2f}\u00b2 I)", f"marginal p_t(x), data: {mixture}"))
    for tr in _conditional_traces(t, tuple(x1), schedule, n // 2, seed):
        fig.add_trace(tr, row=1, col=1)
    for tr in _marginal_traces(t, mixture, schedule, n, seed, res):
        fig.add_trace(tr, row=1, col=2)
    apply_style(fig, f"Probability paths at t = {t:.2f} ({SCHEDULE_LABELS[schedule]})")
    _square_axes(fig, 2)
    fig.update_layout(width=WIDE[0], height=WIDE[1], legend=dict(orientation="h", y=-0.2, x=0.5, xanchor="center"),
                      margin=dict(b=110))
    fig.update_annotations(font_size=FONT_SIZE)
    return fig


def render_schedules(t: float = 0.5, schedule: str = "linear") -> go.Figure:
    """alpha_t and sigma_t (left) and the log signal-to-noise ratio log(alpha_t^2 / sigma_t^2) (right) of every
    schedule, the selected one bold, with a marker at t."""
    t, schedule = unit_time(t), _check_schedule(schedule)
    ts = torch.linspace(0, 1, 201, dtype=torch.float64)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("signal alpha_t and noise sigma_t",
                                        "log SNR = log(alpha_t\u00b2 / sigma_t\u00b2)"))
    dashes = {"linear": "solid", "cosine": "dash", "vp": "dot"}
    for name in SCHEDULES:
        a, s = schedule_values(name, ts)
        bold = name == schedule
        width, opacity = (4 if bold else 2), (1.0 if bold else 0.35)
        for values, role, sym in ((a, "data", "alpha"), (s, "noise", "sigma")):
            fig.add_trace(go.Scatter(x=to_numpy(ts), y=to_numpy(values), mode="lines", name=f"{sym}_t {name}",
                                     line=dict(color=COLORS[role], width=width, dash=dashes[name]), opacity=opacity,
                                     legendgroup=name), row=1, col=1)
        inner = slice(1, -1)  # log SNR is -inf at t = 0 (linear) and +inf at t = 1
        snr = to_numpy(2 * (a[inner].log() - s[inner].log()))
        fig.add_trace(go.Scatter(x=to_numpy(ts[inner]), y=snr, mode="lines", name=f"log SNR {name}", showlegend=False,
                                 line=dict(color=COLORS["reference"], width=width, dash=dashes[name]),
                                 opacity=opacity, legendgroup=name), row=1, col=2)
    a_t, s_t = (float(v) for v in schedule_values(schedule, t))
    fig.add_trace(go.Scatter(x=[t, t], y=[a_t, s_t], mode="markers", name=f"t = {t:.2f}",
                             marker=dict(color=COLORS["highlight"], size=13, line=dict(color="black", width=1))),
                  row=1, col=1)
    if 0 < t < 1 and a_t > 0 and s_t > 0:
        fig.add_trace(go.Scatter(x=[t], y=[2 * math.log(a_t / s_t)], mode="markers", showlegend=False,
                                 marker=dict(color=COLORS["highlight"], size=13, line=dict(color="black", width=1))),
                      row=1, col=2)
    for col in (1, 2):
        fig.add_vline(x=t, line=dict(color=COLORS["highlight"], width=1, dash="dot"), row=1, col=col)
    apply_style(fig, f"{SCHEDULE_LABELS[schedule]}: alpha_t = {a_t:.3f}, sigma_t = {s_t:.3f} at t = {t:.2f}")
    fig.update_xaxes(title_text="t  (0 = noise, 1 = data)", range=[0, 1])
    fig.update_yaxes(title_text="coefficient", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="log SNR", range=[-10, 10], row=1, col=2)
    fig.update_layout(width=WIDE[0], height=WIDE[1] - 40)
    fig.update_annotations(font_size=FONT_SIZE)
    return fig


def _gauss(x: Tensor, mean: float, var: float) -> Tensor:
    return torch.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


@functools.lru_cache(maxsize=4)
def _worked_samples(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x1 = worked_example_1d().sample(n, generator=g).double()[:, 0]
    return torch.randn(n, generator=g, dtype=torch.float64), x1


def render_worked_example(t: float = 0.5, n: int = 4000, seed: int = 0) -> go.Figure:
    """Data at -3 and +3, linear path: p_t = 0.5 N(-3t, (1-t)^2) + 0.5 N(3t, (1-t)^2), computed by fmlab
    (EmpiricalDistribution.marginal_log_prob) beside a histogram of x_t = (1 - t) x0 + t x1."""
    t = unit_time(t)
    if t > 0.97:
        raise ValueError(f"t must be <= 0.97 here (the marginal becomes two spikes at t = 1), got {t}")
    data: EmpiricalDistribution = worked_example_1d()
    xs = torch.linspace(-5, 5, 501, dtype=torch.float64)
    dens = data.marginal_log_prob(xs[:, None], t).exp()
    x0, x1 = _worked_samples(n, seed)
    xt = (1 - t) * x0 + t * x1  # x_t = (1 - t) x0 + t x1
    var = (1 - t) ** 2
    fig = go.Figure([
        go.Histogram(x=to_numpy(xt), histnorm="probability density", name=f"histogram of {n} samples x_t",
                     marker=dict(color=COLORS["highlight"]), opacity=0.45, xbins=dict(start=-5, end=5, size=0.1)),
        go.Scatter(x=to_numpy(xs), y=to_numpy(dens), mode="lines", name="p_t(x) from fmlab",
                   line=dict(color=COLORS["reference"], width=3)),
    ])
    for sign in (-1, 1):
        comp = 0.5 * _gauss(xs, sign * 3 * t, var)
        fig.add_trace(go.Scatter(x=to_numpy(xs), y=to_numpy(comp), mode="lines", line=dict(color=COLORS["data"],
                                 width=2, dash="dash"), name="0.5 N(\u00b13t, (1-t)\u00b2)", showlegend=sign == 1))
    apply_style(fig, f"Data at \u00b13, t = {t:.2f}: p_t = 0.5 N(\u00b1{3 * t:.2f}, {var:.4f})", "position x",
                "density p_t(x)")
    fig.update_layout(legend=dict(x=0.01, y=0.99, bgcolor="rgba(255,255,255,0.8)"), bargap=0)
    return fig.update_xaxes(range=[-5, 5])


def worked_example_check(t: float = 0.5) -> str:
    """A deterministic report comparing fmlab's marginal of the +-3 example with the textbook formula at time t."""
    t = unit_time(t)
    if t >= 1:
        raise ValueError(f"t must be < 1 (the marginal is two atoms at t = 1), got {t}")
    data = worked_example_1d()
    xs = torch.linspace(-6, 6, 1201, dtype=torch.float64)[:, None]
    var = (1 - t) ** 2  # Var(x_t | x1) = (1 - t)^2
    formula = 0.5 * _gauss(xs[:, 0], -3 * t, var) + 0.5 * _gauss(xs[:, 0], 3 * t, var)
    code = data.marginal_log_prob(xs, t).exp()
    err = (code - formula).abs().max().item()
    total_var = 9 * t**2 + var  # Var(x_t) = t^2 Var(x1) + (1 - t)^2 Var(x0) = 9 t^2 + (1 - t)^2
    g = torch.Generator().manual_seed(0)
    x1 = data.sample(200_000, generator=g).double()
    xt = t * x1 + (1 - t) * torch.randn(x1.shape, generator=g, dtype=torch.float64)
    return "\n".join([
        f"data at -3 and +3 (equal weights), linear path, t = {t:.2f}",
        f"textbook: p_t = 0.5 N({-3 * t:+.2f}, {var:.4f}) + 0.5 N({3 * t:+.2f}, {var:.4f})",
        f"fmlab marginal_log_prob matches the formula on [-6, 6]: {err < 1e-12}",
        f"variance of x_t: formula 9 t^2 + (1 - t)^2 = {total_var:.4f}; 200000 samples agree to 2%: "
        f"{abs(xt.var().item() / total_var - 1) < 0.02}",
    ])


# --- widgets ------------------------------------------------------------------------------------------------------

def paths_widget(x1: tuple[float, float] = (2.0, 1.0), n: int = 500) -> View:
    """t slider (redraws while dragging), schedule and mixture selectors over `render_paths`."""
    return interactive_view(render_paths, {
        "t": t_slider(0.5),  # redraws while dragging
        "schedule": dropdown("schedule", {v: k for k, v in SCHEDULE_LABELS.items()}),
        "mixture": dropdown("data", list(MIXTURES)),
    }, x1=tuple(x1), n=n)


def schedules_widget() -> View:
    """t slider and schedule selector over `render_schedules`."""
    return interactive_view(render_schedules, {
        "t": t_slider(0.5),
        "schedule": dropdown("schedule", {v: k for k, v in SCHEDULE_LABELS.items()}),
    })


def worked_example_widget(n: int = 4000) -> View:
    """t slider over `render_worked_example`."""
    return interactive_view(render_worked_example, {"t": t_slider(0.5, 0.95)}, n=n)


_ = W  # ipywidgets is imported so that a missing install fails at import, not at the first slider move
