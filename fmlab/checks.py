"""Argument checks shared by the engine: a bad value is a ValueError that names the parameter and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = ["check_int", "check_float", "check_choice"]


def check_int(value: Any, name: str, low: int = 0) -> int:
    """`value` if it is an integer >= low (bool is not an integer here); else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_float(value: Any, name: str, low: float = -math.inf, strict: bool = False) -> float:
    """`value` as a float if it is a finite number >= low (> low if strict); else a ValueError naming `name`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (strict and value == low):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, allowed: Collection[Any]) -> Any:
    """`value` if it is one of `allowed`; else a ValueError naming `name` and listing the allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value
