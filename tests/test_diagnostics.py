from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

from fmlab.data import Gaussian
from fmlab.diagnostics import (
    GradNormTracker,
    cross_term_grad_variance,
    grad_norm,
    grad_norms_at_levels,
    kstep_decomposition,
    per_call_gradients,
    posterior_variance_power,
    transition_jacobians,
    variant_gradients,
    wtfm_gradient_split,
)
from fmlab.losses import Batch, get_loss
from fmlab.losses.unrolled import anchored_consistency_loss, window_batch, wtfm_loss
from fmlab.models import MLP, build_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(prediction="velocity", seed=0):
    torch.manual_seed(seed)
    return build_model(prediction=prediction, hidden=32, depth=2).double()


def _batch(window=4, steps=16, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64) + 1.5
    return window_batch(x0, x1, g, window=window, steps=steps)


class Linear(nn.Module):
    """v(x, t) = A x (velocity head) or x1hat(x, t) = A x (x1 head), A a fixed 2 x 2 matrix."""

    def __init__(self, a, prediction="velocity"):
        super().__init__()
        self.a, self.prediction = nn.Parameter(torch.as_tensor(a, dtype=torch.float64)), prediction

    def predict(self, x, t):
        return x @ self.a.T

    def forward(self, x, t):
        return self.predict(x, t) if self.prediction == "velocity" else (self.predict(x, t) - x) / (1 - t[:, None])


class ExactPlusResidual(nn.Module):
    """The exact velocity of N(0, var I) on the linear path plus a small random MLP (the parameters we differentiate):
    v = gain(t) x + scale mlp(x, t), gain = (t var - (1 - t)) / (t^2 var + (1 - t)^2)."""

    prediction = "velocity"

    def __init__(self, var, scale=0.1):
        super().__init__()
        torch.manual_seed(0)
        self.var, self.scale, self.res = var, scale, MLP(2, hidden=32, depth=2)

    def forward(self, x, t):
        tt = t[:, None]
        gain = (tt * self.var - (1 - tt)) / (tt**2 * self.var + (1 - tt) ** 2)
        return gain * x + self.scale * self.res(x, t)


# --- k-step decomposition ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["velocity", "x1"])
def test_decomposition_sums_to_the_kstep_loss(prediction):
    model, b = _model(prediction), _batch(window=6)
    d = kstep_decomposition(model, b, window=6, steps=16)
    assert d.single.shape == (6,) and d.cross.shape == (6, 6)
    assert torch.allclose(torch.diagonal(d.cross), torch.zeros(6, dtype=d.cross.dtype))
    assert torch.allclose(d.cross, d.cross.T)
    assert torch.allclose(d.total, d.terminal)  # single + cross = terminal
    _, diag = wtfm_loss(model, b, window=6, steps=16)
    assert torch.allclose(d.terminal, diag["terminal"]) and torch.allclose(d.cross_total, diag["cross"])
    one = kstep_decomposition(model, b, window=1, steps=16)
    assert float(one.cross_total) == 0.0 and torch.allclose(one.terminal, one.single_total)


def test_decomposition_of_a_constant_error_is_all_cross_terms_but_one_in_l():
    # v = 0 and x1 = x0 + c: the error is e_k = -c at every step, so cross = (L^2 - L) dt^2 ||c||^2 / d
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    zero = Linear(torch.zeros(2, 2))
    b = Batch(x0=x0, x1=x0 + torch.tensor([1.0, -2.0], dtype=torch.float64), t=torch.full((16,), 0.2,
                                                                                      dtype=torch.float64))
    d = kstep_decomposition(zero, b, window=3, steps=10)
    c2 = (1.0 + 4.0) / 2  # ||c||^2 / d
    assert torch.allclose(d.single, torch.full((3,), 0.01 * c2, dtype=torch.float64))
    assert torch.allclose(d.cross_total, torch.tensor(6 * 0.01 * c2, dtype=torch.float64))


# --- the k-step gradient, call by call ---------------------------------------------------------------------------

