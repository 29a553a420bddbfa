"""Shared widget wiring: every lab builds its controls and live figures the same way.

The pattern (DESIGN.md 6): a pure render function `render_xxx(**params) -> go.Figure` that tests call directly,
and a thin widget function that calls

    interactive_view(render_xxx, {"t": slider("t", 0, 1, 0.01, 0.5)}, fixed_param=...)

which draws `render_xxx(t=0.5, fixed_param=...)` into a plotly `go.FigureWidget` and, whenever a control moves,
re-renders and copies the new data and layout into the same FigureWidget inside `batch_update()` (one message to
the browser, no flicker). Render functions keep themselves fast (precompute, cache); controls whose redraw costs
more than ~50 ms use `continuous_update=False` so that the figure updates when the slider is released.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

__all__ = ["slider", "int_slider", "dropdown", "checkbox", "figure_widget", "update_figure", "link",
           "controls_box", "interactive_view", "View"]

_STYLE = {"description_width": "initial"}
_LAYOUT = {"width": "360px"}


# --- controls -----------------------------------------------------------------------------------------------

def slider(description: str, min: float, max: float, step: float, value: float, continuous_update: bool = True,
           readout_format: str = ".2f") -> W.FloatSlider:
    """A labelled float slider; `continuous_update=False` redraws on release (for costly redraws)."""
    if not min <= value <= max:
        raise ValueError(f"slider {description!r}: value must lie in [min, max] = [{min}, {max}], got {value}")
    if step <= 0:
        raise ValueError(f"slider {description!r}: step must be > 0, got {step}")
    return W.FloatSlider(value=value, min=min, max=max, step=step, description=description,
                         continuous_update=continuous_update, readout_format=readout_format, style=_STYLE,
                         layout=_LAYOUT)


def int_slider(description: str, min: int, max: int, value: int, step: int = 1,
               continuous_update: bool = True) -> W.IntSlider:
    """A labelled integer slider (step counts, batch sizes)."""
    if not min <= value <= max:
        raise ValueError(f"int_slider {description!r}: value must lie in [min, max] = [{min}, {max}], got {value}")
    if step < 1:
        raise ValueError(f"int_slider {description!r}: step must be >= 1, got {step}")
    return W.IntSlider(value=value, min=min, max=max, step=step, description=description,
                       continuous_update=continuous_update, style=_STYLE, layout=_LAYOUT)


def dropdown(description: str, options: Sequence[Any] | Mapping[str, Any], value: Any = None) -> W.Dropdown:
    """A labelled dropdown; `options` is a list of values or {label: value}; `value` defaults to the first."""
    values = list(options.values()) if isinstance(options, Mapping) else list(options)
    if not values:
        raise ValueError(f"dropdown {description!r}: options must not be empty")
    value = values[0] if value is None else value
    if value not in values:
        raise ValueError(f"dropdown {description!r}: value must be one of {values}, got {value!r}")
    opts = list(options.items()) if isinstance(options, Mapping) else values
    return W.Dropdown(options=opts, value=value, description=description, style=_STYLE, layout=_LAYOUT)


def checkbox(description: str, value: bool = False) -> W.Checkbox:
    """A labelled checkbox."""
    return W.Checkbox(value=bool(value), description=description, style=_STYLE, indent=False)


# --- figures -----------------------------------------------------------------------------------------------

def figure_widget(fig: go.Figure) -> go.FigureWidget:
    """A live `go.FigureWidget` copy of `fig` (updates in place when its data or layout change)."""
    if not isinstance(fig, go.Figure):
        raise ValueError(f"fig must be a plotly go.Figure, got {type(fig).__name__}")
    return go.FigureWidget(fig)


def update_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Copy the traces and layout of `fig` into `widget` in one batch update.

    Traces of the same types in the same order are updated in place (the browser restyles them); otherwise the
    traces are replaced. The layout is overwritten key by key, so titles, axis ranges and shapes follow `fig`.
    """
    same = len(widget.data) == len(fig.data) and all(
        a.type == b.type for a, b in zip(widget.data, fig.data, strict=True))
    with widget.batch_update():
        if same:
            for old, new in zip(widget.data, fig.data, strict=True):
                old.update(_trace_props(new), overwrite=True)
        else:
            widget.data = []
            widget.add_traces(list(fig.data))
        layout = fig.layout.to_plotly_json()
        layout.pop("template", None)  # unchanged across renders; re-sending it is slow
        widget.layout.update(layout, overwrite=True)


def _trace_props(trace: Any) -> dict[str, Any]:
    props = trace.to_plotly_json()
    props.pop("type", None)
    props.pop("uid", None)
    return props


# --- wiring ------------------------------------------------------------------------------------------------

def link(controls: Mapping[str, W.ValueWidget], update: Callable[..., None], run_now: bool = False) -> None:
    """Call `update(**{name: control.value})` whenever any control's value changes (and once now if run_now)."""
    if not controls:
        raise ValueError("controls must name at least one widget")

    def on_change(_change: Any = None) -> None:
        update(**{name: c.value for name, c in controls.items()})

    for control in controls.values():
        control.observe(on_change, names="value")
    if run_now:
        on_change()


def controls_box(controls: Mapping[str, W.Widget] | Sequence[W.Widget], per_row: int = 3) -> W.VBox:
    """Controls laid out in rows of `per_row`."""
    items = list(controls.values()) if isinstance(controls, Mapping) else list(controls)
    rows = [W.HBox(items[i:i + per_row]) for i in range(0, len(items), per_row)]
    return W.VBox(rows)


class View(W.VBox):
    """Controls above a live figure, plus a status line that shows an error instead of failing silently.

    Attributes: `controls` (name -> widget), `figure` (the go.FigureWidget), `status` (an HTML widget),
    `params()` (current keyword arguments of the render function) and `redraw()`.
    """

    def __init__(self, render: Callable[..., go.Figure], controls: Mapping[str, W.ValueWidget],
                 fixed: Mapping[str, Any] | None = None, per_row: int = 3):
        self.render, self.controls, self.fixed = render, dict(controls), dict(fixed or {})
        self.figure = figure_widget(render(**self.params()))
        self.status = W.HTML("")
        super().__init__([controls_box(self.controls, per_row), self.figure, self.status])
        link(self.controls, lambda **_: self.redraw())

    def params(self) -> dict[str, Any]:
        return {**self.fixed, **{name: c.value for name, c in self.controls.items()}}

    def redraw(self) -> None:
        try:
            update_figure(self.figure, self.render(**self.params()))
            self.status.value = ""
        except Exception as err:  # shown to the student; the figure keeps its last good state
            self.status.value = f"<span style='color:#D55E00'>could not redraw: {type(err).__name__}: {err}</span>"


def interactive_view(render: Callable[..., go.Figure], controls: Mapping[str, W.ValueWidget], per_row: int = 3,
                     **fixed: Any) -> View:
    """Controls wired to a pure render function: `render(**fixed, **{name: control.value})` on every change."""
    if not callable(render):
        raise ValueError(f"render must be callable, got {type(render).__name__}")
    return View(render, controls, fixed, per_row)
