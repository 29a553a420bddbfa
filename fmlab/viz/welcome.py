"""Figures for lab 00 (welcome): a first slider over the path from noise to data, and the one-minute tour's
samples beside the data with the training loss, plus a slider over the number of sampling steps.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data x1; x_t = (1 - t) x0 + t x1.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

from ..checks import check_choice, check_int
from ..data import TOY_DATASETS, data_sampler
from ..experiments import samples_of
from .style import COLORS, FONT_SIZE, NOTEBOOK_WIDTH, apply_style, to_numpy
from .widgets import View, int_slider, interactive_view, t_slider

__all__ = ["toy_points", "render_interpolation", "interpolation_widget", "sample_model", "render_tour",
           "render_samples", "sampling_steps_widget", "prewarm_jobs"]

LIM = 3.0


def _xy(x: Tensor) -> dict[str, Any]:
    return dict(x=to_numpy(x[:, 0]), y=to_numpy(x[:, 1]))


@functools.lru_cache(maxsize=8)
def toy_points(name: str = "moons", n: int = 1000, seed: int = 0) -> Tensor:
    """n points [n, 2] (float32) of a toy data set, seeded."""
    check_choice(name, "name", sorted(TOY_DATASETS))
    return data_sampler(name)(n, torch.Generator().manual_seed(seed)).float()


@functools.lru_cache(maxsize=8)
def _noise(n: int, seed: int) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed + 10_000))


def _limits(*clouds: Tensor) -> list[float]:
    m = max(float(c.abs().max()) for c in clouds)
    return [-max(LIM, m + 0.3), max(LIM, m + 0.3)]


def render_interpolation(t: float = 0.5, data: str = "moons", n: int = 400, seed: int = 0) -> go.Figure:
    """Noise x0 (blue), data x1 (orange) and the points x_t = (1 - t) x0 + t x1 in between (vermillion), with the
    straight lines joining a few pairs."""
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    x1, x0 = toy_points(data, n, seed), _noise(n, seed)
    xt = (1 - t) * x0 + t * x1  # x_t = (1 - t) x0 + t x1
    k = min(30, n)
    lines = torch.cat([x0[:k], x1[:k], torch.full((k, 2), float("nan"))], 1).reshape(-1, 2)  # NaN breaks lines
    fig = go.Figure([
        go.Scatter(**_xy(lines), mode="lines", line=dict(color=COLORS["path"], width=1), name="pairs x0 -> x1",
                   hoverinfo="skip"),
        go.Scatter(**_xy(x0), mode="markers", marker=dict(color=COLORS["noise"], size=4), opacity=0.3,
                   name="noise x0 (t = 0)"),
        go.Scatter(**_xy(x1), mode="markers", marker=dict(color=COLORS["data"], size=4), opacity=0.4,
                   name="data x1 (t = 1)"),
        go.Scatter(**_xy(xt), mode="markers", marker=dict(color=COLORS["highlight"], size=6), name="x_t"),
    ])
    lim = _limits(x0, x1)
    apply_style(fig, f"x_t = (1 - t) x0 + t x1 at t = {t:.2f}", "x (first coordinate)", "y (second coordinate)",
                square=True)
    fig.update_xaxes(range=lim)
    return fig.update_yaxes(range=lim)


def interpolation_widget(data: str = "moons") -> View:
    """A t slider over `render_interpolation`: the first slider of the labs."""
    return interactive_view(render_interpolation, {"t": t_slider(0.0)}, data=data)


def sample_model(model: nn.Module, n: int = 1000, steps: int = 50, method: str = "euler", seed: int = 1) -> Tensor:
    """n samples [n, 2]: x0 ~ N(0, I) (seeded) carried from t = 0 to t = 1 by `steps` solver steps of dx/dt = v."""
    check_int(steps, "steps", 1)
    return samples_of(model, n, steps, method=method, generator=torch.Generator().manual_seed(seed))


def render_samples(samples: Tensor, data: Tensor, title: str = "Model samples and data") -> go.Figure:
    """Model samples (green) over the data (orange), same axes."""
    fig = go.Figure([
        go.Scatter(**_xy(data), mode="markers", marker=dict(color=COLORS["data"], size=4), opacity=0.5,
                   name="data"),
        go.Scatter(**_xy(samples), mode="markers", marker=dict(color=COLORS["model"], size=4), opacity=0.7,
                   name="model samples"),
    ])
    lim = _limits(data)
    apply_style(fig, title, "x (first coordinate)", "y (second coordinate)", square=True)
    fig.update_xaxes(range=lim)
    return fig.update_yaxes(range=lim)


def render_tour(samples: Tensor, data: Tensor, log: Sequence[dict[str, Any]], w2: float | None = None) -> go.Figure:
    """The tour's result: the training loss by step (left) and model samples over the data (right)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=("training loss", "samples (green) vs data (orange)"))
    steps = [r["step"] for r in log]
    fig.add_trace(go.Scatter(x=steps, y=[r["loss"] for r in log], mode="lines", name="loss",
                             line=dict(color=COLORS["model"], width=3)), row=1, col=1)
    fig.add_trace(go.Scatter(**_xy(data), mode="markers", marker=dict(color=COLORS["data"], size=4), opacity=0.5,
                             name="data"), row=1, col=2)
    fig.add_trace(go.Scatter(**_xy(samples), mode="markers", marker=dict(color=COLORS["model"], size=4),
                             opacity=0.7, name="model samples"), row=1, col=2)
    title = f"Trained for {steps[-1] if steps else 0} steps"
    if w2 is not None:
        title += f": W2(samples, data) = {w2:.3f}"
    apply_style(fig, title)
    fig.update_xaxes(title_text="training step", row=1, col=1)
    fig.update_yaxes(title_text="flow-matching loss", row=1, col=1)
    lim = _limits(data)
    fig.update_xaxes(title_text="x", range=lim, row=1, col=2)
    fig.update_yaxes(title_text="y", range=lim, scaleanchor="x2", scaleratio=1, row=1, col=2)
    fig.update_layout(width=NOTEBOOK_WIDTH, height=500, showlegend=False)
    fig.update_annotations(font_size=FONT_SIZE)
    return fig


def sampling_steps_widget(model: nn.Module, data: Tensor, n: int = 1000, max_steps: int = 50) -> View:
    """A slider over the number of Euler steps used to sample `model`; samples are cached per step count."""
    cache: dict[int, Tensor] = {}

    def render(steps: int) -> go.Figure:
        if steps not in cache:
            cache[steps] = sample_model(model, n, steps)
        return render_samples(cache[steps], data, f"{steps} Euler step{'s' if steps > 1 else ''} from noise to data")

    return interactive_view(render, {"steps": int_slider("Euler steps", 1, max_steps, 1, continuous_update=False)})


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Lab 00's one training run (its `config` cell) for `python -m fmlab prewarm` (fmlab.prewarm)."""
    from ..prewarm import job
    from ..train import TrainConfig

    config = TrainConfig(data="moons", loss="cfm", steps=300 if fast else 2000, batch_size=256, hidden=128, depth=3,
                         lr=2e-3, warmup=50, log_every=25, ckpt_every=0, seed=0)
    return [job("00", "fmlab.labkit:train_cached", config, progress=False, cost=config.steps)]
