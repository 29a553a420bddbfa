
import plotly.graph_objects as go
import pytest
import torch

from fmlab import experiments as E
from fmlab import labkit
from fmlab.data import gmm_2d
from fmlab.diagnostics import (
    CrossTermVariance,
    KStepDecomposition,
    kstep_decomposition,
    posterior_variance_power,
    transition_jacobians,
)
from fmlab.models import build_model
from fmlab.viz import parametrisation as P
from fmlab.viz import unrolling as U
from fmlab.viz import unrolling_runs as R
from fmlab.viz import widgets as W

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(prediction="velocity"):
    torch.manual_seed(0)
    return build_model(prediction=prediction, hidden=16, depth=2)


def _tiny(loss="cfm", steps=4, **kw):
    return E.lab_config("8gaussians", loss, train_steps=steps, log_every=2, threads=1, **kw)


# --- experiments ----------------------------------------------------------------------------------------------

def test_run_is_cached_tracks_gradients_and_variance_and_calls_back():
    labkit.clear_cache()
    seen = []
    config = _tiny()
    r = E.run(config, track_every=2, variance_every=4, variance_windows=(1, 2), variance_batches=2, eval_steps=(4,),
              n_eval=50, on_update=lambda res: seen.append(len(res.grad_steps)), progress=False)
    assert r.grad_steps == [0, 2, 4] and r.norms().shape == (3, 4)
    assert r.var_steps == [0, 4] and r.variances[-1].windows == [1, 2]
    assert set(r.w1) == {4} and r.w1[4] > 0 and r.elapsed > 0
    assert seen and seen[-1] == 3
    again = E.run(config, track_every=2, variance_every=4, variance_windows=(1, 2), variance_batches=2,
                  eval_steps=(4,), n_eval=50, on_update=lambda res: seen.append(-1), progress=False)
    assert again is r and seen[-1] != -1  # cached: no retraining, no callbacks
    with pytest.raises(ValueError, match="multiple of the config's log_every"):
        E.run(config, track_every=3, progress=False)


def test_labels_costs_and_equal_compute_configs():
    assert E.label_of(_tiny()) == "single-step FM"
    assert E.label_of(_tiny("x1_prediction", prediction="x1")) == "x1 prediction"
    assert E.label_of(E.lab_config("moons", "wtfm", coupling="ot", window=4)) == "WT-FM L=4 BPTT + OT"
    assert E.label_of(E.lab_config("moons", "anchored_consistency", window=2)) == "anchored L=2 (detached)"
    dropped = E.lab_config("moons", "wtfm", window=4, detach=True, cross_terms=False)
    assert E.label_of(dropped) == "WT-FM L=4 cross-terms dropped"
    assert R.method_color(E.label_of(dropped)) != R.method_color("WT-FM L=4 detached")
    assert R.relative_cost("wtfm", {"window": 4, "detach": True, "cross_terms": False}) == 2.5  # L calls backpropagated
    assert R.relative_cost("cfm", {}) == 1.0
    assert R.relative_cost("wtfm", {"window": 1}) == 1.0  # L = 1 is flow matching
    assert R.relative_cost("wtfm", {"window": 4, "detach": True}) == 2.5  # (3 + 12) / 6
    assert R.relative_cost("anchored_consistency", {"window": 4, "detach": True}) == 1.5  # (3 + 3 + 3) / 6
    assert R.relative_cost("anchored_consistency", {"window": 4, "detach": False}) == 2.5
    c = R.equal_time_config("moons", "wtfm", 400, window=4, steps=16)
    assert c.steps == 160 and c.loss_settings["window"] == 4
    configs = R.comparison_configs("moons", 400)
    assert len(configs) == 2 * len(R.COMPARISON) and {c.coupling for c in configs} == {"independent", "ot"}


