"""Using a finished 2D run: load its EMA model and config, and sample from it the way its loss trained it.
(Image runs: fmlab.images.)"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint
from .checks import check_int
from .device import pick_device
from .train import TrainConfig, checkpoint_path, rebuild_model

__all__ = ["load_run", "sample_run"]


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