def _flat_grad(model, loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


@pytest.mark.parametrize("prediction", ["velocity", "x1"])
def test_per_call_gradients_sum_to_the_gradient_and_skip_calls_without_a_graph(prediction):
    model, b = _model(prediction), _batch(window=3)
    rows = per_call_gradients(model, lambda m: wtfm_loss(m, b, window=3, steps=16)[0])
    assert rows.shape == (3, sum(p.numel() for p in model.parameters()))
    assert torch.allclose(rows.sum(0), _flat_grad(model, wtfm_loss(model, b, window=3, steps=16)[0]))
    assert all(p.grad is None for p in model.parameters())
    rows = per_call_gradients(model, lambda m: anchored_consistency_loss(m, b, window=3, detach=True)[0])
    assert rows[0].norm() > 0 and torch.equal(rows[1:], torch.zeros_like(rows[1:]))  # the teacher is not trained
    with pytest.raises(ValueError, match="never called the model"):
        per_call_gradients(model, lambda m: torch.zeros((), requires_grad=True))


def test_per_call_gradients_never_run_the_model_itself_so_two_threads_can_share_it():
    # functional_call swaps a module's parameters during the call: on the caller's model, a second thread computing
    # per-call gradients (lab 10's widget rendering in the background beside a cell) would see the first one's.
    model, b = _model(), _batch(window=3)
    loss = lambda m: wtfm_loss(m, b, window=3, steps=16)[0]  # noqa: E731
    ran_on_model = []
    model.register_forward_hook(lambda module, args, out: ran_on_model.append(module is model))
    reference = per_call_gradients(model, loss)
    assert ran_on_model and not any(ran_on_model)  # every call ran on a private copy
    params = [p.detach().clone() for p in model.parameters()]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: per_call_gradients(model, loss), range(8)))
    assert all(torch.equal(r, reference) for r in results)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))

def test_detached_gradient_split_matches_a_reference_with_explicit_detach():
    # call k, states frozen: single part (2 / L^2) J_k^T e_k, cross part (2 / L^2) J_k^T sum_{j != k} e_j (per coord.)
    model, b, window, steps = _model(), _batch(window=4), 4, 16
    split = wtfm_gradient_split(model, b, window, steps, detach=True)
    dt, u = 1 / steps, b.x1 - b.x0
    with torch.no_grad():
        z, t, states = (1 - b.t[:, None]) * b.x0 + b.t[:, None] * b.x1, b.t.clone(), []
        for _ in range(window):
            states.append((z, t))
            z, t = z + dt * model(z, t), t + dt
        errors = torch.stack([model(z, t) - u for z, t in states])  # e_k [L, B, d]
    for k, (z, t) in enumerate(states):
        single = ((model(z.detach(), t) - u) ** 2).sum(1).mean() / (2 * window**2)
        others = (errors.sum(0) - errors[k]).detach()  # sum_{j != k} e_j, no gradient
        cross = 2 * ((model(z.detach(), t) - u) * others).sum(1).mean() / (2 * window**2)
        assert torch.allclose(split.single[k], _flat_grad(model, single))
        assert torch.allclose(split.cross[k], _flat_grad(model, cross))
    assert torch.allclose(split.total, _flat_grad(model, wtfm_loss(model, b, window=window, steps=steps,
                                                                   detach=True)[0]))


def test_bptt_split_sums_to_the_bptt_gradient_and_dropping_zeroes_the_cross_part():
    model, b = _model(), _batch(window=4)
    full = wtfm_gradient_split(model, b, 4, 16, detach=False)
    assert torch.allclose(full.total, _flat_grad(model, wtfm_loss(model, b, window=4, steps=16)[0]))
    single_only = _flat_grad(model, wtfm_loss(model, b, window=4, steps=16, cross_terms=False)[0])
    assert torch.allclose(full.single.sum(0), single_only)
    dropped = wtfm_gradient_split(model, b, 4, 16, detach=True, cross_terms=False)
    assert torch.equal(dropped.cross, torch.zeros_like(dropped.cross)) and dropped.cross_share == 0.0
    assert full.per_call.shape == (4,) and bool((full.per_call > 0).all())


