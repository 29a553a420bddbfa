"""Figures for lab 11 (flow maps): a jump along the path, the Lagrangian canoe and the Eulerian bridge, and two
jumps against one, all on a 2D Gaussian mixture whose exact flow map is computed from its closed-form velocity.

Convention: t = 0 is noise, t = 1 is data. The flow map X(x, s, t) carries a point of the sampling path from
time s to time t, X(x, s, t) = x + (t - s) u(x, s, t) with u the average velocity, and it obeys three rules:

    compositional  X(X(x, s, r), r, t) = X(x, s, t)
    Lagrangian     d/dt X(x, s, t) = v(X(x, s, t), t)             (the canoe: ride along, watch the water around you)
    Eulerian       d/ds X(x, s, t) = -(dX/dx)(x, s, t) v(x, s)    (the bridge: stay at x, watch where water goes)

`exact_flow_map` integrates the mixture's velocity with fixed-step RK4 per sample (different (s, t) per row, one
batched pass: fast enough for sliders, ~1e-6 accurate over [0, 1] with the default 64 steps; the tests compare
it with the adaptive reference `GaussianMixture.flow_map`). Views precompute on a time grid of step 0.02 and cache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data.gaussian import GaussianMixture, gmm_2d
from ..paths import unit_time
from ..solvers import solve_adaptive
from .fields import quiver_xy
from .paths import segments
from .style import COLORS, NOTEBOOK_WIDTH, apply_style, to_numpy
from .widgets import View, checkbox, dropdown, interactive_view, slider

__all__ = ["defects_table", "MIXTURES", "MAPS", "GRID", "exact_flow_map", "approximate_flow_map", "flow_map_fn",
           "trajectories", "rule_defects", "render_jump", "render_canoe_bridge", "render_composition",
           "render_rule_defects", "jump_widget", "canoe_bridge_widget", "composition_widget"]

MIXTURES = ("asymmetric", "two_modes", "8modes")
MAPS = {"exact": "exact flow map", "euler": "one Euler step x + (t - s) v(x, s)",
        "midpoint": "one midpoint step"}
GRID = np.round(np.linspace(0.0, 1.0, 51), 10)  # slider times (step 0.02)
LIM = 4.5
WIDE = (NOTEBOOK_WIDTH, 560)
F64 = torch.float64


def _mixture(name: str) -> GaussianMixture:
    if name not in MIXTURES:
        raise ValueError(f"mixture must be one of {list(MIXTURES)}, got {name!r}")
    return _cached_mixture(name)


@functools.lru_cache(maxsize=4)
def _cached_mixture(name: str) -> GaussianMixture:
    return gmm_2d(name)


# --- the exact flow map and two approximations -------------------------------------------------------------------

def exact_flow_map(mixture: str | GaussianMixture, x: Tensor, s: Tensor | float, t: Tensor | float,
                   steps: int = 64) -> Tensor:
    """X(x, s, t) of a Gaussian mixture: `steps` RK4 steps of its exact velocity, per-sample s and t (float64).

    Each row integrates dx/dr = v(x, r) from its own s to its own t (s > t runs backward); all rows advance together.
    """
    gmm = _mixture(mixture) if isinstance(mixture, str) else mixture
    x = x.to(F64)
    s = torch.as_tensor(s, dtype=F64).expand(len(x)).clone()
    t = torch.as_tensor(t, dtype=F64).expand(len(x)).clone()
    h = ((t - s) / steps)[:, None]
    at = lambda frac: (s + frac * (t - s)).clamp(0.0, 1.0)  # noqa: E731  (no rounding drift past t = 1)
    for i in range(steps):  # RK4: x + h/6 (k1 + 2 k2 + 2 k3 + k4)
        r0, r1, r2 = at(i / steps), at((i + 0.5) / steps), at((i + 1) / steps)
        k1 = gmm.velocity(x, r0)
        k2 = gmm.velocity(x + 0.5 * h * k1, r1)
        k3 = gmm.velocity(x + 0.5 * h * k2, r1)
        k4 = gmm.velocity(x + h * k3, r2)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def approximate_flow_map(mixture: str | GaussianMixture, x: Tensor, s: Tensor | float, t: Tensor | float,
                         kind: str = "euler") -> Tensor:
    """A one-step 'flow map' built from the exact velocity: Euler x + (t - s) v(x, s), or one midpoint step.

    Exact at s = t and first- (second-) order accurate in t - s, but not a flow map: it breaks all three rules."""
    gmm = _mixture(mixture) if isinstance(mixture, str) else mixture
    x = x.to(F64)
    s = torch.as_tensor(s, dtype=F64).expand(len(x))
    t = torch.as_tensor(t, dtype=F64).expand(len(x))
    h = (t - s)[:, None]
    if kind == "euler":
        return x + h * gmm.velocity(x, s)  # x + (t - s) v(x, s)
    if kind == "midpoint":
        mid = x + 0.5 * h * gmm.velocity(x, s)
        return x + h * gmm.velocity(mid, s + 0.5 * h[:, 0])  # x + (t - s) v(x + (t-s)/2 v, (s + t) / 2)
    raise ValueError(f"kind must be 'euler' or 'midpoint', got {kind!r}")


def flow_map_fn(mixture: str, kind: str = "exact") -> Callable[[Tensor, Tensor | float, Tensor | float], Tensor]:
    """X(x, s, t) of the chosen kind ('exact', 'euler', 'midpoint') for a named mixture."""
    if kind not in MAPS:
        raise ValueError(f"map must be one of {list(MAPS)}, got {kind!r}")
    if kind == "exact":
        return lambda x, s, t: exact_flow_map(mixture, x, s, t)
    return lambda x, s, t: approximate_flow_map(mixture, x, s, t, kind)


@functools.lru_cache(maxsize=8)
def trajectories(mixture: str = "asymmetric", n: int = 60, seed: int = 0) -> tuple[np.ndarray, Tensor]:
    """Exact trajectories of n noise draws on GRID: (times [T], positions [T, n, 2] float64), cached."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return GRID, _along(mixture, x, 0.0)


