"""Data-parallel training helpers for `torchrun` (NCCL on GPUs, gloo on CPU).

    torchrun --nproc_per_node 4 -m fmlab train --config celeba64 --data-root /data/celeba --out runs/c64

Each process (rank) holds a full copy of the model, draws its own share of the data (a DistributedSampler order,
fmlab.train_images.ImageStream), its own noise and times (one seed per rank, `rank_seed`), computes the loss on its
local batch of B images and backpropagates; then the gradients are averaged across the R ranks,

    g = (1 / R) sum_r g_r ,

which is the gradient of the loss averaged over the global batch of R B images (every loss in fmlab is a mean over
its batch). Every rank then takes the same optimizer step, so the replicas stay identical. Rank 0 alone writes logs,
sample grids and checkpoints; a barrier precedes teardown.

Why not torch.nn.parallel.DistributedDataParallel? DDP all-reduces a gradient only when the autograd graph that
produced it went through the DDP wrapper's forward in this iteration. fmlab's losses reach the network in ways
that bypass that forward: `model.predict(...)` (x1 prediction), `torch.func.functional_call` (stop-gradient
teachers), and `torch.func.jvp` on the module (MeanFlow, Lagrangian / Eulerian flow maps, sCM-style losses).
Gradients from those paths stay local to each rank, with no error: the replicas drift apart silently. (Several
forward passes per backward, which flow-map losses need, also trip DDP's reducer.) So fmlab averages the gradients
itself after backward, `sync_gradients`: one all-reduce per ~25 MB bucket of flattened gradients. The result is
the same as DDP's; what is lost is DDP's overlap of communication with the backward pass, a few percent of step
time for the UNet presets on NVLink.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "cleanup", "barrier", "is_main", "rank_seed", "sync_gradients",
           "broadcast_parameters", "all_gather_objects", "env_world_size", "BUCKET_BYTES"]

BUCKET_BYTES = 25 * 2**20  # the size of DDP's default gradient buckets


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank in [0, world_size), local_rank on its node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when there is more than one process and a process group to talk through."""
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1").strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"the environment variable WORLD_SIZE must be an integer >= 1, got {value!r}")
    return int(value)


def init_distributed(backend: str | None = None, device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

    backend: 'nccl' when CUDA is available (each rank on cuda:LOCAL_RANK), else 'gloo' (CPU). With WORLD_SIZE = 1
    (a plain `python -m fmlab ...`) nothing is initialised and a single-process DistInfo is returned.
    """
    world = env_world_size()
    if world == 1:
        return DistInfo(device=device)
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    backend = backend or ("nccl" if use_cuda else "gloo")
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def barrier(info: DistInfo | None = None) -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and (info is None or info.world_size > 1):
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup(info: DistInfo | None = None) -> None:
    """Barrier, then tear the process group down (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        barrier(info)
        dist.destroy_process_group()


def is_main(info: DistInfo | None = None) -> bool:
    """True on rank 0 (and in a single process)."""
    if info is not None:
        return info.is_main
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank r: seed for rank 0 (a one-process run is rank 0), seed + 1_000_003 r otherwise."""
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    return seed + 1_000_003 * rank


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank src's parameters and buffers to every rank (replicas start identical)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src)


@torch.no_grad()
def sync_gradients(model: nn.Module, world_size: int | None = None, bucket_bytes: int = BUCKET_BYTES) -> int:
    """Average every parameter's .grad across ranks in place: g <- (1/R) sum_r g_r. Returns the number of
    all-reduce calls. Parameters without a gradient on this rank contribute zeros (so every rank sends the same
    buckets in the same order, and a parameter unused on one rank still gets the others' gradient)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    world = world_size or dist.get_world_size()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    calls, bucket, size = 0, [], 0
    for p in params:
        bucket.append(p)
        size += p.grad.numel() * p.grad.element_size()
        if size >= bucket_bytes:
            _reduce_bucket(bucket, world)
            calls, bucket, size = calls + 1, [], 0
    if bucket:
        _reduce_bucket(bucket, world)
        calls += 1
    return calls


def _reduce_bucket(params: list[nn.Parameter], world: int) -> None:
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # one message per bucket
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world  # g = (1/R) sum_r g_r
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (a one-element list in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