@pytest.mark.parametrize("window", [2, 4, 8])
def test_equal_step_errors_give_the_cross_terms_a_share_of_one_minus_one_over_L(window):
    # v = A z with A = 0: every step has the error e_k = -u and the same Jacobian, so g_cross = (L - 1) g_single
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    b = Batch(x0=x0, x1=x0 + torch.tensor([1.0, -2.0], dtype=torch.float64),
              t=torch.full((16,), 0.2, dtype=torch.float64))
    split = wtfm_gradient_split(Linear(torch.zeros(2, 2)), b, window, 16, detach=True)
    assert split.cross_share == pytest.approx(1 - 1 / window)
    assert torch.allclose(split.cross, (window - 1) * split.single)


def test_variant_gradients_side_by_side():
    model, b = _model(), _batch(window=4)
    rows = variant_gradients(model, b, 4, 16)
    assert list(rows) == ["full BPTT", "states detached", "cross-terms dropped"]
    assert rows["full BPTT"]["cosine_to_bptt"] == pytest.approx(1.0)
    assert rows["full BPTT"]["loss"] == pytest.approx(rows["states detached"]["loss"])  # detaching keeps the value
    assert rows["cross-terms dropped"]["loss"] < rows["states detached"]["loss"]
    assert rows["cross-terms dropped"]["cross_share"] == 0.0
    assert 0 < rows["states detached"]["cross_share"] < 1 and rows["states detached"]["cosine_to_bptt"] < 1
    grad = _flat_grad(model, wtfm_loss(model, b, window=4, steps=16, detach=True, cross_terms=False)[0])
    assert rows["cross-terms dropped"]["grad_norm"] == pytest.approx(float(grad.norm()))
    one = variant_gradients(model, _batch(window=1), 1, 16)  # L = 1: no cross-terms, every variant is FM
    assert all(r["cross_share"] == 0.0 and r["cosine_to_bptt"] == pytest.approx(1.0) for r in one.values())


# --- gradient norms -----------------------------------------------------------------------------------------------

def test_grad_norm_matches_backward_and_leaves_grads_alone():
    model, b = _model(), _batch()
    loss, _ = get_loss("cfm").fn(model, b)
    value = grad_norm(model, loss)
    assert all(p.grad is None for p in model.parameters())
    loss, _ = get_loss("cfm").fn(model, b)
    loss.backward()
    assert value == pytest.approx(float(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))))


def test_grad_norms_at_levels_fix_the_time_and_clamp_windows():
    model = _model()
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 2, generator=g, dtype=torch.float64), torch.randn(64, 2, generator=g, dtype=torch.float64)
    norms = grad_norms_at_levels(model, "cfm", x0, x1, levels=(0.2, 0.8))
    manual = []
    for t in (0.2, 0.8):
        loss, _ = get_loss("cfm").fn(model, Batch(x0=x0, x1=x1, t=torch.full((64,), t, dtype=torch.float64)))
        manual.append(grad_norm(model, loss))
    assert torch.allclose(norms, torch.tensor(manual))
    # a window loss starts at min(level, 1 - L dt): levels 0.9 and 0.95 both start at 0.75
    w = grad_norms_at_levels(model, "wtfm", x0, x1, levels=(0.9, 0.95), settings={"window": 4, "steps": 16})
    assert torch.allclose(w[0], w[1])
    bucket = grad_norms_at_levels(model, "cfm", x0, x1, levels=[(0.0, 0.5)], generator=torch.Generator().manual_seed(1))
    assert bucket.shape == (1,) and torch.isfinite(bucket).all()
    with pytest.raises(ValueError, match="level"):
        grad_norms_at_levels(model, "cfm", x0, x1, levels=(1.5,))


