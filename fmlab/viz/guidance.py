"""Figures and measurements for the guidance lab: a class-conditional model of the labelled 8 Gaussians, its
classifier-free guided samples and field against the exact ones, and W2 to the class-conditional mixture against
the guidance scale w.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data; x_t = (1 - t) x0 + t x1. The guided field is
v_w(x, t | c) = v(x, t) + w (v(x, t | c) - v(x, t)) (fmlab.guidance; w = 0 unconditional, w = 1 conditional). Three
samples are compared with the class-conditional data p(x | c) for each w:

- the model's guided samples (`fmlab.guidance.sample_guided`, Euler);
- the exact guided ODE: the closed-form v_w of the mixture integrated with RK4 (`LabelledMixture.guided_flow`), what a
  perfect model would sample;
- the exact tilted density p(x | c)^w p(x)^(1 - w) (`LabelledMixture.sample_tilted`), what guidance is often said to
  sample and does not.

W2 is the exact Wasserstein-2 distance (fmlab.metrics.wasserstein) between n samples and n fresh draws of p(x | c);
its floor is W2 between two independent draws of p(x | c) of that size. Samples are computed once per (class, w) and
kept, so moving a slider back is instant.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

from ..checks import check_int
from ..data.labelled import LabelledMixture, labelled_2d
from ..guidance import guided_field, sample_guided
from ..metrics import wasserstein
from .fields import quiver_xy
from .style import COLORS, NOTEBOOK_WIDTH, apply_style
from .training import AXIS_X, AXIS_Y, EXTENT, density_contour, grid
from .widgets import View, dropdown, interactive_view, slider, t_slider

__all__ = ["DATA", "P_UNCOND", "GUIDANCE_MODEL", "W_MAX", "W_GRID", "REFERENCES", "lab_config", "GuidanceStudy",
           "guidance_widget", "render_guidance", "combined_w2",
           "mode_table", "prewarm_jobs"]

DATA = "8modes_halves"  # the 8 Gaussians, modes 0-3 (upper half) class 0, modes 4-7 class 1
P_UNCOND = 0.2  # label dropout: the share of training labels replaced by the null label
GUIDANCE_MODEL = {"hidden": 128, "depth": 3, "batch_size": 256, "lr": 2e-3, "warmup": 100, "ema_decay": 0.995}
W_MAX = 8.0
W_GRID = tuple(float(w) for w in range(9))  # the scales of the W2 curve: 0, 1, ..., 8
REFERENCES = {"exact guided ODE (what a perfect model samples)": "ode",
              "tilted density p(x|c)^w p(x)^(1-w)": "tilted"}


def lab_config(steps: int, seed: int = 0, threads: int | None = 1, **overrides):
    """The fmlab.train.TrainConfig of the lab's class-conditional model (GUIDANCE_MODEL, cfm loss, label dropout
    P_UNCOND) on DATA, trained for `steps` optimizer steps; `overrides` replace GUIDANCE_MODEL's entries."""
    from ..train import TrainConfig

    return TrainConfig(data=DATA, loss="cfm", n_classes=2, p_uncond=P_UNCOND, steps=steps, seed=seed,
                       threads=threads, log_every=max(1, steps // 20), **{**GUIDANCE_MODEL, **overrides})


@functools.lru_cache(maxsize=2)
def _mixture(name: str) -> LabelledMixture:
    return labelled_2d(name)


@dataclass
class GuidanceStudy:
    """Samples of one conditional `model` and of the exact mixture at every guidance scale, computed on demand and
    kept. n samples per (class, w) from the noise seed `seed`; `steps` Euler steps for the model, `exact_steps` RK4
    steps for the exact guided ODE."""

    model: nn.Module
    n: int = 1000
    steps: int = 50
    exact_steps: int = 50
    seed: int = 0
    data: str = DATA
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_int(self.n, "n", 2)
        self.mixture = _mixture(self.data)
        self.x0 = torch.randn(self.n, 2, generator=torch.Generator().manual_seed(self.seed))

    def _key(self, kind: str, c: int, w: float) -> tuple:
        if not 0 <= w <= W_MAX:
            raise ValueError(f"w must lie in [0, {W_MAX}], got {w}")
        return kind, int(c), round(float(w), 6)

    def _memo(self, key: tuple, fn) -> Tensor:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def model_samples(self, c: int, w: float) -> Tensor:
        """The model's guided samples of class c at scale w, [n, 2] float64."""
        return self._memo(self._key("model", c, w), lambda: sample_guided(
            self.model, self.x0, int(c), float(w), steps=self.steps).double())

    def exact_ode(self, c: int, w: float) -> Tensor:
        """The exact guided ODE from the same noise, [n, 2] float64."""
        return self._memo(self._key("ode", c, w), lambda: self.mixture.guided_flow(
            self.x0, int(c), float(w), steps=self.exact_steps))

    def tilted(self, c: int, w: float) -> Tensor:
        """n exact draws of the tilted density p(x | c)^w p(x)^(1 - w), [n, 2] float64."""
        g = torch.Generator().manual_seed(self.seed + 1)
        return self._memo(self._key("tilted", c, w), lambda: self.mixture.sample_tilted(self.n, int(c), float(w), g))

    def target(self, c: int, offset: int = 0) -> Tensor:
        """n fresh draws of p(x | c) (seed + 2 + offset), the reference of every W2."""
        key = ("target", int(c), offset)
        g = torch.Generator().manual_seed(self.seed + 2 + offset)
        return self._memo(key, lambda: self.mixture.sample_class(self.n, int(c), g).double())

    def floor(self, c: int) -> float:
        """W2 between two independent draws of p(x | c) of size n (what a perfect sampler scores)."""
        return self._memo(("floor", int(c)), lambda: wasserstein(self.target(c), self.target(c, offset=1)))

    def w2(self, kind: str, c: int, w: float) -> float:
        """W2 of the `kind` samples ('model', 'ode', 'tilted') of class c at scale w to p(x | c)."""
        sample = {"model": self.model_samples, "ode": self.exact_ode, "tilted": self.tilted}[kind]
        return self._memo(("w2", kind, int(c), round(float(w), 6)), lambda: wasserstein(sample(c, w), self.target(c)))

    def curve(self, kind: str, c: int, ws=W_GRID) -> list[float]:
        return [self.w2(kind, c, w) for w in ws]


def _scatter(x: Tensor, name: str, color: str, size: int = 4, opacity: float = 0.6, **kw) -> go.Scatter:
    x = x.detach().cpu().double().numpy()
    return go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", name=name, marker=dict(color=color, size=size,
                                                                                      opacity=opacity), **kw)


