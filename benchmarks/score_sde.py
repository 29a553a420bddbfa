"""Stochastic sampling with the SDE family that shares the flow's marginals, measured on the 8-mode mixture.

    dx = [v(x, t) + eta sigma_t grad log p_t(x)] dt + sqrt(2 eta sigma_t) dW        (fmlab.solvers.sample_sde)

1. `marginals`: the closed-form field v* (and its score): W2 between SDE samples and fresh samples of the exact
   marginal, at t = 0.5 and t = 1, for each noise level eta; the data-against-data noise floor at the same n; and the
   score correction with the wrong sign (eta = 1) as a control that must fail.
2. `imperfect`: networks trained for few steps (under-trained) and more steps: W2, mode balance (total variation of the
   fraction of samples nearest each mode) and mode blur (rms distance to the nearest mode centre, 0.50 for the data)
   against eta, over training seeds. The difference W2(eta) - W2(0) is paired (same training seed, same noise).

    python benchmarks/score_sde.py marginals --n 2000 --seeds 3 --steps 200
    python benchmarks/score_sde.py imperfect --n 2000 --train-seeds 3 --sample-seeds 2 --train-steps 200,500,4000

Each prints its table and writes benchmarks/results/score_sde_<part>.json. One CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fmlab.data import gmm_2d
from fmlab.metrics import wasserstein
from fmlab.paths import eps_from_velocity
from fmlab.solvers import euler_maruyama, noise_level_diffusion
from fmlab.train import Trainer
from fmlab.viz.score_sde import eta_sweep, sde_config
from fmlab.viz.training import data_fn

RESULTS = Path(__file__).resolve().parent / "results"
ETAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def marginal_floor(n: int, t: float, seeds: int) -> list[float]:
    """W2 between two independent exact samples of p_t of size n, one pair per seed."""
    gmm, out = gmm_2d("8modes"), []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(50_000 + seed)
        a, b = (t * gmm.sample(n, generator=g) + (1 - t) * torch.randn(n, 2, generator=g) for _ in range(2))
        out.append(wasserstein(a, b))
    return out


def wrong_sign(n: int, seeds: int, steps: int, eta: float = 1.0) -> list[float]:
    """W2 at t = 1 of the SDE whose score correction has the wrong sign: v - eta sigma score."""
    gmm, out = gmm_2d("8modes"), []
    field = lambda x, t: gmm.velocity(x, t)  # noqa: E731
    drift = lambda x, t: field(x, t) + eta * eps_from_velocity(field(x, t), x, t)  # noqa: E731  (sign flipped)
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(n, 2, generator=g)
        ref = gmm.sample(n, generator=g)
        x = euler_maruyama(drift, noise_level_diffusion(eta), x0, steps=steps,
                           generator=torch.Generator().manual_seed(10_000 + seed))
        out.append(wasserstein(x, ref))
    return out


def marginals(args: argparse.Namespace) -> dict:
    gmm = gmm_2d("8modes")
    field = lambda x, t: gmm.velocity(x, t)  # noqa: E731
    result: dict = {"n": args.n, "seeds": args.seeds, "steps": args.steps, "etas": ETAS}
    print(f"closed-form v*, n = {args.n}, {args.seeds} seeds, {args.steps} Euler-Maruyama steps on [0, 1]; "
          "W2 mean ± std over seeds")
    for t_end in (0.5, 1.0):
        sweep = eta_sweep(field, ETAS, range(args.seeds), args.n, steps=args.steps, t_end=t_end)
        floor = marginal_floor(args.n, t_end, args.seeds)
        result[f"t={t_end}"] = {"w2": {str(e): sweep.w2[e] for e in ETAS}, "floor": floor}
        print(f"t = {t_end}: floor {_ms(floor)}; " + "; ".join(f"eta {e:g}: {_ms(sweep.w2[e])}" for e in ETAS))
    bad = wrong_sign(args.n, args.seeds, args.steps)
    result["wrong_sign_eta1"] = bad
    print(f"wrong sign of the score correction, eta = 1, t = 1: {_ms(bad)}")
    return result


def imperfect(args: argparse.Namespace) -> dict:
    result: dict = {"n": args.n, "steps": args.steps, "etas": ETAS, "runs": {}}
    for train_steps in args.train_steps:
        rows = {"w2": [], "tv": [], "rms": []}  # per training seed: list over eta (mean over sampling seeds)
        for seed in range(args.train_seeds):
            trainer = Trainer(sde_config(train_steps, seed), data_fn=data_fn("8modes"))
            trainer.fit(progress=False)
            sweep = eta_sweep(trainer.ema.eval(), ETAS, [100 * seed + k for k in range(args.sample_seeds)],
                              args.n, steps=args.steps)
            for what in rows:
                rows[what].append([float(np.mean(getattr(sweep, what)[e])) for e in ETAS])
        result["runs"][train_steps] = rows
        w2 = np.asarray(rows["w2"])
        print(f"\n{train_steps} training steps, {args.train_seeds} training seeds x {args.sample_seeds} sampling "
              f"seeds, n = {args.n}, {args.steps} EM steps; mean ± std over training seeds")
        print(f"{'eta':>26}" + "".join(f"{e:>16g}" for e in ETAS))
        for what, label in (("w2", "W2"), ("tv", "mode balance (TV)"), ("rms", "mode blur (rms, data 0.50)")):
            vals = np.asarray(rows[what])
            print(f"{label:>26}" + "".join(f"{_ms(vals[:, i]):>16}" for i in range(len(ETAS))))
        diff = w2 - w2[:, :1]
        print(f"{'W2(eta) - W2(0), paired':>26}" + "".join(f"{_ms(diff[:, i]):>16}" for i in range(len(ETAS))))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("marginals", "imperfect"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="Euler-Maruyama steps on [0, 1]")
    parser.add_argument("--train-seeds", type=int, default=3)
    parser.add_argument("--sample-seeds", type=int, default=2)
    parser.add_argument("--train-steps", type=lambda s: [int(v) for v in s.split(",")], default=[200, 500, 4000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.process_time()
    result = marginals(args) if args.part == "marginals" else imperfect(args)
    result["cpu_s"] = time.process_time() - start
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"score_sde_{args.part}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path} ({result['cpu_s']:.0f} s CPU)")


if __name__ == "__main__":
    main()
