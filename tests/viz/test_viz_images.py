"""Lab 13 figures and widgets: image traces decode to the pixels given, titles and data follow the controls, the crop
figure draws the documented boxes, the score figure and table follow the rows; exercise checkers; the lab plan."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from fmlab.data.celeba import CROPS
from fmlab.exercises import celeba64 as ex
from fmlab.viz import images as V


def _decode(source: str) -> np.ndarray:
    assert source.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))


def _images(n=4, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_png_source_round_trips_and_rejects_floats():
    img = _images(1)[0]
    np.testing.assert_array_equal(_decode(V.png_source(img)), img)
    with pytest.raises(ValueError, match="uint8"):
        V.png_source(img.astype(np.float32))


def test_image_grid_shows_the_images():
    imgs = _images(4, 8)
    fig = V.render_image_grid(imgs, title="four", scale=1)
    grid = _decode(fig.data[0].source)
    assert grid.shape == (2 * 9 + 1, 2 * 9 + 1, 3) and fig.layout.title.text == "four"
    np.testing.assert_array_equal(grid[1:9, 1:9], imgs[0])
    np.testing.assert_array_equal(grid[10:18, 10:18], imgs[3])
    assert _decode(V.render_image_grid(imgs).data[0].source).shape[1] == 19 * 8  # auto scale, capped at 8x
    with pytest.raises(ValueError, match="non-empty uint8"):
        V.grid_image(np.zeros((0, 8, 8, 3), np.uint8))


def test_crop_figure_draws_the_documented_boxes():
    face = V.aligned_face()
    assert face.shape == (218, 178, 3)
    fig = V.render_crops(face, "center140", size=32)
    boxes = {(s.x0 + 0.5, s.y0 + 0.5, s.x1 + 0.5, s.y1 + 0.5): s.line.color for s in fig.layout.shapes}
    assert set(boxes) == set(CROPS.values())
    assert boxes[CROPS["center140"]] == "#D55E00" and boxes[CROPS["ddim"]] != "#D55E00"
    assert "center140" in fig.layout.title.text
    with pytest.raises(ValueError, match="crop must be one of"):
        V.render_crops(face, "center100")


def test_crop_widget_redraws_on_change():
    view = V.crop_widget()
    before = view.figure.layout.title.text
    view.controls["crop"].value = "center178"
    assert view.figure.layout.title.text != before and "center178" in view.figure.layout.title.text


def _samples():
    return {"a": {1: _images(4, 8, 1), 4: _images(4, 8, 2)}, "b": {1: _images(4, 8, 3), 4: _images(4, 8, 4)}}


def test_samples_render_and_widget_follow_the_controls():
    samples = _samples()
    fig = V.render_samples(samples, "b", 4, n_show=4)
    assert "b: 4 steps" in fig.layout.title.text
    grid = _decode(fig.data[0].source)
    scale = grid.shape[1] // 19
    np.testing.assert_array_equal(grid[scale:9 * scale:scale, scale:9 * scale:scale], samples["b"][4][0])
    view = V.samples_widget(samples, n_show=4)
    first = view.figure.data[0].source
    view.controls["model"].value = "b"
    assert view.figure.data[0].source != first and view.figure.layout.title.text.startswith("b:")
    with pytest.raises(ValueError, match="steps must be one of"):
        V.render_samples(samples, "a", 2)
    overview = V.render_sample_overview(samples, n_show=4)
    assert len(overview.data) == 4


def test_step_slider_draws_missing_step_counts_on_demand():
    samples = _samples()
    calls = []

    def sample(model, steps):
        calls.append((model, steps))
        return _images(4, seed=100 + steps)

    view = V.samples_widget(samples, n_show=4, sample=sample)
    assert view.controls["steps"].max == 50 and not view.controls["steps"].continuous_update
    view.controls["steps"].value = 7
    assert calls == [("a", 7)] and view.figure.layout.title.text == "a: 7 steps"
    grid = _decode(view.figure.data[0].source)
    scale = grid.shape[1] // 19
    np.testing.assert_array_equal(grid[scale:9 * scale:scale, scale:9 * scale:scale], _images(4, seed=107)[0])
    view.controls["steps"].value = 4  # precomputed: no new sampling
    assert calls == [("a", 7)]
    with pytest.raises(ValueError, match="steps must be an integer"):
        V.render_samples(samples, "a", 0, sample=sample)


def test_path_strip_goes_from_noise_to_the_image():
    image = _images(1, size=8)[0]
    noise = np.random.default_rng(0).standard_normal(image.shape)
    frames = V.path_frames(image, noise, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(frames[2], image)  # t = 1: the data
    np.testing.assert_array_equal(frames[0], np.round((np.clip(noise, -1, 1) + 1) * 127.5).astype(np.uint8))
    x_half = 0.5 * noise + 0.5 * (image / 127.5 - 1)  # x_t = (1 - t) x0 + t x1 at t = 1/2
    np.testing.assert_array_equal(frames[1], np.round((np.clip(x_half, -1, 1) + 1) * 127.5).astype(np.uint8))
    fig = V.render_path_strip(image, 0.25)
    assert len(fig.data) == 2 and "t = 0.25" in fig.layout.annotations[0].text
    strip = _decode(fig.data[1].source)
    assert strip.shape[1] == 4 * (len(V.STRIP_TIMES) * 9 + 1)
    assert fig.layout.shapes[0].x0 == 4 * (1 + 4 + 0.25 * 8 * 9)  # the marker sits a quarter of the way along
    view = V.path_strip_widget(image)
    before = view.figure.data[0].source
    view.controls["t"].value = 0.9
    assert view.figure.data[0].source != before and view.controls["t"].continuous_update
    with pytest.raises(ValueError, match="t must lie in"):
        V.render_path_strip(image, 1.5)
    with pytest.raises(ValueError, match="image must be uint8"):
        V.path_frames(image.astype(float), noise, [0.5])


def test_training_figure_and_live_view():
    log = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    fig = V.render_training(_images(1, 8)[0], log, "run", 10)
    assert list(fig.data[1].y) == [1.0, 0.5] and fig.layout.title.text == "run"
    live = V.LiveTraining("run", 10, show=False)
    live.on_record(2, log[1])
    live.on_grid(2, V.grid_image(_images(4, 8)))
    assert "step 2 of 10" in live.widget.layout.title.text and list(live.widget.data[1].y) == [0.5]
    for step, loss in ((3, 0.3), (4, 0.2), (5, 0.12)):
        live.on_record(step, {"step": step, "loss": loss})
    assert list(live.widget.layout.yaxis2.ticktext) == ["0.2", "0.3", "0.4", "0.5"]  # the log axis labelled in full


ROWS = [{"model": "noise", "steps": 0, "name": "SWD-pixels", "value": 0.5, "n": 8},
        {"model": "m", "steps": 1, "name": "SWD-pixels", "value": 0.3, "n": 8},
        {"model": "m", "steps": 4, "name": "SWD-pixels", "value": 0.2, "n": 8}]


def test_scores_table_figure_and_text():
    assert V.scores_table(ROWS) == {"noise": {0: {"SWD-pixels": 0.5}}, "m": {1: {"SWD-pixels": 0.3},
                                                                            4: {"SWD-pixels": 0.2}}}
    fig = V.render_scores(ROWS)
    assert "not FID" in fig.layout.title.text
    baseline, model = fig.data
    assert list(baseline.y) == [0.5, 0.5] and list(model.x) == [1, 4] and list(model.y) == [0.3, 0.2]
    text = V.format_scores(ROWS)
    assert "SWD-pixels" in text and "0.3" in text and "(all steps)" in text
    with pytest.raises(ValueError, match="metric must be one of"):
        V.render_scores(ROWS, metric="FID")


def test_scores_show_the_data_floor_with_its_spread():
    rows = ROWS + [{"model": "data (held-out draws)", "steps": 0, "name": "SWD-pixels", "value": 0.1, "n": 8,
                    "spread": 0.02}]
    fig = V.render_scores(rows)
    floor = next(t for t in fig.data if t.name.startswith("data"))
    assert list(floor.y) == [0.1, 0.1]
    band = fig.layout.shapes[0]
    assert (band.y0, band.y1) == pytest.approx((0.06, 0.14))
    assert "0.1 ± 0.02 (std over draws)" in V.format_scores(rows)


def test_loss_curves():
    fig = V.render_loss_curves({"x": [{"step": 1, "loss": 2.0}], "y": [{"step": 1, "loss": 1.0}]})
    assert [t.name for t in fig.data] == ["x", "y"] and fig.layout.yaxis.type == "log"


def test_exercise_checkers(capsys):
    assert ex.check_x1_weight(0.01) and not ex.check_x1_weight(0.1)
    assert ex.check_blowup_head("x1") and not ex.check_blowup_head("eps")
    assert ex.check_planned_steps(11250) and not ex.check_planned_steps(11000)
    assert ex.check_flow_map_nfe(12) and not ex.check_flow_map_nfe(8)
    assert "correct" in capsys.readouterr().out


def test_lab_plan_config_is_consistent():
    from fmlab.images import LAB_RUNS, LabPlan

    plan = LabPlan(kind="fast", device="cpu", data="faces", data_root=None, preset="tiny", image_size=16,
                   batch_size=12, lr=3e-3, budget_s=3.0, images_per_s=50.0, steps=30, n_eval=16, n_faces=64)
    for loss in LAB_RUNS.values():
        cfg = plan.config(loss)
        assert cfg.steps == 30 and cfg.model.image_size == 16 and cfg.sample_every > 0 and cfg.loss == loss
    assert "FAST MODE" in plan.describe()
