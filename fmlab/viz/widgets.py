"""Shared widget wiring: every lab builds its controls and live figures the same way.

The pattern (ARCHITECTURE.md, "Render functions and widgets"): a pure render function `render_xxx(**params) ->
go.Figure` that tests call directly, and a thin widget function that calls

    interactive_view(render_xxx, {"t": t_slider(0.5)}, fixed_param=...)

which draws `render_xxx(t=0.5, fixed_param=...)` and re-renders whenever a control moves. By default the figure
sits in an ipywidgets.Output and is replaced on each change (robust wherever the cell is in the notebook; see
View); `live="figurewidget"` instead keeps one plotly `go.FigureWidget` and copies the new data and layout into it
inside `batch_update()`. Render functions keep themselves fast (precompute, cache, numpy arrays rather than lists
for plotly); a t or s slider over a view that trains nothing redraws while it is dragged (input to drawn figure in
about 100-200 ms: the latency table in labs/README.md), and controls whose redraw costs more than that use
`continuous_update=False`, so that the figure updates when the slider is released. A view whose render computes
(a coupling, a sampler, per-call gradients on a snapshot of the model) passes `prefetch=True`: it keeps every
figure it drew and draws the settings one move away in a background thread (`fmlab.viz.prefetcher`), so that the
next step of a control is usually there already; a move to a setting not drawn yet draws it at once, beside any
background render, never after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from ..export import export_mode
from .prefetcher import Prefetcher, neighbours

__all__ = ["T_STEP", "t_slider", "slider", "int_slider", "dropdown", "checkbox", "enable_when", "figure_widget",
           "update_figure", "link", "controls_box", "interactive_view", "View", "LIVE_MODES",
           "ReplayView", "with_play", "live_run", "show_live", "show_final"]

# Live figures carry plain lists, never numpy arrays. plotly.js answers a restyle with "trace deltas" holding its own
# copies of the arrays; for numpy-backed traces these come back as typed-array dicts and plotly.py's FigureWidget then
# fails comparing them with the numpy arrays it holds ("truth value of an array ... is ambiguous"), seen in
# JupyterLab with plotly 7 on contour, histogram and scatter traces alike. No trace type is exempt.
TYPED_ARRAY_SAFE: frozenset[str] = frozenset()

# Step of every time slider. JupyterLab's slider (noUiSlider) reports its value to assistive technology and to browser
# tests rounded to one decimal (aria-valuenow); with a step of 0.05 every arrow-key press changes what it reports.
T_STEP = 0.05

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


def t_slider(value: float = 0.5, max: float = 1.0, min: float = 0.0, continuous_update: bool = True,
             description: str = "t") -> W.FloatSlider:
    """The time slider of the labs: t in [min, max] (0 = noise, 1 = data) in steps of T_STEP."""
    return slider(description, min, max, T_STEP, value, continuous_update=continuous_update)


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
    data = [tr if tr.type in TYPED_ARRAY_SAFE else type(tr)(_trace_props(tr)) for tr in fig.data]
    return go.FigureWidget(data=data, layout=fig.layout)


def update_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Copy the traces and layout of `fig` into `widget` in one batch update.

    Traces of the same types in the same order are updated in place, and only in the properties that differ from
    what the widget shows (a slider that moves a curve sends its x and y, not its style); otherwise the traces are
    replaced. The layout likewise: only its top-level keys that differ (titles, axis ranges, shapes) are sent. The
    browser then restyles and relayouts what changed instead of redrawing every axis (lab 06's replay: a title and
    eight curves per step).
    """
    _apply_props(widget, _figure_props(fig))


def _figure_props(fig: go.Figure) -> tuple[go.Figure, list[str], list[dict[str, Any]], dict[str, Any]]:
    """What `update_figure` copies from `fig`: (fig, trace types, trace properties, layout without its template),
    computed once so that a replay can keep it (ReplayView)."""
    layout = fig.layout.to_plotly_json()
    layout.pop("template", None)  # unchanged across renders; re-sending it is slow
    return fig, [tr.type for tr in fig.data], [_trace_props(tr) for tr in fig.data], layout


