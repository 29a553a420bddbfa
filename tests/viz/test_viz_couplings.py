"""fmlab.viz.couplings (lab 05 figures) and fmlab.exercises.couplings: minibatch pairing, crossing lines, the k-NN
posterior variance against the mixture's closed form, few-step samples."""

import re

import pytest
import torch

from fmlab.couplings import couple, pairing_cost
from fmlab.data import gmm_2d
from fmlab.exercises import couplings as ex
from fmlab.viz import couplings as C
from fmlab.viz.style import NOTEBOOK_WIDTH

torch.set_num_threads(1)
GMM = gmm_2d("8modes")


def pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x1 = GMM.sample(n, generator=g)
    return torch.randn(x1.shape, generator=g), x1


def test_batch_sizes():
    assert C.batch_sizes(16) == [1, 2, 4, 8, 16] and C.batch_sizes(100)[-2:] == [64, 100] and C.batch_sizes(1) == [1]
    with pytest.raises(ValueError, match="n must"):
        C.batch_sizes(0)


def test_minibatch_pairs_interpolate_between_independent_and_exact_ot():
    x0, x1 = pairs(64)
    assert torch.equal(C.minibatch_pairs(x0, x1, 1), x1)  # batch 1: the pairing as drawn
    assert torch.equal(C.minibatch_pairs(x0, x1, 64), couple(x0, x1, "ot").x1)  # one batch: exact OT
    costs = [pairing_cost(x0, C.minibatch_pairs(x0, x1, b)) for b in (1, 8, 64)]
    assert costs[0] > costs[1] > costs[2]
    mixed = C.minibatch_pairs(x0, x1, 24)  # blocks 24, 24, 16: a permutation inside each block
    assert torch.equal(mixed[:24].sort(0).values, x1[:24].sort(0).values)
    assert torch.equal(mixed[48:].sort(0).values, x1[48:].sort(0).values)
    with pytest.raises(ValueError, match="batch_size"):
        C.minibatch_pairs(x0, x1, 0)
    with pytest.raises(ValueError, match="method"):
        C.minibatch_pairs(x0, x1, 4, "greedy")


