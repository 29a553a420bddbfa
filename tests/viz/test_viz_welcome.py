"""fmlab.viz.welcome: the first slider and the tour's figures."""

import numpy as np
import pytest
import torch

from fmlab.models import build_model
from fmlab.viz import welcome as Wl


def test_interpolation_runs_from_noise_to_data():
    start, end = Wl.render_interpolation(t=0.0, n=50), Wl.render_interpolation(t=1.0, n=50)
    xt0, xt1 = start.data[3], end.data[3]
    assert np.allclose(xt0.x, start.data[1].x) and np.allclose(xt1.x, end.data[2].x)  # x_0 = noise, x_1 = data
    mid = Wl.render_interpolation(t=0.25, n=50).data[3]
    assert np.allclose(mid.x, 0.75 * np.asarray(xt0.x) + 0.25 * np.asarray(xt1.x), atol=1e-6)
    assert "t = 0.25" in Wl.render_interpolation(t=0.25, n=50).layout.title.text
    with pytest.raises(ValueError, match="t must lie"):
        Wl.render_interpolation(t=-0.1)
    with pytest.raises(ValueError, match="name must be one of"):
        Wl.toy_points("nope")


def test_sample_model_integrates_the_field():
    class Constant(torch.nn.Module):  # v = (1, -2): after t from 0 to 1, x moves by (1, -2) whatever the steps
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t):
            return torch.tensor([1.0, -2.0]).expand_as(x) + 0 * self.w

    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(3))
    out = Wl.sample_model(Constant(), n=10, steps=7, seed=3)
    assert torch.allclose(out, x0 + torch.tensor([1.0, -2.0]), atol=1e-5)
    with pytest.raises(ValueError, match="steps"):
        Wl.sample_model(Constant(), steps=0)


def test_tour_and_steps_widget():
    torch.manual_seed(0)
    model = build_model(hidden=8, depth=1).eval()
    data = Wl.toy_points("moons", 100, seed=1)
    samples = Wl.sample_model(model, n=100, steps=2)
    log = [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.5}]
    fig = Wl.render_tour(samples, data, log, w2=0.5)
    assert "20 steps" in fig.layout.title.text and "0.500" in fig.layout.title.text
    assert list(fig.data[0].y) == [2.0, 1.5]
    view = Wl.sampling_steps_widget(model, data, n=50, max_steps=5)
    first = np.asarray(view.figure.data[1].x).copy()
    view.controls["steps"].value = 4
    assert "4 Euler steps" in view.figure.layout.title.text
    assert not np.allclose(first, view.figure.data[1].x)