def _apply_props(widget: go.FigureWidget, props: tuple[go.Figure, list[str], list[dict[str, Any]], dict[str, Any]]
                 ) -> None:
    fig, types, traces, layout = props
    same = len(widget.data) == len(types) and all(a.type == t for a, t in zip(widget.data, types, strict=True))
    with widget.batch_update():
        if same:
            for old, new in zip(widget.data, traces, strict=True):
                changed = _changed(old.to_plotly_json(), new)
                if changed:
                    old.update(changed, overwrite=True)
        else:
            widget.data = []
            widget.add_traces(list(fig.data))
        changed = _changed(widget.layout.to_plotly_json(), layout)
        if changed:
            widget.layout.update(changed, overwrite=True)


def _changed(shown: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys of `wanted` whose values differ from `shown`'s (the widget's current properties)."""
    return {k: v for k, v in wanted.items() if k not in shown or not _same(shown[k], v)}


def _same(a: Any, b: Any) -> bool:
    """Equal plotly property values: arrays and lists element by element (NaN and None alike), dicts by key."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(_lists(a), dtype=object), np.asarray(_lists(b), dtype=object)
        return a.shape == b.shape and bool((a == b).all())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        return False
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 in Python, not in a figure (visible=True vs 1)
        return a is b
    return bool(a == b)


def _trace_props(trace: Any) -> dict[str, Any]:
    props = trace.to_plotly_json()
    props.pop("type", None)
    props.pop("uid", None)
    return _lists(props) if trace.type not in TYPED_ARRAY_SAFE else props


