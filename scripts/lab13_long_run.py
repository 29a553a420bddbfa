"""Lab 13's four runs, trained long, with small artefacts the lab shows beside the student's live run.

    python scripts/lab13_long_run.py --minutes 60                        # a CPU: an hour of flow matching per model
    python scripts/lab13_long_run.py --gpus 8 --minutes 30               # CelebA-64 (if $FMLAB_CELEBA) with torchrun
    python scripts/lab13_long_run.py --steps 2 --n 8 --out /tmp/lab13    # a smoke run
    python scripts/lab13_long_run.py --steps 1500 --no-train             # sample and score the runs again

The plan is lab 13's (fmlab.images.plan_lab: the device's kind, data, preset, batch and learning rate) with
--minutes of flow matching per model (MeanFlow's JVP makes its run longer) or a fixed --steps. Every run goes through
the command line, `python -m fmlab train` (with `torchrun --nproc_per_node GPUS` when --gpus > 1, batch per GPU),
into RUNS/<loss>; then each model draws --n samples at 1, 2, 4 and 50 steps from the same noise, and the script
writes into --out (default labs/artefacts/13_celeba64, where the lab looks):

- grid_<loss>_<steps>.png: the first 16 samples (a few kB each);
- scores.json: lab 13's score rows (fmlab.images.lab_scores) for every model and step count, plus untrained noise;
- loss_curves.json: loss against step per model (at most 200 points each);
- meta.json: the command, device, date, plan, steps and wall-clock minutes of each run.

No weights are written into --out (the runs stay in --runs). Re-running the same command on the same device type
gives the same artefacts (fixed seeds; GPU kernels may differ in the last bits).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmlab.image_grid import make_grid, save_png, to_uint8  # noqa: E402
from fmlab.images import LAB_RUNS, LabPlan, lab_scores, plan_lab  # noqa: E402
from fmlab.runs import load_image_run, sample_images  # noqa: E402
from fmlab.train import METRICS_NAME  # noqa: E402

DEFAULT_OUT = ROOT / "labs" / "artefacts" / "13_celeba64"
MAX_CURVE_POINTS = 200


def train_argv(plan: LabPlan, loss: str, out: Path) -> list[str]:
    """`python -m fmlab train` arguments for lab 13's configuration of `loss` (fmlab.images.LabPlan.config)."""
    c = plan.config(loss)
    argv = ["train", "--config", "celeba64" if c.data == "celeba" else "faces64", "--loss", loss,
            "--preset", c.model.preset, "--image-size", str(c.model.image_size), "--batch-size", str(c.batch_size),
            "--lr", str(c.lr), "--steps", str(c.steps), "--warmup", str(c.warmup), "--ema-decay", str(c.ema_decay),
            "--dropout", str(c.model.dropout), "--n-faces", str(c.n_faces), "--seed", str(c.seed),
            "--log-every", str(max(1, c.steps // MAX_CURVE_POINTS)), "--ckpt-every", "0", "--sample-every", "0",
            "--out", str(out), "--overwrite", "--no-progress"]
    if c.data_root:
        argv += ["--data-root", c.data_root]
    return argv + ["--device", plan.device] if plan.kind != "gpu" else argv


def train(argv: list[str], gpus: int) -> float:
    """Run `python -m fmlab train` (under torchrun with `gpus` > 1); returns wall-clock minutes."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
                if gpus > 1 else [sys.executable])
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    subprocess.run([*launcher, "-m", "fmlab", *argv], check=True, env=env)
    return (time.perf_counter() - start) / 60


def describe_device(device: Any, gpus: int) -> str:
    """'cpu: <processor>, N physical cores (torch threads T)' or 'cuda: <GPU name> x gpus'."""
    import platform

    import torch

    from fmlab.device import physical_cores

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}" + (f" x {gpus}" if gpus > 1 else "")
    name = platform.processor() or platform.machine()
    return f"cpu: {name}, {physical_cores()} physical cores (torch threads {torch.get_num_threads()})"


def loss_curve(run: Path) -> list[list[float]]:
    """[[step, loss], ...] from the run's metrics.jsonl."""
    records = [json.loads(line) for line in (run / METRICS_NAME).read_text().splitlines() if line.strip()]
    return [[r["step"], r["loss"]] for r in records if "loss" in r][-MAX_CURVE_POINTS:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=60.0, help="minutes of flow matching per model")
    budget.add_argument("--steps", type=int, default=None, help="fixed training steps per model instead")
    parser.add_argument("--gpus", type=int, default=1, help="> 1: torchrun over this many GPUs")
    parser.add_argument("--n", type=int, default=None, help="samples per model and step count (default: the plan's)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--runs", default=str(ROOT / "runs" / "lab13"), help="where the runs (weights) go")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where the artefacts go")
    parser.add_argument("--no-train", action="store_true",
                        help="use the runs already in --runs: sample and score them again (same seeds, same artefacts)")
    args = parser.parse_args(argv)
    plan = plan_lab(budget_s=60 * args.minutes, fast=False, device=args.device)
    if args.steps is not None:
        plan = dataclasses.replace(plan, steps=args.steps)
    if args.n is not None:
        plan = dataclasses.replace(plan, n_eval=args.n)
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python scripts/lab13_long_run.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "plan": {k: v for k, v in dataclasses.asdict(plan).items()
                                                         if k != "data_root"},
            "describe": plan.describe(), "runs": {}}
    samples, curves = {}, {}
    before = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    if args.no_train:  # the training command and times are those of the run that trained
        meta.update(command=before.get("command", meta["command"]), date=before.get("date", meta["date"]))
    for label, loss in LAB_RUNS.items():
        run = runs / loss
        minutes = (before.get("runs", {}).get(label, {}).get("minutes") if args.no_train
                   else train(train_argv(plan, loss, run), args.gpus))
        model, config = load_image_run(run, device=args.device)
        samples[label] = {k: to_uint8(sample_images(model, plan.n_eval, k, seed=1, loss=loss))
                          for k in plan.eval_steps}
        for k, images in samples[label].items():
            save_png(out / f"grid_{loss}_{k}.png", make_grid(images[:16], 4))
        curves[label] = loss_curve(run)
        meta["runs"][label] = {"loss": loss, "steps": config.steps,
                               "minutes": None if minutes is None else round(minutes, 2)}
        print(f"{label}: {config.steps} steps" + ("" if minutes is None else f" in {minutes:.1f} min"), flush=True)
    meta["device"] = describe_device(next(model.parameters()).device, args.gpus)
    (out / "scores.json").write_text(json.dumps(lab_scores(plan, samples), indent=1) + "\n", encoding="utf-8")
    (out / "loss_curves.json").write_text(json.dumps(curves) + "\n", encoding="utf-8")
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
