"""Lab 06 (parametrisation): the head conversions and loss identities it checks, the matched-loss comparison of
fmlab.viz.unrolling, and the checkers of fmlab.exercises.parametrisation."""


import pytest
import torch
from torch import nn

from fmlab import experiments as E
from fmlab import labkit
from fmlab.diagnostics import DEFAULT_LEVELS, grad_norms_at_levels
from fmlab.exercises import parametrisation as ex
from fmlab.losses import Batch
from fmlab.models import build_model
from fmlab.models.parametrisation import Parametrised
from fmlab.viz import parametrisation as P

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _batch(n=128, seed=0, t_max=0.98):
    g = torch.Generator().manual_seed(seed)
    return Batch(x0=torch.randn(n, 2, generator=g), x1=2 * torch.randn(n, 2, generator=g),
                 t=t_max * torch.rand(n, generator=g))


# --- conversions and loss identities -------------------------------------------------------------------------------

def test_head_conversions_are_exact_and_their_gains_are_one_over_the_vanishing_coefficient():
    rows = P.head_conversions(times=(0.05, 0.5, 0.95), delta=0.01, n=64)
    for t, row in rows.items():
        assert row["x1 exact"] < 1e-10 and row["eps exact"] < 1e-10  # the mixture's velocity, recovered
        assert row["x1 gain"] == pytest.approx(1 / (1 - t), rel=1e-6)  # v = (x1 - x_t) / (1 - t)
        assert row["eps gain"] == pytest.approx(1 / t, rel=1e-6)  # v = (x_t - x0) / t
    assert rows[0.95]["x1 gain"] > 10 * rows[0.95]["eps gain"]  # data end: the x1 head is the ill-conditioned one
    assert rows[0.05]["eps gain"] > 10 * rows[0.05]["x1 gain"]  # noise end: the eps head


