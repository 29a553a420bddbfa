"""`python -m fmlab prewarm [LAB ...]`: train, the night before class, every configuration the labs' controls can ask
for, so that a fresh kernel finds all of them in the disk cache (fmlab.diskcache) and every control answers at once.

    python -m fmlab prewarm                  # every lab, full mode, one configuration per physical core
    python -m fmlab prewarm 05 10 --jobs 2   # labs 05 and 10 only, two processes
    FMLAB_FAST=1 python -m fmlab prewarm 07  # fast mode (CI sizes): fills fast mode's entries, not full mode's

A lab-support module that trains lists its lab's work in `prewarm_jobs(fast)`: `Job`s that call the very function
the lab calls, with the lab's arguments, so the cache keys match (tests/test_prewarm.py runs a lab after a prewarm
and checks that it wrote no new entry). `LABS` registers those modules. Jobs run in worker processes (one
configuration per process, each on one torch thread); a teacher (stage 0) finishes before the runs that distil or reflow
it (stage 1). One progress bar counts training steps and estimates the time left.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

__all__ = ["Job", "job", "LABS", "lab_jobs", "run_job", "default_jobs", "prewarm", "format_report"]

LABS = {  # lab number -> the lab-support module whose prewarm_jobs(fast) lists what the lab trains
    "00": "fmlab.viz.welcome", "02": "fmlab.viz.fields", "03": "fmlab.viz.training", "04": "fmlab.viz.solvers",
    "05": "fmlab.viz.couplings", "06": "fmlab.viz.parametrisation", "07": "fmlab.viz.score_sde",
    "08": "fmlab.viz.likelihood", "09": "fmlab.viz.guidance", "10": "fmlab.viz.unrolling_runs",
    "12": "fmlab.viz.loss_zoo", "13": "fmlab.viz.images",
}


@dataclass(frozen=True)
class Job:
    """One cached call: `function` ('module:name') with `args` and `kwargs` (name, value pairs); `cost` (training
    steps) weights the progress bar; stage-0 jobs finish before stage-1 jobs start (teachers before students)."""

    lab: str
    function: str
    args: tuple = ()
    kwargs: tuple = ()
    cost: int = 1
    stage: int = 0

    def call(self) -> Any:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)(*self.args, **dict(self.kwargs))


def job(lab: str, function: str, *args: Any, cost: int, stage: int = 0, **kwargs: Any) -> Job:
    """A Job calling `function(*args, **kwargs)` for lab `lab`."""
    return Job(lab, function, tuple(args), tuple(sorted(kwargs.items())), int(cost), stage)


def lab_jobs(labs: Sequence[str] | None = None, fast: bool = False) -> list[Job]:
    """The jobs of `labs` (numbers such as '05' or '5'; default: every lab in LABS), each distinct call once."""
    names = list(LABS) if not labs else [_lab_number(lab) for lab in labs]
    jobs: dict[tuple, Job] = {}
    for lab in names:
        for j in importlib.import_module(LABS[lab]).prewarm_jobs(fast):
            jobs.setdefault((j.function, repr(j.args), repr(j.kwargs)), j)  # labs 03 / 04 share a network
    return sorted(jobs.values(), key=lambda j: (j.stage, -j.cost))  # longest first: the pool ends evenly


def _lab_number(lab: str) -> str:
    number = lab.split("_")[0].zfill(2)
    if number not in LABS:
        raise ValueError(f"lab must be one of {list(LABS)} (the labs whose controls train), got {lab!r}")
    return number


def run_job(j: Job) -> tuple[Job, float, str | None]:
    """Call `j` (filling the disk cache); (the job, CPU seconds, None or the error text)."""
    start = time.process_time()
    try:
        j.call()
    except Exception as err:  # one failing configuration must not stop the other labs' pre-warm
        return j, time.process_time() - start, f"{type(err).__name__}: {err}"
    return j, time.process_time() - start, None


_WORKER_ENV = {"OMP_NUM_THREADS": "1"}


def default_jobs() -> int:
    """Physical CPU cores (psutil where installed), else the cores this process may use."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    from .device import cpu_count

    return max(1, min(physical or cpu_count(), cpu_count()))


def prewarm(labs: Sequence[str] | None = None, jobs: int | None = None, fast: bool | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Train every job of `labs` not yet in the disk cache, in `jobs` worker processes (default `default_jobs()`).

    `fast` (default: FMLAB_FAST) picks the labs' fast or full sizes and sets FMLAB_FAST for the workers, so the
    entries are that mode's. Returns {'wall_s', 'jobs', 'cpu_s': {lab: s}, 'errors': [...]}."""
    from tqdm.auto import tqdm

    from .checks import check_int
    from .diskcache import entries_dir
    from .labkit import FAST_ENV, fast_mode

    jobs = default_jobs() if jobs is None else jobs
    check_int(jobs, "jobs", 1)
    if entries_dir() is None:
        raise ValueError("the disk cache is off (FMLAB_CACHE=off): pre-warming would keep nothing; unset FMLAB_CACHE "
                         "or point it at a directory")
    old = os.environ.get(FAST_ENV)
    fast = fast_mode() if fast is None else bool(fast)
    os.environ[FAST_ENV] = "1" if fast else "0"
    todo = lab_jobs(labs, fast)
    cpu: dict[str, float] = {}
    errors: list[str] = []
    start = time.perf_counter()
    bar = tqdm(total=sum(j.cost for j in todo), unit="step", desc=f"prewarm ({'fast' if fast else 'full'} mode, "
               f"{len(todo)} configurations, {jobs} process{'es' if jobs > 1 else ''})", disable=not progress)
    try:
        for stage in sorted({j.stage for j in todo}):
            for j, seconds, error in _run_stage([j for j in todo if j.stage == stage], jobs):
                cpu[j.lab] = cpu.get(j.lab, 0.0) + seconds
                if error is not None:
                    errors.append(f"lab {j.lab}, {j.function}{j.args}: {error}")
                bar.update(j.cost)
    finally:
        bar.close()
        if old is None:
            os.environ.pop(FAST_ENV, None)
        else:
            os.environ[FAST_ENV] = old
    return {"wall_s": time.perf_counter() - start, "jobs": len(todo), "cpu_s": cpu, "errors": errors,
            "fast": fast, "processes": jobs}


def _run_stage(todo: list[Job], jobs: int):
    """Yield run_job's answers as `jobs` worker processes finish them. Workers start with OMP_NUM_THREADS=1: one
    torch thread each (the trainer's default reads it), the pool is the parallelism."""
    saved = {k: os.environ.get(k) for k in _WORKER_ENV}
    os.environ.update(_WORKER_ENV)  # spawned workers copy the environment when they start
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=get_context("spawn")) as pool:
            for future in as_completed([pool.submit(run_job, j) for j in todo]):
                yield future.result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def format_report(report: dict[str, Any]) -> str:
    """A few lines: configurations, wall time, CPU time per lab, errors."""
    mode = "fast" if report["fast"] else "full"
    lines = [f"pre-warmed {report['jobs']} configurations ({mode} mode) in {report['wall_s']:.0f} s wall time with "
             f"{report['processes']} process(es)"]
    lines += [f"  lab {lab}: {seconds:.0f} s CPU" for lab, seconds in sorted(report["cpu_s"].items())]
    lines += [f"  FAILED {e}" for e in report["errors"]]
    return "\n".join(lines)
