"""One prepared check of everything fmlab claims about GPUs, in under 10 minutes on one CUDA device.

    python scripts/gpu_check.py                      # on a CUDA machine: writes benchmarks/results/gpu_check.{json,md}
    python scripts/gpu_check.py --dry-run --out /tmp/gpu_check   # anywhere (CI): the same code at tiny sizes

It measures, on the first visible device:

1. image-training throughput and peak memory per UNet preset at 64 px: flow matching with bf16 autocast (where the
   device supports it), channels-last, and torch.compile off and on ('inductor');
2. a JVP loss (MeanFlow, fp32) on the UNet, beside flow matching;
3. a one-GPU torchrun run of `python -m fmlab train` (the DDP code path: explicit gradient averaging), its steps/s;
4. the cost of minibatch OT pairing: a 2D OT-CFM run against plain CFM, steps/s side by side;
5. lab 13's plan on this device (fmlab.images.plan_lab): the measured throughput, steps per run, estimated minutes.

The JSON holds every number with the device line; the Markdown table is what benchmarks/README.md ("GPU check")
includes. `--dry-run` runs every section at tiny sizes on whatever device there is (the CPU in CI), so that the
script is known to work before a GPU is ever lent; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmlab.device import pick_device  # noqa: E402
from fmlab.image_sizing import measure_throughput  # noqa: E402
from fmlab.train import TrainConfig, Trainer  # noqa: E402
from fmlab.train_images import ImageTrainConfig  # noqa: E402

FULL = dict(presets=("small", "base", "large"), image_size=64, batch_size=128, steps=20, warmup=5, ddp_steps=200,
            ot_steps=300, ot_batch=256)
DRY = dict(presets=("tiny",), image_size=16, batch_size=2, steps=1, warmup=1, ddp_steps=2, ot_steps=3, ot_batch=16)


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{device.type} ({platform.machine()}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def image_rows(device: torch.device, size: dict) -> list[dict]:
    """Sections 1 and 2: a row per (preset, loss, compile) with images/s, ms/step and peak memory."""
    rows = []
    cases = [("cfm", "off"), ("cfm", "inductor"), ("meanflow", "off")]
    for preset in size["presets"]:
        for loss, compile_ in cases:
            if compile_ != "off" and device.type != "cuda":
                continue  # torch.compile on a CPU needs a C++ toolchain; the GPU check is what it is for
            config = ImageTrainConfig(data="faces", preset=preset, loss=loss, image_size=size["image_size"],
                                      batch_size=size["batch_size"], n_faces=max(64, size["batch_size"]),
                                      device=str(device), compile=compile_, ckpt_every=0, sample_every=0)
            start = time.perf_counter()
            stats = measure_throughput(config, steps=size["steps"], warmup=size["warmup"])
            rows.append({"preset": preset, "loss": loss, "compile": compile_, "batch": size["batch_size"],
                         "image_size": size["image_size"], **{k: round(v, 2) for k, v in stats.items()},
                         "wall_s": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def torchrun_row(device: torch.device, size: dict, dry: bool) -> dict:
    """Section 3: `torchrun --nproc_per_node 1 -m fmlab train` for a few steps; steps/s from its own timing."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "fmlab",
               "train", "--config", "faces32" if dry else "faces64", "--steps", str(size["ddp_steps"]),
               "--out", str(Path(tmp) / "run"), "--no-progress", "--device", device.type,
               *(["--image-size", "16", "--batch-size", "4", "--n-faces", "16", "--sample-every", "0"] if dry else [])]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        wall = time.perf_counter() - start
        lines = (done.stdout + done.stderr).strip().splitlines()
        trained = next((line for line in reversed(lines) if line.startswith("trained ")), "")
        return {"command": " ".join(cmd[2:]), "returncode": done.returncode, "wall_s": round(wall, 1),
                "summary": trained or "\n".join(lines[-5:])}


def ot_row(device: torch.device, size: dict) -> dict:
    """Section 4: steps/s of 2D flow matching with the independent coupling and with exact minibatch OT."""
    out = {}
    for coupling in ("independent", "ot"):
        config = TrainConfig(data="moons", steps=size["ot_steps"], batch_size=size["ot_batch"], coupling=coupling,
                             device=str(device), log_every=size["ot_steps"])
        trainer = Trainer(config)
        start = time.perf_counter()
        trainer.fit(progress=False)
        out[coupling] = round(size["ot_steps"] / (time.perf_counter() - start), 1)
    return {"batch": size["ot_batch"], "steps_per_s": out, "ot_over_cfm": round(out["ot"] / out["independent"], 3)}


def plan_row(device: torch.device, dry: bool) -> dict:
    """Section 5: lab 13's plan on this device and its estimated length (four runs, MeanFlow ~2x a cfm step)."""
    from fmlab.images import plan_lab

    plan = plan_lab(fast=dry, device=str(device))
    cfm_min = plan.steps * plan.batch_size / plan.images_per_s / 60
    return {**{k: v for k, v in dataclasses.asdict(plan).items() if k not in ("data_root", "eval_steps")},
            "cfm_minutes_per_run": round(cfm_min, 2), "describe": plan.describe()}


def markdown(result: dict) -> str:
    lines = [f"Device: {result['device']}; {result['date']}; `python scripts/gpu_check.py"
             f"{' --dry-run' if result['dry_run'] else ''}` ({result['total_s']:.0f} s)", "",
             "| preset | loss | compile | batch | images/s | ms/step | peak memory |",
             "|--------|------|---------|------:|---------:|--------:|------------:|"]
    for r in result["images"]:
        lines.append(f"| {r['preset']} | {r['loss']} | {r['compile']} | {r['batch']} | {r['images_per_s']:.1f} | "
                     f"{r['step_ms']:.0f} | {r['peak_mem_mb']:.0f} MB |")
    ot, ddp, plan = result["ot"], result["torchrun"], result["plan"]
    lines += ["", f"- torchrun, one process: return code {ddp['returncode']}, {ddp['wall_s']} s: {ddp['summary']}",
              f"- OT-CFM / CFM steps per second at batch {ot['batch']}: {ot['ot_over_cfm']} "
              f"({ot['steps_per_s']['ot']} against {ot['steps_per_s']['independent']})",
              f"- lab 13's plan: {plan['kind']}, {plan['preset']} at {plan['image_size']} px, batch "
              f"{plan['batch_size']}, {plan['images_per_s']:.0f} images/s, {plan['steps']} steps per run "
              f"(~{plan['cfm_minutes_per_run']} min of flow matching per run)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any device (CI)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for gpu_check.{json,md}")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type != "cuda" and not args.dry_run:
        parser.error(f"no CUDA device here ({device}); use --dry-run to exercise the script at tiny sizes")
    size = DRY if args.dry_run else FULL
    start = time.perf_counter()
    result = {"device": device_line(device), "dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d"),
              "images": image_rows(device, size), "torchrun": torchrun_row(device, size, args.dry_run),
              "ot": ot_row(device, size), "plan": plan_row(device, args.dry_run)}
    result["total_s"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0 if result["torchrun"]["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
