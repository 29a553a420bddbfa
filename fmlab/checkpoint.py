"""Checkpoints: atomic writes and safe, checked reads.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists, dicts, None),
saved with `torch.save` and read back with `torch.load(weights_only=True)`, which refuses to run
arbitrary pickled code. Random-number-generator states are stored as the uint8 tensors that
`torch.Generator.get_state()` returns, so they pass the weights-only loader.

Writes are atomic: the bytes go to a temporary file in the target's directory, are fsync'ed, and
`os.replace` swaps it in. A failure at any point leaves the previous file untouched and no temporary
file behind. Every checkpoint carries a format tag and version, so a foreign file is recognised.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint", "atomic_write"]

FORMAT = "fmlab-checkpoint"
VERSION = 1
_TAG_KEYS = ("fmlab_format", "fmlab_version")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary file next to `path`, fsync it, then rename it onto `path`.

    On any exception the temporary file is removed and `path` keeps its old content (or stays absent).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path must be a file, got the directory {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically save `state` (tensors and plain values only) with the fmlab format tag and version."""
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict, got {type(state).__name__}")
    clash = [k for k in _TAG_KEYS if k in state]
    if clash:
        raise ValueError(f"state must not use the reserved key(s) {clash}")
    payload = {"fmlab_format": FORMAT, "fmlab_version": VERSION, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights-only unpickling), without its format tag.

    Raises FileNotFoundError if `path` does not exist, and ValueError naming `path` if the file is
    corrupt or truncated, is not an fmlab checkpoint, or comes from a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip/pickle errors differ across torch versions: report them all the same way
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{str(path)!r} is not a readable checkpoint (corrupt, truncated, or holds objects "
                         f"other than tensors and plain values): {first}") from err
    if not isinstance(payload, dict) or payload.get("fmlab_format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an fmlab checkpoint (no {FORMAT!r} format tag)")
    version = payload.get("fmlab_version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ValueError(f"{str(path)!r} has checkpoint format version {version!r}; this fmlab reads 1..{VERSION}")
    return {k: v for k, v in payload.items() if k not in _TAG_KEYS}
