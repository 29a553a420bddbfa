"""Every lab in labs/ (labs/NN_*.ipynb, found automatically) as a student sees it: JupyterLab in headless Chromium.

For each notebook the harness in conftest.py runs all cells with FMLAB_FAST=1, asserts that no cell shows an error,
that every widget and figure rendered, and that moving every slider, dropdown, checkbox and toggle changes what is
drawn; screenshots land in artifacts/browser/<lab>-before.png and -after.png.

Run alone with `bash scripts/test.sh -m browser` (or `.venv/bin/python -m pytest -m browser tests/browser`).
"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

LABS_DIR = Path(__file__).resolve().parents[2] / "labs"
LABS = sorted(LABS_DIR.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", LABS, ids=[p.stem for p in LABS])
def test_lab_in_browser(lab_harness, notebook: Path):
    report = lab_harness.check(notebook)
    assert report.counts["plotly"] + report.counts["images"] > 0, f"{notebook.name} drew no figure"
    assert report.controls, f"{notebook.name} has no control to move"


def test_labs_are_found():
    assert LABS_DIR.is_dir(), f"labs folder missing: {LABS_DIR}"
    if not LABS:
        pytest.skip(f"no labs/NN_*.ipynb in {LABS_DIR} yet")


def test_presentation_mode_fits_the_notebook(lab_harness):
    """Lab 01 with `presentation(True)` (larger fonts, markers and lines for a projector): drawn, no output wider
    than the notebook's cells (screenshot artifacts/browser/presentation-01_paths-before.png)."""
    notebook = LABS_DIR / "01_paths.ipynb"
    report = lab_harness.check(notebook, name="presentation-01_paths", move=False,
                               setup="from fmlab.viz.style import presentation\npresentation(True)")
    assert report.counts["plotly"] > 0, "lab 01 drew no figure in presentation mode"
    assert not report.overflow, "in presentation mode these outputs overflow the notebook:\n" + "\n".join(
        report.overflow)
