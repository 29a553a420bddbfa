"""Device selection, seeding and CPU thread count.

`pick_device()` prefers CUDA, then Apple MPS, then the CPU; a requested device that this machine
lacks is a ValueError that says what is available. `seed_everything(seed)` seeds Python, NumPy and
torch and returns a CPU `torch.Generator`: the trainer draws every random number (data, noise,
coupling, times) from it on the CPU, so a seed gives the same batches on every device.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["pick_device", "available_devices", "seed_everything", "default_threads", "cpu_count", "physical_cores",
           "MAX_THREADS"]

DEVICE_TYPES = ("cpu", "cuda", "mps")

# Measured on a 2-core x86 VM (torch 2.13 CPU wheel), 256-wide 4-deep MLP, batch 256, one Adam step:
#   cores otherwise idle:          1 thread ~136 steps/s, 2 threads ~190 steps/s (1.4x);
#   cores shared with busy jobs:   1 thread ~17 steps/s,  2 threads ~1 step/s (the trainer's full CFM step;
#                                  OpenMP threads spin-wait for a core that another process holds).
# A [256, 256] matmul on 256 rows is too small to split across many threads (gains flatten by ~4), and
# oversubscription costs far more than threads gain, so the default leaves half the cores to Jupyter, the
# browser and other jobs: max(1, min(4, cores // 2)).
MAX_THREADS = 4


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device strings usable here, best first: 'cuda:0', ..., 'mps', 'cpu'."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        found.append("mps")
    return found + ["cpu"]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, or the best available one (CUDA, then MPS, then CPU) when `device` is None.

    Raises ValueError naming `device` when the string is not a device, the type is not one of
    'cpu', 'cuda', 'mps', or this machine does not have it.
    """
    if device is None or device == "auto":
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be one of {DEVICE_TYPES} (optionally 'cuda:N') or None/'auto', "
                         f"got {device!r}") from err
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device type must be one of {DEVICE_TYPES}, got {device!r}")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={device!r} requested but CUDA is not available here; "
                             f"available: {available_devices()}")
        if dev.index is not None and not 0 <= dev.index < count:
            raise ValueError(f"device={device!r}: CUDA index must be in [0, {count - 1}] on this machine")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device={device!r} requested but MPS is not available here; available: {available_devices()}")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise ValueError(f"device={device!r}: the CPU has no index other than 0")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's `random`, NumPy and torch (all devices) and return a fresh CPU generator seeded with `seed`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seed accepts [0, 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def physical_cores() -> int:
    """Physical cores among those this process may run on (Linux: distinct (package, core) pairs in sysfs, so
    hyper-threads count once); elsewhere `cpu_count()`."""
    try:
        cpus = os.sched_getaffinity(0)
        cores = set()
        for cpu in cpus:
            topology = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            with open(f"{topology}/physical_package_id") as f, open(f"{topology}/core_id") as g:
                cores.add((f.read().strip(), g.read().strip()))
        return max(1, len(cores))
    except (AttributeError, OSError):
        return cpu_count()


def default_threads(all_cores: bool = False) -> int:
    """Intra-op CPU threads: $OMP_NUM_THREADS if set; else, for the small 2D models, max(1, min(4, cores // 2)),
    and with `all_cores` (image models, whose steps are large enough to use them) every physical core."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) >= 1:
        return int(env)
    return physical_cores() if all_cores else max(1, min(MAX_THREADS, cpu_count() // 2))
