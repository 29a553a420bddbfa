"""Figures and wiring for lab 05, couplings: independent against minibatch optimal-transport pairing, the
coupling lines, the posterior variance Var(x1 | x_t) they leave, and what straighter paths buy (1-step samples).

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise x0 ~ N(0, I), t = 1 is data x1; x_t = (1 - t) x0 + t x1. Flow
matching learns v*(x, t) = E[x1 - x0 | x_t = x]. On the linear path x1 - x0 = (x1 - x_t) / (1 - t), so

    E ||(x1 - x0) - v*(x_t, t)||^2 = tr Cov[x1 | x_t] / (1 - t)^2:

the posterior variance of the data given x_t is what the conditional targets disagree by, what the loss floor
is made of, and what makes the learned paths bend. A coupling that pairs each x0 with a nearby x1 (OT) shrinks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from scipy.spatial import cKDTree
from torch import Tensor

from ..checks import check_int
from ..couplings import COUPLINGS, couple, pairing_cost
from ..data import GaussianMixture
from ..metrics import wasserstein
from ..solvers import Field, solve
from .style import COLORS, NOTEBOOK_WIDTH, SEQUENCE, apply_style, to_numpy
from .training import AXIS_X, AXIS_Y, EXTENT, scatter

__all__ = ["minibatch_pairs", "crossing_fraction", "render_coupling", "coupling_widget", "SINKHORN_REGS",
           "render_sinkhorn_coupling", "sinkhorn_widget", "posterior_variance_knn",
           "posterior_variance_curves", "render_posterior_variance", "sample_steps", "render_samples_grid",
           "samples_widget", "w2_table", "render_w2_vs_steps", "batch_sizes", "lab05_configs", "prewarm_jobs"]


def batch_sizes(n: int) -> list[int]:
    """Powers of two from 1 up to n (and n itself): the batch sizes a slider offers."""
    check_int(n, "n", 1)
    sizes = [2**k for k in range(n.bit_length()) if 2**k <= n]
    return sizes if sizes[-1] == n else sizes + [n]


def minibatch_pairs(x0: Tensor, x1: Tensor, batch_size: int, method: str = "ot") -> Tensor:
    """The partner of every x0 [n, d] among x1 [n, d] when consecutive blocks of `batch_size` points are coupled
    by `method` (fmlab.couplings.couple) block by block, as a trainer does batch by batch. Returns x1 reordered.

    batch_size 1 is the independent coupling; batch_size n is the exact OT plan of the whole sample.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    check_int(batch_size, "batch_size", 1)
    if method not in COUPLINGS:
        raise ValueError(f"method must be one of {COUPLINGS}, got {method!r}")
    parts = [couple(x0[i:i + batch_size], x1[i:i + batch_size], method).x1 for i in range(0, len(x0), batch_size)]
    return torch.cat(parts)


def crossing_fraction(x0: Tensor, x1: Tensor) -> float:
    """Fraction of the pairs of segments [x0_i, x1_i], [x0_j, x1_j] (i < j, 2D) that intersect.

    Two segments cross when each one's endpoints lie on opposite sides of the other's line (orientation test).
    """
    if x0.ndim != 2 or x0.shape[1] != 2 or x0.shape != x1.shape or len(x0) < 2:
        raise ValueError(f"x0 and x1 must both have shape [n, 2] with n >= 2, got {tuple(x0.shape)}, "
                         f"{tuple(x1.shape)}")
    a, b = x0.detach().cpu().double().numpy(), x1.detach().cpu().double().numpy()

    def orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:  # sign of (q - p) x (r - p)
        (qx, qy), (rx, ry) = (q - p).T, (r - p).T
        return np.sign(qx * ry - qy * rx)

    i, j = np.triu_indices(len(a), k=1)
    cross = ((orient(a[i], b[i], a[j]) * orient(a[i], b[i], b[j]) < 0)
             & (orient(a[j], b[j], a[i]) * orient(a[j], b[j], b[i]) < 0))
    return float(cross.mean())