@functools.lru_cache(maxsize=8)
def _class_contour(data: str, c: int) -> go.Contour:
    con = density_contour(_mixture(data).class_mixture(c), 1.0)
    con.name = "p(x | c), exact"
    return con


def render_guidance(study: GuidanceStudy, w: float = 1.0, c: int = 0, t: float = 0.5, reference: str = "ode",
                    n_arrows: int = 13, max_len: float = 0.5) -> go.Figure:
    """Three panels for guidance scale w and class c.

    Left: the model's guided samples (green) and the reference (black: the exact guided ODE or the tilted density,
    `reference` 'ode' / 'tilted') over the contours of the exact p(x | c). Middle: the guided field v_w at time t,
    the model's (green) and the exact one (black), arrows at 0.15 x the velocity capped at `max_len`. Right: W2 to
    p(x | c) against w for the three samplers, the floor (grey) and the current w (vermillion)."""
    if reference not in REFERENCES.values():
        raise ValueError(f"reference must be one of {list(REFERENCES.values())}, got {reference!r}")
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t must lie in [0, 1), got {t}")
    mix = study.mixture
    fig = make_subplots(rows=1, cols=3, column_widths=[0.34, 0.34, 0.32], horizontal_spacing=0.07,
                        subplot_titles=("samples at w", f"guided field v<sub>w</sub> at t = {t:.2f}",
                                        "W2 to p(x | c) against w"))
    fig.add_trace(_class_contour(study.data, int(c)), row=1, col=1)
    ref = study.exact_ode(c, w) if reference == "ode" else study.tilted(c, w)
    ref_name = "exact guided ODE" if reference == "ode" else "tilted density (exact)"
    fig.add_trace(_scatter(ref, ref_name, COLORS["reference"], size=3, opacity=0.5), row=1, col=1)
    fig.add_trace(_scatter(study.model_samples(c, w), "model, guided", COLORS["model"]), row=1, col=1)

    pts = grid(EXTENT, n_arrows).double()
    tt = torch.full((len(pts),), float(t), dtype=torch.float64)
    exact = mix.guided_velocity(pts, tt, int(c), float(w))
    with torch.no_grad():
        mine = guided_field(study.model, int(c), float(w))(pts.float(), tt.float()).double()
    for v, name, color in ((exact, "exact v<sub>w</sub>", COLORS["reference"]),
                           (mine, "model v<sub>w</sub>", COLORS["model"])):
        xs, ys = quiver_xy(pts, 0.15 * v, max_len=max_len)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1.4), name=name), row=1,
                      col=2)

    names = {"model": ("model", COLORS["model"]), "ode": ("exact guided ODE", COLORS["reference"]),
             "tilted": ("tilted density", COLORS["ot"])}
    for kind, (name, color) in names.items():
        fig.add_trace(go.Scatter(x=list(W_GRID), y=study.curve(kind, c), mode="lines+markers", name=f"W2: {name}",
                                 line=dict(color=color)), row=1, col=3)
    floor = study.floor(c)
    fig.add_trace(go.Scatter(x=[0, W_MAX], y=[floor, floor], mode="lines", name="floor (data vs data)",
                             line=dict(color=COLORS["path"], dash="dash")), row=1, col=3)
    fig.add_vline(x=float(w), line=dict(color=COLORS["highlight"], width=2), row=1, col=3)
    here = study.w2("model", c, w)
    apply_style(fig, title=f"class {c} ({mix.class_names[int(c)]}), w = {w:g}: model W2 = {here:.3f}, "
                           f"floor {floor:.3f}")
    fig.update_layout(width=NOTEBOOK_WIDTH, height=470, legend=dict(orientation="h", y=-0.18, x=0.0),
                      margin=dict(t=80, b=120))
    for col in (1, 2):
        fig.update_xaxes(range=[-EXTENT, EXTENT], title_text=AXIS_X, row=1, col=col)
        fig.update_yaxes(range=[-EXTENT, EXTENT], title_text=AXIS_Y, row=1, col=col, scaleanchor=f"x{col}"
                         if col > 1 else "x", scaleratio=1)
    fig.update_xaxes(title_text="guidance scale w", row=1, col=3)
    fig.update_yaxes(title_text="W2", rangemode="tozero", row=1, col=3)
    return fig


