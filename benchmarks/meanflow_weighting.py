"""MeanFlow, iMF and SoFlow under each adaptive weighting: W2 in 1, 2, 4, 8 steps on the zoo's 2D sets.

    python benchmarks/meanflow_weighting.py                    # the committed table (about 15 minutes, 2 workers)
    python benchmarks/meanflow_weighting.py --quick            # a smoke test: 100 steps, 1 seed, moons
    python benchmarks/meanflow_weighting.py --losses imf --datasets moons --seeds 0,1 --out /tmp/w.json
    python benchmarks/meanflow_weighting.py --losses imf --weightings p0 --extra '{"aux_v_loss": false}' --out ...

The three losses weight each sample's squared error err (the mean over dimensions) by w = sg(1 / (err + c)^p)
(fmlab.losses.flowmap_eulerian.adaptive_weight). With p > 0 the weight depends on the noise draw, so where the
conditional target is multimodal the fixed point becomes E[w y] / E[w] instead of the conditional mean (mode
seeking). This script trains each loss exactly as the zoo benchmark does (benchmarks/flowmaps.py `train_and_eval`:
the zoo's MLP 3 x 128, AdamW lr 2e-3, batch 256, EMA, 2000 steps, independent coupling, exact W2 on 1000 held-out
points) once per weighting, passing the weighting as the job's loss settings (train_and_eval gives them to the
loss through TrainConfig.loss_settings), for seeds 0, 1, 2 on moons and checkerboard. It prints W2 at 1/2/4/8
steps as mean +- std over seeds and writes benchmarks/results/meanflow_weighting.json.

Weightings (c is per dimension: the papers' c on the squared norm summed over d dimensions is c / d here):
  p1       p = 1, c = the old default (MeanFlow 1e-3, iMF 0.01, SoFlow 0.01): the papers' image setting;
  p0.5     p = 0.5 with the same c;
  p0.5_c1  p = 0.5, c = 1 (of the order of the per-dimension error floor on these sets, so w varies little);
  p0       p = 0: no adaptive weight.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import flowmaps as zoo  # noqa: E402  (benchmarks/flowmaps.py: train_and_eval, run_jobs, EVAL_STEPS)

LOSSES = ("meanflow", "imf", "soflow")
OLD_C = {"meanflow": 1e-3, "imf": 0.01, "soflow": 0.01}
WEIGHTINGS: dict[str, dict[str, Any]] = {
    "p1": {"norm_p": 1.0, "norm_c": None},  # None: the loss's old c (OLD_C)
    "p0.5": {"norm_p": 0.5, "norm_c": None},
    "p0.5_c1": {"norm_p": 0.5, "norm_c": 1.0},
    "p0": {"norm_p": 0.0, "norm_c": None},
}
RESULTS = ROOT / "benchmarks" / "results" / "meanflow_weighting.json"


def loss_settings(loss: str, weighting: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The loss settings of one weighting (explicit p and c, so a later change of defaults does not move them),
    plus `extra` settings (--extra)."""
    w = WEIGHTINGS[weighting]
    return {"norm_p": w["norm_p"], "norm_c": OLD_C[loss] if w["norm_c"] is None else w["norm_c"], **(extra or {})}


def train_weighted(job: dict[str, Any]) -> dict[str, Any]:
    """benchmarks/flowmaps.train_and_eval (the zoo's training and evaluation) of a job whose `loss_settings` hold
    the weighting; the record gets the weighting's name."""
    return {**zoo.train_and_eval(job), "weighting": job["weighting"]}


