"""Image training throughput: images/s, step time and peak memory per UNet preset and loss, on this device.

    python benchmarks/images.py                                   # every preset x (cfm, meanflow, lsd), 64 px
    python benchmarks/images.py --presets small base --batch-size 128 --steps 20     # on a GPU
    python benchmarks/images.py --presets tiny mini --batch-size 8 --steps 3        # a quick CPU look
    python benchmarks/images.py --presets tiny mini small --batch-size 8 32 128 --image-size 32   # memory by batch

Each cell builds a fresh fmlab.train_images.ImageTrainer on procedural faces (no download; the data loader is part
of the step, as in training), runs --warmup untimed steps, then times --steps steps. Reported: images/s and ms per
step (wall clock, device synchronised), CPU ms per step (process time, all threads: on a shared CPU machine this
is what an idle core would take), and peak memory during the timed steps (CUDA: max allocated; CPU: the process's
peak resident set size, reset before the timed steps on Linux, so it includes the Python process, ~0.3-0.5 GB;
each cell then runs in a process of its own, so that no cell's peak holds memory an earlier one freed).
MeanFlow and LSD take forward-mode JVPs, so on GPUs
they run in fp32 while flow matching uses bf16 autocast (fmlab.train_images, amp='auto'); --amp overrides.
Numbers go to stdout as a Markdown table; copy them into benchmarks/README.md ("Images") with the device line.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmlab.models.unet import UNET_PRESETS, UNetConfig  # noqa: E402
from fmlab.train_images import ImageTrainConfig, ImageTrainer, peak_memory  # noqa: E402

LOSSES = ("cfm", "meanflow", "lsd")  # flow matching, MeanFlow, and another JVP loss (Lagrangian self-distillation)


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return (f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
            f"torch {torch.__version__}")


def bench(preset: str, loss: str, batch_size: int, args: argparse.Namespace) -> dict:
    config = ImageTrainConfig(data="faces", model=UNetConfig(preset=preset, image_size=args.image_size, dropout=0.1),
                              loss=loss, batch_size=batch_size, steps=args.steps + args.warmup, warmup=0,
                              n_faces=max(batch_size * (args.steps + args.warmup), 64), sample_every=0,
                              log_every=10**6, ckpt_every=0, device=args.device, threads=args.threads, amp=args.amp,
                              compile=args.compile)
    trainer = ImageTrainer(config, progress_data=False)
    trainer._grid_due = lambda: False  # timing only
    for _ in range(args.warmup):
        trainer.train_step()
    dev = trainer.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    peak_memory(dev)  # reset the peak: what follows is the timed steps' own
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        trainer.train_step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    return {"preset": preset, "loss": loss, "batch": batch_size, "params_M": params,
            "images_per_s": args.steps * batch_size / wall,
            "step_ms": 1000 * wall / args.steps, "cpu_ms": 1000 * cpu / args.steps,
            "precision": "bf16" if trainer.amp_dtype is not None else "fp32", **peak_memory(dev),
            "device": dev}


def isolated(preset: str, loss: str, batch_size: int, argv: list[str] | None) -> dict | None:
    """bench() in a fresh Python process. On a CPU the peak memory is the process's resident set, which keeps what
    earlier cells freed (the allocator does not hand it back), so each cell runs alone to measure its own peak."""
    rest = _without(list(sys.argv[1:] if argv is None else argv), ("--presets", "--losses", "--batch-size"))
    cmd = [sys.executable, __file__, *rest, "--cell", "--presets", preset, "--losses", loss,
           "--batch-size", str(batch_size)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:  # e.g. killed by the kernel when the cell does not fit in memory: say so, go on
        why = ", killed: out of memory?" if done.returncode == -9 else ""
        print(f"# {preset:<6} {loss:<9} b{batch_size:<4} failed (return code {done.returncode}{why}): "
              f"{done.stderr.strip()[-300:]}", flush=True)
        return None
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {**row, "device": torch.device(row["device"])}


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """argv with the given options and their values removed."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg.split("=")[0] in options
            if skipping:
                continue
        if not skipping:
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(UNET_PRESETS), choices=list(UNET_PRESETS))
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="one or more batch sizes (default: 128 on CUDA, 8 on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 2 on a CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 5 on CUDA, 1 on a CPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    parser.add_argument("--compile", default="off", help="torch.compile backend for the UNet (off, inductor, ...)")
    parser.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)  # internal: see isolated
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # as each cell's trainer does (the device line reports it)
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    args.batch_size = args.batch_size or [128 if cuda else 8]
    args.steps = args.steps or (20 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if args.cell:  # one cell, in a process of its own (see isolated): print its row as JSON and stop
        row = bench(args.presets[0], args.losses[0], args.batch_size[0], args)
        print(json.dumps({**row, "device": str(row["device"])}))
        return 0
    rows = []
    for preset in args.presets:
        for loss in args.losses:
            for batch_size in args.batch_size:
                row = isolated(preset, loss, batch_size, argv) if not cuda else bench(preset, loss, batch_size, args)
                if row is None:
                    continue
                rows.append(row)
                print(f"# {preset:<6} {loss:<9} b{batch_size:<4} {row['images_per_s']:9.1f} img/s  "
                      f"{row['step_ms']:9.1f} ms/step  "
                      f"{row['cpu_ms']:9.1f} CPU ms/step  {row.get('peak_mem_mb', float('nan')):8.0f} MB  "
                      f"{row['precision']}", flush=True)
    if not rows:
        return 1
    print(f"\nDevice: {device_line(rows[0]['device'])}; {args.image_size}x{args.image_size} images, "
          f"{args.steps} timed steps after {args.warmup} warmup, compile={args.compile}\n")
    print("| preset | params | loss | batch | precision | images/s | ms/step | CPU ms/step | peak memory |")
    print("|--------|-------:|------|------:|-----------|---------:|--------:|------------:|------------:|")
    for r in rows:
        print(f"| {r['preset']} | {r['params_M']:.2f}M | {r['loss']} | {r['batch']} | {r['precision']} | "
              f"{r['images_per_s']:.1f} | "
              f"{r['step_ms']:.0f} | {r['cpu_ms']:.0f} | {r.get('peak_mem_mb', float('nan')):.0f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
