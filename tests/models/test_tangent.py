import pytest
import torch
from torch import nn
from torch.func import jvp

import fmlab.flowmaps as flowmaps
from fmlab.models import build_model
from fmlab.models.mlp import MLP


def _inputs(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    s, t = torch.rand(n, generator=g, dtype=torch.float64) * 0.5, torch.rand(n, generator=g, dtype=torch.float64)
    dx, ds, dt = (torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64),
                  torch.randn(n, generator=g, dtype=torch.float64))
    return (x, s, t), (dx, ds, dt)


def _mlp(time_inputs, time_condition="st", act=nn.SiLU):
    torch.manual_seed(0)
    mlp = MLP(hidden=16, depth=3, time_inputs=time_inputs, time_condition=time_condition, time_freq_max=30.0).double()
    for i, layer in enumerate(mlp.net):
        if isinstance(layer, nn.SiLU):
            mlp.net[i] = act()
    return mlp


def _grads(mlp, fn, x):
    """Gradients of L = <a, u> + <b, du> w.r.t. the parameters and x (a, b fixed): reverse mode through the tangent."""
    mlp.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    u, du = fn(x)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(u.shape, generator=g, dtype=u.dtype), torch.randn(u.shape, generator=g, dtype=u.dtype)
    ((a * u).sum() + (b * du).sum() + (du * du).sum()).backward()
    return [p.grad.clone() for p in mlp.parameters()] + [x.grad.clone()], (u.detach(), du.detach())


@pytest.mark.parametrize("time_inputs, condition, act", [(1, "st", nn.SiLU), (2, "st", nn.SiLU),
                                                         (2, "t_delta", nn.SiLU), (2, "st", nn.Tanh),
                                                         (2, "t_delta", nn.Tanh)])
@pytest.mark.parametrize("missing", [(), ("ds",), ("dx", "ds"), ("dx", "dt")])
def test_hand_jvp_matches_torch_func_jvp_values_and_gradients(time_inputs, condition, act, missing):
    mlp = _mlp(time_inputs, condition, act)
    (x, s, t), (dx, ds, dt) = _inputs()
    primals, tangents = (x, s, t)[:1 + time_inputs], dict(dx=dx, ds=ds, dt=dt)
    names = ("dx", "ds", "dt") if time_inputs == 2 else ("dx", "dt")
    given = tuple(None if k in missing else tangents[k] for k in names)
    filled = tuple(torch.zeros_like(p) if d is None else d for p, d in zip(primals, given, strict=True))
    ours, (u, du) = _grads(mlp, lambda x_: mlp.jvp((x_, *primals[1:]), given), x)
    ref, (u_ref, du_ref) = _grads(mlp, lambda x_: jvp(mlp, (x_, *primals[1:]), filled), x)
    assert torch.allclose(u, u_ref, rtol=1e-12, atol=1e-13) and torch.allclose(du, du_ref, rtol=1e-12, atol=1e-13)
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_scalar_times_and_no_grad():
    mlp = _mlp(2)
    (x, s, t), (dx, _, _) = _inputs()
    with torch.no_grad():
        u, du = mlp.jvp((x, 0.2, 0.7), (dx, None, 1.0))
    u_ref, du_ref = jvp(mlp, (x, torch.full((7,), 0.2, dtype=x.dtype), torch.full((7,), 0.7, dtype=x.dtype)),
                        (dx, torch.zeros(7, dtype=x.dtype), torch.ones(7, dtype=x.dtype)))
    assert torch.allclose(u, u_ref, rtol=1e-12) and torch.allclose(du, du_ref, rtol=1e-12)


def test_layers_without_a_rule_fall_back_to_torch_func():
    mlp = _mlp(2, act=nn.GELU)
    (x, s, t), (dx, ds, dt) = _inputs()
    u, du = mlp.jvp((x, s, t), (dx, None, dt))
    u_ref, du_ref = jvp(mlp, (x, s, t), (dx, torch.zeros_like(s), dt))
    assert torch.allclose(u, u_ref) and torch.allclose(du, du_ref)
    with pytest.raises(ValueError, match="takes x and 2 time"):
        mlp.jvp((x, s), (dx, ds))


def test_flow_map_jvp_uses_the_models_own_jvp(monkeypatch):
    torch.manual_seed(0)
    model = build_model(time_inputs=2, hidden=16, depth=2).double()
    (x, s, t), (dx, ds, dt) = _inputs()
    reference = flowmaps.flow_map_jvp(lambda *a: model(*a), x, s, t, dx, ds)  # a plain callable: torch.func.jvp

    def refuse(*args, **kwargs):
        raise AssertionError("torch.func.jvp was called")

    monkeypatch.setattr(flowmaps, "jvp", refuse)
    u, du = flowmaps.flow_map_jvp(model, x, s, t, dx, ds)
    assert torch.allclose(u, reference[0], rtol=1e-12) and torch.allclose(du, reference[1], rtol=1e-12)
    _, dX = flowmaps.flow_map_X_jvp(model, x, s, t, dt=torch.ones_like(t))
    assert torch.isfinite(dX).all()
