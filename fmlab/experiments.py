"""Lab experiments on 2D data: cached training runs with diagnostics, their evaluation, and seeded sampling.

A run (`run(config)`) trains fmlab.train.Trainer on a toy set with the labs' model (LAB_MODEL), records what labs 06
and 10 plot (loss, gradient norms at noise levels, cross-term variance, W1 at several step counts) and is cached in
this kernel's one result cache and on disk (fmlab.labkit.persisted: `clear_cache(disk=True)` forgets it), keyed on its
configuration, so flipping a control back to a configuration already trained, or re-opening the lab, is instant.

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .data import data_sampler
from .diagnostics import (
    DEFAULT_LEVELS,
    CrossTermVariance,
    cross_term_grad_variance,
    grad_norms_at_levels,
)
from .labkit import cache_key, persisted, restore_trainer, trainer_state
from .losses import get_loss
from .metrics import wasserstein
from .solvers import solve

__all__ = [
    "LAB_MODEL", "GMM_FOR_DATA", "lab_config", "label_of", "RunResult", "run", "evaluate_w1", "noise_floor_w1",
    "samples_of", "run_state", "run_from_state",
]


LAB_MODEL = {"hidden": 128, "depth": 3, "batch_size": 256, "lr": 2e-3, "warmup": 100, "ema_decay": 0.995}
GMM_FOR_DATA = {"8gaussians": "8modes"}  # toy sets whose closed-form ground truth fmlab.data ships


# --- experiments: cached training runs with diagnostics --------------------------------------------------------

def lab_config(data: str = "moons", loss: str = "cfm", coupling: str = "independent", prediction: str | None = None,
               train_steps: int = 3000, seed: int = 0, log_every: int = 50, threads: int | None = None,
               **loss_settings: Any) -> Any:
    """A fmlab.train.TrainConfig with the labs' small model (LAB_MODEL: a 3 x 128 MLP, batch 256, lr 2e-3).

    train_steps: optimizer steps; loss_settings: the loss's own settings (for window losses `steps` = 1 / dt)."""
    from .train import TrainConfig

    return TrainConfig(data=data, loss=loss, coupling=coupling, prediction=prediction, steps=train_steps, seed=seed,
                       log_every=log_every, ckpt_every=0, threads=threads, loss_settings=dict(loss_settings),
                       **LAB_MODEL)


def label_of(config: Any) -> str:
    """A short human label for a run: 'field', 'x1', 'WT-FM L=4 BPTT', 'anchored L=2 (detached)', '+ OT'."""
    s = config.loss_settings
    if config.loss == "cfm":
        name = "single-step FM" if config.head == "velocity" else f"FM ({config.head} head)"
    elif config.loss == "x1_prediction":
        name = "x1 prediction"
    elif config.loss == "wtfm":
        window = s.get("window", get_loss("wtfm").defaults["window"])
        name = f"WT-FM L={window} " + ("detached" if s.get("detach", False) else "BPTT")
        if not s.get("cross_terms", True):
            name = f"WT-FM L={window} cross-terms dropped" + ("" if s.get("detach", False) else " (BPTT)")
    elif config.loss == "anchored_consistency":
        window = s.get("window", get_loss("anchored_consistency").defaults["window"])
        name = f"anchored L={window} " + ("(detached)" if s.get("detach", True) else "(BPTT)")
    else:
        name = config.loss
    if config.loss == "wtfm" and config.head == "x1":
        name += " x1 head"
    return name + (" + OT" if config.coupling == "ot" else "")