def render_coupling(x0: Tensor, x1: Tensor, batch_size: int, method: str = "ot", extent: float = EXTENT,
                    max_lines: int = 256) -> go.Figure:
    """Noise x0 (blue), data x1 (orange) and a grey line from each x0 to its partner under minibatch `method`
    with `batch_size`. The title reports the mean cost E||x1 - x0||^2 and the fraction of crossing lines."""
    paired = minibatch_pairs(x0, x1, batch_size, method)
    a, b = x0[:max_lines].detach().cpu(), paired[:max_lines].detach().cpu()
    lx: list[float | None] = []
    ly: list[float | None] = []
    for (u0, v0), (u1, v1) in zip(a.tolist(), b.tolist(), strict=True):
        lx += [u0, u1, None]
        ly += [v0, v1, None]
    fig = go.Figure()
    color = COLORS["ot"] if batch_size > 1 else COLORS["independent"]
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color=color, width=1), opacity=0.6,
                             name="pairs (x0, x1)", hoverinfo="skip"))
    fig.add_trace(scatter(a, COLORS["noise"], "noise x0", size=6, opacity=0.9))
    fig.add_trace(scatter(b, COLORS["data"], "data x1", size=6, opacity=0.9))
    kind = "independent pairs" if batch_size == 1 else f"minibatch {method.upper()}, batch size {batch_size}"
    title = (f"{kind}: E‖x1 − x0‖² = {pairing_cost(x0, paired):.2f}, "
             f"crossing lines {100 * crossing_fraction(a, b):.0f}%")
    apply_style(fig, title=title, x_title=AXIS_X, y_title=AXIS_Y, square=True)
    fig.update_xaxes(range=[-extent, extent], constrain="domain")
    fig.update_yaxes(range=[-extent, extent], constrain="domain")
    fig.update_layout(width=820, height=640, legend=dict(x=1.02, y=1.0, xanchor="left"), margin=dict(r=160))
    return fig


def coupling_widget(x0: Tensor, x1: Tensor, batch_size: int | None = None, method: str = "ot") -> Any:
    """A batch-size slider (powers of two up to len(x0)) over `render_coupling`; each pairing is computed once, the
    neighbouring batch sizes in the background (interactive_view's prefetch)."""
    import ipywidgets as W

    from .widgets import interactive_view

    sizes = batch_sizes(len(x0))

    def render(batch_size: int) -> go.Figure:
        return render_coupling(x0, x1, batch_size, method)

    control = W.SelectionSlider(options=sizes, value=batch_size if batch_size in sizes else sizes[-1],
                                description="batch size", continuous_update=False,
                                style={"description_width": "initial"}, layout={"width": "420px"})
    return interactive_view(render, {"batch_size": control}, prefetch=True)


# --- entropic OT (Sinkhorn): a blurred coupling -------------------------------------------------------------------

SINKHORN_REGS = (0.01, 0.03, 0.1, 0.3, 1.0)  # relative to the mean cost: eps = reg * mean(C)
_WEIGHT_BANDS = ((0.5, 1.01, 0.9), (0.2, 0.5, 0.45), (0.05, 0.2, 0.15))  # P_ij / max_j P_ij range, line opacity