def _along(mixture: str, x: Tensor, start: float) -> Tensor:
    """The exact trajectories of x from time `start` on GRID (one adaptive DOP853 solve with dense output);
    rows before `start` are NaN. [T, n, 2]."""
    i0 = _index(start)
    out = torch.full((len(GRID), *x.shape), float("nan"), dtype=F64)
    out[i0] = x
    if i0 < len(GRID) - 1:
        gmm = _mixture(mixture)
        times = [float(v) for v in GRID[i0:]]
        out[i0:] = solve_adaptive(lambda y, r: gmm.velocity(y, r), x, times[0], 1.0, 1e-9, 1e-9, t_eval=times)
    return out


def _index(t: float) -> int:
    return int(np.argmin(np.abs(GRID - t)))


# --- the three rules as numbers ----------------------------------------------------------------------------------

def rule_defects(X: Callable, v: Callable, x: Tensor, s: float, r: float, t: float, h: float = 1e-3) -> dict:
    """RMS defects of the three rules at points x (time s), s < r < t, with central differences of step h:

        compositional  X(X(x, s, r), r, t) - X(x, s, t)
        Lagrangian     [X(x, s, t + h) - X(x, s, t - h)] / 2h - v(X(x, s, t), t)
        Eulerian       [X(x, s + h, t) - X(x, s - h, t)] / 2h + [X(x + h v, s, t) - X(x - h v, s, t)] / 2h

    X must accept per-sample time tensors: all evaluations but the second jump go in one batched call."""
    if not (h < s < r < t < 1 - h):
        raise ValueError(f"need h < s < r < t < 1 - h, got s={s}, r={r}, t={t}, h={h}")
    n = len(x)
    vx = v(x, s)
    starts = [x, x, x, x, x, x + h * vx, x - h * vx, x]
    times = [(s, t), (s, t + h), (s, t - h), (s + h, t), (s - h, t), (s, t), (s, t), (s, r)]
    S = torch.cat([torch.full((n,), a, dtype=F64) for a, _ in times])
    T = torch.cat([torch.full((n,), b, dtype=F64) for _, b in times])
    out = X(torch.cat(starts), S, T).split(n)
    X_st, t_plus, t_minus, s_plus, s_minus, x_plus, x_minus, X_sr = out
    comp = X(X_sr, r, t) - X_st
    lag = (t_plus - t_minus) / (2 * h) - v(X_st, t)
    eul = (s_plus - s_minus) / (2 * h) + (x_plus - x_minus) / (2 * h)
    return {k: d.pow(2).sum(1).mean().sqrt().item() for k, d in
            (("compositional", comp), ("Lagrangian", lag), ("Eulerian", eul))}


