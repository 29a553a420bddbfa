"""Training-step throughput of fmlab's CFM and OT-CFM, measured side by side in one run.

1. fmlab's Trainer step (independent coupling) against a hand-written plain-PyTorch loop doing the same
   work (same MLP, batch, data sampler, loss, Adam, clipping, LR schedule, EMA): the abstraction's cost.
2. fmlab's OT-CFM at batch 256, with the pairing solved in sequence (prefetch=0) and ahead on a worker
   thread (fmlab.prefetch, the default), against torchcfm's ExactOptimalTransportConditionalFlowMatcher
   with the same model and optimiser, and OT-CFM's cost relative to independent CFM.
3. `--scaling`: OT-CFM / CFM step time against the batch size and the number of pairing workers.
4. `--solvers`: CPU time of the two exact solvers (POT's network simplex, SciPy's assignment) against the
   batch size, and whether they return the same permutation.
5. `--gil`: whether a solve on a worker thread lets the main thread run (it does if the solver releases
   Python's GIL): the main thread's CPU time while a worker solves, over the solve's wall time.
6. `--sinkhorn`: the entropic coupling's bias against exact OT as reg shrinks (fmlab.sinkhorn.sinkhorn_bias on
   one moons batch and its noise), and the CPU time of POT's Sinkhorn against the log-domain torch one.

Methods are timed in interleaved rounds (A, B, C, A, B, C, ...) so that load from other processes hits
all of them alike; we report the median step time over rounds and the ratios. Throughput with a pairing
worker is wall-clock time on two cores (the model on one, the solve on the other): on a machine busy with
other jobs the second core is not free, so check `uptime` first.

    python benchmarks/cfm.py                 # ~2 minutes on 2 cores
    python benchmarks/cfm.py --rounds 3      # quicker, noisier
    python benchmarks/cfm.py --no-throughput --scaling --solvers --gil --sinkhorn

torchcfm is optional: `pip install --no-deps torchcfm` (its own dependencies pull torchvision and with
it a CUDA torch; the matcher we time needs only torch, numpy and POT). Without it that row is skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment

from fmlab.couplings import cost_matrix
from fmlab.data import sample_toy
from fmlab.train import TrainConfig, Trainer, ema_decay_at, ema_update, lr_schedule


def plain_loop(batch: int, hidden: int, depth: int, threads: int, seed: int = 0) -> Callable[[], None]:
    """The same step written by hand: no registry, no coupling layer, no Batch."""
    trainer = Trainer(TrainConfig(steps=10**6, batch_size=batch, hidden=hidden, depth=depth, seed=seed,
                                  threads=threads))
    model, ema, opt = trainer.model, trainer.ema, trainer.optimizer  # same module and Adam
    g = torch.Generator().manual_seed(seed)
    step = [0]

    def run() -> None:
        x1 = sample_toy("moons", batch, g)
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(batch, generator=g)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        loss = (model(x_t, t) - (x1 - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step[0], 1e-3, 200, 10**6)
        opt.step()
        ema_update(ema, model, ema_decay_at(step[0], 0.999))
        step[0] += 1

    return run


def fmlab_step(batch: int, hidden: int, depth: int, coupling: str, threads: int, prefetch: int | None = None,
               workers: int = 1) -> Callable[[], None]:
    """fmlab's Trainer step; prefetch=None is the default (pairings solved ahead on `workers` threads)."""
    trainer = Trainer(TrainConfig(steps=10**6, batch_size=batch, hidden=hidden, depth=depth, coupling=coupling,
                                  threads=threads), prefetch=prefetch, coupling_workers=workers)

    def step() -> None:
        trainer.train_step()

    step.drain = trainer.batches.source.wait  # type: ignore[attr-defined]
    return step


