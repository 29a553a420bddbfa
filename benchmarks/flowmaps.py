"""Every flow-map loss with the same MLP, optimiser, data and budget: quality in 1, 2, 4, 8 steps over seeds, cost
and memory.

    python benchmarks/flowmaps.py --no-cost       # every loss on seeds 0,1,2 (hours on 2 cores)
    python benchmarks/flowmaps.py --no-cost --all-seeds-for best:2 --all-seeds-also meanflow,imf,soflow --reuse ...
                                                  # the committed table (exact command in benchmarks/README.md)
    python benchmarks/flowmaps.py --cost-only     # then cost and memory of every loss, one thread, into the same json
    python benchmarks/flowmaps.py --quick         # a smoke test (a minute): few steps, 2 losses, 1 seed, small samples
    python benchmarks/flowmaps.py --losses cfm,meanflow,lsd --datasets moons --seeds 0 --steps 2000 --out /tmp/x.json

What it does (time runs from noise at t = 0 to data at t = 1):
1. trains flow matching (loss 'cfm', independent coupling) on each data set (moons, checkerboard) and seed: the
   reference, sampled with 100 Euler steps, and the teacher of every distillation loss of the same seed;
2. trains every registered flow-map loss with the same model (fmlab.viz.loss_zoo.zoo_model: MLP 3 x 128, time
   frequencies up to 10, AdamW lr 2e-3, batch 256, EMA), the same number of steps and the same data, with
   independent coupling, once per seed (`--seeds`); samples the EMA model in 1, 2, 4 and 8 steps the way the loss
   trained it (flow-map jumps, consistency re-noising; PID and FreeFlow only in one jump from the noise, which is
   all they learn) and measures the exact W2 against held-out data (the held-out points and the sampling noise are
   the same for every model and seed, so seeds differ by training only), beside the noise floor (W2 between two
   data samples of the same size, mean +- std over `--floor-draws` pairs);
3. repeats flow matching and the best losses with minibatch-OT coupling (`--ot`), teachers trained with OT too;
4. measures, in one process and one thread, each loss's training-step time (batch + loss + backward) divided by one
   forward pass of the same network on the same batch (forward-pass equivalents, beside the survey's estimate), the
   peak memory allocated during a step relative to flow matching (torch profiler), and a breakdown of the passes a
   JVP loss pays for (forward, backward, JVP, backward through a JVP). `--cost-only` does only this, for the losses
   of an existing results file, and writes the numbers into it (so training and timing need not share the machine).

A job (`train_and_eval`) is a dict: loss, data, coupling, steps, seed, n_eval, the teacher's state for distillation
losses, and optionally loss_settings (passed to the loss through TrainConfig.loss_settings; used by
benchmarks/meanflow_weighting.py). Results: fmlab/viz/results/flowmaps.json (package data read by lab 12: one record
per run and seed, a summary with mean and std over seeds, the headline comparison in "target") and a Markdown
rendering fmlab/viz/results/flowmaps.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmlab.data import sample_toy  # noqa: E402
from fmlab.losses import get_loss  # noqa: E402
from fmlab.metrics import noise_floor, wasserstein  # noqa: E402
from fmlab.models import build_model  # noqa: E402
from fmlab.viz.loss_zoo import (  # noqa: E402
    DISPLAY_NAMES,
    PAPER_MEMORY,
    RESULTS_PATH,
    SURVEY_COST,
    ZOO_MODEL,
    flow_map_losses,
    generate,
    needs_teacher,
    rule_of,
    sampler_of,
    time_gap_table,
    zoo_config,
    zoo_model,
)
from fmlab.viz.loss_zoo_results import DIVERGED_W2, format_w2_stats, one_nfe, summarise_runs  # noqa: E402

DATASETS = ("moons", "checkerboard")
EVAL_STEPS = (1, 2, 4, 8)
FM_STEPS = 100
RESULTS = ROOT / "benchmarks" / "results"


# --- training and evaluation (runs in worker processes) ---------------------------------------------------------

def _eval_sets(data: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out data (seed 10_000) and the evaluation noise (seed 20_000), the same for every model."""
    x1 = sample_toy(data, n, generator=torch.Generator().manual_seed(10_000))
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(20_000))
    return x0, x1


