import random

import numpy as np
import pytest
import torch

from fmlab import device as dev
from fmlab.device import available_devices, default_threads, physical_cores, pick_device, seed_everything


def test_pick_device_default_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device() == torch.device("cuda:0")
    assert available_devices() == ["cuda:0", "cuda:1", "mps", "cpu"]


def test_pick_device_explicit_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


def test_unavailable_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available.*available: \\['cpu'\\]"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        pick_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"index must be in \[0, 0\]"):
        pick_device("cuda:3")


@pytest.mark.parametrize("bad", ["gpu", "tpu:0", "meta", "cpu:1", 3])
def test_malformed_device_names_the_parameter(bad):
    with pytest.raises(ValueError, match="device"):
        pick_device(bad)


def test_seed_everything_seeds_all_rngs_and_returns_generator():
    g = seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    g = seed_everything(7)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    assert a == b
    assert g.device.type == "cpu" and g.initial_seed() == 7
    seed_everything(8)
    assert torch.rand(1).item() != a[2]


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)


def test_default_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(dev, "cpu_count", lambda: 2)
    assert default_threads() == 1  # half the cores: oversubscribed threads are far slower than one
    monkeypatch.setattr(dev, "cpu_count", lambda: 6)
    assert default_threads() == 3
    monkeypatch.setattr(dev, "cpu_count", lambda: 64)
    assert default_threads() == dev.MAX_THREADS == 4
    monkeypatch.setattr(dev, "cpu_count", lambda: 1)
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert default_threads() == 1


def test_physical_cores_and_image_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = physical_cores()
    assert 1 <= cores <= dev.cpu_count()
    assert default_threads(all_cores=True) == cores  # image models use every physical core
    from fmlab.train import Trainer
    from fmlab.train_images import ImageTrainer

    assert ImageTrainer.default_threads() == cores and Trainer.default_threads() == default_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads(all_cores=True) == 3
    monkeypatch.setattr(dev.os, "sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("builtins.open", _fake_topology({0: ("0", "0"), 1: ("0", "0"), 2: ("0", "1"),
                                                         3: ("0", "1")}))
    assert physical_cores() == 2  # four logical CPUs, two cores with two hyper-threads each


def _fake_topology(table):
    import io

    real_open = open

    def fake_open(path, *args, **kwargs):
        text = str(path)
        if text.startswith("/sys/devices/system/cpu/cpu"):
            cpu = int(text.split("/cpu")[-1].split("/")[0])
            return io.StringIO(table[cpu][0] if text.endswith("physical_package_id") else table[cpu][1])
        return real_open(path, *args, **kwargs)

    return fake_open
