"""fmlab.viz.score_sde: the score figure shows the closed-form score, the SDE paths keep to p_t and respond to eta,
the eta sweep measures what it says, and the weighting curves are the losses' implied weights."""

import math

import numpy as np
import pytest
import torch

from fmlab.data import gmm_2d
from fmlab.paths import score_from_velocity
from fmlab.viz import score_sde as V
from fmlab.viz.widgets import View

GMM = gmm_2d("8modes")


def _exact(x, t):
    return GMM.velocity(x, t)


def _trace(fig, start):
    return next(tr for tr in fig.data if tr.name and tr.name.startswith(start))


def test_render_score_draws_the_closed_form_and_measures_a_learned_score():
    fig = V.render_score(0.4)
    assert "t = 0.40" in fig.layout.title.text and len(fig.data) == 2  # contour + closed-form arrows
    exact_from_v = lambda x, t: score_from_velocity(GMM.velocity(x.double(), t.double()), x.double(), t.double())  # noqa: E731
    good = V.render_score(0.4, learned=exact_from_v)
    assert "median relative error 0.00" in good.layout.title.text
    bad = V.render_score(0.4, learned=lambda x, t: -GMM.score(x.double(), t.double()))
    assert "median relative error 2.00" in bad.layout.title.text  # the flipped sign is off by twice its size
    arrows = np.asarray(_trace(good, "closed-form").x, dtype=float)
    assert np.allclose(arrows, np.asarray(_trace(good, "score from").x, dtype=float), equal_nan=True)
    with pytest.raises(ValueError, match="t must be < 1"):
        V.render_score(1.0)
    with pytest.raises(ValueError, match="t must lie"):
        V.render_score(-0.1)


def test_sde_paths_start_from_the_same_noise_and_become_diffusive():
    paths = V.SDEPaths(_exact, n=200, n_paths=10, steps=40)
    ode, sde = paths.run(0.0), paths.run(2.0)
    assert torch.equal(ode.xs[0], sde.xs[0])
    assert paths.run(2.0) is sde  # kept
    ratio = [float(fig.layout.title.text.split("chord = ")[1].split()[0]) for fig in (paths.render(0.0, 1.0),
                                                                                      paths.render(2.0, 1.0))]
    assert ratio[1] > ratio[0] + 0.5  # noise makes the paths longer than their chord
    early = paths.render(2.0, 0.25)
    assert "t = 0.25" in early.layout.title.text
    assert len(_trace(early, "particles").x) == 200
    with pytest.raises(ValueError, match="eta"):
        paths.run(-1.0)


def test_sde_paths_widget_wires_both_sliders():
    view = V.sde_paths_widget(_exact, n=100, n_paths=5, steps=20)
    assert isinstance(view, View) and set(view.controls) == {"eta", "t"}
    view.controls["eta"].value = 1.0
    view.controls["t"].value = 0.5
    assert view.status.value == "" and "η = 1.00, t = 0.50" in view.figure.layout.title.text


def test_eta_sweep_closed_form_stays_near_the_floor_and_a_wrong_field_does_not():
    sweep = V.eta_sweep(_exact, etas=(0.0, 1.0), seeds=(0, 1), n=300, steps=50)
    assert set(sweep.w2) == {0.0, 1.0} and all(len(v) == 2 for v in sweep.w2.values())
    assert max(max(v) for v in sweep.w2.values()) < 0.7
    shrunk = V.eta_sweep(lambda x, t: 0.3 * _exact(x, t), etas=(0.0,), seeds=(0,), n=300, steps=50)
    assert shrunk.w2[0.0][0] > 2 * max(max(v) for v in sweep.w2.values())
    assert "w2" in sweep.table("closed form") and len(sweep.mean_std(1.0)) == 2
    fig = V.render_w2_vs_eta({"closed-form v*": sweep}, floor=(0.3, 0.05))
    assert [tr.name for tr in fig.data][:2] == ["noise floor ± std", "noise floor"]


def test_mode_stats_of_exact_samples():
    x = GMM.sample(4000, generator=torch.Generator().manual_seed(0))
    tv, rms = V.mode_stats(x)
    assert tv < 0.05 and abs(rms - math.sqrt(2) * 0.5 / math.sqrt(2)) < 0.03  # std 0.5/sqrt 2 per coordinate
    tv_all_one, _ = V.mode_stats(GMM.means[:1].repeat(100, 1))
    assert abs(tv_all_one - 7 / 8) < 1e-9


def test_implied_weights_are_the_lab_six_identities():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    fm = V.implied_weight(t, "flow matching (velocity, w = 1)")
    assert torch.allclose(V.implied_weight(t, "x1 head, w = 1/(1-t)² (= flow matching)"), fm)
    assert torch.allclose(V.implied_weight(t, "x1 head, w = 1"), (1 - t) ** 2)
    assert torch.allclose(V.implied_weight(t, "eps head, w = 1 (DDPM's loss)"), t**2)
    snr = t**2 / (1 - t) ** 2
    minsnr = V.implied_weight(t, "min-SNR-γ (x1 head, w = min(SNR, γ))", gamma=5.0)
    assert torch.allclose(minsnr, torch.clamp(snr, max=5.0) * (1 - t) ** 2)
    # in x1 units the eps loss is SNR-weighted and flow matching 1 / (1 - t)^2
    assert torch.allclose(V.implied_weight(t, "eps head, w = 1 (DDPM's loss)", on="x1"), snr)
    with pytest.raises(ValueError, match="loss must be one of"):
        V.implied_weight(t, "cfm")


@pytest.mark.parametrize("axis", ["log_snr", "t"])
def test_weight_shares_integrate_to_one_and_follow_the_sampler(axis):
    lam, _, share = V.weight_profile("flow matching (velocity, w = 1)", axis=axis)
    assert float(torch.trapezoid(share, lam)) == pytest.approx(1.0)
    if axis == "log_snr":  # uniform t: the density of lambda is t (1 - t) / 2
        t = torch.sigmoid(lam / 2)
        assert torch.allclose(share, t * (1 - t) / 2 / torch.trapezoid(t * (1 - t) / 2, lam))
        # a Monte Carlo histogram of lambda(t), t ~ U(0, 1), has this density
        draws = 2 * torch.logit(torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        hist = torch.histc(draws, bins=20, min=-5, max=5) / (200_000 * 0.5)
        centres = torch.linspace(-4.75, 4.75, 20, dtype=torch.float64)
        tc = torch.sigmoid(centres / 2)
        assert torch.allclose(hist, tc * (1 - tc) / 2, atol=0.006)
    _, _, logit = V.weight_profile("flow matching (velocity, w = 1)", sampler="logit_normal", axis=axis)
    assert not torch.allclose(logit, share)


def test_render_weightings_and_widget():
    fig = V.render_weightings(gamma=2.0, sampler="logit_normal", axis="t")
    assert len(fig.data) == 2 * len(V.LOSSES) and "γ = 2" in fig.layout.title.text
    view = V.weightings_widget()
    view.controls["gamma"].value = 10.0
    assert view.status.value == "" and "γ = 10" in view.figure.layout.title.text
    with pytest.raises(ValueError, match="axis"):
        V.render_weightings(axis="snr")
