"""Sizing an image run to a time budget: measured training throughput on this device, and the steps that fit."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .checks import check_int
from .device import pick_device
from .train_images import ImageTrainConfig, ImageTrainer, peak_memory

__all__ = ["measure_throughput", "plan_steps", "estimate_run", "WARN_HOURS", "CPU_CONFIG", "cpu_warning"]

WARN_HOURS = 2.0  # a CPU run estimated to take longer than this is warned about before its first step
CPU_CONFIG = "faces32"  # the configuration the warning suggests (fmlab.train_images.CONFIGS)


def measure_throughput(config: ImageTrainConfig, steps: int = 3, warmup: int = 1, model: nn.Module | None = None,
                       data_fn: Callable | None = None, runtime_settings: dict[str, Any] | None = None
                       ) -> dict[str, float]:
    """Time `steps` training steps (after `warmup` untimed ones) of `config` on its device, from a fresh trainer
    with no files. Returns images_per_s, step_ms and peak_mem_mb (see ImageTrainer._record)."""
    check_int(steps, "steps", 1)
    cfg = dataclasses.replace(config, steps=steps + warmup, out=None, sample_every=0, warmup=0)
    trainer = ImageTrainer(cfg, model=model, data_fn=data_fn, runtime_settings=runtime_settings)
    trainer._grid_due = lambda: False  # timing only
    for _ in range(warmup):
        trainer.train_step()
    _sync(trainer.device)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    _sync(trainer.device)
    seconds = time.perf_counter() - start
    return {"images_per_s": steps * cfg.batch_size / seconds, "step_ms": 1000 * seconds / steps,
            **peak_memory(trainer.device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan_steps(images_per_s: float, budget_s: float, batch_size: int, min_steps: int = 1,
               max_steps: int | None = None) -> int:
    """Training steps that fit a time budget: floor(budget_s x images_per_s / batch_size), clipped to
    [min_steps, max_steps]."""
    if not images_per_s > 0 or not budget_s > 0:
        raise ValueError(f"images_per_s and budget_s must be > 0, got {images_per_s}, {budget_s}")
    steps = int(budget_s * images_per_s / batch_size)
    steps = max(min_steps, steps)
    return min(steps, max_steps) if max_steps is not None else steps


def estimate_run(config: ImageTrainConfig, probe_batches: tuple[int, int] = (2, 4)) -> dict[str, float]:
    """Seconds per step, hours for config.steps and peak memory of `config` on its device, extrapolated from one
    timed step at each of two small batches: time per image from the larger one (an upper bound, since a step has
    some fixed cost), memory linear in the batch through the two measured peaks. Costs a few seconds even for a
    configuration whose real step takes minutes."""
    small, large = probe_batches
    if not 1 <= small < large:
        raise ValueError(f"probe_batches must be two increasing batch sizes >= 1, got {probe_batches!r}")
    probe = dataclasses.replace(config, n_faces=min(config.n_faces, 64))  # drawing 20k procedural faces takes long
    low = measure_throughput(dataclasses.replace(probe, batch_size=small), steps=1, warmup=1)
    high = measure_throughput(dataclasses.replace(probe, batch_size=large), steps=1, warmup=1)
    step_s = high["step_ms"] / 1000 / large * config.batch_size
    per_image_mb = max(0.0, (high["peak_mem_mb"] - low["peak_mem_mb"]) / (large - small))
    return {"step_s": step_s, "hours": step_s * config.steps / 3600,
            "peak_mem_mb": high["peak_mem_mb"] + per_image_mb * (config.batch_size - large)}


def cpu_warning(config: ImageTrainConfig, threads: int) -> str | None:
    """A warning, or None: a run on the CPU estimated (estimate_run) to take over WARN_HOURS gets the measured
    seconds per step, the estimated total time and memory, and the CPU configuration's measured speed."""
    if pick_device(config.device).type != "cpu":
        return None
    estimate = estimate_run(config)
    if estimate["hours"] <= WARN_HOURS:
        return None
    from .train_images import image_config

    cpu = image_config(CPU_CONFIG, device="cpu")
    cpu_speed = measure_throughput(dataclasses.replace(cpu, n_faces=64), steps=1, warmup=1)["images_per_s"]
    cpu_minutes = cpu.steps * cpu.batch_size / cpu_speed / 60
    return (f"WARNING: this run is sized for a GPU. On this CPU ({threads} threads) a step of batch "
            f"{config.batch_size} takes about {estimate['step_s']:.1f} s (measured at batch 4 and scaled), so "
            f"{config.steps} steps would take about {estimate['hours']:.0f} hours, with a peak memory of about "
            f"{estimate['peak_mem_mb'] / 1024:.1f} GB.\n  For a CPU, use --config {CPU_CONFIG} (the '{cpu.preset}' "
            f"UNet at {cpu.image_size} px, batch {cpu.batch_size}: {cpu_speed:.0f} images/s here, about "
            f"{cpu_minutes:.0f} minutes for its {cpu.steps} steps), or lower --batch-size and --steps.")
