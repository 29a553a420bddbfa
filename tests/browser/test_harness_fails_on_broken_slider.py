"""A test of the browser test: the harness passes a working notebook and fails broken ones.

The fixture notebooks are written by tests/browser/fixtures/make_fixtures.py.
"""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

FIXTURES = Path(__file__).parent / "fixtures"


def test_harness_passes_working_controls(lab_harness):
    report = lab_harness.check(FIXTURES / "good_controls.ipynb", name="fixture-good_controls")
    assert report.counts["plotly"] == 1 and report.counts["images"] == 1
    assert [c.split(" ")[0] for c in report.controls] == ["slider", "slider", "dropdown", "checkbox"]
    shots = 2 if os.environ.get("FMLAB_BROWSER_SCREENSHOTS", "all") == "all" else 0  # before and after, or none
    assert len(report.screenshots) == shots and all(p.exists() for p in report.screenshots)


def test_harness_fails_on_slider_wired_to_nothing(lab_harness):
    with pytest.raises(AssertionError, match=r"changed no figure.*slider 'a'"):
        lab_harness.check(FIXTURES / "broken_slider_unwired.ipynb", name="fixture-broken_slider_unwired")


def test_harness_fails_on_slider_callback_that_raises(lab_harness):
    with pytest.raises(AssertionError, match="deliberately broken slider callback"):
        lab_harness.check(FIXTURES / "broken_slider_raises.ipynb", name="fixture-broken_slider_raises")


def test_harness_fails_on_cell_error(lab_harness):
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        lab_harness.check(FIXTURES / "cell_error.ipynb", name="fixture-cell_error")
