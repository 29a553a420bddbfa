"""Figures and wiring for lab 04, solvers and step count: samples and trajectories against the number of steps,
W2 against the number of function evaluations (NFE), the measured order of convergence, and straightness.

Convention (ARCHITECTURE.md, "Time"): sampling integrates dx/dt = v(x, t) forward from noise at t = 0 to data at t = 1.
A method of global order p started from the same x0 has error ||x_N - x(1)|| ~ C N^(-p) with N steps, so on a
log-log plot the error against N is a line of slope -p; `measured_order` fits that slope.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

from ..metrics import path_length_ratio, straightness, wasserstein
from ..solvers import SOLVERS, Field, Trajectory, nfe, solve, solve_adaptive
from .style import COLORS, SEQUENCE, apply_style
from .training import AXIS_X, AXIS_Y, EXTENT, scatter

__all__ = ["METHODS", "METHOD_COLORS", "METHOD_LABELS", "float64_field", "render_solver_samples", "SolverRuns",
           "solver_widget", "w2_vs_nfe", "render_w2_vs_nfe", "reference_solution", "convergence", "measured_order",
           "render_convergence", "straightness_profile", "render_straightness", "render_paths", "wiggly_network",
           "prewarm_jobs"]

METHODS = ("euler", "midpoint", "heun", "rk4")
METHOD_LABELS = {"euler": "Euler", "midpoint": "midpoint", "heun": "Heun", "rk4": "RK4"}
METHOD_COLORS = dict(zip(METHODS, (SEQUENCE[1], SEQUENCE[2], SEQUENCE[3], SEQUENCE[0]), strict=True))
_DASH = {"euler": "solid", "midpoint": "solid", "heun": "dash", "rk4": "solid"}


def _check_method(method: str) -> None:
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")


def float64_field(field: Field) -> Field:
    """The field evaluated in float64: a network is copied and cast with .double(); any other callable gets
    float64 inputs. Reference solves (solve_adaptive, rtol 1e-10) need this to be accurate beyond float32."""
    if isinstance(field, nn.Module):
        net = copy.deepcopy(field).double().eval()
        return lambda x, t: net(x.double(), t.double())
    return lambda x, t: field(x.double(), t.double()).double()


# --- samples and trajectories against the step count ------------------------------------------------------------

def render_solver_samples(traj: Trajectory, data: Tensor, method: str, w2: float | None = None,
                          n_paths: int = 40, extent: float = EXTENT, field_name: str = "") -> go.Figure:
    """Final samples of a solve (model colour) over the data, with the paths of the first n_paths particles.

    The title names the method, the step count, the NFE (steps x evaluations per step) and, if given, W2.
    """
    _check_method(method)
    steps = len(traj.ts) - 1
    xs = traj.xs.detach().cpu()
    fig = go.Figure()
    fig.add_trace(scatter(data, COLORS["data"], "data x1", size=4, opacity=0.35))
    px: list[float | None] = []
    py: list[float | None] = []
    for j in range(min(n_paths, xs.shape[1])):
        px += xs[:, j, 0].tolist() + [None]
        py += xs[:, j, 1].tolist() + [None]
    fig.add_trace(go.Scatter(x=px, y=py, mode="lines+markers", name="paths (one dot per step)",
                             line=dict(color=COLORS["path"], width=1.2), marker=dict(size=3, color=COLORS["path"])))
    fig.add_trace(scatter(xs[0, :n_paths], COLORS["noise"], "start x0 (t = 0)", size=6, opacity=0.9))
    fig.add_trace(scatter(xs[-1], COLORS["model"], "samples (t = 1)", size=4, opacity=0.8))
    quality = "" if w2 is None else f": W2 = {w2:.3f}"
    which = f"{field_name}, " if field_name else ""
    title = (f"{which}{METHOD_LABELS[method]}, {steps} step{'s' if steps > 1 else ''} "
             f"= {nfe(method, steps)} NFE{quality}")
    apply_style(fig, title=title, x_title=AXIS_X, y_title=AXIS_Y, square=True)
    fig.update_xaxes(range=[-extent, extent], constrain="domain")
    fig.update_yaxes(range=[-extent, extent], constrain="domain")
    fig.update_layout(width=800, height=620, legend=dict(x=1.02, y=1.0, xanchor="left"), margin=dict(r=220))
    return fig


class SolverRuns:
    """Solves of several fields from the same noise x0, computed once per (field, method, steps) and kept.

    `fields` maps a display name to a field; `data` is the reference sample for W2.
    """

    def __init__(self, fields: Mapping[str, Field], x0: Tensor, data: Tensor):
        if not fields:
            raise ValueError("fields must name at least one velocity field")
        self.fields, self.x0, self.data = dict(fields), x0, data
        self._runs: dict[tuple[str, str, int], tuple[Trajectory, float]] = {}

    def run(self, field: str, method: str, steps: int) -> tuple[Trajectory, float]:
        """(trajectory, W2 of its samples against the data) for one solve."""
        if field not in self.fields:
            raise ValueError(f"field must be one of {sorted(self.fields)}, got {field!r}")
        _check_method(method)
        key = (field, method, int(steps))
        if key not in self._runs:
            traj = solve(self.fields[field], self.x0, steps=int(steps), method=method, return_trajectory=True)
            self._runs[key] = (traj, wasserstein(traj.x, self.data))
        return self._runs[key]

    def render(self, field: str, method: str, steps: int, n_paths: int = 40) -> go.Figure:
        traj, w2 = self.run(field, method, steps)
        return render_solver_samples(traj, self.data, method, w2, n_paths=n_paths, field_name=field)


def solver_widget(fields: Mapping[str, Field], x0: Tensor, data: Tensor, method: str = "euler",
                  steps: int = 4) -> Any:
    """Field and solver dropdowns and a step-count slider (1 to 100, redraws on release) over the samples."""
    from .widgets import dropdown, int_slider, interactive_view

    runs = SolverRuns(fields, x0, data)
    controls = {"field": dropdown("velocity field", list(runs.fields)),
                "method": dropdown("solver", {METHOD_LABELS[m]: m for m in METHODS}, method),
                "steps": int_slider("steps", 1, 100, steps, continuous_update=False)}
    view = interactive_view(runs.render, controls)
    view.runs = runs
    return view


# --- sample quality against the evaluation budget ---------------------------------------------------------------

def w2_vs_nfe(field: Field, x0: Tensor, data: Tensor, methods: Sequence[str] = METHODS,
              budgets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)) -> dict[str, list[tuple[int, float]]]:
    """{method: [(NFE, W2), ...]}: W2 of the samples against `data` for every budget that the method can spend
    exactly (steps = NFE / evaluations per step must be a whole number >= 1)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for method in methods:
        _check_method(method)
        per = SOLVERS[method].nfe
        rows = []
        for budget in budgets:
            if budget % per == 0 and budget >= per:
                rows.append((int(budget), wasserstein(solve(field, x0, steps=budget // per, method=method), data)))
        out[method] = rows
    return out


def render_w2_vs_nfe(results: Mapping[str, Sequence[tuple[int, float]]], floor: float | None = None,
                     title: str = "Sample quality against the evaluation budget") -> go.Figure:
    """Log-log W2 against NFE per method, with the noise floor (W2 between two independent data samples of the
    same size, fmlab.metrics.noise_floor) as a dashed line: differences below it are sampling noise."""
    fig = go.Figure()
    for method, rows in results.items():
        fig.add_trace(go.Scatter(x=[r[0] for r in rows], y=[r[1] for r in rows], mode="lines+markers",
                                 name=METHOD_LABELS.get(method, method),
                                 line=dict(color=METHOD_COLORS.get(method), width=3, dash=_DASH.get(method)),
                                 marker=dict(size=8)))
    if floor is not None:
        xs = [r[0] for rows in results.values() for r in rows] or [1]
        fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[floor, floor], mode="lines",
                                 name="noise floor (data vs data)",
                                 line=dict(color=COLORS["reference"], dash="dash", width=2)))
    apply_style(fig, title=title, x_title="function evaluations (NFE)", y_title="W2 to the data")
    fig.update_xaxes(type="log", dtick=math.log10(2), tickformat="d")
    fig.update_yaxes(type="log")
    return fig


# --- order of convergence ----------------------------------------------------------------------------------------

def reference_solution(field: Field, x0: Tensor, rtol: float = 1e-10, atol: float = 1e-10) -> Tensor:
    """x(1) from x(0) = x0 by DOP853 in float64 (the field is evaluated through `float64_field`)."""
    return solve_adaptive(float64_field(field), x0.double(), 0.0, 1.0, rtol=rtol, atol=atol)


def measured_order(steps: Sequence[int], errors: Sequence[float]) -> float:
    """Least-squares slope p of log(error) = log(C) - p log(steps): the measured global order."""
    if len(steps) != len(errors) or len(steps) < 2:
        raise ValueError(f"steps and errors need the same length >= 2, got {len(steps)} and {len(errors)}")
    if min(errors) <= 0 or min(steps) < 1:
        raise ValueError("errors must be > 0 and steps >= 1 to fit a slope on a log-log scale")
    x = torch.log(torch.as_tensor(steps, dtype=torch.float64))
    y = torch.log(torch.as_tensor(errors, dtype=torch.float64))
    xc = x - x.mean()
    return float(-(xc * (y - y.mean())).sum() / (xc * xc).sum())


def convergence(field: Field, x0: Tensor, methods: Sequence[str] = METHODS,
                steps: Sequence[int] = (4, 8, 16, 32, 64), reference: Tensor | None = None
                ) -> dict[str, dict[str, Any]]:
    """{method: {'steps', 'nfe', 'errors', 'order'}}: the mean distance E||x_N - x(1)|| between N-step solves
    (in float64) and the adaptive reference, for every N in `steps`, and the fitted order."""
    ref = reference_solution(field, x0) if reference is None else reference.double()
    f64 = float64_field(field)
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        _check_method(method)
        errors = [float((solve(f64, x0.double(), steps=int(n), method=method) - ref).norm(dim=1).mean())
                  for n in steps]
        out[method] = {"steps": [int(n) for n in steps], "nfe": [nfe(method, int(n)) for n in steps],
                       "errors": errors, "order": measured_order(steps, errors)}
    return out


def render_convergence(results: Mapping[str, Mapping[str, Any]], title: str = "Error against the number of steps",
                       against: str = "steps") -> go.Figure:
    """Log-log error E||x_N - x(1)|| against steps (or NFE: against='nfe') with the fitted order in each legend
    entry, and thin reference slopes N^(-1), N^(-2), N^(-4) through the first Euler, Heun and RK4 points."""
    if against not in ("steps", "nfe"):
        raise ValueError(f"against must be 'steps' or 'nfe', got {against!r}")
    fig = go.Figure()
    for method, res in results.items():
        fig.add_trace(go.Scatter(x=res[against], y=res["errors"], mode="lines+markers",
                                 name=f"{METHOD_LABELS.get(method, method)}: order {res['order']:.2f}",
                                 line=dict(color=METHOD_COLORS.get(method), width=3, dash=_DASH.get(method)),
                                 marker=dict(size=8)))
    for method, p in (("euler", 1), ("heun", 2), ("rk4", 4)):
        if method in results:
            res = results[method]
            x0_, e0 = res[against][0], res["errors"][0]
            xs = [x0_, res[against][-1]]
            fig.add_trace(go.Scatter(x=xs, y=[e0, e0 * (xs[1] / x0_) ** (-p)], mode="lines", showlegend=False,
                                     line=dict(color=COLORS["path"], width=1, dash="dot"), hoverinfo="skip"))
    label = "number of steps N" if against == "steps" else "function evaluations (NFE)"
    apply_style(fig, title=title, x_title=label, y_title="error E‖x<sub>N</sub> − x(1)‖")
    fig.update_xaxes(type="log", dtick=math.log10(2), tickformat="d")
    fig.update_yaxes(type="log", exponentformat="power")
    return fig


# --- straightness ------------------------------------------------------------------------------------------------

def straightness_profile(traj: Trajectory) -> tuple[Tensor, Tensor]:
    """(t_mid [n], e [n]): e_k = E_x ||(x_end - x_start) - v_k||^2, v_k = (x_{k+1} - x_k) / dt_k, at the step
    midpoints; its time average is fmlab.metrics.straightness (for a trajectory from t = 0 to t = 1)."""
    xs = traj.xs.detach().cpu().double().flatten(2)
    ts = traj.ts.detach().cpu().double()
    dt = ts.diff()
    v = xs.diff(dim=0) / dt[:, None, None]  # finite-difference velocity
    chord = (xs[-1] - xs[0]) / (ts[-1] - ts[0])  # the straight, constant-speed velocity
    return 0.5 * (ts[1:] + ts[:-1]), (chord - v).pow(2).sum(-1).mean(-1)


def render_straightness(trajs: Mapping[str, Trajectory], colors: Mapping[str, str] | None = None,
                        title: str = "Where the paths bend") -> go.Figure:
    """The straightness integrand E||(x1 - x0) - v_t||^2 against t for each named trajectory; the legend gives
    the straightness S (its time average, 0 for straight paths) and the mean path-length ratio (1 if straight)."""
    fig = go.Figure()
    for i, (name, traj) in enumerate(trajs.items()):
        t_mid, e = straightness_profile(traj)
        color = (colors or {}).get(name, SEQUENCE[i % len(SEQUENCE)])
        fig.add_trace(go.Scatter(x=t_mid.tolist(), y=e.tolist(), mode="lines", line=dict(color=color, width=3),
                                 name=f"{name}: S = {straightness(traj):.3f}, length ratio "
                                      f"{path_length_ratio(traj):.3f}"))
    apply_style(fig, title=title, x_title="time t", y_title="E‖(x<sub>1</sub> − x<sub>0</sub>) − v<sub>t</sub>‖²")
    fig.update_layout(legend=dict(orientation="h", x=0.0, y=-0.22, yanchor="top"), height=560, margin=dict(b=130))
    fig.update_yaxes(rangemode="tozero")
    return fig


def render_paths(trajs: Mapping[str, Trajectory], data: Tensor | None = None, n_paths: int = 60,
                 extent: float = EXTENT, title: str = "Paths from noise to data") -> go.Figure:
    """Side-by-side panels of particle paths (grey, start blue, end green), one per named trajectory, each
    titled with its straightness S."""
    names = list(trajs)
    fig = make_subplots(rows=1, cols=len(names), horizontal_spacing=0.04,
                        subplot_titles=[f"{n}: S = {straightness(trajs[n]):.3f}" for n in names])
    for col, name in enumerate(names, start=1):
        xs = trajs[name].xs.detach().cpu()[:, :n_paths]
        if data is not None:
            fig.add_trace(scatter(data, COLORS["data"], "data x1", size=3, opacity=0.25, showlegend=col == 1),
                          row=1, col=col)
        px: list[float | None] = []
        py: list[float | None] = []
        for j in range(xs.shape[1]):
            px += xs[:, j, 0].tolist() + [None]
            py += xs[:, j, 1].tolist() + [None]
        fig.add_trace(go.Scatter(x=px, y=py, mode="lines", line=dict(color=COLORS["path"], width=1.2), name="paths",
                                 showlegend=col == 1), row=1, col=col)
        fig.add_trace(scatter(xs[0], COLORS["noise"], "x0 (t = 0)", size=5, showlegend=col == 1), row=1, col=col)
        fig.add_trace(scatter(xs[-1], COLORS["model"], "x1 (t = 1)", size=5, showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(range=[-extent, extent], title_text=AXIS_X, row=1, col=col)
        fig.update_yaxes(range=[-extent, extent], scaleanchor=f"x{'' if col == 1 else col}", scaleratio=1,
                         title_text=AXIS_Y if col == 1 else "", row=1, col=col)
    apply_style(fig, title=title)
    fig.update_layout(width=430 * len(names) + 60, height=520,
                      legend=dict(orientation="h", x=0.0, y=-0.18, yanchor="top"), margin=dict(b=110))
    return fig


# --- the old time embedding ------------------------------------------------------------------------------------

def wiggly_network(config: Any, progress: bool = False) -> Any:
    """Lab 04's comparison run: lab 03's training `config` on the same MLP with the time embedding fmlab had before,
    frequencies up to fmlab.train.LEGACY_TIME_FREQ_MAX (200), initialised from seed `config.seed`; cached on disk
    like every lab run (fmlab.labkit.train_cached). Returns the trainer (`.ema` is the network to solve)."""
    from ..data import data_sampler
    from ..labkit import train_cached
    from ..models import build_model
    from ..train import LEGACY_TIME_FREQ_MAX

    with torch.random.fork_rng():  # the initial weights depend on the seed only, not on what ran before
        torch.manual_seed(config.seed)
        model = build_model(hidden=config.hidden, depth=config.depth, time_freq_max=LEGACY_TIME_FREQ_MAX)
    return train_cached(config, progress=progress, model=model, data_fn=data_sampler(config.data),
                        cache_name="lab 04, time frequencies up to 200")


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Lab 04's runs for `python -m fmlab prewarm` (fmlab.prewarm): lab 03's network (`T.fit(CONFIG)`) and the same
    training with time frequencies up to 200 (`wiggly_network`)."""
    from ..prewarm import job
    from .training import lab03_config

    config = lab03_config(fast)
    return [job("04", "fmlab.viz.training:fit", config, progress=False, cost=config.steps),
            job("04", "fmlab.viz.solvers:wiggly_network", config, progress=False, cost=config.steps)]
