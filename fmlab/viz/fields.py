"""Figures and numerics for lab 02 (vector fields and the marginalisation trick).

Convention: t = 0 is noise, t = 1 is data; linear path x_t = (1 - t) x0 + t x1. For one data point x1 the
conditional field is

    u_t(x | x1) = (x1 - x) / (1 - t)                      (the velocity that reaches x1 exactly at t = 1)

and the marginal field averages it over the posterior of x1 given x_t = x (the marginalisation trick):

    v*(x, t) = E[u_t(x | x1) | x_t = x] = (E[x1 | x_t = x] - x) / (1 - t).

For a Gaussian mixture both are closed-form (fmlab.data.GaussianMixture.velocity, posterior_weights); for a
finite set of points the marginal field is literally sum_i pi_i(x) u_t(x | x1_i). Conditional and marginal
flow-matching losses differ by the constant E ||u_t(x_t | x1) - u_t(x_t)||^2 = E[tr Var(x1 - x0 | x_t)], which
does not depend on the model, so both have the same gradient: `marginalisation_demo` checks it numerically.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

from ..checks import check_int
from ..data.gaussian import EmpiricalDistribution, GaussianMixture, gmm_2d, worked_example_1d
from .paths import segments, square_grid
from .style import COLORS, FONT_SIZE, NOTEBOOK_WIDTH, apply_style, to_numpy
from .widgets import View, dropdown, interactive_view, t_slider

__all__ = ["FIELD_DATA", "COMPONENT_COLORS", "field_data", "conditional_velocity", "quiver_xy", "posterior_colors",
           "render_fields", "render_marginalisation_1d", "fields_widget", "marginalisation_1d_widget",
           "LossGap", "fm_losses", "loss_gap", "marginalisation_demo", "render_loss_gap", "T_MAX", "ARROW_DT",
           "MarginalisationDemo", "conditional_and_marginal_paths",
           "prewarm_jobs"]

FIELD_DATA = ("three_points", "two_modes", "asymmetric", "8modes")
T_MAX = 0.9  # the field views stop here: u_t(x | x1) grows like 1 / (1 - t)
ARROW_DT = 0.1  # an arrow shows the displacement over a time step of ARROW_DT: x -> x + ARROW_DT v(x, t)
LIM = 5.0
WIDE = (NOTEBOOK_WIDTH, 560)
# Mixture components get their own soft qualitative palette (ColorBrewer Set2), distinct from the role colours of
# fmlab.viz.style (noise blue, data orange, model green, ...), so that a blend of them reads as "posterior weights".
COMPONENT_COLORS = ["#66C2A5", "#FC8D62", "#8DA0CB", "#E78AC3", "#A6D854", "#FFD92F", "#E5C494", "#B3B3B3"]


def field_data(name: str) -> GaussianMixture:
    """The data of the field views: 'three_points' (three Dirac atoms) or a named 2D mixture of fmlab.data."""
    if name == "three_points":
        return EmpiricalDistribution(torch.tensor([[-3.0, -1.0], [2.5, 2.0], [1.0, -3.0]]))
    if name not in FIELD_DATA:
        raise ValueError(f"data must be one of {list(FIELD_DATA)}, got {name!r}")
    return gmm_2d(name)


def conditional_and_marginal_paths(data: str = "8modes", n: int = 300, steps: int = 50,
                                   seed: int = 0) -> dict[str, Tensor]:
    """States [steps + 1, n, 2] at t = k / steps of the same n noise points moved two ways: conditionally, each
    on its straight line to its own data point, x_t = (1 - t) x0 + t x1 (x1 drawn independently); and marginally,
    by the ODE dx/dt = v*(x, t) of the closed-form marginal field (midpoint steps, float64; no evaluation at t = 1,
    where v* of point masses is singular)."""
    from ..solvers import solve

    check_int(n, "n", 1)
    check_int(steps, "steps", 1)
    target = field_data(data)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x1 = target.sample(n, generator=g).double()
    ts = torch.linspace(0, 1, steps + 1, dtype=torch.float64)[:, None, None]
    marginal = solve(lambda x, t: target.velocity(x, t), x0, steps=steps, method="midpoint", return_trajectory=True)
    return {"conditional: straight to its own x1": (1 - ts) * x0 + ts * x1,
            "marginal: following v*(x, t)": marginal.xs}


@functools.lru_cache(maxsize=8)
def _data(name: str) -> GaussianMixture:
    return field_data(name)


def _check_t(t: float, t_max: float = T_MAX) -> float:
    t = float(t)
    if not 0.0 <= t <= t_max:
        raise ValueError(f"t must lie in [0, {t_max}] (the fields blow up like 1 / (1 - t) at t = 1), got {t}")
    return t


def conditional_velocity(x: Tensor, x1: Tensor, t: float | Tensor) -> Tensor:
    """u_t(x | x1) = (x1 - x) / (1 - t) on the linear path; x [B, d], x1 [d] or [B, d], t a float or [B] < 1."""
    t = torch.as_tensor(t, dtype=x.dtype)
    if bool((t >= 1).any()) or bool((t < 0).any()):
        raise ValueError("t must lie in [0, 1) for the conditional velocity (it is infinite at t = 1)")
    return (x1 - x) / (1 - t).reshape(-1, *([1] * (x.ndim - 1)))  # (x1 - x) / (1 - t)


# --- drawing helpers -------------------------------------------------------------------------------------------

def quiver_xy(points: Tensor, vectors: Tensor, max_len: float | None = None,
              head: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Arrows points_i -> points_i + vectors_i (lengths capped at max_len) as x, y arrays of one line trace."""
    vec = vectors.double()
    if max_len is not None:
        norm = vec.norm(dim=1, keepdim=True)
        vec = vec * torch.clamp(max_len / norm.clamp_min(1e-12), max=1.0)  # cap, keep the direction
    tip = points.double() + vec
    length = vec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    back = -vec / length * torch.clamp(head * length, max=0.25)  # arrowhead barbs: back along the shaft, +-25 deg
    c, s = math.cos(math.radians(25)), math.sin(math.radians(25))
    left = torch.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1]], dim=1)
    right = torch.stack([c * back[:, 0] + s * back[:, 1], -s * back[:, 0] + c * back[:, 1]], dim=1)
    xs, ys = (np.concatenate(a) for a in zip(segments(points.double(), tip), segments(tip, tip + left),
                                              segments(tip, tip + right), strict=True))
    return xs, ys


