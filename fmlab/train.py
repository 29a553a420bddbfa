"""The trainer: one loop for every registered loss, with EMA, LR warmup + cosine decay, checkpoints and exact resume.

One training step (time runs from noise at t = 0 to data at t = 1):

    x1 ~ data (n = batch_size),  x0 ~ N(0, I)               all drawn from one seeded CPU generator
    (x0, x1) <- couple(x0, x1, coupling)                     independent / minibatch OT / Sinkhorn
    y        <- y, or the null label C w.p. p_uncond        class-conditional runs only (n_classes = C > 0)
    batch    <- spec.make_batch(x0, x1, generator)           the loss draws its times t (and s, r, ...)
    loss     <- spec.fn(model, batch, **settings)            then backward, clip, optimizer step
    lr_k     =  lr * warmup_k * cosine_k                     see `lr_schedule`
    ema      <- d_k ema + (1 - d_k) theta,  d_k = min(ema_decay, (1 + k) / (10 + k))

Every random number comes from the one CPU generator, and the data, noise, coupling and batch are
built on the CPU before moving to the device, so a seed gives the same batches on CPU, CUDA and MPS.
Checkpoints hold the model, EMA, optimizer, scheduler, generator state, step, config and log: a run
killed at step k and resumed with `Trainer.resume(out)` ends with bitwise the same parameters (on the
CPU) as an uninterrupted run.

Class-conditional runs (n_classes = C > 0): the data give labels, `data_fn(n, g) -> (x1, y)` (the default for a
labelled 2D set, fmlab.data.labelled.labelled_data), the model is `model(x, t, y)` (fmlab.models.conditioning) and
each label is replaced by the null label C with probability p_uncond (label dropout, drawn from the same generator,
so resume stays exact), which trains the unconditional field v(x, t) = model(x, t, C) alongside the conditional ones:
the pair classifier-free guidance needs (fmlab.guidance). Unconditional runs pass no labels to the loss.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .checks import check_choice, check_float, check_int
from .couplings import COUPLINGS
from .data import data_sampler
from .device import default_threads, pick_device, seed_everything
from .losses import LossSpec, get_loss
from .models import build_model
from .models.parametrisation import FLOW_MAP_PREDICTIONS
from .paths import PREDICTIONS
from .train_batches import DataFn, TrainBatches, draw_data

__all__ = ["checkpoint_path", "rebuild_model", "RunConfig", "TrainConfig", "Trainer", "lr_schedule", "ema_decay_at",
           "ema_update", "CKPT_NAME", "METRICS_NAME", "CONFIG_NAME", "OPTIMIZERS", "LR_SCHEDULES", "load_for_resume",
           "LEGACY_TIME_FREQ_MAX"]

CKPT_NAME, METRICS_NAME, CONFIG_NAME = "ckpt.pt", "metrics.jsonl", "config.json"
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("cosine", "constant")


# --- configuration -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig:
    """What every training run shares, 2D or image (fmlab.train_images.ImageTrainConfig); the model's own fields
    live in the subclass. Checkpoints store a config as a dict; `from_dict(d)` rebuilds it.

    data: a 2D set name (fmlab.data.DATA_NAMES: toy sets and mixtures) unless the Trainer gets its own data_fn.
    prediction: the model head; None takes the loss's default (e.g. 'velocity' for cfm).
    warmup: linear LR warmup steps (clipped to `steps`); then cosine decay from lr to 0 at `steps`.
    grad_clip: max global gradient norm, 0 disables clipping (the norm is logged either way).
    threads: CPU threads for torch; None picks fmlab.device.default_threads().
    log_every / ckpt_every: steps between log records / checkpoints (ckpt_every = 0: only at the end).
    loss_settings: overrides of the loss's settings (plain values only; see LossSpec.defaults).
    n_classes: 0 (unconditional) or C > 0: train a class-conditional model on labelled data (losses in
    fmlab.losses.flow_matching.LABEL_LOSSES, independent coupling). p_uncond: label dropout probability.
    """

    data: str = "moons"
    loss: str = "cfm"
    coupling: str = "independent"
    prediction: str | None = None
    steps: int = 15000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 200
    lr_schedule: str = "cosine"
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    log_every: int = 100
    ckpt_every: int = 1000
    out: str | None = None
    coupling_reg: float = 0.05
    loss_settings: dict[str, Any] = field(default_factory=dict)
    n_classes: int = 0
    p_uncond: float = 0.1

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.warmup, "warmup", 0)
        check_int(self.seed, "seed", 0)
        check_int(self.log_every, "log_every", 1)
        check_int(self.ckpt_every, "ckpt_every", 0)
        if self.threads is not None:
            check_int(self.threads, "threads", 1)
        check_float(self.lr, "lr", low=0.0, strict=True)
        check_float(self.weight_decay, "weight_decay", low=0.0)
        check_float(self.grad_clip, "grad_clip", low=0.0)
        check_float(self.coupling_reg, "coupling_reg", low=0.0, strict=True)
        if not (isinstance(self.ema_decay, (int, float)) and 0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        check_choice(self.coupling, "coupling", COUPLINGS)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a dataset name, got {self.data!r}")
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"device must be a string ('cpu', 'cuda', 'cuda:1', 'mps') or None, got {self.device!r}")
        spec = get_loss(self.loss)  # ValueError listing the registered losses
        if self.prediction is not None:
            heads = PREDICTIONS if spec.time_inputs == 1 else FLOW_MAP_PREDICTIONS
            check_choice(self.prediction, "prediction", heads)
        if not isinstance(self.loss_settings, dict):
            raise ValueError(f"loss_settings must be a dict, got {type(self.loss_settings).__name__}")
        spec.settings(self.loss_settings)  # unknown keys -> ValueError listing the allowed ones
        _check_conditioning(self.n_classes, self.p_uncond, self.loss, self.coupling)
        for key, value in self.loss_settings.items():
            if not _is_plain(value):
                raise ValueError(f"loss_settings[{key!r}] must be a plain value (number, string, bool, None, list), "
                                 f"got {type(value).__name__}; pass objects via Trainer(runtime_settings=...)")
        object.__setattr__(self, "loss_settings", dict(self.loss_settings))

    @property
    def head(self) -> str:
        """The model head: `prediction`, or the loss's default."""
        return self.prediction or get_loss(self.loss).prediction

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild a config; unknown keys are a ValueError (e.g. a checkpoint from a newer fmlab)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Everything that defines a 2D run: the shared fields of RunConfig and the MLP's width `hidden` and number of
    hidden layers `depth` (fmlab.models.build_model)."""

    hidden: int = 256
    depth: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.hidden, "hidden", 1)
        check_int(self.depth, "depth", 1)


def _check_conditioning(n_classes: Any, p_uncond: Any, loss: str, coupling: str) -> None:
    from .losses.flow_matching import LABEL_LOSSES
    from .models.conditioning import check_n_classes

    check_n_classes(n_classes)
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be a number in [0, 1), got {p_uncond!r}")
    if n_classes and loss not in LABEL_LOSSES:
        raise ValueError(f"n_classes > 0 (class-conditional training) needs a loss that passes labels to the model, "
                         f"one of {list(LABEL_LOSSES)}; got loss={loss!r}")
    if n_classes and coupling != "independent":
        raise ValueError(f"n_classes > 0 needs coupling='independent' (minibatch OT pairs noise with data of every "
                         f"class, so the noise paired with one class is no longer N(0, I)); got {coupling!r}")


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return False


# --- schedule and EMA math ---------------------------------------------------------------------------------

def lr_schedule(step: int, lr: float, warmup: int, steps: int, kind: str = "cosine") -> float:
    """Learning rate of optimizer step `step` (0-based) of `steps`.

    Warmup (w = min(warmup, steps)): lr_k = lr (k + 1) / w for k < w.
    Cosine: lr_k = lr (1 + cos(pi (k - w) / (steps - w))) / 2 for k >= w, from lr down to ~0 at the last step.
    Constant: lr_k = lr after warmup.
    """
    check_choice(kind, "kind", LR_SCHEDULES)
    w = min(warmup, steps)
    if step < w:
        return lr * (step + 1) / w  # linear warmup
    if kind == "constant":
        return lr
    progress = (step - w) / max(1, steps - w)  # in [0, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine decay


def ema_decay_at(step: int, decay: float) -> float:
    """d_k = min(decay, (1 + k) / (10 + k)) for update k (0-based): short runs get a short-memory average."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- decay theta_ema + (1 - decay) theta for every parameter; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p, 1.0 - decay)  # p_ema + (1 - decay) (p - p_ema)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


