"""The on-disk store behind the labs' result cache: trained models survive a kernel restart.

An entry is one file, `<cache dir>/trained/<name>.pt`, holding tensors and plain values only (state dicts, lists of
numbers, the config), written atomically (fmlab.checkpoint.atomic_write: temp file + os.replace) and read with
`torch.load(weights_only=True)`, which runs no pickled code. Its name is the SHA-256 of the entry's full key:

    (ENTRY_FORMAT, fmlab.__version__, fast mode on/off, build_model's defaults, the run's key: labkit.cache_key(...))

so a new fmlab version, fast mode against full mode, or another default architecture (e.g. the time embedding's
highest frequency, which run configs do not hold) never reads another's entry. The key is also stored in the
file and compared on load; a corrupt, truncated or mismatching file is ignored with a warning (the caller trains
again and overwrites it), never an error.

Where: the directory named by the environment variable FMLAB_CACHE; otherwise the user cache directory
(platformdirs.user_cache_dir('fmlab') if platformdirs is installed, else $XDG_CACHE_HOME/fmlab or ~/.cache/fmlab).
FMLAB_CACHE=off (also 0, no, false, none, disabled) turns the disk cache off: results then live in memory only.
Clear it with `python -m fmlab cache clear` or `fmlab.labkit.clear_cache(disk=True)`; `python -m fmlab cache info`
says where it is and how much it holds.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["CACHE_ENV", "OFF_VALUES", "ENTRY_FORMAT", "cache_root", "entries_dir", "persistable", "entry_key",
           "model_defaults", "entry_path", "load_entry", "save_entry", "storable", "clear_disk", "disk_info"]

CACHE_ENV = "FMLAB_CACHE"
OFF_VALUES = {"off", "0", "no", "false", "none", "disabled"}
ENTRY_FORMAT = 1  # bump when the layout of what callers store changes: older entries then miss
_SUBDIR = "trained"  # the cache root also holds other files (fmlab.fid's reference statistics): keep ours apart
_PLAIN = (str, int, float, bool, type(None))


def cache_root() -> Path | None:
    """The fmlab cache directory (see the module docstring), or None when FMLAB_CACHE turns it off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in OFF_VALUES:
        return None
    if value:
        return Path(value).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME", "").strip()
        return (Path(base).expanduser() if base else Path.home() / ".cache") / "fmlab"
    return Path(user_cache_dir("fmlab", appauthor=False))


def entries_dir() -> Path | None:
    """Where the entries live (`cache_root() / 'trained'`), or None when the disk cache is off."""
    root = cache_root()
    return None if root is None else root / _SUBDIR


def persistable(key: Any) -> bool:
    """True when `key` is built from tuples of str, int, float, bool and None only: its repr is then the same in
    every process, so it can name a file. Keys holding objects (e.g. an identity stand-in) stay in memory."""
    if isinstance(key, tuple):
        return all(persistable(k) for k in key)
    return isinstance(key, _PLAIN)


def entry_key(key: Any) -> str:
    """The text that identifies an entry: the format, fmlab's version, the mode and the cache key."""
    import fmlab

    from .labkit import fast_mode

    if not persistable(key):
        raise ValueError(f"key must hold only tuples, strings, numbers, booleans and None, got {key!r}")
    return repr((ENTRY_FORMAT, fmlab.__version__, "fast" if fast_mode() else "full", model_defaults(), key))


def model_defaults() -> tuple:
    """The keyword defaults of `fmlab.models.build_model` (e.g. the time embedding's highest frequency): they shape
    every 2D model without appearing in its run config, so an entry trained under other defaults must miss."""
    import inspect

    from .models.parametrisation import build_model

    return tuple((name, p.default) for name, p in inspect.signature(build_model).parameters.items())


def entry_path(key: Any) -> Path | None:
    """The file of `key`'s entry (a stable SHA-256 of `entry_key`, not Python's per-process hash()), or None when
    the disk cache is off."""
    directory = entries_dir()
    if directory is None:
        return None
    return directory / f"{hashlib.sha256(entry_key(key).encode()).hexdigest()[:32]}.pt"


def load_entry(key: Any) -> dict[str, Any] | None:
    """The stored state of `key`, or None when there is none, the cache is off, or the file is unusable (then a
    RuntimeWarning says why; the caller computes the result again and overwrites the file)."""
    path = entry_path(key) if persistable(key) else None
    if path is None or not path.is_file():
        return None
    try:
        payload = load_checkpoint(path)
        if payload.get("key") != entry_key(key):
            raise ValueError("it holds another key (a different fmlab version, mode or config)")
        state = payload["state"]
        if not isinstance(state, dict):
            raise ValueError("its state is not a dict")
    except (ValueError, KeyError, OSError) as err:
        warnings.warn(f"fmlab cache: ignoring {str(path)!r} and training again: {err}", RuntimeWarning,
                      stacklevel=2)
        return None
    return state


def save_entry(key: Any, state: dict[str, Any]) -> Path | None:
    """Store `state` (tensors and plain values) under `key` atomically; returns the file, or None when the cache is
    off or the key is not persistable. A failed write (disk full, read-only directory) warns and returns None."""
    path = entry_path(key) if persistable(key) else None
    if path is None:
        return None
    try:
        return save_checkpoint(path, {"key": entry_key(key), "state": storable(state)})
    except (OSError, RuntimeError) as err:
        warnings.warn(f"fmlab cache: could not write {str(path)!r}: {err}", RuntimeWarning, stacklevel=2)
        return None


def storable(value: Any) -> Any:
    """`value` as the weights-only loader reads it back: tensors on the CPU (an entry written on a GPU loads
    anywhere), numpy scalars as Python numbers, numpy arrays as tensors, tuples as lists, mappings as dicts;
    recursively."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, Mapping):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    return value


def clear_disk() -> int:
    """Delete every entry (and leftover temporary file) of the disk cache; returns how many files went."""
    directory = entries_dir()
    if directory is None or not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        if path.is_file() and (path.suffix == ".pt" or path.name.endswith(".tmp")):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def disk_info() -> dict[str, Any]:
    """{'enabled', 'path', 'entries', 'bytes'} of the disk cache (path None and zeros when it is off)."""
    directory = entries_dir()
    files = sorted(directory.glob("*.pt")) if directory is not None and directory.is_dir() else []
    return {"enabled": directory is not None, "path": None if directory is None else str(directory),
            "entries": len(files), "bytes": sum(f.stat().st_size for f in files)}
