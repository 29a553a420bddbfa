"""Every 2D data set by name, as one kind of sampler: `data_sampler(name)(n, generator) -> x1 [n, 2]`.

The names are the toy sets of fmlab.data.toy (moons, checkerboard, ...) and the ready-made mixtures of
fmlab.data.gaussian (`gmm_2d`: two_modes, 8modes, asymmetric, whose ground truth is exact). With n_classes > 0 the
sampler returns (x1, labels) from the labelled set `name` (fmlab.data.labelled.labelled_data), which must have that
many classes. The trainer, the labs' experiments, the CLI and the benchmarks all draw 2D data through it; the same
generator seed gives the same points.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from ..checks import check_choice
from .gaussian import GMM_2D, gmm_2d
from .labelled import labelled_data
from .toy import TOY_DATASETS, sample_toy

__all__ = ["DATA_NAMES", "data_sampler"]

DATA_NAMES = tuple(sorted([*TOY_DATASETS, *GMM_2D]))  # the unlabelled 2D sets by name

DataSampler = Callable[[int, "torch.Generator | None"], Any]  # (n, generator) -> x1 [n, 2] or (x1, labels)


def data_sampler(name: str, n_classes: int = 0) -> DataSampler:
    """(n, generator) -> x1 [n, 2] from the 2D set `name` (a ValueError listing DATA_NAMES if unknown); with
    n_classes > 0, (x1, labels) from the labelled set `name`, which must have n_classes classes."""
    if n_classes:
        fn, classes = labelled_data(name)
        if classes != n_classes:
            raise ValueError(f"data {name!r} has {classes} classes, but n_classes={n_classes}")
        return fn
    check_choice(name, "data", DATA_NAMES)
    if name in GMM_2D:
        gmm = gmm_2d(name)
        return lambda n, generator=None: gmm.sample(n, generator=generator)
    return partial(sample_toy, name)
