"""Classifier-free guidance on the labelled 8 Gaussians: does the conditional model match the class-conditional
mixture at w = 1, and what do the model, the exact guided ODE and the exact tilted density give against w?

For each seed: train the guidance lab's class-conditional model (fmlab.viz.guidance.lab_config: MLP 3 x 128, cfm,
label dropout 0.2, `--steps` optimizer steps, one thread; --hidden / --depth change the MLP), then with n samples
per class

- W2(model at w = 1, p(x | c)) for both classes: `--repeats` times, n model samples from fresh noise against n fresh
  exact draws of p(x | c), averaged (exact W2 between 2000 points in 2D varies by 10-30% from draw to draw, mostly
  with how many points each mode got); the floor: W2 between two independent exact draws, averaged over as many
  pairs; the check is mean W2 / mean floor <= 1.3. As a control, the exact guided ODE at w = 1 (a perfect model)
  from the same noise against the same targets: its ratio should be 1 within the noise;
- W2 to p(x | c) of class 0 against w in 0, 1, ..., 8 for the model (Euler, 50 steps), the exact guided ODE (RK4,
  50 steps) and the exact tilted density p(x | c)^w p(x)^(1 - w).

W2 is exact (fmlab.metrics.wasserstein, an optimal assignment between the two point sets). Writes a JSON file and
prints a table (mean +- std over seeds).

    python benchmarks/guidance.py --seeds 0 1 2 --steps 6000 --n 2000 --repeats 5 \\
        --out benchmarks/results/guidance.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fmlab.guidance import sample_guided
from fmlab.labkit import train_cached
from fmlab.metrics import wasserstein
from fmlab.viz.guidance import GUIDANCE_MODEL, P_UNCOND, W_GRID, GuidanceStudy, lab_config


def run_seed(seed: int, steps: int, n: int, repeats: int, hidden: int, depth: int) -> dict:
    start = time.process_time()
    trainer = train_cached(lab_config(steps, seed=seed, hidden=hidden, depth=depth), progress=False)
    train_cpu = time.process_time() - start
    study = GuidanceStudy(trainer.ema, n=n, seed=1000 + seed)
    out = {"seed": seed, "train_cpu_s": train_cpu, "classes": {}}
    for c in (0, 1):
        g = torch.Generator().manual_seed(10_000 * (seed + 1) + 100 * c)
        model_w2, exact_w2, floor_w2 = [], [], []
        for _ in range(repeats):  # independent noise, targets and floor pairs in each repeat
            x0 = torch.randn(n, 2, generator=g)
            target, a, b = (study.mixture.sample_class(n, c, g).double() for _ in range(3))
            model_w2.append(wasserstein(sample_guided(trainer.ema, x0, c, 1.0, steps=study.steps).double(), target))
            exact_w2.append(wasserstein(study.mixture.guided_flow(x0, c, 1.0, steps=study.exact_steps), target))
            floor_w2.append(wasserstein(a, b))
        floor = statistics.mean(floor_w2)
        out["classes"][c] = {"w2_w1": statistics.mean(model_w2), "exact_w1": statistics.mean(exact_w2),
                             "floor": floor, "ratio": statistics.mean(model_w2) / floor,
                             "exact_ratio": statistics.mean(exact_w2) / floor}
    out["curve_class0"] = {kind: study.curve(kind, 0) for kind in ("model", "ode", "tilted")}
    return out


def summary(runs: list[dict]) -> str:
    def ms(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    lines = ["| class | W2(model at w = 1, p(x|c)) | floor | ratio | exact ODE's ratio (control) |",
             "|---|---:|---:|---:|---:|"]
    for c in (0, 1):
        rows = [r["classes"][c] for r in runs]
        lines.append(f"| {c} | {ms([x['w2_w1'] for x in rows])} | {ms([x['floor'] for x in rows])} | "
                     f"{ms([x['ratio'] for x in rows])} | {ms([x['exact_ratio'] for x in rows])} |")
    ratios = [r["classes"][c]["ratio"] for r in runs for c in (0, 1)]
    lines.append(f"\nall ratios (seed x class): max {max(ratios):.3f}, mean {statistics.mean(ratios):.3f}")
    lines += ["", "| w | model | exact guided ODE | exact tilted |", "|---:|---:|---:|---:|"]
    for i, w in enumerate(W_GRID):
        cells = [ms([r["curve_class0"][k][i] for r in runs]) for k in ("model", "ode", "tilted")]
        lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=GUIDANCE_MODEL["hidden"])
    parser.add_argument("--depth", type=int, default=GUIDANCE_MODEL["depth"])
    parser.add_argument("--out", default="benchmarks/results/guidance.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, args.steps, args.n, args.repeats, args.hidden, args.depth))
        print(f"seed {seed}: " + ", ".join(f"class {c} W2 {v['w2_w1']:.3f} / floor {v['floor']:.3f} = "
                                          f"{v['ratio']:.3f}" for c, v in runs[-1]["classes"].items())
              + f" (training {runs[-1]['train_cpu_s']:.0f} CPU s)", flush=True)
    text = summary(runs)
    print(text)
    result = {"command": "python benchmarks/guidance.py " + " ".join(
        [f"--seeds {' '.join(map(str, args.seeds))}", f"--steps {args.steps}", f"--n {args.n}",
         f"--repeats {args.repeats}", f"--hidden {args.hidden}", f"--depth {args.depth}", f"--out {args.out}"]),
        "model": {**GUIDANCE_MODEL, "hidden": args.hidden, "depth": args.depth}, "p_uncond": P_UNCOND,
        "w_grid": list(W_GRID), "runs": runs, "summary": text}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
