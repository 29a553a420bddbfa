"""One visual language for every lab: the same colours for noise, data, model and ground truth,
projector-sized fonts, labelled axes. Plotly figures use `apply_style(fig)`.

The fonts and colour order live in a plotly template, "fmlab", made the default when this module is imported: a
template set by name in every figure costs plotly ~35 ms of copying per figure (a sixth of a slider's redraw budget),
the default one costs nothing until the figure is sent. `presentation()` rebuilds it larger for a projector.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from ..export import export_mode, use_static_renderer

__all__ = ["COLORS", "SEQUENCE", "FONT_SIZE", "TITLE_SIZE", "FIG_SIZE", "NOTEBOOK_WIDTH", "TEMPLATE",
           "PRESENTATION_SCALE", "lab_template", "presentation", "presentation_scale", "apply_style", "log_ticks",
           "to_numpy"]

# Colour-blind-safe (Okabe-Ito) roles used across all labs.
COLORS: dict[str, str] = {
    "noise": "#0072B2",  # blue: x0 ~ N(0, I), t = 0
    "data": "#E69F00",  # orange: x1 ~ data, t = 1
    "model": "#009E73",  # green: what a trained network produces
    "reference": "#000000",  # black: closed-form / exact ground truth
    "path": "#999999",  # grey: trajectories, coupling lines
    "highlight": "#D55E00",  # vermillion: the thing the slider moves
    "ot": "#CC79A7",  # purple: optimal-transport variants
    "independent": "#56B4E9",  # sky blue: independent-coupling variants
}
SEQUENCE = ["#009E73", "#D55E00", "#0072B2", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
FONT_SIZE = 16
TITLE_SIZE = 20
FIG_SIZE = (720, 520)  # plotly width, height in pixels
NOTEBOOK_WIDTH = 1080  # the widest figure a JupyterLab notebook shows unclipped on a 1280-px screen


TEMPLATE = "fmlab"
PRESENTATION_SCALE = 1.4  # fonts, markers and lines in presentation mode, relative to the notebook sizes
_STATE = {"scale": 1.0}


def lab_template(scale: float = 1.0) -> go.layout.Template:
    """plotly_white with the lab's fonts (times `scale`) and colour order."""
    template = go.layout.Template(pio.templates["plotly_white"])
    template.layout.update(font=dict(size=round(FONT_SIZE * scale)),
                           title=dict(font=dict(size=round(TITLE_SIZE * scale))),
                           legend=dict(font=dict(size=round((FONT_SIZE - 2) * scale))), colorway=SEQUENCE)
    return template


def presentation(on: bool = True, scale: float = PRESENTATION_SCALE) -> None:
    """Projector mode for every figure drawn from now on: fonts, markers and line widths `scale` times larger
    (figure widths unchanged, so nothing grows past the notebook). `presentation(False)` goes back."""
    if on and not 1.0 <= scale <= 2.0:
        raise ValueError(f"scale must lie in [1, 2], got {scale}")
    _STATE["scale"] = float(scale) if on else 1.0
    pio.templates[TEMPLATE] = lab_template(_STATE["scale"])


def presentation_scale() -> float:
    """1.0 in notebook mode, the enlargement in presentation mode."""
    return _STATE["scale"]


def apply_style(fig: Any, title: str | None = None, x_title: str | None = None, y_title: str | None = None,
                square: bool = False) -> Any:
    """Apply the lab style to a plotly figure in place and return it (fonts and colours come from the default
    template; in presentation mode markers and lines set on the traces grow too)."""
    fig.update_layout(title=dict(text=title) if title is not None else fig.layout.title, width=FIG_SIZE[0],
                      height=FIG_SIZE[1], margin=dict(l=60, r=20, t=60 if title else 30, b=55))
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    if square:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    if _STATE["scale"] != 1.0:
        _enlarge_traces(fig, _STATE["scale"])
    return fig


def log_ticks(values: Any) -> dict[str, list]:
    """Tick values and labels for a log axis over `values` (positive entries; others ignored): 1, 2, 5 times the
    powers of ten in their range, or 1, 2, 3, 5, or every digit, the first that gives four, each labelled in full
    ("0.2", not plotly's bare "2" between the decades). Empty (plotly's own ticks) when fewer than two would show.
        fig.update_yaxes(type="log", **log_ticks(losses))"""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return {}
    lo, hi = v.min(), v.max()
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for digits in ((1, 2, 5), (1, 2, 3, 5), range(1, 10)):
        candidates = (float(f"{d * 10.0 ** k:.3g}") for k in decades for d in digits)
        ticks = [t for t in candidates if lo * 0.999 <= t <= hi * 1.001]
        if len(ticks) >= 4:
            break
    if len(ticks) < 2:
        return {}
    return {"tickvals": ticks, "ticktext": [f"{t:.3g}" for t in ticks]}


def _enlarge_traces(fig: Any, scale: float) -> None:
    """Scale every numeric marker size and line width set on a trace (arrays of sizes included)."""
    for trace in fig.data:
        marker, line = getattr(trace, "marker", None), getattr(trace, "line", None)
        size = getattr(marker, "size", None)  # None also where the trace type has no marker size (bars)
        if size is not None:
            marker.size = np.asarray(size, dtype=float) * scale if np.ndim(size) else size * scale
        width = getattr(line, "width", None)
        if width is not None:
            line.width = np.asarray(width, dtype=float) * scale if np.ndim(width) else width * scale


def to_numpy(x: Any) -> np.ndarray:
    """A tensor as a float64 numpy array for a trace (plotly validates numpy arrays far faster than lists)."""
    return x.detach().cpu().double().numpy()


def _cache_plotly_key_paths() -> None:
    """Memoise plotly's parser of property paths ('xaxis2.title.text', 'marker_size'): plotly 7 re-parses the same
    few strings thousands of times per figure, building a class on each call, which is ~100 ms of a subplot
    figure's redraw. The parser is a pure function of its string; the cached copy returns a fresh index list, so
    callers see exactly what the original returns (tests/viz/test_viz_style.py compares them)."""
    import plotly.basedatatypes as bdt

    parse = getattr(bdt, "_str_to_dict_path_full", None)
    if parse is None or hasattr(parse, "cached"):
        return
    cached = functools.lru_cache(maxsize=8192)(parse)

    def parse_cached(key_path_str: str) -> tuple[tuple, list]:
        keys, starts = cached(key_path_str)
        return keys, list(starts)

    parse_cached.cached, parse_cached.original = cached, parse
    bdt._str_to_dict_path_full = parse_cached


_cache_plotly_key_paths()
pio.templates[TEMPLATE] = lab_template()
pio.templates.default = TEMPLATE

if export_mode():  # a kernel run by `python -m fmlab export`: figures as static HTML (fmlab.export)
    use_static_renderer()