# --- the trainer -------------------------------------------------------------------------------------------------

class Trainer:
    """Train `model` (default: build_model from the config) on `data_fn` (default: the toy set config.data).

    runtime_settings: loss settings that are objects rather than plain values (e.g. reflow's `teacher`);
    they are not saved, so pass them again to `Trainer.resume`.

    prefetch: how many batches ahead the coupling (OT, Sinkhorn) is solved, on `coupling_workers` threads, while
    the model trains (fmlab.prefetch); it never changes a result. None: 2 per worker for the toy data with a
    coupling to solve, else 0. Give it for a custom `data_fn` only if that is a pure function of its generator (no
    state of its own, like a position in an epoch), since the data are drawn ahead.

    Attributes a lab may read: model, ema, optimizer, scheduler, generator, step, log (list of records), device,
    spec (the LossSpec).
    """

    def __init__(self, config: RunConfig, model: nn.Module | None = None, data_fn: DataFn | None = None,
                 runtime_settings: dict[str, Any] | None = None, prefetch: int | None = None,
                 coupling_workers: int = 1):
        if not isinstance(config, RunConfig):
            raise ValueError(f"config must be a TrainConfig (or another fmlab.train.RunConfig), got "
                             f"{type(config).__name__}")
        self.config = config
        self.spec: LossSpec = get_loss(config.loss)
        self.settings = self.spec.settings({**config.loss_settings, **(runtime_settings or {})})
        self.data_fn = data_fn if data_fn is not None else data_sampler(config.data, config.n_classes)
        self.device = pick_device(config.device)
        self.threads = config.threads or self.default_threads()
        torch.set_num_threads(self.threads)
        self.generator = seed_everything(config.seed)  # also seeds the global RNG that initialises the model
        self.model = (model if model is not None else self._build_model()).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        if "ema" in self.spec.defaults and self.settings.get("ema") is None:
            self.settings["ema"] = self.ema  # losses that evaluate one call with EMA weights (TVM) get this trainer's
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: lr_schedule(k, 1.0, config.warmup, config.steps, config.lr_schedule))
        self.step = 0
        self.log: list[dict[str, Any]] = []
        self.elapsed = 0.0  # training wall time in seconds, summed over resumes
        self._window = torch.zeros(3, dtype=torch.float64)  # (sum of losses, sum of grad norms, count) since last log
        self._one = torch.ones((), dtype=torch.float64)
        self.out = Path(config.out) if config.out is not None else None
        self._resumed = False  # True once state came from a checkpoint
        check_int(coupling_workers, "coupling_workers", 1)
        if prefetch is None:
            solves = config.coupling != "independent" and data_fn is None  # toy data: a pure function of g
            prefetch = 2 * coupling_workers if solves else 0
        check_int(prefetch, "prefetch", 0)
        self.prefetch, self.coupling_workers = prefetch, coupling_workers
        self.batches = TrainBatches(config, self.spec, self.settings, self.data_fn, self.generator, self.device,
                                    prefetch, coupling_workers)

    # construction helpers
    @staticmethod
    def default_threads() -> int:
        """CPU threads when config.threads is None: fmlab.device.default_threads() (small 2D models)."""
        return default_threads()

    def _build_model(self) -> nn.Module:
        x1, _ = draw_data(self.data_fn, 2, torch.Generator().manual_seed(0))  # a probe, off the training generator
        if x1.ndim != 2:
            raise ValueError(f"the default MLP needs data of shape [n, d]; got {tuple(x1.shape)}: pass model=")
        return build_model(dim=x1.shape[1], prediction=self.config.head, time_inputs=self.spec.time_inputs,
                           hidden=self.config.hidden, depth=self.config.depth, n_classes=self.config.n_classes)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.config.optimizer == "adamw" else torch.optim.Adam
        return cls(self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    # one step
    def make_batch(self):
        """Draw data and noise, couple them and let the loss draw its times (on the CPU); move to the device.

        With a coupling to solve, the pairings of the next `prefetch` batches are solved on worker threads meanwhile
        (fmlab.train_batches): the batches, and the generator's states, are exactly those of the sequential path."""
        return self.batches.next(limit=self.config.steps - self.step - 1)

    def train_step(self) -> tuple[Tensor, Tensor, dict[str, Any], float]:
        """One optimizer step; returns (loss, grad_norm, diagnostics, lr used), tensors detached."""
        if not self.model.training:  # a callback or a lab may have called eval(); train() walks every module
            self.model.train()
        batch = self.make_batch()
        loss, diagnostics = self.spec.fn(self.model, batch, **self.settings)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)  # norm before clipping
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        ema_update(self.ema, self.model, ema_decay_at(self.step, self.config.ema_decay))
        self.step += 1
        return loss.detach(), grad_norm.detach(), diagnostics, lr

    # the loop
    def fit(self, progress: bool = True, callback: Callable[[int, dict[str, Any]], Any] | None = None
            ) -> list[dict[str, Any]]:
        """Train until config.steps; returns the log. `callback(step, record)` runs at every log record and may
        add JSON-able keys to it (e.g. a metric against ground truth) before it is written.

        Records (every log_every steps and at the end): step, loss and grad_norm (means since the last record),
        lr (of the last step), elapsed_s, and the loss's diagnostics at the last step. With config.out set,
        records go to out/metrics.jsonl and checkpoints to out/ckpt.pt (every ckpt_every steps and at the end);
        nothing is written before the first step has succeeded.
        """
        from tqdm.auto import tqdm  # a widget in notebooks, text in terminals

        cfg = self.config
        files_started = False
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, unit="step",
                   desc=f"{cfg.loss}/{cfg.coupling} on {cfg.data}")
        start = time.perf_counter() - self.elapsed
        try:
            while self.step < cfg.steps:
                loss, grad_norm, diagnostics, lr = self.train_step()
                if self.out is not None and not files_started:  # after one good step: bad settings write nothing
                    self._start_files()
                    files_started = True
                self._window += torch.stack([loss.double().cpu(), grad_norm.double().cpu(), self._one])
                self.elapsed = time.perf_counter() - start
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = self._record(diagnostics, lr)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                    if callback is not None:
                        callback(self.step, record)  # it may add keys to the record: they are saved too
                        record.update({k: _plain(v) for k, v in record.items()})
                    self._write_record(record)
                if self.out is not None and (self.step == cfg.steps or self._ckpt_due()):
                    self.save()
        finally:
            bar.close()
            self.batches.close()  # end the pairing threads; a later make_batch starts them again
        return self.log

    def _ckpt_due(self) -> bool:
        return self.config.ckpt_every > 0 and self.step % self.config.ckpt_every == 0

    def _record(self, diagnostics: dict[str, Any], lr: float) -> dict[str, Any]:
        loss_sum, grad_sum, count = self._window.tolist()
        record: dict[str, Any] = {"step": self.step, "loss": loss_sum / count, "grad_norm": grad_sum / count,
                                  "lr": lr, "elapsed_s": round(self.elapsed, 3)}
        for key, value in diagnostics.items():
            record[f"diag_{key}" if key in record else key] = _plain(value)
        self._window.zero_()
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"the loss became {record['loss']} by step {self.step} (lr {lr:.3g}); "
                                     f"try a smaller lr or grad_clip")
        self.log.append(record)
        return record

    def _write_record(self, record: dict[str, Any]) -> None:
        if self.out is not None:
            with open(self.out / METRICS_NAME, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    # files
    def _start_files(self) -> None:
        """Write config.json and (re)write metrics.jsonl from the log held in memory (after a resume: up to the
        checkpoint, dropping records a killed run wrote after it). A fresh run removes an old run's ckpt.pt."""
        self.out.mkdir(parents=True, exist_ok=True)
        stale = self.out / CKPT_NAME
        if not self._resumed and stale.exists():  # a fresh run replaces an old one: never mix their files
            stale.unlink()
        text = json.dumps(self.config.to_dict(), indent=2) + "\n"
        atomic_write(self.out / CONFIG_NAME, lambda f: f.write(text.encode()))
        lines = "".join(json.dumps(r) + "\n" for r in self.log)
        atomic_write(self.out / METRICS_NAME, lambda f: f.write(lines.encode()))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors and plain values only)."""
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "step": self.step, "config": self.config.to_dict(), "model_config": dict(getattr(self.model, "config", {})),
            "log": list(self.log), "window": self._window.clone(), "elapsed_s": self.elapsed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.log = [dict(r) for r in state["log"]]
        self._window = state["window"].clone()
        self.elapsed = float(state["elapsed_s"])
        self._resumed = True

    def save(self, path: str | Path | None = None) -> Path:
        """Atomically write the checkpoint (default out/ckpt.pt)."""
        if path is None:
            if self.out is None:
                raise ValueError("save() needs a path when config.out is None")
            path = self.out / CKPT_NAME
        return save_checkpoint(path, self.state_dict())

    @classmethod
    def resume(cls, out: str | Path, model: nn.Module | None = None, data_fn: DataFn | None = None,
               runtime_settings: dict[str, Any] | None = None, device: str | None = None,
               threads: int | None = None, prefetch: int | None = None, coupling_workers: int = 1) -> Trainer:
        """Continue the run saved in `out` (its directory or ckpt.pt) from its last checkpoint.

        `device`/`threads` override the saved ones (e.g. resume a CUDA run on a laptop); `model` must be given if
        the run used a model that build_model cannot rebuild, `data_fn` if it used its own data.
        """
        path, state, saved = load_for_resume(out, device, threads)
        config = TrainConfig.from_dict(saved)
        if model is None:
            model = rebuild_model(state, path)
        trainer = cls(config, model=model, data_fn=data_fn, runtime_settings=runtime_settings, prefetch=prefetch,
                      coupling_workers=coupling_workers)
        trainer.load_state_dict(state)
        return trainer


def load_for_resume(out: str | Path, device: str | None = None, threads: int | None = None
                    ) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(checkpoint path, checkpoint state, saved config as a dict) of the run in `out`, the config pointing at the
    checkpoint's folder and with `device` / `threads` replaced where given."""
    path = checkpoint_path(out)
    state = load_checkpoint(path)
    overrides = {"out": str(path.parent), "device": device, "threads": threads}
    return path, state, {**state["config"], **{k: v for k, v in overrides.items() if v is not None}}


def _plain(value: Any) -> Any:
    """A record value as a plain JSON value (what the weights-only checkpoint loader accepts too)."""
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value) if isinstance(value, float) else int(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def checkpoint_path(out: str | Path) -> Path:
    path = Path(out)
    return path / CKPT_NAME if path.is_dir() or not path.suffix else path


def rebuild_model(state: dict[str, Any], path: Path) -> nn.Module:
    model_config = state.get("model_config") or {}
    if not model_config:
        raise ValueError(f"{str(path)!r} holds no model_config (the run used a custom model): pass model=")
    return build_model(**{"time_freq_max": LEGACY_TIME_FREQ_MAX, **model_config})


LEGACY_TIME_FREQ_MAX = 200.0  # the time embedding of checkpoints written before model_config held time_freq_max