@functools.lru_cache(maxsize=8)
def defects_table(mixture: str, s: float, r: float, t: float, n: int = 40) -> dict:
    gmm = _mixture(mixture)
    x = trajectories(mixture, n)[1][_index(s)]
    return {kind: rule_defects(flow_map_fn(mixture, kind), gmm.velocity, x, s, r, t) for kind in MAPS}


# --- shared drawing ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=128)
def _density(mixture: str, t: float, res: int = 70) -> go.Contour:
    ax = torch.linspace(-LIM, LIM, res, dtype=F64)
    gx, gy = torch.meshgrid(ax, ax, indexing="xy")
    logp = _mixture(mixture).marginal_log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), t).reshape(res, res)
    return go.Contour(x=to_numpy(ax), y=to_numpy(ax), z=to_numpy(logp.exp()), showscale=False, ncontours=8,
                      hoverinfo="skip",
                      colorscale=[[0, "rgba(255,255,255,0)"], [1, "rgba(120,120,120,0.55)"]],
                      contours=dict(coloring="fill", showlines=False), name="p_t density", showlegend=False)


def _field(mixture: str, t: float, res: int = 13, scale: float = 0.12) -> go.Scatter:
    ax = torch.linspace(-LIM * 0.9, LIM * 0.9, res, dtype=F64)
    gx, gy = torch.meshgrid(ax, ax, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    xs, ys = quiver_xy(pts, scale * _mixture(mixture).velocity(pts, t), max_len=0.45)
    return go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=COLORS["path"], width=1), hoverinfo="skip",
                      name=f"velocity v(x, {t:.2f})")


def _points(x: Tensor, name: str, color: str, size: int = 7, symbol: str = "circle", **kw) -> go.Scatter:
    return go.Scatter(x=to_numpy(x[:, 0]), y=to_numpy(x[:, 1]), mode="markers", name=name,
                      marker=dict(color=color, size=size, symbol=symbol, line=dict(color="white", width=0.5)), **kw)


def _paths(xs: Tensor, name: str, color: str = COLORS["path"], width: float = 1.0, **kw) -> go.Scatter:
    """Polylines xs [T, n, 2] as one trace (NaN between particles)."""
    gap = torch.full((1, xs.shape[1], 2), float("nan"), dtype=xs.dtype)
    flat = torch.cat([xs, gap]).permute(1, 0, 2).reshape(-1, 2)
    return go.Scatter(x=to_numpy(flat[:, 0]), y=to_numpy(flat[:, 1]), mode="lines", name=name, hoverinfo="skip",
                      line=dict(color=color, width=width), **kw)


def _square(fig: go.Figure, cols: int = 0) -> None:
    """Equal, fixed axes on [-LIM, LIM]^2 (cols = 0: a single plot; else each of `cols` subplots)."""
    for c in range(1, cols + 1) if cols else [None]:
        where = {} if c is None else {"row": 1, "col": c}
        fig.update_xaxes(range=[-LIM, LIM], title_text="x₁ (first coordinate)", **where)
        fig.update_yaxes(range=[-LIM, LIM], title_text="x₂", scaleanchor="x" if c in (None, 1) else f"x{c}", **where)


# --- view 1: a jump along the path -------------------------------------------------------------------------------

