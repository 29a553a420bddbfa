"""fmlab.viz.fields: conditional vs marginal fields, posterior colours, and the loss-gap demonstration."""

import math

import numpy as np
import pytest
import torch

from fmlab.data import EmpiricalDistribution, worked_example_1d
from fmlab.viz import fields as F


def _trace(fig, name):
    return next(tr for tr in fig.data if tr.name == name)


def test_conditional_velocity_reaches_x1_at_t1():
    x, x1 = torch.tensor([[0.0, 0.0], [1.0, -1.0]]), torch.tensor([2.0, 1.0])
    u = F.conditional_velocity(x, x1, 0.5)
    assert torch.allclose(u, torch.tensor([[4.0, 2.0], [2.0, 4.0]]))
    assert torch.allclose(x + 0.5 * u, x1.expand(2, 2))  # moving at u for the remaining time 1 - t lands on x1
    with pytest.raises(ValueError, match="t must lie"):
        F.conditional_velocity(x, x1, 1.0)


def test_marginal_field_is_the_posterior_average_of_conditional_fields():
    data = F.field_data("three_points")
    assert isinstance(data, EmpiricalDistribution)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    t = 0.4
    pi = data.posterior_weights(x, t)  # [B, K]
    u_k = torch.stack([F.conditional_velocity(x, data.means[k], t) for k in range(3)], dim=1)  # [B, K, 2]
    assert torch.allclose(data.velocity(x, t), (pi[..., None] * u_k).sum(1), atol=1e-10)


def test_quiver_caps_lengths_and_keeps_directions():
    pts = torch.zeros(2, 2, dtype=torch.float64)
    vec = torch.tensor([[3.0, 0.0], [0.0, 0.2]], dtype=torch.float64)
    xs, ys = F.quiver_xy(pts, vec, max_len=1.0)
    shafts = np.stack([xs[:6], ys[:6]], axis=1)  # first block: shafts (start, tip, NaN) per arrow
    assert shafts[1] == pytest.approx([1.0, 0.0]) and shafts[4] == pytest.approx([0.0, 0.2])
    assert len(xs) == 3 * 3 * 2 and np.isnan(xs[2])


def test_posterior_colors_blend_component_colours():
    pure = F.posterior_colors(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), lighten=0.0)
    first = [int(F.COMPONENT_COLORS[0][i:i + 2], 16) for i in (1, 3, 5)]
    assert pure[0].tolist() == pytest.approx(first)
    half = F.posterior_colors(torch.tensor([[0.5, 0.5]]), lighten=0.0)
    assert half[0].tolist() == pytest.approx(((pure[0] + pure[1]) / 2).tolist())


def test_render_fields_arrows_match_closed_form_and_respond_to_t():
    fig = F.render_fields(t=0.3, data="two_modes", point=1, res=5)
    marg = _trace(fig, "v*(x, t) (closed form)")
    start = torch.tensor([[marg.x[0], marg.y[0]]], dtype=torch.float64)
    tip = torch.tensor([[marg.x[1], marg.y[1]]], dtype=torch.float64)
    u = F.field_data("two_modes").velocity(start, 0.3)
    arrow = tip - start
    assert torch.allclose(arrow / arrow.norm(), u / u.norm(), atol=1e-9)  # same direction (length may be capped)
    assert _trace(fig, "data point x1").x[0] == pytest.approx(3.0)  # component 1 of two_modes is at (3, 0)
    other = F.render_fields(t=0.7, data="two_modes", point=1, res=5)
    assert other.layout.title.text != fig.layout.title.text
    assert not np.allclose(_trace(other, "v*(x, t) (closed form)").x, marg.x, equal_nan=True)
    assert F.render_fields(t=0.3, data="two_modes", point=3, res=5).data[2].x[0] == pytest.approx(3.0)  # 3 mod 2
    with pytest.raises(ValueError, match="t must lie"):
        F.render_fields(t=0.95)
    with pytest.raises(ValueError, match="data must be one of"):
        F.render_fields(data="moons")


