"""The CelebA lab's orchestration (lab 13): plan the runs for the machine at hand, train them and sample them
(kept in the kernel and in the disk cache), score them. Image runs in general: fmlab.runs (load, sample,
evaluate) and fmlab.cli_images (the command line's image paths)."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .checks import check_choice
from .image_grid import to_uint8
from .image_sizing import measure_throughput, plan_steps
from .runs import sample_images
from .train_images import (
    DEFAULT_ATTRIBUTE,
    ImageTrainConfig,
    ImageTrainer,
    image_dataset,
)

__all__ = ["LAB_RUNS", "LAB_EVAL_STEPS", "LabPlan", "CPU_MINUTES", "plan_lab", "train_lab_run", "lab_samples",
           "lab_sampler", "SAMPLES_ON_DISK_MAX_BYTES", "prepare_lab_run", "prepare_lab_scores", "lab_reference",
           "DATA_DRAWS", "lab_scores", "samples_fingerprint", "preset_table", "LAB_GUIDANCE_P_UNCOND",
           "train_lab_guidance", "guided_lab_samples", "sample_images"]  # sample_images: fmlab.runs's, for lab 13


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
        return ImageTrainConfig.from_dict({**base, **overrides})

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


CPU_MINUTES = 4.0  # lab 13's default minutes of flow matching per model on a CPU (the lab's MINUTES_PER_MODEL)


def plan_lab(budget_s: float | None = None, fast: bool | None = None, device: str | None = None,
             data_root: str | None = None, minutes: float | None = None) -> LabPlan:
    """Size lab 13's runs from a throughput measured on this device.

    fast (default: FMLAB_FAST): procedural faces at 16 px, the 'tiny' UNet, 20-30 steps per run (seconds). On a GPU:
    CelebA if found (data_root / $FMLAB_CELEBA) else the procedural faces, 64 px, the 'small' UNet (9.6M), batch 128,
    5 minutes of flow matching per run. On a CPU: faces at 32 px, 'tiny', batch 32, lr 1e-3, CPU_MINUTES of flow
    matching per run (benchmarks/README.md, "Faces on a CPU": recognisable faces after ~1000 steps). `minutes`
    sets the minutes per run on a CPU or GPU (fast mode keeps its seconds); `budget_s` overrides the time per run
    in every mode. The measured throughput is kept in the disk cache (keyed on the configuration and the machine),
    so that a new kernel makes the same plan and finds its trained runs there; `python -m fmlab cache clear`
    measures again.
    """
    from .data.celeba import celeba_available
    from .device import pick_device
    from .labkit import fast_mode

    fast = fast_mode() if fast is None else fast
    dev = pick_device(device)
    kind = "fast" if fast else "gpu" if dev.type == "cuda" else "cpu"
    data = "celeba" if kind != "fast" and celeba_available(data_root) else "faces"
    sizes = {"fast": dict(preset="tiny", image_size=16, batch_size=12, lr=3e-3, budget_s=2.0, n_eval=16,
                          n_faces=512, limits=(20, 30)),
             "cpu": dict(preset="tiny", image_size=32, batch_size=32, lr=1e-3, budget_s=60 * CPU_MINUTES,
                         n_eval=256, n_faces=4096, limits=(200, 50_000)),
             "gpu": dict(preset="small", image_size=64, batch_size=128, lr=2e-4, budget_s=300.0, n_eval=5000,
                         n_faces=20_000, limits=(500, 200_000))}[kind]
    low, high = sizes.pop("limits")
    if minutes is not None and kind != "fast":
        sizes["budget_s"] = 60.0 * float(minutes)
    if budget_s is not None:
        sizes["budget_s"] = float(budget_s)
    plan = LabPlan(kind=kind, device=str(dev), data=data, data_root=data_root, steps=1, images_per_s=1.0, **sizes)
    images_per_s = _lab_throughput(plan.config("cfm"), fast)
    steps = plan_steps(images_per_s, plan.budget_s, plan.batch_size, low, high)
    return dataclasses.replace(plan, images_per_s=images_per_s, steps=steps)


def _lab_throughput(config: ImageTrainConfig, fast: bool) -> float:
    """Images per second of flow matching with `config` on this machine: measured once, then read from the cache."""
    import platform

    from .labkit import cache_key, persisted

    config = dataclasses.replace(config, steps=1)  # the throughput does not depend on the run's length
    key = cache_key("fmlab.images.plan_lab throughput", config, platform.node(), platform.machine(),
                    torch.__version__)
    measured = persisted(key, lambda: measure_throughput(config, steps=1 if fast else 3, warmup=1),
                         lambda m: {k: float(v) for k, v in m.items()}, dict)
    return float(measured["images_per_s"])


def train_lab_run(plan: LabPlan, label: str, live: bool = True) -> ImageTrainer:
    """Train (once per kernel: cached on the config) the run `label` of LAB_RUNS with a progress bar and a live
    figure of the sample grid and the loss; a cached run draws its final state at once."""
    check_choice(label, "label", LAB_RUNS)
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
    (Euler steps for velocity models, flow-map jumps for MeanFlow). Kept like `lab_sampler`'s."""
    sample = lab_sampler(plan, trainers, seed)
    return {label: {k: sample(label, k) for k in plan.eval_steps} for label in trainers}