@dataclass
class RunResult:
    """A finished (or running) training run and what was measured along the way.

    grad_steps / grad_norms [n, levels]: gradient norm of the run's loss at the fixed noise levels `levels`;
    var_steps / variances: cross-term gradient variance against the window length, measured during training;
    w1: {Euler steps: W1(samples, data)}; elapsed: training wall time in seconds (diagnostics excluded).
    """

    config: Any
    trainer: Any
    levels: list[float]
    grad_steps: list[int] = field(default_factory=list)
    grad_norms: list[Tensor] = field(default_factory=list)
    var_steps: list[int] = field(default_factory=list)
    variances: list[CrossTermVariance] = field(default_factory=list)
    w1: dict[int, float] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def label(self) -> str:
        return label_of(self.config)

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.trainer.log

    @property
    def model(self) -> Any:
        """The EMA model (what we sample from)."""
        return self.trainer.ema

    def norms(self) -> Tensor:
        return torch.stack(self.grad_norms) if self.grad_norms else torch.empty(0, len(self.levels))


def run(config: Any, levels: Sequence[float] = DEFAULT_LEVELS, track_every: int = 0, track_loss: str | None = None,
        track_batch: int = 256, variance_every: int = 0, variance_windows: Sequence[int] = (1, 2, 4, 8),
        variance_t0: float = 0.25, variance_batches: int = 16, eval_steps: Sequence[int] = (100,),
        n_eval: int = 1000, on_update: Callable[[RunResult], Any] | None = None, progress: bool = True,
        refresh: bool = False) -> RunResult:
    """Train `config` once (cached in the kernel and on disk on every argument but `on_update` / `progress`) and
    return the result; `refresh=True` trains again and replaces the cached result.

    track_every > 0: every that many steps, the gradient norm of `track_loss` (default: the run's loss) at each noise
    level in `levels` on a fresh minibatch of `track_batch` (the manuscript's gradient-norm figure).
    variance_every > 0: the cross-term gradient variance of the current model against the window lengths
    `variance_windows` (windows start at variance_t0; dt = 1 / 16 unless the loss sets `steps`).
    eval_steps: W1 of n_eval samples (Euler with that many steps, from the EMA model) against fresh data.
    on_update(result) runs after every measurement (live figures); cached calls skip straight to the end.
    """
    key = cache_key("run", config, list(levels), track_every, track_loss, track_batch, variance_every,
                    list(variance_windows), variance_t0, variance_batches, list(eval_steps), n_eval)
    settings = dict(levels=levels, track_every=track_every, track_loss=track_loss, track_batch=track_batch,
                    variance_every=variance_every, variance_windows=variance_windows, variance_t0=variance_t0,
                    variance_batches=variance_batches, eval_steps=eval_steps, n_eval=n_eval)
    return persisted(key, lambda: _train(config, on_update=on_update, progress=progress, **settings), run_state,
                     lambda state: run_from_state(state, config), refresh=refresh)


def _train(config: Any, levels: Sequence[float], track_every: int, track_loss: str | None, track_batch: int,
           variance_every: int, variance_windows: Sequence[int], variance_t0: float, variance_batches: int,
           eval_steps: Sequence[int], n_eval: int, on_update: Callable[[RunResult], Any] | None, progress: bool
           ) -> RunResult:
    """`run` without its cache."""
    from .train import Trainer

    trainer = Trainer(config, data_fn=data_sampler(config.data))
    result = RunResult(config=config, trainer=trainer, levels=list(levels))
    probe = torch.Generator().manual_seed(config.seed + 1)  # diagnostics draw from their own generator
    loss_name = track_loss or config.loss
    loss_settings = config.loss_settings if loss_name == config.loss else None
    var_steps = int(config.loss_settings.get("steps", 16))
    sample_x1 = data_sampler(config.data)
    diag_time = [0.0]

    def measure(step: int) -> None:
        start = time.perf_counter()
        model = trainer.model
        if track_every and (step % track_every == 0 or step == config.steps):
            x1 = sample_x1(track_batch, probe)
            x0 = torch.randn(x1.shape, generator=probe)
            result.grad_norms.append(grad_norms_at_levels(model, loss_name, x0.to(trainer.device),
                                                          x1.to(trainer.device), levels, loss_settings, probe))
            result.grad_steps.append(step)
        if variance_every and (step % variance_every == 0 or step == config.steps):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=probe))
            result.variances.append(cross_term_grad_variance(
                model, sample_x1, variance_windows, steps=var_steps, t0=variance_t0, n_batches=variance_batches,
                batch_size=64, coupling=config.coupling, seed=seed))
            result.var_steps.append(step)
        diag_time[0] += time.perf_counter() - start
        if on_update is not None:
            on_update(result)

    for name, every in (("track_every", track_every), ("variance_every", variance_every)):
        if every < 0 or every % config.log_every:
            raise ValueError(f"{name} must be 0 or a multiple of the config's log_every ({config.log_every}), "
                             f"got {every}")
    measure(0)
    diag_time[0] = 0.0  # only measurements made during training are subtracted from its wall time
    start = time.perf_counter()
    trainer.fit(progress=progress, callback=lambda step, record: measure(step))
    result.elapsed = time.perf_counter() - start - diag_time[0]
    trainer.ema.requires_grad_(False).eval()
    for k in eval_steps:
        result.w1[int(k)] = evaluate_w1(trainer.ema, config.data, steps=int(k), n=n_eval, seed=config.seed)
    if on_update is not None:
        on_update(result)
    return result