def guidance_widget(study: GuidanceStudy, w: float = 1.0) -> View:
    """Guidance scale (0 to W_MAX, on release: a new w is a new solve), class, the field's time t and the reference
    sampler, over `render_guidance`. The settings one move away (the other class: its samples and W2 curves, about
    3 s on a laptop core) are drawn in the background; the study only reads its model and memoises what it computes."""
    classes = {name: k for k, name in enumerate(study.mixture.class_names)}
    controls = {"w": slider("guidance scale w", 0.0, W_MAX, 0.5, w, continuous_update=False),
                "c": dropdown("class c", classes),
                "t": t_slider(0.5, 0.95, description="field time t"),
                "reference": dropdown("black samples", REFERENCES)}
    return interactive_view(render_guidance, controls, per_row=2, prefetch=True, study=study)


def combined_w2(study: GuidanceStudy, combine, c: int = 0, w: float = 3.0) -> tuple[float, float]:
    """(W2 with `combine` as the guidance rule, W2 with cfg_combine) for class c at scale w, same noise."""
    mine = sample_guided(study.model, study.x0, int(c), float(w), steps=study.steps, combine=combine).double()
    return wasserstein(mine, study.target(c)), wasserstein(study.model_samples(c, w), study.target(c))



def mode_table(study: GuidanceStudy, c: int = 0, ws=(0.0, 1.0, 2.0, 4.0, 8.0), kind: str = "ode") -> str:
    """A text table: for each w, the share of the `kind` samples ('model', 'ode', 'tilted') of class c nearest each
    of the 8 modes (mode k at angle 2 pi k / 8), their mean radius |x| (the modes sit at 2 sqrt 2 = 2.83) and the
    radial spread (std of |x|; one mode's own is about 0.35)."""
    sample = {"model": study.model_samples, "ode": study.exact_ode, "tilted": study.tilted}[kind]
    head = "   w | " + " ".join(f"mode {k}" for k in range(8)) + " | mean |x| | std |x|"
    rows = [head, "-" * len(head)]
    for w in ws:
        x = sample(c, w)
        k = torch.remainder(torch.round(torch.atan2(x[:, 1], x[:, 0]) / (torch.pi / 4)), 8).long()
        share = torch.bincount(k, minlength=8).double() / len(x)
        r = x.norm(dim=1)
        rows.append(f"{w:4g} | " + " ".join(f"{s:6.2f}" for s in share.tolist()) +
                    f" | {r.mean().item():8.2f} | {r.std().item():7.3f}")
    return "\n".join(rows)


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Lab 09's class-conditional model (its TRAIN_STEPS) for `python -m fmlab prewarm` (fmlab.prewarm)."""
    from ..prewarm import job

    n = 400 if fast else 6000
    return [job("09", "fmlab.labkit:train_cached", lab_config(n), progress=False, cost=n)]
