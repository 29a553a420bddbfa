"""fmlab.viz.training (lab 03 figures) and fmlab.exercises.training, against closed-form ground truth."""

import math

import plotly.graph_objects as go
import pytest
import torch

from fmlab.data import Gaussian, gmm_2d
from fmlab.exercises import training as ex
from fmlab.models import build_model
from fmlab.train import TrainConfig
from fmlab.viz import training as T

torch.set_num_threads(1)
GMM = gmm_2d("8modes")


def exact(x, t):
    return GMM.velocity(x, t)


def test_grid_and_blend():
    g = T.grid(2.0, 3)
    assert g.shape == (9, 2) and g[0].tolist() == [-2.0, -2.0] and g[1].tolist() == [0.0, -2.0]
    assert T.blend("#000000", "#ffffff", 0.5) == "#808080" and T.blend("#0072B2", "#009E73", 0.0) == "#0072b2"
    with pytest.raises(ValueError, match="n must"):
        T.grid(1.0, 1)
    with pytest.raises(ValueError, match="extent"):
        T.grid(0.0, 5)


def test_arrow_traces_point_along_the_vectors():
    p = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    shafts, heads = T.arrow_traces(p, v, 0.5, "#000000", "v")
    assert list(shafts.x[:2]) == [0.0, 0.5] and list(shafts.y[3:5]) == [1.0, 2.0]
    assert math.isnan(shafts.x[2]) and math.isnan(shafts.y[5])  # a gap between arrows
    assert list(heads.marker.angle[:2]) == pytest.approx([90.0, 0.0])  # right: 90 clockwise from up; up: 0
    assert heads.marker.size[2] == 0  # no arrow head on a zero vector


def test_loss_floor_of_a_standard_gaussian_is_pi_over_2():
    # For x1 ~ N(0, I): Var(x1 - x0 | x_t) per coordinate = 2 - (2t - 1)^2 / (t^2 + (1 - t)^2); its integral is pi/2.
    assert T.loss_floor(Gaussian(torch.zeros(2), std=1.0), n=20000) == pytest.approx(math.pi / 2, rel=0.03)


def test_loss_splits_into_floor_plus_field_error():
    torch.manual_seed(0)
    net = build_model(dim=2, hidden=16, depth=2)
    assert T.field_error(exact, GMM, n=500) < 1e-12  # the optimum has no field error
    x_t, t, u = T._path_batch(GMM, 20000, seed=7)
    with torch.no_grad():
        loss = float((net(x_t.float(), t.float()).double() - u).pow(2).mean())
    floor, err = T.loss_floor(GMM, n=20000, seed=7), T.field_error(net, GMM, n=20000, seed=7)
    assert err > 0.5 and loss == pytest.approx(floor + err, rel=0.02)  # L = L* + E||v - v*||^2 / d
    parts = T.loss_decomposition(net, GMM, n=20000, seed=7)
    assert parts == pytest.approx({"loss": loss, "floor": floor, "field_error": err}, rel=1e-6)


def test_render_loss_curve_draws_loss_error_and_floor():
    log = [{"step": 10, "loss": 3.0, "field_error": 1.0}, {"step": 20, "loss": 2.5, "field_error": 0.4}]
    fig = T.render_loss_curve(log, floor=2.2, total_steps=100)
    assert list(fig.data[0].y) == [3.0, 2.5] and list(fig.data[1].y) == [1.0, 0.4]
    assert list(fig.data[2].y) == [2.2, 2.2] and fig.layout.yaxis.type == "log"
    assert "2.500 at step 20" in fig.layout.title.text
    assert T.render_loss_curve(log[:1]).layout.title.text != fig.layout.title.text
    assert list(fig.layout.yaxis.ticktext) == ["0.5", "1", "2", "3"]  # labelled in full, not plotly's bare digits
    widget = go.FigureWidget(T.render_loss_curve([], floor=2.2, total_steps=100))
    T._update_curve(widget, log, "live")  # the live curve relabels its axis as the loss falls
    assert list(widget.layout.yaxis.ticktext) == ["0.5", "1", "2", "3"]


