"""CelebA loader on a fake release with the official layout (178 x 218 JPEGs + list_eval_partition.txt), as a
folder and as the zip: location rules, crop geometry, split, cache, clear messages for a missing or malformed
folder, and the command line (prepare, train, resume, sample, eval) on CPU."""

import json
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from fmlab.data import celeba as C
from fmlab.data.celeba import CelebA64, locate_celeba, preprocess, read_partition

N_TRAIN, N_VALID, N_TEST = 200, 50, 50
N = N_TRAIN + N_VALID + N_TEST


def _coded_image(i: int) -> Image.Image:
    """R = column, G = row (so crops can be located), B = a per-image constant."""
    cols, rows = np.meshgrid(np.arange(178), np.arange(218))
    arr = np.stack([cols, rows, np.full_like(cols, (7 * i) % 256)], -1).astype(np.uint8)
    return Image.fromarray(arr)


def _write_release(root, zipped: bool = False):
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{i:06d}.jpg {0 if i <= N_TRAIN else 1 if i <= N_TRAIN + N_VALID else 2}" for i in range(1, N + 1)]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    folder = root / "img_align_celeba"
    folder.mkdir(exist_ok=True)
    for i in range(1, N + 1):
        _coded_image(i).save(folder / f"{i:06d}.jpg", quality=95)
    if zipped:
        with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as z:
            for i in range(1, N + 1):
                z.write(folder / f"{i:06d}.jpg", f"img_align_celeba/{i:06d}.jpg")
        shutil.rmtree(folder)
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return _write_release(tmp_path_factory.mktemp("celeba"))


@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    return _write_release(tmp_path_factory.mktemp("celeba_zip"), zipped=True)


def test_locate_folder_zip_and_environment(release, zipped, monkeypatch):
    src = locate_celeba(release)
    assert src.images.name == "img_align_celeba" and not src.is_zip
    assert locate_celeba(zipped).is_zip
    monkeypatch.setenv(C.CELEBA_ENV, str(zipped))
    assert locate_celeba().images == zipped / "img_align_celeba.zip"
    assert C.celeba_available() and not C.celeba_available(release / "nowhere")


def test_missing_folder_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.delenv(C.CELEBA_ENV, raising=False)
    for root in (None, tmp_path / "absent", tmp_path):
        with pytest.raises(FileNotFoundError) as err:
            CelebA64(root)
        text = str(err.value)
        for needle in ("img_align_celeba.zip", "list_eval_partition.txt", "--data-root", C.CELEBA_ENV,
                       "mmlab.ie.cuhk.edu.hk", "licence"):
            assert needle in text, (root, needle)
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(FileNotFoundError, match="lacks img_align_celeba"):
        locate_celeba(tmp_path)