def test_conclusion_quotes_the_numbers_it_compares():
    class Fake:
        def __init__(self, config, w1):
            self.config, self.w1 = config, {16: w1}

        @property
        def label(self):
            return E.label_of(self.config)

    # independent: FM, BPTT, detached, cross-terms dropped, anchored; then the same + OT
    w1 = (0.2, 0.3, 0.25, 0.21, 0.19, 0.1, 0.08, 0.24, 0.12, 0.25)
    results = [Fake(c, w) for c, w in zip(R.comparison_configs("moons", 400), w1, strict=True)]
    text = R.conclusion(results, 16)
    assert "full BPTT (L = 4) is not better than single-step FM" in text and "0.300 vs 0.200 (+50%)" in text
    assert "With minibatch OT: full BPTT (L = 4) beats single-step FM" in text
    assert "cross-terms dropped 0.210 vs 0.200 (+5%)" in text
    assert "Minibatch OT lowers W1 for 4 of 5 methods" in text
    noisy = R.conclusion(results, 16, noise=0.1)
    assert "cross-terms dropped 0.210 vs 0.200 (+5% within noise)" in noisy
    assert "(+50%)" in noisy and "+50% within noise" not in noisy
    assert "Minibatch OT lowers W1 for 4 of 5 methods, by more than the noise (10%) for 3 (" in noisy


# --- figures: parametrisation ---------------------------------------------------------------------------------

def test_render_grad_norms_one_panel_per_level_and_replay_cuts_the_curves():
    steps = [0, 10, 20, 30]
    curves = {"field": (steps, torch.ones(4, 4)), "x1 prediction": (steps, 10 * torch.ones(4, 4))}
    fig = P.render_grad_norms(curves, (0.1, 0.4, 0.7, 0.9))
    assert isinstance(fig, go.Figure) and len(fig.data) == 8
    assert fig.layout.annotations[3].text.startswith("t = 0.9 (near data)")
    part = P.render_grad_norms(curves, (0.1, 0.4, 0.7, 0.9), upto=15)
    assert len(part.data[0].x) == 2 and "step 10" in part.layout.title.text
    assert part.layout.title.text != fig.layout.title.text


def test_render_w1_bars_and_samples():
    fig = P.render_w1_bars({"moons": {"field": 0.1, "x1 prediction": 0.2}, "scurve": {"field": 0.3}},
                           floors={"moons": 0.05, "scurve": 0.1})
    assert [t.name for t in fig.data] == ["field", "x1 prediction", "noise floor (data vs data)"]
    assert list(fig.data[1].y) == [0.2, None]
    pts = torch.randn(20, 2)
    grid = P.render_samples({"moons": {"field": pts, "x1 prediction": pts}}, {"moons": pts},
                            {"moons": {"field": 0.1, "x1 prediction": 0.2}})
    assert "moons: x1 prediction (W1 0.200)" in [a.text for a in grid.layout.annotations]


def test_transition_profiles_match_the_diagnostic_and_the_formula_near_the_data():
    models = {"field": _model(), "x1 prediction": _model("x1")}
    prof = P.transition_profiles(models, n=16, n_times=4, euler_steps=8)
    ts, norms = prof["field"]
    assert ts.shape == (4,) and float(ts[-1]) == pytest.approx(1 - 1 / 8)
    assert torch.all((norms - 1).abs() < 0.2)  # I + dt J_v: close to 1
    fig = P.render_transition_norms(prof, 1 / 8)
    gains = {tr.legendgroup: tr.y for tr in fig.data if tr.xaxis == "x2"}
    assert gains["x1 prediction"][-1] == pytest.approx(1.0)  # dt / (1 - t) -> 1 at the last step
    assert gains["field"][-1] == pytest.approx(1 / 8)  # a field's step always moves by dt times its output
    one = transition_jacobians(models["field"], torch.zeros(3, 2), 0.0, 1 / 8, 1).spectral_norm
    assert one.shape == (1, 3)


# --- figures: unrolling -------------------------------------------------------------------------------------------

