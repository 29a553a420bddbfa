import math

import pytest
import torch

from fmlab.data.toy import EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD, TOY_DATASETS, sample_toy


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_shapes_dtypes_and_range(name):
    x, y = sample_toy(name, 2001, _gen(), return_labels=True)
    assert x.shape == (2001, 2) and x.dtype == torch.float32
    assert y.shape == (2001,) and y.dtype == torch.long
    assert torch.isfinite(x).all()
    bound = 2.5 if name == "moons" else 4.5  # moons is the unscaled textbook set, the rest fill ~[-4, 4]^2
    assert x.abs().max() < bound
    assert x.std(0).min() > 0.3  # not collapsed


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_same_seed_same_samples(name):
    a = sample_toy(name, 100, _gen(3))
    b = sample_toy(name, 100, _gen(3))
    c = sample_toy(name, 100, _gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert sample_toy(name, 100).shape == (100, 2)  # global RNG when no generator is given


def test_moons_geometry():
    x, y = sample_toy("moons", 4001, _gen(), return_labels=True)
    assert int((y == 0).sum()) == 2000 and int((y == 1).sum()) == 2001  # sklearn split: n // 2 outer
    outer, inner = x[y == 0].double(), x[y == 1].double()
    # outer arc: unit circle about (0, 0); inner arc: unit circle about (1, 0.5); residual = noise std 0.05
    r_out = outer.norm(dim=1)
    r_in = (inner - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1)
    for r in (r_out, r_in):
        assert abs(r.mean() - 1) < 0.01 and abs(r.std() - 0.05) < 0.01
    # th in [0, pi]: the outer arc is the upper half, the inner arc the lower half of its circle
    assert (outer[:, 1] > -0.2).all() and (inner[:, 1] < 0.7).all()
    assert abs(outer[:, 1].mean() - 2 / math.pi) < 0.03  # E[sin th] = 2 / pi
    assert abs(outer[:, 0].mean()) < 0.05 and abs(inner[:, 0].mean() - 1) < 0.05  # E[cos th] = 0


def test_eight_gaussians_modes():
    x, k = sample_toy("8gaussians", 8000, _gen(), return_labels=True)
    angle = 2 * math.pi * k.double() / 8
    centre = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    resid = x.double() - centre
    assert resid.mean(0).abs().max() < 0.02
    assert (resid.std(0) - EIGHT_GAUSSIANS_STD).abs().max() < 0.02
    assert k.bincount(minlength=8).min() > 850


def test_checkerboard_dark_squares_only():
    x = sample_toy("checkerboard", 4000, _gen()).double()
    cell = torch.floor((x + 4) / 2).long()  # 4 x 4 board of side-2 squares
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    assert cell.min() == 0 and cell.max() == 3
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16)
    assert (counts > 0).sum() == 8


def test_circles_and_spirals_labels():
    x, y = sample_toy("circles", 2000, _gen(), return_labels=True)
    r = x.double().norm(dim=1)
    assert abs(r[y == 0].mean() - 3.0) < 0.02 and abs(r[y == 1].mean() - 1.5) < 0.02
    x, arm = sample_toy("spirals", 4000, _gen(), return_labels=True)
    assert set(arm.tolist()) == {0, 1}
    # arm 1 is arm 0 rotated by pi: the arms' means are opposite
    assert (x[arm == 0].mean(0) + x[arm == 1].mean(0)).abs().max() < 0.15


def test_unlabelled_sets_have_zero_labels():
    for name in ("checkerboard", "swissroll", "scurve"):
        _, y = sample_toy(name, 50, _gen(), return_labels=True)
        assert (y == 0).all()


def test_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        sample_toy("mooons", 10)
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            sample_toy("moons", n)
    assert sample_toy("moons", 1).shape == (1, 2)
