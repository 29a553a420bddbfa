"""Procedural faces: a licence-free, download-free stand-in for CelebA at any size (64 x 64 by default).

Each image is drawn from a few dozen random parameters (pose, face shape, skin tone and lighting, hair style and
colour, eyes and iris colour, brows, nose, mouth and smile, glasses, clothes, background) and rendered with
anti-aliased ellipses and curves in NumPy, vectorised over the batch. Like aligned CelebA, faces are centred and
upright with the eyes at about the same height, so the whole image pipeline (loader, flips, trainer, sampler,
metrics, lab) runs with no download: in tests, in CI and in the final lab's fast mode.

The same seed gives the same images on every machine (NumPy's PCG64 generator, float32 rendering, rounding to
uint8). Splits draw from independent streams: `make_faces(n, seed=s)` for 'train', seed s + 1 for 'valid', s + 2
for 'test'.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["make_faces", "Faces", "FACE_SPLITS"]

FACE_SPLITS = {"train": 0, "valid": 1, "test": 2}

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [141, 85, 54],
                  [96, 60, 40]], np.float32)
_HAIR = np.array([[30, 24, 22], [70, 45, 30], [120, 80, 45], [200, 160, 90], [150, 60, 30], [170, 170, 170],
                  [235, 215, 160]], np.float32)
_IRIS = np.array([[70, 45, 30], [40, 90, 140], [70, 120, 70], [110, 90, 60]], np.float32)
_CHUNK = 512


def _ellipse(u: np.ndarray, v: np.ndarray, cx, cy, rx, ry, pix: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the ellipse ((u - cx)/rx)^2 + ((v - cy)/ry)^2 <= 1 (pix: pixel width)."""
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    dist = (r - 1.0) * np.minimum(rx, ry)  # ~ signed distance to the boundary near it
    return np.clip(0.5 - dist / pix, 0.0, 1.0)


def _band(u, v, cx, cy, half_width, sag, thickness, pix: float) -> np.ndarray:
    """A curved stroke: the parabola v = cy + sag (1 - ((u - cx)/half_width)^2) for |u - cx| < half_width."""
    x = (u - cx) / half_width
    curve = cy + sag * (1.0 - x**2)
    inside = np.clip(0.5 - (np.abs(x) - 1.0) * half_width / pix, 0.0, 1.0)
    return np.clip(0.5 - (np.abs(v - curve) - thickness) / pix, 0.0, 1.0) * inside


