"""Procedural faces: determinism, splits, sizes, and that they look like aligned faces (centred skin, two dark eyes,
near left-right symmetry of the average face)."""

import numpy as np
import pytest

from fmlab.data.faces import Faces, make_faces


@pytest.fixture(scope="module")
def faces():
    return make_faces(128, 32, seed=0)


def test_shape_dtype_and_determinism(faces):
    assert faces.shape == (128, 32, 32, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(make_faces(8, 32, seed=0), faces[:8])  # a prefix of a longer run
    assert not np.array_equal(make_faces(8, 32, seed=1), faces[:8])


def test_images_differ_from_each_other(faces):
    flat = faces.reshape(len(faces), -1).astype(np.int32)
    dist = np.abs(flat[:, None, :] - flat[None, :, :]).mean(-1)
    off = dist[~np.eye(len(faces), dtype=bool)]
    assert off.min() > 3.0  # no duplicates: every pair differs by > 3 grey levels on average


def test_faces_are_centred_and_aligned(faces):
    x = faces.astype(np.float64)
    centre = x[:, 13:19, 13:19].mean(axis=(1, 2))  # the cheeks / nose region
    assert (centre[:, 0] > centre[:, 2]).mean() > 0.9  # skin: more red than blue
    mean_face = x.mean(0)
    asym = np.abs(mean_face - mean_face[:, ::-1]).mean()
    assert asym < 6.0  # the average face is nearly mirror-symmetric (aligned, upright)
    eyes = mean_face[11:14, 8:24].mean()
    cheeks = mean_face[17:20, 8:24].mean()
    assert eyes < cheeks  # a darker band at eye height, as in aligned CelebA


@pytest.mark.parametrize("size", [16, 64])
def test_other_sizes_render_the_same_faces(size):
    a = make_faces(4, size, seed=0).astype(np.float64)
    b = make_faces(4, 32, seed=0).astype(np.float64)
    k = size // 16
    a16 = a.reshape(4, 16, k, 16, k, 3).mean(axis=(2, 4))  # box-downsample both to 16 x 16
    b16 = b.reshape(4, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    assert np.abs(a16 - b16).mean() < 8.0


def test_dataset_splits_and_cache():
    train, test = Faces(32, 16, split="train"), Faces(32, 16, split="test")
    assert len(train) == 32 and train.images.shape == (32, 16, 16, 3)
    assert not np.array_equal(train.images, test.images)
    assert Faces(32, 16, split="train").images is train.images  # cached per process
    assert not train.images.flags.writeable
    with pytest.raises(ValueError, match="split must be one of"):
        Faces(4, 16, split="validation")


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(size=4), dict(seed=-1), dict(n=2.5)])
def test_bad_arguments(kwargs):
    args = {"n": 2, "size": 16, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        make_faces(**args)