def render_sinkhorn_coupling(x0: Tensor, x1: Tensor, reg: float, n_show: int = 20, extent: float = EXTENT
                             ) -> go.Figure:
    """The entropic plan between the batches x0 and x1 (fmlab.sinkhorn, eps = reg * mean cost): from each of the
    first `n_show` noise points a line to every partner j whose weight P_ij is at least 5% of its row's largest,
    darker for heavier weights. The title reports, from `fmlab.sinkhorn.sinkhorn_bias`, the expected squared length
    of a pair drawn from the plan over the exact OT pairs' and the effective number of partners per noise point
    (`fmlab.sinkhorn.plan_statistics`)."""
    from ..couplings import cost_matrix, ot_permutation
    from ..sinkhorn import plan_statistics, sinkhorn_plan_torch

    a, b = x0.detach().double().cpu(), x1.detach().double().cpu()
    plan = sinkhorn_plan_torch(a, b, float(reg))
    cost = cost_matrix(a, b)
    bias = plan_statistics(plan, cost, float(cost[torch.arange(len(a)), ot_permutation(a, b)].mean()))
    plan = plan[:n_show]
    weight = plan / plan.max(dim=1, keepdim=True).values
    fig = go.Figure()
    for low, high, opacity in _WEIGHT_BANDS:
        i, j = torch.nonzero((weight >= low) & (weight < high), as_tuple=True)
        gap = torch.full((len(i), 1), float("nan"), dtype=torch.float64)
        lx = torch.cat([a[i, :1], b[j, :1], gap], 1).reshape(-1)
        ly = torch.cat([a[i, 1:], b[j, 1:], gap], 1).reshape(-1)
        fig.add_trace(go.Scatter(x=to_numpy(lx), y=to_numpy(ly), mode="lines", opacity=opacity, hoverinfo="skip",
                                 line=dict(color=COLORS["ot"], width=1.2), name=f"weight {low:g}-{min(high, 1):g}"))
    fig.add_trace(scatter(a[:n_show], COLORS["noise"], f"noise x0 (first {n_show})", size=6, opacity=0.9))
    fig.add_trace(scatter(b, COLORS["data"], "data x1", size=5, opacity=0.7))
    title = (f"Sinkhorn, reg = {reg:g}: pairs cost {bias['plan_cost']:.2f}x the exact OT pairs', "
             f"{bias['partners']:.1f} partners per x0")
    apply_style(fig, title=title, x_title=AXIS_X, y_title=AXIS_Y, square=True)
    fig.update_xaxes(range=[-extent, extent], constrain="domain")
    fig.update_yaxes(range=[-extent, extent], constrain="domain")
    fig.update_layout(width=820, height=640, legend=dict(x=1.02, y=1.0, xanchor="left"), margin=dict(r=160),
                      title_font_size=16)
    return fig


def sinkhorn_widget(x0: Tensor, x1: Tensor, reg: float = 0.03) -> Any:
    """A regularisation slider (SINKHORN_REGS) over `render_sinkhorn_coupling`; each plan is solved once, the
    neighbouring ones in the background."""
    import ipywidgets as W

    from .widgets import interactive_view

    def render(reg: float) -> go.Figure:
        return render_sinkhorn_coupling(x0, x1, reg)

    control = W.SelectionSlider(options=list(SINKHORN_REGS), value=reg if reg in SINKHORN_REGS else 0.03,
                                description="Sinkhorn reg", continuous_update=False,
                                style={"description_width": "initial"}, layout={"width": "420px"})
    return interactive_view(render, {"reg": control}, prefetch=True)


# --- posterior variance Var(x1 | x_t) ----------------------------------------------------------------------------

