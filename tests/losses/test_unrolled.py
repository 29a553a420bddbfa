import copy
import math

import pytest
import torch
from torch import nn

from fmlab.losses import Batch, get_loss, list_losses
from fmlab.losses.unrolled import (
    WTFM_VARIANTS,
    anchored_consistency_loss,
    consistency_weights,
    difference_bound_weight,
    head_velocity,
    unroll_window,
    window_batch,
    wtfm_loss,
)
from fmlab.models import build_model
from fmlab.paths import sample_path
from fmlab.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Scale(nn.Module):
    """v(x, t) = theta x (velocity head) or x1hat(x, t) = theta x (x1 head): one parameter, closed-form gradients."""

    def __init__(self, theta: float, prediction: str = "velocity"):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))
        self.prediction = prediction

    def predict(self, x, t):
        return self.theta * x

    def forward(self, x, t):
        return self.predict(x, t) if self.prediction == "velocity" else (self.predict(x, t) - x) / (1 - t[:, None])


class Recorder(nn.Module):
    """Wraps a model and records, per forward call, the norm of the gradient that reaches its output."""

    def __init__(self, model):
        super().__init__()
        self.model, self.prediction, self.calls = model, model.prediction, []

    def predict(self, x, t):
        return self._record(self.model.predict(x, t))

    def forward(self, x, t):
        return self._record(self.model(x, t))

    def _record(self, out):
        slot = len(self.calls)
        self.calls.append(None)
        if out.requires_grad:
            out.register_hook(lambda g: self.calls.__setitem__(slot, float(g.norm())))
        return out


def _batch(n=48, seed=0, window=4, steps=16, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g, dtype=dtype)
    x1 = torch.randn(n, 2, generator=g, dtype=dtype) * 0.5 + torch.tensor([2.0, -1.0], dtype=dtype)
    return window_batch(x0, x1, g, window=window, steps=steps)


def _model(prediction="velocity", seed=0, time_freq_max=200.0):
    """An untrained MLP; time frequencies up to 200 make it vary fast in t, so that the steps of a window differ and
    the terms these tests separate are far from 0 (with fmlab's default 10 an untrained net is nearly constant in t)."""
    torch.manual_seed(seed)
    return build_model(prediction=prediction, hidden=32, depth=2, time_freq_max=time_freq_max).double()