def train_and_eval(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (loss, data, coupling, seed) run and measure W2 at each step count; returns a plain record.

    job: loss, data, coupling, steps, seed, n_eval; `teacher` (a cfm state dict) for distillation losses; optional
    `loss_settings` (dict) passed to the loss as TrainConfig.loss_settings, and `keep_state` (the record then holds
    the EMA model's state dict, as it always does for flow matching: the teachers). Losses sampled only from the
    noise (PID, FreeFlow) are evaluated at 1 step only: their k-step sample is the 1-step sample."""
    from fmlab.train import Trainer

    torch.set_num_threads(1)
    loss, data, coupling, seed = job["loss"], job["data"], job["coupling"], job["seed"]
    settings = dict(job.get("loss_settings") or {})
    config = zoo_config(loss, data=data, coupling=coupling, steps=job["steps"], seed=seed,
                        log_every=max(1, job["steps"] // 10), **settings)
    runtime = {}
    if needs_teacher(loss):
        teacher = zoo_model("cfm")
        teacher.load_state_dict(job["teacher"])
        runtime["teacher"] = teacher.requires_grad_(False).eval()
    torch.manual_seed(seed)
    trainer = Trainer(config, model=zoo_model(loss), runtime_settings=runtime)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(progress=False)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    model = trainer.ema.eval()
    x0, x1 = _eval_sets(data, job["n_eval"])
    steps = [1] if one_nfe(loss) else list(EVAL_STEPS) + ([FM_STEPS] if loss == "cfm" else [])
    w2 = {}
    for k in steps:
        samples = generate(model, loss, x0, k, generator=torch.Generator().manual_seed(30_000 + k))
        w2[str(k)] = wasserstein(samples, x1) if bool(torch.isfinite(samples).all()) else float("nan")
    record = {"loss": loss, "data": data, "coupling": coupling, "seed": seed, "steps": job["steps"], "w2": w2,
              "train_s": round(train_s, 2), "train_cpu_s": round(train_cpu_s, 2),
              "final_loss": trainer.log[-1]["loss"], "sampler": sampler_of(loss)}
    if settings:
        record["loss_settings"] = settings
    if loss == "cfm" or job.get("keep_state"):
        record["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    return record


def _warm_up() -> None:
    """Worker initializer: one thread, and torch's forward-AD decompositions loaded before any job.

    Loading them (on the first JVP) has failed now and then in a fresh process with a JIT "Expected a single
    top-level function" error; a retry loads them."""
    torch.set_num_threads(1)
    from torch.func import jvp

    for attempt in range(3):
        try:
            jvp(torch.sin, (torch.ones(2),), (torch.ones(2),))
            return
        except Exception:  # retried; a job that still fails is rerun in the main process
            time.sleep(0.5 * (attempt + 1))


def run_jobs(jobs: list[dict[str, Any]], workers: int,
             on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run jobs in `workers` processes (1: in this process), printing one line per finished run and passing each
    record to `on_record` as it finishes; a job that fails in a worker is run again in this process. Returns the
    records in the order of `jobs`."""
    def finish(record: dict[str, Any]) -> dict[str, Any]:
        _report(record)
        if on_record is not None:
            on_record(record)
        return record

    if workers <= 1:
        return [finish(train_and_eval(job)) for job in jobs]
    import multiprocessing as mp

    results: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_warm_up) as pool:
        futures = {pool.submit(train_and_eval, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                record = future.result()
            except Exception as err:
                print(f"  {jobs[i]['loss']} on {jobs[i]['data']} seed {jobs[i]['seed']} failed in a worker "
                      f"({type(err).__name__}); rerunning here", flush=True)
                record = train_and_eval(jobs[i])
            results[i] = finish(record)
    return [results[i] for i in range(len(jobs))]


def _report(record: dict[str, Any]) -> dict[str, Any]:
    w2 = "  ".join(f"{k}:{v:.3f}" for k, v in record["w2"].items())
    print(f"  {record['loss']:15s} {record['data']:12s} {record['coupling']:11s} seed {record['seed']}  W2 {w2}   "
          f"({record['train_s']:.0f} s, cpu {record['train_cpu_s']:.0f} s)", flush=True)
    return record


# --- cost and memory (main process, one thread) ------------------------------------------------------------------

def _step_fn(loss: str, teacher: torch.nn.Module, batch_size: int, seed: int = 0):
    """A closure running batch + loss + backward once for `loss` on moons (the optimizer step is not timed)."""
    spec = get_loss(loss)
    torch.manual_seed(seed)
    model = zoo_model(loss)
    settings = spec.settings({"teacher": teacher} if needs_teacher(loss) else {})
    g = torch.Generator().manual_seed(seed)
    x1 = sample_toy("moons", batch_size, generator=g)
    x0 = torch.randn(x1.shape, generator=g)

    def step() -> None:
        batch = spec.make_batch(x0, x1, g, **settings)
        value, _ = spec.fn(model, batch, **settings)
        model.zero_grad(set_to_none=True)
        value.backward()

    return step, model


def _forward_fn(batch_size: int, hidden: int = ZOO_MODEL["hidden"], depth: int = ZOO_MODEL["depth"]):
    """One forward pass (autograd on, as in training) of the two-time network on a batch: the unit of cost."""
    torch.manual_seed(0)
    model = _sized_model(hidden, depth)
    g = torch.Generator().manual_seed(0)
    x, s, t = torch.randn(batch_size, 2, generator=g), torch.rand(batch_size, generator=g), torch.rand(batch_size,
                                                                                                        generator=g)
    return lambda: model(x, s, t)


def _sized_model(hidden: int, depth: int) -> torch.nn.Module:
    """The zoo's two-time model (its time embedding), at another width and depth for the cost breakdown."""
    model = zoo_model("meanflow")
    if (hidden, depth) != (ZOO_MODEL["hidden"], ZOO_MODEL["depth"]):
        embed = model.backbone.embed
        model = build_model(time_inputs=2, hidden=hidden, depth=depth)
        model.backbone.embed = embed
    return model


def _timed(fn, repeats: int) -> float:
    """CPU seconds per call (process time, one thread: what an idle core would take; wall-clock time on a machine
    busy with other processes counts their time slices too)."""
    fn()  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def measure_costs(losses: list[str], teacher: torch.nn.Module, batch_size: int, rounds: int, repeats: int
                  ) -> dict[str, dict[str, float]]:
    """Median over interleaved rounds of step time / forward time (robust to a machine shared with other jobs)."""
    torch.set_num_threads(1)
    steps = {loss: _step_fn(loss, teacher, batch_size)[0] for loss in losses}
    forward = _forward_fn(batch_size)
    times: dict[str, list[float]] = {loss: [] for loss in losses}
    fwd: list[float] = []
    for _ in range(rounds):
        fwd.append(_timed(forward, 4 * repeats))
        for loss in losses:
            times[loss].append(_timed(steps[loss], repeats))
    f = statistics.median(fwd)
    return {loss: {"step_ms": 1e3 * statistics.median(ts), "fwd_eq": statistics.median(ts) / f} for loss, ts in
            times.items()} | {"_forward_ms": {"step_ms": 1e3 * f, "fwd_eq": 1.0}}


def peak_memory(loss: str, teacher: torch.nn.Module, batch_size: int) -> float:
    """Peak bytes allocated during one step (batch + loss + backward), from the torch profiler's memory events."""
    import os
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    step, _ = _step_fn(loss, teacher, batch_size)
    step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        events = json.loads(Path(path).read_text())["traceEvents"]
    finally:
        os.unlink(path)
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return float(max(totals)) if totals else float("nan")


def jvp_breakdown(batch_size: int, repeats: int, rounds: int, hidden: int = ZOO_MODEL["hidden"],
                  depth: int = ZOO_MODEL["depth"]) -> dict[str, float]:
    """Forward-pass equivalents of the passes a flow-map loss combines, on a network of the given size, with the
    JVP the losses take (fmlab.flowmaps.flow_map_jvp: the MLP's hand tangent pass)."""
    from fmlab.flowmaps import flow_map_jvp

    def jvp(net, primals, tangent_dirs):
        return flow_map_jvp(net, *primals, *tangent_dirs)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = _sized_model(hidden, depth)
    g = torch.Generator().manual_seed(0)
    x, s, t = torch.randn(batch_size, 2, generator=g), torch.rand(batch_size, generator=g), torch.rand(batch_size,
                                                                                                        generator=g)
    tangents = (torch.randn(batch_size, 2, generator=g), torch.ones(batch_size), torch.zeros(batch_size))

    def fwd_nograd():
        with torch.no_grad():
            model(x, s, t)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(x, s, t).pow(2).mean().backward()

    def jvp_only():
        with torch.no_grad():
            jvp(model, (x, s, t), tangents)

    def jvp_bwd_primal():  # MeanFlow-style: the tangent under stop-gradient
        model.zero_grad(set_to_none=True)
        u, du = jvp(model, (x, s, t), tangents)
        (u - du.detach()).pow(2).mean().backward()

    def jvp_bwd_tangent():  # EMD/LMD-style: backpropagate through the tangent (second order)
        model.zero_grad(set_to_none=True)
        u, du = jvp(model, (x, s, t), tangents)
        (u + du).pow(2).mean().backward()

    parts = {"forward (no grad)": fwd_nograd, "forward + backward": fwd_bwd, "JVP (no grad)": jvp_only,
             "JVP + backward, tangent detached": jvp_bwd_primal, "JVP + backward through the tangent": jvp_bwd_tangent}
    samples: dict[str, list[float]] = {k: [] for k in parts}
    fwd: list[float] = []
    forward = _forward_fn(batch_size, hidden, depth)
    for _ in range(rounds):
        fwd.append(_timed(forward, 4 * repeats))
        for name, fn in parts.items():
            samples[name].append(_timed(fn, repeats))
    f = statistics.median(fwd)
    return {name: round(statistics.median(ts) / f, 2) for name, ts in samples.items()}


# --- the run -------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 150 steps, cfm + 2 losses, seed 0, n_eval 200")
    p.add_argument("--losses", default="all", help="comma-separated loss names, or 'all' (every flow-map loss)")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--steps", type=int, default=2000, help="training steps of every run (same budget for all)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds; every run is repeated per seed")
    p.add_argument("--all-seeds-for", default="all",
                   help="'all' (every loss on every seed) or 'best:K' (every loss on the first seed, then the K losses "
                        "per data set with the lowest 1-step W2 there on the other seeds too; flow matching always "
                        "runs every seed)")
    p.add_argument("--all-seeds-also", default="",
                   help="comma-separated losses that run on every seed besides the best K of --all-seeds-for")
    p.add_argument("--ot", default="best:4", help="OT-coupled runs: 'all', 'none' or 'best:K' (cfm + the K best)")
    p.add_argument("--ot-seeds", default="all", choices=("all", "first"), help="seeds of the OT-coupled runs")
    p.add_argument("--n-eval", type=int, default=1000, help="samples for the exact W2 (and its noise floor)")
    p.add_argument("--floor-draws", type=int, default=10, help="pairs of data samples for the noise floor")
    p.add_argument("--leaders", type=int, default=6, help="losses per data set in the headline comparison")
    p.add_argument("--workers", type=int, default=2, help="training processes (one thread each)")
    p.add_argument("--cost-rounds", type=int, default=5, help="interleaved timing rounds (median is reported)")
    p.add_argument("--cost-repeats", type=int, default=10, help="timed steps per loss per round")
    p.add_argument("--no-cost", action="store_true", help="skip the cost and memory measurements")
    p.add_argument("--cost-only", action="store_true",
                   help="only measure cost and memory of the losses in --out (an existing results file) and add them")
    p.add_argument("--resume", action="store_true",
                   help="reuse the finished runs of an interrupted run with the same --out (its .partial files)")
    p.add_argument("--reuse", action="append", default=[], metavar="FILE[:LOSSES]",
                   help="a results file whose flow-map runs with the loss's default settings and the same steps count "
                        "as finished (reusable_runs), optionally only those of LOSSES (comma-separated); repeatable; "
                        "flow matching is trained again")
    p.add_argument("--time-gaps", action="store_true",
                   help="only tabulate each loss's training gaps t - s (its default batch sampler) and exit")
    p.add_argument("--out", default=str(RESULTS_PATH))
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.n_eval, args.cost_rounds, args.cost_repeats, args.seeds = 150, 200, 1, 2, "0"
        args.floor_draws = 3
        if args.losses == "all":
            args.losses = "meanflow,cd"
        if args.ot == "best:4":
            args.ot = "best:1"
        if args.out == str(RESULTS_PATH):
            args.out = str(Path("/tmp") / "fmlab_flowmaps_quick.json")
    if args.cost_only and args.no_cost:
        raise ValueError("--cost-only and --no-cost exclude each other")
    if args.all_seeds_for != "all":
        _best_k(args.all_seeds_for, "--all-seeds-for")
    if args.all_seeds_also:
        select_losses(args.all_seeds_also)  # unknown names fail here, before hours of training
    if args.ot not in ("all", "none"):
        _best_k(args.ot, "--ot")
    return args


def _best_k(spec: str, option: str) -> int:
    """'best:K' -> K (>= 1); a ValueError naming the option otherwise."""
    if not spec.startswith("best:") or not spec[5:].isdigit() or int(spec[5:]) < 1:
        raise ValueError(f"{option} must be 'best:K' with an integer K >= 1 (or as its help says), got {spec!r}")
    return int(spec[5:])


def parse_seeds(spec: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; distinct non-negative integers."""
    try:
        seeds = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {spec!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must list distinct non-negative integers, got {spec!r}")
    return seeds


def select_losses(spec: str) -> list[str]:
    names = flow_map_losses() if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        get_loss(name)  # ValueError listing the registered losses
    return [n for n in names if n != "cfm"]


def best_losses(records: list[dict[str, Any]], k: int) -> list[str]:
    """The k losses with the lowest mean (over data sets) rank of their mean (over seeds) 1-step W2 under
    independent coupling; losses that diverged on some seed rank last."""
    ranks: dict[str, list[int]] = {}
    rows = [r for r in summarise_runs(records) if r["coupling"] == "independent" and r["loss"] != "cfm"]
    for data in {r["data"] for r in rows}:
        ranked = sorted((r for r in rows if r["data"] == data), key=lambda r: _rank_key(r["w2"]["1"]))
        for i, r in enumerate(ranked):
            ranks.setdefault(r["loss"], []).append(i)
    return sorted(ranks, key=lambda n: statistics.mean(ranks[n]))[:k]


def _rank_key(stats: dict[str, Any]) -> tuple[int, float]:
    return (stats["n_diverged"] > 0, stats["mean"] if stats["n_diverged"] < stats["n"] else float("inf"))


def reusable_runs(earlier: dict[str, Any], steps: int | None = None, losses: list[str] | None = None
                  ) -> list[dict[str, Any]]:
    """The flow-map runs of an earlier results file (this benchmark's, or benchmarks/meanflow_weighting.py's) that
    this run would reproduce: not flow matching (its weights, the teachers, are not stored), among `losses` (None:
    all), trained with the loss's default settings (a record's loss_settings, if any, equal to the defaults) and
    `steps` training steps (None: any). Files written before --seeds held one seed (config 'seed')."""
    seed = earlier["config"].get("seed", 0)
    out = []
    for r in earlier["runs"]:
        if r["loss"] == "cfm" or (losses is not None and r["loss"] not in losses):
            continue
        defaults = get_loss(r["loss"]).defaults
        if any(defaults.get(k) != v for k, v in (r.get("loss_settings") or {}).items()):
            continue
        record = {"seed": seed, **{k: v for k, v in r.items() if k not in ("weighting", "loss_settings")}}
        if steps is None or record.get("steps", earlier["config"].get("steps")) == steps:
            out.append(record)
    return out


def parse_reuse(spec: str) -> tuple[Path, list[str] | None]:
    """--reuse FILE[:LOSSES] -> (path, loss names or None for all); the file must exist."""
    path, _, names = spec.partition(":")
    if not Path(path).exists():
        raise FileNotFoundError(f"--reuse: no results file {path}")
    return Path(path), select_losses(names) if names else None


class RunStore:
    """Finished runs of this invocation, appended to `<out>.partial.jsonl` (flow-matching states to
    `<out>.partial.pt`) as they finish, so that `--resume` can skip them after an interruption. `reuse`: a results
    file of an earlier run whose flow-map runs count as finished (flow matching is trained again: its weights, the
    teachers, are not in the file; runs are deterministic given the seed, so the earlier records are what this
    run would produce)."""

    def __init__(self, out: Path, resume: bool, reuse: list[tuple[Path, list[str] | None]] | None = None,
                 steps: int | None = None):
        self.records_path = out.with_suffix(".partial.jsonl")
        self.states_path = out.with_suffix(".partial.pt")
        self.done: dict[str, dict[str, Any]] = {}
        self.states: dict[str, Any] = {}
        for path, losses in reuse or []:
            runs = reusable_runs(json.loads(Path(path).read_text()), steps, losses)
            self.done.update({_key(r): r for r in runs})
            print(f"reusing {len(runs)} flow-map runs from {path}", flush=True)
        if resume and self.records_path.exists():
            self.states = torch.load(self.states_path) if self.states_path.exists() else {}
            for line in self.records_path.read_text().splitlines():
                record = json.loads(line)
                if record["loss"] == "cfm":
                    if _key(record) not in self.states:
                        continue  # a teacher without its weights: train it again
                    record["state"] = self.states[_key(record)]
                self.done[_key(record)] = record
            print(f"resuming: {len(self.done)} finished runs from {self.records_path}", flush=True)
        else:
            self.records_path.parent.mkdir(parents=True, exist_ok=True)
            self.records_path.write_text("")
            self.states_path.unlink(missing_ok=True)

    def add(self, record: dict[str, Any]) -> None:
        if "state" in record:
            self.states[_key(record)] = record["state"]
            torch.save(self.states, self.states_path)
        with self.records_path.open("a") as f:
            f.write(json.dumps({k: v for k, v in record.items() if k != "state"}) + "\n")

    def clear(self) -> None:
        self.records_path.unlink(missing_ok=True)
        self.states_path.unlink(missing_ok=True)


def _key(job: dict[str, Any]) -> str:
    return f"{job['loss']}/{job['data']}/{job['coupling']}/{job['seed']}"


def run_stored(jobs: list[dict[str, Any]], workers: int, store: RunStore | None) -> list[dict[str, Any]]:
    """run_jobs for the jobs `store` has not finished yet; records in the order of `jobs`."""
    if store is None:
        return run_jobs(jobs, workers)
    todo = [job for job in jobs if _key(job) not in store.done]
    for record in run_jobs(todo, workers, on_record=store.add):
        store.done[_key(record)] = record
    return [store.done[_key(job)] for job in jobs]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    command = "python benchmarks/flowmaps.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.cost_only:
        return add_costs(Path(args.out), args, command)
    if args.time_gaps:
        text = time_gap_table(select_losses(args.losses))  # fmlab.viz.loss_zoo
        path = RESULTS / "flowmaps_gaps.md"
        path.write_text(f"`{command}`\n\n{text}\n")
        print(text + f"\nwrote {path}")
        return {"time_gaps": text}
    losses = select_losses(args.losses)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    seeds = parse_seeds(args.seeds)
    started, load_start = time.time(), os.getloadavg()
    out = Path(args.out)
    store = RunStore(out, args.resume, [parse_reuse(spec) for spec in args.reuse], args.steps)
    base = {"steps": args.steps, "n_eval": args.n_eval}
    print(f"flow matching references ({len(datasets)} data sets x {len(seeds)} seeds) ...", flush=True)
    fm = run_stored([{**base, "loss": "cfm", "data": d, "coupling": "independent", "seed": s}
                     for s in seeds for d in datasets], args.workers, store)
    teachers = {(r["data"], "independent", r["seed"]): r["state"] for r in fm}
    first = seeds[:1] if args.all_seeds_for != "all" else seeds
    print(f"{len(losses)} flow-map losses x {len(datasets)} data sets x seeds {first}, independent coupling ...",
          flush=True)
    jobs = [{**base, "loss": n, "data": d, "coupling": "independent", "seed": s,
             "teacher": teachers[(d, "independent", s)]} for s in first for d in datasets for n in losses]
    runs = fm + run_stored(jobs, args.workers, store)
    leaders = _leaders(args.all_seeds_for, runs, datasets, losses)
    every_seed = None
    if leaders is not None:
        also = [n for n in select_losses(args.all_seeds_also) if n in losses] if args.all_seeds_also else []
        every_seed = {d: names + [n for n in also if n not in names] for d, names in leaders.items()}
        print(f"seeds {seeds[1:]} for the leading losses {leaders} and {also} ...", flush=True)
        jobs = [{**base, "loss": n, "data": d, "coupling": "independent", "seed": s,
                 "teacher": teachers[(d, "independent", s)]} for s in seeds[1:] for d in datasets
                for n in every_seed[d]]
        runs += run_stored(jobs, args.workers, store)
    ot_losses = _ot_selection(args.ot, [r for r in runs if r["seed"] == seeds[0]], losses)
    if ot_losses is not None:
        ot_seeds = seeds if args.ot_seeds == "all" else seeds[:1]
        print(f"OT coupling, seeds {ot_seeds}: cfm + {ot_losses} ...", flush=True)
        fm_ot = run_stored([{**base, "loss": "cfm", "data": d, "coupling": "ot", "seed": s}
                            for s in ot_seeds for d in datasets], args.workers, store)
        teachers.update({(r["data"], "ot", r["seed"]): r["state"] for r in fm_ot})
        jobs = [{**base, "loss": n, "data": d, "coupling": "ot", "seed": s, "teacher": teachers[(d, "ot", s)]}
                for s in ot_seeds for d in datasets for n in ot_losses]
        runs += fm_ot + run_stored(jobs, args.workers, store)
    runs = [{k: v for k, v in r.items() if k != "state"} for r in runs]
    floors = {}
    for d in datasets:
        mean, std = noise_floor(partial(sample_toy, d), args.n_eval, "w2", repeats=args.floor_draws)
        floors[d] = {"mean": mean, "std": std, "draws": args.floor_draws}
    result: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command, "wall_s": None,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpu_threads_per_run": 1, "workers": args.workers, "cpu_count": os.cpu_count(),
                    "loadavg_start": [round(x, 2) for x in load_start]},
        "config": {**ZOO_MODEL, "steps": args.steps, "n_eval": args.n_eval, "eval_steps": list(EVAL_STEPS),
                   "fm_steps": FM_STEPS, "datasets": datasets, "seeds": seeds,
                   "all_seeds_for": args.all_seeds_for, "leaders": leaders, "every_seed": every_seed,
                   "ot": args.ot, "ot_seeds": args.ot_seeds},
        "noise_floor": floors, "runs": runs, "summary": summarise_runs(runs),
        "losses": {n: {"name": DISPLAY_NAMES.get(n, n), "rule": rule_of(n), "setting": get_loss(n).setting,
                       "paper": get_loss(n).paper, "sampler": sampler_of(n), "survey_cost": SURVEY_COST.get(n),
                       "paper_memory_rel_fm": PAPER_MEMORY.get(n)} for n in ["cfm"] + losses},
    }
    if not args.no_cost:
        teacher = zoo_model("cfm")
        teacher.load_state_dict(teachers[(datasets[0], "independent", seeds[0])])
        _measure_into(result, ["cfm"] + losses, teacher, args, command)
    result["target"] = target_check(result)
    result["headline"] = headline(result, args.leaders)
    result["wall_s"] = round(time.time() - started, 1)
    result["train_cpu_s_total"] = round(sum(r.get("train_cpu_s", 0.0) for r in runs), 1)
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(result, out)
    store.clear()
    return result


def _write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')} ({result['wall_s']:.0f} s of training runs)")


def _measure_into(result: dict[str, Any], names: list[str], teacher: torch.nn.Module, args: argparse.Namespace,
                  command: str) -> None:
    print("cost and memory (one thread, interleaved rounds) ...", flush=True)
    started, load_start = time.time(), os.getloadavg()
    costs = measure_costs(names, teacher, ZOO_MODEL["batch_size"], args.cost_rounds, args.cost_repeats)
    mem = {n: peak_memory(n, teacher, ZOO_MODEL["batch_size"]) for n in names}
    for n in names:
        result["losses"][n].update(step_ms=round(costs[n]["step_ms"], 3), fwd_eq=round(costs[n]["fwd_eq"], 2),
                                   peak_mem_kb=round(mem[n] / 1024, 1), mem_rel_fm=round(mem[n] / mem["cfm"], 2))
    result["forward_ms"] = round(costs["_forward_ms"]["step_ms"], 4)
    result["jvp_breakdown"] = jvp_breakdown(ZOO_MODEL["batch_size"], args.cost_repeats, args.cost_rounds)
    # the same passes where arithmetic, not per-operation overhead, dominates: a wide network, a big batch
    result["jvp_breakdown_wide"] = jvp_breakdown(2048, 1, min(3, args.cost_rounds), hidden=1024, depth=3)
    result["cost"] = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command,
                      "rounds": args.cost_rounds, "repeats": args.cost_repeats, "losses": names,
                      "wall_s": round(time.time() - started, 1), "loadavg_start": [round(x, 2) for x in load_start],
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()]}


def add_costs(out: Path, args: argparse.Namespace, command: str) -> dict[str, Any]:
    """--cost-only: measure cost and memory of every loss in the results file `out` (or of --losses) in this
    process, one thread, and write them into it. The networks are untrained (a step's cost does not depend on the
    weights); the teacher of distillation losses is an untrained flow-matching model of the zoo's size."""
    if not out.exists():
        raise FileNotFoundError(f"--cost-only needs an existing results file, no {out}: run without it first")
    result = json.loads(out.read_text())
    names = list(result["losses"]) if args.losses == "all" else ["cfm"] + select_losses(args.losses)
    missing = [n for n in names if n not in result["losses"]]
    if missing:
        raise ValueError(f"--losses names losses not in {out}: {missing}")
    torch.manual_seed(0)
    teacher = zoo_model("cfm").requires_grad_(False)
    _measure_into(result, names, teacher, args, command)
    _write(result, out)
    return result


def _leaders(spec: str, runs: list[dict[str, Any]], datasets: list[str], losses: list[str]
             ) -> dict[str, list[str]] | None:
    """--all-seeds-for: None for 'all'; for 'best:K', per data set the K losses with the lowest 1-step W2 on the
    first seed (the runs so far), which then run on the other seeds too."""
    if spec == "all":
        return None
    k = _best_k(spec, "--all-seeds-for")
    out = {}
    for d in datasets:
        rows = [r for r in runs if r["data"] == d and r["loss"] in losses and r["w2"]["1"] <= DIVERGED_W2]
        out[d] = [r["loss"] for r in sorted(rows, key=lambda r: r["w2"]["1"])[:k]]
    return out


def _ot_selection(spec: str, runs: list[dict[str, Any]], losses: list[str]) -> list[str] | None:
    if spec == "none":
        return None
    if spec == "all":
        return list(losses)
    return best_losses([r for r in runs if r["coupling"] == "independent"], _best_k(spec, "--ot"))


# --- comparisons over seeds -----------------------------------------------------------------------------------------

def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """a - b for two mean +- std summaries over a["n"] and b["n"] independent draws: the difference, its standard
    error sqrt(sa^2 / na + sb^2 / nb), and a verdict: 'lower' / 'higher' when |difference| > 2 standard errors,
    'within noise' otherwise, 'one seed' when either side has a single draw (no spread to judge by)."""
    na, nb = a["n"] - a.get("n_diverged", 0), b["n"] - b.get("n_diverged", 0)
    diff = a["mean"] - b["mean"]
    if na < 2 or nb < 2:
        return {"diff": diff, "se": None, "verdict": "one seed"}
    se = math.sqrt(a["std"] ** 2 / na + b["std"] ** 2 / nb)
    verdict = "within noise" if abs(diff) <= 2 * se else ("lower" if diff < 0 else "higher")
    return {"diff": diff, "se": se, "verdict": verdict}


def _summary(result: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["loss"], r["data"], r["coupling"]): r for r in result["summary"]}


def _floor_stats(result: dict[str, Any], data: str) -> dict[str, Any]:
    f = result["noise_floor"][data]
    return {"mean": f["mean"], "std": f["std"], "n": f.get("draws", 1), "n_diverged": 0}


def target_check(result: dict[str, Any]) -> dict[str, Any]:
    """Per data set and coupling: the flow-map loss with the lowest mean 1-step W2 (among those run on the most
    seeds) against 100-step flow matching (target 1.2x) and the noise floor, and the selection effect: per seed,
    the loss that wins on that seed alone, its W2 there and its mean W2 over the other seeds (how much picking the
    best of many on one seed flatters it)."""
    rows = _summary(result)
    out: dict[str, Any] = {}
    for data in result["config"]["datasets"]:
        for coupling in ("independent", "ot"):
            fm = rows.get(("cfm", data, coupling))
            maps = _most_seeds([r for (loss, d, c), r in rows.items() if loss != "cfm" and (d, c) == (data, coupling)
                                and r["w2"]["1"]["n_diverged"] == 0])
            if not fm or not maps:
                continue
            best = min(maps, key=lambda r: r["w2"]["1"]["mean"])
            b, ref = best["w2"]["1"], fm["w2"][str(FM_STEPS)]
            out[f"{data}/{coupling}"] = {
                "best_loss": best["loss"], "best_w2_1": b["mean"], "best_w2_1_std": b["std"], "n_seeds": b["n"],
                "fm_w2_100": ref["mean"], "fm_w2_100_std": ref["std"], "fm_w2_1": fm["w2"]["1"]["mean"],
                "ratio": b["mean"] / ref["mean"], "met_1.2x": b["mean"] <= 1.2 * ref["mean"],
                "vs_fm_100": compare(b, ref), "vs_floor": compare(b, _floor_stats(result, data)),
                "selection": _selection(result["runs"], data, coupling)}
    return out


def _most_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary rows run on the most seeds (with --all-seeds-for best:K, the leading losses)."""
    most = max((r["w2"]["1"]["n"] for r in rows), default=0)
    return [r for r in rows if r["w2"]["1"]["n"] == most]


def _selection(runs: list[dict[str, Any]], data: str, coupling: str) -> list[dict[str, Any]]:
    rows = [r for r in runs if r["data"] == data and r["coupling"] == coupling and r["loss"] != "cfm"]
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        on_seed = [r for r in rows if r["seed"] == seed and r["w2"]["1"] <= DIVERGED_W2]
        if not on_seed:
            continue
        win = min(on_seed, key=lambda r: r["w2"]["1"])
        others = [r["w2"]["1"] for r in rows if r["loss"] == win["loss"] and r["seed"] != seed]
        out.append({"seed": seed, "best_loss": win["loss"], "w2_1": win["w2"]["1"], "n_losses": len(on_seed),
                    "w2_1_other_seeds": statistics.mean(others) if others else None})
    return out


def headline(result: dict[str, Any], k: int) -> dict[str, list[dict[str, Any]]]:
    """Per data set (independent coupling): the k flow-map losses with the lowest mean 1-step W2 (among those run on
    the most seeds), each with its
    mean +- std, and its difference to 100-step flow matching, to the best loss and to the noise floor (compare)."""
    rows = _summary(result)
    out: dict[str, list[dict[str, Any]]] = {}
    for data in result["config"]["datasets"]:
        fm = rows.get(("cfm", data, "independent"))
        maps = sorted(_most_seeds([r for (loss, d, c), r in rows.items() if loss != "cfm"
                                   and (d, c) == (data, "independent") and r["w2"]["1"]["n_diverged"] == 0]),
                      key=lambda r: r["w2"]["1"]["mean"])[:k]
        if not fm or not maps:
            continue
        ref, floor = fm["w2"][str(FM_STEPS)], _floor_stats(result, data)
        out[data] = [{"loss": r["loss"], "w2_1": r["w2"]["1"], "ratio_fm_100": r["w2"]["1"]["mean"] / ref["mean"],
                      "vs_fm_100": compare(r["w2"]["1"], ref), "vs_best": compare(r["w2"]["1"], maps[0]["w2"]["1"]),
                      "vs_floor": compare(r["w2"]["1"], floor)} for r in maps]
    return out


# --- the Markdown rendering -----------------------------------------------------------------------------------------

def _cell(result: dict[str, Any], loss: str, data: str, coupling: str, k: int) -> str:
    row = _summary(result).get((loss, data, coupling))
    if row is None:
        return "-"
    if one_nfe(loss) and k != 1:
        return "n/a"
    text = format_w2_stats(row["w2"].get(str(k)))
    return text + (" (1 NFE)" if one_nfe(loss) else "")


def _pm(stats: dict[str, Any]) -> str:
    return f"{stats['mean']:.3f} +- {stats['std']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """The method table (rule, setting, survey cost, our cost and memory), the W2 table (mean +- std over seeds at
    1, 2, 4, 8 steps per data set and coupling), the headline comparison and the target lines."""
    cfg, datasets = result["config"], result["config"]["datasets"]
    seeds = cfg.get("seeds", [cfg.get("seed", 0)])
    fm = _summary(result)
    floor = ", ".join(f"{d} {_pm(result['noise_floor'][d])} ({result['noise_floor'][d].get('draws', 3)} draws)"
                      for d in datasets)
    refs = ", ".join(f"{d} {_pm(fm[('cfm', d, 'independent')]['w2'][str(FM_STEPS)])}" for d in datasets
                     if ('cfm', d, 'independent') in fm)
    lines = [f"W2 (exact, n = {cfg['n_eval']}) after {cfg['steps']} training steps, mean +- std over seeds "
             f"{', '.join(map(str, seeds))} (held-out data and sampling noise fixed: seeds differ by training); "
             f"noise floor (W2 between two data samples of n = {cfg['n_eval']}) {floor}; flow matching with "
             f"{FM_STEPS} Euler steps: {refs}. PID and FreeFlow sample in one jump from the noise (1 NFE): more steps "
             "give the same sample, so their 2/4/8-step cells are n/a.", ""]
    lines += ["| method | rule | setting | sampler | cost (survey) | cost (ours) | memory vs FM |", "|" + "---|" * 7]
    for info in result["losses"].values():
        survey = "-" if info.get("survey_cost") is None else f"{info['survey_cost']:g}"
        ours = f"{info['fwd_eq']:.1f}" if "fwd_eq" in info else "-"
        mem = f"{info['mem_rel_fm']:.2f}" if "mem_rel_fm" in info else "-"
        lines.append(f"| {info['name']} | {info['rule']} | {info['setting']} | {info['sampler']} | {survey} | {ours} "
                     f"| {mem} |")
    lines.append("")
    head = "| method |" + "".join(f" {d} {k} |" for d in datasets for k in EVAL_STEPS)
    lines += [head, "|" + "---|" * (1 + len(datasets) * len(EVAL_STEPS))]
    for coupling in ("independent", "ot"):
        for n, info in result["losses"].items():
            if not any(r["loss"] == n and r["coupling"] == coupling for r in result["runs"]):
                continue
            row = f"| {info['name']}{' + OT' if coupling == 'ot' else ''} |"
            row += "".join(f" {_cell(result, n, d, coupling, k)} |" for d in datasets for k in EVAL_STEPS)
            lines.append(row)
    lines.append("")
    for data, rows in result.get("headline", {}).items():
        ref = fm[("cfm", data, "independent")]["w2"][str(FM_STEPS)]
        lines += [f"Leading losses on {data} at 1 step (independent coupling), against flow matching at {FM_STEPS} "
                  f"steps ({_pm(ref)}) and the noise floor ({_pm(result['noise_floor'][data])}); a difference is "
                  "resolved when it exceeds 2 standard errors (sqrt(sd_a^2 / n_a + sd_b^2 / n_b)):", "",
                  "| loss | W2 at 1 step | / FM 100 steps | - FM 100 steps | - best | - floor |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {DISPLAY_NAMES.get(r['loss'], r['loss'])} | {_pm(r['w2_1'])} | {r['ratio_fm_100']:.2f} | "
                         f"{_diff(r['vs_fm_100'])} | {_diff(r['vs_best'])} | {_diff(r['vs_floor'])} |")
        lines.append("")
    for key, t in result.get("target", {}).items():
        sel = "; ".join(f"seed {s['seed']}: {DISPLAY_NAMES.get(s['best_loss'], s['best_loss'])} {s['w2_1']:.3f}"
                        + ("" if s["w2_1_other_seeds"] is None else f" (its other seeds {s['w2_1_other_seeds']:.3f})")
                        for s in t.get("selection", []))
        lines.append(f"- {key}: best mean 1-step {DISPLAY_NAMES.get(t['best_loss'], t['best_loss'])} W2 "
                     f"{t['best_w2_1']:.3f} +- {t['best_w2_1_std']:.3f} vs flow matching {FM_STEPS} steps "
                     f"{t['fm_w2_100']:.3f} +- {t['fm_w2_100_std']:.3f}: ratio {t['ratio']:.2f} "
                     f"({'meets' if t['met_1.2x'] else 'misses'} 1.2x; difference {_diff(t['vs_fm_100'])}). "
                     f"Best on one seed alone: {sel}")
    if "jvp_breakdown" in result:
        lines += ["", "Forward-pass equivalents (a forward with autograd on = 1) of the passes a loss combines, on the "
                  "zoo's network (3 x 128, batch 256): "
                  + "; ".join(f"{k} {v:.1f}" for k, v in result["jvp_breakdown"].items())]
    if "jvp_breakdown_wide" in result:
        lines += ["", "The same on a wide network (3 x 1024, batch 2048), where arithmetic dominates: "
                  + "; ".join(f"{k} {v:.1f}" for k, v in result["jvp_breakdown_wide"].items())]
    return "\n".join(lines) + "\n"


def _diff(c: dict[str, Any]) -> str:
    if c["se"] is None:
        return f"{c['diff']:+.3f} (one seed)"
    return f"{c['diff']:+.3f} +- {c['se']:.3f} ({c['verdict']})"


if __name__ == "__main__":
    main()
