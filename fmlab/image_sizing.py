"""Sizing an image run to a time budget: measured training throughput on this device, and the steps that fit."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .checks import check_int
from .train_images import ImageTrainConfig, ImageTrainer, peak_memory

__all__ = ["measure_throughput", "plan_steps"]


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
