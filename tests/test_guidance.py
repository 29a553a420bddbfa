"""The guided sampler (fmlab.guidance): the CFG combination, one batched network call on [y; null], and guided
sampling of an exact conditional "model" against the exact guided ODE of the labelled mixture."""

import pytest
import torch
from torch import nn

from fmlab.data.labelled import labelled_2d
from fmlab.guidance import cfg_combine, cycle_labels, guided_field, sample_guided
from fmlab.models import build_model
from fmlab.sampling import generate


class ExactModel(nn.Module):
    """The labelled mixture's exact velocity behind the model contract model(x, t[, y]); counts its calls."""

    def __init__(self, mixture):
        super().__init__()
        self.mixture, self.n_classes, self.calls = mixture, mixture.n_classes, []
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        self.calls.append(len(x))
        return self.mixture.velocity(x, t, y)


def test_cfg_combine_endpoints_and_per_sample_scales():
    g = torch.Generator().manual_seed(0)
    v_c, v_u = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    assert torch.equal(cfg_combine(v_c, v_u, 0.0), v_u)
    assert torch.allclose(cfg_combine(v_c, v_u, 1.0), v_c)
    assert torch.allclose(cfg_combine(v_c, v_u, 3.0), 3 * v_c - 2 * v_u)
    w = torch.arange(5.0)
    assert torch.allclose(cfg_combine(v_c, v_u, w), v_u + w[:, None] * (v_c - v_u))
    images_c, images_u = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    w = torch.tensor([0.0, 1.0, 2.0])
    out = cfg_combine(images_c, images_u, w)
    assert torch.equal(out[0], images_u[0]) and torch.allclose(out[2], 2 * images_c[2] - images_u[2])
    with pytest.raises(ValueError, match=r"w must be a float or have shape \[B\] = \[5\]"):
        cfg_combine(v_c, v_u, torch.ones(2))
    with pytest.raises(ValueError, match="same shape"):
        cfg_combine(v_c, v_u[:3], 1.0)


def test_guided_field_is_one_batched_call_on_y_and_null():
    mixture = labelled_2d("8modes_halves")
    model = ExactModel(mixture)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.full((7,), 0.4, dtype=torch.float64)
    field = guided_field(model, 1, 2.5)
    v = field(x, t)
    assert model.calls == [14]
    assert torch.allclose(v, mixture.guided_velocity(x, t, 1, 2.5), atol=1e-12)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0])
    assert torch.allclose(guided_field(model, y, 0.0)(x, t), mixture.velocity(x, t), atol=1e-12)
    assert torch.allclose(guided_field(model, y, 1.0)(x, t), mixture.velocity(x, t, y), atol=1e-12)


def test_sampling_an_exact_model_reproduces_the_exact_guided_ode():
    mixture = labelled_2d("8modes")
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    w = torch.linspace(0, 6, 64, dtype=torch.float64)
    labels = cycle_labels(64, 8)
    ours = sample_guided(ExactModel(mixture), x0, labels, w, steps=30, method="rk4")
    exact = mixture.guided_flow(x0, labels, w, steps=30, method="rk4")
    assert torch.allclose(ours, exact, atol=1e-10)


def test_generate_and_errors():
    model = build_model(hidden=8, depth=1, n_classes=3)
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    a = generate(model, "cfm", x0, 4, "heun", labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.allclose(a, sample_guided(model, x0, None, 1.0, steps=4, method="heun"))
    assert torch.equal(cycle_labels(5, 3), torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        guided_field(build_model(hidden=8, depth=1), 0, 2.0)
    with pytest.raises(ValueError, match="class-conditional model"):
        generate(build_model(hidden=8, depth=1), "cfm", x0, 2, guidance=2.0)
    with pytest.raises(ValueError, match=r"labels must be an int or have shape \[B\] = \[6\]"):
        guided_field(model, torch.tensor([0, 1]), 2.0)(x0, torch.zeros(6))
