"""Using a finished run: load its EMA model and config, sample from it the way its loss trained it, evaluate it.
2D runs: `load_run`, `sample_run`; image runs (fmlab.train_images): `is_image_run`, `load_image_run`,
`sample_images`, `evaluate_images`. The command line's image paths are in fmlab.cli_images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint
from .checks import check_int
from .device import pick_device
from .image_grid import to_uint8
from .sampling import generate_images
from .train import CONFIG_NAME, TrainConfig, checkpoint_path, rebuild_model
from .train_images import ImageTrainConfig, build_image_model

__all__ = ["load_run", "sample_run", "is_image_run", "load_image_run", "sample_images", "evaluate_images"]


def load_run(out: str | Path, device: str | None = None) -> tuple[nn.Module, TrainConfig]:
    """The EMA model of the run in `out` (eval mode, no grad, on `device` or the best available) and its config."""
    path = checkpoint_path(out)
    state = load_checkpoint(path)
    config = TrainConfig.from_dict(state["config"])
    model = rebuild_model(state, path)
    model.load_state_dict(state["ema"])
    return model.requires_grad_(False).eval().to(pick_device(device)), config


def sample_run(out: str | Path, n: int = 2000, steps: int = 100, method: str | None = None, seed: int = 0,
               device: str | None = None, label: int | Tensor | None = None, guidance: float | None = None) -> Tensor:
    """n samples [n, d] (on the CPU) from the run's EMA model: x0 ~ N(0, I) (seeded, drawn on the CPU) carried
    from t = 0 to t = 1 in `steps` steps of the sampler the run's loss trained for (fmlab.sampling.generate), or
    of `method` when given (one of fmlab.sampling.methods_for(loss)). A class-conditional run samples class `label`
    (an int or [n]; None: every class in turn) with guidance scale `guidance` (None: 1, the conditional model)."""
    from .sampling import generate

    check_int(n, "n", 1)
    check_int(seed, "seed", 0)
    model, config = load_run(out, device)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, model.config["dim"], generator=g).to(next(model.parameters()).device)  # x0 ~ N(0, I)
    n_classes = model.config.get("n_classes", 0)
    if not n_classes:
        if label is not None or guidance is not None:
            raise ValueError(f"run {str(out)!r} is unconditional (trained without n_classes / --cond): it takes no "
                             f"label or guidance")
        return generate(model, config.loss, x0, steps, method, generator=g).cpu()
    if isinstance(label, int) and not 0 <= label < n_classes:
        raise ValueError(f"label must be a class in [0, {n_classes - 1}] (for the unconditional model use "
                         f"guidance 0), got {label}")
    labels = label.to(x0.device) if isinstance(label, Tensor) else label
    return generate(model, config.loss, x0, steps, method, labels=labels,
                    guidance=1.0 if guidance is None else guidance).cpu()


# --- image runs --------------------------------------------------------------------------------------------------

def is_image_run(out: str | Path) -> bool:
    """True if the run directory (or its ckpt.pt) belongs to an image run (its config.json names a UNet preset)."""
    path = Path(out)
    folder = path if path.is_dir() or not path.suffix else path.parent
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict):
        return False
    model = config.get("model")
    return isinstance(model, dict) and "preset" in model or "preset" in config  # flat: written before UNetConfig


def load_image_run(out: str | Path, device: str | None = None) -> tuple[nn.Module, ImageTrainConfig]:
    """The EMA model of an image run (eval mode, no grad, on `device` or the best available) and its config."""
    path = checkpoint_path(out)
    state = load_checkpoint(path)
    config = ImageTrainConfig.from_dict(state["config"])
    model = build_image_model(**state["model_config"])
    model.load_state_dict(state["ema"])
    return model.requires_grad_(False).eval().to(pick_device(device)), config


@torch.no_grad()
def sample_images(model: nn.Module, n: int, steps: int, method: str | None = None, seed: int = 0,
                  batch_size: int = 256, loss: str | None = None, label: int | None = None,
                  guidance: float | None = None) -> torch.Tensor:
    """n images [n, C, H, W] in [-1, 1] (on the CPU) from noise seeded by `seed` (drawn on the CPU, batch by batch):
    `steps` steps of the sampler `loss` trained for, or of `method` (see fmlab.sampling.generate_images). A
    class-conditional model samples class `label` (None: the classes in turn) with guidance scale `guidance`
    (None: 1, the conditional model)."""
    for name, value in (("n", n), ("steps", steps), ("batch_size", batch_size)):
        check_int(value, name, 1)
    backbone = getattr(model, "backbone", model)
    device = next(model.parameters()).device
    n_classes = getattr(backbone, "n_classes", 0)
    if not n_classes and (label is not None or guidance is not None):
        raise ValueError("label and guidance need a class-conditional model (trained with an attribute, CLI --cond)")
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x0 = torch.randn(m, backbone.in_channels, backbone.image_size, backbone.image_size, generator=g)  # t = 0
        labels = None
        if n_classes:
            labels = (torch.arange(start, start + m) % n_classes) if label is None else torch.full((m,), label)
            labels = labels.to(device)
        out.append(generate_images(model, x0.to(device), steps, method, loss, labels, guidance).cpu())
    return torch.cat(out)


def evaluate_images(model: nn.Module, reference: np.ndarray, n: int, steps: list[int], method: str | None = None,
                    extractor: Any = None, ref_stats: dict | None = None, seed: int = 0, batch_size: int = 256,
                    loss: str | None = None) -> list[dict[str, Any]]:
    """For each step count: n samples scored against `reference` (uint8 [m, H, W, 3]) by fmlab.fid.image_scores.
    Rows {'steps', 'name', 'value', 'n', 'note'}; the same noise (seed) for every step count."""
    from .fid import image_scores

    rows = []
    for k in steps:
        samples = to_uint8(sample_images(model, n, k, method, seed, batch_size, loss))
        for score in image_scores(samples, reference, extractor, ref_stats, seed=seed):
            rows.append({"steps": k, "name": score.name, "value": score.value, "n": score.n, "note": score.note})
    return rows
