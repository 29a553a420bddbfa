"""Class conditioning for the backbones: a label embedding with a null label, added to the time embedding.

A conditional network takes a class label y in {0, ..., C - 1} besides x and t: v_theta(x, t, y). One more label, the
null label C ("no label"), stands for the unconditional model. Trained with label dropout (each training label
replaced by C with probability p_uncond; fmlab.train), one network gives both the class-conditional field
v(x, t | y) = v_theta(x, t, y) and the unconditional one v(x, t) = v_theta(x, t, C): the two fields that
classifier-free guidance combines (fmlab.guidance). An attribute (smiling or not, glasses or not) is a 2-class label;
A binary attributes together are one label sum_i 2^i a_i of C = 2^A classes.

Contract: `model(x, t)` keeps working and means y = C (unconditional); `model(x, t, y)` takes y an int or a long
tensor [B] with values in [0, C] (C: the null label). An unconditional model (n_classes = 0) refuses labels.

The embedding e(y) is a learned table of C + 1 vectors, zero at initialisation (so a conditional network starts as
its unconditional twin, and building it draws no random numbers: the rest of the network initialises exactly as the
unconditional one with the same seed). It is added to the time embedding: in fmlab.models.MLP to the Fourier
features of each time before the first layer, in fmlab.models.UNet to the summed time projections before the time
MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_int

__all__ = ["LabelEmbedding", "check_n_classes", "split_label", "label_args", "n_classes_of", "null_label"]


def check_n_classes(n_classes: Any) -> int:
    """n_classes as an int >= 0 (0: unconditional), else a ValueError naming the parameter."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 0:
        raise ValueError(f"n_classes must be an integer >= 0 (0: unconditional), got {n_classes!r}")
    return n_classes


class LabelEmbedding(nn.Module):
    """e(y) = table[y] [B, dim]: a learned table of n_classes + 1 rows (the last: the null label), zero at start."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        if check_n_classes(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1 for a label embedding, got {n_classes}")
        check_int(dim, "dim", 1)
        self.n_classes, self.dim = n_classes, dim
        self.table = nn.Parameter(torch.zeros(n_classes + 1, dim))  # no random draw: see the module docstring

    @property
    def null_label(self) -> int:
        return self.n_classes

    def labels(self, y: Tensor | int | None, n: int, device: torch.device) -> Tensor:
        """y as a long tensor [n] on `device` (None: the null label for every row); ValueError if out of range."""
        if y is None:
            return torch.full((n,), self.n_classes, dtype=torch.long, device=device)
        y = torch.as_tensor(y, device=device)
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise ValueError(f"labels y must be integers, got dtype {y.dtype}")
        y = y.long().expand(n) if y.ndim == 0 else y.long()
        if y.shape != (n,):
            raise ValueError(f"labels y must be an int or have shape [B] = [{n}], got {tuple(y.shape)}")
        if n and bool(((y < 0) | (y > self.n_classes)).any()):
            raise ValueError(f"labels y must lie in [0, {self.n_classes}] ({self.n_classes} = the null label), got "
                             f"values in [{int(y.min())}, {int(y.max())}]")
        return y

    def forward(self, y: Tensor | int | None, n: int, device: torch.device) -> Tensor:
        return self.table[self.labels(y, n, device)]  # e(y), [n, dim]

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes} (+1 null), dim={self.dim}"


def split_label(args: tuple[Any, ...], time_inputs: int, y: Any, n_classes: int) -> tuple[tuple[Any, ...], Any]:
    """A backbone's positional inputs after x, as (times, y): `net(x, t, y)` (one time input more than the backbone
    takes: the last is y) or `net(x, t, y=y)`. ValueError for a wrong count, a label given twice, or a label given to
    an unconditional backbone."""
    if n_classes > 0 and len(args) == time_inputs + 1:
        if y is not None:
            raise ValueError("the label y was given twice (positionally and as y=)")
        args, y = args[:-1], args[-1]
    if len(args) != time_inputs:
        raise ValueError(f"this network takes {time_inputs} time input(s)"
                         f"{' and an optional label y' if n_classes else ''}, got {len(args)} input(s) after x")
    if y is not None and n_classes == 0:
        raise ValueError("this network is unconditional (n_classes = 0) and takes no label y; build it with "
                         "n_classes > 0 to condition it")
    return args, y


def label_args(labels: Tensor | None) -> tuple[Tensor, ...]:
    """() without labels, (labels,) with: `model(x, t, *label_args(batch.labels))` calls an unconditional model as
    model(x, t) and a conditional one as model(x, t, y)."""
    return () if labels is None else (labels,)


def n_classes_of(model: nn.Module) -> int:
    """The number of classes a model (or its backbone) is conditioned on; 0 for an unconditional model."""
    backbone = getattr(model, "backbone", model)
    return int(getattr(backbone, "n_classes", 0) or 0)


def null_label(model: nn.Module) -> int:
    """The null label C of a conditional model (what model(x, t) uses); ValueError for an unconditional model."""
    c = n_classes_of(model)
    if c == 0:
        raise ValueError("this model is unconditional (n_classes = 0): it has no labels and no null label")
    return c