def posterior_variance_knn(x0: Tensor, x1: Tensor, t: float, k: int = 32) -> float:
    """Monte Carlo E_{x_t} tr Cov[x1 | x_t] for coupled pairs (x0_i, x1_i): at each x_t = (1 - t) x0 + t x1, the
    variance of the partners x1 of its k nearest neighbours in x_t (a k-NN estimate; it needs n >> k samples,
    and it is biased upwards by the spread of E[x1 | x_t] across a neighbourhood)."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= len(x0):
        raise ValueError(f"k must be an integer in [2, n = {len(x0)}], got {k!r}")
    a, b = x0.detach().cpu().double(), x1.detach().cpu().double()
    xt = ((1 - t) * a + t * b).numpy()  # x_t = (1 - t) x0 + t x1
    _, idx = cKDTree(xt).query(xt, k=k)
    nb = b.numpy()[idx]  # partners of the neighbours [n, k, d]
    return float(nb.var(axis=1, ddof=1).sum(-1).mean())  # E tr Cov[x1 | x_t]


def posterior_variance_curves(gmm: GaussianMixture, times: Sequence[float], n: int = 4096,
                              batch_sizes: Sequence[int] = (16, 256), k: int = 32, seed: int = 0
                              ) -> dict[str, list[float]]:
    """E_{x_t} tr Cov[x1 | x_t] against t: closed form for independent pairs (the mixture's posterior_variance
    averaged over x_t ~ p_t), its k-NN estimate on independent pairs (to show the estimator agrees), and the k-NN
    estimate on minibatch-OT pairs for each batch size. n pairs from a generator seeded with seed."""
    g = torch.Generator().manual_seed(seed)
    x1 = gmm.sample(n, generator=g).double()
    x0 = torch.randn(x1.shape, generator=g, dtype=torch.float64)
    curves: dict[str, list[float]] = {
        "independent, closed form": [float(gmm.posterior_variance((1 - t) * x0 + t * x1, float(t)).mean())
                                     for t in times],
        "independent, k-NN estimate": [posterior_variance_knn(x0, x1, float(t), k) for t in times]}
    for b in batch_sizes:
        paired = minibatch_pairs(x0, x1, int(b), "ot")
        curves[f"OT, batch {b}, k-NN estimate"] = [posterior_variance_knn(x0, paired, float(t), k) for t in times]
    return curves


def render_posterior_variance(times: Sequence[float], curves: Mapping[str, Sequence[float]],
                              title: str = "How much the data can still vary given x_t") -> go.Figure:
    """The curves of `posterior_variance_curves` against t: closed form black, independent sky blue, OT purple
    (darker for larger batches)."""
    fig = go.Figure()
    ot_names = [name for name in curves if name.startswith("OT")]
    for name, values in curves.items():
        if name.endswith("closed form"):
            style = dict(color=COLORS["reference"], width=3)
        elif name.startswith("independent"):
            style = dict(color=COLORS["independent"], width=3, dash="dash")
        else:
            shade = (ot_names.index(name) + 1) / len(ot_names)
            style = dict(color=COLORS["ot"], width=1.5 + 2 * shade)
        fig.add_trace(go.Scatter(x=list(times), y=list(values), mode="lines+markers", name=name, line=style,
                                 opacity=0.55 + 0.45 * (1 if not name.startswith("OT") else shade)))
    apply_style(fig, title=title, x_title="time t", y_title="E tr Cov[x<sub>1</sub> | x<sub>t</sub>]")
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(legend=dict(x=0.98, xanchor="right", y=0.98, bgcolor="rgba(255,255,255,0.7)"))
    return fig


# --- what straighter paths buy: few-step samples -----------------------------------------------------------------

def sample_steps(fields: Mapping[str, Field], x0: Tensor, steps: int, method: str = "euler") -> dict[str, Tensor]:
    """{name: samples} from the same noise x0 with `steps` steps of `method` for every field."""
    return {name: solve(field, x0, steps=int(steps), method=method) for name, field in fields.items()}


def render_samples_grid(samples: Mapping[str, Tensor], data: Tensor, steps: int, extent: float = EXTENT,
                        colors: Mapping[str, str] | None = None) -> go.Figure:
    """One panel per named sample set over the data, titled with its W2 to the data."""
    names = list(samples)
    w2 = {name: wasserstein(samples[name], data) for name in names}
    fig = make_subplots(rows=1, cols=len(names), horizontal_spacing=0.04,
                        subplot_titles=[f"{name}: W2 = {w2[name]:.2f}" for name in names])
    for col, name in enumerate(names, start=1):
        color = (colors or {}).get(name, SEQUENCE[(col - 1) % len(SEQUENCE)])
        fig.add_trace(scatter(data, COLORS["data"], "data x1", size=3, opacity=0.3, showlegend=col == 1),
                      row=1, col=col)
        fig.add_trace(scatter(samples[name], color, name, size=4, opacity=0.8), row=1, col=col)
        fig.update_xaxes(range=[-extent, extent], title_text=AXIS_X, row=1, col=col)
        fig.update_yaxes(range=[-extent, extent], scaleanchor=f"x{'' if col == 1 else col}", scaleratio=1,
                         title_text=AXIS_Y if col == 1 else "", row=1, col=col)
    apply_style(fig, title=f"Samples after {steps} Euler step{'s' if steps > 1 else ''} from the same noise")
    panel = min(430, (NOTEBOOK_WIDTH - 60) // len(names))  # three panels still fit in a notebook
    fig.update_layout(width=panel * len(names) + 60, height=panel + 90,
                      legend=dict(orientation="h", x=0.0, y=-0.18, yanchor="top"), margin=dict(b=110))
    return fig


def samples_widget(fields: Mapping[str, Field], x0: Tensor, data: Tensor, steps: int = 1,
                   colors: Mapping[str, str] | None = None) -> Any:
    """A step-count slider (1 to 16, redraws on release) over `render_samples_grid`; every figure is kept, and the
    neighbouring step counts are drawn in the background (interactive_view's prefetch)."""
    from .widgets import int_slider, interactive_view

    fields = dict(fields)  # the models at the time of the call: a lab that adds one later gets a new widget

    def render(steps: int) -> go.Figure:
        return render_samples_grid(sample_steps(fields, x0, steps), data, steps, colors=colors)

    return interactive_view(render, {"steps": int_slider("Euler steps", 1, 16, steps, continuous_update=False)},
                            prefetch=True)


def w2_table(fields: Mapping[str, Field], x0: Tensor, data: Tensor, steps: Sequence[int] = (1, 2, 4, 8, 32)
             ) -> dict[str, dict[int, float]]:
    """{name: {steps: W2}} of Euler samples from the same noise x0 against `data`."""
    return {name: {int(k): wasserstein(solve(field, x0, steps=int(k)), data) for k in steps}
            for name, field in fields.items()}


def render_w2_vs_steps(table: Mapping[str, Mapping[int, float]], colors: Mapping[str, str] | None = None,
                       floor: float | None = None, title: str = "Few-step sample quality") -> go.Figure:
    """W2 against Euler steps (log-log) per named model, with the data-against-data noise floor if given."""
    fig = go.Figure()
    for i, (name, row) in enumerate(table.items()):
        color = (colors or {}).get(name, SEQUENCE[i % len(SEQUENCE)])
        fig.add_trace(go.Scatter(x=list(row), y=list(row.values()), mode="lines+markers", name=name,
                                 line=dict(color=color, width=3), marker=dict(size=8)))
    if floor is not None:
        xs = [k for row in table.values() for k in row] or [1]
        fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[floor, floor], mode="lines",
                                 name="noise floor (data vs data)", line=dict(color=COLORS["reference"], dash="dash")))
    apply_style(fig, title=title, x_title="Euler steps (= NFE)", y_title="W2 to the data")
    fig.update_xaxes(type="log", dtick=np.log10(2), tickformat="d")
    fig.update_yaxes(type="log")
    return fig


