"""The image trainer: fmlab.train.Trainer extended for UNets on 64 x 64 faces (CelebA or the procedural set).

What it adds to the engine's trainer (same loss registry, same step, EMA, warmup + cosine LR, clipping,
checkpoints with exact resume):

- data: an `ImageStream` over a uint8 image array (CelebA64 or Faces): epochs in a DistributedSampler order
  (one shard per rank), random horizontal flips drawn from the trainer's seeded generator, [-1, 1] floats; its
  position is saved in the checkpoint, so a resumed run sees exactly the images an uninterrupted one would;
- mixed precision: `amp='auto'` runs the loss under bf16 autocast on GPUs that support it, except for losses
  that take forward-mode JVPs (MeanFlow, flow maps, ...), which stay in fp32: the tangent d/dt u is a small
  difference of large terms and bf16's 8-bit mantissa loses it. Whether a loss takes JVPs is read from its own
  diagnostics (`n_jvp`) by running it once on two random images before training;
- channels-last memory format on GPUs (`channels_last='auto'`; off for JVP losses, whose GroupNorm forward-mode
  rule needs contiguous tensors) and optional `torch.compile` of the UNet (`compile='inductor'`; skipped for JVP
  losses, which torch.compile does not trace through torch.func.jvp);
- class conditioning on an attribute (`attribute=`: 'smiling' or 'glasses' of the procedural faces, a CelebA
  attribute such as 'Smiling' read from list_attr_celeba.txt): a 2-class UNet `model(x, t, y)` trained with label
  dropout p_uncond (fmlab.train), its grids showing the classes in turn, ready for classifier-free guidance;
- periodic sample grids from the EMA model (fixed noise, so grids are comparable across steps), written to
  OUT/samples/step_NNNNNNN.png and kept in `trainer.grids`; `on_grid(step, grid)` lets a notebook show them live;
- throughput and memory in every log record: images_per_s (global, all ranks), step_ms, peak_mem_mb (CUDA:
  peak allocated since the last record; CPU: the process's peak resident set size since the last record);
- data parallelism over `torchrun` ranks (fmlab.distributed): per-rank shards and seeds, gradients averaged
  explicitly after backward (DDP's hooks would miss JVP and predict() paths), rank 0 writes, barrier at the end.

Time runs from noise at t = 0 to data at t = 1; images live in [-1, 1], [B, 3, H, W].

    python -m fmlab train --config celeba64 --data-root /data/celeba --out runs/celeba64-cfm
    python -m fmlab train --config faces32 --loss meanflow --steps 300 --out runs/faces-mf      # no download
    torchrun --nproc_per_node 8 -m fmlab train --config celeba64 --data-root /data/celeba --out runs/c64
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checks import check_choice, check_int
from .device import default_threads
from .distributed import DistInfo, all_gather_objects, broadcast_parameters, rank_seed, sync_gradients
from .image_grid import make_grid, save_png, to_uint8
from .losses import get_loss
from .models.unet import UNET_PRESETS, build_unet
from .sampling import generate_images
from .train import CKPT_NAME, TrainConfig, Trainer, ema_decay_at, ema_update, load_for_resume

__all__ = ["ImageTrainConfig", "ImageTrainer", "ImageStream", "CONFIGS", "IMAGE_DATA", "AMP_MODES", "image_config",
           "image_dataset", "build_image_model", "loss_uses_jvp", "peak_memory"]

IMAGE_DATA = ("faces", "celeba")
AMP_MODES = ("auto", "bf16", "off")
SWITCHES = ("auto", "on", "off")
COMPILE_BACKENDS = ("off", "inductor", "aot_eager", "eager")
GRID_DIR = "samples"


# --- configuration ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageTrainConfig(TrainConfig):
    """A TrainConfig for images. New fields (the MLP's hidden/depth are unused):

    data: 'faces' (procedural, no download) or 'celeba' (needs data_root or $FMLAB_CELEBA).
    preset / image_size / dropout / time_condition: the UNet (fmlab.models.unet.UNET_PRESETS).
    crop / flip: CelebA preprocessing (fmlab.data.celeba.CROPS) and random horizontal flips.
    n_faces: size of the procedural training set.
    attribute: None (unconditional) or a binary attribute to condition on ('smiling', 'glasses' for the faces; a
    CelebA name such as 'Smiling', 'Eyeglasses'): the UNet becomes a 2-class model (n_classes is set to 2) trained
    with label dropout p_uncond, and its grids alternate the two classes (0: without, 1: with the attribute).
    amp: 'auto' (bf16 on capable GPUs unless the loss takes JVPs), 'bf16' (always, also on the CPU), 'off'.
    channels_last: 'auto' (on CUDA, unless the loss takes JVPs), 'on', 'off'.
    compile: torch.compile backend for the UNet, 'off' (default), 'inductor', 'aot_eager', 'eager'.
    sample_every: steps between sample grids (0: only at the end); sample_n images per grid, drawn with
    sample_steps Euler steps (one-time models) or flow-map jumps (two-time models).
    batch_size is per process: the global batch of a torchrun job is batch_size x WORLD_SIZE.
    """

    data: str = "faces"
    steps: int = 200_000
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 1000
    ema_decay: float = 0.9999
    log_every: int = 100
    ckpt_every: int = 5000
    preset: str = "small"
    image_size: int = 64
    dropout: float = 0.1
    time_condition: str = "st"
    data_root: str | None = None
    crop: str = "ddim"
    flip: bool = True
    n_faces: int = 20_000
    amp: str = "auto"
    channels_last: str = "auto"
    compile: str = "off"
    sample_every: int = 5000
    sample_n: int = 64
    sample_steps: int = 8
    attribute: str | None = None

    def __post_init__(self) -> None:
        if self.attribute is not None:
            if not isinstance(self.attribute, str) or not self.attribute:
                raise ValueError(f"attribute must be None or an attribute name, got {self.attribute!r}")
            if self.n_classes not in (0, 2):
                raise ValueError(f"attribute={self.attribute!r} is a 2-class label; n_classes must be 2 (or 0, "
                                 f"set for you), got {self.n_classes}")
            object.__setattr__(self, "n_classes", 2)
        elif self.n_classes:
            raise ValueError(f"n_classes={self.n_classes} needs attribute= (the label of each image), e.g. "
                             f"'smiling' for the procedural faces or 'Smiling' for CelebA")
        super().__post_init__()
        check_choice(self.data, "data", IMAGE_DATA)
        check_choice(self.preset, "preset", tuple(UNET_PRESETS))
        check_choice(self.amp, "amp", AMP_MODES)
        check_choice(self.channels_last, "channels_last", SWITCHES)
        check_choice(self.compile, "compile", COMPILE_BACKENDS)
        from .data.celeba import CROPS

        check_choice(self.crop, "crop", tuple(CROPS))
        check_int(self.image_size, "image_size", 8)
        check_int(self.n_faces, "n_faces", 1)
        check_int(self.sample_every, "sample_every", 0)
        check_int(self.sample_n, "sample_n", 1)
        check_int(self.sample_steps, "sample_steps", 1)
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be True or False, got {self.flip!r}")
        factor = 2 ** (len(UNET_PRESETS[self.preset]["channel_mult"]) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size must be divisible by {factor} for preset {self.preset!r}, "
                             f"got {self.image_size}")


CONFIGS: dict[str, dict[str, Any]] = {
    # CelebA 64 x 64, the manuscript's setting: a 9.6M-parameter UNet, global batch 128, 200k steps on a GPU.
    "celeba64": dict(data="celeba", preset="small", image_size=64, batch_size=128, lr=2e-4, steps=200_000,
                     warmup=1000, ema_decay=0.9999, dropout=0.1, log_every=100, ckpt_every=5000, sample_every=5000),
    # The procedural faces at 64 x 64 with the same network: the whole GPU pipeline with no download.
    "faces64": dict(data="faces", preset="small", image_size=64, batch_size=128, lr=2e-4, steps=50_000,
                    warmup=1000, ema_decay=0.9999, dropout=0.1, log_every=100, ckpt_every=5000, sample_every=5000),
    # A laptop-CPU run: 32 x 32 faces, a 0.3M-parameter UNet, minutes not hours.
    "faces32": dict(data="faces", preset="tiny", image_size=32, batch_size=32, lr=1e-3, steps=2000, warmup=100,
                    ema_decay=0.999, dropout=0.0, log_every=50, ckpt_every=500, sample_every=500, n_faces=4096),
}


def image_config(name: str = "celeba64", **overrides: Any) -> ImageTrainConfig:
    """A named image configuration (CONFIGS) with field overrides, e.g. image_config('faces32', loss='meanflow')."""
    check_choice(name, "config", tuple(CONFIGS))
    return ImageTrainConfig(**{**CONFIGS[name], **overrides})


# --- data ---------------------------------------------------------------------------------------------------------

def image_dataset(config: ImageTrainConfig, split: str = "train", progress: bool = True):
    """The data set a config names: fmlab.data.faces.Faces or fmlab.data.celeba.CelebA64 (`.images` uint8
    [N, H, W, 3], `.name`, `.attribute(name)` -> 0/1 labels [N])."""
    if config.data == "faces":
        from .data.faces import Faces

        n = config.n_faces if split == "train" else max(1, min(config.n_faces, 10_000))
        return Faces(n=n, size=config.image_size, seed=config.seed, split=split)
    from .data.celeba import CelebA64

    return CelebA64(config.data_root, split=split, crop=config.crop, size=config.image_size, progress=progress)


class ImageStream:
    """The trainer's data function: `stream(n, generator)` -> x1 [n, C, H, W] float32 in [-1, 1].

    Images come in epochs; epoch e visits this rank's shard of the data set in the order of
    torch.utils.data.DistributedSampler(shuffle=True, seed=seed) at set_epoch(e) (all ranks together cover every
    image once per epoch). A batch may straddle two epochs. Each image is flipped left-right with probability 1/2
    when `flip`, decided by `generator` (the trainer's seeded generator). `state_dict()` / `load_state_dict()`
    hold the position (epoch, index) for exact resume. With `labels` (int [N]) it returns (x1, labels [n]) instead.
    """

    def __init__(self, images: np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1, flip: bool = True,
                 labels: np.ndarray | None = None):
        from torch.utils.data import DistributedSampler

        if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be uint8 [N, H, W, C] with C in (1, 3), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if len(images) < world_size:
            raise ValueError(f"the data set has {len(images)} images, fewer than the {world_size} ranks")
        if labels is not None and np.shape(labels) != (len(images),):
            raise ValueError(f"labels must have one entry per image ({len(images)}), got shape {np.shape(labels)}")
        self.images, self.flip = images, flip
        self.labels = None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.long)
        self.sampler = DistributedSampler(range(len(images)), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed)
        self.epoch, self.pos = 0, 0
        self._order: list[int] | None = None

    def _current(self) -> list[int]:
        if self._order is None:
            self.sampler.set_epoch(self.epoch)
            self._order = list(iter(self.sampler))
        return self._order

    def indices(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            order = self._current()
            take = order[self.pos:self.pos + n - len(out)]
            out += take
            self.pos += len(take)
            if self.pos >= len(order):
                self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        return out

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor | tuple[Tensor, Tensor]:
        idx = np.asarray(self.indices(n))
        order = np.argsort(idx, kind="stable")  # read a memory-mapped cache in ascending order
        batch = np.empty((n, *self.images.shape[1:]), np.uint8)
        batch[order] = self.images[idx[order]]
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # uint8 -> [-1, 1]
        if self.flip:
            mirror = torch.rand(n, generator=generator) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        if self.labels is not None:
            return x.contiguous(), self.labels[torch.from_numpy(idx)]  # flips keep the attribute
        return x.contiguous()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos, self._order = int(state["epoch"]), int(state["pos"]), None


# --- models -------------------------------------------------------------------------------------------------------

def build_image_model(arch: str = "unet", **config: Any) -> nn.Module:
    """Rebuild an image model from the `config` dict its checkpoint stores (fmlab.models.build_unet)."""
    if arch != "unet":
        raise ValueError(f"arch must be 'unet', got {arch!r}")
    return build_unet(**config)


def loss_uses_jvp(spec_name: str, model: nn.Module, shape: tuple[int, ...], settings: dict[str, Any] | None = None,
                  device: torch.device | str = "cpu") -> bool:
    """Run the loss once on two random images and read its `n_jvp` diagnostic (global RNG state is restored)."""
    spec = get_loss(spec_name)
    settings = spec.settings() if settings is None else settings
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn((2, *shape), generator=g)
    x0 = torch.randn((2, *shape), generator=g)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        batch = spec.make_batch(x0, x1, g, **settings)
        moved = {f.name: getattr(batch, f.name).to(device) for f in dataclasses.fields(batch)
                 if isinstance(getattr(batch, f.name), Tensor)}
        _, diagnostics = spec.fn(model, dataclasses.replace(batch, **moved), **settings)
    return int(diagnostics.get("n_jvp", 0)) > 0


# --- the trainer ------------------------------------------------------------------------------------------------------

class ImageTrainer(Trainer):
    """Train a UNet on images with the engine's loop (see the module docstring for what is added).

    config: an ImageTrainConfig. model: default build_unet(config.preset, ...) with the loss's head and time
    inputs. data_fn: default an ImageStream over image_dataset(config). dist: this process's DistInfo (default:
    a single process). on_grid(step, grid uint8 [H, W, 3]): called with every sample grid (rank 0).
    """

    def __init__(self, config: ImageTrainConfig, model: nn.Module | None = None, data_fn: Callable | None = None,
                 runtime_settings: dict[str, Any] | None = None, dist: DistInfo | None = None,
                 on_grid: Callable[[int, np.ndarray], Any] | None = None, progress_data: bool = True):
        if not isinstance(config, ImageTrainConfig):
            raise ValueError(f"config must be an ImageTrainConfig, got {type(config).__name__}")
        self.dist = dist or DistInfo()
        if self.dist.world_size > 1 and self.dist.device is not None:
            config = dataclasses.replace(config, device=self.dist.device)
        if data_fn is None:
            dataset = image_dataset(config, "train", progress=progress_data and self.dist.is_main)
            self.dataset_name = dataset.name
            labels = dataset.attribute(config.attribute) if config.attribute is not None else None
            data_fn = ImageStream(dataset.images, seed=config.seed, rank=self.dist.rank,
                                  world_size=self.dist.world_size, flip=config.flip, labels=labels)
        else:
            self.dataset_name = getattr(data_fn, "name", "custom data")
        self.on_grid = on_grid
        self.grids: dict[int, np.ndarray] = {}
        super().__init__(config, model=model, data_fn=data_fn, runtime_settings=runtime_settings)
        self._setup_parallel()
        self._setup_speed()
        self._mark: tuple[int, float] | None = None
        self._grid_noise: Tensor | None = None

    # construction
    @staticmethod
    def default_threads() -> int:
        """CPU threads when config.threads is None: every physical core (a UNet step is large enough to use them)."""
        return default_threads(all_cores=True)

    def _build_model(self) -> nn.Module:
        cfg = self.config
        return build_unet(cfg.preset, image_size=cfg.image_size, prediction=cfg.head,
                          time_inputs=self.spec.time_inputs, dropout=cfg.dropout, time_condition=cfg.time_condition,
                          n_classes=cfg.n_classes)

    def _setup_parallel(self) -> None:
        if self.dist.world_size == 1:
            return
        broadcast_parameters(self.model)  # replicas start identical (they are, by the shared seed; make sure)
        self.ema.load_state_dict(self.model.state_dict())
        if self.dist.rank > 0:  # rank 0 continues the single-process streams; rank r > 0 gets its own seed
            seed = rank_seed(self.config.seed, self.dist.rank)
            self.generator.manual_seed(seed)
            torch.manual_seed(seed)

    def _setup_speed(self) -> None:
        """Decide bf16 autocast, channels-last and torch.compile for this device and loss."""
        cfg, cuda = self.config, self.device.type == "cuda"
        needs_probe = cuda and "auto" in (cfg.amp, cfg.channels_last) or cfg.compile != "off"
        shape = (self.model.config.get("in_channels", 3), cfg.image_size, cfg.image_size)
        self.uses_jvp = loss_uses_jvp(cfg.loss, self.model, shape, self.settings, self.device) if needs_probe else None
        bf16_ok = cuda and torch.cuda.is_bf16_supported()
        self.amp_dtype = {"bf16": torch.bfloat16, "off": None}.get(
            cfg.amp, torch.bfloat16 if bf16_ok and not self.uses_jvp else None)
        self.channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda and not self.uses_jvp)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.ema.to(memory_format=torch.channels_last)
        self.compiled = cfg.compile != "off" and not self.uses_jvp
        if self.compiled:
            self.model.backbone.compile(backend=cfg.compile)  # in place: state_dict keys are unchanged
        if cuda:
            torch.backends.cudnn.benchmark = True
            if not self.uses_jvp:  # TF32 matmuls for fp32 work; JVP losses keep full fp32
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True

    def describe(self) -> str:
        """One line: device, world size, precision, memory format, compile, data."""
        amp = "bf16 autocast" if self.amp_dtype is not None else "fp32"
        jvp = {None: "", True: " (loss takes JVPs)", False: ""}[self.uses_jvp]
        return (f"{self.config.loss} on {self.dataset_name}: {self.device} x {self.dist.world_size}, {amp}{jvp}, "
                f"{'channels-last' if self.channels_last else 'contiguous'}, "
                f"{'compiled (' + self.config.compile + ')' if self.compiled else 'eager'}")

    # one step
    def make_batch(self):
        batch = super().make_batch()
        if not self.channels_last:
            return batch
        moved = {name: getattr(batch, name).contiguous(memory_format=torch.channels_last)
                 for name in ("x0", "x1", "z") if getattr(batch, name) is not None}
        return dataclasses.replace(batch, **moved)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> tuple[Tensor, Tensor, dict[str, Any], float]:
        """One optimizer step on this rank's batch; gradients averaged across ranks before clipping."""
        self.model.train()
        batch = self.make_batch()
        with self._autocast():
            loss, diagnostics = self.spec.fn(self.model, batch, **self.settings)
        self.optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        if self.dist.world_size > 1:
            sync_gradients(self.model, self.dist.world_size)  # g = (1/R) sum_r g_r
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        ema_update(self.ema, self.model, ema_decay_at(self.step, self.config.ema_decay))
        self.step += 1
        if self._grid_due():
            self.sample_grid()
        return loss.detach(), grad_norm.detach(), diagnostics, lr

    # sample grids
    def _grid_due(self) -> bool:
        every = self.config.sample_every
        return self.dist.is_main and (self.step == self.config.steps or (every > 0 and self.step % every == 0))

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """sample_n images from the EMA model with fixed noise (seed config.seed), as one uint8 grid [H, W, 3]; a
        conditional model draws the classes in turn (labels 0, 1, 0, 1, ...) at guidance 1 (the conditional model)."""
        cfg = self.config
        if self._grid_noise is None:
            g = torch.Generator().manual_seed(cfg.seed)
            c = self.model.config.get("in_channels", 3)
            self._grid_noise = torch.randn(cfg.sample_n, c, cfg.image_size, cfg.image_size, generator=g)
        labels = None
        if cfg.n_classes:
            from .guidance import cycle_labels

            labels = cycle_labels(cfg.sample_n, cfg.n_classes).to(self.device)
        x = generate_images(self.ema, self._grid_noise.to(self.device), cfg.sample_steps, loss=cfg.loss, labels=labels)
        grid = make_grid(to_uint8(x))
        self.grids[self.step] = grid
        for old in sorted(self.grids)[:-20]:  # keep the last 20 in memory
            del self.grids[old]
        if self.out is not None:
            save_png(self.out / GRID_DIR / f"step_{self.step:07d}.png", grid)
        if self.on_grid is not None:
            self.on_grid(self.step, grid)
        return grid

    # logging: throughput and memory
    def fit(self, progress: bool = True, callback: Callable[[int, dict[str, Any]], Any] | None = None
            ) -> list[dict[str, Any]]:
        self._mark = (self.step, self.elapsed)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return super().fit(progress=progress and self.dist.is_main, callback=callback)

    def _record(self, diagnostics: dict[str, Any], lr: float) -> dict[str, Any]:
        record = super()._record(diagnostics, lr)
        step0, t0 = self._mark or (0, 0.0)
        steps, seconds = self.step - step0, max(self.elapsed - t0, 1e-9)
        record["images_per_s"] = round(steps * self.config.batch_size * self.dist.world_size / seconds, 2)
        record["step_ms"] = round(1000 * seconds / max(steps, 1), 2)
        record.update(peak_memory(self.device))
        self._mark = (self.step, self.elapsed)
        return record

    # files: rank 0 writes; checkpoints carry the data position and every rank's random state
    def _start_files(self) -> None:
        if self.dist.is_main:
            super()._start_files()

    def _write_record(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            super()._write_record(record)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if hasattr(self.data_fn, "state_dict"):
            state["data_state"] = self.data_fn.state_dict()
        ranks = all_gather_objects({"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()})
        state["rank_states"] = ranks if self.dist.world_size > 1 else []
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "data_state" in state and hasattr(self.data_fn, "load_state_dict"):
            self.data_fn.load_state_dict(state["data_state"])
        ranks = state.get("rank_states") or []
        if self.dist.world_size > 1:
            if len(ranks) == self.dist.world_size:
                self.generator.set_state(ranks[self.dist.rank]["generator"])
                torch.set_rng_state(ranks[self.dist.rank]["torch_rng"])
            else:  # a different number of ranks: continue with fresh per-rank streams
                seed = rank_seed(self.config.seed, self.dist.rank) + self.step
                self.generator.manual_seed(seed)
                torch.manual_seed(seed)

    def save(self, path: str | Path | None = None) -> Path:
        state = self.state_dict()  # collective under torchrun: every rank takes part
        from .checkpoint import save_checkpoint

        if path is None:
            if self.out is None:
                raise ValueError("save() needs a path when config.out is None")
            path = self.out / CKPT_NAME
        if self.dist.is_main:
            save_checkpoint(path, state)
        return Path(path)

    @classmethod
    def resume(cls, out: str | Path, model: nn.Module | None = None, data_fn: Callable | None = None,
               runtime_settings: dict[str, Any] | None = None, device: str | None = None,
               threads: int | None = None, dist: DistInfo | None = None, **kwargs: Any) -> ImageTrainer:
        """Continue the image run saved in `out` from its last checkpoint (same data position and random state)."""
        _, state, saved = load_for_resume(out, device, threads)
        config = ImageTrainConfig.from_dict(saved)
        if model is None:
            model = build_image_model(**state["model_config"])
        trainer = cls(config, model=model, data_fn=data_fn, runtime_settings=runtime_settings, dist=dist, **kwargs)
        trainer.load_state_dict(state)
        return trainer


def peak_memory(device: torch.device) -> dict[str, float]:
    """{'peak_mem_mb': ...} since the previous call (which resets the peak): CUDA's peak allocated memory; on a CPU
    the process's peak resident set size (Linux: VmHWM, reset through /proc/self/clear_refs; elsewhere the peak
    since the process started)."""
    if device.type == "cuda":
        value = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return {"peak_mem_mb": round(value, 1)}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset the peak to the current RSS
        return {"peak_mem_mb": round(kib / 1024, 1)}
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return {"peak_mem_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    except ImportError:  # Windows
        return {}
