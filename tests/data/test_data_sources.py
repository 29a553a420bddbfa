"""fmlab.data.sources: one sampler per 2D set name, the same points as the set's own sampler for the same seed."""

import pytest
import torch

from fmlab.data import DATA_NAMES, data_sampler, gmm_2d, sample_toy
from fmlab.data.labelled import labelled_data


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_a_toy_set_draws_what_sample_toy_draws():
    x = data_sampler("moons")(64, _gen(3))
    assert x.shape == (64, 2) and x.dtype == torch.float32
    assert torch.equal(x, sample_toy("moons", 64, generator=_gen(3)))


def test_a_mixture_draws_what_its_gmm_draws():
    assert torch.equal(data_sampler("8modes")(50, _gen(1)), gmm_2d("8modes").sample(50, generator=_gen(1)))


def test_labelled_sets_give_labels_and_check_the_class_count():
    x, y = data_sampler("moons", n_classes=2)(40, _gen(0))
    ref_x, ref_y = labelled_data("moons")[0](40, _gen(0))
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)
    with pytest.raises(ValueError, match="has 2 classes, but n_classes=3"):
        data_sampler("moons", n_classes=3)


def test_unknown_names_list_every_set():
    assert {"moons", "checkerboard", "8modes", "two_modes"} <= set(DATA_NAMES)
    with pytest.raises(ValueError, match=r"data must be one of .*moons.*two_modes"):
        data_sampler("nope")
