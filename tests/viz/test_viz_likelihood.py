"""fmlab.viz.likelihood: the continuity figure's particles follow p_t and the residual vanishes, the Hutchinson
runs are unbiased with a 1/sqrt(K) spread, and the NLL summary computes what it prints."""

import math

import numpy as np
import pytest
import torch

from fmlab.data import gmm_2d
from fmlab.viz import likelihood as V
from fmlab.viz.widgets import View


def test_continuity_residual_vanishes_and_a_wrong_flux_does_not():
    for t in (0.0, 0.35, 1.0):
        x, dp_dt, minus_dj = V.continuity_residual(t)
        assert float((dp_dt - minus_dj).abs().max()) < 1e-5 * float(dp_dt.abs().max())
    x, dp_dt, _ = V.continuity_residual(0.5)
    gmm = V.mixture_1d()
    p = gmm.marginal_log_prob(x[:, None], 0.5).exp()
    assert float((dp_dt + torch.gradient(p, spacing=(x,))[0]).abs().max()) > 0.05  # -dp/dx is not dp/dt


def test_continuity_particles_histogram_matches_the_closed_form_density():
    particles = V.ContinuityParticles(n=20_000, frames=10)
    fig = particles.render(0.6)
    bars, density = fig.data[0], fig.data[1]
    centres, heights = np.asarray(bars.x), np.asarray(bars.y)
    expect = np.interp(centres, np.asarray(density.x), np.asarray(density.y))
    assert np.abs(heights - expect).max() < 0.06
    assert "t = 0.60" in fig.layout.title.text
    assert particles.render(0.62).layout.title.text.startswith("t = 0.60")  # snapped to the stored frames


def test_continuity_widget():
    view = V.continuity_widget(n=500)
    assert isinstance(view, View)
    view.controls["t"].value = 0.8
    assert view.status.value == "" and view.figure.layout.title.text.startswith("t = 0.80")


def _runs(max_probes=32):
    gmm = gmm_2d("8modes")
    x = gmm.sample(12, generator=torch.Generator().manual_seed(0)).double()
    return V.HutchinsonRuns(lambda y, t: gmm.velocity(y, t), x, gmm.log_prob(x), max_probes=max_probes, steps=20)


def test_hutchinson_runs_are_unbiased_and_shrink_like_one_over_root_k():
    runs = _runs()
    assert (runs.exact - runs.truth).abs().max() < 1e-3
    est, se = runs.estimate(32)
    assert ((est - runs.exact).abs() < 4.5 * se + 1e-6).all()
    assert bool(torch.isnan(runs.estimate(1)[1]).all())
    assert runs.rms[-1] < runs.rms[0] / 2  # 32 probes: about 1/sqrt(32) of one probe's error
    fig = runs.render(8)
    assert "K = 8" in fig.layout.title.text
    with pytest.raises(ValueError, match="probes"):
        runs.estimate(33)


def test_hutchinson_widget():
    view = V.hutchinson_widget(_runs(8), probes=2)
    view.controls["probes"].value = 8
    assert view.status.value == "" and "K = 8" in view.figure.layout.title.text


def test_density_grid_and_comparison():
    gmm = gmm_2d("two_modes")
    logp = V.density_grid(lambda x, t: gmm.velocity(x.double(), t.double()), res=9, steps=50)
    from fmlab.viz.training import grid
    truth = gmm.log_prob(grid(n=9).double()).reshape(9, 9)
    assert (logp - truth).abs().max() < 1e-3
    fig = V.render_density_comparison(logp, truth, held_out=gmm.sample(20))
    assert len(fig.data) == 3


def test_nll_summary():
    model = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
    true = torch.tensor([-0.5, -1.5, -2.0], dtype=torch.float64)
    s = V.nll_summary(model, true, dim=2)
    assert s.nats("model")[0] == pytest.approx(2.0) and s.nats("gap")[0] == pytest.approx(2 / 3)
    assert s.bpd("true")[0] == pytest.approx(4 / 3 / (2 * math.log(2)))
    assert s.nats("gap")[1] == pytest.approx(float(torch.tensor([0.5, 0.5, 1.0]).std()) / math.sqrt(3))
    assert "bits / dim" in s.table()
    with pytest.raises(ValueError, match="shape"):
        V.nll_summary(model, true[:2], dim=2)