def run(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """Run jobs in `workers` spawned processes (one thread each); a job failing in a worker reruns here."""
    if workers <= 1:
        return [_report(train_weighted(job)) for job in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=zoo._warm_up) as pool:
        futures = [pool.submit(train_weighted, job) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            try:
                record = future.result()
            except Exception as err:
                print(f"  {job['loss']} {job['weighting']} seed {job['seed']} failed in a worker "
                      f"({type(err).__name__}); rerunning here", flush=True)
                record = train_weighted(job)
            out.append(_report(record))
    return out


def _report(record: dict[str, Any]) -> dict[str, Any]:
    w2 = "  ".join(f"{k}:{v:.3f}" for k, v in record["w2"].items())
    print(f"  {record['loss']:9s} {record['data']:12s} {record['weighting']:8s} seed {record['seed']}  W2 {w2}",
          flush=True)
    return record


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (loss, data, weighting): W2 mean and std over seeds at each step count."""
    rows = []
    keys = sorted({(r["loss"], r["data"], r["weighting"]) for r in records},
                  key=lambda k: (LOSSES.index(k[0]), k[1], list(WEIGHTINGS).index(k[2])))
    for loss, data, weighting in keys:
        runs = [r for r in records if (r["loss"], r["data"], r["weighting"]) == (loss, data, weighting)]
        row: dict[str, Any] = {"loss": loss, "data": data, "weighting": weighting, "n_seeds": len(runs),
                               "loss_settings": runs[0]["loss_settings"]}
        for k in zoo.EVAL_STEPS:
            values = [r["w2"][str(k)] for r in runs]
            row[f"w2_{k}_mean"] = statistics.mean(values)
            row[f"w2_{k}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["w2_4_le_w2_1_all_seeds"] = all(r["w2"]["4"] <= r["w2"]["1"] for r in runs)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| loss | data | weighting | p | c | " + " | ".join(f"W2 {k} step(s)" for k in zoo.EVAL_STEPS)
             + " | W2(4) <= W2(1), every seed |", "|" + "---|" * (6 + len(zoo.EVAL_STEPS))]
    for r in rows:
        cells = " | ".join(f"{r[f'w2_{k}_mean']:.3f} +- {r[f'w2_{k}_std']:.3f}" for k in zoo.EVAL_STEPS)
        s = r["loss_settings"]
        c = f"{s['norm_c']:g}" if s["norm_p"] > 0 else "-"
        lines.append(f"| {r['loss']} | {r['data']} | {r['weighting']} | {s['norm_p']:g} | {c} | {cells} | "
                     f"{'yes' if r['w2_4_le_w2_1_all_seeds'] else 'no'} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 100 steps, seed 0, moons, n_eval 200")
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--datasets", default="moons,checkerboard")
    p.add_argument("--weightings", default=",".join(WEIGHTINGS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--n-eval", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2, help="training processes (one thread each)")
    p.add_argument("--extra", default="{}", help="further loss settings as JSON, e.g. '{\"diagonal_fraction\": 0.75}'")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.n_eval, args.seeds, args.datasets = 100, 200, "0", "moons"
        if args.out == str(RESULTS):
            args.out = "/tmp/fmlab_meanflow_weighting_quick.json"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    for name in losses:
        if name not in LOSSES:
            raise ValueError(f"--losses must name some of {LOSSES}, got {name!r}")
    weightings = [s.strip() for s in args.weightings.split(",") if s.strip()]
    for name in weightings:
        if name not in WEIGHTINGS:
            raise ValueError(f"--weightings must name some of {sorted(WEIGHTINGS)}, got {name!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = json.loads(args.extra)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    started = time.time()
    jobs = [{"loss": loss, "data": data, "coupling": "independent", "steps": args.steps, "seed": seed,
             "n_eval": args.n_eval, "weighting": w, "loss_settings": loss_settings(loss, w, extra)}
            for data in datasets for loss in losses for w in weightings for seed in seeds]
    print(f"{len(jobs)} runs ({len(losses)} losses x {len(datasets)} data sets x {len(weightings)} weightings x "
          f"{len(seeds)} seeds), {args.workers} workers ...", flush=True)
    records = run(jobs, args.workers)
    rows = summarise(records)
    result = {"created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": "python benchmarks/meanflow_weighting.py " + " ".join(argv if argv is not None
                                                                              else sys.argv[1:]),
              "config": {**zoo.ZOO_MODEL, "steps": args.steps, "n_eval": args.n_eval, "seeds": seeds,
                         "datasets": datasets, "eval_steps": list(zoo.EVAL_STEPS), "coupling": "independent"},
              "weightings": {w: WEIGHTINGS[w] for w in weightings}, "old_c": OLD_C, "extra": extra,
              "wall_s": round(time.time() - started, 1), "summary": rows, "runs": records}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))
    print(f"wrote {out} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