SAMPLES_ON_DISK_MAX_BYTES = 32 * 2**20  # larger sample sets (a GPU plan's 5000 at 64 px: 61 MB) stay in memory


def lab_sampler(plan: LabPlan, trainers: dict[str, ImageTrainer], seed: int = 1):
    """`sample(label, steps)` -> uint8 [n_eval, H, W, 3]: any step count of a lab run, from the noise of
    `lab_samples` (same seed), each (run, steps) drawn once: the step slider of the sample grid. Kept in the kernel
    and, up to SAMPLES_ON_DISK_MAX_BYTES, in the disk cache beside the trained runs (keyed by the run's config, its
    EMA weights' fingerprint and the sampling settings), so that a new kernel, or one after `python -m fmlab
    prewarm`, draws nothing. The trainers are finished runs: each one's fingerprint is taken once, not per move."""
    from .labkit import cache_key, persisted, session_cache, weights_fingerprint

    fingerprints: dict[str, str] = {}

    def sample(label: str, steps: int) -> np.ndarray:
        trainer = trainers[label]
        if label not in fingerprints:
            fingerprints[label] = weights_fingerprint(trainer.ema)
        key = cache_key("lab_sampler", trainer.config, fingerprints[label], plan.n_eval, steps, seed)

        def draw() -> np.ndarray:
            return to_uint8(sample_images(trainer.ema, plan.n_eval, steps, None, seed, loss=trainer.config.loss))

        if plan.n_eval * 3 * plan.image_size ** 2 > SAMPLES_ON_DISK_MAX_BYTES:
            cache = session_cache()
            if key not in cache:
                cache[key] = draw()
            return cache[key]
        return persisted(key, draw, lambda images: {"images": torch.from_numpy(images)},
                         lambda state: state["images"].numpy())

    return sample


def prepare_lab_run(plan: LabPlan, label: str) -> None:
    """Train the run `label` (`train_lab_run`, no live figure) and draw its samples at every step count of the plan
    (`lab_samples`): what `python -m fmlab prewarm 13` stores for each run."""
    lab_samples(plan, {label: train_lab_run(plan, label, live=False)})


def prepare_lab_scores(plan: LabPlan) -> None:
    """Score the four runs' samples as the lab does (`lab_scores` of `lab_samples` of LAB_RUNS, in order): what
    `python -m fmlab prewarm 13` stores once the runs are trained (it trains and samples any that are not)."""
    lab_scores(plan, lab_samples(plan, {label: train_lab_run(plan, label, live=False) for label in LAB_RUNS}))


def lab_reference(plan: LabPlan, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, Any]:
    """(n training images chosen at random (seeded), the data set) for scoring."""
    config = plan.config("cfm")
    dataset = image_dataset(config, "train", progress=True)
    n = min(n or plan.n_eval, len(dataset.images))
    pick = np.sort(np.random.default_rng(seed).choice(len(dataset.images), size=n, replace=False))
    return np.asarray(dataset.images[pick]), dataset


