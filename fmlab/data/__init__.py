"""Data for the labs: seeded 2D toy sets and closed-form Gaussian / Gaussian-mixture ground truth."""

from fmlab.data.gaussian import GMM_2D, EmpiricalDistribution, Gaussian, GaussianMixture, gmm_2d, worked_example_1d
from fmlab.data.sources import DATA_NAMES, data_sampler
from fmlab.data.toy import TOY_DATASETS, sample_toy

__all__ = [
    "TOY_DATASETS", "sample_toy", "DATA_NAMES", "data_sampler",
    "GaussianMixture", "Gaussian", "EmpiricalDistribution", "gmm_2d", "GMM_2D", "worked_example_1d",
]