def torchcfm_step(batch: int, hidden: int, depth: int, threads: int) -> Callable[[], None] | None:
    try:
        from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher
    except ImportError:
        return None
    trainer = Trainer(TrainConfig(steps=10**6, batch_size=batch, hidden=hidden, depth=depth, threads=threads))
    model, opt = trainer.model, trainer.optimizer
    matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    g = torch.Generator().manual_seed(0)

    def run() -> None:
        x1 = sample_toy("moons", batch, g)
        x0 = torch.randn(x1.shape, generator=g)
        t, x_t, u_t = matcher.sample_location_and_conditional_flow(x0, x1)
        loss = (model(x_t, t) - u_t).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def time_steps(fn: Callable[[], None], n: int) -> tuple[float, float, float]:
    """(wall-clock, main-thread CPU, whole-process CPU) seconds per step over n steps. A prefetching step's pending
    pairings are solved before the CPU clocks stop (`drain`, outside the wall-clock time): the solves of this round
    count here, and none is left to run on worker threads while the next method is timed."""
    wall, main, proc = time.perf_counter(), time.thread_time(), time.process_time()
    for _ in range(n):
        fn()
    wall = time.perf_counter() - wall
    getattr(fn, "drain", lambda: None)()
    return (wall / n, (time.thread_time() - main) / n, (time.process_time() - proc) / n)


def critical_path(main_cpu: float, process_cpu: float, workers: int) -> float:
    """Seconds per step on a machine with a free core for the main thread and for each pairing worker: the main
    thread's CPU time, or the workers' share of the rest if that is longer (they solve the pairings in parallel).
    Without workers the main thread does everything (torch runs on one thread here)."""
    return main_cpu if workers == 0 else max(main_cpu, (process_cpu - main_cpu) / workers)