def _paint(img: np.ndarray, mask: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Alpha-composite `color` ([3], [n, 1, 1, 3] or [n, H, W, 3]) over img [n, H, W, 3] with coverage mask
    [n, H, W], in place, touching only the covered pixels (most features cover a few percent of the image)."""
    mask = np.broadcast_to(mask, img.shape[:3])
    nz = np.nonzero(mask > 0)
    color = np.asarray(color, np.float32)
    if color.ndim == 4:
        color = color[nz] if color.shape[1] > 1 else color[nz[0], 0, 0]
    m = mask[nz][:, None].astype(np.float32, copy=False)
    img[nz] += m * (color - img[nz])  # img (1 - m) + color m
    return img


def _params(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def uni(a, b):
        return rng.uniform(a, b, n).astype(np.float32)[:, None, None]

    def pick(table):
        idx = rng.integers(0, len(table), n)
        jitter = rng.normal(0, 8, (n, 3)).astype(np.float32)
        return np.clip(table[idx] + jitter, 0, 255)[:, None, None, :]

    p = {k: uni(*r) for k, r in dict(
        cx=(-0.06, 0.06), cy=(0.0, 0.08), rx=(0.36, 0.44), ry=(0.48, 0.56), yaw=(-0.08, 0.08),
        eye_dx=(0.15, 0.2), eye_y=(-0.1, -0.02), eye_r=(0.055, 0.075), eye_open=(0.45, 0.8), iris=(0.55, 0.75),
        brow_lift=(0.08, 0.14), brow_tilt=(-0.02, 0.03), nose_len=(0.1, 0.17), mouth_y=(0.24, 0.32),
        mouth_w=(0.1, 0.18), smile=(-0.02, 0.07), mouth_open=(0.0, 0.05), hair_top=(0.12, 0.24),
        hair_long=(0.0, 1.0), fringe=(0.3, 0.62), light=(-0.25, 0.25), bg_shift=(-40, 40), shoulder=(0.55, 0.8),
    ).items()}
    p.update(skin=pick(_SKIN), hair=pick(_HAIR), iris_c=pick(_IRIS), cloth=pick(
        rng.uniform(20, 235, (12, 3)).astype(np.float32)), bg=pick(rng.uniform(40, 230, (16, 3)).astype(np.float32)))
    p["glasses"] = (rng.uniform(0, 1, n) < 0.15).astype(np.float32)[:, None, None]
    return p


def _render(p: dict[str, np.ndarray], size: int) -> np.ndarray:
    n = p["cx"].shape[0]
    pix = 2.0 / size
    axis = (np.arange(size, dtype=np.float32) + 0.5) * pix - 1.0  # pixel centres in [-1, 1]
    u, v = axis[None, None, :], axis[None, :, None]  # u: right, v: down
    gradient = (v + 1.0)[..., None] * p["bg_shift"][..., None]
    img = (np.broadcast_to(p["bg"], (n, size, size, 3)) + gradient).astype(np.float32)
    cx, cy, rx, ry = p["cx"], p["cy"], p["rx"], p["ry"]
    fx = cx + p["yaw"] * rx  # features shift with the head's turn

    hair_ry = ry + p["hair_top"]
    long_hair = (p["hair_long"] > 0.5).astype(np.float32)
    hair_cy = cy - p["hair_top"] * 0.45 + 0.25 * long_hair
    hair_ry = long_hair * (hair_ry + 0.3) + (1 - long_hair) * hair_ry * 0.8
    img = _paint(img, _ellipse(u, v, cx, hair_cy, rx + 0.1, hair_ry, pix), p["hair"])
    img = _paint(img, _ellipse(u, v, cx, 1.15, p["shoulder"], 0.42, pix), p["cloth"])
    img = _paint(img, _ellipse(u, v, cx, cy + ry * 0.9, rx * 0.45, ry * 0.5, pix), p["skin"] * 0.85)
    face = _ellipse(u, v, cx, cy, rx, ry, pix)
    shade = 1.0 + p["light"] * (u - cx) / rx - 0.12 * ((v - cy) / ry) ** 2  # side light, darker chin and brow
    img = _paint(img, face, p["skin"] * np.clip(shade, 0.6, 1.25)[..., None])
    fringe_line = cy - ry * p["fringe"] + 0.05 * np.sin(9.0 * (u - cx) + 7.0 * p["yaw"])
    img = _paint(img, face * np.clip(0.5 - (v - fringe_line) / pix, 0.0, 1.0), p["hair"])

    eye_y = cy + p["eye_y"] * ry
    for side in (-1.0, 1.0):
        ex = fx + side * p["eye_dx"]
        img = _paint(img, _ellipse(u, v, ex, eye_y, p["eye_r"], p["eye_r"] * p["eye_open"], pix),
                     np.array([245, 245, 240], np.float32))
        iris = _ellipse(u, v, ex + p["yaw"] * 0.05, eye_y, p["eye_r"] * p["iris"], p["eye_r"] * p["iris"], pix)
        lid = _ellipse(u, v, ex, eye_y, p["eye_r"], p["eye_r"] * p["eye_open"], pix)
        img = _paint(img, iris * lid, p["iris_c"])
        img = _paint(img, _ellipse(u, v, ex + p["yaw"] * 0.05, eye_y, p["eye_r"] * 0.3, p["eye_r"] * 0.3, pix) * lid,
                     np.array([15, 12, 12], np.float32))
        brow_y = eye_y - p["brow_lift"]
        img = _paint(img, _band(u, v, ex, brow_y, p["eye_r"] * 1.4, -0.02 - p["brow_tilt"], 0.011, pix),
                     p["hair"] * 0.8)
        ring = np.clip(_ellipse(u, v, ex, eye_y, p["eye_r"] * 1.7, p["eye_r"] * 1.4, pix)
                       - _ellipse(u, v, ex, eye_y, p["eye_r"] * 1.7 - 0.02, p["eye_r"] * 1.4 - 0.02, pix), 0, 1)
        img = _paint(img, ring * p["glasses"], np.array([25, 25, 30], np.float32))

    nose_y = eye_y + p["nose_len"]
    img = _paint(img, _ellipse(u, v, fx + p["yaw"] * 0.1, nose_y, 0.045, 0.025, pix) * 0.5, p["skin"] * 0.6)
    mouth_y = cy + p["mouth_y"] * ry * 1.6
    img = _paint(img, _ellipse(u, v, fx, mouth_y + p["smile"] * 0.5, p["mouth_w"], p["mouth_open"] + 0.004, pix),
                 np.array([60, 20, 25], np.float32))
    lips = _band(u, v, fx, mouth_y - p["smile"] * 0.3, p["mouth_w"], p["smile"], 0.014, pix)
    img = _paint(img, lips, np.clip(p["skin"] * np.array([0.85, 0.5, 0.5], np.float32), 0, 255))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_faces(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """n procedural faces as uint8 [n, size, size, 3] (RGB, channels last), deterministic in (n, size, seed).

    The first k images of make_faces(n, ...) equal make_faces(k, ...) for k <= n, whatever n.
    """
    for name, value, low in (("n", n, 1), ("size", size, 8), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    rng = np.random.default_rng(seed)
    chunks, done = [], 0
    while done < n:
        m = min(_CHUNK, n - done)
        params = _params(_CHUNK, rng)  # always draw a full chunk: a prefix of a longer run gives the same images
        chunks.append(_render({k: v[:m] for k, v in params.items()}, size))
        done += m
    return np.concatenate(chunks)


@functools.lru_cache(maxsize=8)
def _cached_faces(n: int, size: int, seed: int) -> np.ndarray:
    images = make_faces(n, size, seed)
    images.setflags(write=False)
    return images


class Faces:
    """The procedural face data set: `images` uint8 [n, size, size, 3] (read-only, cached per process).

    split: 'train', 'valid' or 'test' (independent seeds: seed, seed + 1, seed + 2). The interface matches
    fmlab.data.celeba.CelebA64 (`images`, `len`, `name`), so trainers, metrics and labs take either.
    """

    def __init__(self, n: int = 10000, size: int = 64, seed: int = 0, split: str = "train"):
        if split not in FACE_SPLITS:
            raise ValueError(f"split must be one of {list(FACE_SPLITS)}, got {split!r}")
        self.split, self.size, self.seed = split, size, seed
        self.images = _cached_faces(n, size, seed + FACE_SPLITS[split])
        self.name = f"procedural faces {size}x{size} ({split}, n={n})"

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"Faces({self.name})"
