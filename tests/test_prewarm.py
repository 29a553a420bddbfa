"""fmlab.prewarm and `python -m fmlab prewarm / cache`: a pre-warmed lab trains nothing when it runs."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fmlab import diskcache, labkit, prewarm
from fmlab.cli import main
from fmlab.train import Trainer
from fmlab.viz import score_sde, training

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fast", [True, False])
def test_every_registered_lab_lists_jobs_that_resolve(fast):
    for lab, module in prewarm.LABS.items():
        jobs = importlib.import_module(module).prewarm_jobs(fast)
        assert jobs and all(j.lab == lab and j.cost >= 1 for j in jobs), lab
        for j in jobs:
            name, function = j.function.split(":")
            assert callable(getattr(importlib.import_module(name), function)), j.function
    assert {lab.stem[:2] for lab in (ROOT / "labs").glob("[0-9][0-9]_*.py")} >= set(prewarm.LABS)


def test_lab_jobs_share_runs_and_name_bad_labs():
    both = prewarm.lab_jobs(["03", "4"], fast=True)  # lab 04 samples lab 03's network: one run, and its own
    assert [(j.lab, j.function.split(":")[1]) for j in both] == [("03", "fit"), ("04", "wiggly_network")]
    with pytest.raises(ValueError, match="lab must be one of"):
        prewarm.lab_jobs(["99"], fast=True)


def test_sizes_follow_the_mode():
    fast, full = prewarm.lab_jobs(["07"], fast=True), prewarm.lab_jobs(["07"], fast=False)
    assert sorted(j.args[0].steps for j in fast) == [200, 300]
    assert sorted(j.args[0].steps for j in full) == [200, 4000]


def test_teachers_come_before_their_students():
    jobs = prewarm.lab_jobs(["05", "12"], fast=True)
    stages = [j.stage for j in jobs]
    assert stages == sorted(stages) and 1 in stages
    reflow = next(j for j in jobs if j.lab == "05" and j.args[0].loss == "reflow")
    teacher = reflow.args[1]
    assert any(j.args == (teacher,) and j.stage == 0 for j in jobs)


def test_unrolling_widget_every_control_setting_is_a_job():
    from fmlab.viz import unrolling_runs as R

    jobs = prewarm.lab_jobs(["10"], fast=True)
    configs = {repr(j.args[0]) for j in jobs}
    for loss in R.WIDGET_LOSSES.values():
        for steps in R.TRAINING_STEP_COUNTS:
            config, _ = R.widget_config("8gaussians", 100, loss, 1, steps, True, True, True)
            assert repr(config) in configs


@pytest.mark.slow
def test_prewarm_one_lab_in_fast_mode_then_the_lab_trains_nothing(cache, monkeypatch):
    report = prewarm.prewarm(["07"], jobs=1, fast=True, progress=False)
    assert report["errors"] == [] and report["jobs"] == 2 and diskcache.disk_info()["entries"] == 2
    fits = []
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: fits.append(self.config))
    for n in (300, 200):  # lab 07's TRAINED and UNDER in fast mode
        trainer = training.fit(score_sde.sde_config(n))
        assert trainer.step == n
    assert fits == [], "a pre-warmed run trained again"
    assert diskcache.disk_info()["entries"] == 2


@pytest.mark.slow
def test_prewarm_lab04_then_its_cells_train_nothing(cache, monkeypatch):
    from fmlab.train import LEGACY_TIME_FREQ_MAX
    from fmlab.viz import solvers

    report = prewarm.prewarm(["04"], jobs=1, fast=True, progress=False)
    assert report["errors"] == [] and report["jobs"] == 2
    labkit.clear_cache()  # a new kernel
    fits = []
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: fits.append(self.config))
    config = training.lab03_config(fast=True)
    assert training.fit(config).step == config.steps
    wiggly = solvers.wiggly_network(config)
    assert wiggly.step == config.steps
    assert float(wiggly.ema.backbone.embed.freqs.max()) == pytest.approx(LEGACY_TIME_FREQ_MAX)
    assert fits == [], "a pre-warmed lab 04 run trained again"


def test_prewarm_lab13_then_a_new_kernel_plans_the_same_runs_and_trains_nothing(cache, monkeypatch):
    from fmlab import fid, images
    from fmlab.images import LAB_RUNS, lab_samples, lab_scores, plan_lab, train_lab_guidance, train_lab_run
    from fmlab.train_images import ImageTrainer

    report = prewarm.prewarm(["13"], jobs=1, fast=True, progress=False)
    entries = diskcache.disk_info()["entries"]
    plan = plan_lab(fast=True)  # the throughput comes from the disk: the same steps as the pre-warm's plan
    samples = len(LAB_RUNS) * len(plan.eval_steps)  # each run's samples at each step count
    assert report["errors"] == [] and report["jobs"] == len(LAB_RUNS) + 2  # + the conditional run + the scores
    assert entries == len(LAB_RUNS) + 1 + samples + 1 + 1  # runs, conditional run, samples, scores, throughput
    stored = lab_samples(plan, {label: train_lab_run(plan, label, live=False) for label in LAB_RUNS})
    labkit.clear_cache()  # a new kernel: memory empty, disk kept
    fits, draws = [], []
    monkeypatch.setattr(ImageTrainer, "fit", lambda self, *a, **k: fits.append(self.config))
    monkeypatch.setattr(images, "sample_images", lambda *a, **k: draws.append(a))
    trainers = {label: train_lab_run(plan, label, live=False) for label in LAB_RUNS}
    assert all(t.step == plan.steps for t in trainers.values())
    again = lab_samples(plan, trainers)
    scored = []
    monkeypatch.setattr(fid, "image_scores", lambda *a, **k: scored.append(a))
    lab_scores(plan, again)
    train_lab_guidance(plan, live=False)
    assert fits == [] and draws == [] and scored == [], "a pre-warmed lab 13 trained, sampled or scored again"
    assert diskcache.disk_info()["entries"] == entries
    for label in LAB_RUNS:
        for k in plan.eval_steps:
            assert again[label][k].dtype == np.uint8 and np.array_equal(again[label][k], stored[label][k])


def test_lab_samples_are_keyed_by_the_weights_they_come_from(cache, monkeypatch):
    from fmlab import images
    from fmlab.images import lab_sampler, plan_lab, prepare_lab_run, train_lab_run

    plan = plan_lab(fast=True)
    prepare_lab_run(plan, "field (cfm)")  # what the pre-warm does for each run: train, then sample every step count
    labkit.clear_cache()  # a new kernel
    draws = []
    drawn = images.sample_images
    monkeypatch.setattr(images, "sample_images", lambda *a, **k: draws.append(a) or drawn(*a, **k))
    trainer = train_lab_run(plan, "field (cfm)", live=False)
    sample = lab_sampler(plan, {"field (cfm)": trainer})
    first = sample("field (cfm)", 2)
    assert first.dtype == np.uint8 and first.shape[0] == plan.n_eval and draws == []  # from the disk
    with torch.no_grad():
        next(trainer.ema.parameters()).add_(0.01)  # other weights, same config: never the stored samples
    sample = lab_sampler(plan, {"field (cfm)": trainer})  # a sampler fingerprints its (finished) runs once
    assert not np.array_equal(sample("field (cfm)", 2), first) and len(draws) == 1


def test_lab_scores_are_kept_on_disk_for_the_same_samples_only(cache, monkeypatch):
    from fmlab import fid
    from fmlab.images import LAB_RUNS, lab_samples, lab_scores, plan_lab, prepare_lab_scores, train_lab_run

    plan = plan_lab(fast=True)
    prepare_lab_scores(plan)  # what the pre-warm does once the four runs are trained
    labkit.clear_cache()  # a new kernel
    scored = []
    real = fid.image_scores
    monkeypatch.setattr(fid, "image_scores", lambda *a, **k: scored.append(1) or real(*a, **k))
    samples = lab_samples(plan, {label: train_lab_run(plan, label, live=False) for label in LAB_RUNS})
    rows = lab_scores(plan, samples)
    assert scored == [] and {r["model"] for r in rows} == {"noise (no training)", "data (held-out draws)", *LAB_RUNS}
    first = next(iter(LAB_RUNS))
    other = {**samples, first: {k: 255 - images for k, images in samples[first].items()}}
    assert lab_scores(plan, other) != rows and scored  # other samples: scored again


def test_cli_cache_info_and_clear(cache, capsys):
    diskcache.save_entry(("an entry",), {"x": 1})
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache / "trained") in out and "entries: 1" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 1" in capsys.readouterr().out and diskcache.disk_info()["entries"] == 0


def test_cli_rejects_a_bad_lab_and_a_disabled_cache(cache, monkeypatch, capsys):
    assert main(["prewarm", "99"]) == 2
    assert "lab must be one of" in capsys.readouterr().err
    monkeypatch.setenv("FMLAB_CACHE", "off")
    assert main(["prewarm", "07"]) == 2
    assert "FMLAB_CACHE=off" in capsys.readouterr().err
    assert main(["cache", "info"]) == 0 and "off" in capsys.readouterr().out