def render_jump(s: float = 0.2, t: float = 0.7, mixture: str = "asymmetric", n: int = 40,
                show_paths: bool = True) -> go.Figure:
    """Particles at time s (x_s ~ p_s) jump straight to X(x_s, s, t) while the true path curves between them.

    The straight segment is (t - s) u(x, s, t): the average velocity times the time step. Requires s <= t."""
    s, t = unit_time(s, "s"), unit_time(t, "t")
    if s > t:
        raise ValueError(f"s must be <= t (jumps go toward the data), got s={s}, t={t}")
    _, xs = trajectories(mixture, n)
    i, j = _index(s), _index(t)
    start, end = xs[i], xs[j]
    fig = go.Figure([_density(mixture, round(t, 4))])
    if show_paths:
        fig.add_trace(_paths(xs, "full trajectories (t = 0 → 1)", color="rgba(150,150,150,0.35)", width=0.8))
    fig.add_trace(_paths(xs[i:j + 1], "true path from s to t", color=COLORS["reference"], width=1.6))
    jx, jy = segments(start, end)
    fig.add_trace(go.Scatter(x=jx, y=jy, mode="lines", name="jump (t − s) u(x, s, t)",
                             line=dict(color=COLORS["highlight"], width=2, dash="dot")))
    fig.add_trace(_points(start, f"x at s = {s:.2f}", COLORS["noise"]))
    fig.add_trace(_points(end, f"X(x, s, t) at t = {t:.2f}", COLORS["highlight"], size=8))
    mean_u = ((end - start).norm(dim=1).mean() / max(t - s, 1e-9)).item() if t > s else float("nan")
    title = (f"Flow map jump from s = {s:.2f} to t = {t:.2f}" +
             (f": mean |u| = {mean_u:.2f}" if t > s else ": s = t, X(x, s, s) = x"))
    apply_style(fig, title=title)
    fig.update_layout(width=760, height=640, legend=dict(x=1.02, y=1))
    _square(fig)
    return fig


def jump_widget(mixture: str = "asymmetric") -> View:
    """Sliders s and t (s <= t) move the jump; the grey density is p_t."""
    view = interactive_view(render_jump, {
        "s": slider("start time s", 0.0, 1.0, 0.02, 0.2),
        "t": slider("destination time t", 0.0, 1.0, 0.02, 0.7),
        "mixture": dropdown("data", list(MIXTURES), mixture),
        "show_paths": checkbox("all trajectories", True)})
    s_ctl, t_ctl = view.controls["s"], view.controls["t"]

    def keep_order(change) -> None:  # s <= t: moving one past the other drags it along
        if s_ctl.value > t_ctl.value:
            if change["owner"] is s_ctl:
                t_ctl.value = s_ctl.value
            else:
                s_ctl.value = t_ctl.value

    s_ctl.observe(keep_order, names="value")
    t_ctl.observe(keep_order, names="value")
    return view


# --- view 2: the canoe and the bridge ----------------------------------------------------------------------------

RAFT = torch.stack([torch.full((9,), -0.4, dtype=F64), torch.linspace(-2.0, 2.0, 9, dtype=F64)], 1)
BRIDGE = torch.stack([torch.full((9,), 0.6, dtype=F64), torch.linspace(-2.0, 2.0, 9, dtype=F64)], 1)


@functools.lru_cache(maxsize=8)
def _canoe(mixture: str, s0: float) -> Tensor:
    """X(raft, s0, t) for every t on GRID (t < s0: NaN), [T, 9, 2]."""
    return _along(mixture, RAFT.clone(), s0)


@functools.lru_cache(maxsize=8)
def _bridge(mixture: str, t0: float) -> Tensor:
    """X(bridge, s, t0) for every s on GRID (s > t0: NaN), [T, 9, 2]: one batched RK4 with per-row start times."""
    j0 = _index(t0)
    starts = torch.tensor(GRID[: j0 + 1], dtype=F64)
    x = BRIDGE.repeat(len(starts), 1)
    s = starts.repeat_interleave(len(BRIDGE))
    out = torch.full((len(GRID), len(BRIDGE), 2), float("nan"), dtype=F64)
    out[: j0 + 1] = exact_flow_map(mixture, x, s, t0, steps=24).reshape(len(starts), len(BRIDGE), 2)
    return out


