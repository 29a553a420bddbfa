"""Run `jupyter nbconvert --to notebook --execute` on the labs, several times, and report stalls and times.

A stall is nbclient sitting on a cell's reply that has already arrived: the kernel's own timestamps show a gap of
`--stall` seconds or more between one cell's status:idle and the next cell's execute_input. Before the fix in
`fmlab.viz.widgets.View._show` such a gap lasted up to the per-cell timeout (forever without one; see
tests/labs/test_headless_execution.py). Each run uses the fmlab of one `--root` (several roots run interleaved, lab by
lab, so that load from other processes hits them alike) with FMLAB_FAST=1 unless `--full`.

    python benchmarks/nbconvert_labs.py --runs 5                                   # every lab, this tree
    python benchmarks/nbconvert_labs.py --runs 3 --root base=/tmp/old --root fix=.  # old tree against this one
    python benchmarks/nbconvert_labs.py --full --cell-timeout -1 labs/00_welcome.ipynb

Wall seconds include start-up and are inflated on a loaded machine; CPU seconds are those of nbconvert and its
kernel together (resource usage of waited-for children).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).with_name("jupyter")


def stalls(executed: dict, threshold: float) -> list[tuple[int, float]]:
    """(cell index, seconds) of every gap >= threshold between a cell's idle and the next cell's execute_input."""
    found, previous_idle = [], None
    for index, cell in enumerate(executed["cells"]):
        times = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" not in times:
            continue
        start = dt.datetime.fromisoformat(times["iopub.execute_input"].rstrip("Z"))
        if previous_idle is not None and (gap := (start - previous_idle).total_seconds()) >= threshold:
            found.append((index, round(gap, 1)))
        previous_idle = dt.datetime.fromisoformat(times["iopub.status.idle"].rstrip("Z"))
    return found


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def run_once(lab: str, root: Path, args: argparse.Namespace, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    if args.full:
        env.pop("FMLAB_FAST", None)
    else:
        env["FMLAB_FAST"] = "1"
    command = [str(JUPYTER), "nbconvert", "--to", "notebook", "--execute",
               f"--ExecutePreprocessor.timeout={args.cell_timeout}", "--output", str(out), str(root / lab)]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        rc = subprocess.run(command, cwd=root, env=env, capture_output=True, timeout=args.run_timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "killed"
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime
    found = stalls(json.loads(out.read_text()), args.stall) if rc == 0 and out.exists() else []
    return {"rc": rc, "wall": wall, "cpu": cpu, "stalls": found}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("labs", nargs="*", help="notebooks relative to each root (default: labs/[0-9]*.ipynb)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--root", action="append", default=[], help="LABEL=PATH of an fmlab tree (default: this one)")
    p.add_argument("--cell-timeout", type=int, default=60, help="ExecutePreprocessor.timeout; -1: none")
    p.add_argument("--run-timeout", type=float, default=900, help="seconds before a run is killed and called hung")
    p.add_argument("--stall", type=float, default=20.0, help="a gap this long between cells counts as a stall")
    p.add_argument("--full", action="store_true", help="full lessons (FMLAB_FAST unset)")
    args = p.parse_args()
    roots = dict(r.split("=", 1) for r in args.root) if args.root else {"this": str(ROOT)}
    roots = {label: Path(path).resolve() for label, path in roots.items()}
    labs = args.labs or sorted(str(q.relative_to(ROOT)) for q in (ROOT / "labs").glob("[0-9]*.ipynb"))
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for lab in labs:
                for label, root in roots.items():
                    r = run_once(lab, root, args, Path(tmp) / f"{label}_{Path(lab).stem}.ipynb")
                    results.setdefault((lab, label), []).append(r)
                    print(f"{label} {Path(lab).stem} run {run + 1}: rc {r['rc']}, wall {r['wall']:.1f} s, "
                          f"CPU {r['cpu']:.1f} s, stalls (cell, s) {r['stalls']}", flush=True)
    print(f"\nFMLAB_FAST={'unset' if args.full else 1}, cell timeout {args.cell_timeout} s, stall = gap >= "
          f"{args.stall} s; wall and CPU seconds mean +- std over runs")
    print("| lab | tree | runs | finished | runs with a stall | stalls | wall s | CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (lab, label), rs in results.items():
        walls, cpus = [r["wall"] for r in rs], [r["cpu"] for r in rs]
        print(f"| {Path(lab).stem} | {label} | {len(rs)} | {sum(r['rc'] == 0 for r in rs)} | "
              f"{sum(bool(r['stalls']) for r in rs)} | {sum(len(r['stalls']) for r in rs)} | "
              f"{statistics.mean(walls):.0f} +- {_std(walls):.0f} | {statistics.mean(cpus):.1f} +- {_std(cpus):.1f} |")


if __name__ == "__main__":
    main()
