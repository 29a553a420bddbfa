"""Procedural faces: a licence-free, download-free stand-in for CelebA at any size (64 x 64 by default).

Each image is drawn from a few dozen random parameters (pose, face shape, skin tone and lighting, hair style and
colour, eyes and iris colour, brows, nose, mouth and smile, glasses, clothes, background) and rendered with
anti-aliased ellipses and curves in NumPy, vectorised over the batch. Like aligned CelebA, faces are centred and
upright with the eyes at about the same height, so the whole image pipeline (loader, flips, trainer, sampler,
metrics, lab) runs with no download: in tests, in CI and in the final lab's fast mode.

The same seed gives the same images on every machine (NumPy's PCG64 generator, float32 rendering, rounding to
uint8). Splits draw from independent streams: `make_faces(n, seed=s)` for 'train', seed s + 1 for 'valid', s + 2
for 'test'.

Attributes (labels for conditional generation, FACE_ATTRIBUTES), each drawn with the face and visible in it:
'smiling' (probability 1/2): a wide open mouth with a row of teeth and upturned corners, against a closed, flat or
slightly downturned mouth; 'glasses' (probability 0.15): dark rims around both eyes. `make_faces(...,
return_attributes=True)` and `Faces.attribute(name)` give them as 0/1 labels.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["make_faces", "Faces", "FACE_SPLITS", "FACE_ATTRIBUTES"]

FACE_SPLITS = {"train": 0, "valid": 1, "test": 2}
FACE_ATTRIBUTES = ("smiling", "glasses")

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [141, 85, 54],
                  [96, 60, 40]], np.float32)
_HAIR = np.array([[30, 24, 22], [70, 45, 30], [120, 80, 45], [200, 160, 90], [150, 60, 30], [170, 170, 170],
                  [235, 215, 160]], np.float32)
_IRIS = np.array([[70, 45, 30], [40, 90, 140], [70, 120, 70], [110, 90, 60]], np.float32)
_CHUNK = 512


def _ellipse(u: np.ndarray, v: np.ndarray, cx, cy, rx, ry, pix: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the ellipse ((u - cx)/rx)^2 + ((v - cy)/ry)^2 <= 1 (pix: pixel width), from
    the signed distance (r - 1) / |grad r|, kept at least the distance to the bounding box (so a thin ellipse does
    not smear along its long axis at low resolution)."""
    du, dv = (u - cx) / rx, (v - cy) / ry
    r = np.sqrt(du**2 + dv**2)
    grad = np.sqrt((du / rx) ** 2 + (dv / ry) ** 2) / np.maximum(r, 1e-6)  # |grad r|, in [1/max(rx,ry), 1/min(rx,ry)]
    dist = (r - 1.0) / np.maximum(grad, 1.0 / np.maximum(rx, ry))  # ~ signed distance to the boundary (first order)
    box = np.maximum(np.abs(u - cx) - rx, np.abs(v - cy) - ry)  # distance to the bounding box: a lower bound outside
    return np.clip(0.5 - np.maximum(dist, box) / pix, 0.0, 1.0)


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
    p["smiling"] = (rng.uniform(0, 1, n) < 0.5).astype(np.float32)[:, None, None]  # drawn last: the rest is as before
    # the mouth follows the attribute: smiling -> upturned corners (sag 0.05..0.095) and open (0.04..0.07);
    # not smiling -> flat or slightly downturned (sag -0.015..0.003) and closed; the draws above set where in the range
    smile01 = (p["smile"] + 0.02) / 0.09
    p["smile"] = np.where(p["smiling"] > 0, 0.05 + 0.045 * smile01, -0.015 + 0.018 * smile01).astype(np.float32)
    p["mouth_open"] = (p["smiling"] * (0.04 + 0.6 * p["mouth_open"])).astype(np.float32)
    p["mouth_w"] = (p["mouth_w"] * (1.0 + 0.25 * p["smiling"])).astype(np.float32)
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
    mouth = _ellipse(u, v, fx, mouth_y + p["smile"] * 0.5, p["mouth_w"], p["mouth_open"] + 0.004, pix)
    img = _paint(img, mouth, np.array([60, 20, 25], np.float32))
    teeth = _ellipse(u, v, fx, mouth_y + p["smile"] * 0.5 - 0.4 * p["mouth_open"], p["mouth_w"] * 0.75,
                     p["mouth_open"] * 0.5 + 1e-3, pix) * mouth * p["smiling"]
    img = _paint(img, teeth, np.array([245, 240, 230], np.float32))
    lips = _band(u, v, fx, mouth_y - p["smile"] * 0.3, p["mouth_w"], p["smile"], 0.014, pix)
    img = _paint(img, lips, np.clip(p["skin"] * np.array([0.85, 0.5, 0.5], np.float32), 0, 255))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_faces(n: int, size: int = 64, seed: int = 0,
               return_attributes: bool = False) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """n procedural faces as uint8 [n, size, size, 3] (RGB, channels last), deterministic in (n, size, seed); with
    return_attributes, also {name: int64 [n] of 0/1} for every name in FACE_ATTRIBUTES.

    The first k images of make_faces(n, ...) equal make_faces(k, ...) for k <= n, whatever n.
    """
    for name, value, low in (("n", n, 1), ("size", size, 8), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    rng = np.random.default_rng(seed)
    chunks, done = [], 0
    labels: dict[str, list[np.ndarray]] = {name: [] for name in FACE_ATTRIBUTES}
    while done < n:
        m = min(_CHUNK, n - done)
        params = _params(_CHUNK, rng)  # always draw a full chunk: a prefix of a longer run gives the same images
        chunks.append(_render({k: v[:m] for k, v in params.items()}, size))
        for name in FACE_ATTRIBUTES:
            labels[name].append(params[name][:m, 0, 0].astype(np.int64))
        done += m
    images = np.concatenate(chunks)
    if not return_attributes:
        return images
    return images, {name: np.concatenate(parts) for name, parts in labels.items()}


@functools.lru_cache(maxsize=8)
def _cached_faces(n: int, size: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    images, attributes = make_faces(n, size, seed, return_attributes=True)
    images.setflags(write=False)
    for labels in attributes.values():
        labels.setflags(write=False)
    return images, attributes


class Faces:
    """The procedural face data set: `images` uint8 [n, size, size, 3] (read-only, cached per process).

    split: 'train', 'valid' or 'test' (independent seeds: seed, seed + 1, seed + 2). The interface matches
    fmlab.data.celeba.CelebA64 (`images`, `len`, `name`, `attribute(name)`), so trainers, metrics and labs take
    either.
    """

    def __init__(self, n: int = 10000, size: int = 64, seed: int = 0, split: str = "train"):
        if split not in FACE_SPLITS:
            raise ValueError(f"split must be one of {list(FACE_SPLITS)}, got {split!r}")
        self.split, self.size, self.seed = split, size, seed
        self.images, self._attributes = _cached_faces(n, size, seed + FACE_SPLITS[split])
        self.name = f"procedural faces {size}x{size} ({split}, n={n})"

    def attribute(self, name: str) -> np.ndarray:
        """0/1 labels int64 [n] of the attribute `name` (one of FACE_ATTRIBUTES), aligned with `images`."""
        if name not in FACE_ATTRIBUTES:
            raise ValueError(f"attribute must be one of {list(FACE_ATTRIBUTES)} for the procedural faces, got {name!r}")
        return self._attributes[name]

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"Faces({self.name})"
