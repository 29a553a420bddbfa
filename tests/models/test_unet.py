"""UNet: shapes, documented preset sizes, math attention against PyTorch's reference kernel, forward-mode time
derivatives against finite differences, heads, bad input; and every registered loss trains it for one step."""

import dataclasses
import math

import pytest
import torch
from torch.func import jvp
from torch.nn import functional as F

from fmlab.losses import list_losses
from fmlab.models import UNET_PRESETS, build_unet, unet_stats
from fmlab.models.unet import Attention

torch.set_num_threads(1)

DOC_PARAMS_M = {"tiny": 0.304, "mini": 1.20, "small": 9.59, "base": 38.3, "large": 59.8}  # the module docstring


def _perturb(model, scale=0.05, seed=0):
    """Zero-initialised output layers make a fresh UNet output 0; give every weight some signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("time_inputs", [1, 2])
@pytest.mark.parametrize("size", [16, 32])
def test_output_shape_and_zero_start(time_inputs, size):
    model = build_unet("tiny", image_size=size, time_inputs=time_inputs, prediction="velocity")
    x = torch.randn(2, 3, size, size)
    times = [torch.rand(2)] * time_inputs
    out = model(x, *times)
    assert out.shape == x.shape
    assert out.abs().max() == 0  # zero-initialised head: the flow starts at rest
    assert _perturb(model)(x, *times).abs().max() > 0


def test_preset_parameter_counts_match_docs():
    for name, expected in DOC_PARAMS_M.items():
        with torch.device("meta"):  # no memory: count only
            model = build_unet(name, image_size=64)
        count = sum(p.numel() for p in model.parameters()) / 1e6
        assert count == pytest.approx(expected, rel=0.01), name
    assert set(DOC_PARAMS_M) == set(UNET_PRESETS)


def test_flops_of_tiny_match_docs():
    stats = unet_stats(build_unet("tiny", image_size=32))
    assert stats["gflops"] == pytest.approx(0.127, rel=0.02)  # attention at 8 px for a 32-px image
    assert stats["params_M"] == pytest.approx(0.3037, rel=0.01)


def test_math_attention_equals_reference_kernel():
    torch.manual_seed(0)
    attn = _perturb(Attention(32, head_dim=16), scale=0.3).eval()
    h = torch.randn(2, 32, 4, 4)
    b, c, hh, ww = h.shape
    q, k, v = attn.qkv(attn.norm(h)).reshape(b * attn.heads, 3 * c // attn.heads, hh * ww).chunk(3, dim=1)
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [BH, HW, d]
    ref = ref.transpose(1, 2).reshape(b, c, hh, ww)
    expected = (h + attn.proj(ref)) / math.sqrt(2)
    torch.testing.assert_close(attn(h), expected, atol=1e-5, rtol=1e-5)


def test_time_jvp_matches_finite_differences_two_time():
    torch.manual_seed(0)
    model = _perturb(build_unet("tiny", image_size=16, time_inputs=2, dropout=0.1)).double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    s = torch.tensor([0.1, 0.4], dtype=torch.float64)
    t = torch.tensor([0.6, 0.9], dtype=torch.float64)
    dx = torch.randn_like(x)
    tangents = (dx, torch.ones_like(s), torch.full_like(t, 0.5))
    _, du = jvp(lambda a, b, c: model(a, b, c), (x, s, t), tangents)
    h = 1e-5
    plus = model(x + h * dx, s + h, t + 0.5 * h)
    minus = model(x - h * dx, s - h, t - 0.5 * h)
    fd = (plus - minus) / (2 * h)
    assert du.abs().max() > 1e-3
    torch.testing.assert_close(du, fd, atol=1e-6, rtol=1e-5)


def test_jvp_runs_in_training_mode_with_dropout():
    model = _perturb(build_unet("tiny", image_size=16, time_inputs=2, dropout=0.2)).train()
    x, s, t = torch.randn(2, 3, 16, 16), torch.rand(2) * 0.5, torch.rand(2) * 0.5 + 0.5
    torch.manual_seed(1)
    u, du = jvp(lambda t_: model(x, s, t_), (t,), (torch.ones_like(t),))
    torch.manual_seed(1)
    torch.testing.assert_close(u, model(x, s, t))  # one dropout mask for primal and tangent
    assert torch.isfinite(du).all()


def test_channels_last_gives_the_same_output():
    model = _perturb(build_unet("tiny", image_size=16)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    ref = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_x1_head_is_converted_to_velocity():
    model = _perturb(build_unet("tiny", image_size=16, prediction="x1")).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.2, 0.7])
    x1_hat = model.predict(x, t)
    v = model(x, t)
    tt = t.view(-1, 1, 1, 1)
    expected = x1_hat - (x - tt * x1_hat) / (1 - tt + model.sigma_min)  # v = (x1 - x)/(1 - t), kept finite at t = 1
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=1e-5)


def test_t_delta_condition_depends_on_the_gap():
    model = _perturb(build_unet("tiny", image_size=16, time_inputs=2, time_condition="t_delta")).eval()
    x = torch.randn(1, 3, 16, 16)
    a = model(x, torch.tensor([0.2]), torch.tensor([0.6]))
    b = model(x, torch.tensor([0.3]), torch.tensor([0.6]))
    assert (a - b).abs().max() > 1e-4


def test_bad_input_raises():
    unet = build_unet("tiny", image_size=16).backbone
    with pytest.raises(ValueError, match="time input"):
        unet(torch.randn(1, 3, 16, 16), torch.rand(1), torch.rand(1))
    with pytest.raises(ValueError, match=r"x must be \[B, 3, H, W\]"):
        unet(torch.randn(1, 1, 16, 16), torch.rand(1))
    with pytest.raises(ValueError, match="divisible"):
        build_unet("small", image_size=20)
    with pytest.raises(ValueError, match="preset must be one of"):
        build_unet("huge")
    with pytest.raises(ValueError, match="unknown UNet override"):
        build_unet("tiny", width=3)
    with pytest.raises(ValueError, match="dropout"):
        build_unet("tiny", dropout=1.5)
    with pytest.raises(ValueError, match="two-time model predicts"):
        build_unet("tiny", time_inputs=2, prediction="x1")


# --- every registered loss trains the UNet -----------------------------------------------------------------------

def _velocity_teacher():
    """A frozen one-time UNet: a velocity field any distillation loss accepts as `teacher`."""
    teacher = _perturb(build_unet("tiny", image_size=8, attn_resolutions=(8,)), seed=3)
    return teacher.requires_grad_(False).eval()


@pytest.mark.parametrize("spec", list_losses(), ids=lambda s: s.name)
def test_every_registered_loss_trains_the_unet_one_step(spec):
    from fmlab.models.unet import UNetConfig
    from fmlab.train_images import ImageTrainConfig, ImageTrainer

    runtime = {"teacher": _velocity_teacher()} if "teacher" in spec.defaults else {}
    plain = {k: 2 for k in ("teacher_steps",) if k in spec.defaults}  # keep teacher ODE solves short
    config = ImageTrainConfig(loss=spec.name, model=UNetConfig(preset="tiny", image_size=8, dropout=0.0), batch_size=4,
                              steps=1, warmup=0, lr=1e-3, threads=1, sample_every=0, log_every=1, loss_settings=plain)
    model = _perturb(build_unet("tiny", image_size=8, attn_resolutions=(8,), time_inputs=spec.time_inputs,
                                prediction=spec.prediction), seed=1)

    def data(n, g):
        return torch.rand(n, 3, 8, 8, generator=g) * 2 - 1

    trainer = ImageTrainer(config, model=model, data_fn=data, runtime_settings=runtime)
    trainer._grid_due = lambda: False
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss, grad_norm, diagnostics, _ = trainer.train_step()
    assert torch.isfinite(loss) and torch.isfinite(grad_norm) and grad_norm > 0, spec.name
    moved = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert moved > 0, spec.name
    assert dataclasses.is_dataclass(trainer.config)