def test_crossing_fraction_on_hand_made_segments():
    x0 = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert C.crossing_fraction(x0, torch.tensor([[1.0, 1.0], [1.0, 0.0]])) == 1.0  # an X
    assert C.crossing_fraction(x0, torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == 0.0  # parallel
    x0, x1 = pairs(128, seed=1)
    assert C.crossing_fraction(x0, couple(x0, x1, "ot").x1) < 0.25 * C.crossing_fraction(x0, x1)
    with pytest.raises(ValueError, match="shape"):
        C.crossing_fraction(torch.zeros(3, 3), torch.zeros(3, 3))


def test_render_coupling_and_widget():
    x0, x1 = pairs(32)
    fig = C.render_coupling(x0, x1, 8)
    assert "batch size 8" in fig.layout.title.text and sum(v is None for v in fig.data[0].x) == 32
    assert C.render_coupling(x0, x1, 1).layout.title.text.startswith("independent pairs")
    view = C.coupling_widget(x0, x1, batch_size=1)
    assert list(view.controls["batch_size"].options) == [1, 2, 4, 8, 16, 32]
    before = view.figure.layout.title.text
    view.controls["batch_size"].value = 32
    assert "batch size 32" in view.figure.layout.title.text and view.figure.layout.title.text != before


def test_sinkhorn_view_blurs_the_coupling_as_reg_grows():
    g = torch.Generator().manual_seed(0)
    x1, x0 = gmm_2d("8modes").sample(96, generator=g), torch.randn(96, 2, generator=g)
    sharp, blurred = C.render_sinkhorn_coupling(x0, x1, 0.01, n_show=16), C.render_sinkhorn_coupling(x0, x1, 1.0,
                                                                                                       n_show=16)

    def ratio_and_partners(fig):
        cost, partners = re.findall(r"cost ([0-9.]+)x.*?([0-9.]+) partners", fig.layout.title.text)[0]
        return float(cost), float(partners)

    (c_sharp, p_sharp), (c_blur, p_blur) = ratio_and_partners(sharp), ratio_and_partners(blurred)
    assert 1.0 <= c_sharp < 1.1 < c_blur and p_sharp < p_blur  # entropic blur: more partners, costlier pairs
    assert sum(tr.name.startswith("weight") for tr in sharp.data) == 3
    view = C.sinkhorn_widget(x0, x1, reg=0.1)
    view.controls["reg"].value = 0.3
    assert "reg = 0.3" in view.figure.layout.title.text and view.status.value == ""


def test_knn_posterior_variance_matches_the_closed_form_for_independent_pairs():
    x0, x1 = pairs(4096, seed=2)
    x0, x1 = x0.double(), x1.double()
    for t in (0.0, 0.5, 0.8):
        closed = float(GMM.posterior_variance((1 - t) * x0 + t * x1, t).mean())
        assert C.posterior_variance_knn(x0, x1, t) == pytest.approx(closed, rel=0.1, abs=0.03), t
    ot = C.minibatch_pairs(x0, x1, 256)
    assert C.posterior_variance_knn(x0, ot, 0.5) < 0.25 * C.posterior_variance_knn(x0, x1, 0.5)
    with pytest.raises(ValueError, match="k must"):
        C.posterior_variance_knn(x0, x1, 0.5, k=1)
    with pytest.raises(ValueError, match="t must"):
        C.posterior_variance_knn(x0, x1, -0.1)


def test_posterior_variance_curves_and_figure():
    times = [0.0, 0.5, 1.0]
    curves = C.posterior_variance_curves(GMM, times, n=512, batch_sizes=(8, 128), k=16)
    assert list(curves) == ["independent, closed form", "independent, k-NN estimate", "OT, batch 8, k-NN estimate",
                            "OT, batch 128, k-NN estimate"]
    assert curves["independent, closed form"][0] == pytest.approx(8.25, rel=0.1)  # tr Cov[x1] at t = 0
    assert curves["OT, batch 128, k-NN estimate"][1] < curves["OT, batch 8, k-NN estimate"][1]
    fig = C.render_posterior_variance(times, curves)
    assert [d.name for d in fig.data] == list(curves) and fig.data[0].line.color == "#000000"


def test_few_step_samples_grid_widget_and_table():
    x0, _ = pairs(64, seed=3)
    data = GMM.sample(64, generator=torch.Generator().manual_seed(4))
    fields = {"exact": lambda x, t: GMM.velocity(x, t), "zero": lambda x, t: torch.zeros_like(x)}
    samples = C.sample_steps(fields, x0, 1)
    assert torch.allclose(samples["zero"], x0) and samples["exact"].std(0).max() < 0.5  # 1 step: onto the mean
    fig = C.render_samples_grid(samples, data, 1)
    assert fig.layout.annotations[0].text.startswith("exact: W2 = ") and "1 Euler step " in fig.layout.title.text
    models = dict(fields)
    view = C.samples_widget(models, x0, data)
    models["added later"] = fields["zero"]  # a lab adding a model afterwards does not change this widget
    view.controls["steps"].value = 4
    assert "4 Euler steps" in view.figure.layout.title.text and len(view.figure.layout.annotations) == 2
    three = C.render_samples_grid({**samples, "third": samples["zero"]}, data, 1)
    assert three.layout.width <= NOTEBOOK_WIDTH  # three panels are not clipped in a notebook
    table = C.w2_table(fields, x0, data, steps=(1, 8))
    assert table["exact"][8] < table["exact"][1] and set(table["zero"]) == {1, 8}
    chart = C.render_w2_vs_steps(table, floor=0.2)
    assert [d.name for d in chart.data] == ["exact", "zero", "noise floor (data vs data)"]


def test_exercise_checkers():
    assert ex.check_ot_pairing([1, 2, 0], quiet=True)
    assert not ex.check_ot_pairing([0, 1, 2], quiet=True)
    assert not ex.check_ot_pairing([0, 0, 1], quiet=True) and not ex.check_ot_pairing("abc", quiet=True)
    x0, x1 = pairs(50000, seed=5)
    assert ex.check_independent_cost(pairing_cost(x0, x1), quiet=True)
    assert not ex.check_independent_cost(8.25, quiet=True)
    assert ex.check_posterior_variance_t0(8.25, quiet=True) and not ex.check_posterior_variance_t0(8.0, quiet=True)