def test_x1_head_gradient_grows_near_the_data_like_one_over_one_minus_t():
    # same backbone, same function class: the x1 loss's 1 / (1 - t)^2 weight blows the gradient up as t -> 1
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(256, 2, generator=g, dtype=torch.float64)
    v = grad_norms_at_levels(_model("velocity"), "cfm", x0, x1, levels=(0.1, 0.9))
    x = grad_norms_at_levels(_model("x1"), "x1_prediction", x0, x1, levels=(0.1, 0.9))
    assert x[1] / x[0] > 4 * (v[1] / v[0])
    assert x[1] > 3 * v[1]


def test_tracker_records_history_without_touching_the_global_rng():
    model = _model()
    tracker = GradNormTracker("cfm", lambda n, g: torch.randn(n, 2, generator=g, dtype=torch.float64) + 1,
                              levels=(0.1, 0.5, 0.9), batch_size=32, seed=3)
    state = torch.get_rng_state()
    first = tracker.measure(model, 0)
    tracker.measure(model, 10)
    assert torch.equal(torch.get_rng_state(), state)
    assert tracker.steps == [0, 10] and tracker.norms.shape == (2, 3)
    again = GradNormTracker("cfm", lambda n, g: torch.randn(n, 2, generator=g, dtype=torch.float64) + 1,
                            levels=(0.1, 0.5, 0.9), batch_size=32, seed=3).measure(model, 0)
    assert torch.equal(first, again)


# --- cross-term gradient variance ---------------------------------------------------------------------------------

def _gaussian_sampler(std):
    target = Gaussian(torch.zeros(2), std=std)
    return target, (lambda n, g: target.sample(n, generator=g).float())


def test_posterior_variance_power_matches_the_gaussian_closed_form():
    for std, t in ((3.0, 0.25), (0.5, 0.6)):
        target, _ = _gaussian_sampler(std)
        vbar, curve = posterior_variance_power(target, t, (1, 2, 4), n=256)
        exact = std**2 * (1 - t) ** 2 / (t**2 * std**2 + (1 - t) ** 2)  # Var(x1 | x_t) per dimension
        assert vbar == pytest.approx(exact, rel=1e-6)
        assert torch.allclose(curve, torch.tensor([exact, exact**2, exact**4], dtype=torch.float64))


def test_cross_term_gradient_variance_compounds_faster_where_the_posterior_variance_is_larger():
    windows = (2, 4, 8)
    growth, at_two = {}, {}
    for std in (3.0, 0.5):
        target, sampler = _gaussian_sampler(std)
        model = ExactPlusResidual(std**2).float()
        r = cross_term_grad_variance(model, sampler, windows, steps=16, t0=0.25, n_batches=12, batch_size=64)
        growth[std], at_two[std] = float(r.variance[2] / r.variance[0]), float(r.variance[0])
        vbar, curve = posterior_variance_power(target, 0.25, windows)
        if vbar > 1:  # the closed form grows with L: so does the measurement, monotonically
            assert bool((curve[1:] > curve[:-1]).all())
            assert bool((r.variance[1:] > r.variance[:-1]).all())
    # larger Var(x1 | x_t) (4.5 against 0.24 per dimension): larger variance and faster growth with L
    assert at_two[3.0] > 5 * at_two[0.5]
    assert growth[3.0] > 1.5 * growth[0.5]


def test_the_closed_form_flips_with_the_data_scale_but_the_measured_variance_does_not():
    # Var(x1 | x_t)^L has units (data units)^(2L): rescaling the data turns its growth with L into decay.
    # The measured cross-term gradient variance grows from L = 2 to L = 4 at both scales.
    for std, closed_grows in ((2.0, True), (0.5, False)):
        target, sampler = _gaussian_sampler(std)
        vbar, curve = posterior_variance_power(target, 0.25, (2, 4))
        assert (vbar > 1) == closed_grows and bool(curve[1] > curve[0]) == closed_grows
        r = cross_term_grad_variance(ExactPlusResidual(std**2).float(), sampler, (2, 4), steps=16, t0=0.25,
                                     n_batches=12, batch_size=64)
        assert float(r.variance[1] / r.variance[0]) > 1.5, (std, r.variance)
    assert float(curve[1] / curve[0]) < 0.1  # std 0.5: the closed form predicts a 17-fold decay per doubling of L