def render_canoe_bridge(t: float = 0.6, s: float = 0.3, s0: float = 0.2, t0: float = 0.8,
                        mixture: str = "asymmetric", arrow_scale: float = 0.3, rate_scale: float = 1.0) -> go.Figure:
    """Left, the Lagrangian view (the canoe): a raft of points starts at x at time s0; the destination time t
    moves and the arrivals X(x, s0, t) ride the flow, each pushed by the velocity where it is,
    d/dt X = v(X, t) (arrows). Right, the Eulerian view (the bridge): the points stay where the bridge is, the
    destination time t0 is fixed and the START time s moves: X(x, s, t0) is where the water passing under the
    bridge at time s will be at t0; it changes at the rate d/ds X = -(dX/dx) v(x, s) (arrows, by differences)."""
    t, s = unit_time(t, "t"), unit_time(s, "s")
    s0, t0 = unit_time(s0, "s0"), unit_time(t0, "t0")
    t_eff, s_eff = max(t, s0), min(s, t0)
    gmm = _mixture(mixture)
    fig = make_subplots(1, 2, horizontal_spacing=0.08, subplot_titles=(
        f"canoe (Lagrangian): s0 = {s0:.2f} fixed, t = {t_eff:.2f}",
        f"bridge (Eulerian): t0 = {t0:.2f} fixed, s = {s_eff:.2f}"))
    # left: the raft rides the flow
    canoe = _canoe(mixture, s0)
    i0, j = _index(s0), _index(t_eff)
    fig.add_trace(_field(mixture, t_eff), 1, 1)
    fig.add_trace(_paths(canoe[i0:j + 1], "raft's paths", color=COLORS["reference"], width=1.4), 1, 1)
    fig.add_trace(_points(canoe[i0], f"raft at s0 = {s0:.2f}", COLORS["noise"], symbol="square"), 1, 1)
    arrive = canoe[j]
    fig.add_trace(_points(arrive, f"X(x, s0, t), t = {t_eff:.2f}", COLORS["highlight"], size=9), 1, 1)
    qx, qy = quiver_xy(arrive, arrow_scale * gmm.velocity(arrive, t_eff))
    fig.add_trace(go.Scatter(x=qx, y=qy, mode="lines", line=dict(color=COLORS["highlight"], width=2.5),
                             name="d/dt X = v(X, t)"), 1, 1)
    # right: the bridge stays put; where does its water end up?
    bridge = _bridge(mixture, t0)
    k = _index(s_eff)
    fig.add_trace(_field(mixture, s_eff), 1, 2)
    fig.add_trace(_paths(bridge[: _index(t0) + 1], "X(x, s, t0) as s runs from 0 to t0",
                         color="rgba(204,121,167,0.55)", width=1.5), 1, 2)
    fig.add_trace(go.Scatter(x=to_numpy(BRIDGE[:, 0]), y=to_numpy(BRIDGE[:, 1]), mode="lines+markers",
                             name="the bridge x",
                             line=dict(color=COLORS["reference"], width=4), marker=dict(size=6)), 1, 2)
    dest = bridge[k]
    jx, jy = segments(BRIDGE, dest)
    fig.add_trace(go.Scatter(x=jx, y=jy, mode="lines", name="jump x → X(x, s, t0)",
                             line=dict(color=COLORS["ot"], width=1, dash="dot")), 1, 2)
    fig.add_trace(_points(dest, f"X(x, s, t0), s = {s_eff:.2f}", COLORS["ot"], size=9), 1, 2)
    lo, hi = max(k - 1, 0), min(k + 1, _index(t0))
    if hi > lo:
        rate = (bridge[hi] - bridge[lo]) / float(GRID[hi] - GRID[lo])  # d/ds X(x, s, t0)
        qx, qy = quiver_xy(dest, rate_scale * rate)
        fig.add_trace(go.Scatter(x=qx, y=qy, mode="lines", line=dict(color=COLORS["ot"], width=2.5),
                                 name="d/ds X = −(dX/dx) v(x, s)"), 1, 2)
    apply_style(fig, title=f"Canoe vs bridge on '{mixture}': t = {t_eff:.2f} (left), s = {s_eff:.2f} (right)")
    fig.update_layout(width=WIDE[0], height=WIDE[1], legend=dict(orientation="h", y=-0.18, x=0))
    _square(fig, cols=2)
    return fig


def canoe_bridge_widget(mixture: str = "asymmetric", s0: float = 0.2, t0: float = 0.8) -> View:
    """Slider t moves the canoe's destination time; slider s moves the bridge's start time."""
    return interactive_view(render_canoe_bridge, {
        "t": slider("canoe: destination t", 0.0, 1.0, 0.02, 0.6),
        "s": slider("bridge: start s", 0.0, 1.0, 0.02, 0.3),
        "mixture": dropdown("data", list(MIXTURES), mixture)}, s0=s0, t0=t0)


# --- view 3: two jumps against one -------------------------------------------------------------------------------

