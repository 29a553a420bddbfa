"""`python -m fmlab export`: labs executed headless into static pages whose plotly figures (interactive views
included, at their initial state) render offline with the plotly.js copied beside them."""

import os
from pathlib import Path

import nbformat
import pytest

from fmlab.export import EXPORT_ENV, PLOTLY_SCRIPT, export_labs, export_mode, lab_notebooks
from fmlab.viz.widgets import interactive_view, slider

ROOT = Path(__file__).resolve().parents[1]


def test_lab_notebooks_in_order_and_by_name():
    every = lab_notebooks(labs_dir=ROOT / "labs")
    assert [p.name[:2] for p in every] == sorted(p.name[:2] for p in every) and len(every) >= 14
    picked = lab_notebooks(["05_couplings", "01_paths.ipynb"], ROOT / "labs")
    assert [p.stem for p in picked] == ["05_couplings", "01_paths"]
    with pytest.raises(ValueError, match="labs must be among"):
        lab_notebooks(["99_nothing"], ROOT / "labs")
    with pytest.raises(ValueError, match="holds no lab notebooks"):
        lab_notebooks(labs_dir=ROOT / "fmlab")


def _render(a=1.0):
    import plotly.graph_objects as go

    return go.Figure(go.Scatter(x=[0, 1], y=[0, a]), layout=dict(title=dict(text=f"a = {a}")))


def test_a_view_on_an_exported_page_is_its_initial_figure(monkeypatch):
    view = interactive_view(_render, {"a": slider("a", 0.0, 2.0, 0.5, 1.0)})
    live = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in (live[0] if isinstance(live, tuple) else live)  # a widget
    monkeypatch.setenv(EXPORT_ENV, "1")
    assert export_mode()
    bundle = view._repr_mimebundle_()
    assert "Interactive when the lab runs: a." in bundle["text/html"] and "a = 1.0" in bundle["text/html"]
    monkeypatch.setenv(EXPORT_ENV, "0")
    assert not export_mode()


def test_export_writes_offline_pages_with_their_figures(tmp_path, monkeypatch):
    labs = tmp_path / "labs"
    labs.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Lab 00: a tiny lab"),
        nbformat.v4.new_code_cell("import plotly.graph_objects as go\nimport fmlab.viz.style\n"
                                  "go.Figure(go.Scatter(x=[0, 1], y=[1, 0]), layout=dict(title=dict(text='plain')))"),
        nbformat.v4.new_code_cell("from fmlab.viz.widgets import interactive_view, slider\n"
                                  "import plotly.graph_objects as go\n"
                                  "interactive_view(lambda a: go.Figure(layout=dict(title=dict(text=f'view {a}'))),"
                                  " {'a': slider('a', 0.0, 2.0, 0.5, 1.0)})"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, labs / "00_tiny.ipynb")
    (labs / "artefacts" / "00_tiny").mkdir(parents=True)
    (labs / "artefacts" / "00_tiny" / "grid.png").write_bytes(b"\x89PNG")  # an image the lab's text shows
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    pages = export_labs(tmp_path / "site", labs_dir=labs, timeout=300)
    page = pages[0].read_text()
    assert PLOTLY_SCRIPT in page and page.count("Plotly.newPlot") == 2  # both figures, drawn by the local plotly.js
    assert "plain" in page and "view 1.0" in page and "widget-view+json" not in page
    assert (tmp_path / "site" / "plotly.min.js").stat().st_size > 1_000_000
    assert (tmp_path / "site" / "artefacts" / "00_tiny" / "grid.png").read_bytes() == b"\x89PNG"
    index = (tmp_path / "site" / "index.html").read_text()
    assert '<a href="00_tiny.html">Lab 00: a tiny lab</a>' in index and "fast mode" in index
    assert EXPORT_ENV not in os.environ or os.environ[EXPORT_ENV] != "1"  # the environment is restored


def test_export_runs_labs_side_by_side_and_keeps_their_order(tmp_path, monkeypatch):
    labs = tmp_path / "labs"
    labs.mkdir()
    for name, pause in (("00_slow", 1.5), ("01_quick", 0.0)):  # the first lab finishes last
        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_markdown_cell(f"# Lab {name}"),
            nbformat.v4.new_code_cell(f"import time\ntime.sleep({pause})\nprint('ran {name}')"),
        ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nbformat.write(nb, labs / f"{name}.ipynb")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    pages = export_labs(tmp_path / "site", labs_dir=labs, timeout=300, jobs=2)
    assert [p.name for p in pages] == ["00_slow.html", "01_quick.html"]
    assert all(f"ran {p.stem}" in p.read_text() for p in pages)
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.index("00_slow.html") < index.index("01_quick.html")
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        export_labs(tmp_path / "site", labs_dir=labs, jobs=0)