DATA_DRAWS = 3  # disjoint draws of real images scored like samples: the proxies' floor and their spread at n_eval


def lab_scores(plan: LabPlan, samples: dict[str, dict[int, np.ndarray]], inception: str | None = None
               ) -> list[dict[str, Any]]:
    """Rows {'model', 'steps', 'name', 'value', 'n', 'note', 'spread'}: FID (labelled by sample size; only with
    Inception weights) and the proxies, for every model and step count, plus two baselines scored the same way:
    'noise (no training)', Gaussian noise images (what a model that learned nothing gets), and 'data (held-out
    draws)', DATA_DRAWS disjoint sets of n_eval real images: the floor a perfect model reaches, with 'spread' the
    standard deviation over the draws (a difference between models well below about twice it is sampling noise).
    Scored by the proxies alone (no Inception weights), the rows are kept in the disk cache too, keyed by the plan
    and a fingerprint of the samples, so that a new kernel scores nothing again."""
    from .fid import inception_extractor
    from .labkit import cache_key, persisted

    extractor = inception_extractor(inception)
    if extractor is not None:
        return _score_rows(plan, samples, extractor)
    return persisted(cache_key("lab_scores", plan, samples_fingerprint(samples)),
                     lambda: _score_rows(plan, samples, None), lambda rows: {"rows": rows},
                     lambda state: [dict(row) for row in state["rows"]])


def samples_fingerprint(samples: dict[str, dict[int, np.ndarray]]) -> str:
    """A short SHA-256 of {label: {steps: images}} (labels and step counts in order, shapes and pixels)."""
    digest = hashlib.sha256()
    for label, by_steps in samples.items():  # in order: the rows follow it
        for k, images in by_steps.items():
            images = np.ascontiguousarray(images)
            digest.update(f"{label}:{k}:{images.shape}:{images.dtype};".encode())
            digest.update(images.tobytes())
    return digest.hexdigest()[:16]


def _score_rows(plan: LabPlan, samples: dict[str, dict[int, np.ndarray]], extractor: Any) -> list[dict[str, Any]]:
    from .fid import image_scores, reference_stats

    reference, dataset = lab_reference(plan)
    stats = reference_stats(extractor, dataset.images, dataset.name) if extractor is not None else None
    g = torch.Generator().manual_seed(123)
    noise = to_uint8(torch.randn(plan.n_eval, 3, plan.image_size, plan.image_size, generator=g).clamp(-1, 1))
    rows = []
    for label, by_steps in [("noise (no training)", {0: noise}), *samples.items()]:
        for k, images in by_steps.items():
            for score in image_scores(images, reference, extractor, stats):
                rows.append({"model": label, "steps": k, "name": score.name, "value": score.value, "n": score.n,
                             "note": score.note, "spread": None})
    draws = [image_scores(images, reference, extractor, stats) for images in _data_draws(plan, dataset)]
    for i, score in enumerate(draws[0] if draws else []):
        values = np.array([d[i].value for d in draws])
        rows.append({"model": "data (held-out draws)", "steps": 0, "name": score.name, "value": float(values.mean()),
                     "n": score.n, "note": f"mean of {len(draws)} draws", "spread": float(values.std(ddof=1))
                     if len(draws) > 1 else None})
    return rows


def _data_draws(plan: LabPlan, dataset: Any) -> list[np.ndarray]:
    """Up to DATA_DRAWS sets of n_eval real images, disjoint from each other and from `lab_reference`'s."""
    total = len(dataset.images)
    n = min(plan.n_eval, total)
    used = set(np.random.default_rng(0).choice(total, size=n, replace=False).tolist())  # lab_reference's pick
    rest = np.random.default_rng(1).permutation(np.array([i for i in range(total) if i not in used]))
    return [np.asarray(dataset.images[np.sort(rest[k * n:(k + 1) * n])]) for k in range(min(DATA_DRAWS,
                                                                                             len(rest) // n))]


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
