"""fmlab.viz.prefetcher: the settings one move away, and drawing them ahead without making a move wait."""

import plotly.graph_objects as go

from fmlab.viz import prefetcher as P
from fmlab.viz import widgets as W


def _render(a: float = 1.0, kind: str = "lines", n: int = 3) -> go.Figure:
    return go.Figure(go.Scatter(x=list(range(n)), y=[a * i for i in range(n)], mode=kind)).update_layout(
        title=f"a = {a:.2f}, {kind}")


def test_neighbours_are_one_move_away_from_the_current_setting():
    import ipywidgets

    controls = {"n": W.int_slider("n", 1, 5, 1), "a": W.slider("a", 0.0, 1.0, 0.25, 0.5),
                "kind": W.dropdown("kind", {"Lines": "lines", "Dots": "markers", "Both": "lines+markers"}, "lines"),
                "show": W.checkbox("show", True),
                "size": ipywidgets.SelectionSlider(options=[1, 2, 4, 8], value=8)}
    params = {name: c.value for name, c in controls.items()}
    moved = [{k: v for k, v in s.items() if v != params[k]} for s in P.neighbours(controls, params)]
    assert moved == [{"n": 2}, {"a": 0.25}, {"a": 0.75}, {"kind": "markers"}, {"kind": "lines+markers"},
                     {"show": False}, {"size": 4}]  # n at its minimum, size at its maximum: one side only
    controls["kind"].disabled = True  # a greyed-out control changes nothing: no neighbour through it
    assert not any("markers" in str(s["kind"]) for s in P.neighbours(controls, params))


def test_a_move_never_waits_for_a_background_render_of_another_setting(monkeypatch):
    """The student's move draws at once, beside a background render still running (the old single lock made it
    wait for the whole background render); a move to the setting in progress waits for it and draws nothing twice."""
    import threading

    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    release, started = threading.Event(), threading.Event()
    calls: list[float] = []

    def render(a: float) -> go.Figure:
        calls.append(a)
        if a == 1.0:  # the background's render: slow until the test lets it finish
            started.set()
            assert release.wait(10)
        return _render(a)

    fetch = P.Prefetcher(render)
    fetch.around({"a": 0.0}, [{"a": 1.0}])
    assert started.wait(10)
    done: dict[str, go.Figure] = {}
    move = threading.Thread(target=lambda: done.setdefault("fig", fetch.get({"a": 0.5})))
    move.start()
    move.join(5)
    assert not move.is_alive() and done["fig"].layout.title.text == "a = 0.50, lines"
    same = threading.Thread(target=lambda: done.setdefault("same", fetch.get({"a": 1.0})))
    same.start()
    same.join(0.2)
    assert same.is_alive()  # the setting the background is drawing: wait for its figure
    release.set()
    same.join(5)
    assert not same.is_alive() and calls.count(1.0) == 1 and done["same"] is fetch.figures[fetch.key({"a": 1.0})]


def test_the_background_starts_nothing_while_a_move_draws(monkeypatch):
    import threading

    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    in_move, release = threading.Event(), threading.Event()
    order: list[str] = []

    def render(a: float) -> go.Figure:
        order.append(f"start {a}")
        if a == 0.0:
            in_move.set()
            assert release.wait(10)
        order.append(f"end {a}")
        return _render(a)

    fetch = P.Prefetcher(render)
    move = threading.Thread(target=fetch.get, args=({"a": 0.0},))
    move.start()
    assert in_move.wait(10)
    fetch.around({"a": 0.0}, [{"a": 0.5}, {"a": 1.0}])
    threading.Event().wait(0.2)
    assert order == ["start 0.0"]  # queued, not started
    release.set()
    move.join(5)
    for _ in range(100):
        if len(order) == 6:
            break
        threading.Event().wait(0.05)
    assert order == ["start 0.0", "end 0.0", "start 0.5", "end 0.5", "start 1.0", "end 1.0"]