def test_unnormalised_variance_is_the_normalised_one_times_L_dt_to_the_fourth():
    # normalise=True divides the cross-terms by (L dt)^2 as the WT-FM loss does: the variance by (L dt)^4
    _, sampler = _gaussian_sampler(1.0)
    model = ExactPlusResidual(1.0).float()
    kw = dict(windows=(2, 4, 8), steps=16, t0=0.25, n_batches=4, batch_size=32)
    scaled = cross_term_grad_variance(model, sampler, **kw).variance
    raw = cross_term_grad_variance(model, sampler, normalise=False, **kw).variance
    assert torch.allclose(raw, scaled * torch.tensor([(w / 16) ** 4 for w in (2, 4, 8)]), rtol=1e-4)


def test_cross_term_variance_checks_its_arguments():
    _, sampler = _gaussian_sampler(1.0)
    model = ExactPlusResidual(1.0).float()
    r = cross_term_grad_variance(model, sampler, (1, 2), steps=16, t0=0.5, n_batches=3, batch_size=8)
    assert r.windows == [1, 2] and r.variance[0] == 0 and r.variance[1] > 0  # L = 1 has no cross-terms
    with pytest.raises(ValueError, match="t0 must lie"):
        cross_term_grad_variance(model, sampler, (8,), steps=16, t0=0.6)
    with pytest.raises(ValueError, match="n_batches"):
        cross_term_grad_variance(model, sampler, (2,), n_batches=1)
    with pytest.raises(ValueError, match="window must be <= steps"):
        cross_term_grad_variance(model, sampler, (32,), steps=16, t0=0.0)


# --- transition Jacobians -------------------------------------------------------------------------------------------

def test_transition_jacobians_of_linear_heads_match_the_formulas():
    a = torch.tensor([[0.5, -1.0], [0.3, 2.0]], dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    dt, t0 = 0.05, 0.6
    vel = transition_jacobians(Linear(a), x, t0, dt, window=3)
    assert torch.allclose(vel.jac, (torch.eye(2, dtype=torch.float64) + dt * a).expand(3, 5, 2, 2))  # I + dt J_v
    x1 = transition_jacobians(Linear(a, "x1"), x, t0, dt, window=3)
    for k in range(3):
        c = dt / (1 - (t0 + k * dt))
        expected = (1 - c) * torch.eye(2, dtype=torch.float64) + c * a  # (1 - dt/(1-t)) I + dt/(1-t) J_x1
        assert torch.allclose(x1.jac[k], expected.expand(5, 2, 2))
    assert torch.allclose(x1.spectral_norm, torch.linalg.matrix_norm(x1.jac, ord=2))
    assert x1.xs.shape == (4, 5, 2) and torch.allclose(x1.ts[:, 0], torch.tensor([0.6, 0.65, 0.7, 0.75],
                                                                                 dtype=torch.float64))


def test_transition_jacobian_of_an_mlp_is_identity_plus_dt_times_its_jacobian():
    model, dt = _model(), 1 / 16
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.3, dtype=torch.float64)
    tj = transition_jacobians(model, x, t, dt, window=1)
    for i in range(4):
        j = torch.autograd.functional.jacobian(lambda y, i=i: model(y[None], t[i:i + 1])[0], x[i])
        assert torch.allclose(tj.jac[0, i], torch.eye(2, dtype=torch.float64) + dt * j)
    # an x1 head near the data: dt / (1 - t) -> 1, so T -> J_x1 and the identity part vanishes
    near = transition_jacobians(Linear(torch.zeros(2, 2), "x1"), x, 1 - 1 / 16, 1 / 16, window=1)
    assert torch.allclose(near.spectral_norm, torch.zeros(1, 4, dtype=torch.float64), atol=1e-12)
