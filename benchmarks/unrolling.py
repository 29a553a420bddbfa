"""Unrolled flow matching on 2D data: step cost of full BPTT against the detached form, and the manuscript's claims.

    python benchmarks/unrolling.py cost                 # ms per training step, L in {1, 2, 4, 8}, BPTT vs detached
    python benchmarks/unrolling.py parametrisation      # field vs x1 head: gradient norms by noise level, W1 x 3 sets
    python benchmarks/unrolling.py unrolling            # FM vs WT-FM (BPTT / detached) vs anchored, equal time
    python benchmarks/unrolling.py variance             # cross-term gradient variance vs L, independent vs OT
    python benchmarks/unrolling.py all --steps 3000     # everything (about 30 min on one core)

Convention: t = 0 noise, t = 1 data (the manuscript's "near the data, t = 0.1" is our t = 0.9). Every run uses the
labs' model (fmlab.viz.unrolling.LAB_MODEL: MLP 3 x 128, batch 256, AdamW lr 2e-3, EMA) and one CPU thread unless
--threads says otherwise. Numbers go to stdout; copy them into benchmarks/README.md ("Unrolling").
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmlab.data import gmm_2d, sample_toy  # noqa: E402
from fmlab.diagnostics import DEFAULT_LEVELS, posterior_variance_power  # noqa: E402
from fmlab.losses import get_loss  # noqa: E402
from fmlab.models import build_model  # noqa: E402
from fmlab.viz.unrolling import (  # noqa: E402
    LAB_MODEL,
    equal_time_config,
    lab_config,
    noise_floor_w1,
    relative_cost,
    run,
)

WINDOWS = (1, 2, 4, 8)
DATASETS = ("moons", "scurve", "swissroll")


# --- cost: one training step, full BPTT against the detached form ----------------------------------------------

def _stepper(loss: str, settings: dict, prediction: str = "velocity", batch: int = 256):
    """A closure running one training step (batch + loss + backward + AdamW) on moons."""
    torch.manual_seed(0)
    model = build_model(prediction=prediction, hidden=LAB_MODEL["hidden"], depth=LAB_MODEL["depth"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    spec = get_loss(loss)
    full = spec.settings(settings)
    g = torch.Generator().manual_seed(0)

    def step() -> float:
        x1 = sample_toy("moons", batch, generator=g)
        x0 = torch.randn(x1.shape, generator=g)
        start = time.process_time()  # CPU time of this process: on a shared machine, wall time measures the others
        b = spec.make_batch(x0, x1, g, **full)
        value, _ = spec.fn(model, b, **full)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        return time.process_time() - start

    return step


def step_times(configs: list[tuple[str, dict]], repeats: int = 30) -> list[float]:
    """CPU ms per training step of each (loss, settings): the median over `repeats` steps timed round-robin. With one
    thread, process CPU time is the wall time the step would take on an idle core, whatever else the machine runs."""
    steppers = [_stepper(loss, settings) for loss, settings in configs]
    times: list[list[float]] = [[] for _ in configs]
    for i in range(repeats + 3):
        for j, step in enumerate(steppers):
            elapsed = step()
            if i >= 3:
                times[j].append(elapsed)
    return [1000 * statistics.median(t) for t in times]


def step_time(loss: str, settings: dict, repeats: int = 30) -> float:
    return step_times([(loss, settings)], repeats)[0]


def cost(args: argparse.Namespace) -> None:
    print(f"CPU ms per training step (median of {args.repeats}, round-robin), MLP {LAB_MODEL['depth']} x "
          f"{LAB_MODEL['hidden']}, batch 256, {torch.get_num_threads()} thread(s), dt = 1/16")
    header = (f"{'L':>3} | {'WT-FM BPTT':>11} | {'WT-FM detached':>14} | {'ratio':>6} | {'anchored BPTT':>13} | "
              f"{'anchored detached':>17} | {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for w in WINDOWS:
        configs = [("cfm", {}), ("wtfm", {"window": w, "steps": 16, "detach": False}),
                   ("wtfm", {"window": w, "steps": 16, "detach": True})]
        if w >= 2:
            configs += [("anchored_consistency", {"window": w, "steps": 16, "detach": False}),
                        ("anchored_consistency", {"window": w, "steps": 16, "detach": True})]
        base, bptt, det, *anchored = step_times(configs, args.repeats)
        if anchored:
            a_bptt, a_det = anchored
            text = f"{a_bptt:>10.2f} ms | {a_det:>14.2f} ms | {a_bptt / a_det:>6.2f}"
        else:
            text = f"{'-':>13} | {'-':>17} | {'-':>6}"
        model = relative_cost("wtfm", {"window": w})
        print(f"{w:>3} | {bptt:>8.2f} ms | {det:>11.2f} ms | {bptt / det:>6.2f} | {text}   (single-step FM "
              f"{base:.2f} ms; WT-FM / FM measured {bptt / base:.2f}, cost model {model:.2f})")
    print("(WT-FM detached still backpropagates into every one of the L network calls; anchored detached runs the "
          "L - 1 later calls without a graph)")


# --- parametrisation: field against x1 prediction ---------------------------------------------------------------

def parametrisation(args: argparse.Namespace) -> None:
    levels = DEFAULT_LEVELS
    print(f"field (cfm, velocity head) vs x1 prediction (x1 head, weight 1/((1-t)^2+eps)); {args.steps} steps, "
          f"gradient norm of each run's own loss at t = {levels} every {args.track_every} steps; W1 with Euler 100 "
          f"steps, n = {args.n_eval}")
    print(f"{'data':>10} | {'head':>6} | {'W1':>6} | " + " | ".join(f"mean@{lv:g}" for lv in levels)
          + " | max@0.9 | spikes@0.9 | train s")
    worse = []
    for data in DATASETS:
        row = {}
        for head, loss in (("field", "cfm"), ("x1", "x1_prediction")):
            config = lab_config(data, loss, prediction="x1" if head == "x1" else None, train_steps=args.steps,
                                threads=args.threads, seed=args.seed)
            r = run(config, levels=levels, track_every=args.track_every, eval_steps=(100,), n_eval=args.n_eval,
                    progress=False)
            norms = r.norms()
            mean, top = norms.mean(0), norms[:, -1].max()
            spikes = float(norms[1:, -1].std() / norms[1:, -1].mean())  # coefficient of variation near the data
            row[head] = (r.w1[100], mean)
            print(f"{data:>10} | {head:>6} | {r.w1[100]:.3f} | " + " | ".join(f"{float(m):>8.3f}" for m in mean)
                  + f" | {float(top):>7.2f} | {spikes:>10.2f} | {r.elapsed:>7.1f}")
        floor = noise_floor_w1(data, args.n_eval)
        ratio = (row["x1"][0] - floor) / max(row["field"][0] - floor, 1e-9)
        grad_ratio = row["x1"][1] / row["field"][1]
        worse.append(row["x1"][0] / row["field"][0] - 1)
        print(f"{data:>10} | noise floor W1 {floor:.3f}; x1/field W1 {row['x1'][0] / row['field'][0]:.2f} "
              f"(above floor {ratio:.2f}); gradient-norm ratio x1/field at t = {levels}: "
              + ", ".join(f"{float(x):.1f}" for x in grad_ratio))
    print("x1 prediction W1 worse than field by: " + ", ".join(f"{100 * w:+.0f}%" for w in worse))


# --- unrolling: equal training time --------------------------------------------------------------------------------

METHODS = (
    ("cfm", {}),
    ("wtfm", {"window": 2, "detach": False}),
    ("wtfm", {"window": 4, "detach": False}),
    ("wtfm", {"window": 8, "detach": False}),
    ("wtfm", {"window": 4, "detach": True}),
    ("anchored_consistency", {"window": 2, "detach": True}),
    ("anchored_consistency", {"window": 4, "detach": True}),
    ("anchored_consistency", {"window": 4, "detach": False}),
)  # the lab's comparison (fmlab.viz.unrolling.COMPARISON) is a subset


def unrolling(args: argparse.Namespace) -> None:
    sample_steps = 16
    data = args.data
    budget = ("the training time of {n} single-step FM steps (cost model fmlab.viz.unrolling.relative_cost)"
              if args.budget == "time" else "{n} optimizer steps (unrolled methods get L times the compute)")
    print(f"{data}: every method gets {budget.format(n=args.steps)}; dt = 1/{sample_steps}; W1 (n = {args.n_eval}) "
          f"with Euler {sample_steps} and 100 steps; mean+-sd over {args.seeds} seed(s)")
    print(f"{'method':>26} | {'coupling':>11} | {'steps':>6} | {'W1@16':>13} | {'W1@100':>13} | {'train s':>7}")
    for coupling in ("independent", "ot"):
        for loss, settings in METHODS:
            settings = {**settings, "steps": sample_steps} if loss != "cfm" else {}
            w16, w100, secs = [], [], []
            for seed in range(args.seeds):
                config = equal_time_config(data, loss, args.steps, coupling=coupling, seed=seed, **settings)
                if args.budget == "steps":
                    config = dataclasses.replace(config, steps=args.steps, log_every=max(1, args.steps // 40))
                config = dataclasses.replace(config, threads=args.threads)
                r = run(config, eval_steps=(sample_steps, 100), n_eval=args.n_eval, progress=False)
                w16.append(r.w1[sample_steps])
                w100.append(r.w1[100])
                secs.append(r.elapsed)
            label = r.label.replace(" + OT", "")
            print(f"{label:>26} | {coupling:>11} | {config.steps:>6} | {_mean_sd(w16)} | {_mean_sd(w100)} | "
                  f"{statistics.mean(secs):>7.1f}")
    print(f"noise floor (data vs data, n = {args.n_eval}): {noise_floor_w1(data, args.n_eval):.3f}")


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f}+-{sd:.3f}"


# --- variance: cross-term gradient variance vs L ----------------------------------------------------------------------

def variance(args: argparse.Namespace) -> None:
    data, t0 = "8gaussians", args.t0
    vbar, curve = posterior_variance_power(gmm_2d("8modes"), t0, WINDOWS)
    print(f"{data}: cross-term gradient variance (trace of its covariance over {args.batches} minibatches of 64) of "
          f"trained single-step FM models, windows from t0 = {t0}, dt = 1/16; closed form per dimension "
          f"Var(x1|x_t0) = {vbar:.3f}")
    print(f"{'coupling':>11} | " + " | ".join(f"{'L=' + str(w):>9}" for w in WINDOWS) + " | growth L=2->8")
    out = {}
    for coupling in ("independent", "ot"):
        config = lab_config(data, "cfm", coupling=coupling, train_steps=args.steps, threads=args.threads,
                            seed=args.seed)
        r = run(config, variance_every=args.steps, variance_windows=WINDOWS, variance_t0=t0,
                variance_batches=args.batches, eval_steps=(100,), n_eval=args.n_eval, progress=False)
        v = r.variances[-1].variance
        out[coupling] = v
        print(f"{coupling:>11} | " + " | ".join(f"{float(x):>9.3g}" for x in v) + f" | {float(v[3] / v[1]):>8.2f}"
              f"   (W1@100 {r.w1[100]:.3f})")
    print(f"{'closed form':>11} | " + " | ".join(f"{float(x):>9.3g}" for x in curve)
          + f" | {float(curve[3] / curve[1]):>8.2f}")
    ratio = out["independent"][1:] / out["ot"][1:]
    print("independent / OT variance at L = 2, 4, 8: " + ", ".join(f"{float(x):.1f}" for x in ratio))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("cost", "parametrisation", "unrolling", "variance", "all"))
    parser.add_argument("--steps", type=int, default=3000, help="training steps (single-step FM budget)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per method (unrolling)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per cost measurement")
    parser.add_argument("--track-every", type=int, default=50)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--data", default="moons")
    parser.add_argument("--budget", choices=("time", "steps"), default="time",
                        help="unrolling: equal training time (cost model) or equal optimizer steps")
    parser.add_argument("--t0", type=float, default=0.25)
    parser.add_argument("--batches", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    for name, fn in (("cost", cost), ("parametrisation", parametrisation), ("unrolling", unrolling),
                     ("variance", variance)):
        if args.what in (name, "all"):
            print(f"\n== {name} ==")
            fn(args)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