def interleaved(methods: dict[str, Callable[[], None]], rounds: int, steps: int, warmup: int = 10,
                workers: dict[str, int] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Median over `rounds` interleaved rounds of each method's seconds per step: (wall clock, critical path from
    CPU times, see `critical_path`; `workers` gives each method's pairing workers, 0 or absent: none)."""
    for fn in methods.values():
        time_steps(fn, warmup)
    walls: dict[str, list[float]] = {name: [] for name in methods}
    paths: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            wall, main, proc = time_steps(fn, steps)
            walls[name].append(wall)
            paths[name].append(critical_path(main, proc, (workers or {}).get(name, 0)))
    return ({name: statistics.median(ts) for name, ts in walls.items()},
            {name: statistics.median(ts) for name, ts in paths.items()})


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


# --- 1, 2: throughput -----------------------------------------------------------------------------------------

def throughput(args: argparse.Namespace) -> None:
    shape = (args.batch, args.hidden, args.depth)
    methods = {"plain PyTorch loop": plain_loop(*shape, args.threads),
               "fmlab CFM (independent)": fmlab_step(*shape, "independent", args.threads),
               "fmlab OT-CFM, sequential": fmlab_step(*shape, "ot", args.threads, prefetch=0),
               "fmlab OT-CFM, prefetched": fmlab_step(*shape, "ot", args.threads)}
    tcfm = torchcfm_step(*shape, args.threads)
    if tcfm is not None:
        methods["torchcfm ExactOT-CFM"] = tcfm
    print(f"before: {load_line()}", flush=True)
    walls, paths = interleaved(methods, args.rounds, args.steps_per_round,
                               workers={"fmlab OT-CFM, prefetched": 1})
    print(f"after:  {load_line()}")
    print(f"batch {args.batch}, MLP {args.hidden}x{args.depth}, {args.threads} training thread(s) + 1 pairing "
          f"worker, {args.rounds} interleaved rounds of {args.steps_per_round} steps; median ms/step, wall clock "
          "and critical path from CPU times (what two free cores would take: see critical_path):")
    for name in methods:
        print(f"  {name:28s} wall {1e3 * walls[name]:8.3f} ms   critical path {1e3 * paths[name]:8.3f} ms")
    for label, med in (("wall clock", walls), ("critical path (CPU times)", paths)):
        ratios(label, med, tcfm is not None)


def ratios(label: str, med: dict[str, float], with_torchcfm: bool) -> None:
    cfm, pre, seq = med["fmlab CFM (independent)"], med["fmlab OT-CFM, prefetched"], med["fmlab OT-CFM, sequential"]
    print(f"ratios, {label}:")
    print(f"  fmlab CFM / plain loop step time         {cfm / med['plain PyTorch loop']:.3f}"
          "   (abstraction overhead; target < 1.05)")
    print(f"  OT-CFM sequential / CFM step time        {seq / cfm:.3f}   (cost of the exact solve in the step)")
    print(f"  OT-CFM prefetched throughput / CFM       {cfm / pre:.3f}   (target >= 0.85)")
    if with_torchcfm:
        print(f"  OT-CFM prefetched throughput / torchcfm  {med['torchcfm ExactOT-CFM'] / pre:.2f}x  (target >= 1.5x)")
        print(f"  OT-CFM sequential throughput / torchcfm  {med['torchcfm ExactOT-CFM'] / seq:.2f}x")
    else:
        print("  torchcfm not installed: `pip install --no-deps torchcfm` to add that comparison")


# --- 3: batch size and workers ---------------------------------------------------------------------------------

def scaling(args: argparse.Namespace) -> None:
    print(f"OT-CFM / CFM step time (wall clock, MLP {args.hidden}x{args.depth}, {args.threads} training thread(s); "
          f"workers 0 = solved in sequence)")
    print("| batch | CFM ms/step, wall | CFM, critical path | workers | OT-CFM ms/step, wall | OT-CFM, critical path "
          "| OT-CFM / CFM, wall | OT-CFM / CFM, critical path |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        shape = (batch, args.hidden, args.depth)
        methods = {"cfm": fmlab_step(*shape, "independent", args.threads)}
        for w in args.workers:
            methods[w] = fmlab_step(*shape, "ot", args.threads, prefetch=0 if w == 0 else None, workers=max(1, w))
        steps = max(3, args.steps_per_round * 256 // batch)
        print(f"<!-- batch {batch}: {load_line()} -->", flush=True)
        walls, paths = interleaved(methods, args.rounds, steps, warmup=max(2, steps // 4),
                                   workers={w: w for w in args.workers})
        for w in args.workers:
            print(f"| {batch} | {1e3 * walls['cfm']:.2f} | {1e3 * paths['cfm']:.2f} | {w} | {1e3 * walls[w]:.2f} | "
                  f"{1e3 * paths[w]:.2f} | {walls[w] / walls['cfm']:.2f} | {paths[w] / paths['cfm']:.2f} |",
                  flush=True)


# --- 4: exact solvers ------------------------------------------------------------------------------------------

def solvers(args: argparse.Namespace) -> None:
    print("exact OT solvers on the squared-distance cost of a moons batch and its noise, CPU ms per solve "
          "(process time, median of interleaved repeats)")
    print("| batch | network simplex (ot.emd) | assignment (linear_sum_assignment) | simplex / assignment | "
          "same permutation |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.solver_batches:
        reps = max(3, args.solver_repeats * 256 // n)
        a = np.full(n, 1.0 / n)
        emd_t, lsa_t, same = [], [], 0
        for r in range(reps):
            g = torch.Generator().manual_seed(r)
            x1 = sample_toy("moons", n, g)
            cost = cost_matrix(torch.randn(x1.shape, generator=g), x1).numpy()
            c0 = time.process_time()
            plan = ot.emd(a, a, cost, numItermax=10**7)
            c1 = time.process_time()
            _, perm = linear_sum_assignment(cost)
            c2 = time.process_time()
            emd_t.append(c1 - c0)
            lsa_t.append(c2 - c1)
            same += int(np.array_equal(plan.argmax(1), perm))
        e, s_ = statistics.median(emd_t), statistics.median(lsa_t)
        print(f"| {n} | {1e3 * e:.1f} | {1e3 * s_:.1f} | {e / s_:.2f} | {same}/{reps} |", flush=True)


# --- 5: the GIL ------------------------------------------------------------------------------------------------

def gil(args: argparse.Namespace, n: int = 1024) -> None:
    g = torch.Generator().manual_seed(0)
    x1 = sample_toy("moons", n, g)
    cost = cost_matrix(torch.randn(x1.shape, generator=g), x1).numpy()
    a = np.full(n, 1.0 / n)
    print(f"GIL: a worker thread solves a {n} x {n} problem while the main thread spins in Python; main-thread "
          f"CPU time / solve wall time (about 1 with a free core if the solver releases the GIL, about 0 if not). "
          f"{load_line()}")
    for name, solve in (("ot.emd", lambda: ot.emd(a, a, cost, numItermax=10**7)),
                        ("linear_sum_assignment", lambda: linear_sum_assignment(cost))):
        fractions = []
        for _ in range(3):
            done = threading.Event()
            worker = threading.Thread(target=lambda s=solve, d=done: (s(), d.set()))
            c0, w0 = time.thread_time(), time.perf_counter()
            worker.start()
            while not done.is_set():
                sum(range(200))  # pure Python: needs the GIL
            fractions.append((time.thread_time() - c0) / (time.perf_counter() - w0))
            worker.join()
        print(f"  {name:22s} {statistics.median(fractions):.2f}")


# --- 6: Sinkhorn ---------------------------------------------------------------------------------------------

def sinkhorn(args: argparse.Namespace) -> None:
    from fmlab.couplings import sinkhorn_rows
    from fmlab.sinkhorn import sinkhorn_bias

    g = torch.Generator().manual_seed(0)
    x1 = sample_toy("moons", args.batch, g)
    x0 = torch.randn(x1.shape, generator=g)
    rows = sinkhorn_bias(x0, x1, args.regs)
    exact, independent = rows[0]["exact_cost"], rows[0]["independent_cost"]
    print(f"Sinkhorn against exact OT on one moons batch of {args.batch} (reg relative to the mean cost; plan cost: "
          f"expected squared distance of a pair drawn from the plan over the exact OT cost {exact:.3f}; "
          f"independent pairs cost {independent / exact:.2f} times it)")
    print("| reg | plan cost / OT cost | effective partners per x0 | distance to the OT permutation | iterations |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['reg']:g} | {r['plan_cost']:.4f} | {r['partners']:.2f} | {r['off_permutation']:.3f} | "
              f"{r['iterations']} |")
    print(f"CPU ms per plan at reg 0.05 (median of {args.solver_repeats // 4 + 1}):")
    for n in args.batches:
        g = torch.Generator().manual_seed(1)
        x1 = sample_toy("moons", n, g)
        x0 = torch.randn(x1.shape, generator=g)
        times = {"POT ot.sinkhorn": [], "torch log-domain": []}
        for _ in range(args.solver_repeats // 4 + 1):
            for name, on_device in (("POT ot.sinkhorn", False), ("torch log-domain", True)):
                c0 = time.process_time()
                sinkhorn_rows(x0, x1, 0.05, on_device=on_device)
                times[name].append(time.process_time() - c0)
        print(f"  batch {n}: " + ", ".join(f"{k} {1e3 * statistics.median(v):.1f}" for k, v in times.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps-per-round", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="training threads (the pairing worker is extra)")
    parser.add_argument("--no-throughput", action="store_true", help="skip parts 1 and 2")
    parser.add_argument("--scaling", action="store_true", help="part 3: OT-CFM / CFM against batch and workers")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--solvers", action="store_true", help="part 4: network simplex against assignment")
    parser.add_argument("--solver-batches", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--solver-repeats", type=int, default=20, help="solves at batch 256 (fewer above)")
    parser.add_argument("--gil", action="store_true", help="part 5: do the solvers release the GIL?")
    parser.add_argument("--sinkhorn", action="store_true", help="part 6: Sinkhorn's bias and speed")
    parser.add_argument("--regs", type=float, nargs="+", default=[1.0, 0.3, 0.1, 0.05, 0.01, 0.003, 0.001])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_throughput:
        throughput(args)
    if args.scaling:
        scaling(args)
    if args.solvers:
        solvers(args)
    if args.gil:
        gil(args)
    if args.sinkhorn:
        sinkhorn(args)


if __name__ == "__main__":
    main()
