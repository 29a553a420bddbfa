"""Where a lab's Run All spends its time: execute one notebook with nbclient and print its slowest cells.

Each code cell's time is the kernel's own (its execute_input and status:idle timestamps), so the figures do not
include nbclient's overhead. Full or fast mode and the cache follow the environment (FMLAB_FAST, FMLAB_CACHE).

    FMLAB_CACHE=~/.cache/fmlab OMP_NUM_THREADS=1 python benchmarks/cell_times.py labs/13_celeba64.ipynb
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def cell_seconds(cell: dict) -> float | None:
    """The kernel's time for one executed code cell, or None if it did not run."""
    times = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in times:
        return None
    start, end = (dt.datetime.fromisoformat(times[k].rstrip("Z")) for k in ("iopub.execute_input", "iopub.status.idle"))
    return (end - start).total_seconds()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--top", type=int, default=10, help="how many of the slowest cells to print")
    parser.add_argument("--timeout", type=int, default=3000, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    nb = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(args.notebook.parent)}})
    start = time.perf_counter()
    client.execute()
    print(f"{args.notebook}: Run All {time.perf_counter() - start:.1f} s (wall, kernel start included)")
    rows = [(s, i, (cell.source.strip().splitlines() or [""])[0][:90]) for i, cell in enumerate(nb.cells)
            if (s := cell_seconds(cell)) is not None]
    for seconds, index, first_line in sorted(rows, reverse=True)[:args.top]:
        print(f"{seconds:8.1f} s  cell {index:3d}  {first_line}")


if __name__ == "__main__":
    main()
