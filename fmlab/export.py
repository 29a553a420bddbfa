"""Labs readable without running them: execute every lab and write a static HTML site that opens offline.

    python -m fmlab export                       # fast mode (FMLAB_FAST=1), into site/
    python -m fmlab export --full --out site     # the full lessons (the time of running every lab)
    python -m fmlab export 01_paths 05_couplings # some labs

Each lab is executed headless (nbclient) with FMLAB_EXPORT=1 in its kernel. In that mode every plotly figure is
written as static HTML (`STATIC_RENDERER`: a div and a Plotly.newPlot call, no widget) and every interactive view
(`fmlab.viz.widgets.View`, `ReplayView`) shows the figure of its controls' initial state, with a line saying that the
controls move it when the lab runs. nbconvert's HTML exporter then writes one page per lab (matplotlib figures are
embedded PNGs); plotly.js is copied next to the pages once, and labs/artefacts/ (images the labs' text shows) beside
them, so the site needs no network. `index.html` lists the labs in order.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["EXPORT_ENV", "STATIC_RENDERER", "export_mode", "use_static_renderer", "lab_notebooks", "export_labs"]

EXPORT_ENV = "FMLAB_EXPORT"
STATIC_RENDERER = "fmlab_static"
LABS_DIR = Path("labs")  # the repository's labs folder, from its root (the labs are not part of the package)
PLOTLY_SCRIPT = '<script src="plotly.min.js"></script>'


def export_mode() -> bool:
    """True in a kernel run by `export_labs` (FMLAB_EXPORT=1): figures are written as static HTML."""
    return os.environ.get(EXPORT_ENV, "") not in ("", "0")


def use_static_renderer() -> None:
    """Make plotly's default renderer write each figure as a div and a Plotly.newPlot call, without plotly.js (the
    exported page loads it once)."""
    import plotly.io as pio
    from plotly.io._base_renderers import HtmlRenderer

    pio.renderers[STATIC_RENDERER] = HtmlRenderer(full_html=False, include_plotlyjs=False)
    pio.renderers.default = STATIC_RENDERER


def lab_notebooks(names: Sequence[str] | None = None, labs_dir: Path = LABS_DIR) -> list[Path]:
    """The labs' notebooks in order (NN_name.ipynb), or those named (with or without the .ipynb)."""
    every = sorted(p for p in Path(labs_dir).glob("[0-9][0-9]_*.ipynb"))
    if not every:
        raise ValueError(f"labs_dir {str(labs_dir)!r} holds no lab notebooks (NN_name.ipynb): run from the "
                         f"repository root or pass --labs-dir")
    if not names:
        return every
    by_name = {p.stem: p for p in every}
    unknown = [n for n in names if n.removesuffix(".ipynb") not in by_name]
    if unknown:
        raise ValueError(f"labs must be among {sorted(by_name)}, got {unknown}")
    return [by_name[n.removesuffix(".ipynb")] for n in names]


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return "untitled"


def _execute(path: Path, timeout: int):
    """The notebook at `path`, executed headless in a fresh kernel (its working directory: the notebook's folder)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def export_labs(out: str | Path, names: Sequence[str] | None = None, fast: bool = True, timeout: int = 3600,
                labs_dir: Path = LABS_DIR, jobs: int = 1) -> list[Path]:
    """Execute the labs (fast or full mode) and write out/NN_name.html for each, plotly.min.js and index.html.
    `jobs` labs execute at once, each in its own kernel (the pages come out the same). Returns the pages written."""
    from concurrent.futures import ThreadPoolExecutor

    import plotly
    from nbconvert import HTMLExporter

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out / "plotly.min.js")
    artefacts = Path(labs_dir) / "artefacts"  # images the labs' text shows (lab 13's long run), at the same path
    if artefacts.is_dir():
        shutil.copytree(artefacts, out / "artefacts", dirs_exist_ok=True)
    saved = {k: os.environ.get(k) for k in (EXPORT_ENV, "FMLAB_FAST")}
    os.environ[EXPORT_ENV] = "1"
    os.environ["FMLAB_FAST"] = "1" if fast else "0"
    pages, entries = [], []
    try:
        paths = lab_notebooks(names, labs_dir)
        with ThreadPoolExecutor(max_workers=jobs) as pool:  # the kernels do the work; a thread only waits on one
            executed = list(pool.map(lambda path: _execute(path, timeout), paths))
        for path, nb in zip(paths, executed, strict=True):
            body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
            page = out / f"{path.stem}.html"
            page.write_text(body.replace("</head>", f"{PLOTLY_SCRIPT}\n</head>", 1), encoding="utf-8")
            pages.append(page)
            entries.append(f'<li><a href="{page.name}">{_title(nb)}</a></li>')
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    mode = "fast mode (FMLAB_FAST=1: short training)" if fast else "full mode"
    index = (f"<!doctype html><html><head><meta charset='utf-8'><title>fmlab labs</title></head><body>"
             f"<h1>fmlab labs</h1><p>Executed in {mode}; the controls move the figures when a lab runs in "
             f"JupyterLab.</p><ul>{''.join(entries)}</ul></body></html>\n")
    (out / "index.html").write_text(index, encoding="utf-8")
    return pages
