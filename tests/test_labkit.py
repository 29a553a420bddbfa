"""fmlab.labkit: fast mode, counts, the in-memory cache, cached training, device text."""

from dataclasses import dataclass

import pytest
import torch

from fmlab import labkit
from fmlab.train import TrainConfig


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_fast_mode_reads_env(monkeypatch, value, expected):
    monkeypatch.setenv("FMLAB_FAST", value)
    assert labkit.fast_mode() is expected
    assert labkit.steps(1000, 10) == (10 if expected else 1000)
    assert labkit.pick("full", "fast") == ("fast" if expected else "full")


def test_fast_mode_unset_and_typo(monkeypatch):
    monkeypatch.delenv("FMLAB_FAST", raising=False)
    assert labkit.fast_mode() is False
    monkeypatch.setenv("FMLAB_FAST", "yess")
    with pytest.raises(ValueError, match="FMLAB_FAST"):
        labkit.fast_mode()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_steps_rejects_non_positive_int(bad):
    with pytest.raises(ValueError, match="full"):
        labkit.steps(bad, 1)


@dataclass(frozen=True)
class _Cfg:
    n: int
    opts: dict


def test_cache_key_freezes_dataclasses_and_dicts():
    a = labkit.cache_key(_Cfg(1, {"b": [1, 2], "a": 0}))
    b = labkit.cache_key(_Cfg(1, {"a": 0, "b": [1, 2]}))
    c = labkit.cache_key(_Cfg(2, {"a": 0, "b": [1, 2]}))
    assert a == b and hash(a) == hash(b) and a != c
    with pytest.raises(ValueError, match="tensor"):
        labkit.cache_key(torch.zeros(2))


def test_cached_calls_once_per_config():
    calls = []

    @labkit.cached
    def square(cfg: _Cfg) -> int:
        calls.append(cfg.n)
        return cfg.n ** 2

    assert square(_Cfg(3, {})) == 9 and square(_Cfg(3, {})) == 9
    assert square(_Cfg(4, {})) == 16
    assert calls == [3, 4]
    square.cache_clear()
    square(_Cfg(3, {}))
    assert calls == [3, 4, 3]


def test_train_cached_returns_same_trainer_for_equal_configs():
    cfg = dict(data="moons", steps=3, batch_size=16, hidden=8, depth=1, log_every=1, ckpt_every=0, threads=1, warmup=0)
    first = labkit.train_cached(TrainConfig(**cfg), progress=False)
    again = labkit.train_cached(TrainConfig(**cfg), progress=False)
    other = labkit.train_cached(TrainConfig(**{**cfg, "seed": 1}), progress=False)
    assert first is again and first is not other
    assert first.step == 3 and len(first.log) == 3
    assert not any(p.requires_grad for p in first.ema.parameters())
    x = torch.zeros(4, 2)
    assert first.ema(x, torch.full((4,), 0.5)).shape == (4, 2)
    with pytest.raises(ValueError, match="TrainConfig"):
        labkit.train_cached({"steps": 3})


def test_clear_cache():
    labkit.cached(lambda k: k)(1)
    assert labkit.cache_info() >= 1
    labkit.clear_cache()
    assert labkit.cache_info() == 0


def test_device_summary_and_seeded(monkeypatch):
    monkeypatch.setenv("FMLAB_FAST", "1")
    text = labkit.device_summary()
    assert "torch" in text and "threads" in text and "fast mode (FMLAB_FAST): on" in text
    assert torch.equal(torch.rand(3, generator=labkit.seeded(5)), torch.rand(3, generator=labkit.seeded(5)))
    with pytest.raises(ValueError, match="seed"):
        labkit.seeded(-1)


def test_computed_count_counts_what_was_trained_not_what_was_found(tmp_path, monkeypatch):
    monkeypatch.setenv("FMLAB_CACHE", str(tmp_path))
    labkit.clear_cache()
    start = labkit.computed_count()
    key = labkit.cache_key("test_computed_count", 1)
    for _ in range(2):  # computed once, then found in memory
        labkit.persisted(key, lambda: {"w": torch.ones(2)}, lambda r: r, lambda s: s)
    labkit.clear_cache()  # a new kernel: found on disk
    labkit.persisted(key, lambda: {"w": torch.ones(2)}, lambda r: r, lambda s: s)
    assert labkit.computed_count() == start + 1


def test_weights_fingerprint_changes_with_any_value_name_or_dtype():
    from fmlab.labkit import weights_fingerprint

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    same = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    same.load_state_dict(net.state_dict())
    print_ = weights_fingerprint(net)
    assert weights_fingerprint(same) == print_ and len(print_) == 16
    with torch.no_grad():
        same[0].weight[0, 0] = torch.nextafter(same[0].weight[0, 0], torch.tensor(1.0))  # one ulp
    assert weights_fingerprint(same) != print_
    same.load_state_dict(net.state_dict())
    same[1].running_mean.add_(1)  # buffers count too
    assert weights_fingerprint(same) != print_
    same.load_state_dict(net.state_dict())
    assert weights_fingerprint(same) == print_
    assert weights_fingerprint(same.double()) != print_  # the same values in another dtype
