"""Quality of a CPU run on the procedural faces against training steps: the data behind lab 13's CPU plan.

    python benchmarks/faces_cpu.py                                   # faces32 (tiny UNet, 32 px, batch 32), 3000 steps
    python benchmarks/faces_cpu.py --lr 2e-3 --steps 3000 --seed 1
    python benchmarks/faces_cpu.py --steps 40 --eval-at 20,40 --n 16  # a smoke run (seconds)

Trains flow matching with fmlab's image trainer (the `faces32` configuration, with the overrides given) and, at each
step of --eval-at, samples --n images with 50 Euler steps from the EMA weights (several EMA decays are tracked in the
same run, so one run compares them) and scores them against --n training images with the weights-free proxies of
fmlab.fid (SWD-LapPyr x1e3 and SWD-pixels; lower is better), beside the same scores for Gaussian noise images (an
untrained model). Steps are machine-independent; the throughput line converts them to minutes on this machine.
Results are appended as JSON lines to benchmarks/results/faces_cpu.jsonl and the 50-step grids saved as PNG.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmlab.fid import image_scores  # noqa: E402
from fmlab.image_grid import make_grid, save_png, to_uint8  # noqa: E402
from fmlab.runs import sample_images  # noqa: E402
from fmlab.train import ema_decay_at, ema_update  # noqa: E402
from fmlab.train_images import ImageTrainer, image_config, image_dataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def scores(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {s.name: round(float(s.value), 4) for s in image_scores(images, reference)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--eval-at", default="250,500,1000,2000,3000")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--emas", default="0.999,0.9995", help="EMA decays tracked side by side")
    parser.add_argument("--n", type=int, default=256, help="samples and reference images per score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    eval_at = sorted(int(k) for k in args.eval_at.split(","))
    decays = [float(d) for d in args.emas.split(",")]
    config = image_config("faces32", steps=args.steps, lr=args.lr, batch_size=args.batch_size, preset=args.preset,
                          image_size=args.image_size, ema_decay=decays[0], seed=args.seed, sample_every=0,
                          ckpt_every=0, log_every=1, threads=args.threads, device="cpu")  # a record each step
    trainer = ImageTrainer(config)
    reference = image_dataset(config).images
    reference = reference[np.random.default_rng(123).choice(len(reference), args.n, replace=False)]
    noise = to_uint8(torch.randn(args.n, 3, args.image_size, args.image_size,
                                 generator=torch.Generator().manual_seed(7)).clamp(-1, 1))
    emas = {d: copy.deepcopy(trainer.model).requires_grad_(False) for d in decays[1:]}
    RESULTS.mkdir(exist_ok=True)
    grids = RESULTS / "faces_cpu"
    grids.mkdir(exist_ok=True)
    run_config = {"preset": config.model.preset, "image_size": config.model.image_size,
                  **{k: getattr(config, k) for k in ("batch_size", "lr", "warmup", "seed")}}
    header = {"kind": "run", "device": f"CPU {platform.machine()}, {trainer.threads} thread(s), torch "
                                       f"{torch.__version__}", "config": run_config,
              "noise": scores(noise, reference), "tag": args.tag}
    print(json.dumps(header))
    lines = [header]
    start_cpu, start = time.process_time(), time.perf_counter()
    spent = {"s": 0.0, "cpu": 0.0}  # time spent evaluating, not training

    def on_record(step: int, record: dict) -> None:
        for d, model in emas.items():  # the trainer's schedule, k = step - 1 updates before this one
            ema_update(model, trainer.model, ema_decay_at(step - 1, d))
        if step not in eval_at:
            return
        t0, c0 = time.perf_counter(), time.process_time()
        train_s, train_cpu = t0 - start - spent["s"], c0 - start_cpu - spent["cpu"]
        for d, model in [(decays[0], trainer.ema), *emas.items()]:
            images = to_uint8(sample_images(model.eval(), args.n, 50, seed=1, loss="cfm"))
            save_png(grids / f"{args.tag or 'run'}_seed{args.seed}_ema{d}_step{step}.png", make_grid(images[:36], 6))
            line = {"kind": "eval", "step": step, "ema": d, "train_s": round(train_s, 1),
                    "train_cpu_s": round(train_cpu, 1), "loss": record.get("loss"), **scores(images, reference),
                    "n": args.n, "tag": args.tag, "seed": args.seed}
            print(json.dumps(line), flush=True)
            lines.append(line)
        spent["s"] += time.perf_counter() - t0
        spent["cpu"] += time.process_time() - c0

    trainer.fit(progress=False, callback=on_record)
    with open(RESULTS / "faces_cpu.jsonl", "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