def _lists(value: Any) -> Any:
    """numpy arrays -> nested lists (NaN -> None), recursively through dicts and lists."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and np.isnan(value).any():
            return np.where(np.isnan(value), None, value).tolist()
        return value.tolist()
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


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


def enable_when(control: W.Widget, source: W.ValueWidget, active: Callable[[Any], bool]) -> None:
    """Grey out `control` while `active(source.value)` is false (a control that would change nothing is disabled,
    not silently ignored); set now and on every change of `source`."""
    def on_change(_change: Any = None) -> None:
        control.disabled = not active(source.value)

    source.observe(on_change, names="value")
    on_change()


def controls_box(controls: Mapping[str, W.Widget] | Sequence[W.Widget], per_row: int = 3) -> W.VBox:
    """Controls laid out in rows of `per_row`."""
    items = list(controls.values()) if isinstance(controls, Mapping) else list(controls)
    rows = [W.HBox(items[i:i + per_row]) for i in range(0, len(items), per_row)]
    return W.VBox(rows)


LIVE_MODES = ("output", "figurewidget")


class View(W.VBox):
    """Controls above a live figure, plus a status line that shows an error instead of failing silently.

    live="output" (default) shows each rendered go.Figure in an ipywidgets.Output, replaced on every change;
    live="figurewidget" keeps one go.FigureWidget and updates it in place (`update_figure`). The default is the
    Output because a FigureWidget whose cell is attached below the visible part of a JupyterLab notebook can stay
    an empty placeholder (plotly 7's widget draws its figure only on Lumino's "after-attach"), seen in headless
    Chromium with JupyterLab 4.6; a figure shown in an Output draws wherever it is.

    Attributes: `controls` (name -> widget), `figure` (the go.Figure shown now, or the go.FigureWidget), `status`
    (an HTML widget), `params()` (current keyword arguments of the render function) and `redraw()`.
    """

    def __init__(self, render: Callable[..., go.Figure], controls: Mapping[str, W.ValueWidget],
                 fixed: Mapping[str, Any] | None = None, per_row: int = 3, live: str = "output",
                 prefetch: bool = False):
        if live not in LIVE_MODES:
            raise ValueError(f"live must be one of {LIVE_MODES}, got {live!r}")
        self.render, self.controls, self.fixed, self.live = render, dict(controls), dict(fixed or {}), live
        self.status = W.HTML("")
        self._prefetcher = Prefetcher(render) if prefetch else None
        first = self._figure(self.params())
        if live == "figurewidget":
            self.figure = figure_widget(first)
            shown: W.Widget = self.figure
        else:
            self.output = W.Output()
            self._show(first)
            shown = self.output
        super().__init__([controls_box(self.controls, per_row), shown, self.status])
        link(self.controls, lambda **_: self.redraw())

    def _show(self, fig: go.Figure) -> None:
        """Replace the Output's content by `fig` in one step: set its `outputs` in the kernel.

        Never `with self.output: display(fig)`. That routes the figure through the front end's copy of the Output,
        and nbclient's copy (nbconvert --execute, papermill) answers each captured display by sending the new
        `outputs` to the kernel on the shell channel while it waits on that channel for the cell's reply;
        jupyter_client sends through a blocking shadow of the asyncio socket, which can swallow the wake-up for the
        reply, and the cell then stalls until its timeout (forever without one). Setting `outputs` sends one widget
        update on IOPub and nothing comes back; the front end swaps the old figure for the new one without flicker.
        """
        from IPython import get_ipython

        self.figure = fig
        if get_ipython() is None:  # plain Python (tests, scripts): nothing to show the figure in
            return
        bundle = fig._repr_mimebundle_()  # what display(fig) sends: the mime types of plotly's default renderer
        self.output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    def params(self) -> dict[str, Any]:
        return {**self.fixed, **{name: c.value for name, c in self.controls.items()}}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if export_mode():  # a static page (fmlab.export): the figure of the initial state, no widget
            return _static_bundle(self.figure, list(self.controls))
        return super()._repr_mimebundle_(**kwargs)

    def _figure(self, params: dict[str, Any]) -> go.Figure:
        if self._prefetcher is None:
            return self.render(**params)
        fig = self._prefetcher.get(params)
        self._prefetcher.around(params, neighbours(self.controls, params))
        return fig

    def redraw(self) -> None:
        try:
            fig = self._figure(self.params())
            if self.live == "figurewidget":
                update_figure(self.figure, fig)
            else:
                self._show(fig)
            self.status.value = ""
        except Exception as err:  # shown to the student; the figure keeps its last good state
            self.status.value = f"<span style='color:#D55E00'>could not redraw: {type(err).__name__}: {err}</span>"


def interactive_view(render: Callable[..., go.Figure], controls: Mapping[str, W.ValueWidget], per_row: int = 3,
                     live: str = "output", prefetch: bool = False, **fixed: Any) -> View:
    """Controls wired to a pure render function: `render(**fixed, **{name: control.value})` on every change
    (see View for `live`). prefetch=True keeps every figure drawn and, in a live kernel, draws the figures one move
    away from the current setting in the background (`neighbours`): for views whose render computes for a few
    hundred ms, so that the next step of a slider, a menu or a checkbox is already there. Only for renders that
    share no mutable state with the notebook's other cells or with another setting's render: a background render
    runs while later cells execute and beside the render of a setting the student moved to, so a render of a model
    works on its own snapshot (copy.deepcopy when the view is built; lab 10's gradient widget)
    and must not swap a shared module's parameters (torch.func.functional_call does, for the call)."""
    if not callable(render):
        raise ValueError(f"render must be callable, got {type(render).__name__}")
    return View(render, controls, fixed, per_row, live, prefetch)


def with_play(view: View, name: str, interval_ms: int = 500) -> View:
    """Add a play button to `view` that steps its integer control `name` from its minimum to its maximum (an
    ipywidgets.Play linked in the browser to the slider), placed before the controls; returns the view."""
    control = view.controls.get(name)
    if not isinstance(control, W.IntSlider):
        raise ValueError(f"name must be an IntSlider control of the view, one of "
                         f"{[k for k, c in view.controls.items() if isinstance(c, W.IntSlider)]}, got {name!r}")
    play = W.Play(value=control.value, min=control.min, max=control.max, interval=interval_ms, description="play")
    W.jslink((play, "value"), (control, "value"))  # in the browser: playback needs no kernel round trip to advance
    W.dlink((control, "max"), (play, "max"))  # in the kernel: a render may change the slider's range
    view.play = play
    view.children = (W.HBox([play, W.Label(f"play: {control.description}")]), *view.children)
    return view


# --- live training: a figure redrawn while runs train, then replayable ----------------------------------------

class ReplayView:
    """A live FigureWidget redrawn by `render(upto=step)` while a run trains, then replayable with a play control
    and a step slider (ipywidgets.Play linked to an IntSlider)."""

    def __init__(self, render: Callable[[int | None], go.Figure], steps: Sequence[int] = (0,),
                 interval_ms: int = 300):
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
        update_figure(self.figure, self.render(upto))

    def finish(self, steps: Sequence[int]) -> None:
        """Training done: the slider now replays the measurements at `steps` (their figures drawn in the background
        and kept, so that scrubbing and play only copy them into the figure)."""
        self.steps = list(steps)
        render = self.render
        self._replay = Prefetcher(lambda upto: _figure_props(render(upto)))  # kept ready to copy in
        top = max(1, len(self.steps) - 1)
        self.play.max = self.slider.max = top
        self.slider.value = top
        self.live(None)
        self._replay.around({}, [{"upto": step} for step in reversed(self.steps)])

    def _show(self, index: int) -> None:
        if not self.steps:
            return
        step = self.steps[min(index, len(self.steps) - 1)]
        replay = getattr(self, "_replay", None)
        if replay is None:
            update_figure(self.figure, self.render(step))
        else:
            _apply_props(self.figure, replay.get({"upto": step}))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if export_mode():  # a static page (fmlab.export): the figure as measured, no widget
            display(_static_bundle(self.figure, ["measurement"]), raw=True)
            return
        display(self.box)


def show_live(widget: Any) -> None:
    """Display a figure that training will redraw. On an exported page (fmlab.export) nothing yet: `show_final`
    shows its last state there."""
    if not export_mode():
        from IPython.display import display

        display(widget)


def show_final(figure: Any, controls: Sequence[str] = ()) -> None:
    """On an exported page, the last state of a live figure (elsewhere nothing: the live figure is on screen)."""
    if export_mode():
        from IPython.display import display

        display(_static_bundle(figure, controls), raw=True)


def _static_bundle(figure: Any, controls: Sequence[str]) -> dict[str, str]:
    """The mime bundle of a view on a static page: its figure now, and a line naming the controls it has."""
    fig = go.Figure(figure)
    html = fig.to_html(full_html=False, include_plotlyjs=False)  # the page loads plotly.js once (fmlab.export)
    note = (f"<p style='color:#666'><i>Interactive when the lab runs: {', '.join(controls)}.</i></p>"
            if controls else "")
    return {"text/html": note + html, "text/plain": f"<figure: {fig.layout.title.text or 'untitled'}>"}


def live_run(configs: Sequence[Any], render: Callable[[Sequence[Any], int | None], go.Figure],
             steps_of: Callable[[Any], Sequence[int]], show: bool = True, **run_kwargs: Any
             ) -> tuple[list[Any], ReplayView]:
    """Train several configs one after the other (fmlab.experiments.run, cached), redrawing one figure live as each
    measures, then make it replayable. render(results, upto) draws all runs; steps_of(result) lists the steps to
    replay. The one live-training view of the labs."""

    from ..experiments import run

    done: list[Any] = []
    view = ReplayView(lambda upto: render(done, upto))
    if show:
        show_live(view.box)
    for config in configs:
        def update(result: Any) -> None:
            view.render = lambda upto, result=result: render(done + [result], upto)
            view.live(None)

        done.append(run(config, on_update=update, **run_kwargs))
        view.render = lambda upto: render(done, upto)
    view.finish(steps_of(done[0]) if done else [0])
    if show:
        show_final(view.figure, ["measurement"])
    return done, view
