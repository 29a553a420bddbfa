"""Side-by-side particle animations that play in the browser: one panel per method, the same noise in each, one time
slider and a play button for all of them.

The frames are computed once in Python and shipped with the figure (plotly frames), so dragging the slider or pressing
play never calls the kernel: scrubbing is as fast as the browser draws, and the animation also plays in a notebook
exported to static HTML. Time runs from noise at t = 0 to data at t = 1; a trajectory is a fmlab.solvers.Trajectory
(states xs [n + 1, B, 2] at times ts [n + 1]) or a plain tensor of states at evenly spaced times.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..checks import check_int
from .style import COLORS, SEQUENCE, apply_style, to_numpy

__all__ = ["MAX_FRAMES", "trajectory_states", "render_particles_animation"]

MAX_FRAMES = 51  # frames kept per animation (evenly spaced, the first and last included): smooth, and light to send


def trajectory_states(trajectory: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(states [n + 1, B, 2], times [n + 1]) of a Trajectory, or of a tensor [n + 1, B, 2] on t = 0, 1/n, ..., 1."""
    xs = getattr(trajectory, "xs", trajectory)
    if not isinstance(xs, torch.Tensor) or xs.ndim != 3 or xs.shape[-1] != 2 or len(xs) < 2:
        raise ValueError(f"a trajectory must be a Trajectory or a tensor [n + 1, B, 2] with n >= 1, got "
                         f"{getattr(xs, 'shape', type(xs).__name__)}")
    ts = getattr(trajectory, "ts", None)
    ts = torch.linspace(0, 1, len(xs)) if ts is None else torch.as_tensor(ts, dtype=torch.float64)
    return xs.detach().cpu(), ts.detach().cpu()


def _frame_indices(length: int, max_frames: int) -> list[int]:
    if length <= max_frames:
        return list(range(length))
    return sorted({round(i * (length - 1) / (max_frames - 1)) for i in range(max_frames)})


def render_particles_animation(trajectories: Mapping[str, Any], data: torch.Tensor | None = None,
                               colors: Mapping[str, str] | None = None, extent: float = 4.0, title: str = "",
                               max_frames: int = MAX_FRAMES, frame_ms: int = 80) -> go.Figure:
    """One panel per named trajectory, every panel's particles at the same time, under one slider and play button.

    All trajectories must share their times (the same solver grid) and particle count, so that panel k at frame j
    shows the same noise points at the same t. `data` (optional, [m, 2]) is drawn in grey in every panel.
    """
    if not trajectories:
        raise ValueError("trajectories must name at least one trajectory")
    states = {name: trajectory_states(tr) for name, tr in trajectories.items()}
    first_xs, first_ts = next(iter(states.values()))
    for name, (xs, ts) in states.items():
        if xs.shape[:2] != first_xs.shape[:2] or not torch.allclose(ts.double(), first_ts.double()):
            raise ValueError(f"trajectory {name!r} must have the times and particle count of the first one: shape "
                             f"{tuple(xs.shape)} against {tuple(first_xs.shape)}")
    check_int(max_frames, "max_frames", 2)
    check_int(frame_ms, "frame_ms", 1)
    names = list(states)
    colors = colors or {}
    fig = make_subplots(1, len(names), subplot_titles=names, horizontal_spacing=0.03)
    for col in range(1, len(names) + 1):
        if data is not None:
            d = to_numpy(data)
            fig.add_trace(go.Scatter(x=d[:, 0], y=d[:, 1], mode="markers", showlegend=False, hoverinfo="skip",
                                     marker=dict(size=3, color=COLORS["path"], opacity=0.35)), 1, col)
    particle_traces = []
    for col, name in enumerate(names, 1):
        x = to_numpy(states[name][0][0])
        particle_traces.append(len(fig.data))
        fig.add_trace(go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", name=name, showlegend=False,
                                 marker=dict(size=4, color=colors.get(name, SEQUENCE[(col - 1) % len(SEQUENCE)]))),
                      1, col)
    frames, steps = [], []
    for j in _frame_indices(len(first_xs), max_frames):
        t = float(first_ts[j])
        frames.append(go.Frame(name=f"{t:.2f}", traces=particle_traces,
                               data=[go.Scatter(x=to_numpy(states[n][0][j][:, 0]), y=to_numpy(states[n][0][j][:, 1]))
                                     for n in names]))
        steps.append(dict(method="animate", label=f"{t:.2f}",
                          args=[[f"{t:.2f}"], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                                   transition=dict(duration=0))]))
    fig.frames = frames
    play = dict(label="play", method="animate",
                args=[None, dict(frame=dict(duration=frame_ms, redraw=False), fromcurrent=True,
                                 transition=dict(duration=0))])
    pause = dict(label="pause", method="animate",
                 args=[[None], dict(mode="immediate", frame=dict(duration=0, redraw=False))])
    apply_style(fig, title=title)
    fig.update_layout(width=330 * len(names) + 80, height=500, margin=dict(t=80, b=120),
                      updatemenus=[dict(type="buttons", direction="left", x=0.12, y=0, xanchor="right",
                                        yanchor="top", pad=dict(r=10, t=72), buttons=[play, pause])],
                      sliders=[dict(active=0, steps=steps, x=0.12, y=0, len=0.88, yanchor="top",
                                    currentvalue=dict(prefix="t = ", xanchor="left"), pad=dict(t=40))])
    fig.update_xaxes(range=[-extent, extent], showticklabels=False)
    fig.update_yaxes(range=[-extent, extent], showticklabels=False, scaleanchor="x")
    for col in range(2, len(names) + 1):
        fig.update_yaxes(scaleanchor=f"x{col}", row=1, col=col)
    return fig
