"""Every flow-map loss with the same MLP, optimiser, data and budget: quality in 1, 2, 4, 8 steps, cost and memory.

    python benchmarks/flowmaps.py                 # the committed table (about 15 minutes on 2 cores, 2 workers)
    python benchmarks/flowmaps.py --quick         # a smoke test (a minute): few steps, 2 losses, small samples
    python benchmarks/flowmaps.py --losses cfm,meanflow,lsd --datasets moons --steps 2000 --out /tmp/x.json

What it does (time runs from noise at t = 0 to data at t = 1):
1. trains flow matching (loss 'cfm', independent coupling) on each data set (moons, checkerboard): the reference,
   sampled with 100 Euler steps, and the teacher of every distillation loss;
2. trains every registered flow-map loss with the same model (fmlab.viz.loss_zoo.zoo_model: MLP 3 x 128, time
   frequencies up to 10, AdamW lr 2e-3, batch 256, EMA), the same number of steps and the same data, with
   independent coupling; samples the EMA model in 1, 2, 4 and 8 steps the way the loss trained it (flow-map jumps,
   consistency re-noising, or from the noise only) and measures the exact W2 against held-out data, beside the
   noise floor (W2 between two data samples of the same size);
3. repeats flow matching and the best losses with minibatch-OT coupling (`--ot`), teachers trained with OT too;
4. measures, in one process and one thread, each loss's training-step time (batch + loss + backward) divided by one
   forward pass of the same network on the same batch (forward-pass equivalents, beside the survey's estimate), the
   peak memory allocated during a step relative to flow matching (torch profiler), and a breakdown of the passes a
   JVP loss pays for (forward, backward, JVP, backward through a JVP).

Results: benchmarks/results/flowmaps.json (read by lab 09) and a Markdown table benchmarks/results/flowmaps.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
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
    SURVEY_COST,
    ZOO_MODEL,
    flow_map_losses,
    format_w2,
    generate,
    needs_teacher,
    rule_of,
    sampler_of,
    zoo_config,
    zoo_model,
)

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
    """Train one (loss, data, coupling) run and measure W2 at each step count; returns a plain record."""
    from fmlab.train import Trainer

    torch.set_num_threads(1)
    loss, data, coupling = job["loss"], job["data"], job["coupling"]
    config = zoo_config(loss, data=data, coupling=coupling, steps=job["steps"], seed=job["seed"],
                        log_every=max(1, job["steps"] // 10))
    runtime = {}
    if needs_teacher(loss):
        teacher = zoo_model("cfm")
        teacher.load_state_dict(job["teacher"])
        runtime["teacher"] = teacher.requires_grad_(False).eval()
    torch.manual_seed(job["seed"])
    trainer = Trainer(config, model=zoo_model(loss), runtime_settings=runtime)
    start = time.perf_counter()
    trainer.fit(progress=False)
    train_s = time.perf_counter() - start
    model = trainer.ema.eval()
    x0, x1 = _eval_sets(data, job["n_eval"])
    steps = list(EVAL_STEPS) + ([FM_STEPS] if loss == "cfm" else [])
    w2 = {}
    for k in steps:
        samples = generate(model, loss, x0, k, generator=torch.Generator().manual_seed(30_000 + k))
        w2[str(k)] = wasserstein(samples, x1) if bool(torch.isfinite(samples).all()) else float("nan")
    record = {"loss": loss, "data": data, "coupling": coupling, "steps": job["steps"], "w2": w2,
              "train_s": round(train_s, 2), "final_loss": trainer.log[-1]["loss"], "sampler": sampler_of(loss)}
    if loss == "cfm":
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


def run_jobs(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """Run jobs in `workers` processes (1: in this process), printing one line per finished run; a job that fails
    in a worker is run again in this process."""
    if workers <= 1:
        return [_report(train_and_eval(job)) for job in jobs]
    import multiprocessing as mp

    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_warm_up) as pool:
        futures = [pool.submit(train_and_eval, job) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            try:
                record = future.result()
            except Exception as err:
                print(f"  {job['loss']} on {job['data']} failed in a worker ({type(err).__name__}); rerunning here",
                      flush=True)
                record = train_and_eval(job)
            results.append(_report(record))
    return results


def _report(record: dict[str, Any]) -> dict[str, Any]:
    w2 = "  ".join(f"{k}:{v:.3f}" for k, v in record["w2"].items())
    print(f"  {record['loss']:15s} {record['data']:12s} {record['coupling']:11s} W2 {w2}   ({record['train_s']:.0f} s)",
          flush=True)
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
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


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
    """Forward-pass equivalents of the passes a flow-map loss combines, on a network of the given size."""
    from torch.func import jvp

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
    p.add_argument("--quick", action="store_true", help="smoke test: 150 steps, cfm + 2 losses, n_eval 200")
    p.add_argument("--losses", default="all", help="comma-separated loss names, or 'all' (every flow-map loss)")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--steps", type=int, default=2000, help="training steps of every run (same budget for all)")
    p.add_argument("--ot", default="best:4", help="OT-coupled runs: 'all', 'none' or 'best:K' (cfm + the K best)")
    p.add_argument("--n-eval", type=int, default=1000, help="samples for the exact W2 (and its noise floor)")
    p.add_argument("--workers", type=int, default=2, help="training processes (one thread each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost-rounds", type=int, default=5, help="interleaved timing rounds (median is reported)")
    p.add_argument("--cost-repeats", type=int, default=10, help="timed steps per loss per round")
    p.add_argument("--no-cost", action="store_true", help="skip the cost and memory measurements")
    p.add_argument("--out", default=str(RESULTS / "flowmaps.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.n_eval, args.cost_rounds, args.cost_repeats = 150, 200, 1, 2
        if args.losses == "all":
            args.losses = "meanflow,cd"
        if args.ot == "best:4":
            args.ot = "best:1"
        if args.out == str(RESULTS / "flowmaps.json"):
            args.out = str(Path("/tmp") / "fmlab_flowmaps_quick.json")
    return args


def select_losses(spec: str) -> list[str]:
    names = flow_map_losses() if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        get_loss(name)  # ValueError listing the registered losses
    return [n for n in names if n != "cfm"]


def best_losses(records: list[dict[str, Any]], k: int) -> list[str]:
    """The k losses with the lowest mean (over data sets) rank of their 1-step W2 under independent coupling."""
    ranks: dict[str, list[int]] = {}
    for data in {r["data"] for r in records}:
        rows = sorted((r for r in records if r["data"] == data and r["loss"] != "cfm"), key=lambda r: r["w2"]["1"])
        for i, r in enumerate(rows):
            ranks.setdefault(r["loss"], []).append(i)
    return sorted(ranks, key=lambda n: statistics.mean(ranks[n]))[:k]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    losses = select_losses(args.losses)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    started = time.time()
    base = {"steps": args.steps, "seed": args.seed, "n_eval": args.n_eval}
    print(f"flow matching references ({len(datasets)} data sets) ...", flush=True)
    fm = run_jobs([{**base, "loss": "cfm", "data": d, "coupling": "independent"} for d in datasets], args.workers)
    teachers = {(r["data"], "independent"): r.pop("state") for r in fm}
    print(f"{len(losses)} flow-map losses x {len(datasets)} data sets, independent coupling ...", flush=True)
    jobs = [{**base, "loss": n, "data": d, "coupling": "independent", "teacher": teachers[(d, "independent")]}
            for d in datasets for n in losses]
    runs = fm + run_jobs(jobs, args.workers)
    ot_losses = _ot_selection(args.ot, runs, losses)
    if ot_losses is not None:
        print(f"OT coupling: cfm + {ot_losses} ...", flush=True)
        fm_ot = run_jobs([{**base, "loss": "cfm", "data": d, "coupling": "ot"} for d in datasets], args.workers)
        teachers.update({(r["data"], "ot"): r.pop("state") for r in fm_ot})
        jobs = [{**base, "loss": n, "data": d, "coupling": "ot", "teacher": teachers[(d, "ot")]}
                for d in datasets for n in ot_losses]
        runs += fm_ot + run_jobs(jobs, args.workers)
    floors = {d: dict(zip(("mean", "std"), noise_floor(partial(sample_toy, d), args.n_eval, "w2", repeats=3),
                          strict=True)) for d in datasets}
    result: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": "python benchmarks/flowmaps.py "
        + " ".join(argv if argv is not None else sys.argv[1:]), "wall_s": None,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpu_threads_per_run": 1, "workers": args.workers},
        "config": {**ZOO_MODEL, "steps": args.steps, "n_eval": args.n_eval, "eval_steps": list(EVAL_STEPS),
                   "fm_steps": FM_STEPS, "datasets": datasets, "seed": args.seed},
        "noise_floor": floors, "runs": runs,
        "losses": {n: {"name": DISPLAY_NAMES.get(n, n), "rule": rule_of(n), "setting": get_loss(n).setting,
                       "paper": get_loss(n).paper, "sampler": sampler_of(n), "survey_cost": SURVEY_COST.get(n),
                       "paper_memory_rel_fm": PAPER_MEMORY.get(n)} for n in ["cfm"] + losses},
    }
    if not args.no_cost:
        print("cost and memory (one thread, interleaved rounds) ...", flush=True)
        teacher = zoo_model("cfm")
        teacher.load_state_dict(teachers[(datasets[0], "independent")])
        teacher.requires_grad_(False)
        names = ["cfm"] + losses
        costs = measure_costs(names, teacher, ZOO_MODEL["batch_size"], args.cost_rounds, args.cost_repeats)
        mem = {n: peak_memory(n, teacher, ZOO_MODEL["batch_size"]) for n in names}
        for n in names:
            result["losses"][n].update(step_ms=round(costs[n]["step_ms"], 3), fwd_eq=round(costs[n]["fwd_eq"], 2),
                                       peak_mem_kb=round(mem[n] / 1024, 1), mem_rel_fm=round(mem[n] / mem["cfm"], 2))
        result["forward_ms"] = round(costs["_forward_ms"]["step_ms"], 4)
        result["jvp_breakdown"] = jvp_breakdown(ZOO_MODEL["batch_size"], args.cost_repeats, args.cost_rounds)
        # the same passes where arithmetic, not per-operation overhead, dominates: a wide network, a big batch
        result["jvp_breakdown_wide"] = jvp_breakdown(2048, 1, min(3, args.cost_rounds),
                                                     hidden=1024, depth=3)
    result["target"] = target_check(result)
    result["wall_s"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')} in {result['wall_s']:.0f} s")
    return result


def _ot_selection(spec: str, runs: list[dict[str, Any]], losses: list[str]) -> list[str] | None:
    if spec == "none":
        return None
    if spec == "all":
        return list(losses)
    if spec.startswith("best:"):
        return best_losses([r for r in runs if r["coupling"] == "independent"], int(spec.split(":")[1]))
    raise ValueError(f"--ot must be 'all', 'none' or 'best:K', got {spec!r}")


def target_check(result: dict[str, Any]) -> dict[str, Any]:
    """Per data set and coupling: the best flow-map loss's 1-step W2 against 100-step flow matching (target 1.2x)."""
    out: dict[str, Any] = {}
    for data in result["config"]["datasets"]:
        for coupling in ("independent", "ot"):
            rows = [r for r in result["runs"] if r["data"] == data and r["coupling"] == coupling]
            fm = [r for r in rows if r["loss"] == "cfm"]
            maps = [r for r in rows if r["loss"] != "cfm" and format_w2(r["w2"]["1"]) != "diverged"]
            if not fm or not maps:
                continue
            best = min(maps, key=lambda r: r["w2"]["1"])
            ref = fm[0]["w2"][str(FM_STEPS)]
            out[f"{data}/{coupling}"] = {"best_loss": best["loss"], "best_w2_1": best["w2"]["1"], "fm_w2_100": ref,
                                         "fm_w2_1": fm[0]["w2"]["1"], "ratio": best["w2"]["1"] / ref,
                                         "met_1.2x": best["w2"]["1"] <= 1.2 * ref}
    return out


