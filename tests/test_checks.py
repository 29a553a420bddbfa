"""fmlab.checks: the value back when it is allowed, else a ValueError that names the parameter and what is allowed."""

import math

import numpy as np
import pytest

from fmlab.checks import check_choice, check_float, check_int


def test_check_int_accepts_python_and_numpy_integers_in_range():
    assert check_int(3, "n", 1) == 3
    value = check_int(np.int64(4), "n", 1, 4)
    assert value == 4 and type(value) is int


@pytest.mark.parametrize("value", [0, 2.0, True, "1", None, np.float64(1.0)])
def test_check_int_rejects_non_integers_and_values_below_low(value):
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1, got"):
        check_int(value, "steps", 1)


def test_check_int_upper_bound():
    with pytest.raises(ValueError, match=r"class must be an integer in \[0, 2\], got 3"):
        check_int(3, "class", 0, 2)


def test_check_float_bounds_open_and_closed():
    assert check_float(0, "w", 0.0) == 0.0
    assert check_float(np.float32(0.5), "delta", 0.0, 1.0, strict=True, strict_high=True) == 0.5
    assert check_float(1.0, "x", 0.0, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got 0.0"):
        check_float(0.0, "lr", 0.0, strict=True)
    with pytest.raises(ValueError, match=r"delta must be a finite number in \(0, 1\), got 1.0"):
        check_float(1.0, "delta", 0.0, 1.0, strict=True, strict_high=True)
    with pytest.raises(ValueError, match=r"dropout must be a finite number in \[0, 1\), got 1"):
        check_float(1, "dropout", 0.0, 1.0, strict_high=True)
    with pytest.raises(ValueError, match=r"x must be a finite number <= 2, got 3"):
        check_float(3, "x", high=2.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, True, "0.5", None])
def test_check_float_rejects_non_finite_and_non_numbers(value):
    with pytest.raises(ValueError, match="h must be a finite number >= 0"):
        check_float(value, "h", 0.0)


def test_check_choice_lists_the_allowed_values():
    assert check_choice("b", "method", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"method must be one of \['a', 'b'\], got 'c'"):
        check_choice("c", "method", ("a", "b"))
