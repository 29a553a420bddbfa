"""How long `python -m fmlab prewarm LAB` takes per lab, each from an empty cache, and (--check) whether the lab, run
headless afterwards, found every training run in the cache (it must write no new entry).

    python benchmarks/prewarm_times.py --fast --jobs 2 --check   # fast mode, every lab, then execute each lab
    python benchmarks/prewarm_times.py 05 07 --jobs 2             # full mode, two labs
    python benchmarks/prewarm_times.py --jobs 2 --cache ~/.cache/fmlab   # full mode, every lab, into one cache kept

Each lab gets its own temporary cache directory (labs 03 / 04 and 07 / 08 share runs: each is timed alone), or with
--cache all of them fill that directory, in order, and keep it (a later lab then finds the runs it shares). Prints a
Markdown table: configurations, wall time, CPU time summed over the workers. Wall times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def execute_lab(lab: str, timeout: int = 600) -> tuple[float, str]:
    """Run labs/<lab>_*.ipynb headless (nbclient, errors allowed: stubs raise); (wall seconds, error summary)."""
    import nbclient
    import nbformat

    path = next((ROOT / "labs").glob(f"{lab}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=True,
                                     resources={"metadata": {"path": str(ROOT / "labs")}})
    start = time.perf_counter()
    client.execute()
    errors = [o.get("ename", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    return time.perf_counter() - start, ", ".join(errors)


def _cache_dir(kept: Path | None, lab: str) -> Any:
    """The cache directory for one lab's pre-warm: `kept` (created, never removed) or a temporary one."""
    if kept is None:
        return tempfile.TemporaryDirectory(prefix=f"fmlab_prewarm_{lab}_")
    kept.mkdir(parents=True, exist_ok=True)
    return nullcontext(str(kept))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labs", nargs="*", help="lab numbers (default: every lab in fmlab.prewarm.LABS)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: physical cores)")
    parser.add_argument("--fast", action="store_true", help="fast mode (FMLAB_FAST=1)")
    parser.add_argument("--check", action="store_true", help="then execute each lab and count new cache entries")
    parser.add_argument("--cache", type=Path, default=None, help="one cache directory for every lab, kept")
    args = parser.parse_args()
    os.environ["FMLAB_FAST"] = "1" if args.fast else "0"
    from fmlab.diskcache import disk_info
    from fmlab.prewarm import LABS, prewarm

    print("| lab | configurations | wall time | CPU time (all workers) |" + (" lab run | new entries |" if args.check
                                                                           else ""))
    print("|---|---:|---:|---:|" + ("---:|---:|" if args.check else ""))
    for lab in args.labs or list(LABS):
        with _cache_dir(args.cache, lab) as cache:
            os.environ["FMLAB_CACHE"] = cache
            report = prewarm([lab], jobs=args.jobs, progress=False)
            row = (f"| {lab} | {report['jobs']} | {report['wall_s']:.0f} s | "
                   f"{sum(report['cpu_s'].values()):.0f} s |")
            if report["errors"]:
                row += " errors: " + "; ".join(report["errors"])
            if args.check:
                before = disk_info()["entries"]
                wall, errors = execute_lab(lab)
                row += f" {wall:.0f} s | {disk_info()['entries'] - before} |" + (f" ({errors})" if errors else "")
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
