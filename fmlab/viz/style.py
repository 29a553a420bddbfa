"""One visual language for every lab: the same colours for noise, data, model and ground truth,
projector-sized fonts, labelled axes. Plotly figures use `apply_style(fig)`; matplotlib uses
`use_mpl_style()`."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["COLORS", "SEQUENCE", "FONT_SIZE", "TITLE_SIZE", "FIG_SIZE", "NOTEBOOK_WIDTH", "MPL_FIGSIZE", "apply_style",
           "use_mpl_style", "to_numpy"]

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
MPL_FIGSIZE = (7.2, 5.2)  # inches


def apply_style(fig: Any, title: str | None = None, x_title: str | None = None, y_title: str | None = None,
                square: bool = False) -> Any:
    """Apply the lab style to a plotly figure in place and return it."""
    fig.update_layout(
        template="plotly_white", font=dict(size=FONT_SIZE), title=dict(text=title, font=dict(size=TITLE_SIZE))
        if title is not None else fig.layout.title, width=FIG_SIZE[0], height=FIG_SIZE[1],
        margin=dict(l=60, r=20, t=60 if title else 30, b=55), legend=dict(font=dict(size=FONT_SIZE - 2)),
        colorway=SEQUENCE)
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    if square:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def use_mpl_style() -> None:
    """Projector-friendly matplotlib defaults (call once per lab, or let fmlab.viz figures call it)."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.figsize": MPL_FIGSIZE, "font.size": FONT_SIZE - 2, "axes.titlesize": TITLE_SIZE - 2,
        "axes.labelsize": FONT_SIZE - 2, "legend.fontsize": FONT_SIZE - 4, "axes.grid": True, "grid.alpha": 0.3,
        "axes.prop_cycle": mpl.cycler(color=SEQUENCE), "figure.dpi": 100, "savefig.dpi": 120,
    })


def to_numpy(x: Any) -> np.ndarray:
    """A tensor as a float64 numpy array for a trace (plotly validates numpy arrays far faster than lists)."""
    return x.detach().cpu().double().numpy()
