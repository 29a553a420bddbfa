"""Held-out negative log-likelihood of a trained 2D flow, by the ODE with the exact trace, against the true density.

The network of the score/SDE lab (fmlab.viz.score_sde.sde_config: flow matching on the 8-mode mixture) is trained
with each seed; log p_model(x) = log N(x0) - int_0^1 div v dt is integrated backward from n held-out data points
(fmlab.likelihood.log_likelihood, RK4); the mixture's log-density is exact. Reports nats per point and bits per
dimension (nats / (2 ln 2)) of the model and of the truth, and their paired gap (an estimate of KL(data || model));
mean ± std over training seeds. The held-out points are the same for every seed.

    python benchmarks/likelihood.py --n 2000 --seeds 3 --train-steps 4000 --ode-steps 50

Prints the table and writes benchmarks/results/likelihood.json. One CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fmlab.data import gmm_2d
from fmlab.likelihood import log_likelihood
from fmlab.train import Trainer
from fmlab.viz.likelihood import nll_summary
from fmlab.viz.score_sde import sde_config
from fmlab.viz.training import data_fn

RESULTS = Path(__file__).resolve().parent / "results"


def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="held-out points")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds")
    parser.add_argument("--train-steps", type=int, default=4000)
    parser.add_argument("--ode-steps", type=int, default=50, help="RK4 steps of the backward solve")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.process_time()
    gmm = gmm_2d("8modes")
    held_out = gmm.sample(args.n, generator=torch.Generator().manual_seed(12_345)).float()
    true_lp = gmm.log_prob(held_out.double())
    rows: dict[str, list[float]] = {k: [] for k in ("nats_model", "nats_true", "nats_gap", "bpd_model", "bpd_true",
                                                    "bpd_gap", "gap_se")}
    for seed in range(args.seeds):
        trainer = Trainer(sde_config(args.train_steps, seed), data_fn=data_fn("8modes"))
        trainer.fit(progress=False)
        model_lp = log_likelihood(trainer.ema.eval(), held_out, steps=args.ode_steps).log_prob.double()
        s = nll_summary(model_lp, true_lp, dim=2)
        for which in ("model", "true", "gap"):
            rows[f"nats_{which}"].append(s.nats(which)[0])
            rows[f"bpd_{which}"].append(s.bpd(which)[0])
        rows["gap_se"].append(s.nats("gap")[1])
        print(f"seed {seed}:\n{s.table()}")
    print(f"\n{args.train_steps} training steps, {args.seeds} training seeds, {args.n} held-out points, "
          f"RK4 {args.ode_steps} steps, exact trace; mean ± std over training seeds")
    for key, label in (("model", "model (ODE)"), ("true", "true density"), ("gap", "gap = KL estimate")):
        print(f"{label:>20}: {_ms(rows['nats_' + key])} nats / point, {_ms(rows['bpd_' + key])} bits / dim")
    result = {**vars(args), **rows, "cpu_s": time.process_time() - start}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "likelihood.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path} ({result['cpu_s']:.0f} s CPU)")


if __name__ == "__main__":
    main()
