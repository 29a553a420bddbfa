"""Figures (plotly) and widget wiring for the labs. Render functions are pure functions of
their parameters returning a figure; widget modules only wire controls to them."""

from .style import COLORS, FONT_SIZE, SEQUENCE, apply_style

__all__ = ["COLORS", "FONT_SIZE", "SEQUENCE", "apply_style"]
