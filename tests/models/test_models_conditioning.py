"""Class conditioning of the MLP and the UNet: the null label is model(x, t), a conditional network starts as its
unconditional twin (and leaves the unconditional initialisation untouched), labels change the output, and bad labels
are refused with clear messages (fmlab.models.conditioning)."""

import pytest
import torch

from fmlab.models import MLP, build_model, build_unet
from fmlab.models.conditioning import LabelEmbedding, label_args, n_classes_of, null_label


def _inputs(n=6, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.rand(n, generator=g)


def _randomise_labels(model):
    with torch.no_grad():
        table = model.backbone.label.table
        table.copy_(torch.randn(table.shape, generator=torch.Generator().manual_seed(5)))


def test_unconditional_initialisation_is_unchanged_and_the_twin_starts_equal():
    torch.manual_seed(0)
    plain = build_model(hidden=16, depth=2)
    torch.manual_seed(0)
    cond = build_model(hidden=16, depth=2, n_classes=3)
    for name, p in plain.state_dict().items():
        assert torch.equal(p, cond.state_dict()[name])  # the label table draws no random numbers
    assert set(cond.state_dict()) - set(plain.state_dict()) == {"backbone.label.table"}
    x, t = _inputs()
    assert torch.equal(cond(x, t, torch.tensor([0, 1, 2, 3, 0, 1])), plain(x, t))  # zero table: labels change nothing
    assert "n_classes" not in plain.config and cond.config["n_classes"] == 3


def test_null_label_is_the_unconditional_call_and_labels_matter():
    model = build_model(hidden=16, depth=2, n_classes=3)
    _randomise_labels(model)
    x, t = _inputs()
    assert torch.equal(model(x, t), model(x, t, 3)) and torch.equal(model(x, t), model(x, t, torch.full((6,), 3)))
    a, b = model(x, t, 0), model(x, t, 1)
    assert not torch.allclose(a, b) and not torch.allclose(a, model(x, t))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    per_row = model(x, t, y)
    for c in range(3):
        assert torch.allclose(per_row[y == c], model(x, t, c)[y == c])
    backbone = model.backbone
    assert torch.equal(backbone(x, t, y), backbone(x, t, y=y))  # positional or keyword label
    assert n_classes_of(model) == 3 and null_label(model) == 3 and label_args(None) == () and label_args(y) == (y,)


def test_x1_head_and_gradients_reach_the_used_rows_only():
    model = build_model(hidden=16, depth=2, n_classes=4, prediction="x1")
    _randomise_labels(model)
    x, t = _inputs()
    t = t.clamp(max=0.9)
    v = model(x, t, 1)
    x1_hat, tc = model.predict(x, t, 1), t[:, None]
    expected = x1_hat - (x - tc * x1_hat) / (1 - tc + model.sigma_min)  # v = (x1_hat - x) / (1 - t) at eps = 0
    assert torch.allclose(v, expected, rtol=1e-5)
    model(x, t, torch.tensor([0, 0, 2, 2, 4, 4])).pow(2).sum().backward()
    grad_rows = model.backbone.label.table.grad.abs().sum(1)
    assert grad_rows[[0, 2, 4]].gt(0).all() and grad_rows[[1, 3]].eq(0).all()


def test_conditional_unet():
    torch.manual_seed(0)
    plain = build_unet("tiny", image_size=8)
    torch.manual_seed(0)
    cond = build_unet("tiny", image_size=8, n_classes=2)
    assert all(torch.equal(p, cond.state_dict()[k]) for k, p in plain.state_dict().items())
    assert cond.config["n_classes"] == 2 and "n_classes" not in plain.config
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.rand(3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for p in cond.parameters():  # the zero-initialised output conv would hide every input
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        assert torch.equal(cond(x, t), cond(x, t, 2))
        assert not torch.allclose(cond(x, t, 0), cond(x, t, 1))
        assert cond.backbone(x, t, torch.tensor([0, 1, 2])).shape == x.shape


@pytest.mark.parametrize("call, match", [
    (lambda m, x, t: m(x, t, 4), r"labels y must lie in \[0, 3\]"),
    (lambda m, x, t: m(x, t, torch.tensor([0.0] * 6)), "integers"),
    (lambda m, x, t: m(x, t, torch.tensor([0, 1])), r"shape \[B\] = \[6\]"),
    (lambda m, x, t: m.backbone(x, t, 1, y=1), "given twice"),
    (lambda m, x, t: m.backbone(x), "time input"),
    (lambda m, x, t: build_model(hidden=8, depth=1)(x, t, 0), "unconditional"),
    (lambda m, x, t: build_model(n_classes=2, time_inputs=2), "one-time model"),
    (lambda m, x, t: MLP(n_classes=-1), "n_classes must be"),
    (lambda m, x, t: LabelEmbedding(0, 4), "n_classes must be >= 1"),
    (lambda m, x, t: null_label(build_model(hidden=8, depth=1)), "unconditional"),
    (lambda m, x, t: build_unet("tiny", image_size=8, n_classes=2, time_inputs=2), "one-time model"),
])
def test_bad_labels(call, match):
    model = build_model(hidden=16, depth=2, n_classes=3)
    x, t = _inputs()
    with pytest.raises(ValueError, match=match):
        call(model, x, t)