def test_malformed_partition_and_missing_images(release, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "img_align_celeba").symlink_to(release / "img_align_celeba")
    (bad / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(ValueError, match="line 2") as err:
        CelebA64(bad)
    assert "img_align_celeba.zip" in str(err.value)
    (bad / "list_eval_partition.txt").write_text("000001.jpg 0\n999999.jpg 0\n")
    with pytest.raises(ValueError, match="1 of the 2 images .* missing"):
        CelebA64(bad, cache_dir=tmp_path / "cache")


def test_wrong_image_size_is_reported(tmp_path):
    root = tmp_path / "wild"
    (root / "img_align_celeba").mkdir(parents=True)
    Image.new("RGB", (100, 120)).save(root / "img_align_celeba" / "000001.jpg")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(ValueError, match="178 x 218"):
        CelebA64(root)


def test_partition_counts(release):
    parts = read_partition(release / "list_eval_partition.txt")
    assert [len(parts[s]) for s in ("train", "valid", "test")] == [N_TRAIN, N_VALID, N_TEST]


@pytest.mark.parametrize("crop, box", [("ddim", (25, 57, 153, 185)), ("center140", (19, 39, 159, 179)),
                                       ("center178", (0, 20, 178, 198))])
def test_crop_geometry(crop, box):
    out = preprocess(_coded_image(1), crop, 64).astype(float)
    left, upper, right, lower = box
    scale = (right - left) / 64  # source pixels per output pixel
    # output pixel k covers source [left + k scale, left + (k + 1) scale): its mean coordinate is the centre
    for k in (0, 31, 63):
        col, row = left + (k + 0.5) * scale - 0.5, upper + (k + 0.5) * scale - 0.5
        assert out[32, k, 0] == pytest.approx(col, abs=2.0), (crop, k)
        assert out[k, 32, 1] == pytest.approx(row, abs=2.0), (crop, k)
    with pytest.raises(ValueError, match="crop must be one of"):
        preprocess(_coded_image(1), "center100", 64)


def test_cache_built_once_and_reused(release, tmp_path, monkeypatch):
    data = CelebA64(release, split="valid", size=16, cache_dir=tmp_path, progress=False)
    assert data.images.shape == (N_VALID, 16, 16, 3) and data.images.dtype == np.uint8
    assert data.cache_path.is_file() and json.loads(data.cache_path.with_suffix(".json").read_text())["n"] == N_VALID
    blue = data.images[:, 8, 8, 2].astype(int)  # B encodes the image index: the split is images 201..250 in order
    np.testing.assert_allclose(blue, [(7 * i) % 256 for i in range(N_TRAIN + 1, N_TRAIN + N_VALID + 1)], atol=3)

    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(C, "_Reader", boom)
    again = CelebA64(release, split="valid", size=16, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.images, data.images)


def test_zip_and_folder_give_the_same_images(release, zipped, tmp_path):
    a = CelebA64(release, split="test", size=16, cache_dir=tmp_path / "a", progress=False)
    b = CelebA64(zipped, split="test", size=16, cache_dir=tmp_path / "b", progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    assert len(CelebA64(zipped, split="all", size=16, cache_dir=tmp_path / "b", progress=False)) == N


def test_command_line_prepare_train_resume_sample_eval(release, tmp_path, capsys):
    from fmlab.cli import main

    assert main(["prepare", "celeba", "--data-root", str(release), "--image-size", "16"]) == 0
    assert (release / "fmlab_cache" / "celeba_train_ddim_16.npy").is_file()
    out = tmp_path / "run"
    common = ["--data-root", str(release), "--preset", "tiny", "--image-size", "16", "--batch-size", "4",
              "--threads", "1", "--log-every", "1", "--sample-every", "2", "--sample-n", "4", "--sample-steps", "2",
              "--no-progress"]
    assert main(["train", "--config", "celeba64", "--steps", "2", "--out", str(out), *common]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == "celeba" and config["steps"] == 2 and config["lr"] == 2e-4  # celeba64's lr kept
    assert (out / "samples" / "step_0000002.png").is_file()
    assert main(["train", "--config", "celeba64", "--steps", "2", "--out", str(out), *common]) == 2  # no overwrite
    assert main(["train", "--out", str(out), "--resume", "--threads", "1", "--no-progress"]) == 0
    assert main(["sample", str(out), "--n", "4", "--steps", "2", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size == (2 * 17 + 1, 2 * 17 + 1)  # 2 x 2 images of 16 px, 1 px gaps
    assert main(["sample", str(out), "--n", "3", "--steps", "1", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 16, 16, 3)
    capsys.readouterr()
    assert main(["eval", str(out), "--n", "8", "--steps", "1,2"]) == 0
    text = capsys.readouterr().out
    assert "SWD-LapPyr" in text and "steps=2" in text and "FID=" not in text


def test_command_line_missing_celeba_exits_2(tmp_path, capsys, monkeypatch):
    from fmlab.cli import main

    monkeypatch.delenv(C.CELEBA_ENV, raising=False)
    code = main(["train", "--config", "celeba64", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "img_align_celeba.zip" in err and "list_eval_partition.txt" in err
    assert not (tmp_path / "r").exists()
