"""Forward-mode derivatives by hand: each layer of the MLP returns its value and its tangent in one pass.

For u = f(p) and a direction dp, the tangent is du = f'(p) dp (a JVP). torch.func.jvp computes it for any network by
wrapping every operation in dual tensors; on the small 2D networks of the labs that per-operation overhead, not the
arithmetic, dominates (benchmarks/jvp.py). For the layers of fmlab's MLP the tangent is a few lines:

    Linear       z = W h + b          dz = W dh
    SiLU         y = z sigmoid(z)     dy = silu'(z) dz,  silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z)))
    Tanh         y = tanh(z)          dy = (1 - y^2) dz
    Fourier      e = [t, sin(w t), cos(w t)]      de = [dt, w cos(w t) dt, -w sin(w t) dt]

Every step is an ordinary differentiable torch operation (tanh's tangent is aten's tanh_backward kernel, which has a
derivative of its own; aten's silu_backward has none, so SiLU's is written out), so reverse-mode autograd runs through
the tangent too: losses that backpropagate through a JVP (EMD, LMD, TVM) get exact gradients. Tested against
torch.func.jvp in float64, values and parameter gradients through the tangent (tests/models/test_tangent.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embeddings import FourierTimeEmbedding

__all__ = ["TANGENT_LAYERS", "supports_tangents", "linear_jvp", "activation_jvp", "fourier_jvp", "sequential_jvp"]

TANGENT_LAYERS = (nn.Linear, nn.SiLU, nn.Tanh)


def supports_tangents(net: nn.Module) -> bool:
    """True if `net` is an nn.Sequential of Linear, SiLU and Tanh layers only (what `sequential_jvp` handles)."""
    return isinstance(net, nn.Sequential) and all(type(layer) in TANGENT_LAYERS for layer in net)


def linear_jvp(layer: nn.Linear, h: Tensor, dh: Tensor) -> tuple[Tensor, Tensor]:
    """(W h + b, W dh): two products, so that a backward through the value alone costs what it costs without the
    tangent (a loss that detaches the tangent, like MeanFlow's, never pays for it twice)."""
    return F.linear(h, layer.weight, layer.bias), F.linear(dh, layer.weight)


def activation_jvp(layer: nn.Module, z: Tensor, dz: Tensor) -> tuple[Tensor, Tensor]:
    """(act(z), act'(z) dz) for SiLU and Tanh."""
    if type(layer) is nn.SiLU:
        sig = torch.sigmoid(z)
        y = z * sig  # silu(z)
        return y, dz * (sig * (1 + z - y))  # silu'(z) = sig (1 + z (1 - sig)) = sig (1 + z - y)
    if type(layer) is nn.Tanh:
        y = torch.tanh(z)
        return y, torch.ops.aten.tanh_backward(dz, y)  # dz * (1 - y^2)
    raise TypeError(f"no tangent rule for {type(layer).__name__}; supported: "
                    f"{[c.__name__ for c in TANGENT_LAYERS]}")


def fourier_jvp(embed: FourierTimeEmbedding, t: Tensor, dt: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(emb(t), d emb(t) dt) for per-sample times t, dt [B]; dt None (zero) gives a None tangent."""
    angles = t[:, None] * embed.freqs  # [B, K]
    sin, cos = torch.sin(angles), torch.cos(angles)
    value = torch.cat([t[:, None], sin, cos], dim=-1)
    if dt is None:
        return value, None
    w_dt = embed.freqs * dt[:, None]  # w_k dt
    return value, torch.cat([dt[:, None], cos * w_dt, -sin * w_dt], dim=-1)  # d/dt [t, sin, cos] dt


def sequential_jvp(net: nn.Sequential, h: Tensor, dh: Tensor) -> tuple[Tensor, Tensor]:
    """(net(h), net'(h) dh) through Linear, SiLU and Tanh layers."""
    for layer in net:
        if type(layer) is nn.Linear:
            h, dh = linear_jvp(layer, h, dh)
        else:
            h, dh = activation_jvp(layer, h, dh)
    return h, dh
