"""Kernel-side cost of every control of a lab: the time from setting a control's value to the new figure handed to
the front end (render + serialisation), for jumps across the control's range.

    FMLAB_FAST=1 python benchmarks/render_times.py labs/05_couplings.ipynb labs/10_unrolling.ipynb

Each lab is executed headless (nbclient) in a fresh kernel; then, in that kernel, every control of every
interactive view the lab displayed (`fmlab.viz.widgets.View`) is set to its minimum, its maximum and its middle
(a menu: its first three options; a checkbox: flipped and back), and every replay slider (`ReplayView`) to its
first, middle and last measurement, one after the other, timing each assignment (the redraw runs inside it). A jump
misses what a view keeps and prefetches (interactive_view(prefetch=True) draws the settings one step away), so
these are the costs of a first visit; the browser suite (tests/browser) times one-step moves from input to drawn
figure. Milliseconds of wall time, one line per control: the times of its moves in order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

PROBE = r'''
import time as _time
import ipywidgets as _W
from fmlab.viz.widgets import ReplayView as _Replay, View as _View

def _views(obj, seen):
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, _View):
        yield obj
    elif isinstance(obj, _W.Box):
        for child in obj.children:
            yield from _views(child, seen)

def _targets(c):
    if isinstance(c, _W.Checkbox):
        return [not c.value, c.value]
    if isinstance(c, (_W.Dropdown, _W.SelectionSlider)):
        opts = c.options
        opts = list(opts.values()) if isinstance(opts, dict) else [o[1] if isinstance(o, tuple) else o for o in opts]
        return opts[:3] if isinstance(c, _W.Dropdown) else [opts[0], opts[-1], opts[len(opts) // 2]]
    mid = (c.min + c.max) / 2 if isinstance(c.value, float) else (c.min + c.max) // 2
    return [c.min, c.max, mid]

def _timed(control, values):
    out = []
    for v in values:
        if v == control.value:
            continue
        start = _time.perf_counter()
        control.value = v
        out.append((_time.perf_counter() - start) * 1000)
    return out

_seen = set()
for _view in [v for o in list(Out.values()) for v in _views(o, _seen)]:
    for _name, _c in _view.controls.items():
        if _c.disabled:
            continue
        _old = _c.value
        _ms = _timed(_c, _targets(_c))
        _c.value = _old
        print(f"{_view.render.__qualname__:<45} {_c.description[:30]:<30} " + " ".join(f"{t:6.0f}" for t in _ms))
for _name, _obj in list(globals().items()):
    for _r in (_obj if isinstance(_obj, tuple) else (_obj,)):
        if isinstance(_r, _Replay) and id(_r) not in _seen:
            _seen.add(id(_r))
            _top = _r.slider.max
            _ms = _timed(_r.slider, [0, _top // 2, _top])
            print(f"{'ReplayView ' + _name:<45} {'measurement':<30} " + " ".join(f"{t:6.0f}" for t in _ms))
'''


def main(labs: list[str]) -> int:
    if not labs:
        print(__doc__)
        return 2
    for lab in labs:
        path = Path(lab).resolve()
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(PROBE))
        NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                       ).execute()
        print(f"== {path.name} (ms per move: min, max, middle)")
        for output in nb.cells[-1].outputs:
            print(output.get("text", "").rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