def test_window_view_starts_on_the_path_and_its_error_is_the_title():
    torch.manual_seed(0)
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    data = U.window_view_data(_model(), x0, x1, t0=0.25, window=3, dt=0.125)
    assert torch.allclose(data["true"][0], data["unrolled"][0])  # xhat_0 = x_{t0}
    assert torch.allclose(data["true"][-1], 0.375 * x0 + 0.625 * x1)  # x_{t0 + L dt}
    err = float((data["true"][-1] - data["unrolled"][-1]).pow(2).sum(1).mean())
    fig = U.render_window(data, 0.25, 3, 0.125)
    assert f"{err:.4f}" in fig.layout.title.text
    assert "model's states z_j" in [tr.name for tr in fig.data] and "terminal error E_L" in [tr.name for tr in fig.data]
    first = U.render_window(data, 0.25, 3, 0.125, k=1)  # one step unrolled: its error, not yet E_L
    err1 = float((data["true"][1] - data["unrolled"][1]).pow(2).sum(1).mean())
    assert "step 1 of 3" in first.layout.title.text and f"{err1:.4f}" in first.layout.title.text
    states = next(tr for tr in first.data if tr.name == "model's states z_j")
    assert len(states.x) == 5 * 3  # per particle: z_0, z_1 and a gap
    other = U.render_window(U.window_view_data(_model(), x0, x1, 0.25, 1, 0.125), 0.25, 1, 0.125)
    assert other.layout.title.text != fig.layout.title.text