def test_fit_is_cached_records_field_error_and_live_curve_updates():
    config = TrainConfig(data="8modes", steps=12, batch_size=32, hidden=16, depth=1, log_every=4, threads=1, seed=3)
    trainer = T.fit_live(config, show=False, progress=False)
    assert T.fit(config) is trainer and trainer.step == 12  # cached: equal config, same trainer
    assert [r["step"] for r in trainer.log] == [4, 8, 12] and all(r["field_error"] > 0 for r in trainer.log)
    ot = T.fit(TrainConfig(**{**config.to_dict(), "coupling": "ot"}))
    assert "field_error" not in ot.log[-1]  # the OT optimum is not the independent v*: no error drawn
    reflow = TrainConfig(**{**config.to_dict(), "loss": "reflow", "steps": 4, "log_every": 2,
                            "loss_settings": {"teacher_steps": 2}})
    student = T.fit(reflow, config)  # the teacher is the cached trainer of `config`
    assert student.step == 4 and student.settings["teacher"] is trainer.ema and T.fit(reflow, config) is student


def test_particle_animation_has_frames_slider_and_play_button():
    traj = T.particle_paths(exact, n=20, steps=10, method="euler")
    fig = T.render_particle_animation(traj.xs, traj.ts, data=GMM.sample(50), n_trails=3)
    assert len(fig.frames) == 11 and fig.frames[-1].name == "1.00"
    assert list(fig.frames[0].data[1].x) == pytest.approx(traj.xs[0, :, 0].tolist())
    assert [s.label for s in fig.layout.sliders[0].steps][:2] == ["0.00", "0.10"]
    assert fig.layout.updatemenus[0].buttons[0].method == "animate"
    assert len(T.render_particle_animation(traj.xs, traj.ts, max_frames=5).frames) == 5
    with pytest.raises(ValueError, match="xs must"):
        T.render_particle_animation(traj.xs[:, :, :1], traj.ts)


def test_field_comparison_shows_the_closed_form_and_zero_error_for_the_exact_field():
    fig = T.render_field_comparison(exact, GMM, t=0.5, n_arrows=5, n_heat=9)
    assert "t = 0.50" in fig.layout.title.text and "= 0.000" in fig.layout.title.text
    pts = T.grid(T.EXTENT, 5)
    v = GMM.velocity(pts.double(), 0.5)
    shafts = fig.data[1]  # closed-form panel: contour, shafts, heads
    tips = torch.tensor([[shafts.x[3 * i + 1], shafts.y[3 * i + 1]] for i in range(len(pts))], dtype=torch.float64)
    k = v.norm(dim=1).argmax()
    scale = float((tips - pts.double())[k].norm() / v[k].norm())
    assert scale > 0 and torch.allclose(tips - pts.double(), scale * v, atol=1e-5)  # one common scale
    heat = next(d for d in fig.data if isinstance(d, go.Heatmap))
    assert max(max(row) for row in heat.z) < 1e-5
    zero = T.render_field_comparison(lambda x, t: torch.zeros_like(x), GMM, t=0.9, n_arrows=5, n_heat=9)
    assert "t = 0.90" in zero.layout.title.text and "= 0.000" not in zero.layout.title.text
    with pytest.raises(ValueError, match="t must"):
        T.render_field_comparison(exact, GMM, t=1.5)


def test_field_comparison_widget_redraws_on_t():
    view = T.field_comparison_widget(exact, GMM, t=0.5, n_arrows=4, n_heat=5)
    before = view.figure.layout.title.text
    view.controls["t"].value = 0.25
    assert "t = 0.25" in view.figure.layout.title.text and view.figure.layout.title.text != before


def test_exercise_checkers():
    mean = (GMM_A := gmm_2d("asymmetric")).weights @ GMM_A.means
    assert ex.check_velocity_at_noise((mean - torch.tensor(ex.NOISE_X, dtype=torch.float64)).tolist(), quiet=True)
    assert not ex.check_velocity_at_noise([-1.0, -1.0], quiet=True)
    assert ex.check_where_error("where p_t has little mass", quiet=True)
    assert not ex.check_where_error("near the modes", quiet=True)
    assert not ex.check_where_error("nowhere", quiet=True)
    assert ex.check_loss_floor(T.loss_floor(GMM, n=20000, seed=5), quiet=True)
    assert not ex.check_loss_floor(2.0, quiet=True)