# --- pre-warming ----------------------------------------------------------------------------------------------

def lab05_configs(fast: bool) -> dict[str, Any]:
    """Lab 05's three runs (its BASE, INDEP, OT and REFLOW cells): {'independent', 'OT', 'reflow'} -> TrainConfig."""
    from ..train import TrainConfig

    base = dict(data="8modes", loss="cfm", steps=300 if fast else 3000, batch_size=256, hidden=128, depth=3, lr=3e-3,
                warmup=30 if fast else 100, log_every=30 if fast else 100, seed=0, threads=1)
    return {"independent": TrainConfig(**base, coupling="independent"), "OT": TrainConfig(**base, coupling="ot"),
            "reflow": TrainConfig(**{**base, "loss": "reflow"},
                                  loss_settings={"teacher_steps": 8, "teacher_method": "midpoint"})}


def prewarm_jobs(fast: bool) -> list:
    """Lab 05's runs for `python -m fmlab prewarm` (fmlab.prewarm): the reflow student (and the OT run) after the
    teacher, the independent-coupling run."""
    from ..prewarm import job

    c = lab05_configs(fast)
    fit = "fmlab.viz.training:fit"
    return [job("05", fit, c["independent"], progress=False, cost=c["independent"].steps),
            job("05", fit, c["OT"], progress=False, cost=c["OT"].steps, stage=1),  # beside the student
            job("05", fit, c["reflow"], c["independent"], progress=False, cost=3 * c["reflow"].steps, stage=1)]
