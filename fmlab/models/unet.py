"""A residual UNet for images (DDPM++ / Karras-style), one- or two-time conditioned, JVP-friendly.

Written for fmlab from the published architecture descriptions (Ho et al. 2020; Song et al. 2021, DDPM++;
Dhariwal & Nichol 2021; Karras et al. 2022): no code is copied from the EDM/EDM2 repositories.

    x [B, C, H, W] --conv3x3--> ch * mult[0]
      encoder: for each level l: num_blocks x ResBlock (+ Attention if H_l in attn_resolutions), then Down
      middle:  ResBlock, Attention, ResBlock
      decoder: for each level l (reversed): (num_blocks + 1) x ResBlock on [h, skip] (+ Attention), then Up
    --GroupNorm, SiLU, conv3x3 (zero-initialised)--> [B, C, H, W]

    ResBlock(h, e):  a = conv3x3(SiLU(GN(h)));  a = GN(a) (1 + scale(e)) + shift(e)   (adaptive GroupNorm, FiLM)
                     a = conv3x3(Dropout(SiLU(a)));  out = (skip(h) + a) / sqrt(2)
    Attention(h):    q, k, v = 1x1 conv of GN(h);  softmax(q^T k / sqrt(d_head)) v in plain matmuls ("math"
                     attention, so torch.func.jvp has forward-mode rules for every op; fused SDPA kernels lack them)

Time conditioning: each time t in [0, 1] goes through fmlab.models.FourierTimeEmbedding (smooth in t, so d/dt of
the network is exact under forward-mode AD), then an MLP to the embedding e. Two-time networks (flow maps)
embed (s, t) or (t, t - s) ("st" / "t_delta") and sum the two embeddings' projections. A class-conditional UNet
(n_classes = C > 0) adds a label embedding e(y) (fmlab.models.conditioning; y = C: no label) to that sum before the
time MLP: `unet(x, t, y)`.

Presets (parameters and forward cost measured with `unet_stats`, 3 x 64 x 64 input, one time input;
GFLOPs = 2 x multiply-adds of one forward pass of one image, from torch.utils.flop_counter):

    preset  ch   mult        blocks  attention  params   GFLOPs/img (64x64)  use
    tiny    16   1,2,2       1       16         0.304M   0.53   (0.13 at 32x32)  tests, the lab's fast mode
    mini    32   1,2,2       1       16         1.20M    2.05   (0.50 at 32x32)  a laptop CPU's lesson
    small   64   1,2,2,2     2       16         9.59M    11.8                    the lab's default on a GPU
    base    128  1,2,2,2     2       16         38.3M    46.7                    DDPM's CIFAR-10 width
    large   160  1,2,2,2     2       16         59.8M    72.9                    the longest runs

(A two-time network adds one time-embedding projection: +4k parameters on tiny, +34k on base.)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checks import check_int
from ..paths import per_sample_time
from .conditioning import LabelEmbedding, check_n_classes, split_label
from .embeddings import FourierTimeEmbedding
from .mlp import TIME_CONDITIONS

__all__ = ["UNet", "UNET_PRESETS", "build_unet", "unet_stats", "ResBlock", "Attention", "Down", "Up"]

UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(channels=16, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(16,)),
    "mini": dict(channels=32, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(16,)),
    "small": dict(channels=64, channel_mult=(1, 2, 2, 2), num_blocks=2, attn_resolutions=(16,)),
    "base": dict(channels=128, channel_mult=(1, 2, 2, 2), num_blocks=2, attn_resolutions=(16,)),
    "large": dict(channels=160, channel_mult=(1, 2, 2, 2), num_blocks=2, attn_resolutions=(16,)),
}


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 where the width allows (DDPM), else the largest divisor <= 32 with >= 4 channels each."""
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 4 or g == 1:
            return g
    return 1


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """out = (skip(h) + conv(Dropout(SiLU(AdaGN(conv(SiLU(GN(h))), e))))) / sqrt(2)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # (scale, shift) of the adaptive GroupNorm
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))  # the block starts as the identity (skip only)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        a = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        a = self.norm2(a) * (1 + scale) + shift  # adaptive GroupNorm: GN(a) (1 + scale(e)) + shift(e)
        a = self.conv2(self.dropout(F.silu(a)))
        return (self.skip(h) + a) / math.sqrt(2)  # skip rescale keeps the variance of the sum


class Attention(nn.Module):
    """Multi-head self-attention over the H x W positions, softmax(q^T k / sqrt(d)) v in plain matmuls."""

    def __init__(self, channels: int, head_dim: int = 64):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, h: Tensor) -> Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b * self.heads, 3 * c // self.heads, hh * ww).chunk(3, dim=1)
        q = q * q.shape[1] ** -0.5  # scale q (C/heads x HW) rather than the HW x HW logits: same result, cheaper
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # softmax(q^T k / sqrt(d)): [B*heads, HW, HW]
        out = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)  # out_i = sum_j w_ij v_j
        return (h + self.proj(out)) / math.sqrt(2)


class Down(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(h)


class Up(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Residual UNet `unet(x, t)` (or `unet(x, s, t)` with time_inputs=2; `unet(x, t, y)` with n_classes > 0)
    -> [B, C, H, W], same shape as x.

    Times are per-sample tensors [B] (a scalar is broadcast) in [0, 1]; noise at t = 0, data at t = 1. The output is
    whatever head a wrapper (fmlab.models.Parametrised / FlowMapModel) makes of it. H and W must be divisible by
    2^(len(channel_mult) - 1). Attention runs at every level whose resolution is in `attn_resolutions` and in the
    middle. GroupNorm only (no BatchNorm), math attention, smooth time embedding: torch.func.jvp works throughout.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, channel_mult: tuple[int, ...] = (1, 2, 2, 2),
                 num_blocks: int = 2, attn_resolutions: tuple[int, ...] = (16,), dropout: float = 0.0,
                 image_size: int = 64, time_inputs: int = 1, time_condition: str = "st", head_dim: int = 64,
                 n_freqs: int = 32, n_classes: int = 0):
        super().__init__()
        _check_args(in_channels, channels, channel_mult, num_blocks, dropout, image_size, time_inputs,
                    time_condition)
        self.in_channels, self.image_size = in_channels, image_size
        self.time_inputs, self.time_condition = time_inputs, time_condition
        emb_dim = 4 * channels
        self.embed = FourierTimeEmbedding(n_freqs, w_min=1.0, w_max=100.0)  # moderate: d/dt stays O(100)
        self.time_proj = nn.ModuleList([nn.Linear(self.embed.dim, emb_dim) for _ in range(time_inputs)])
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())

        widths = [channels * m for m in channel_mult]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips, c, res = [widths[0]], widths[0], image_size
        for level, w in enumerate(widths):
            for _ in range(num_blocks):
                self.down.append(_Stage(ResBlock(c, w, emb_dim, dropout), w, res in attn_resolutions, head_dim))
                c = w
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(Down(c))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([_Stage(ResBlock(c, c, emb_dim, dropout), c, True, head_dim),
                                  _Stage(ResBlock(c, c, emb_dim, dropout), c, False, head_dim)])
        self.up = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(num_blocks + 1):
                self.up.append(_Stage(ResBlock(c + skips.pop(), w, emb_dim, dropout), w, res in attn_resolutions,
                                      head_dim))
                c = w
            if level > 0:
                self.up.append(Up(c))
                res *= 2
        self.head = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), _zero(nn.Conv2d(c, in_channels, 3,
                                                                                          padding=1)))
        self.n_classes = check_n_classes(n_classes)
        self.label = LabelEmbedding(n_classes, emb_dim) if n_classes else None

    def embedding(self, x: Tensor, times: tuple[Tensor | float, ...], y: Tensor | int | None = None) -> Tensor:
        """e = MLP(sum_i W_i emb(time_i) [+ e(y)]); with 't_delta' the two times are (t, t - s) instead of (s, t)."""
        times = tuple(per_sample_time(t, x) for t in times)
        if self.time_inputs == 2 and self.time_condition == "t_delta":
            s, t = times
            times = (t, t - s)
        e = sum(proj(self.embed(t)) for proj, t in zip(self.time_proj, times, strict=True))
        if self.label is not None:
            e = e + self.label(y, x.shape[0], x.device).to(e.dtype)  # the class embedding joins the time's
        return self.time_mlp(e)

    def forward(self, x: Tensor, *times: Tensor | float, y: Tensor | int | None = None) -> Tensor:
        times, y = split_label(times, self.time_inputs, y, self.n_classes)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        e = self.embedding(x, times, y)
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = block(h, e) if isinstance(block, _Stage) else block(h)
            hs.append(h)
        for block in self.mid:
            h = block(h, e)
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], dim=1), e) if isinstance(block, _Stage) else block(h)
        return self.head(h)


class _Stage(nn.Module):
    """A ResBlock, optionally followed by attention."""

    def __init__(self, res: ResBlock, channels: int, attention: bool, head_dim: int):
        super().__init__()
        self.res = res
        self.attn = Attention(channels, head_dim) if attention else None

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        h = self.res(h, e)
        return self.attn(h) if self.attn is not None else h


def _check_args(in_channels: int, channels: int, channel_mult: tuple[int, ...], num_blocks: int, dropout: float,
                image_size: int, time_inputs: int, time_condition: str) -> None:
    for name, value in (("in_channels", in_channels), ("channels", channels), ("num_blocks", num_blocks),
                        ("image_size", image_size)):
        check_int(value, name, 1)
    if not channel_mult or any(not isinstance(m, int) or m < 1 for m in channel_mult):
        raise ValueError(f"channel_mult must be a non-empty tuple of integers >= 1, got {channel_mult!r}")
    factor = 2 ** (len(channel_mult) - 1)
    if image_size % factor:
        raise ValueError(f"image_size must be divisible by 2^(len(channel_mult) - 1) = {factor}, got {image_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    if time_inputs not in (1, 2):
        raise ValueError(f"time_inputs must be 1 or 2, got {time_inputs}")
    if time_condition not in TIME_CONDITIONS:
        raise ValueError(f"time_condition must be one of {TIME_CONDITIONS}, got {time_condition!r}")


def build_unet(preset: str = "small", image_size: int = 64, in_channels: int = 3, prediction: str = "velocity",
               time_inputs: int = 1, dropout: float = 0.0, time_condition: str = "st", schedule: str = "linear",
               n_classes: int = 0, **overrides: Any) -> nn.Module:
    """A UNet preset wrapped in its parametrisation: Parametrised (velocity / x1 / eps head, `model(x, t)`) or,
    with time_inputs=2, FlowMapModel (average velocity, `model(x, s, t)`). `overrides` replace preset entries
    (channels, channel_mult, num_blocks, attn_resolutions, head_dim). A preset's attention resolutions are those of a
    64 x 64 image and scale with image_size (attention at 16 px for 64 px images, 8 for 32, 4 for 16), so a smaller
    image keeps the same architecture, level for level. The wrapper's `.config` rebuilds it
    (fmlab.train_images.build_image_model(**config)). n_classes > 0: a class-conditional one-time model
    `model(x, t, y)` (fmlab.models.conditioning)."""
    from .parametrisation import wrap_backbone

    if preset not in UNET_PRESETS:
        raise ValueError(f"preset must be one of {sorted(UNET_PRESETS)}, got {preset!r}")
    unknown = sorted(set(overrides) - {"channels", "channel_mult", "num_blocks", "attn_resolutions", "head_dim"})
    if unknown:
        raise ValueError(f"unknown UNet override(s) {unknown}; allowed: channels, channel_mult, num_blocks, "
                         f"attn_resolutions, head_dim")
    arch = dict(UNET_PRESETS[preset])
    arch["attn_resolutions"] = tuple(max(1, r * image_size // 64) for r in arch["attn_resolutions"])  # scale with size
    arch.update(overrides)
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    if n_classes and time_inputs != 1:
        raise ValueError(f"n_classes > 0 needs a one-time model (time_inputs=1), got time_inputs={time_inputs}")
    backbone = UNet(in_channels=in_channels, image_size=image_size, dropout=dropout, time_inputs=time_inputs,
                    time_condition=time_condition, n_classes=n_classes, **arch)
    model = wrap_backbone(backbone, prediction, time_inputs, schedule)
    model.config = dict(arch="unet", preset=preset, image_size=image_size, in_channels=in_channels,
                        prediction=prediction, time_inputs=time_inputs, dropout=dropout,
                        time_condition=time_condition, schedule=schedule,
                        **{k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})
    if n_classes:
        model.config["n_classes"] = n_classes  # only when conditional: unconditional configs stay as they were
    return model


def unet_stats(model: nn.Module, image_size: int | None = None, in_channels: int | None = None) -> dict[str, float]:
    """{'params_M': parameters in millions, 'gflops': GFLOPs of one forward pass of one image} (2 x multiply-adds,
    counted by torch.utils.flop_counter.FlopCounterMode; GroupNorm and activations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = getattr(model, "backbone", model)
    size = image_size or backbone.image_size
    c = in_channels or backbone.in_channels
    x = torch.zeros(1, c, size, size, device=next(model.parameters()).device)
    times = [torch.full((1,), 0.5, device=x.device)] * backbone.time_inputs
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        backbone(x, *times)
    params = sum(p.numel() for p in model.parameters())
    return {"params_M": params / 1e6, "gflops": counter.get_total_flops() / 1e9}
