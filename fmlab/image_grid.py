"""Images as arrays and files: [-1, 1] tensors to uint8, a grid of samples, an atomic PNG write."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checkpoint import atomic_write

__all__ = ["to_uint8", "make_grid", "save_png"]


def to_uint8(x: Tensor) -> np.ndarray:
    """[-1, 1] images [n, C, H, W] -> uint8 [n, H, W, C] (round half to even after mapping to [0, 255])."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 [n, H, W, C] -> one uint8 image [rows (H + pad) + pad, nrow (W + pad) + pad, C] on a white ground."""
    n, h, w, c = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    return grid


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 [H, W, 3] array as a PNG, atomically."""
    from PIL import Image

    def write(f):
        Image.fromarray(image).save(f, format="PNG")

    return atomic_write(path, write)