def run_state(result: RunResult) -> dict[str, Any]:
    """A RunResult as tensors and plain values (what fmlab.diskcache stores): the trainer's weights and log and
    every measurement."""
    return {"trainer": trainer_state(result.trainer), "levels": list(result.levels),
            "grad_steps": list(result.grad_steps), "grad_norms": list(result.grad_norms),
            "var_steps": list(result.var_steps), "variances": [dataclasses.asdict(v) for v in result.variances],
            "w1": [[int(k), float(v)] for k, v in result.w1.items()], "elapsed": float(result.elapsed)}


def run_from_state(state: dict[str, Any], config: Any) -> RunResult:
    """The RunResult of `config` that `run_state` stored: the trainer built from the config and loaded (a state of
    another config is a ValueError), no training."""
    from .train import Trainer

    trainer = restore_trainer(Trainer(config, data_fn=data_sampler(config.data)), state["trainer"])
    return RunResult(config=config, trainer=trainer, levels=list(state["levels"]),
                     grad_steps=list(state["grad_steps"]), grad_norms=list(state["grad_norms"]),
                     var_steps=list(state["var_steps"]),
                     variances=[CrossTermVariance(**v) for v in state["variances"]],
                     w1={int(k): float(v) for k, v in state["w1"]}, elapsed=float(state["elapsed"]))



def evaluate_w1(model: Any, data: str, steps: int = 100, n: int = 1000, seed: int = 0) -> float:
    """W1 between n samples of the model (Euler, `steps` steps from seeded noise) and n fresh data points."""
    g = torch.Generator().manual_seed(10_000 + seed)
    samples = samples_of(model, n, steps, generator=g)  # the noise first, then the data, from one generator
    return wasserstein(samples, data_sampler(data)(n, g), p=1)


def noise_floor_w1(data: str, n: int = 1000, seed: int = 0) -> float:
    """W1 between two independent data samples of size n: the best any model can score at this n."""
    g = torch.Generator().manual_seed(20_000 + seed)
    draw = data_sampler(data)
    return wasserstein(draw(n, g), draw(n, g), p=1)



def samples_of(model: Any, n: int = 1000, steps: int = 100, seed: int = 0, method: str = "euler",
               generator: torch.Generator | None = None) -> Tensor:
    """n samples [n, 2] of a velocity model: noise x0 ~ N(0, I) [n, 2] drawn from `generator` (default: a fresh one
    seeded with 10_000 + seed) carried from t = 0 to t = 1 by `steps` steps of `method` (the labs' seeded sampler)."""
    g = torch.Generator().manual_seed(10_000 + seed) if generator is None else generator
    x0 = torch.randn(n, 2, generator=g)
    device = next(model.parameters()).device
    return solve(model, x0.to(device), steps=steps, method=method).cpu()