def render_composition(s: float = 0.1, r: float = 0.5, t: float = 0.9, kind: str = "exact",
                       mixture: str = "asymmetric", n: int = 40) -> go.Figure:
    """Particles at time s: one jump X(x, s, t) (circles) against two jumps X(X(x, s, r), r, t) (crosses), with the
    intermediate stop X(x, s, r). The exact map composes (defect ~0); a one-step map from the velocity does not."""
    s, r, t = (unit_time(v, n_) for v, n_ in ((s, "s"), (r, "r"), (t, "t")))
    if not s <= r <= t:
        raise ValueError(f"need s <= r <= t, got s={s}, r={r}, t={t}")
    X = flow_map_fn(mixture, kind)
    _, xs = trajectories(mixture, n)
    x = xs[_index(s)]
    if kind == "exact":  # the particles sit on exact trajectories: read the jumps off them
        mid, one, two = xs[_index(r)], xs[_index(t)], xs[_index(t)]
    else:
        mid = X(x, s, r)
        one, two = X(x, s, t), X(mid, r, t)
    defect = (two - one).norm(dim=1).mean().item()
    fig = go.Figure([_density(mixture, round(t, 4))])
    fig.add_trace(_paths(xs[_index(s):_index(t) + 1], "true paths", color="rgba(120,120,120,0.5)", width=1))
    ax, ay = segments(x, one)
    fig.add_trace(go.Scatter(x=ax, y=ay, mode="lines", name="one jump s → t",
                             line=dict(color=COLORS["model"], width=1.5)))
    bx, by = (np.concatenate(p) for p in zip(segments(x, mid), segments(mid, two), strict=True))
    fig.add_trace(go.Scatter(x=bx, y=by, mode="lines", name="two jumps s → r → t",
                             line=dict(color=COLORS["highlight"], width=1.5, dash="dot")))
    fig.add_trace(_points(x, f"x at s = {s:.2f}", COLORS["noise"], size=6))
    fig.add_trace(_points(mid, f"X(x, s, r), r = {r:.2f}", COLORS["path"], size=5))
    fig.add_trace(_points(one, "X(x, s, t)", COLORS["model"], size=9))
    fig.add_trace(_points(two, "X(X(x, s, r), r, t)", COLORS["highlight"], size=9, symbol="x"))
    apply_style(fig, title=f"{MAPS[kind]}: |two jumps − one jump| = {defect:.3f} (s={s:.2f}, r={r:.2f}, t={t:.2f})")
    fig.update_layout(width=800, height=640, legend=dict(x=1.02, y=1), title_font_size=16)
    _square(fig)
    return fig


def composition_widget(mixture: str = "asymmetric") -> View:
    """Sliders s <= r <= t and a choice of map: exact or a one-step approximation."""
    view = interactive_view(render_composition, {
        "s": slider("start s", 0.0, 1.0, 0.02, 0.1),
        "r": slider("stop r", 0.0, 1.0, 0.02, 0.5),
        "t": slider("destination t", 0.0, 1.0, 0.02, 0.9),
        "kind": dropdown("map", {v: k for k, v in MAPS.items()}, "exact"),
        "mixture": dropdown("data", list(MIXTURES), mixture)})
    c = view.controls

    def keep_order(change) -> None:  # clamp r into [s, t] and t >= s
        if c["t"].value < c["s"].value:
            c["t"].value = c["s"].value
        r = min(max(c["r"].value, c["s"].value), c["t"].value)
        if r != c["r"].value:
            c["r"].value = r

    for name in ("s", "r", "t"):
        c[name].observe(keep_order, names="value")
    return view


# --- the three rules in numbers ----------------------------------------------------------------------------------

def render_rule_defects(mixture: str = "asymmetric", s: float = 0.2, r: float = 0.5, t: float = 0.8) -> go.Figure:
    """RMS defect of each rule (log scale) for the exact map and the two one-step maps, at particles x ~ p_s."""
    table = defects_table(mixture, float(s), float(r), float(t))
    rules = ["compositional", "Lagrangian", "Eulerian"]
    colors = {"exact": COLORS["reference"], "euler": COLORS["highlight"], "midpoint": COLORS["ot"]}
    fig = go.Figure([go.Bar(x=rules, y=[max(table[k][rule], 1e-12) for rule in rules], name=MAPS[k],
                            marker_color=colors[k]) for k in MAPS])
    apply_style(fig, title=f"Defects of the three rules (s={s:.2f}, r={r:.2f}, t={t:.2f})",
                x_title="consistency rule", y_title="RMS defect (log scale)")
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.25))
    return fig
