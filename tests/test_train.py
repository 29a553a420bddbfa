import json
import math

import numpy as np
import pytest
import torch

from fmlab.checkpoint import load_checkpoint
from fmlab.data import sample_toy
from fmlab.models import build_model
from fmlab.runs import load_run, sample_run
from fmlab.train import (
    CKPT_NAME,
    METRICS_NAME,
    TrainConfig,
    Trainer,
    ema_decay_at,
    ema_update,
    lr_schedule,
)

TINY = dict(hidden=16, depth=2, batch_size=32, threads=1, log_every=3, ckpt_every=10)


class Killed(Exception):
    pass


# --- configuration --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"steps": 10.0}, "steps must be an integer"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr"),
    ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
    ({"grad_clip": -1.0}, "grad_clip"),
    ({"warmup": -1}, "warmup"),
    ({"loss": "nope"}, "loss must be one of .*cfm"),
    ({"coupling": "greedy"}, "coupling must be one of .*'ot'"),
    ({"optimizer": "sgd"}, "optimizer must be one of"),
    ({"lr_schedule": "step"}, "lr_schedule must be one of"),
    ({"prediction": "score"}, "prediction must be one of .*'x1'"),
    ({"loss_settings": {"bogus": 1}}, "no setting.*bogus.*allowed"),
    ({"loss_settings": {"weighting": object()}}, "plain value"),
    ({"device": 0}, "device must be a string"),
    ({"threads": 0}, "threads"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_config_roundtrip_and_head():
    cfg = TrainConfig(loss="x1_prediction", loss_settings={"eps": 1e-2})
    assert cfg.head == "x1" and TrainConfig(prediction="eps").head == "eps" and TrainConfig().head == "velocity"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({**cfg.to_dict(), "future": 1})


def test_unknown_data_and_device_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="data must be one of .*moons"):
        Trainer(TrainConfig(data="mnist", out=str(tmp_path / "run"), **TINY))
    with pytest.raises(ValueError, match="device"):
        Trainer(TrainConfig(device="tpu", out=str(tmp_path / "run"), **TINY))
    assert not (tmp_path / "run").exists()


# --- learning-rate schedule and EMA -------------------------------------------------------------------

def test_lr_schedule_values():
    lr, w, n = 1e-3, 10, 110
    assert lr_schedule(0, lr, w, n) == pytest.approx(lr / 10)  # (k + 1) / w
    assert lr_schedule(4, lr, w, n) == pytest.approx(lr / 2)
    assert lr_schedule(9, lr, w, n) == pytest.approx(lr)
    assert lr_schedule(10, lr, w, n) == pytest.approx(lr)  # cosine starts at the peak
    assert lr_schedule(60, lr, w, n) == pytest.approx(lr / 2)  # half way: (1 + cos(pi / 2)) / 2
    assert lr_schedule(35, lr, w, n) == pytest.approx(lr * (1 + math.cos(math.pi / 4)) / 2)
    assert 0 < lr_schedule(109, lr, w, n) < 1e-3 * lr  # ~0 at the last step
    assert lr_schedule(50, lr, w, n, "constant") == lr
    assert lr_schedule(0, lr, 0, 5) == lr  # no warmup
    assert lr_schedule(2, lr, 100, 5) == pytest.approx(lr * 3 / 5)  # warmup clipped to steps


def test_trainer_uses_the_schedule(tmp_path):
    cfg = TrainConfig(steps=12, warmup=4, lr=2e-3, **{**TINY, "log_every": 1})
    log = Trainer(cfg).fit(progress=False)
    assert [r["lr"] for r in log] == pytest.approx([lr_schedule(k, 2e-3, 4, 12) for k in range(12)])


def test_ema_decay_and_update_math():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(10, 0.999) == pytest.approx(11 / 20)
    assert ema_decay_at(100_000, 0.999) == 0.999
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters(), strict=True):
        assert torch.allclose(e, 0.9 * b + 0.1 * p)  # theta_ema <- d theta_ema + (1 - d) theta


def test_trainer_ema_after_one_step():
    tr = Trainer(TrainConfig(steps=1, **TINY))
    init = [p.detach().clone() for p in tr.model.parameters()]
    tr.fit(progress=False)
    d = ema_decay_at(0, 0.999)
    for e, i, p in zip(tr.ema.parameters(), init, tr.model.parameters(), strict=True):
        assert torch.allclose(e, d * i + (1 - d) * p)
        assert not torch.equal(p, i)


def test_trainer_gives_its_ema_to_losses_that_take_one(tmp_path):
    # TVM evaluates its terminal velocity with EMA weights: the trainer passes its own EMA model, which resume restores
    tr = Trainer(TrainConfig(loss="tvm", steps=2, out=str(tmp_path / "run"), **TINY))
    assert tr.settings["ema"] is tr.ema
    tr.fit(progress=False)
    assert Trainer(TrainConfig(steps=1, **TINY)).settings.get("ema") is None  # cfm takes no EMA


# --- files, exact resume ------------------------------------------------------------------------------------

def _params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def _strip_time(log):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in log]