def markdown(result: dict[str, Any]) -> str:
    """The landscape table: rule, setting, survey cost, our cost and memory, W2 per data set and step count."""
    datasets = result["config"]["datasets"]
    lines = [f"W2 (exact, n = {result['config']['n_eval']}) after {result['config']['steps']} training steps; noise "
             "floor " + ", ".join(f"{d} {result['noise_floor'][d]['mean']:.3f}" for d in datasets)
             + f"; flow matching with {FM_STEPS} Euler steps: "
             + ", ".join(f"{d} {_w2(result, 'cfm', d, 'independent', str(FM_STEPS)):.3f}" for d in datasets), ""]
    head = "| method | rule | setting | cost (survey) | cost (ours) | memory vs FM |"
    head += "".join(f" {d} W2 1/2/4/8 |" for d in datasets)
    lines += [head, "|" + "---|" * (6 + len(datasets))]
    for coupling in ("independent", "ot"):
        names = [n for n in result["losses"] if any(r["loss"] == n and r["coupling"] == coupling
                                                     for r in result["runs"])]
        for n in names:
            info = result["losses"][n]
            label = info["name"] + (" + OT" if coupling == "ot" else "")
            survey = "-" if info.get("survey_cost") is None else f"{info['survey_cost']:g}"
            ours = f"{info['fwd_eq']:.1f}" if "fwd_eq" in info else "-"
            mem = f"{info['mem_rel_fm']:.2f}" if "mem_rel_fm" in info else "-"
            row = f"| {label} | {info['rule']} | {info['setting']} | {survey} | {ours} | {mem} |"
            for d in datasets:
                row += " " + " / ".join(format_w2(_w2(result, n, d, coupling, str(k))) for k in EVAL_STEPS) + " |"
            lines.append(row)
    lines.append("")
    for key, t in result.get("target", {}).items():
        lines.append(f"- {key}: best 1-step {DISPLAY_NAMES.get(t['best_loss'], t['best_loss'])} W2 {t['best_w2_1']:.3f}"
                     f" vs flow matching {FM_STEPS} steps {t['fm_w2_100']:.3f}: ratio {t['ratio']:.2f} "
                     f"({'meets' if t['met_1.2x'] else 'misses'} 1.2x)")
    if "jvp_breakdown" in result:
        lines += ["", "Forward-pass equivalents (a forward with autograd on = 1) of the passes a loss combines, on the "
                  "zoo's network (3 x 128, batch 256): "
                  + "; ".join(f"{k} {v:.1f}" for k, v in result["jvp_breakdown"].items())]
    if "jvp_breakdown_wide" in result:
        lines += ["", "The same on a wide network (3 x 1024, batch 2048), where arithmetic dominates: "
                  + "; ".join(f"{k} {v:.1f}" for k, v in result["jvp_breakdown_wide"].items())]
    return "\n".join(lines) + "\n"


def _w2(result: dict[str, Any], loss: str, data: str, coupling: str, k: str) -> float:
    for r in result["runs"]:
        if r["loss"] == loss and r["data"] == data and r["coupling"] == coupling:
            return r["w2"].get(k, float("nan"))
    return float("nan")


if __name__ == "__main__":
    main()
