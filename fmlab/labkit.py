"""Helpers every lab uses: the fast mode for CI, a result cache in memory and on disk, cached training, device text.

`FMLAB_FAST=1` (environment variable) shrinks training steps and sample counts for CI *without changing the
code path*: a lab asks `steps(full, fast)` / `pick(full, fast)` for its sizes and runs the same cells either way.

Training inside a lab goes through `train_cached(config)`: the first call trains with a progress bar, every later
call with an equal config returns the same trainer at once, so re-running a cell or moving a slider that only
re-draws is instant. Trained results live in memory for the kernel's lifetime and on disk (fmlab.diskcache: keyed by
the config, fmlab's version and the fast mode), so a new kernel, or a lab opened after
`python -m fmlab prewarm`, loads them instead of training. `clear_cache()` forgets the kernel's results,
`clear_cache(disk=True)` the disk's too; FMLAB_CACHE moves the disk cache (FMLAB_CACHE=off turns it off).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import platform
import warnings
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch

from .checks import check_int
from .diskcache import clear_disk, load_entry, save_entry, storable

__all__ = ["FAST_ENV", "fast_mode", "steps", "pick", "cached", "cache_key", "session_cache", "clear_cache",
           "cache_info", "computed_count", "persisted", "weights_fingerprint", "trainer_state", "restore_trainer",
           "train_cached", "device_summary", "seeded"]

FAST_ENV = "FMLAB_FAST"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

T = TypeVar("T")


# --- fast mode -------------------------------------------------------------------------------------------

def fast_mode() -> bool:
    """True when the environment variable FMLAB_FAST is '1' (also 'true', 'yes', 'on'; '0' or unset: False).

    Any other value is a ValueError naming FMLAB_FAST, so a typo in CI does not silently run the full lesson.
    """
    value = os.environ.get(FAST_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{FAST_ENV} must be one of {sorted(_TRUE | _FALSE - {''})} or unset, got {value!r}")


def pick(full: T, fast: T) -> T:
    """`fast` under FMLAB_FAST=1, else `full` (any value: a step count, a sample size, a grid resolution)."""
    return fast if fast_mode() else full


def steps(full: int, fast: int) -> int:
    """A count (training steps, samples) chosen by the fast mode; both must be integers >= 1."""
    for name, value in (("full", full), ("fast", fast)):
        check_int(value, name, 1)
    return pick(full, fast)


# --- in-memory cache ----------------------------------------------------------------------------------------

_CACHE: dict[Hashable, Any] = {}


def cache_key(*parts: Any) -> Hashable:
    """A hashable key from configs: dataclasses become (class name, sorted field items), dicts sorted items,
    lists tuples, recursively. Unhashable leftovers are a ValueError naming their type."""
    key = tuple(_freeze(p) for p in parts)
    try:
        hash(key)
    except TypeError as err:
        raise ValueError(f"cache key parts must be hashable after freezing, got {parts!r}") from err
    return key


def _freeze(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return (type(value).__name__, _freeze(fields))
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, torch.Tensor):
        raise ValueError("tensors cannot be cache keys; pass the config (numbers, strings) that produced them")
    return value


def cached(fn: Callable[..., T]) -> Callable[..., T]:
    """Memoise `fn` in this kernel on its arguments (frozen by `cache_key`, so dataclass configs work).

    The wrapper has `.cache_clear()`; `fmlab.labkit.clear_cache()` clears every cached function at once.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        key = cache_key(fn.__module__, fn.__qualname__, args, kwargs)
        if key not in _CACHE:
            _CACHE[key] = fn(*args, **kwargs)
        return _CACHE[key]

    def cache_clear() -> None:
        prefix = (fn.__module__, fn.__qualname__)
        for key in [k for k in _CACHE if k[:2] == prefix]:
            del _CACHE[key]

    wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
    return wrapper


def session_cache() -> dict[Hashable, Any]:
    """The kernel's one result cache (a dict keyed by `cache_key(...)`, first part naming what is cached): every
    module that keeps results between cells (fmlab.experiments runs, image runs, `cached` functions) keeps them
    here, so `clear_cache()` forgets all of them."""
    return _CACHE


def clear_cache(disk: bool = False) -> None:
    """Forget every cached result (trained models included), whichever module cached it; `disk=True` also deletes
    the trained results stored on disk (fmlab.diskcache; the same as `python -m fmlab cache clear`)."""
    _CACHE.clear()
    if disk:
        clear_disk()


def cache_info() -> int:
    """How many results the cache holds."""
    return len(_CACHE)


_COMPUTED = [0]  # results computed (trained) in this kernel, rather than found in memory or on disk


def computed_count() -> int:
    """How many `persisted` results this kernel computed (trained) instead of finding them in memory or on disk:
    the browser suite reads it before and after moving a control to tell a control that trains from one that
    only redraws."""
    return _COMPUTED[0]