@pytest.mark.parametrize("coupling", ["sinkhorn", "ot"])
def test_killed_and_resumed_run_is_bitwise_identical(tmp_path, coupling):
    cfg = dict(steps=30, coupling=coupling, warmup=5, **TINY)
    full = Trainer(TrainConfig(out=str(tmp_path / "full"), **cfg))
    full.fit(progress=False)

    def kill_at_24(step, record):
        if step == 24:
            raise Killed

    killed = Trainer(TrainConfig(out=str(tmp_path / "killed"), **cfg))
    with pytest.raises(Killed):
        killed.fit(progress=False, callback=kill_at_24)
    resumed = Trainer.resume(tmp_path / "killed")
    assert resumed.step == 20  # the last checkpoint
    resumed.fit(progress=False)
    for a, b in zip(_params(full.model), _params(resumed.model), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(_params(full.ema), _params(resumed.ema), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())
    assert _strip_time(full.log) == _strip_time(resumed.log)  # the log window straddling step 20 included
    lines = [json.loads(x) for x in (tmp_path / "killed" / METRICS_NAME).read_text().splitlines()]
    assert _strip_time(lines) == _strip_time(full.log)  # the record at 24 from the killed run was dropped


def test_uninterrupted_runs_repeat_and_seeds_differ():
    a = Trainer(TrainConfig(steps=5, **TINY))
    a.fit(progress=False)
    b = Trainer(TrainConfig(steps=5, **TINY))
    b.fit(progress=False)
    c = Trainer(TrainConfig(steps=5, seed=1, **TINY))
    c.fit(progress=False)
    assert all(torch.equal(x, y) for x, y in zip(_params(a.model), _params(b.model), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(_params(a.model), _params(c.model), strict=True))


def test_run_files_log_callback_and_sampling(tmp_path):
    out = tmp_path / "run"
    seen = []

    def callback(step, record):
        seen.append(step)
        record.update(extra=np.float32(0.5), t=torch.tensor(2.0))  # callbacks may annotate records

    cfg = TrainConfig(steps=10, out=str(out), **{**TINY, "log_every": 4, "ckpt_every": 0})
    log = Trainer(cfg).fit(progress=False, callback=callback)
    assert [r["step"] for r in log] == [4, 8, 10] and seen == [4, 8, 10]
    lines = [json.loads(x) for x in (out / METRICS_NAME).read_text().splitlines()]
    assert lines == log and lines[0]["extra"] == 0.5 and lines[0]["t"] == 2.0
    assert load_checkpoint(out / CKPT_NAME)["log"] == log
    assert {"loss", "grad_norm", "lr", "elapsed_s", "mse", "n_forward"} <= set(log[0])
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "config.json", "metrics.jsonl"]
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    model, config = load_run(out)
    assert config == cfg and not any(p.requires_grad for p in model.parameters())
    x = sample_run(out, n=50, steps=3, seed=1)
    assert x.shape == (50, 2) and torch.isfinite(x).all()
    assert torch.equal(x, sample_run(out / CKPT_NAME, n=50, steps=3, seed=1))
    assert not torch.equal(x, sample_run(out, n=50, steps=3, seed=2))


def test_bad_first_step_writes_nothing(tmp_path):
    out = tmp_path / "run"
    tr = Trainer(TrainConfig(loss="reflow", steps=3, out=str(out), **TINY))
    with pytest.raises(ValueError, match="teacher"):
        tr.fit(progress=False)
    assert not out.exists()


def test_custom_data_and_model(tmp_path):
    def data_fn(n, generator):  # 3-D Gaussian data with labels
        return torch.randn(n, 3, generator=generator) + 2.0, torch.zeros(n, dtype=torch.long)

    model = build_model(dim=3, hidden=8, depth=1)
    model.config = {}  # a model fmlab cannot rebuild
    out = tmp_path / "run"
    tr = Trainer(TrainConfig(data="gauss3", steps=4, out=str(out), **TINY), model=model, data_fn=data_fn)
    tr.fit(progress=False)
    with pytest.raises(ValueError, match="custom model.*pass model="):
        Trainer.resume(out, data_fn=data_fn)
    again = Trainer.resume(out, model=build_model(dim=3, hidden=8, depth=1), data_fn=data_fn)
    assert again.step == 4
    with pytest.raises(ValueError, match="data must be one of"):
        Trainer.resume(out, model=build_model(dim=3, hidden=8, depth=1))


def test_short_run_learns_moons():
    torch.manual_seed(0)
    tr = Trainer(TrainConfig(steps=300, coupling="ot", lr=3e-3, warmup=20, **{**TINY, "hidden": 64, "log_every": 50}))
    log = tr.fit(progress=False)
    assert log[-1]["loss"] < 0.75 * log[0]["loss"]
    x1 = sample_toy("moons", 256, torch.Generator().manual_seed(1))
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(2))
    from fmlab.metrics import wasserstein
    from fmlab.solvers import solve

    assert wasserstein(solve(tr.ema, x0, steps=20), x1) < 0.5 * wasserstein(x0, x1)