def test_x1_loss_identities_against_a_reference_with_explicit_detach():
    torch.manual_seed(0)
    model = build_model(prediction="x1", hidden=16, depth=2)
    batch = _batch()
    out = P.x1_loss_identities(model, batch)
    # reference: chain rule by hand. d/dtheta of mean ||v_hat - u||^2 with v_hat = (x1_hat - x_t) / (1 - t) is
    # mean 2 (v_hat - u) / (1 - t) / d * d x1_hat / dtheta, which we take as a vector-Jacobian product of x1_hat
    s = (1 - batch.t)[:, None]
    x_t = s * batch.x0 + batch.t[:, None] * batch.x1
    x1_hat = model.predict(x_t, batch.t)
    v_err = ((x1_hat.detach() - x_t) / s - (batch.x1 - batch.x0))
    cotangent = 2 * v_err / s / x1_hat.numel()
    params = list(model.parameters())
    reference = torch.autograd.grad(x1_hat, params, grad_outputs=cotangent, retain_graph=True)
    weighted = ((x1_hat - batch.x1).pow(2).mean(1) / s[:, 0] ** 2).mean()
    got = torch.autograd.grad(weighted, params)
    for a, b in zip(got, reference, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert out["weighted x1"] == pytest.approx(v_err.pow(2).mean(1).mean().item(), rel=1e-5)
    assert out["velocity"] == pytest.approx(out["weighted x1"], rel=1e-5)
    assert out["gradient gap"] < 1e-5
    plain = (x1_hat.detach() - batch.x1).pow(2).mean(1).mean().item()
    assert out["plain x1"] == pytest.approx(plain, rel=1e-5)
    assert out["velocity x (1-t)^2"] == pytest.approx(plain, rel=1e-5)
    assert out["plain x1"] < out["velocity"]  # (1 - t)^2 < 1: plain x1 MSE shrinks the velocity error


class _X1FromField(nn.Module):
    """An x1 backbone that represents a given field exactly: x1_hat = x + (1 - t) v(x, t)."""

    def __init__(self, field):
        super().__init__()
        self.field = field

    def forward(self, x, t):
        return x + (1 - t)[:, None] * self.field(x, t)


def test_velocity_equivalent_loss_is_one_yardstick_for_both_heads():
    torch.manual_seed(0)
    field = build_model(hidden=16, depth=2)
    x1_head = Parametrised(_X1FromField(field), prediction="x1")
    a = P.velocity_equivalent_loss(field, "moons", n=512)
    b = P.velocity_equivalent_loss(x1_head, "moons", n=512)
    assert a == pytest.approx(b, rel=1e-5)
    assert P.velocity_equivalent_loss(field, "moons", n=512, seed=1) != a  # a different held-out set
    # the value: CFM error (1 - t)^2 ||v - u||^2 / ((1 - t)^2 + 1e-3), recomputed with the same draws
    g = torch.Generator().manual_seed(30_000)
    from fmlab.data import sample_toy

    x1 = sample_toy("moons", 512, generator=g)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(512, generator=g)
    x_t = (1 - t)[:, None] * x0 + t[:, None] * x1
    with torch.no_grad():
        err = (field(x_t, t) - (x1 - x0)).pow(2).mean(1)
    w = (1 - t) ** 2
    assert a == pytest.approx((w * err / (w + 1e-3)).mean().item(), rel=1e-5)


# --- runs, matched loss ----------------------------------------------------------------------------------------------

def _runs(steps=8):
    configs = [E.lab_config("8gaussians", c.loss, prediction=c.prediction, train_steps=steps, log_every=2, threads=1)
               for c in P.parametrisation_configs("8gaussians", steps)]
    return [P.parametrisation_run(c, track_every=2, n_eval=50, progress=False) for c in configs]


def test_parametrisation_run_records_the_loss_and_weights_at_every_tracked_step():
    labkit.clear_cache()
    field, x1 = _runs()
    for r in (field, x1):
        assert r.steps == [0, 2, 4, 6, 8] and len(r.losses) == len(r.states) == 5
        model = r.result.trainer.model
        assert all(torch.equal(v, r.states[-1][k]) for k, v in model.state_dict().items())  # last = trained weights
        probe = build_model(**model.config)
        probe.load_state_dict(r.states[2])
        assert r.losses[2] == pytest.approx(P.velocity_equivalent_loss(probe, "8gaussians"), rel=1e-6)
    assert (field.label, x1.label) == ("field", "x1 prediction")
    assert _runs()[0] is field  # cached


def test_parametrisation_run_records_even_when_run_had_cached_the_config():
    labkit.clear_cache()
    config = E.lab_config("8gaussians", "cfm", train_steps=4, log_every=2, threads=1)
    E.run(config, levels=DEFAULT_LEVELS, track_every=2, eval_steps=(100,), n_eval=50, progress=False)
    r = P.parametrisation_run(config, track_every=2, n_eval=50, progress=False)
    assert len(r.losses) == len(r.steps) == 3


def test_gradients_at_averages_the_runs_own_loss_over_fresh_minibatches():
    labkit.clear_cache()
    field, x1 = _runs()
    for r in (field, x1):
        got = P.gradients_at(r, len(r.steps) - 1, n_batches=2, batch_size=64, seed=3)
        g = torch.Generator().manual_seed(40_000 + 3)
        from fmlab.data import sample_toy

        norms = []
        for _ in range(2):
            data = sample_toy("8gaussians", 64, generator=g)
            noise = torch.randn(data.shape, generator=g)
            norms.append(grad_norms_at_levels(r.result.trainer.model, r.config.loss, noise, data, DEFAULT_LEVELS,
                                              r.config.loss_settings, g))
        assert torch.allclose(got, torch.stack(norms).mean(0), rtol=1e-5)


def test_matched_gradients_picks_the_lowest_common_loss_and_first_steps_reaching_it(monkeypatch):
    labkit.clear_cache()
    field, x1 = _runs()
    field.losses[:] = [5.0, 3.0, 1.0, 0.9, 0.95]
    x1.losses[:] = [5.0, 4.0, 2.0, 1.2, 1.1]
    calls = []
    monkeypatch.setattr(P, "gradients_at", lambda r, i, n, seed=0: calls.append((r.label, i)) or torch.ones(4))
    m = P.matched_gradients([x1, field])
    assert m.target == pytest.approx(1.1)  # the x1 run's best; the field gets there first at step 4
    assert m.steps == {"x1 prediction": 8, "field": 4} and m.final_step == 8
    assert set(calls) == {("field", 2), ("field", 4), ("x1 prediction", 4)}
    assert torch.equal(m.matched_ratio, torch.ones(4)) and torch.equal(m.final_ratio, torch.ones(4))
    with pytest.raises(ValueError, match="one field run and one x1 prediction run"):
        P.matched_gradients([field, field])


# --- exercises -------------------------------------------------------------------------------------------------------

def test_exercise_checkers():
    assert ex.check_x1_loss_weight(100, quiet=True) and not ex.check_x1_loss_weight(0.01, quiet=True)
    assert ex.check_x1_transition_norm(0.75, quiet=True) and not ex.check_x1_transition_norm(1.0625, quiet=True)
    assert ex.check_gradient_factor_ratio(9, quiet=True) and not ex.check_gradient_factor_ratio(1 / 9, quiet=True)
    assert ex.check_eps_velocity_error(0.2, quiet=True)
    assert not ex.check_eps_velocity_error(0.01 / 0.95, quiet=True)  # divided by 1 - t: the x1 head's factor


def test_eps_exercise_matches_the_conversion_in_fmlab_paths():
    from fmlab.paths import velocity_from_eps

    t, delta = ex.EPS_ERROR["t"], ex.EPS_ERROR["delta"]
    x_t, eps = torch.tensor([[0.3, -0.2]]), torch.tensor([[0.1, 0.4]])
    tt = torch.tensor([t])
    err = velocity_from_eps(eps + torch.tensor([[delta, 0.0]]), x_t, tt) - velocity_from_eps(eps, x_t, tt)
    assert ex.check_eps_velocity_error(float(err.abs().max()), quiet=True)


def test_live_view_and_table_share_the_cached_runs():
    labkit.clear_cache()
    runs, view = P.parametrisation_live("moons", steps=4, track_every=2, n_eval=50, show=False)
    assert [r.label for r in runs] == ["field", "x1 prediction"] and view.steps == [0, 2, 4]
    assert len(view.figure.data) == 2 * len(DEFAULT_LEVELS)  # one curve per head and noise level
    table = P.parametrisation_table(4, n_eval=50, track_every=2, datasets=("moons",))
    assert table["moons"]["field"] is runs[0] and table["moons"]["x1 prediction"] is runs[1]
    summary = P.summarise_gradients(runs)
    assert set(summary) == {"field", "x1 prediction"} and summary["field"]["mean"].shape == (len(DEFAULT_LEVELS),)
    assert set(P.__all__) >= {"matched_gradients", "parametrisation_run", "head_conversions"}
