"""Argument checks shared by the engine: a bad value is a ValueError that names the parameter and what is allowed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any

__all__ = ["check_int", "check_float", "check_choice"]


def check_int(value: Any, name: str, low: int = 0, high: int | None = None) -> int:
    """`value` as an int if it is an integer (Python or NumPy; bool is not one here) in [low, high]; else a ValueError
    naming `name` (high = None: no upper bound)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return int(value)


def check_float(value: Any, name: str, low: float = -math.inf, high: float = math.inf, strict: bool = False,
                strict_high: bool = False) -> float:
    """`value` as a float if it is a finite real number >= low (> low if strict) and <= high (< high if
    strict_high); else a ValueError naming `name` and the allowed range."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    below = value < low or (strict and value == low) if ok else True
    above = value > high or (strict_high and value == high) if ok else True
    if below or above:
        if high == math.inf:
            allowed = f"{'>' if strict else '>='} {low:g}"
        elif low == -math.inf:
            allowed = f"{'<' if strict_high else '<='} {high:g}"
        else:
            allowed = f"in {'(' if strict else '['}{low:g}, {high:g}{')' if strict_high else ']'}"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, allowed: Collection[Any]) -> Any:
    """`value` if it is one of `allowed`; else a ValueError naming `name` and listing the allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value
