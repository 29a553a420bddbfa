"""Image trainer: the data stream (epochs, shards, flips, resume), exact resume of a run, logging of throughput and
memory, sample grids, bf16 / channels-last / compile paths, the JVP probe, configs and run sizing."""

import dataclasses

import numpy as np
import pytest
import torch

from fmlab.image_grid import make_grid, to_uint8
from fmlab.image_sizing import WARN_HOURS, cpu_warning, estimate_run, measure_throughput, plan_steps
from fmlab.train_images import (
    CONFIGS,
    ImageStream,
    ImageTrainConfig,
    ImageTrainer,
    image_config,
    loss_uses_jvp,
)

torch.set_num_threads(1)


def _config(**kw):
    base = dict(data="faces", preset="tiny", image_size=16, batch_size=4, steps=4, warmup=1, lr=1e-3, threads=1,
                n_faces=24, dropout=0.1, log_every=1, ckpt_every=0, sample_every=0, sample_n=4, sample_steps=2)
    return ImageTrainConfig(**{**base, **kw})


# --- the data stream -------------------------------------------------------------------------------------------

def _indexed_images(n=10):
    """Image i is constant i (uint8), so a batch tells which images it holds."""
    return np.repeat(np.arange(n, dtype=np.uint8), 4 * 4 * 3).reshape(n, 4, 4, 3)


def _ids(x):
    return ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def test_stream_visits_every_image_once_per_epoch_and_maps_to_unit_range():
    stream = ImageStream(_indexed_images(10), seed=3, flip=False)
    x = stream(10, torch.Generator())
    assert sorted(_ids(x)) == list(range(10)) and x.min() >= -1 and x.max() <= 1
    y = stream(10, torch.Generator())
    assert sorted(_ids(y)) == list(range(10)) and _ids(y) != _ids(x)  # a new order each epoch


def test_two_ranks_cover_disjoint_halves():
    a = ImageStream(_indexed_images(10), seed=0, rank=0, world_size=2, flip=False)
    b = ImageStream(_indexed_images(10), seed=0, rank=1, world_size=2, flip=False)
    ia, ib = _ids(a(5, None)), _ids(b(5, None))
    assert sorted(ia + ib) == list(range(10))


