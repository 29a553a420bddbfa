"""fmlab.diskcache and labkit's persisted results: a trained run comes back from disk, identical, without training;
fast and full mode, and fmlab versions, never share entries; a corrupt entry is retrained with a warning."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import fmlab
from fmlab import diskcache, labkit
from fmlab.models.embeddings import DEFAULT_TIME_FREQ_MAX
from fmlab.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(data="moons", steps=6, batch_size=32, hidden=16, depth=2, log_every=3, ckpt_every=0, seed=0, threads=1,
            device="cpu")


@pytest.fixture
def fits(monkeypatch):
    """Counts Trainer.fit calls (training still happens)."""
    calls = []
    real = Trainer.fit

    def spy(self, *args, **kwargs):
        calls.append(self.config)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    return calls


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.ema.state_dict().items()}


def test_a_cleared_memory_cache_gets_identical_weights_from_disk_without_training(cache, fits):
    first = labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 1 and diskcache.disk_info()["entries"] == 1
    labkit.clear_cache()  # a new kernel: memory empty, disk kept
    again = labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 1, "the second call trained instead of loading the disk entry"
    assert again is not first
    for (k, a), b in zip(_weights(first).items(), _weights(again).values(), strict=True):
        assert torch.equal(a, b), k
    assert again.model.state_dict().keys() == first.model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(),
                                                 strict=True))
    assert again.log == first.log and again.step == first.step == TINY["steps"]
    assert not again.ema.training and not any(p.requires_grad for p in again.ema.parameters())


def test_a_second_process_loads_the_weights_and_never_trains(cache):
    first = labkit.train_cached(TrainConfig(**TINY), progress=False)
    script = (
        "import torch\n"
        "from fmlab import labkit\n"
        "from fmlab.train import TrainConfig, Trainer\n"
        "def refuse(*a, **k):\n"
        "    raise SystemExit('trained instead of loading from disk')\n"
        "Trainer.fit = refuse\n"
        f"t = labkit.train_cached(TrainConfig(**{TINY!r}), progress=False)\n"
        "torch.save(t.ema.state_dict(), 'weights.pt')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FMLAB_CACHE": str(cache), "FMLAB_FAST": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=cache, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = torch.load(cache / "weights.pt", weights_only=True)
    for k, v in _weights(first).items():
        assert torch.equal(loaded[k], v), k


def test_fast_and_full_mode_never_share_an_entry(cache, fits, monkeypatch):
    key = labkit.cache_key("train_cached", TrainConfig(**TINY), {})
    fast_path = diskcache.entry_path(key)
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    monkeypatch.setenv("FMLAB_FAST", "0")
    assert diskcache.entry_path(key) != fast_path
    labkit.clear_cache()
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 2, "full mode read fast mode's entry"
    assert diskcache.disk_info()["entries"] == 2


def test_another_fmlab_version_misses(cache, fits, monkeypatch):
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    monkeypatch.setattr(fmlab, "__version__", fmlab.__version__ + ".post1")
    labkit.clear_cache()
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 2


def test_another_default_architecture_misses(cache, fits, monkeypatch):
    """The time embedding's highest frequency is a build_model default, not a run-config field: changing it (as
    fmlab did from 200 to 10) must not load models trained with the old embedding."""
    assert ("time_freq_max", DEFAULT_TIME_FREQ_MAX) in diskcache.model_defaults()
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    monkeypatch.setattr(diskcache, "model_defaults", lambda: (("time_freq_max", 200.0),))
    labkit.clear_cache()
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 2


def test_another_config_misses(cache, fits):
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    labkit.clear_cache()
    labkit.train_cached(TrainConfig(**{**TINY, "lr": 3e-3}), progress=False)
    assert len(fits) == 2


def test_a_corrupt_entry_is_retrained_with_a_warning(cache, fits):
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    path = diskcache.entry_path(labkit.cache_key("train_cached", TrainConfig(**TINY), {}))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a crash without atomic writes
    labkit.clear_cache()
    with pytest.warns(RuntimeWarning, match="ignoring"):
        again = labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 2 and again.step == TINY["steps"]
    labkit.clear_cache()  # the retrained run replaced the corrupt file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 2


def test_an_entry_of_another_shape_is_retrained_with_a_warning(cache, fits):
    key = labkit.cache_key("train_cached", TrainConfig(**TINY), {})
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    state = diskcache.load_entry(key)
    state["ema"] = {k: torch.zeros(3) for k in state["ema"]}  # e.g. written by an older model definition
    diskcache.save_entry(key, state)
    labkit.clear_cache()
    with pytest.warns(RuntimeWarning, match="could not be rebuilt"):
        labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 2


class _Payload:
    """Not a tensor or plain value: the weights-only loader must refuse to unpickle it."""


def test_entries_load_weights_only(cache, monkeypatch):
    key = ("weights only", 1)
    diskcache.save_entry(key, {"x": torch.ones(2)})
    seen = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("weights_only")) or real(*a, **k))
    assert torch.equal(diskcache.load_entry(key)["x"], torch.ones(2))
    assert seen == [True]
    torch.save({"fmlab_format": "fmlab-checkpoint", "fmlab_version": 1, "key": diskcache.entry_key(key),
                "state": {"x": _Payload()}}, diskcache.entry_path(key))  # a pickled object in a well-formed entry
    with pytest.warns(RuntimeWarning, match="ignoring"):
        assert diskcache.load_entry(key) is None


def test_off_keeps_results_in_memory_only(tmp_path, monkeypatch, fits):
    monkeypatch.chdir(tmp_path)
    for value in ("off", "0", "none"):
        monkeypatch.setenv("FMLAB_CACHE", value)
        assert diskcache.cache_root() is None and diskcache.entry_path(("k",)) is None
    labkit.clear_cache()
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    labkit.clear_cache()
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    assert len(fits) == 2
    assert list(tmp_path.iterdir()) == [] and diskcache.disk_info() == {"enabled": False, "path": None, "entries": 0,
                                                                        "bytes": 0}


def test_the_default_directory_honours_xdg_cache_home_without_platformdirs(tmp_path, monkeypatch):
    monkeypatch.delenv("FMLAB_CACHE", raising=False)
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # import fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert diskcache.cache_root() == tmp_path / "fmlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert diskcache.cache_root() == Path.home() / ".cache" / "fmlab"
    monkeypatch.setenv("FMLAB_CACHE", "~/elsewhere")
    assert diskcache.cache_root() == Path.home() / "elsewhere"


def test_clear_cache_disk_deletes_the_entries(cache):
    labkit.train_cached(TrainConfig(**TINY), progress=False)
    info = diskcache.disk_info()
    assert info["entries"] == 1 and info["bytes"] > 0 and info["path"] == str(cache / "trained")
    (cache / "fid_ref_x.npz").write_bytes(b"not ours")
    labkit.clear_cache(disk=True)
    assert labkit.cache_info() == 0 and diskcache.disk_info()["entries"] == 0
    assert (cache / "fid_ref_x.npz").exists(), "clear removed a file the entries did not own"


def test_objects_keyed_by_identity_stay_in_memory(cache):
    data = lambda n, g: torch.randn(n, 2, generator=g)  # noqa: E731  (a function: keyed by identity)
    first = labkit.train_cached(TrainConfig(**TINY), progress=False, data_fn=data)
    assert diskcache.disk_info()["entries"] == 0
    assert labkit.train_cached(TrainConfig(**TINY), progress=False, data_fn=data) is first


def test_the_entry_name_is_stable_across_processes(cache):
    key = labkit.cache_key("train_cached", TrainConfig(**TINY), {})
    code = ("from fmlab import diskcache, labkit\nfrom fmlab.train import TrainConfig\n"
            f"print(diskcache.entry_path(labkit.cache_key('train_cached', TrainConfig(**{TINY!r}), {{}})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FMLAB_CACHE": str(cache), "FMLAB_FAST": "1",
           "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == str(diskcache.entry_path(key)), out.stderr


def test_unpersistable_keys_are_refused_by_name(cache):
    with pytest.raises(ValueError, match="key must hold only"):
        diskcache.entry_key(("k", object()))


# --- every lab training path: experiments.run, parametrisation runs, viz.training.fit (reflow teacher) ------------

def test_an_experiment_run_comes_back_with_every_measurement(cache, fits):
    from fmlab.experiments import lab_config, run

    config = lab_config("8gaussians", "cfm", train_steps=20, log_every=10, threads=1)
    kwargs = dict(track_every=10, track_batch=32, variance_every=10, variance_windows=(1, 2), variance_batches=2,
                  eval_steps=(4,), n_eval=50)
    first = run(config, progress=False, **kwargs)
    labkit.clear_cache()
    updates = []
    again = run(config, progress=False, on_update=updates.append, **kwargs)
    assert len(fits) == 1 and updates == [], "a cached run trains and reports nothing"
    assert again.config == config and again.grad_steps == first.grad_steps == [0, 10, 20]
    assert torch.equal(again.norms(), first.norms()) and again.w1 == first.w1 and again.elapsed == first.elapsed
    assert [v.windows for v in again.variances] == [v.windows for v in first.variances]
    assert all(torch.equal(a.variance, b.variance) for a, b in zip(again.variances, first.variances, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                 first.model.state_dict().values(), strict=True))
    refreshed = run(config, progress=False, refresh=True, **kwargs)
    assert len(fits) == 2 and refreshed is not again


def test_a_parametrisation_run_keeps_its_tracked_weights(cache, fits):
    from fmlab.viz import parametrisation as P

    config = P.parametrisation_configs("moons", 20, log_every=10)[1]
    first = P.parametrisation_run(config, track_every=10, n_eval=50, progress=False)
    labkit.clear_cache()
    again = P.parametrisation_run(config, track_every=10, n_eval=50, progress=False)
    assert len(fits) == 1
    assert again.losses == first.losses and len(again.states) == len(first.states) == 3
    assert all(torch.equal(a[k], b[k]) for a, b in zip(again.states, first.states, strict=True) for k in a)


def test_a_parametrisation_run_after_a_plain_cached_run_trains_once_more_to_record(cache, fits):
    from fmlab.experiments import run
    from fmlab.viz import parametrisation as P

    config = P.parametrisation_configs("moons", 20, log_every=10)[0]
    run(config, levels=P.DEFAULT_LEVELS, track_every=10, eval_steps=(100,), n_eval=50, progress=False)
    labkit.clear_cache()  # the run is on disk only: loading it replays no callbacks, so the weights must be recorded
    record = P.parametrisation_run(config, track_every=10, n_eval=50, progress=False)
    assert len(fits) == 2 and len(record.states) == len(record.result.grad_steps) == 3


def test_a_reflow_student_and_its_teacher_load_from_disk(cache, fits):
    from fmlab.viz import training as T

    teacher = TrainConfig(**{**TINY, "data": "8modes"})
    student = TrainConfig(**{**TINY, "data": "8modes", "loss": "reflow"})
    first = T.fit(student, teacher, progress=False)
    assert len(fits) == 2
    labkit.clear_cache()
    again = T.fit(student, teacher, progress=False)
    assert len(fits) == 2 and again.log == first.log
    assert "field_error" in T.fit(teacher).log[-1]  # records keep what the live figure plots
    assert again.settings["teacher"] is T.fit(teacher).ema


def test_a_result_that_cannot_be_stored_is_kept_in_memory_with_a_warning(cache):
    def broken(result):
        raise TypeError("not a state")

    with pytest.warns(RuntimeWarning, match="not stored on disk"):
        assert labkit.persisted(("unstorable",), lambda: 42, broken, dict) == 42
    assert labkit.persisted(("unstorable",), lambda: 0, broken, dict) == 42  # memory still has it
    assert diskcache.disk_info()["entries"] == 0


def test_storable_gives_what_the_weights_only_loader_reads(cache):
    import numpy as np

    state = {"a": np.float32(1.5), "b": np.arange(3), "c": (1, 2), "d": torch.ones(2)}
    diskcache.save_entry(("storable",), state)
    back = diskcache.load_entry(("storable",))
    assert back["a"] == 1.5 and torch.equal(back["b"], torch.arange(3)) and back["c"] == [1, 2]
