"""Drawing ahead for interactive views (`fmlab.viz.widgets.interactive_view(prefetch=True)`): the settings one move
away from the current one (`neighbours`) and the figures of a render function kept by setting and drawn in a
background thread (`Prefetcher`), so that the next step of a slider, a menu or a checkbox is usually drawn already.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from ..export import export_mode

__all__ = ["neighbours", "Prefetcher"]


def neighbours(controls: Mapping[str, W.ValueWidget], params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The settings one move away from `params`: each slider one step down and up, each menu's other options,
    each checkbox flipped (one control changed at a time; disabled controls left alone)."""
    out = []
    for name, control in controls.items():
        if getattr(control, "disabled", False) or name not in params:
            continue
        value = params[name]
        if isinstance(control, W.Checkbox):
            values = [not value]
        elif isinstance(control, W.SelectionSlider):  # the options on either side
            options = _option_values(control)
            here = options.index(value) if value in options else 0
            values = options[max(0, here - 1):here] + options[here + 1:here + 2]
        elif isinstance(control, W.Dropdown):  # every other option
            values = [o for o in _option_values(control) if o != value]
        elif isinstance(control, (W.IntSlider, W.FloatSlider)):
            values = [v for v in (value - control.step, value + control.step) if control.min <= v <= control.max]
            values = [round(v, 10) for v in values] if isinstance(control, W.FloatSlider) else values
        else:
            continue
        out += [{**params, name: v} for v in values]
    return out


def _option_values(control: W.Widget) -> list[Any]:
    options = control.options
    if isinstance(options, Mapping):
        return list(options.values())
    return [o[1] if isinstance(o, tuple) and len(o) == 2 else o for o in options]


class Prefetcher:
    """Figures of `render` by setting, kept; `around` queues settings to draw in one background thread (a newer
    call replaces the queue).

    A student's move never waits for a background render of another setting: it draws its own figure at once,
    beside it (a prefetching render must be safe to run while other code runs: see interactive_view), and the
    background thread starts nothing new while a move is drawing. A move to the setting the background is drawing
    waits for that figure instead of drawing it twice. Each setting is drawn at most once at a time."""

    def __init__(self, render: Callable[..., go.Figure]):
        import threading

        self.render, self.figures, self.queue = render, {}, []
        self.drawing: set[tuple] = set()  # keys of the renders in progress, in any thread
        self.moves = 0  # foreground renders in progress
        self.changed, self.wake = threading.Condition(), threading.Event()
        self.thread: Any = None

    @staticmethod
    def key(params: Mapping[str, Any]) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))

    def get(self, params: Mapping[str, Any]) -> go.Figure:
        """The figure of `params` for the setting the student picked: kept, or drawn now."""
        return self._draw(params, move=True)

    def _draw(self, params: Mapping[str, Any], move: bool) -> go.Figure:
        key = self.key(params)
        with self.changed:
            while key not in self.figures and key in self.drawing:
                self.changed.wait()  # being drawn (by the other thread): wait for that figure, not for others
            if key in self.figures:
                return self.figures[key]
            self.drawing.add(key)
            self.moves += move
        try:
            fig = self.render(**params)
            with self.changed:
                self.figures[key] = fig
            return fig
        finally:
            with self.changed:
                self.drawing.discard(key)
                self.moves -= move
                self.changed.notify_all()

    def around(self, params: Mapping[str, Any], settings: Sequence[dict[str, Any]]) -> None:
        from IPython import get_ipython

        if get_ipython() is None or export_mode():  # scripts, tests and static pages draw only what is shown
            return
        with self.changed:
            self.queue = [s for s in settings if self.key(s) not in self.figures]
        if self.thread is None:
            import threading

            self.thread = threading.Thread(target=self._work, name="fmlab-prefetch", daemon=True)
            self.thread.start()
        self.wake.set()

    def _next(self) -> dict[str, Any] | None:
        """The next queued setting, once no move is drawing (a move gets the cores first); None when done."""
        with self.changed:
            while self.moves:
                self.changed.wait()
            return self.queue.pop(0) if self.queue else None

    def _work(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while (params := self._next()) is not None:
                try:
                    self._draw(params, move=False)
                except Exception:  # noqa: BLE001 - a setting that fails shows its error when the student picks it
                    continue
