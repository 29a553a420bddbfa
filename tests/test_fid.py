"""FID and its weights-free proxies: the Frechet distance against closed forms, the TorchScript weights path with a
stand-in network, cached reference statistics, labels, and the proxies' ground truths (SW2 of a constant shift,
exact Laplacian-pyramid reconstruction)."""

import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fmlab import fid
from fmlab.data.faces import make_faces

torch.set_num_threads(1)


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_commuting_covariances_and_symmetry():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.2, 3, 6), rng.uniform(0.2, 3, 6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # same eigenvectors: (S1 S2)^(1/2) = Q sqrt(ab) Q^T
    mu = rng.normal(size=6)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-7)
    assert fid.frechet_distance(mu, s2, mu, s1) == pytest.approx(expected, rel=1e-7)
    assert fid.frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-9)
    eye = np.eye(3)  # rank-deficient covariances are fine
    assert fid.frechet_distance(np.zeros(3), eye * [1, 0, 0], np.zeros(3), eye * [0, 4, 0]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="shapes must match"):
        fid.frechet_distance(mu, s1, mu[:3], s2)


class _StandIn(torch.nn.Module):
    """A TorchScript network with NVIDIA's detector signature: uint8 [N, 3, H, W] -> features (64 here, 2048 in
    Inception, where each FID costs two 2048 x 2048 eigendecompositions)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3 * 4 * 4, 64)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(x.float() / 255.0, 4)
        return torch.tanh(self.proj(small.flatten(1)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "standin.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_StandIn()).save(str(path))
    return path


def test_torchscript_weights_give_an_extractor_and_cached_stats(weights, tmp_path):
    ext = fid.inception_extractor(weights, device="cpu")
    images = make_faces(40, 16, seed=0)
    feats = ext(images, batch_size=16)
    assert feats.shape == (40, 64) and feats.dtype == np.float64
    ref = fid.reference_stats(ext, images, "faces16", cache_dir=tmp_path)
    cached = list(tmp_path.glob("fid_ref_*.npz"))
    assert len(cached) == 1
    again = fid.reference_stats(ext, images[:2] * 0, "faces16-other-name", cache_dir=tmp_path)  # another key
    assert len(list(tmp_path.glob("fid_ref_*.npz"))) == 2 and not np.allclose(again["mu"], ref["mu"])
    reread = fid.reference_stats(ext, images, "faces16", cache_dir=tmp_path)
    np.testing.assert_array_equal(reread["sigma"], ref["sigma"])
    assert fid.fid_from_stats(ext, images, ref) == pytest.approx(0.0, abs=1e-3)  # sqrtm round-off
    other = make_faces(40, 16, seed=7)
    noise = np.random.default_rng(0).integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    assert fid.fid_from_stats(ext, noise, ref) > fid.fid_from_stats(ext, other, ref)


def test_missing_or_wrong_weights_say_what_to_get(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        fid.inception_extractor(tmp_path / "nothing.pt", device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a network")
    with pytest.raises(ValueError, match="TorchScript"):
        fid.inception_extractor(bad, device="cpu")
    monkeypatch.setenv(fid.INCEPTION_ENV, str(tmp_path / "nothing.pt"))
    with pytest.raises(FileNotFoundError):
        fid.inception_extractor(device="cpu")


def test_labels_never_call_a_proxy_or_a_small_sample_fid():
    assert fid.fid_label(50_000) == "FID"
    assert fid.fid_label(5_000) == "FID@5000 (monitoring)"
    faces = make_faces(24, 16, seed=0)
    names = [s.name for s in fid.image_scores(faces[:12], faces[12:])]
    assert names == ["SWD-LapPyr", "SWD-pixels"]


def test_pixel_swd_of_a_constant_shift_is_the_shift():
    rng = np.random.default_rng(0)
    x = rng.integers(50, 200, (64, 8, 8, 3), dtype=np.uint8)
    shift = 20
    # every projection of a shift by c 1 moves the 1D sample by c <theta, 1>; E <theta, 1>^2 = |1|^2 / D = 1
    value = fid.swd_pixels(x, x + shift, n_projections=2048, seed=0)
    assert value == pytest.approx(shift / 127.5, rel=0.08)
    assert fid.swd_pixels(x, x) == pytest.approx(0.0, abs=1e-9)


def test_laplacian_pyramid_reconstructs_exactly():
    x = torch.rand(2, 3, 32, 32)
    levels = fid.laplacian_pyramid(x, min_size=8)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    rebuilt = levels[-1]
    for band in reversed(levels[:-1]):  # G_i = L_i + up(G_(i+1))
        rebuilt = band + fid._blur(F.interpolate(rebuilt, scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(rebuilt, x, atol=1e-6, rtol=0)


def test_laplacian_swd_orders_distributions():
    a, b = make_faces(64, 32, seed=0), make_faces(64, 32, seed=1)
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    same = fid.swd_laplacian(a, a)
    assert same["mean"] == pytest.approx(0.0, abs=1e-6)
    close, far = fid.swd_laplacian(a, b), fid.swd_laplacian(a, noise)
    assert set(close) == {"32px", "16px", "mean"}
    assert far["mean"] > 2 * close["mean"] > 0
    with pytest.raises(ValueError, match="uint8"):
        fid.swd_laplacian(a.astype(np.float32), b)