def test_marginalisation_1d_marginal_between_conditionals():
    fig = F.render_marginalisation_1d(t=0.5)
    x = np.asarray(fig.data[2].x)
    marg = np.asarray(fig.data[2].y)
    assert marg == pytest.approx(2 * (3 * np.tanh(6 * x) - x), abs=1e-9)  # textbook closed form at t = 0.5
    lo, hi = np.minimum(fig.data[0].y, fig.data[1].y), np.maximum(fig.data[0].y, fig.data[1].y)
    assert np.all(marg >= lo - 1e-9) and np.all(marg <= hi + 1e-9)


def test_widgets_redraw():
    view = F.fields_widget()
    view.controls["t"].value = 0.8
    assert "t = 0.80" in view.figure.layout.title.text and view.status.value == ""
    view.controls["data"].value = "8modes"
    assert "8modes" in view.figure.layout.title.text
    one = F.marginalisation_1d_widget()
    one.controls["t"].value = 0.1
    assert "t = 0.10" in one.figure.layout.title.text


def test_loss_gap_is_model_independent_and_equals_the_posterior_constant():
    torch.manual_seed(0)
    demo = F.marginalisation_demo("two_modes", n=20_000, seed=1)
    gaps = [g.gap for name, g in demo.gaps.items()]
    c = demo.constant_posterior
    assert max(gaps) - min(gaps) < 0.03 * c
    assert demo.constant_mc == pytest.approx(c, rel=0.05)
    cosines = [g.grad_cosine for g in demo.gaps.values() if not math.isnan(g.grad_cosine)]
    assert len(cosines) == 2 and min(cosines) > 0.99
    exact = demo.gaps["exact field u_t (no parameters)"]
    assert exact.marginal == 0.0 and exact.conditional == pytest.approx(demo.constant_mc)
    assert "grad cosine" in demo.table()
    assert len(F.render_loss_gap(demo).data) == 3


def test_loss_gap_can_fail_for_a_wrong_target():
    """A sanity check that the gap test has teeth: against a *wrong* 'marginal' field the gap depends on the model."""
    wrong = worked_example_1d()
    data = F.field_data("two_modes")

    class Shifted:  # velocity of the wrong data set, lifted to 2D
        def velocity(self, x, t):
            return torch.cat([wrong.velocity(x[:, :1], t), torch.zeros_like(x[:, 1:])], 1)

        def sample(self, n, generator=None):
            return data.sample(n, generator=generator)

        def posterior_variance(self, x, t):
            return data.posterior_variance(x, t)

    demo = F.marginalisation_demo(Shifted(), n=5_000, include_exact=False)
    gaps = [g.gap for g in demo.gaps.values()]
    assert max(gaps) - min(gaps) > 0.03 * abs(sum(gaps) / 2) or min(g.grad_cosine for g in demo.gaps.values()) < 0.99


def test_fields_widget_point_choices_follow_the_data():
    view = F.fields_widget("three_points")
    assert list(view.controls["point"].options) == [0, 1, 2]
    view.controls["point"].value = 2
    view.controls["data"].value = "8modes"
    assert list(view.controls["point"].options) == list(range(8)) and view.status.value == ""
    view.controls["point"].value = 5
    assert "component 5" in view.figure.layout.annotations[0].text


def test_conditional_and_marginal_particles_start_together_and_reach_the_data():
    from fmlab.viz.fields import conditional_and_marginal_paths, field_data

    paths = conditional_and_marginal_paths("three_points", n=300, steps=50, seed=0)
    cond, marg = paths.values()
    assert cond.shape == marg.shape == (51, 300, 2)
    assert torch.equal(cond[0], marg[0])  # the same noise
    atoms = field_data("three_points").sample(3000, generator=torch.Generator().manual_seed(0)).double().unique(dim=0)
    for end in (cond[-1], marg[-1]):
        nearest = torch.cdist(end, atoms).min(1)
        assert nearest.values.max() < 0.05  # every particle ends on a data point
        share = torch.bincount(nearest.indices, minlength=3) / 300
        assert (share - 1 / 3).abs().max() < 0.1  # in the data's proportions (1/3 each; 300 draws: sd 0.027)
    middle = torch.linspace(0, 1, 51, dtype=torch.float64)[25]
    np.testing.assert_allclose(cond[25], (1 - middle) * cond[0] + middle * cond[-1], atol=1e-12)  # straight lines
    with pytest.raises(ValueError, match="steps must be an integer"):
        conditional_and_marginal_paths(steps=0)
