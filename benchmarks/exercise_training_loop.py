"""The W2 a plain training loop reaches under lab 03's exercise 6 settings, over seeds: the basis of LOOP_W2.

Runs fmlab.exercises.training's setting (MLP hidden 64, depth 3; Adam lr 2e-3; 600 steps of batch 256 of fmlab's cfm
loss on the 8 Gaussians; 1000 samples by 50 Euler steps; exact W2 to 1000 data points) for seeds 0-2, and the floor
(W2 between two 1000-point data samples, 3 repeats). Prints each seed and mean +- std (ddof 1).

    python benchmarks/exercise_training_loop.py
"""

import statistics
import time

import torch

from fmlab.data import gmm_2d
from fmlab.exercises import training as ex
from fmlab.metrics import wasserstein
from fmlab.models.parametrisation import build_model
from fmlab.solvers import solve


def run(seed: int) -> float:
    gmm = gmm_2d("8modes")
    torch.manual_seed(seed)
    model = build_model(hidden=64, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=ex.LOOP_LR)
    for _ in range(ex.LOOP_STEPS):
        x1 = gmm.sample(ex.LOOP_BATCH).float()
        x0, t = torch.randn_like(x1), torch.rand(ex.LOOP_BATCH)
        loss = ex.reference_cfm_loss(model, x0, x1, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(100 + seed)
    samples = solve(model, torch.randn(ex.LOOP_SAMPLES, 2, generator=g), steps=ex.LOOP_SOLVER_STEPS)
    return wasserstein(samples, gmm.sample(ex.LOOP_SAMPLES, generator=g).float())


def main() -> None:
    torch.set_num_threads(1)
    floor, floor_std = ex.loop_floor()
    print(f"floor (two 1000-point data samples, 3 repeats): {floor:.3f} +- {floor_std:.3f}")
    values = []
    for seed in range(3):
        start = time.process_time()
        values.append(run(seed))
        print(f"seed {seed}: W2 = {values[-1]:.3f} ({time.process_time() - start:.1f} s CPU)")
    print(f"W2 after {ex.LOOP_STEPS} steps: {statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} "
          f"(3 seeds); pass threshold LOOP_W2 = {ex.LOOP_W2}")


if __name__ == "__main__":
    main()
