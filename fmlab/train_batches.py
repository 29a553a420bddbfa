"""The 2D trainer's batches: data and noise, their coupling (solved ahead on worker threads), label dropout and the
loss's times, built on the CPU from the trainer's one generator and then moved to the device.

One batch draws, from the generator g and in this order (fmlab.train's module docstring gives the whole step):

    x1 ~ data_fn(batch_size, g),  x0 ~ N(0, I)     the data (and labels) and the noise, at t = 1 and t = 0
    index <- partners(solve_coupling(x0, x1), g)   the pairing; only Sinkhorn's partner draws use g
    y     <- y[index], or C w.p. p_uncond          label dropout, class-conditional runs only (n_classes = C > 0)
    batch <- spec.make_batch(x0, x1[index], g)     the loss draws its times

`solve_coupling` draws no random numbers and does not depend on the model, so `fmlab.prefetch.PairedBatches` solves
it for the next batches on worker threads while the model trains, and hands out bitwise the batches (and generator
states) of the sequential path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from .couplings import partners, solve_coupling, stand_in_solution
from .prefetch import PairedBatches

__all__ = ["DataFn", "draw_data", "condition_labels", "TrainBatches"]

DataFn = Callable[[int, torch.Generator], Any]  # (n, generator) -> x1 [n, ...] or (x1, labels)


def draw_data(data_fn: DataFn, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """(x1 [n, ...], labels or None) from data_fn(n, generator), checked."""
    drawn = data_fn(n, generator)
    x1, labels = drawn if isinstance(drawn, tuple) else (drawn, None)
    if not isinstance(x1, Tensor) or x1.shape[0] != n:
        raise ValueError(f"data_fn(n, generator) must return a tensor [n, ...] with n={n}, got "
                         f"{type(x1).__name__} {tuple(getattr(x1, 'shape', ()))}")
    return x1, labels


def condition_labels(labels: Tensor | None, n_classes: int, p_uncond: float, g: torch.Generator) -> Tensor | None:
    """None for an unconditional run (the loss sees no labels); for n_classes = C > 0 the labels with label
    dropout: y -> C (the null label) with probability p_uncond, drawn from g."""
    c = n_classes
    if not c:
        return None
    if labels is None:
        raise ValueError(f"n_classes={c} needs labelled data: data_fn(n, generator) must return (x1, labels)")
    labels = labels.long()
    if bool(((labels < 0) | (labels >= c)).any()):
        raise ValueError(f"data labels must lie in [0, {c - 1}] for n_classes={c}, got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    drop = torch.rand(len(labels), generator=g) < p_uncond  # label dropout
    return torch.where(drop, torch.full_like(labels, c), labels)


class TrainBatches:
    """The batches of a run with `config` (a fmlab.train.TrainConfig): `next(limit)` returns the next one on `device`.

    prefetch: how many batches ahead the coupling is solved, on `workers` threads (0: in sequence); `settings`: the
    loss's settings, read at each batch (the trainer may add to them after construction).
    """

    def __init__(self, config: Any, spec: Any, settings: dict[str, Any], data_fn: DataFn, generator: torch.Generator,
                 device: torch.device, prefetch: int, workers: int):
        self.config, self.spec, self.settings, self.data_fn = config, spec, settings, data_fn
        self.device = device
        self.source = PairedBatches(self._draw, self._solve, self._finish, self._stand_in, generator,
                                    ahead=prefetch, workers=workers)
        self._side_stream: Any = None  # a CUDA stream for Sinkhorn on the device

    def next(self, limit: int | None = None):
        """The next batch, moved to the device; at most `limit` batches beyond it are prepared."""
        batch = self.source.next(limit=limit)
        moved = {f.name: getattr(batch, f.name).to(self.device) for f in dataclasses.fields(batch)
                 if isinstance(getattr(batch, f.name), Tensor)}
        return dataclasses.replace(batch, **moved)

    def close(self) -> None:
        """End the pairing threads and drop the prepared batches (a later `next` starts again)."""
        self.source.close()

    def _draw(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None]:
        x1, labels = draw_data(self.data_fn, self.config.batch_size, g)
        x0 = torch.randn(x1.shape, generator=g, dtype=x1.dtype)  # x0 ~ N(0, I) at t = 0
        return x0, x1, labels

    def _solve(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The coupling's deterministic part (fmlab.couplings.solve_coupling); Sinkhorn on the device runs there."""
        cfg = self.config
        if cfg.coupling != "sinkhorn_device" or self.device.type == "cpu":
            return solve_coupling(x0, x1, cfg.coupling, cfg.coupling_reg)
        if self.device.type == "cuda" and self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        side = torch.cuda.stream(self._side_stream) if self.device.type == "cuda" else nullcontext()
        with side:  # on a GPU: a stream of its own, so the solve overlaps the training step's kernels
            return solve_coupling(x0.to(self.device), x1.to(self.device), cfg.coupling, cfg.coupling_reg)

    def _finish(self, x0: Tensor, x1: Tensor, labels: Tensor | None, solution: Tensor, g: torch.Generator):
        index = partners(solution, g)  # Sinkhorn draws each x0's partner; a permutation is used as it is
        labels = condition_labels(None if labels is None else labels[index], self.config.n_classes,
                                  self.config.p_uncond, g)
        extra = {} if labels is None else {"labels": labels}
        return self.spec.make_batch(x0, x1[index], g, **extra, **self.settings)

    def _stand_in(self, x0: Tensor, x1: Tensor) -> Tensor:
        return stand_in_solution(self.config.coupling, len(x1))
