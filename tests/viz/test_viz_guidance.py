"""The guidance lab's figures and measurements (fmlab.viz.guidance): every control changes the figure, bad input is
named, and the lab's claims about the exact guided ODE and the tilted density hold on the closed-form mixture."""

import pytest
import torch
from torch import nn

from fmlab.data.labelled import labelled_2d
from fmlab.viz import guidance as G


class ExactModel(nn.Module):
    """The labelled mixture's exact velocity behind the model contract model(x, t[, y])."""

    def __init__(self):
        super().__init__()
        self.mixture = labelled_2d(G.DATA)
        self.n_classes = self.mixture.n_classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        return self.mixture.velocity(x.double(), t, y).to(x.dtype)


@pytest.fixture(scope="module")
def study():
    return G.GuidanceStudy(ExactModel(), n=300, steps=20, exact_steps=20)


def _data(fig):
    return [(tr.name, None if tr.x is None else list(tr.x)) for tr in fig.data], fig.layout.title.text


def test_every_control_changes_the_figure(study):
    base = _data(G.render_guidance(study, w=1.0, c=0, t=0.5, reference="ode"))
    for change in ({"w": 3.0}, {"c": 1}, {"t": 0.2}, {"reference": "tilted"}):
        kwargs = {"w": 1.0, "c": 0, "t": 0.5, "reference": "ode", **change}
        assert _data(G.render_guidance(study, **kwargs)) != base, change


def test_widget_has_the_four_controls(study):
    view = G.guidance_widget(study)
    assert set(view.controls) == {"w", "c", "t", "reference"}
    assert view.controls["w"].max == G.W_MAX and view.controls["w"].min == 0.0


def test_bad_input_is_named(study):
    with pytest.raises(ValueError, match="reference must be one of"):
        G.render_guidance(study, reference="exact")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\)"):
        G.render_guidance(study, t=1.0)
    with pytest.raises(ValueError, match=r"w must lie in \[0, 8.0\]"):
        study.model_samples(0, 9.0)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        G.GuidanceStudy(ExactModel(), n=1)


def test_exact_model_samples_agree_with_the_exact_guided_ode(study):
    """A perfect network's guided samples are the exact guided ODE's (Euler 20 vs RK4 20 steps, same noise)."""
    for w in (1.0, 4.0):
        gap = (study.model_samples(0, w) - study.exact_ode(0, w)).norm(dim=1).median()
        assert gap < 0.1, (w, gap)


def test_lab_claims_about_the_guided_ode_and_the_tilted_density(study):
    """Section 3 and 4 of the lab: at w = 1 the class's four modes only; at w = 8 the boundary modes 0 and 3 are
    (nearly) empty, the samples moved outward and tightened; the tilted density stays near p(x | c) while the guided
    ODE moves away from it."""
    table = G.mode_table(study, c=0, ws=(1.0, 8.0))
    rows = [list(map(float, line.replace("|", " ").split())) for line in table.splitlines()[2:]]
    w1, w8 = rows
    assert w1[0] == 1.0 and sum(w1[5:9]) == 0.0 and min(w1[1:5]) > 0.15
    assert w8[1] < 0.05 and w8[4] < 0.05 and w8[2] + w8[3] > 0.9
    assert w8[9] > w1[9] + 0.4 and w8[10] < 0.8 * w1[10]
    assert study.w2("tilted", 0, 8.0) < 1.5 * study.floor(0) < study.w2("ode", 0, 8.0)


def test_combined_w2_with_fmlab_rule_is_the_same(study):
    from fmlab.guidance import cfg_combine

    mine, ref = G.combined_w2(study, cfg_combine, c=1, w=2.0)
    assert mine == pytest.approx(ref, rel=1e-6)
