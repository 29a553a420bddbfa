"""fmlab.viz.widgets: controls, in-place figure updates, the interactive view."""

import numpy as np
import plotly.graph_objects as go
import pytest

from fmlab.viz import widgets as W


def _render(a: float = 1.0, kind: str = "lines", n: int = 3) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(range(n)), y=[a * i for i in range(n)], mode=kind))
    if kind == "markers":
        fig.add_trace(go.Bar(x=[0], y=[a]))
    return fig.update_layout(title=f"a = {a:.2f}, {kind}")


def test_controls_validate_their_ranges():
    assert W.slider("t", 0, 1, 0.01, 0.5, continuous_update=False).continuous_update is False
    assert W.int_slider("steps", 1, 100, 10).value == 10
    assert W.dropdown("kind", {"Linear": "linear", "VP": "vp"}).value == "linear"
    assert W.checkbox("show", True).value is True
    with pytest.raises(ValueError, match="value"):
        W.slider("t", 0, 1, 0.1, 2.0)
    with pytest.raises(ValueError, match="step"):
        W.int_slider("n", 1, 5, 2, step=0)
    with pytest.raises(ValueError, match="one of"):
        W.dropdown("kind", ["a", "b"], "c")


def test_update_figure_in_place_and_on_type_change():
    fw = W.figure_widget(_render(1.0))
    trace = fw.data[0]
    W.update_figure(fw, _render(2.0))
    assert fw.data[0] is trace and tuple(fw.data[0].y) == (0, 2, 4)  # same trace object, new data
    assert fw.layout.title.text == "a = 2.00, lines"
    W.update_figure(fw, _render(2.0, "markers"))
    assert [t.type for t in fw.data] == ["scatter", "bar"]
    with pytest.raises(ValueError, match="go.Figure"):
        W.figure_widget("not a figure")



def test_update_figure_sends_only_what_changed():
    # the browser restyles and relayouts what it is sent: a moved curve sends its y and the new title, not the axes
    fw = W.figure_widget(_render(1.0))
    sent = []
    fw._send_update_msg = lambda restyle_data, relayout_data, **_: sent.append((restyle_data, relayout_data))
    fig = _render(2.0)
    fig.update_layout(xaxis=dict(range=[0, 2]))
    W.update_figure(fw, fig)
    W.update_figure(fw, _render(2.0).update_layout(xaxis=dict(range=[0, 2])))  # nothing changed: nothing sent
    W.update_figure(fw, _render(3.0).update_layout(xaxis=dict(range=[0, 2])))
    assert len(sent) == 2
    (restyle, relayout), (restyle2, relayout2) = sent
    assert set(restyle) == {"y"} and {"title", "xaxis"} <= set(relayout)
    assert set(restyle2) == {"y"} and set(relayout2) == {"title"}
    assert tuple(fw.data[0].y) == (0, 3, 6) and fw.layout.title.text == "a = 3.00, lines"
    assert W._same(np.array([1.0, np.nan]), [1.0, None]) and not W._same([1, 2], (1, 3)) and not W._same(True, 1)

def test_interactive_view_redraws_on_control_change_and_reports_errors():
    view = W.interactive_view(_render, {"a": W.slider("a", 0, 3, 0.5, 1.0)}, kind="lines")
    assert view.params() == {"kind": "lines", "a": 1.0}
    view.controls["a"].value = 2.5
    assert tuple(view.figure.data[0].y) == (0, 2.5, 5.0) and "2.50" in view.figure.layout.title.text
    bad = W.interactive_view(lambda a, n: _render(a, n=n), {"a": W.slider("a", 0, 3, 0.5, 1.0)}, n=3)
    bad.fixed["n"] = "x"  # the next redraw fails: the status line says so, the figure keeps its state
    bad.controls["a"].value = 2.0
    assert "could not redraw" in bad.status.value and tuple(bad.figure.data[0].y) == (0, 1, 2)


def test_link_calls_update_with_all_values():
    seen = []
    a, b = W.slider("a", 0, 1, 0.1, 0.2), W.dropdown("b", ["x", "y"])
    W.link({"a": a, "b": b}, lambda **kw: seen.append(kw), run_now=True)
    b.value = "y"
    assert seen == [{"a": 0.2, "b": "x"}, {"a": 0.2, "b": "y"}]
    with pytest.raises(ValueError, match="controls"):
        W.link({}, print)


