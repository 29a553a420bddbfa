"""Coupled batches prepared ahead: the pairing of the next batches is solved on worker threads while the model trains.

An OT or Sinkhorn pairing (fmlab.couplings) depends on the data and the noise, never on the model, so the solve for
batch k + 1 can run while the model trains on batch k: on a second CPU core, or on the CPU while a GPU computes.
POT's network simplex, SciPy's assignment solver and torch's kernels release Python's GIL, so threads run them in
parallel with the training step (measured in benchmarks/cfm.py; processes are not needed).

**Determinism.** A training step draws every random number from one generator g, in this order:

    x1 ~ data, x0 ~ N(0, I)  ->  the coupling's draws (Sinkhorn: one partner per x0)  ->  the loss's times (make_batch)

`PairedBatches` keeps a copy of g that runs ahead. For each batch k it

1. draws x1, x0 from the copy and notes its state s_k; then moves the copy past the coupling's and the loss's draws
   by running them once on a stand-in pairing of the same shape (their number of draws depends on shapes only),
   and notes the state e_k;
2. hands (x0, x1) to a worker thread, which solves the pairing (no random numbers);
3. when the trainer asks for batch k: waits for the pairing, replays the coupling's and the loss's draws from s_k on
   the paired batch, and sets g to the state they end in, which is e_k.

So the trainer gets exactly the batches of the sequential path and g passes through exactly the same states:
checkpoints and exact (bitwise) resume are unchanged. Safeguards, each falling back to the sequential path rather
than changing a result: if g is not in the state the source left it in (a resume, a lab drawing from the trainer's
generator), the prepared batches are dropped and preparation restarts from g; if a replay does not end in e_k (a
loss whose number of draws depends on the values), or a draw in step 1 touched torch's global generator (a data
source using it), the source stops preparing ahead and warns.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["PairedBatches", "DrawFn", "SolveFn", "FinishFn", "StandInFn"]

DrawFn = Callable[[torch.Generator], tuple[Tensor, Tensor, Any]]  # g -> (x0, x1, labels): data and noise
SolveFn = Callable[[Tensor, Tensor], Tensor]  # (x0, x1) -> solution (permutation or plan rows), no random numbers
FinishFn = Callable[[Tensor, Tensor, Any, Tensor, torch.Generator], Any]  # (x0, x1, labels, solution, g) -> batch
StandInFn = Callable[[Tensor, Tensor], Tensor]  # (x0, x1) -> a solution whose draws consume as many numbers


@dataclass
class _Prepared:
    x0: Tensor
    x1: Tensor
    labels: Any
    start: Tensor  # generator state after the data and noise draws (s_k)
    end: Tensor  # generator state after the coupling's and the loss's draws (e_k)
    solution: Future


class PairedBatches:
    """A source of training batches whose pairings are solved `ahead` batches in advance by `workers` threads.

    draw(g) -> (x0, x1, labels): the data and noise of one batch, drawn from g (on the CPU);
    solve(x0, x1) -> solution: the model-independent pairing (runs on a worker thread; must not draw random numbers);
    finish(x0, x1, labels, solution, g) -> batch: the pairing's draws and the loss's draws from g;
    stand_in(x0, x1) -> a solution of the same shape as solve's, used to count finish's draws ahead of the solve.

    ahead = 0 runs the three in sequence on the calling thread (the reference path). `next(limit)` returns the next
    batch and never prepares more than `limit` batches beyond it (a trainer passes the steps it has left).
    """

    def __init__(self, draw: DrawFn, solve: SolveFn, finish: FinishFn, stand_in: StandInFn,
                 generator: torch.Generator, ahead: int = 2, workers: int = 1):
        for name, value, low in (("ahead", ahead, 0), ("workers", workers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator, got one on {generator.device}")
        self.draw, self.solve, self.finish, self.stand_in = draw, solve, finish, stand_in
        self.generator, self.ahead, self.workers = generator, ahead, workers
        self.prefetching = ahead > 0
        self._queue: deque[_Prepared] = deque()
        self._runner: torch.Generator | None = None  # the copy of g that runs ahead
        self._expected: Tensor | None = None  # g's state after the last batch handed out
        self._pool: ThreadPoolExecutor | None = None

    # the reference path
    def _sequential(self) -> Any:
        g = self.generator
        x0, x1, labels = self.draw(g)
        return self.finish(x0, x1, labels, self.solve(x0, x1), g)

    def next(self, limit: int | None = None) -> Any:
        """The next batch; g (the generator given at construction) ends in the state the sequential path leaves."""
        if not self.prefetching:
            return self._sequential()
        g = self.generator
        if self._expected is None or not torch.equal(g.get_state(), self._expected):
            self._restart()  # g moved under us (first call, resume, someone drew from it): start from g
        want = self.ahead if limit is None else max(0, min(self.ahead, limit))
        while self.prefetching and len(self._queue) < 1 + want:  # this batch and `want` more
            self._prepare()
        if not self.prefetching:  # preparing stopped: a draw touched the global generator
            return self._sequential()
        item = self._queue.popleft()
        replay = torch.Generator()
        replay.set_state(item.start)
        batch = self.finish(item.x0, item.x1, item.labels, item.solution.result(), replay)
        end = replay.get_state()
        g.set_state(end)
        self._expected = end
        if not torch.equal(end, item.end):  # the loss's draws depend on the values: the prepared data are invalid
            self._stop("the loss draws a number of random numbers that depends on the batch's values")
        return batch

    def _prepare(self) -> None:
        """Step 1 of the module docstring for one batch, then hand its pairing to a worker."""
        runner = self._runner
        global_state = torch.get_rng_state()
        x0, x1, labels = self.draw(runner)
        start = runner.get_state()
        self.finish(x0, x1, labels, self.stand_in(x0, x1), runner)  # move past the coupling's and loss's draws
        end = runner.get_state()
        if not torch.equal(torch.get_rng_state(), global_state):  # drawing ahead would reorder global draws
            torch.set_rng_state(global_state)
            self._stop("the data or the loss's batch draws from torch's global generator")
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fmlab-pairing")
        self._queue.append(_Prepared(x0, x1, labels, start, end, self._pool.submit(self.solve, x0, x1)))

    def _restart(self) -> None:
        self._drop()
        self._runner = torch.Generator()
        self._runner.set_state(self.generator.get_state())

    def _drop(self) -> None:
        for item in self._queue:
            item.solution.cancel()
        self._queue.clear()

    def _stop(self, reason: str) -> None:
        """Drop what was prepared and prepare nothing more ahead: from here on, the sequential path from g."""
        warnings.warn(f"fmlab.prefetch: {reason}; the pairings are solved in sequence from now on (results are "
                      "unchanged)", RuntimeWarning, stacklevel=3)
        self._drop()
        self.prefetching = False

    def wait(self) -> None:
        """Block until every prepared pairing is solved (a benchmark then counts the solves' CPU time as its own)."""
        for item in list(self._queue):
            item.solution.result()

    def close(self) -> None:
        """Drop the prepared batches and end the worker threads (a later `next` starts again)."""
        self._drop()
        self._expected = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