def test_render_decomposition_shows_the_exact_split():
    b = U.window_batch_at("8gaussians", 64, 0.2)
    d = kstep_decomposition(_model(), b, 4, 16)
    fig = U.render_decomposition(d)
    heat, bars = fig.data
    mat = torch.tensor(heat.z, dtype=torch.float64)
    assert torch.allclose(torch.diagonal(mat), d.single.double())
    assert bars.y[0] + bars.y[1] == pytest.approx(bars.y[2], rel=1e-5)  # single + cross = k-step loss
    fake = KStepDecomposition(window=2, dt=0.1, terminal=torch.tensor(4.0), single=torch.tensor([1.0, 1.0]),
                              cross=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert "cross-terms are 50%" in U.render_decomposition(fake).layout.title.text


def test_render_variance_measured_and_relative_to_L2_with_the_closed_form():
    r = CrossTermVariance(windows=[1, 2, 4, 8], variance=torch.tensor([0.0, 2.0, 6.0, 18.0]), mean_norm=torch.zeros(4),
                          t0=0.25, steps=16, coupling="independent")
    vbar, closed = posterior_variance_power(gmm_2d("8modes"), 0.25, (1, 2, 4, 8), n=512)
    fig = U.render_variance({"independent": r}, ((1, 2, 4, 8), closed), step=40)
    measured, growth, closed_trace = fig.data
    assert list(measured.x) == [2, 4, 8] and list(measured.y) == [2.0, 6.0, 18.0]  # L = 1 (no cross-terms) left out
    assert list(growth.y) == [1.0, 3.0, 9.0]
    assert closed_trace.y[2] == pytest.approx(vbar**6, rel=1e-6)  # Var^8 / Var^2
    assert "training step 40" in fig.layout.title.text


def test_variant_rows_put_the_three_gradients_side_by_side():
    rows = U.variant_rows(_model(), windows=(1, 4), n=64)
    assert [(r["L"], r["variant"]) for r in rows] == [(w, v) for w in (1, 4) for v in
                                                      ("full BPTT", "states detached", "cross-terms dropped")]
    assert all(r["cosine_to_bptt"] == pytest.approx(1.0, abs=1e-6) for r in rows[:3])  # L = 1: all FM
    four = {r["variant"]: r for r in rows[3:]}
    assert four["full BPTT"]["loss"] == pytest.approx(four["states detached"]["loss"], rel=1e-6)
    assert four["states detached"]["cross_share"] > 0 and four["cross-terms dropped"]["cross_share"] == 0.0
    table = U.variant_table(rows)
    assert "cross-terms dropped" in table and len(table.splitlines()) == 2 + len(rows)


def test_call_gradients_parts_sum_to_the_loss_gradient_and_detach_trains_only_the_first_anchored_call():
    from fmlab.losses import get_loss

    model = _model()
    b = U.variant_batch("8gaussians", 32, 3, 16)
    parts = U.call_gradients(model, b, "wtfm", 3, 16, detach=True)
    value, _ = get_loss("wtfm").fn(model, b, window=3, steps=16, detach=True)
    grad = torch.cat([g.flatten() for g in torch.autograd.grad(value, list(model.parameters()))])
    assert torch.allclose(sum(parts.values()).sum(0), grad, atol=1e-6)
    proj = U.projections(parts)
    assert sum(proj.values()) == pytest.approx(float(grad.norm()), rel=1e-5)
    anchored = U.call_gradients(model, b, "anchored_consistency", 3, 16, detach=True)
    assert set(anchored) == {"anchor", "consistency"}
    assert all(float(rows[1:].abs().max()) == 0.0 for rows in anchored.values())  # later calls: no gradient
    bptt = U.call_gradients(model, b, "anchored_consistency", 3, 16, detach=False)
    assert float(bptt["consistency"][2].norm()) > 0
    with pytest.raises(ValueError, match="loss must be one of"):
        U.call_gradients(model, b, "cfm", 3, 16, detach=True)


def test_gradient_view_titles_and_compares_the_variants():
    model = _model()
    b = U.variant_batch("8gaussians", 32, 4, 16)
    fig = U.gradient_view(model, b, "wtfm", 4, 16, detach=True)
    assert "states detached" in fig.layout.title.text and "cross-terms" in fig.layout.title.text
    right = [tr for tr in fig.data if tr.xaxis == "x2"]
    assert list(right[0].x) == ["full BPTT", "states detached", "cross-terms dropped"]
    assert right[1].y[2] == 0.0  # dropped: no cross-term projection
    other = U.gradient_view(model, b, "wtfm", 4, 16, detach=False, cross_terms=False)
    assert "BPTT, cross-terms dropped" in list(other.data[-1].x)
    anch = U.gradient_view(model, b, "anchored_consistency", 4, 16, detach=True)
    assert "teacher detached" in anch.layout.title.text


# --- widgets ------------------------------------------------------------------------------------------------------

def test_replay_view_slider_redraws_the_measurement_it_points_to():
    curves = {"field": ([0, 10, 20], torch.ones(3, 4))}
    view = W.ReplayView(lambda upto: P.render_grad_norms(curves, (0.1, 0.4, 0.7, 0.9), upto=upto), [0, 10, 20])
    view.finish([0, 10, 20])
    assert view.slider.max == 2 and view.play.max == 2
    view.slider.value = 1
    assert "step 10" in view.figure.layout.title.text and len(view.figure.data[0].x) == 2
    view.slider.value = 0
    assert "step 0" in view.figure.layout.title.text


def test_replay_view_draws_each_measurement_once():
    curves = {"field": ([0, 10, 20], torch.ones(3, 4))}
    drawn = []

    def render(upto):
        drawn.append(upto)
        return P.render_grad_norms(curves, (0.1, 0.4, 0.7, 0.9), upto=upto)

    view = W.ReplayView(render, [0, 10, 20])
    view.finish([0, 10, 20])
    for index in (1, 0, 1, 2, 0):
        view.slider.value = index
    assert sorted(u for u in drawn if u is not None) == [0, 10, 20]  # scrubbing back replays the kept figures
    assert "step 0" in view.figure.layout.title.text


def test_window_and_decomposition_widgets_respond_to_their_sliders():
    model = _model()
    w = U.window_widget(model, n=6)
    before = w.figure.layout.title.text
    w.controls["window"].value = 2
    assert w.figure.layout.title.text != before and w.status.value == ""
    assert w.controls["k"].value == w.controls["k"].max == w.play.max == 2  # the whole new window, playable
    w.controls["k"].value = 1
    assert "step 1 of 2" in w.figure.layout.title.text
    before = w.figure.layout.title.text
    w.controls["euler_steps"].value = 8
    assert "dt = 0.125" in w.figure.layout.title.text and w.figure.layout.title.text != before
    d = U.decomposition_widget(model, n=32)
    for name, value in (("window", 2), ("t0", 0.4), ("euler_steps", 32)):
        before = d.figure.layout.title.text
        d.controls[name].value = value
        assert d.figure.layout.title.text != before, name


def test_gradient_widget_redraws_at_once_for_every_control():
    labkit.clear_cache()
    view = U.gradient_widget(_model(), n=32)
    for name, value in (("detach", True), ("cross_terms", False), ("window", 2), ("euler_steps", 8),
                        ("loss", "anchored_consistency"), ("detach", False)):
        before = view.figure.layout.title.text
        view.controls[name].value = value
        assert view.figure.layout.title.text != before and view.status.value == "", name
    assert not labkit.cache_info()  # nothing trained


def test_unrolling_widget_trains_on_demand_and_caches():
    labkit.clear_cache()
    view = R.unrolling_widget("8gaussians", base_steps=8, n_eval=40, euler_steps=16)
    first = view.figure.layout.title.text
    assert first.startswith("WT-FM L=4 BPTT:")
    view.controls["detach"].value = True
    assert view.figure.layout.title.text.startswith("WT-FM L=4 detached:")
    n = labkit.cache_info()
    view.controls["detach"].value = False  # back to a trained configuration: cached, nothing new trains
    assert labkit.cache_info() == n and view.figure.layout.title.text == first
    view.controls["cross_terms"].value = False
    assert view.figure.layout.title.text.startswith("WT-FM L=4 cross-terms dropped (BPTT):")
    view.controls["euler_steps"].value = 8
    assert "(8 steps)" in view.figure.layout.title.text and view.status.value == ""
    view.controls["loss"].value = "anchored_consistency"
    view.controls["window"].value = 1
    assert "(anchored needs L >= 2)" in view.figure.layout.title.text and view.status.value == ""


# --- lab 10 exercises ---------------------------------------------------------------------------------------------

def test_lab07_checkers_accept_the_solutions_and_reject_wrong_answers():
    from fmlab.exercises import unrolling as ex

    assert ex.check_cross_term_count(12, quiet=True) and not ex.check_cross_term_count(16, quiet=True)
    assert ex.check_cross_share(0.75, quiet=True) and not ex.check_cross_share(0.25, quiet=True)
    assert ex.check_taylor_weight(0.5625, quiet=True) and not ex.check_taylor_weight(2.625, quiet=True)
    model, batch = _model(), U.window_batch_at("8gaussians", 64, t0=0.2)
    dt, t = 1 / 16, batch.t.clone()  # the lab's solution to exercise 3
    z = (1 - t[:, None]) * batch.x0 + t[:, None] * batch.x1
    errors = []
    with torch.no_grad():
        for _ in range(4):
            v = model(z, t)
            errors.append(v - (batch.x1 - batch.x0))
            z, t = z + dt * v, t + dt
    e = torch.stack(errors)
    single = dt**2 * (e**2).sum(-1).sum(0).mean() / 2
    cross = dt**2 * ((e.sum(0) ** 2).sum(-1) - (e**2).sum(-1).sum(0)).mean() / 2
    assert ex.check_kstep_split(float(single), float(cross), model, batch, window=4, steps=16, quiet=True)
    assert not ex.check_kstep_split(float(single), float(single), model, batch, window=4, steps=16, quiet=True)
