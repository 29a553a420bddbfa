"""Every lab exported (`python -m fmlab export`, fast mode) into a static site whose pages show their figures.

This executes every lab once more, headless with nbclient (the path that `jupyter nbconvert --execute`, papermill and
the export share), so scripts/test.sh runs it beside the browser tests, after the nbval run has filled
the disk cache (`FMLAB_CACHE`): the labs load their trained runs instead of training again.
"""

import os
import re
from pathlib import Path

import pytest

from fmlab.export import PLOTLY_SCRIPT, export_labs, lab_notebooks

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[2]


def test_every_exported_lab_page_shows_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    notebooks = lab_notebooks(labs_dir=ROOT / "labs")
    jobs = int(os.environ.get("FMLAB_EXPORT_JOBS", "2"))  # labs at once (test.sh: 1, beside the browser)
    pages = export_labs(tmp_path / "site", labs_dir=ROOT / "labs", timeout=600, jobs=jobs)
    assert [p.stem for p in pages] == [p.stem for p in notebooks]
    missing = []
    for page in pages:
        html = page.read_text(encoding="utf-8")
        plots = html.count("Plotly.newPlot(")
        images = len(re.findall(r'<img[^>]+src="(data:image/png|artefacts/)', html))
        divs = len(re.findall(r'<div [^>]*class="plotly-graph-div"', html))  # nbconvert may reorder attributes
        if PLOTLY_SCRIPT not in html or plots + images == 0 or plots != divs:
            missing.append(f"{page.name}: {plots} Plotly.newPlot calls for {divs} figure divs, {images} images")
        if "Traceback (most recent call last)" in html:
            missing.append(f"{page.name}: shows a traceback")
    assert not missing, "exported pages without their figures:\n" + "\n".join(missing)
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert all(f'href="{p.name}"' in index for p in pages)