def test_live_figures_survive_trace_deltas_from_the_browser():
    """plotly.js sends back its copies of contour / histogram / image arrays as trace deltas; with numpy arrays in
    the FigureWidget plotly.py then fails ('truth value of an array is ambiguous'). Live figures hold lists there."""
    import numpy as np

    fig = go.Figure([go.Contour(z=np.ones((3, 3)), x=np.arange(3.0), y=np.arange(3.0)),
                     go.Scatter(x=np.arange(3.0), y=np.array([0.0, np.nan, 1.0]))])
    fw = W.figure_widget(fig)
    assert isinstance(fw.data[0].z, tuple) and isinstance(fw.data[1].x, tuple) and fw.data[1].y[1] is None  # NaN -> gap
    W.update_figure(fw, go.Figure([go.Contour(z=2 * np.ones((3, 3))), go.Scatter(x=np.arange(3.0))]))
    assert isinstance(fw.data[0].z, tuple) and fw.data[0].z[0][0] == 2
    uid = fw.data[0].uid
    # plotly.js returns its cleaned copy of a plain array as a plain list (of a typed array: a typed-array spec, a
    # dict, which is what breaks plotly.py when the figure holds numpy arrays)
    delta = {"uid": uid, "z": [[2.0] * 3] * 3, "zmin": 2.0}
    fw._last_trace_edit_id = 7
    fw._handler_js2py_traceDeltas({"new": {"trace_deltas": [delta], "trace_edit_id": 7}})
    numpy_widget = go.FigureWidget(go.Figure(go.Contour(z=np.ones((3, 3)))))  # the failure this guards against
    numpy_widget._last_trace_edit_id = 1
    spec = {"uid": numpy_widget.data[0].uid, "z": {"dtype": "f8", "shape": "3,3", "bdata": "AAAA"}}
    with pytest.raises(ValueError, match="ambiguous"):
        numpy_widget._handler_js2py_traceDeltas({"new": {"trace_deltas": [spec], "trace_edit_id": 1}})


def test_view_modes():
    out = W.interactive_view(_render, {"a": W.slider("a", 0, 3, 0.5, 1.0)})
    assert out.live == "output" and isinstance(out.figure, go.Figure) and out.output in out.children
    live = W.interactive_view(_render, {"a": W.slider("a", 0, 3, 0.5, 1.0)}, live="figurewidget")
    assert isinstance(live.figure, go.FigureWidget) and live.figure in live.children
    live.controls["a"].value = 3.0
    assert tuple(live.figure.data[0].y) == (0, 3.0, 6.0)
    with pytest.raises(ValueError, match="live"):
        W.interactive_view(_render, {"a": W.slider("a", 0, 3, 0.5, 1.0)}, live="canvas")


def test_enable_when_greys_out_a_control_that_would_change_nothing():
    from fmlab.viz.widgets import checkbox, dropdown, enable_when

    loss = dropdown("loss", {"WT-FM": "wtfm", "anchored": "anchored_consistency"})
    box = checkbox("keep the cross-terms", True)
    enable_when(box, loss, lambda value: value == "wtfm")
    assert not box.disabled
    loss.value = "anchored_consistency"
    assert box.disabled
    loss.value = "wtfm"
    assert not box.disabled


def test_with_play_steps_an_integer_control_and_follows_its_range():
    import plotly.graph_objects as go

    from fmlab.viz.widgets import int_slider, interactive_view, slider, with_play

    view = interactive_view(lambda k, a: go.Figure(layout=dict(title=dict(text=f"{k} {a}"))),
                            {"k": int_slider("k", 0, 5, 2), "a": slider("a", 0.0, 1.0, 0.5, 0.5)})
    with_play(view, "k", interval_ms=100)
    assert view.children[0].children[0] is view.play and (view.play.min, view.play.max) == (0, 5)
    view.controls["k"].max = 3
    assert view.play.max == 3
    with pytest.raises(ValueError, match="IntSlider control of the view"):
        with_play(view, "a")


def test_prefetching_view_draws_each_setting_once_and_its_neighbours_in_the_background(monkeypatch):
    import threading
    import time

    import IPython

    calls: list[float] = []
    drawn = threading.Event()

    def render(a: float) -> go.Figure:
        calls.append(a)
        if len(calls) >= 4:
            drawn.set()
        return _render(a)

    view = W.interactive_view(render, {"a": W.slider("a", 0.0, 1.0, 0.25, 0.5)}, prefetch=True)
    assert calls == [0.5]  # outside a kernel nothing is drawn ahead
    view.controls["a"].value = 0.75
    view.controls["a"].value = 0.5  # kept: not drawn again
    assert calls == [0.5, 0.75]
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())  # a live kernel: draw ahead
    monkeypatch.setattr(W.View, "_show", lambda self, fig: setattr(self, "figure", fig))
    view.controls["a"].value = 0.25
    assert drawn.wait(10)  # 0.25's neighbours: 0.0 (0.5 is kept already)
    time.sleep(0.1)
    assert sorted(calls) == [0.0, 0.25, 0.5, 0.75]
    view.controls["a"].value = 0.0  # drawn ahead: shown without a render
    assert len(calls) == 4 and view.figure.layout.title.text == "a = 0.00, lines"
