import os
import pickle

import pytest
import torch

from fmlab import checkpoint as ckpt
from fmlab.checkpoint import atomic_write, load_checkpoint, save_checkpoint


def _state():
    g = torch.Generator().manual_seed(3)
    torch.rand(5, generator=g)
    return {"w": torch.arange(6.0).reshape(2, 3), "step": 12, "config": {"lr": 1e-3, "name": "moons", "x": None},
            "log": [{"step": 1, "loss": 0.5}], "generator": g.get_state()}


def test_roundtrip_with_generator_state(tmp_path):
    state = _state()
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    loaded = load_checkpoint(path)
    assert set(loaded) == set(state)  # the format tag is not handed back
    assert torch.equal(loaded["w"], state["w"])
    assert loaded["config"] == state["config"] and loaded["log"] == state["log"]
    g = torch.Generator()
    g.set_state(loaded["generator"])
    ref = torch.Generator().manual_seed(3)
    torch.rand(5, generator=ref)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=ref))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left


def _failing_save(obj, f):
    f.write(b"PK\x03\x04 half a zip")  # some bytes reach the temporary file, then the write fails
    raise OSError("disk full")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt.torch, "save", _failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt.pt", _state())
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_old_file_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"step": 1})
    before = path.read_bytes()
    monkeypatch.setattr(ckpt.torch, "save", _failing_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_interrupt_mid_write_cleans_up(tmp_path):
    def write(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.bin", write)
    assert os.listdir(tmp_path) == []


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.png", lambda f: f.write(b"x"))
        (tmp_path / "b.png").write_bytes(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.png").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_truncated_checkpoint_is_a_value_error_naming_the_path(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", _state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"ckpt\.pt.*not a readable checkpoint"):
        load_checkpoint(path)


def test_corrupt_checkpoint_is_a_value_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(path)


def test_foreign_torch_file_is_rejected(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(2)}, path)  # a valid torch file, but not ours
    with pytest.raises(ValueError, match=r"foreign\.pt.*not an fmlab checkpoint"):
        load_checkpoint(path)
    torch.save(torch.zeros(3), path)  # not even a dict
    with pytest.raises(ValueError, match="not an fmlab checkpoint"):
        load_checkpoint(path)


def test_unsafe_pickle_is_refused(tmp_path):
    marker = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):  # unpickling would call open(marker, "w"): arbitrary code
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"fmlab_format": ckpt.FORMAT, "fmlab_version": 1, "x": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_newer_version_is_rejected(tmp_path, monkeypatch):
    path = tmp_path / "new.pt"
    monkeypatch.setattr(ckpt, "VERSION", 99)
    save_checkpoint(path, {"step": 1})
    monkeypatch.setattr(ckpt, "VERSION", 1)
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(path)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "x.pt", {"fmlab_format": "mine"})
    with pytest.raises(ValueError, match="state must be a dict"):
        save_checkpoint(tmp_path / "x.pt", [1, 2])
    with pytest.raises(ValueError, match="directory"):
        save_checkpoint(tmp_path, {"step": 1})
    assert os.listdir(tmp_path) == []
