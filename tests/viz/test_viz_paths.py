"""fmlab.viz.paths: the figures of lab 01 show the closed-form paths and respond to their parameters."""

import math

import numpy as np
import pytest
import torch

from fmlab.data import gmm_2d
from fmlab.viz import paths as P


def _trace(fig, name):
    return next(tr for tr in fig.data if tr.name == name)


def test_conditional_path_samples_have_the_conditional_moments():
    t, x1 = 0.3, (2.0, 1.0)
    fig = P.render_conditional_path(t=t, x1=x1, n=4000)
    pts = np.stack([_trace(fig, "x_t ~ p_t(x | x1)").x, _trace(fig, "x_t ~ p_t(x | x1)").y], axis=1)
    assert np.allclose(pts.mean(0), [t * x1[0], t * x1[1]], atol=0.05)  # E = t x1
    assert np.allclose(pts.std(0), 1 - t, rtol=0.05)  # std = 1 - t
    assert "t = 0.30" in fig.layout.title.text


def test_conditional_path_follows_the_schedule():
    a, s = (float(v) for v in P.schedule_values("cosine", 0.4))
    fig = P.render_conditional_path(t=0.4, x1=(3.0, 0.0), schedule="cosine")
    circle = _trace(fig, "1 and 2 sigma_t circles")
    assert np.nanmax(circle.x) == pytest.approx(3 * a + s, abs=1e-9)  # centre alpha x1, radius sigma
    assert math.isclose(a**2 + s**2, 1.0)  # the cosine schedule is variance preserving


def test_marginal_path_density_is_the_mixture_marginal_and_moves_with_t():
    fig = P.render_marginal_path(t=0.6, mixture="two_modes", res=41)
    contour = fig.data[0]
    z = np.asarray(contour.z)
    pts = torch.tensor([[contour.x[30], contour.y[20]]], dtype=torch.float64)
    expect = gmm_2d("two_modes").marginal_log_prob(pts, 0.6).exp().item()
    assert z[20, 30] == pytest.approx(expect, rel=1e-9)  # rows are y, columns x
    dx = (contour.x[1] - contour.x[0]) ** 2
    assert z.sum() * dx == pytest.approx(1.0, abs=0.02)  # a density
    other = P.render_marginal_path(t=0.2, mixture="two_modes", res=41)
    assert not np.allclose(np.asarray(other.data[0].z), z)


def test_render_paths_title_and_data_change_with_controls():
    a = P.render_paths(t=0.2)
    b = P.render_paths(t=0.8, schedule="vp")
    assert a.layout.title.text != b.layout.title.text and "VP" in b.layout.title.text
    xa, xb = _trace(a, "x_t ~ p_t(x)").x, _trace(b, "x_t ~ p_t(x)").x
    assert not np.allclose(xa, xb)
    with pytest.raises(ValueError, match="t must lie"):
        P.render_paths(t=1.5)
    with pytest.raises(ValueError, match="schedule"):
        P.render_paths(schedule="sigmoid")
    with pytest.raises(ValueError, match="mixture"):
        P.render_paths(mixture="moons")


def test_marginal_samples_at_t1_are_data_and_at_t0_noise():
    one = P.render_paths(t=1.0)
    zero = P.render_paths(t=0.0)
    assert np.allclose(_trace(one, "x_t ~ p_t(x)").x, _trace(one, "data x1 (t = 1)").x)
    assert not np.allclose(_trace(zero, "x_t ~ p_t(x)").x, _trace(zero, "data x1 (t = 1)").x)


def test_schedules_figure_marks_alpha_and_sigma_at_t():
    fig = P.render_schedules(t=0.25, schedule="linear")
    marker = _trace(fig, "t = 0.25")
    assert list(marker.y) == pytest.approx([0.25, 0.75])
    vp = P.render_schedules(t=0.25, schedule="vp")
    assert list(_trace(vp, "t = 0.25").y) != list(marker.y)
    assert "VP" in vp.layout.title.text


def test_worked_example_density_and_check_text():
    fig = P.render_worked_example(t=0.5)
    curve = _trace(fig, "p_t(x) from fmlab")
    x, y = np.asarray(curve.x), np.asarray(curve.y)
    i = int(np.argmin(np.abs(x - 1.5)))
    assert y[i] == pytest.approx(0.5 / math.sqrt(2 * math.pi * 0.25), rel=1e-3)  # peak of 0.5 N(1.5, 0.25)
    text = P.worked_example_check(0.5)
    assert "0.5 N(-1.50, 0.2500) + 0.5 N(+1.50, 0.2500)" in text and "False" not in text
    with pytest.raises(ValueError, match="0.97"):
        P.render_worked_example(t=0.99)


def test_widgets_redraw():
    view = P.paths_widget(n=100)
    before = view.figure.layout.title.text
    view.controls["t"].value = 0.9
    assert view.figure.layout.title.text != before and view.status.value == ""
    sched = P.schedules_widget()
    sched.controls["schedule"].value = "cosine"
    assert "cosine" in sched.figure.layout.title.text
    worked = P.worked_example_widget(n=500)
    worked.controls["t"].value = 0.2
    assert "t = 0.20" in worked.figure.layout.title.text
