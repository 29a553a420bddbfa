"""Unrolled flow matching on 2D data: step cost of full BPTT against the detached form, and the manuscript's claims.

    python benchmarks/unrolling.py cost                 # ms per training step, L in {1, 2, 4, 8}, BPTT vs detached
    python benchmarks/unrolling.py parametrisation      # field vs x1 head: gradient norms by noise level, W1 x 3 sets
    python benchmarks/unrolling.py unrolling            # FM vs WT-FM (BPTT / detached / cross-terms dropped) vs
                                                        # anchored, equal time, mean+-sd over --seeds
    python benchmarks/unrolling.py variants             # the three WT-FM gradients: cross-term share, cosine
    python benchmarks/unrolling.py variance             # cross-term gradient variance vs L, independent vs OT,
                                                        # and against the data's scale
    python benchmarks/unrolling.py all --steps 3000     # everything (about 30 min on one core)

Convention: t = 0 noise, t = 1 data (the manuscript's "near the data, t = 0.1" is our t = 0.9). Every run uses the
labs' model (fmlab.experiments.LAB_MODEL: MLP 3 x 128, batch 256, AdamW lr 2e-3, EMA) and one CPU thread unless
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
from fmlab.data.gaussian import GaussianMixture  # noqa: E402
from fmlab.diagnostics import (  # noqa: E402
    DEFAULT_LEVELS,
    cross_term_grad_variance,
    posterior_variance_power,
    variant_gradients,
)
from fmlab.experiments import LAB_MODEL, lab_config, noise_floor_w1, run  # noqa: E402
from fmlab.losses import get_loss  # noqa: E402
from fmlab.losses.unrolled import WTFM_VARIANTS  # noqa: E402
from fmlab.models import build_model  # noqa: E402
from fmlab.viz.parametrisation import (  # noqa: E402
    EVAL_LOSS_N,
    MATCHED_BATCHES,
    matched_gradients,
    parametrisation_configs,
    parametrisation_run,
    summarise_gradients,
)
from fmlab.viz.unrolling import variant_batch  # noqa: E402
from fmlab.viz.unrolling_runs import equal_time_config, relative_cost  # noqa: E402

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
    header = (f"{'L':>3} | {'WT-FM BPTT':>11} | {'WT-FM detached':>14} | {'ratio':>6} | {'cross-terms dropped':>19} | "
              f"{'anchored BPTT':>13} | {'anchored detached':>17} | {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for w in WINDOWS:
        configs = [("cfm", {}), ("wtfm", {"window": w, "steps": 16, "detach": False}),
                   ("wtfm", {"window": w, "steps": 16, "detach": True}),
                   ("wtfm", {"window": w, "steps": 16, "detach": True, "cross_terms": False})]
        if w >= 2:
            configs += [("anchored_consistency", {"window": w, "steps": 16, "detach": False}),
                        ("anchored_consistency", {"window": w, "steps": 16, "detach": True})]
        base, bptt, det, dropped, *anchored = step_times(configs, args.repeats)
        if anchored:
            a_bptt, a_det = anchored
            text = f"{a_bptt:>10.2f} ms | {a_det:>14.2f} ms | {a_bptt / a_det:>6.2f}"
        else:
            text = f"{'-':>13} | {'-':>17} | {'-':>6}"
        model = relative_cost("wtfm", {"window": w})
        print(f"{w:>3} | {bptt:>8.2f} ms | {det:>11.2f} ms | {bptt / det:>6.2f} | {dropped:>16.2f} ms | {text}   "
              f"(single-step FM {base:.2f} ms; WT-FM / FM measured {bptt / base:.2f}, cost model {model:.2f})")
    print("(WT-FM detached, with or without its cross-terms, still backpropagates into every one of the L network "
          "calls; anchored detached runs the L - 1 later calls without a graph)")


# --- parametrisation: field against x1 prediction ---------------------------------------------------------------

def parametrisation(args: argparse.Namespace) -> None:
    """Field (cfm) against x1 prediction (x1 head, weight 1/((1-t)^2+1e-3)) on three manifolds, args.seeds seeds.

    Per seed: W1 of each head; the tracked gradient norms (one minibatch per measurement, the lab's figure); and the
    gradient-norm ratio x1 / field averaged over MATCHED_BATCHES minibatches, at matched velocity-equivalent loss
    and at equal steps (the last step). Then mean +- sd over seeds; a difference is called resolved only when
    |mean| > 2 sd / sqrt(seeds) (the mean +- 2 standard errors excludes 0)."""
    levels = DEFAULT_LEVELS
    near = levels.index(0.9)
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(f"field (cfm, velocity head) vs x1 prediction (x1 head, weight 1/((1-t)^2+1e-3)); {args.steps} steps, "
          f"seeds {seeds}; gradient norm of each run's own loss at t = {levels}: tracked every {args.track_every} "
          f"steps on one minibatch of 256, and at the compared checkpoints as the mean over {MATCHED_BATCHES} "
          f"minibatches; velocity-equivalent loss on {EVAL_LOSS_N} held-out triples; W1 of the EMA model, Euler "
          f"100 steps, n = {args.n_eval}")
    summary: dict[str, list[dict]] = {}
    for data in DATASETS:
        print(f"\n{data}: seed | W1 field | W1 x1 | x1/field - 1 | tracked ratio | target loss | matched step "
              f"field/x1 | matched ratio | equal-step ratio (ratios x1/field at t = {levels})")
        for seed in seeds:
            configs = parametrisation_configs(data, args.steps, seed=seed, log_every=args.track_every)
            runs = [parametrisation_run(dataclasses.replace(c, threads=args.threads), args.track_every, args.n_eval,
                                        progress=False) for c in configs]
            row = _parametrisation_row(runs, seed, near)
            summary.setdefault(data, []).append(row)
            print(f"{data:>10} {seed:>2} | {row['w1 field']:.3f} | {row['w1 x1']:.3f} | {100 * row['worse']:+5.0f}% | "
                  + " | ".join((_ratios(row["tracked"]), f"{row['target']:.4f}", "/".join(map(str, row["steps"])),
                                _ratios(row["matched"]), _ratios(row["final"]))))
        print(f"{data:>10} noise floor W1 (data vs data, n = {args.n_eval}): {noise_floor_w1(data, args.n_eval):.3f}")
    _parametrisation_summary(summary, levels, args.steps)


def _parametrisation_row(runs: list, seed: int, near: int) -> dict:
    """One seed's numbers: W1 of both heads, x1 / field W1 - 1, gradient-norm ratios (tracked mean, matched loss,
    equal steps; per level and averaged over levels), and near-data norms, maxima and std/mean."""
    by = {r.label: r for r in runs}
    m = matched_gradients(runs, seed=seed)
    tracked = summarise_gradients(runs)
    w_f, w_x = by["field"].w1[100], by["x1 prediction"].w1[100]
    return {"w1 field": w_f, "w1 x1": w_x, "worse": w_x / w_f - 1, "target": m.target,
            "steps": [m.steps["field"], m.steps["x1 prediction"]],
            "tracked": tracked["x1 prediction"]["mean"] / tracked["field"]["mean"],
            "matched": m.matched_ratio, "final": m.final_ratio,
            "matched over levels": float(m.matched["x1 prediction"].mean() / m.matched["field"].mean()),
            "final over levels": float(m.final["x1 prediction"].mean() / m.final["field"].mean()),
            **{f"{stat} {head}": float(value) for head, label in (("field", "field"), ("x1", "x1 prediction"))
               for stat, value in (("matched@0.9", m.matched[label][near]), ("max@0.9", tracked[label]["max"][near]),
                                   ("cv@0.9", tracked[label]["cv"][near]))}}


def _parametrisation_summary(summary: dict[str, list[dict]], levels: tuple, steps: int) -> None:
    n = len(next(iter(summary.values())))
    print(f"\nSummary over {n} seeds (mean+-sd); resolved = |mean| > 2 sd / sqrt({n}):")
    print(f"{'data':>10} | {'W1 field':>13} | {'W1 x1':>13} | {'x1 / field - 1':>14} | resolved | x1 worse in")
    for data, rows in summary.items():
        worse = [r["worse"] for r in rows]
        print(f"{data:>10} | {_msd(rows, 'w1 field', 3)} | {_msd(rows, 'w1 x1', 3)} | "
              f"{_msd([{'w': 100 * w} for w in worse], 'w', 0):>13}% | {'yes' if _resolved(worse) else 'no':>8} | "
              f"{sum(w > 0 for w in worse)}/{n} seeds")
    print(f"\nGradient-norm ratio x1 / field at t = {levels}, then averaged over the levels (mean+-sd over {n} seeds):")
    for kind, title in (("tracked", "tracked, mean over the training run (one minibatch per measurement)"),
                        ("matched", f"matched velocity-equivalent loss ({MATCHED_BATCHES} minibatches)"),
                        ("final", f"equal steps, step {steps} ({MATCHED_BATCHES} minibatches)")):
        print(f"  {title}:")
        for data, rows in summary.items():
            cols = " | ".join(_msd([{"r": float(r[kind][j])} for r in rows], "r", 2) for j in range(len(levels)))
            over = f" | levels averaged {_msd(rows, kind + ' over levels', 2)}" if kind != "tracked" else ""
            print(f"  {data:>10} | {cols}{over}")
    print(f"\nNear the data (t = 0.9), mean+-sd over {n} seeds: gradient norm at matched loss; max and std/mean of "
          "the tracked curve:")
    for data, rows in summary.items():
        print(f"  {data:>10} | " + " | ".join(f"{stat} field {_msd(rows, stat + ' field', 2)}, "
                                                f"x1 {_msd(rows, stat + ' x1', 2)}"
                                                for stat in ("matched@0.9", "max@0.9", "cv@0.9")))


def _ratios(values) -> str:
    return "/".join(f"{float(x):.1f}" for x in values)


def _msd(rows: list[dict], key: str, digits: int) -> str:
    values = [float(r[key]) for r in rows]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f}+-{sd:.{digits}f}"


def _resolved(values: list[float]) -> bool:
    """|mean| > 2 sd / sqrt(n): mean +- 2 standard errors excludes 0."""
    if len(values) < 2:
        return False
    return abs(statistics.mean(values)) > 2 * statistics.stdev(values) / len(values) ** 0.5


# --- unrolling: equal training time --------------------------------------------------------------------------------

METHODS = (
    ("cfm", {}),
    ("wtfm", {"window": 2, "detach": False}),
    ("wtfm", {"window": 4, "detach": False}),
    ("wtfm", {"window": 8, "detach": False}),
    ("wtfm", {"window": 4, "detach": True}),
    ("wtfm", {"window": 4, "detach": True, "cross_terms": False}),
    ("wtfm", {"window": 8, "detach": True, "cross_terms": False}),
    ("anchored_consistency", {"window": 2, "detach": True}),
    ("anchored_consistency", {"window": 4, "detach": True}),
    ("anchored_consistency", {"window": 4, "detach": False}),
)  # the lab's comparison (fmlab.viz.unrolling.COMPARISON) is a subset


def unrolling(args: argparse.Namespace) -> None:
    sample_steps = 16
    data = args.data
    budget = ("the training time of {n} single-step FM steps (cost model fmlab.viz.unrolling_runs.relative_cost)"
              if args.budget == "time" else "{n} optimizer steps (unrolled methods get L times the compute)")
    print(f"{data}: every method gets {budget.format(n=args.steps)}; dt = 1/{sample_steps}; W1 (n = {args.n_eval}) "
          f"with Euler {sample_steps} and 100 steps; mean+-sd over {args.seeds} seed(s) (seed = model init, data, "
          f"noise and evaluation samples); 'vs FM': W1@16 minus single-step FM's (same coupling) +- its standard "
          f"error, '~' when within 2 standard errors (noise)")
    print(f"{'method':>30} | {'coupling':>11} | {'steps':>6} | {'W1@16':>13} | {'W1@100':>13} | {'vs FM':>17} | "
          f"{'train s':>7}")
    for coupling in ("independent", "ot"):
        fm16: list[float] = []
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
            if loss == "cfm":
                fm16 = w16
            label = r.label.replace(" + OT", "")
            print(f"{label:>30} | {coupling:>11} | {config.steps:>6} | {_mean_sd(w16)} | {_mean_sd(w100)} | "
                  f"{_versus(w16, fm16) if loss != 'cfm' else '-':>17} | {statistics.mean(secs):>7.1f}")
    print(f"noise floor (data vs data, n = {args.n_eval}): {noise_floor_w1(data, args.n_eval):.3f}")


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f}+-{sd:.3f}"


def _versus(values: list[float], reference: list[float]) -> str:
    """mean difference +- its standard error (independent seeds), '~' when |difference| < 2 standard errors."""
    diff = statistics.mean(values) - statistics.mean(reference)
    if len(values) < 2 or len(reference) < 2:
        return f"{diff:+.3f}"
    se = (statistics.variance(values) / len(values) + statistics.variance(reference) / len(reference)) ** 0.5
    return f"{diff:+.3f}+-{se:.3f}{' ~' if abs(diff) < 2 * se else '  '}"


# --- variants: the three gradients of the WT-FM loss ---------------------------------------------------------------

def variants(args: argparse.Namespace) -> None:
    data, windows = args.data, (2, 4, 8)
    print(f"{data}: single-step FM trained {args.steps} steps (labs' model), {args.seeds} seeds; on {args.batch} "
          f"fresh pairs with window starts as in training, dt = 1/16: ||grad|| of the WT-FM loss (/(L dt)^2), the "
          f"cross-terms' share <g_cross, g> / ||g||^2 and the cosine to the full-BPTT gradient, per variant; "
          f"mean+-sd over seeds")
    print(f"{'L':>2} | {'variant':>20} | {'||grad||':>13} | {'cross share':>13} | {'cosine to BPTT':>15}")
    rows: dict[tuple[int, str], list[dict]] = {}
    for seed in range(args.seeds):
        config = dataclasses.replace(lab_config(data, "cfm", train_steps=args.steps, seed=seed), threads=args.threads)
        model = run(config, eval_steps=(100,), n_eval=args.n_eval, progress=False).model
        for w in windows:
            batch = variant_batch(data, args.batch, w, 16, seed=100 + seed)
            for name, r in variant_gradients(model, batch, w, 16).items():
                rows.setdefault((w, name), []).append(r)
    for w in windows:
        for name in WTFM_VARIANTS:
            r = rows[(w, name)]
            print(f"{w:>2} | {name:>20} | {_mean_sd([x['grad_norm'] for x in r])} | "
                  f"{_mean_sd([x['cross_share'] for x in r])} | {_mean_sd([x['cosine_to_bptt'] for x in r]):>15}")


# --- variance: cross-term gradient variance vs L ----------------------------------------------------------------------

def variance(args: argparse.Namespace) -> None:
    data, t0 = "8gaussians", args.t0
    vbar, curve = posterior_variance_power(gmm_2d("8modes"), t0, WINDOWS)
    print(f"{data}: cross-term gradient variance (trace of its covariance over {args.batches} minibatches of 64) of "
          f"single-step FM models trained {args.steps} steps, {args.seeds} seeds (mean+-sd), windows from t0 = {t0}, "
          f"dt = 1/16, cross-terms divided by (L dt)^2 as in the WT-FM loss (without it multiply by (L dt)^4); "
          f"closed form per dimension Var(x1|x_t0) = {vbar:.3f}")
    print(f"{'coupling':>11} | " + " | ".join(f"{'L=' + str(w):>15}" for w in WINDOWS[1:])
          + " | x per doubling 2->4, 4->8 | L=2->8 | L=2->8 raw")
    out = {}
    for coupling in ("independent", "ot"):
        per_seed = []
        for seed in range(args.seeds):
            config = lab_config(data, "cfm", coupling=coupling, train_steps=args.steps, threads=args.threads,
                                seed=seed)
            r = run(config, variance_every=args.steps, variance_windows=WINDOWS, variance_t0=t0,
                    variance_batches=args.batches, eval_steps=(100,), n_eval=args.n_eval, progress=False)
            per_seed.append([float(x) for x in r.variances[-1].variance])
        out[coupling] = per_seed
        _variance_row(coupling, per_seed)
    raw = [c * (w / 16) ** 4 for w, c in zip(WINDOWS, curve.tolist(), strict=True)]
    print(f"{'closed form':>11} | " + " | ".join(f"{float(x):>15.3g}" for x in curve[1:])
          + f" | {float(curve[2] / curve[1]):>8.3g}, {float(curve[3] / curve[2]):>8.3g}    | "
          f"{float(curve[3] / curve[1]):>6.0f} | {raw[3] / raw[1]:>8.0f}")
    ratios = [[i / o for i, o in zip(a[1:], b[1:], strict=True)] for a, b in zip(out["independent"], out["ot"],
                                                                                strict=True)]
    print("independent / OT variance at L = 2, 4, 8: "
          + ", ".join(_mean_sd([r[k] for r in ratios]) for k in range(3)))
    _variance_scales(args)


def _variance_row(label: str, per_seed: list[list[float]]) -> None:
    """One row: variance at L = 2, 4, 8 and growth per doubling, L = 2 -> 8, and L = 2 -> 8 without the
    (L dt)^2 normalisation (x (8 / 2)^4), each mean+-sd over seeds."""
    cols = [_mean_sd3([v[k] for v in per_seed]) for k in (1, 2, 3)]
    d1, d2 = [v[2] / v[1] for v in per_seed], [v[3] / v[2] for v in per_seed]
    total = [v[3] / v[1] for v in per_seed]
    print(f"{label:>11} | " + " | ".join(f"{c:>15}" for c in cols)
          + f" | {_mean_sd(d1)}, {_mean_sd(d2)} | {_mean_sd(total)} | {_mean_sd([256 * x for x in total])}")


def _mean_sd3(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g}+-{sd:.2g}"


def _variance_scales(args: argparse.Namespace) -> None:
    """The same measurement on 8 Gaussians rescaled by a (independent coupling): Var(x1 | x_t0)^L's growth with L
    depends on a (it has units), the measured growth barely does."""
    from fmlab.train import Trainer

    base = gmm_2d("8modes")
    print(f"\n8 Gaussians rescaled by a (x1 -> a x1, noise unchanged), independent coupling, same measurement, "
          f"{args.seeds} seeds:")
    print(f"{'a':>5} | {'Var/dim':>7} | closed form x per doubling | measured x per doubling (2->4, 4->8) | "
          f"measured L=2->8")
    for scale in args.scales:
        target = GaussianMixture(base.means * scale, covs=base.covs * scale**2)
        vbar, curve = posterior_variance_power(target, args.t0, WINDOWS)
        per_seed = []
        for seed in range(args.seeds):
            config = lab_config("8gaussians", "cfm", train_steps=args.steps, threads=args.threads, seed=seed)
            trainer = Trainer(config, data_fn=lambda n, g, a=scale: a * sample_toy("8gaussians", n, generator=g))
            trainer.fit(progress=False)
            r = cross_term_grad_variance(trainer.model, lambda n, g, a=scale: a * sample_toy("8gaussians", n,
                                                                                                  generator=g),
                                         WINDOWS, steps=16, t0=args.t0, n_batches=args.batches, batch_size=64,
                                         seed=1000 + seed)
            per_seed.append([float(x) for x in r.variance])
        d1, d2 = [v[2] / v[1] for v in per_seed], [v[3] / v[2] for v in per_seed]
        print(f"{scale:>5g} | {vbar:>7.3f} | {float(curve[2] / curve[1]):>9.3g}, {float(curve[3] / curve[2]):>9.3g}   "
              f"   | {_mean_sd(d1)}, {_mean_sd(d2)}           | {_mean_sd([v[3] / v[1] for v in per_seed])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("cost", "parametrisation", "unrolling", "variants", "variance", "all"))
    parser.add_argument("--steps", type=int, default=3000, help="training steps (single-step FM budget)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (unrolling, variants, variance)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per cost measurement")
    parser.add_argument("--track-every", type=int, default=50)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--data", default="moons")
    parser.add_argument("--budget", choices=("time", "steps"), default="time",
                        help="unrolling: equal training time (cost model) or equal optimizer steps")
    parser.add_argument("--t0", type=float, default=0.25)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512, help="pairs per gradient (variants)")
    parser.add_argument("--scales", type=lambda text: [float(x) for x in text.split(",")],
                        default=[0.25, 0.5, 1.0, 2.0], help="data scales for the variance study (comma-separated)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    for name, fn in (("cost", cost), ("parametrisation", parametrisation), ("unrolling", unrolling),
                     ("variants", variants), ("variance", variance)):
        if args.what in (name, "all"):
            print(f"\n== {name} ==")
            fn(args)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