def persisted(key: Hashable, compute: Callable[[], T], to_state: Callable[[T], dict[str, Any]],
              from_state: Callable[[dict[str, Any]], T], refresh: bool = False) -> T:
    """The result of `key`: from this kernel's cache, else rebuilt from its disk entry (`from_state(state)`), else
    `compute()`d and stored in both (`to_state(result)`: tensors and plain values only, see fmlab.diskcache).

    An entry that `from_state` cannot rebuild (a ValueError, KeyError, TypeError or RuntimeError, e.g. a state dict of
    another shape) is ignored with a RuntimeWarning and computed again, never an error. Keys that hold objects
    (not only strings, numbers, booleans, None) stay in memory. `refresh=True` computes again and replaces both."""
    if key in _CACHE and not refresh:
        return _CACHE[key]
    state = None if refresh else load_entry(key)
    if state is not None:
        try:
            _CACHE[key] = from_state(state)
            return _CACHE[key]
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            warnings.warn(f"fmlab cache: the stored entry of {key[0] if isinstance(key, tuple) else key!r} could not "
                          f"be rebuilt ({type(err).__name__}: {err}); computing it again", RuntimeWarning, stacklevel=2)
    _COMPUTED[0] += 1
    result = compute()
    try:
        state = to_state(result)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:  # keep the result, warn, go on
        warnings.warn(f"fmlab cache: not stored on disk ({type(err).__name__}: {err})", RuntimeWarning, stacklevel=2)
    else:
        save_entry(key, state)
    _CACHE[key] = result
    return result


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short SHA-256 of `module`'s state dict (names, shapes, dtypes and values): a key part for results drawn
    from trained weights (samples), so that a stored result is never served for other weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def trainer_state(trainer: Any) -> dict[str, Any]:
    """What a trained fmlab.train.Trainer needs to come back without training: model and EMA weights, the model's
    and the run's configs, the log, the step count, the training time and the sample grids of an image trainer
    (`.grids`, uint8 arrays); no optimizer state: a cached run is not resumed."""
    return {"model": trainer.model.state_dict(), "ema": trainer.ema.state_dict(),
            "model_config": storable(dict(getattr(trainer.model, "config", {}))),
            "config": storable(trainer.config.to_dict()), "log": storable(trainer.log), "step": int(trainer.step),
            "elapsed_s": float(trainer.elapsed),
            "grids": [[int(k), torch.as_tensor(g)] for k, g in getattr(trainer, "grids", {}).items()]}


def restore_trainer(trainer: Any, state: dict[str, Any]) -> Any:
    """Load `trainer_state(...)` into `trainer`, a freshly built (untrained) Trainer of the same config; returns it
    with its EMA in eval mode, as after training. A state of another config or model is a ValueError."""
    for name, ours in (("config", trainer.config.to_dict()), ("model_config", dict(getattr(trainer.model, "config",
                                                                                           {})))):
        if state[name] != storable(ours):
            raise ValueError(f"the stored {name} differs from this run's")
    trainer.model.load_state_dict(state["model"])
    trainer.ema.load_state_dict(state["ema"])
    trainer.log = [dict(record) for record in state["log"]]
    trainer.step, trainer.elapsed = int(state["step"]), float(state["elapsed_s"])
    if hasattr(trainer, "grids"):
        trainer.grids = {int(k): g.numpy() for k, g in state["grids"]}
    trainer.ema.requires_grad_(False).eval()
    return trainer


# --- cached training ------------------------------------------------------------------------------------------

def train_cached(config: Any, progress: bool = True, **trainer_kwargs: Any) -> Any:
    """Train `config` (a fmlab.train.TrainConfig) once (per kernel, and on disk: see `persisted`); return the Trainer.

    The trainer exposes `.ema` (the EMA model to sample from, eval mode), `.model`, `.log` (records with step,
    loss, grad_norm, lr, elapsed_s) and `.config`. `progress` shows a tqdm bar (a widget in Jupyter). Extra
    keyword arguments go to `Trainer(...)` (model=, data_fn=, runtime_settings=); objects among them are keyed
    by identity (and then kept in memory only) unless you give a stable `cache_name=` to key on instead.
    """
    from .train import TrainConfig, Trainer

    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a fmlab.train.TrainConfig, got {type(config).__name__}")
    name = trainer_kwargs.pop("cache_name", None)
    extras = name if name is not None else {k: _freeze_or_id(v) for k, v in trainer_kwargs.items()}
    key = cache_key("train_cached", config, extras)

    def train() -> Any:
        trainer = Trainer(config, **trainer_kwargs)
        trainer.fit(progress=progress)
        trainer.ema.requires_grad_(False).eval()
        return trainer

    return persisted(key, train, trainer_state, lambda state: restore_trainer(Trainer(config, **trainer_kwargs), state))


@dataclasses.dataclass(frozen=True)
class _ObjectId:
    """Stands in a cache key for an object keyed by identity: hashable, and not persistable (fmlab.diskcache)."""

    value: int


def _freeze_or_id(value: Any) -> Any:
    try:
        frozen = _freeze(value)
        hash(frozen)
        return frozen
    except (TypeError, ValueError):
        return _ObjectId(id(value))


# --- seeding and device text ---------------------------------------------------------------------------------

def seeded(seed: int) -> torch.Generator:
    """A fresh CPU generator with `seed` (labs draw every random number from one of these)."""
    check_int(seed, "seed", 0)
    return torch.Generator().manual_seed(seed)


def device_summary() -> str:
    """A few lines for the welcome lab: torch version, the device fmlab will pick, GPUs, CPU threads, fast mode."""
    from .device import available_devices, cpu_count, default_threads, pick_device

    dev = pick_device(None)
    system = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    lines = [f"torch {torch.__version__} on {system}",
             f"fmlab trains on: {dev} (available: {', '.join(available_devices())})"]
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        lines.append(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    elif dev.type == "mps":
        lines.append("GPU: Apple silicon (MPS); closed-form ground truth runs in float64 on the CPU")
    else:
        lines.append("GPU: none found (fine: every 2D lab is sized for a laptop CPU)")
    lines.append(f"CPU: {cpu_count()} cores available, torch uses {torch.get_num_threads()} threads "
                 f"(fmlab's trainer default: {default_threads()})")
    mode = "on: shortened training for CI" if fast_mode() else "off: the full lesson"
    lines.append(f"fast mode (FMLAB_FAST): {mode}")
    return "\n".join(lines)