def _component_color(k: int) -> str:
    return COMPONENT_COLORS[k % len(COMPONENT_COLORS)]


def _hex_rgb(color: str) -> Tensor:
    return torch.tensor([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=torch.float64)


def posterior_colors(weights: Tensor, lighten: float = 0.35) -> Tensor:
    """RGB [.., 3] (0-255) blending component colours (COMPONENT_COLORS) by posterior weights [.., K],
    mixed with white by `lighten` so that arrows drawn on top stay readable."""
    k = weights.shape[-1]
    palette = torch.stack([_hex_rgb(_component_color(i)) for i in range(k)])  # [K, 3]
    rgb = weights.double() @ palette  # sum_k pi_k colour_k
    return lighten * 255.0 + (1 - lighten) * rgb


@functools.lru_cache(maxsize=4)
def _pairs(name: str, n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x1 = _data(name).sample(n, generator=g).double()
    return torch.randn(n, 2, generator=g, dtype=torch.float64), x1


def _background(name: str, t: float, res: int) -> go.Image:
    axis, pts = square_grid(LIM, res)
    pi = _data(name).posterior_weights(pts, t)  # p(k | x_t = x) [res*res, K]
    rgb = posterior_colors(pi).reshape(res, res, 3)
    step = float(axis[1] - axis[0])
    return go.Image(z=rgb.round().numpy().astype(np.uint8), x0=-LIM, dx=step, y0=-LIM, dy=step, hoverinfo="skip",
                    name="posterior weights", colormodel="rgb")


def _component_markers(name: str) -> list[go.Scatter]:
    data = _data(name)
    means = data.means
    traces = []
    for k in range(data.n_components):
        color = _component_color(k)
        traces.append(go.Scatter(x=[means[k, 0].item()], y=[means[k, 1].item()], mode="markers",
                                 marker=dict(color=color, size=15, symbol="star", line=dict(color="black", width=1)),
                                 name=f"component {k}", showlegend=False))
    return traces


# --- the two-panel field view -------------------------------------------------------------------------------------

def render_fields(t: float = 0.5, data: str = "three_points", point: int = 0, res: int = 15, n: int = 300,
                  seed: int = 0) -> go.Figure:
    """Left: the conditional field u_t(x | x1) of one data point x1 (the mean of component `point` modulo the
    number of components) with samples of
    p_t(x | x1). Right: the marginal field v*(x, t) (closed form) over the posterior weights p(k | x_t = x) as
    colours (each component its colour, blended by weight) with samples x_t of the marginal path.
    Arrows: displacement over ARROW_DT, capped at 1.4 grid spacings."""
    t = _check_t(t)
    mix = _data(data) if data in FIELD_DATA else field_data(data)
    check_int(point, "point", 0)
    point = point % mix.n_components
    axis, pts = square_grid(LIM - 0.4, res)
    cap = 1.4 * float(axis[1] - axis[0])
    x1 = mix.means[point]
    u_cond = conditional_velocity(pts, x1, t)
    u_marg = mix.velocity(pts, t)  # E[x1 - x0 | x_t = x], closed form
    x0, xs1 = _pairs(data, n, seed)
    xt_cond = t * x1 + (1 - t) * x0  # samples of p_t(x | x1)
    xt_marg = t * xs1 + (1 - t) * x0  # samples of p_t(x)
    color = _component_color(point)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.06, subplot_titles=(
        f"conditional u_t(x | x1) = (x1 - x) / (1 - t), x1 = component {point}",
        "marginal v*(x, t) = E[u_t(x | x1) | x_t = x]; colour = p(k | x_t)"))
    fig.add_trace(go.Scatter(x=to_numpy(xt_cond[:, 0]), y=to_numpy(xt_cond[:, 1]), mode="markers", opacity=0.5,
                             marker=dict(color=COLORS["highlight"], size=4), name="x_t ~ p_t(x | x1)"), row=1, col=1)
    qx, qy = quiver_xy(pts, ARROW_DT * u_cond, cap)
    fig.add_trace(go.Scatter(x=qx, y=qy, mode="lines", line=dict(color=color, width=1.6), name="u_t(x | x1)",
                             hoverinfo="skip"), row=1, col=1)
    fig.add_trace(go.Scatter(x=[x1[0].item()], y=[x1[1].item()], mode="markers", name="data point x1",
                             marker=dict(color=color, size=18, symbol="star", line=dict(color="black", width=1))),
                  row=1, col=1)
    fig.add_trace(_background(data, t, 60), row=1, col=2)
    fig.add_trace(go.Scatter(x=to_numpy(xt_marg[:, 0]), y=to_numpy(xt_marg[:, 1]), mode="markers", opacity=0.6,
                             marker=dict(color=COLORS["highlight"], size=4), name="x_t ~ p_t(x)"), row=1, col=2)
    qx, qy = quiver_xy(pts, ARROW_DT * u_marg, cap)
    fig.add_trace(go.Scatter(x=qx, y=qy, mode="lines", line=dict(color=COLORS["reference"], width=1.6),
                             name="v*(x, t) (closed form)", hoverinfo="skip"), row=1, col=2)
    for tr in _component_markers(data):
        fig.add_trace(tr, row=1, col=2)
    apply_style(fig, f"Vector fields at t = {t:.2f} (data: {data}); arrows = motion over \u0394t = {ARROW_DT}")
    for col in (1, 2):
        fig.update_xaxes(range=[-LIM, LIM], title_text="x (first coordinate)", row=1, col=col, constrain="domain")
        fig.update_yaxes(range=[-LIM, LIM], title_text="y (second coordinate)" if col == 1 else None, row=1, col=col,
                         scaleanchor="x" if col == 1 else "x2", scaleratio=1, constrain="domain", autorange=False)
    fig.update_layout(width=WIDE[0], height=WIDE[1], legend=dict(orientation="h", y=-0.18, x=0.5, xanchor="center"),
                      margin=dict(b=100))
    fig.update_annotations(font_size=FONT_SIZE - 2)
    return fig


def render_marginalisation_1d(t: float = 0.5) -> go.Figure:
    """Data at -3 and +3: the two conditional fields (x1 - x) / (1 - t), the marginal field (their average
    weighted by the posterior) and the posterior weight P(x1 = +3 | x_t = x) on a second axis."""
    t = _check_t(t, 0.95)
    data = worked_example_1d()
    xs = torch.linspace(-5, 5, 401, dtype=torch.float64)[:, None]
    u_marg = data.velocity(xs, t)[:, 0]
    pi_plus = data.posterior_weights(xs, t)[:, 1]  # atom order: -3, +3
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for x1 in (-3.0, 3.0):
        u = conditional_velocity(xs, torch.tensor([x1], dtype=torch.float64), t)[:, 0]
        fig.add_trace(go.Scatter(x=to_numpy(xs[:, 0]), y=to_numpy(u), mode="lines", name=f"u_t(x | x1 = {x1:+.0f})",
                                 line=dict(color=_component_color(0 if x1 < 0 else 1), width=3, dash="dash")),
                      secondary_y=False)
    fig.add_trace(go.Scatter(x=to_numpy(xs[:, 0]), y=to_numpy(u_marg), mode="lines", name="marginal v*(x, t)",
                             line=dict(color=COLORS["reference"], width=4)), secondary_y=False)
    fig.add_trace(go.Scatter(x=to_numpy(xs[:, 0]), y=to_numpy(pi_plus), mode="lines", name="P(x1 = +3 | x_t = x)",
                             line=dict(color=COLORS["ot"], width=2)), secondary_y=True)
    apply_style(fig, f"Marginalisation trick, data at \u00b13, t = {t:.2f}: u_t = \u03c0\u208a u(\u00b7|+3) + "
                     f"\u03c0\u208b u(\u00b7|\u22123)", "position x")
    bound = 8.0 / (1 - t)
    fig.update_yaxes(title_text="velocity", range=[-bound, bound], secondary_y=False)
    fig.update_yaxes(title_text="posterior weight of +3", range=[-0.05, 1.05], secondary_y=True, showgrid=False,
                     dtick=0.25)
    fig.update_layout(legend=dict(orientation="h", y=-0.2, x=0.5, xanchor="center"), width=860, height=560,
                      margin=dict(b=110))
    return fig


# --- widgets ---------------------------------------------------------------------------------------------------------

def fields_widget(data: str = "three_points") -> View:
    """t slider, data selector and data-point selector over `render_fields`; the data-point choices follow the
    number of components of the selected data."""
    controls = {
        "t": t_slider(0.5, T_MAX),  # redraws while dragging
        "data": dropdown("data", list(FIELD_DATA), data),
        "point": dropdown("data point x1 (component)", list(range(_data(data).n_components)), 0),
    }

    def sync_points(change: dict) -> None:  # registered before the view's redraw, so it runs first
        k = _data(change["new"]).n_components
        if len(controls["point"].options) != k:
            controls["point"].options = list(range(k))  # resets the choice to component 0

    controls["data"].observe(sync_points, names="value")
    return interactive_view(render_fields, controls)


def marginalisation_1d_widget() -> View:
    """t slider over `render_marginalisation_1d`."""
    return interactive_view(render_marginalisation_1d, {"t": t_slider(0.5, 0.95)})


# --- the marginalisation trick, numerically ---------------------------------------------------------------------

@dataclass(frozen=True)
class LossGap:
    """Losses of one model on one Monte Carlo batch and their gap.

    conditional = mean ||v(x_t, t) - (x1 - x0)||^2 (summed over coordinates), marginal = mean ||v - u_t(x_t)||^2,
    gap = conditional - marginal; grad_cosine = cos(grad conditional, grad marginal) over all parameters.
    """

    conditional: float
    marginal: float
    gap: float
    grad_cosine: float


def fm_losses(model: nn.Module, data: GaussianMixture, x0: Tensor, x1: Tensor, t: Tensor
              ) -> tuple[Tensor, Tensor, Tensor]:
    """(conditional loss, marginal loss, per-sample constant) on given samples (linear path).

    conditional: E ||v(x_t, t) - (x1 - x0)||^2;  marginal: E ||v(x_t, t) - u_t(x_t)||^2 with the closed-form u;
    constant: ||(x1 - x0) - u_t(x_t)||^2 per sample, whose mean is E[tr Var(x1 - x0 | x_t)].
    """
    x_t = (1 - t)[:, None] * x0 + t[:, None] * x1  # x_t = (1 - t) x0 + t x1
    target = x1 - x0  # conditional velocity
    u = data.velocity(x_t, t)  # marginal velocity E[x1 - x0 | x_t]
    v = model(x_t, t)
    conditional = (v - target).pow(2).sum(1).mean()
    marginal = (v - u).pow(2).sum(1).mean()
    return conditional, marginal, (target - u).pow(2).sum(1)


def loss_gap(model: nn.Module, data: GaussianMixture, x0: Tensor, x1: Tensor, t: Tensor) -> LossGap:
    """Both losses, their gap and the cosine between their parameter gradients for one model."""
    params = [p for p in model.parameters() if p.requires_grad]
    conditional, marginal, _ = fm_losses(model, data, x0, x1, t)
    g_c = torch.cat([g.reshape(-1) for g in torch.autograd.grad(conditional, params, retain_graph=True)])
    g_m = torch.cat([g.reshape(-1) for g in torch.autograd.grad(marginal, params)])
    cos = torch.nn.functional.cosine_similarity(g_c, g_m, dim=0).item()
    return LossGap(conditional.item(), marginal.item(), (conditional - marginal).item(), cos)


@dataclass(frozen=True)
class MarginalisationDemo:
    """The outcome of `marginalisation_demo`: one LossGap per model, and the constant two ways."""

    gaps: dict[str, LossGap]
    constant_mc: float  # mean ||(x1 - x0) - u_t(x_t)||^2 over the samples
    constant_posterior: float  # mean tr Cov(x1 | x_t) / (1 - t)^2 from the closed-form posterior
    n: int

    def table(self) -> str:
        rows = [f"{'model':<32}{'conditional':>12}{'marginal':>10}{'gap':>9}{'grad cosine':>13}"]
        for name, g in self.gaps.items():
            cos = "-" if math.isnan(g.grad_cosine) else f"{g.grad_cosine:.5f}"
            rows.append(f"{name:<32}{g.conditional:>12.4f}{g.marginal:>10.4f}{g.gap:>9.4f}{cos:>13}")
        rows.append(f"E[tr Var(x1 - x0 | x_t)] from the posterior covariance: {self.constant_posterior:.4f} "
                    f"(Monte Carlo {self.constant_mc:.4f}, n = {self.n})")
        return "\n".join(rows)


def marginalisation_demo(data: str | GaussianMixture = "8modes", n: int = 100_000, seed: int = 0,
                         models: dict[str, nn.Module] | None = None, include_exact: bool = True) -> MarginalisationDemo:
    """Compare conditional and marginal FM losses of several models on one batch of n samples (t ~ U[0, 1)).

    Default models: two randomly initialised MLPs of different sizes and seeds; pass `models` to add your own (a
    trained one, say). With include_exact, the closed-form field u_t itself is a row: its marginal loss is 0 and its
    conditional loss is the constant. The gap between the losses is the same for every model: it equals
    E[tr Var(x1 - x0 | x_t)] = E[tr Cov(x1 | x_t) / (1 - t)^2], computed from GaussianMixture.posterior_variance.
    """
    from ..models import build_model

    check_int(n, "n", 100)
    mix = field_data(data) if isinstance(data, str) else data
    g = torch.Generator().manual_seed(seed)
    x1 = mix.sample(n, generator=g).float()
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(n, generator=g) * 0.999  # t ~ U[0, 0.999): keeps 1 / (1 - t)^2 finite in float32
    if models is None:
        models = {}
    defaults = {}
    for name, hidden, depth, s in (("untrained MLP 64x2", 64, 2, 1), ("untrained MLP 32x3", 32, 3, 2)):
        torch.manual_seed(s)
        defaults[name] = build_model(dim=x1.shape[1], hidden=hidden, depth=depth)
    models = {**defaults, **models}
    gaps = {name: loss_gap(m, mix, x0, x1, t) for name, m in models.items()}
    with torch.no_grad():
        _, _, per_sample = fm_losses(next(iter(models.values())), mix, x0, x1, t)
        x_t = ((1 - t)[:, None] * x0 + t[:, None] * x1).double()
        post = mix.posterior_variance(x_t, t.double()) / (1 - t.double()) ** 2  # tr Cov(x1 | x_t) / (1 - t)^2
    if include_exact:
        c = per_sample.mean().item()  # the exact field: conditional loss = the constant, marginal loss = 0
        gaps["exact field u_t (no parameters)"] = LossGap(c, 0.0, c, float("nan"))
    return MarginalisationDemo(gaps, per_sample.mean().item(), post.mean().item(), n)


def render_loss_gap(demo: MarginalisationDemo) -> go.Figure:
    """Bars of the conditional and marginal loss per model, with the posterior constant as a reference line on the
    gap bars."""
    names = list(demo.gaps)
    fig = go.Figure([
        go.Bar(x=names, y=[demo.gaps[k].conditional for k in names], name="conditional loss",
               marker_color=COLORS["highlight"]),
        go.Bar(x=names, y=[demo.gaps[k].marginal for k in names], name="marginal loss",
               marker_color=COLORS["reference"]),
        go.Bar(x=names, y=[demo.gaps[k].gap for k in names], name="gap = conditional - marginal",
               marker_color=COLORS["path"]),
    ])
    fig.add_hline(y=demo.constant_posterior, line=dict(color=COLORS["ot"], width=3, dash="dash"),
                  annotation_text=f"E[tr Var(x1 - x0 | x_t)] = {demo.constant_posterior:.3f}",
                  annotation_position="top right")  # above the parameter-free model's bars, which end at the line
    apply_style(fig, "Same gap for every model: the losses differ by a constant", None, "loss (mean squared error)")
    top = max(demo.gaps[k].conditional for k in names)
    fig.update_yaxes(range=[0, 1.12 * top])  # headroom above the tallest bar
    return fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.15))


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Lab 02's trained MLP (section "a trained network") for `python -m fmlab prewarm` (fmlab.prewarm)."""
    from ..prewarm import job
    from ..train import TrainConfig

    config = TrainConfig(data="8gaussians", steps=200 if fast else 1500, batch_size=256, hidden=64, depth=3,
                         lr=3e-3, warmup=50, log_every=50, ckpt_every=0, seed=0)
    return [job("02", "fmlab.labkit:train_cached", config, progress=False, cost=config.steps)]