def _grads(model, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_registry_has_both_unrolled_losses_with_their_conventions():
    names = {s.name for s in list_losses("unrolled")}
    assert names == {"wtfm", "anchored_consistency"}
    for name in names:
        spec = get_loss(name)
        assert "t -> 1 - t" in spec.convention and "unrolling" in spec.paper
    assert get_loss("wtfm").defaults["detach"] is False and get_loss("wtfm").defaults["cross_terms"] is True
    assert WTFM_VARIANTS["cross-terms dropped"] == {"detach": True, "cross_terms": False}
    assert get_loss("anchored_consistency").defaults["detach"] is True
    assert (get_loss("anchored_consistency").defaults["anchor_weight"],
            get_loss("anchored_consistency").defaults["consistency_weight"]) == (0.8, 0.2)


def test_window_batch_starts_fit_the_window():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(128, 2, generator=g), torch.randn(128, 2, generator=g) + 3
    b = window_batch(x0, x1, g, window=8, steps=16)
    assert float(b.t.min()) >= 0 and float(b.t.max()) <= 0.5 and float(b.t.max()) > 0.4
    grid = window_batch(x0, x1, g, window=3, steps=8, t0_grid=True)
    k = grid.t * 8
    assert torch.allclose(k, k.round(), atol=1e-5) and float(k.max()) <= 5
    with pytest.raises(ValueError, match="window must be <= steps"):
        window_batch(x0, x1, g, window=9, steps=8)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        window_batch(x0, x1, g, window=0)


def test_true_path_endpoint_is_the_start_plus_L_dt_times_the_velocity():
    b = _batch(window=8)
    for w in (1, 3, 8):
        end = sample_path(b.x0, b.x1, b.t + w / 16).x_t
        start = sample_path(b.x0, b.x1, b.t).x_t
        assert torch.allclose(end - start, w / 16 * (b.x1 - b.x0))  # x_{t0 + L dt} - x_{t0} = L dt (x1 - x0)


@pytest.mark.parametrize("prediction", ["velocity", "x1"])
@pytest.mark.parametrize("window", [1, 2, 5])
def test_terminal_loss_is_dt2_times_single_terms_plus_cross_terms(prediction, window):
    model, b, steps = _model(prediction), _batch(window=5), 16
    dt = 1 / steps
    loss, diag = wtfm_loss(model, b, window=window, steps=steps)
    # hand-rolled window, independent of unroll_window
    x = (1 - b.t[:, None]) * b.x0 + b.t[:, None] * b.x1
    t, errors = b.t.clone(), []
    for _ in range(window):
        v = model(x, t) if prediction == "velocity" else (model.predict(x, t) - x) / (1 - t[:, None])
        errors.append(v - (b.x1 - b.x0))
        x, t = x + dt * v, t + dt
    x_end = (1 - t[:, None]) * b.x0 + t[:, None] * b.x1
    terminal = ((x - x_end) ** 2).sum(1)  # ||E_L||^2 per sample
    single = sum((e**2).sum(1) for e in errors)
    cross = sum(((errors[i] * errors[j]).sum(1) for i in range(window) for j in range(window) if i != j),
                torch.zeros(len(x), dtype=x.dtype))
    assert torch.allclose(terminal, dt**2 * (single + cross))  # the expansion, per sample
    assert torch.allclose(diag["terminal"], terminal.mean() / 2)
    assert torch.allclose(diag["single"], dt**2 * single.mean() / 2)
    assert torch.allclose(diag["cross"], dt**2 * cross.mean() / 2)
    assert torch.allclose(loss, (terminal / 2).mean() / (window * dt) ** 2)
    assert diag["n_forward"] == window and diag["n_backward"] == 1
    if window == 1:
        assert float(diag["cross"]) == 0.0


def test_window_of_one_is_flow_matching_for_both_heads():
    b = _batch(window=1)
    v_model = _model("velocity")
    assert torch.allclose(wtfm_loss(v_model, b, window=1)[0], get_loss("cfm").fn(v_model, b)[0])
    x_model = _model("x1")  # through an x1 head the window's velocity is (x1hat - x) / (1 - t): weight 1 / (1 - t)^2
    assert torch.allclose(wtfm_loss(x_model, b, window=1)[0], get_loss("x1_prediction").fn(x_model, b, eps=0.0)[0])


def test_x1_head_transition_is_the_manuscripts_affine_step():
    model, b, dt = _model("x1"), _batch(), 1 / 16
    x = sample_path(b.x0, b.x1, b.t).x_t
    win = unroll_window(model, x, b.t, dt, 1)
    c = (dt / (1 - b.t))[:, None]
    assert torch.allclose(win.xs[1], (1 - c) * x + c * model.predict(x, b.t))  # (1 - dt/(1-t)) x + dt/(1-t) x1hat
    assert torch.allclose(head_velocity(model, x, b.t), win.vs[0])
    with pytest.raises(ValueError, match="t_start \\+ window \\* dt"):
        unroll_window(model, x, torch.full_like(b.t, 0.9), dt, 4)


@pytest.mark.parametrize("window", [1, 2, 4])
def test_bptt_and_detached_gradients_match_closed_forms_on_a_linear_field(window):
    # v = theta x: xhat_k = (1 + dt theta)^k x. Full BPTT: dE/dtheta = L dt (1 + dt theta)^(L-1) x;
    # detached states: dE/dtheta = dt sum_k xhat_k (no path through the states).
    theta, dt, b = 0.7, 1 / 8, _batch(window=4, steps=8)
    x = sample_path(b.x0, b.x1, b.t).x_t
    xs = [(1 + dt * theta) ** k * x for k in range(window + 1)]
    err = xs[-1] - x - window * dt * (b.x1 - b.x0)  # E_L
    scale = 1 / (2 * len(x) * (window * dt) ** 2)  # loss = mean_b ||E||^2 / d / (L dt)^2 with d = 2
    full = 2 * scale * (err * window * dt * (1 + dt * theta) ** (window - 1) * x).sum()
    detached = 2 * scale * (err * dt * sum(xs[:-1])).sum()
    for detach, expected in ((False, full), (True, detached)):
        model = Scale(theta)
        loss, _ = wtfm_loss(model, b, window=window, steps=8, detach=detach)
        (grad,) = torch.autograd.grad(loss, [model.theta])
        assert torch.allclose(grad, expected), (detach, grad, expected)
    assert torch.allclose(full, detached) == (window == 1)


def test_detached_wtfm_keeps_the_loss_value_but_cuts_gradients_through_states():
    model, b = _model(), _batch()
    full, _ = wtfm_loss(model, b, window=4, detach=False)
    det, _ = wtfm_loss(model, b, window=4, detach=True)
    assert torch.allclose(full, det)
    g_full, g_det = _grads(model, full), _grads(model, det)
    assert (g_full - g_det).norm() > 1e-3 * g_full.norm()
    # detached gradient = gradient with every network input precomputed and frozen
    with torch.no_grad():
        frozen = unroll_window(model, sample_path(b.x0, b.x1, b.t).x_t, b.t, 1 / 16, 4).xs
    v = torch.stack([model(frozen[k], b.t + k / 16) for k in range(4)])
    x_end = frozen[0] + (1 / 16) * v.sum(0)
    target = sample_path(b.x0, b.x1, b.t + 4 / 16).x_t
    manual = ((x_end - target) ** 2).mean(1).mean() / (4 / 16) ** 2
    assert torch.allclose(g_det, _grads(model, manual))


@pytest.mark.parametrize("prediction", ["velocity", "x1"])
@pytest.mark.parametrize("window", [1, 3])
def test_dropping_the_cross_terms_leaves_a_sum_of_single_step_losses_on_detached_states(prediction, window):
    model, b, steps = _model(prediction), _batch(window=3), 16
    dt, u = 1 / steps, b.x1 - b.x0
    loss, diag = wtfm_loss(model, b, window=window, steps=steps, detach=True, cross_terms=False)
    # reference: the model's own states, computed without a graph, then one single-step FM loss per state
    with torch.no_grad():
        z, t, states = (1 - b.t[:, None]) * b.x0 + b.t[:, None] * b.x1, b.t.clone(), []
        for _ in range(window):
            states.append((z, t))
            v = model(z, t) if prediction == "velocity" else (model.predict(z, t) - z) / (1 - t[:, None])
            z, t = z + dt * v, t + dt
    singles = []
    for z, t in states:
        v = model(z, t) if prediction == "velocity" else (model.predict(z, t) - z) / (1 - t[:, None])
        singles.append(((v - u) ** 2).mean())  # single-step FM loss ||vhat_k - u||^2 / d, batch mean
    assert torch.allclose(loss, sum(singles) / window**2)  # dt^2 sum_k ||e_k||^2 / (L dt)^2
    assert torch.allclose(loss, diag["single"] / (window * dt) ** 2)
    grad_sum = sum(_grads(model, s) for s in singles) / window**2  # the sum of the single-step gradients
    assert torch.allclose(_grads(model, loss), grad_sum)
    full, _ = wtfm_loss(model, b, window=window, steps=steps, detach=True)
    assert torch.allclose(full - loss, diag["cross"] / (window * dt) ** 2)  # what was dropped: the cross-terms
    with pytest.raises(ValueError, match="cross_terms must be True or False"):
        wtfm_loss(model, b, window=window, steps=steps, cross_terms="no")


def test_dropping_the_cross_terms_matches_a_closed_form_on_a_linear_field():
    # v = theta x, states frozen: d/dtheta sum_k ||theta z_k - u||^2 / (d L^2) = 2 sum_k (theta z_k - u) . z_k / (d L^2)
    theta, dt, window, b = 0.7, 1 / 8, 3, _batch(window=4, steps=8)
    x = sample_path(b.x0, b.x1, b.t).x_t
    zs = [(1 + dt * theta) ** k * x for k in range(window)]
    expected = sum(2 * ((theta * z - (b.x1 - b.x0)) * z).sum() for z in zs) / (2 * len(x) * window**2)
    model = Scale(theta)
    loss, _ = wtfm_loss(model, b, window=window, steps=8, detach=True, cross_terms=False)
    (grad,) = torch.autograd.grad(loss, [model.theta])
    assert torch.allclose(grad, expected)
    detached, _ = wtfm_loss(model, b, window=window, steps=8, detach=True)
    (grad_detached,) = torch.autograd.grad(detached, [model.theta])
    assert not torch.allclose(grad, grad_detached, rtol=1e-2)  # detaching alone keeps the cross-terms


@pytest.mark.parametrize("window", [2, 3, 5])
def test_wtfm_loss_is_anchor_plus_taylor_consistency_minus_their_cross_term(window):
    # mean_k vhat_k = vhat_0 / L + c teacher, c = (L - 1) / L: ||mean_k e_k||^2 = ||e_0 - c (vhat_0 - teacher)||^2
    model, b, steps = _model(), _batch(window=5), 16
    wt, _ = wtfm_loss(model, b, window=window, steps=steps)
    taylor, diag = anchored_consistency_loss(model, b, window=window, steps=steps, weighting="taylor")
    c = (window - 1) / window
    assert diag["w_anchor"] == 1.0 and diag["w_consistency"] == pytest.approx(c**2)
    dt, x, t, vs = 1 / steps, (1 - b.t[:, None]) * b.x0 + b.t[:, None] * b.x1, b.t.clone(), []
    with torch.no_grad():
        for _ in range(window):
            vs.append(model(x, t))
            x, t = x + dt * vs[-1], t + dt
    e0, gap = vs[0] - (b.x1 - b.x0), vs[0] - torch.stack(vs[1:]).mean(0)
    cross = -2 * c * (e0 * gap).sum(1).mean() / 2  # the anchor-consistency cross-term (per coordinate)
    assert torch.allclose(wt, taylor + cross)
    fixed, _ = anchored_consistency_loss(model, b, window=window, steps=steps)  # 0.8 / 0.2: taylor x 0.8 at L = 2 only
    assert torch.allclose(fixed, 0.8 * taylor) == (window == 2)


def test_difference_bound_weight_is_tight_and_exceeds_the_manuscripts_weight_beyond_two_steps():
    # mean_k e_k = e_0 + sum_{i=1}^{L-1} c_i d_i, c_i = (L - i) / L, d_i = vhat_i - vhat_{i-1} (summation by parts)
    g = torch.Generator().manual_seed(0)
    for window in (2, 3, 4, 8):
        c = torch.tensor([(window - i) / window for i in range(1, window)], dtype=torch.float64)
        w = difference_bound_weight(window)
        vs = torch.randn(window, 2, generator=g, dtype=torch.float64)
        d = vs[1:] - vs[:-1]
        assert torch.allclose(vs.mean(0), vs[0] + (c[:, None] * d).sum(0))  # the identity (e_k = vhat_k - u)
        random = torch.randn(window - 1, 2, generator=g, dtype=torch.float64)
        assert (c[:, None] * random).sum(0).pow(2).sum() <= w * random.pow(2).sum(1).mean() + 1e-12
        tight = c[:, None] * torch.tensor([1.0, -2.0], dtype=torch.float64)  # d_i proportional to c_i
        lhs, mean_sq = (c[:, None] * tight).sum(0).pow(2).sum(), tight.pow(2).sum(1).mean()
        assert torch.allclose(lhs, w * mean_sq)  # Cauchy-Schwarz holds with equality
        manuscript = ((window - 1) / window) ** 2
        assert (lhs <= manuscript * mean_sq + 1e-12) == (window == 2)  # ((L-1)/L)^2 bounds it at L = 2 only
    assert difference_bound_weight(2) == 0.25 and difference_bound_weight(4) == pytest.approx(2.625)


@pytest.mark.parametrize("prediction", ["velocity", "x1"])
def test_anchored_consistency_with_detach_equals_a_frozen_teacher_and_blocks_later_steps(prediction):
    model, b, steps, window = _model(prediction), _batch(window=3), 16, 3
    rec = Recorder(model)
    loss, diag = anchored_consistency_loss(rec, b, window=window, steps=steps, detach=True)
    g = _grads(model, loss)
    assert rec.calls[0] is not None and rec.calls[0] > 0  # gradient reaches the first prediction ...
    assert rec.calls[1:] == [None] * (window - 1)  # ... and never the later steps of the window
    # the same loss against a frozen copy of the model producing the teacher predictions
    frozen = copy.deepcopy(model).requires_grad_(False)
    x = sample_path(b.x0, b.x1, b.t).x_t
    v0 = head_velocity(model, x, b.t)
    with torch.no_grad():
        x1_state = x + v0 / steps
        teacher = unroll_window(frozen, x1_state, b.t + 1 / steps, 1 / steps, window - 1).vs.mean(0)
    manual = 0.8 * ((v0 - (b.x1 - b.x0)) ** 2).mean() + 0.2 * ((v0 - teacher) ** 2).mean()
    assert torch.allclose(loss, manual)
    assert torch.allclose(g, _grads(model, manual))
    assert torch.allclose(diag["anchor"], ((v0 - (b.x1 - b.x0)) ** 2).mean())


def test_anchored_consistency_without_detach_backpropagates_through_the_whole_window():
    model, b = _model(), _batch(window=3)
    rec = Recorder(model)
    loss, _ = anchored_consistency_loss(rec, b, window=3, detach=False)
    g_full = _grads(model, loss)
    assert len(rec.calls) == 3 and all(c is not None and c > 0 for c in rec.calls)  # every step gets gradient
    loss_det, _ = anchored_consistency_loss(model, b, window=3, detach=True)
    assert torch.allclose(loss, loss_det)  # same value ...
    assert (g_full - _grads(model, loss_det)).norm() > 1e-3 * g_full.norm()  # ... different gradient


def test_consistency_weights_and_errors():
    assert consistency_weights(4) == (0.8, 0.2)
    assert consistency_weights(4, "taylor") == (1.0, (3 / 4) ** 2)
    assert consistency_weights(2, "fixed", 1.0, 0.5) == (1.0, 0.5)
    with pytest.raises(ValueError, match="weighting must be one of"):
        consistency_weights(2, "snr")
    with pytest.raises(ValueError, match=">= 0"):
        consistency_weights(2, "fixed", -1.0, 0.2)
    model, b = _model(), _batch()
    with pytest.raises(ValueError, match="window must be >= 2"):
        anchored_consistency_loss(model, b, window=1)
    loss, diag = anchored_consistency_loss(model, b, window=4, weighting="taylor")
    assert diag["w_consistency"] == (3 / 4) ** 2
    assert torch.allclose(loss, diag["anchor"] + (3 / 4) ** 2 * diag["consistency"])


def test_losses_train_through_the_trainer_with_ot_coupling_and_both_heads():
    for name in ("wtfm", "anchored_consistency"):
        for prediction in ("velocity", "x1"):
            config = TrainConfig(data="moons", loss=name, coupling="ot", prediction=prediction, steps=3, batch_size=32,
                                 hidden=16, depth=2, log_every=1, threads=1, loss_settings={"window": 4, "steps": 8})
            log = Trainer(config).fit(progress=False)
            assert len(log) == 3 and all(math.isfinite(r["loss"]) for r in log)
            assert log[-1]["n_forward"] == 4
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 2
    for name in ("wtfm", "anchored_consistency"):
        spec = get_loss(name)
        for prediction in ("velocity", "x1"):
            settings = spec.settings({"window": 4, "steps": 8})
            batch = spec.make_batch(x0, x1, torch.Generator().manual_seed(0), **settings)
            model = build_model(prediction=prediction, hidden=16, depth=2)
            loss, diag = spec.fn(model, batch, **settings)
            assert loss.ndim == 0 and torch.isfinite(loss) and diag["n_forward"] == 4
            loss.backward()
    with pytest.raises(ValueError, match="no setting"):
        get_loss("wtfm").settings({"windw": 2})
    assert isinstance(_batch(), Batch)
