#!/usr/bin/env python
"""Build the lab notebooks from their sources, or check that they match.

    python scripts/build_labs.py                       # labs/NN_name.py -> labs/NN_name.ipynb, every lab
    python scripts/build_labs.py labs/03_training.py   # one lab
    python scripts/build_labs.py --check               # exit 1 if a committed notebook differs from its source

Each lab's source is `labs/NN_name.py` in jupytext's percent format (`# %%` code cells, `# %% [markdown]` text
cells; a cell's metadata, e.g. `jupyter={"source_hidden": true}`, sits on its `# %%` line). Ruff lints it, an
editor helps with it, and JupyterLab opens it as a notebook (jupytext pairs the two files). The committed
`.ipynb` is what students open: it is built from the source with stable cell ids (`<stem>-<index>`) and stripped
by `strip_notebooks.strip`, keeping the recorded outputs of `# NBVAL_CHECK_OUTPUT` cells whose source did not
change (record fresh ones with `python scripts/strip_notebooks.py --execute labs/NN_name.ipynb`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from strip_notebooks import KERNELSPEC, dumps, is_checked, strip  # noqa: E402

LABS = Path(__file__).resolve().parents[1] / "labs"
PAIRING = {"formats": "ipynb,py:percent"}


def lab_sources(paths: list[Path] | None = None) -> list[Path]:
    """The lab sources to build: `paths`, or every labs/NN_name.py."""
    if paths:
        for path in paths:
            if path.suffix != ".py" or not path.is_file():
                raise SystemExit(f"not a lab source (labs/NN_name.py): {path}")
        return list(paths)
    return sorted(p for p in LABS.glob("[0-9][0-9]_*.py"))


def paired_source(source: Path) -> str:
    """The source text with the pairing in its header (`formats: ipynb,py:percent`, which jupytext writes there):
    JupyterLab's jupytext opens a paired notebook only when its two files agree, header included."""
    text = source.read_text(encoding="utf-8")
    if "#     formats: ipynb,py:percent\n" not in text:
        if "#   jupytext:\n" not in text:
            raise SystemExit(f"{source}: no jupytext header; create it with `jupytext --to py:percent`")
        text = text.replace("#   jupytext:\n", "#   jupytext:\n#     formats: ipynb,py:percent\n", 1)
    return text


def build(source: Path) -> str:
    """The stripped notebook text built from `source`, keeping checked outputs of the existing notebook."""
    target = source.with_suffix(".ipynb")
    recorded = {}
    if target.exists():
        for cell in nbformat.read(target, as_version=4).cells:
            if is_checked(cell):
                recorded[cell.source] = cell.get("outputs", [])
    nb = jupytext.read(source)
    stem = source.stem.replace("_", "-")
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem}-{i:02d}"
        if is_checked(cell) and cell.source in recorded:
            cell["outputs"] = recorded[cell.source]
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    nbformat.validate(nb)
    out = strip(nb)
    out.metadata["jupytext"] = dict(PAIRING)
    return dumps(out)


def canonical_source(notebook_text: str) -> str:
    """The source exactly as jupytext writes the built notebook (`jupytext --diff` between the pair is then empty:
    JupyterLab's jupytext opens a pair whose .ipynb is newer than its .py, as a git checkout may leave them, only
    when the .py is what it would write itself)."""
    return jupytext.writes(nbformat.reads(notebook_text, as_version=4), fmt="py:percent")


def _same_source(a: str, b: str) -> bool:
    drop = re.compile(r"^#\s+jupytext_version: .*\n", re.M)  # the writer's version, not content
    return drop.sub("", a) == drop.sub("", b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", type=Path, help="labs/NN_name.py files (default: every lab)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a notebook would change")
    args = parser.parse_args(argv)
    stale = []
    for source in lab_sources(args.sources):
        paired = paired_source(source)
        if paired != source.read_text(encoding="utf-8"):
            stale.append(source)
            if not args.check:
                source.write_text(paired, encoding="utf-8")
        target = source.with_suffix(".ipynb")
        text = build(source)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
            if not args.check:
                target.write_text(text, encoding="utf-8")
        canonical = canonical_source(text)
        if not _same_source(canonical, source.read_text(encoding="utf-8")):
            stale.append(source)
            if not args.check:
                source.write_text(canonical, encoding="utf-8")
    for target in stale:
        print(("out of date: " if args.check else "built: ") + str(target))
    if args.check and stale:
        print("run: python scripts/build_labs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
