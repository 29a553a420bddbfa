#!/usr/bin/env python
"""Keep committed notebooks small and nbval-ready.

    python scripts/strip_notebooks.py labs/*.ipynb             # strip in place
    python scripts/strip_notebooks.py --check labs/*.ipynb     # exit 1 if any notebook would change (CI)
    python scripts/strip_notebooks.py --execute labs/01_paths.ipynb   # run under FMLAB_FAST=1, then strip

Stripping removes every output except the text outputs (streams and text/plain results) of cells whose first
line is `# NBVAL_CHECK_OUTPUT`: those are what `pytest --nbval-lax` compares, so they stay in the notebook.
Images, widgets, HTML and errors go; execution counts are reset (kept checked cells get their position among
the code cells, since nbval fails a cell that has outputs but no count); cell and notebook metadata keep only what
matters (tags, source hiding, kernelspec, language name). `--execute` runs the notebook first with nbclient
under FMLAB_FAST=1 (in the notebook's folder) so the kept outputs are fresh.

Notebooks are built from their percent-format sources (labs/NN_name.py) by scripts/build_labs.py, which strips
them with `strip` from this module.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import nbformat

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KEEP_CELL_META = ("tags", "jupyter", "editable", "deletable")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


# --- stripping -------------------------------------------------------------------------------------------

def is_checked(cell: nbformat.NotebookNode) -> bool:
    """True for a code cell whose first line is `# NBVAL_CHECK_OUTPUT`."""
    source = cell.get("source", "")
    return cell.get("cell_type") == "code" and source.lstrip().splitlines()[:1] == [CHECK_MARK]


def _text_outputs(outputs: list) -> list:
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream":
            kept.append(nbformat.v4.new_output("stream", name=out["name"], text=out["text"]))
        elif out.get("output_type") in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            data = {"text/plain": out["data"]["text/plain"]}
            if out["output_type"] == "execute_result":
                kept.append(nbformat.v4.new_output("execute_result", data=data, execution_count=None))
            else:
                kept.append(nbformat.v4.new_output("display_data", data=data))
    return kept


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A stripped copy of `nb` (see the module docstring)."""
    nb = copy.deepcopy(nb)
    count = 0
    for cell in nb.cells:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEEP_CELL_META}
        if cell["cell_type"] == "code":
            count += 1
            cell["outputs"] = _text_outputs(cell.get("outputs", [])) if is_checked(cell) else []
            # nbval treats a cell with outputs but no execution count as "unrun" and fails it: checked cells with
            # outputs get a stable count (their position among the code cells), every other cell None.
            cell["execution_count"] = count if cell["outputs"] else None
            for out in cell["outputs"]:
                if out["output_type"] == "execute_result":
                    out["execution_count"] = cell["execution_count"]
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            if cell["cell_type"] == "markdown":
                cell.pop("attachments", None)
    lang = nb.metadata.get("language_info", {}).get("name", "python")
    pairing = nb.metadata.get("jupytext", {}).get("formats")
    nb.metadata = {"kernelspec": dict(nb.metadata.get("kernelspec") or KERNELSPEC), "language_info": {"name": lang}}
    if pairing:  # the lab's jupytext pairing with its percent-format source (scripts/build_labs.py)
        nb.metadata["jupytext"] = {"formats": pairing}
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def dumps(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run the notebook top to bottom with FMLAB_FAST=1 in its own folder; returns the executed notebook."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    old = os.environ.get("FMLAB_FAST")
    os.environ["FMLAB_FAST"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                       ).execute()
    finally:
        if old is None:
            os.environ.pop("FMLAB_FAST", None)
        else:
            os.environ["FMLAB_FAST"] = old
    return nb


# --- command line ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if a notebook would change")
    parser.add_argument("--execute", action="store_true", help="run each notebook under FMLAB_FAST=1 first")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell with --execute")
    args = parser.parse_args(argv)
    if args.check and args.execute:
        parser.error("--check and --execute exclude each other")
    changed = []
    for path in args.notebooks:
        if path.suffix != ".ipynb" or not path.is_file():
            parser.error(f"not a notebook file: {path}")
        before = path.read_text(encoding="utf-8")
        if args.execute:
            start = time.perf_counter()
            nb = execute(path, args.timeout)
            print(f"executed {path} in {time.perf_counter() - start:.1f} s (FMLAB_FAST=1)")
        else:
            nb = nbformat.read(path, as_version=4)
        after = dumps(strip(nb))
        if after != before:
            changed.append(path)
            if not args.check:
                path.write_text(after, encoding="utf-8")
    verb = "would change" if args.check else "stripped"
    for path in changed:
        print(f"{verb}: {path}")
    if args.check and changed:
        print("run: python scripts/strip_notebooks.py " + " ".join(map(str, changed)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