def test_flips_come_from_the_generator_and_resume_is_exact():
    images = make_faces_like()
    s1 = ImageStream(images, seed=1)
    g = torch.Generator().manual_seed(5)
    s1(3, g)
    state, g_state = s1.state_dict(), g.get_state()
    expected = s1(4, g)
    s2 = ImageStream(images, seed=1)
    s2.load_state_dict(state)
    torch.testing.assert_close(s2(4, torch.Generator().set_state(g_state)), expected, rtol=0, atol=0)
    flipped = ImageStream(images, seed=1)(6, torch.Generator().manual_seed(0))
    plain = ImageStream(images, seed=1, flip=False)(6, torch.Generator().manual_seed(0))
    same = [torch.equal(f, p) for f, p in zip(flipped, plain, strict=True)]
    mirrored = [torch.equal(f, p.flip(-1)) for f, p in zip(flipped, plain, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and any(mirrored) and any(same)


def make_faces_like():
    from fmlab.data.faces import make_faces

    return make_faces(8, 16, seed=0)


def test_stream_rejects_bad_arrays():
    with pytest.raises(ValueError, match="uint8"):
        ImageStream(np.zeros((4, 8, 8, 3), np.float32))


# --- the trainer -----------------------------------------------------------------------------------------------------

def test_exact_resume_matches_an_uninterrupted_run(tmp_path):
    straight = ImageTrainer(_config(out=str(tmp_path / "a")))
    straight.fit(progress=False)
    part = ImageTrainer(_config(out=str(tmp_path / "b")))
    part.train_step()
    part.train_step()
    part.save()
    resumed = ImageTrainer.resume(tmp_path / "b")
    assert resumed.step == 2 and resumed.data_fn.state_dict() == part.data_fn.state_dict()
    resumed.fit(progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # bitwise, dropout and flips included
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_log_records_throughput_memory_and_grids(tmp_path):
    seen = []
    trainer = ImageTrainer(_config(steps=3, sample_every=2, out=str(tmp_path)),
                           on_grid=lambda step, grid: seen.append((step, grid.shape)))
    log = trainer.fit(progress=False)
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        assert r["images_per_s"] > 0 and r["step_ms"] > 0 and r["peak_mem_mb"] > 0
    assert sorted(trainer.grids) == [2, 3] and [s for s, _ in seen] == [2, 3]
    assert seen[0][1] == (2 * 17 + 1, 2 * 17 + 1, 3)  # 4 images of 16 px in a 2 x 2 grid
    assert (tmp_path / "samples" / "step_0000002.png").is_file() and (tmp_path / "ckpt.pt").is_file()
    assert "cpu x 1, fp32" in trainer.describe()


def test_grid_uses_fixed_noise_so_grids_are_comparable():
    trainer = ImageTrainer(_config(steps=1))
    a, b = trainer.sample_grid(), trainer.sample_grid()
    np.testing.assert_array_equal(a, b)


def test_bf16_autocast_path_runs_on_cpu():
    trainer = ImageTrainer(_config(amp="bf16", steps=1))
    assert trainer.amp_dtype == torch.bfloat16
    loss, grad_norm, _, _ = trainer.train_step()
    assert torch.isfinite(loss) and loss.dtype == torch.float32 and torch.isfinite(grad_norm)
    assert ImageTrainer(_config(steps=1)).amp_dtype is None  # auto on a CPU: fp32


def test_channels_last_and_compile_keep_results_and_state_keys():
    ref = ImageTrainer(_config(steps=1, dropout=0.0))
    fast = ImageTrainer(_config(steps=1, dropout=0.0, channels_last="on", compile="eager"))
    assert fast.channels_last and fast.compiled and fast.uses_jvp is False
    assert list(fast.model.state_dict()) == list(ref.model.state_dict())
    la, _, _, _ = ref.train_step()
    lb, _, _, _ = fast.train_step()
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)


def test_jvp_losses_are_detected_and_kept_in_fp32_contiguous():
    from fmlab.models import build_unet

    one, two = build_unet("tiny", image_size=8), build_unet("tiny", image_size=8, time_inputs=2)
    assert loss_uses_jvp("cfm", one, (3, 8, 8)) is False
    assert loss_uses_jvp("meanflow", two, (3, 8, 8)) is True
    state = torch.get_rng_state()
    loss_uses_jvp("meanflow", two, (3, 8, 8))
    assert torch.equal(state, torch.get_rng_state())  # the probe leaves the global RNG alone
    trainer = ImageTrainer(_config(loss="meanflow", steps=1, compile="eager", channels_last="auto"))
    assert trainer.uses_jvp and not trainer.compiled and not trainer.channels_last and trainer.amp_dtype is None


def test_configs_and_validation():
    cfg = image_config("faces32", loss="meanflow")
    assert cfg.preset == "tiny" and cfg.loss == "meanflow" and cfg.head == "average_velocity"
    assert set(CONFIGS) >= {"celeba64", "faces64", "faces32"}
    assert ImageTrainConfig.from_dict(cfg.to_dict()) == cfg
    for bad, match in [(dict(preset="huge"), "preset"), (dict(amp="fp8"), "amp"), (dict(data="moons"), "data"),
                       (dict(image_size=18), "divisible"), (dict(dropout=1.0), "dropout"), (dict(crop="x"), "crop"),
                       (dict(compile="yes"), "compile"), (dict(channels_last=True), "channels_last")]:
        with pytest.raises(ValueError, match=match):
            _config(**bad)
    with pytest.raises(ValueError, match="config must be one of"):
        image_config("cifar10")


def test_throughput_and_run_sizing():
    stats = measure_throughput(_config(), steps=1, warmup=0)
    assert stats["images_per_s"] > 0 and stats["step_ms"] > 0
    assert plan_steps(100.0, 60.0, 32) == 187  # floor(60 s x 100 img/s / 32)
    assert plan_steps(100.0, 1.0, 32, min_steps=10) == 10
    assert plan_steps(1e6, 60.0, 32, max_steps=500) == 500
    with pytest.raises(ValueError, match="budget_s"):
        plan_steps(10.0, 0.0, 32)


def test_cpu_estimate_and_warning_for_a_gpu_sized_run(monkeypatch):
    from fmlab import image_sizing

    config = _config(batch_size=16, steps=10)
    estimate = estimate_run(config)
    assert estimate["step_s"] > 0 and estimate["peak_mem_mb"] > 0
    assert estimate["hours"] == pytest.approx(estimate["step_s"] * 10 / 3600)
    with pytest.raises(ValueError, match="probe_batches"):
        estimate_run(config, probe_batches=(4, 2))
    # the message, from given measurements: 2 s per step, 3 GB, and the CPU configuration at 64 images/s
    monkeypatch.setattr(image_sizing, "estimate_run", lambda c: {"step_s": 2.0, "hours": 2.0 * c.steps / 3600,
                                                                 "peak_mem_mb": 3072.0})
    monkeypatch.setattr(image_sizing, "measure_throughput", lambda c, steps, warmup: {"images_per_s": 64.0})
    assert cpu_warning(_config(steps=int(WARN_HOURS * 1800)), 1) is None  # exactly WARN_HOURS: no warning
    message = cpu_warning(_config(batch_size=128, steps=200_000), 2)
    assert message.startswith("WARNING: this run is sized for a GPU. On this CPU (2 threads) a step of batch 128 "
                              "takes about 2.0 s")
    assert "200000 steps would take about 111 hours, with a peak memory of about 3.0 GB" in message
    assert "--config faces32 (the 'tiny' UNet at 32 px, batch 32: 64 images/s here, about 17 minutes" in message


class _Stop(Exception):
    pass


def test_cli_warns_before_the_first_step(monkeypatch, tmp_path, capsys):
    from fmlab import images
    from fmlab.cli import main

    monkeypatch.setattr(images, "cpu_warning", lambda config, threads: f"WARNING: test ({threads} threads)")
    printed_before_step = []

    def first_step(self):
        printed_before_step.append(capsys.readouterr().out)
        raise _Stop

    monkeypatch.setattr(ImageTrainer, "train_step", first_step)
    with pytest.raises(_Stop):
        main(["train", "--config", "faces32", "--steps", "2", "--threads", "1", "--out", str(tmp_path / "r"),
              "--no-progress"])
    assert "WARNING: test (1 threads)" in printed_before_step[0]


def test_uint8_conversion_and_grid():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    u = to_uint8(x)
    assert u.shape == (1, 2, 2, 3) and u[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    grid = make_grid(np.zeros((5, 2, 2, 3), np.uint8), nrow=3)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3) and grid[0].min() == 255 and grid[1, 1].max() == 0


def test_image_config_dataclass_fields_are_plain():
    cfg = _config()
    assert all(isinstance(v, (int, float, str, bool, type(None), dict)) for v in dataclasses.asdict(cfg).values())
