"""Figures and measurements for the score-and-SDE lab: the score beside the velocity, stochastic samplers that share
the flow's marginals, and loss weightings over log-SNR.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data; x_t = a_t x1 + s_t x0 (linear: a = t, s = 1 - t). The score
is grad_x log p_t(x) = -E[x0 | x_t = x] / s_t (fmlab.paths); the sampler family is fmlab.solvers.sample_sde:

    dx = [v(x, t) + eta s_t grad log p_t(x)] dt + sqrt(2 eta s_t) dW,        eta = 0: the ODE.

Render functions are pure and cheap enough for a slider: trajectories are solved once per noise level and kept;
moving t only indexes them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data import GaussianMixture, gmm_2d
from ..metrics import path_length_ratio, wasserstein
from ..paths import get_schedule, loss_weight, unit_time, x1_error_gain
from ..solvers import Field, Trajectory, sample_sde
from .fields import quiver_xy
from .style import COLORS, NOTEBOOK_WIDTH, SEQUENCE, apply_style
from .training import AXIS_X, AXIS_Y, EXTENT, density_contour, grid
from .widgets import View, dropdown, interactive_view, slider, t_slider

__all__ = ["ETA_MAX", "render_score", "score_widget", "SDEPaths", "sde_paths_widget", "mode_stats", "eta_sweep",
           "EtaSweep", "render_w2_vs_eta", "sde_config", "LOSSES", "implied_weight", "weight_profile",
           "render_weightings", "weightings_widget", "CURRENCIES", "SAMPLERS", "AXES", "prewarm_jobs"]

ETA_MAX = 4.0
ScoreFn = Callable[[Tensor, Tensor], Tensor]


@functools.lru_cache(maxsize=4)
def _mixture(name: str) -> GaussianMixture:
    return gmm_2d(name)


def _paths_xy(xs: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Trajectories [k, n, 2] as the x, y arrays of one line trace (NaN between particles)."""
    k, n, _ = xs.shape
    pad = torch.full((1, n, 2), float("nan"), dtype=torch.float64)
    flat = torch.cat([xs.double(), pad]).permute(1, 0, 2).reshape(-1, 2)
    return flat[:, 0].numpy(), flat[:, 1].numpy()


def _square(fig: go.Figure, extent: float) -> None:
    fig.update_xaxes(range=[-extent, extent], title_text=AXIS_X, constrain="domain")
    fig.update_yaxes(range=[-extent, extent], title_text=AXIS_Y, constrain="domain", scaleanchor="x", scaleratio=1)


# --- the score beside the closed form --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _contour(data: str, t: float) -> go.Contour:
    return density_contour(_mixture(data), t)


def render_score(t: float = 0.5, learned: ScoreFn | None = None, learned_name: str = "score from the network",
                 data: str = "8modes", n_arrows: int = 15, max_len: float = 0.45) -> go.Figure:
    """Arrows of the closed-form score grad log p_t (black) and, if given, of `learned(x, t)` (green) on a grid,
    over the contours of p_t. Arrows are drawn at 0.15 x the score, capped at `max_len` (the score grows like
    1 / s_t near the data); the title gives the median relative error |learned - exact| / |exact| on p_t samples."""
    t = unit_time(t)
    if t >= 1.0:
        raise ValueError("t must be < 1: the score of the data (t = 1) is not defined by the velocity")
    gmm = _mixture(data)
    pts = grid(EXTENT, n_arrows).double()
    tt = torch.full((len(pts),), t, dtype=torch.float64)
    exact = gmm.score(pts, tt)
    fig = go.Figure([_contour(data, round(t, 6))])
    xs, ys = quiver_xy(pts, 0.15 * exact, max_len=max_len)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=COLORS["reference"], width=1.6),
                             name="closed-form score ∇log p<sub>t</sub>"))
    title = f"The score at t = {t:.2f}"
    if learned is not None:
        with torch.no_grad():
            mine = torch.as_tensor(learned(pts.float(), tt.float())).double()
        xs, ys = quiver_xy(pts, 0.15 * mine, max_len=max_len)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=COLORS["model"], width=1.6),
                                 name=learned_name))
        g = torch.Generator().manual_seed(0)
        x1 = gmm.sample(1000, generator=g).double()
        x_t = t * x1 + (1 - t) * torch.randn(x1.shape, generator=g, dtype=torch.float64)  # x_t ~ p_t
        with torch.no_grad():
            err = torch.as_tensor(learned(x_t.float(), torch.full((1000,), t))).double() - gmm.score(x_t, t)
        rel = (err.norm(dim=1) / gmm.score(x_t, t).norm(dim=1).clamp_min(1e-9)).median().item()
        title += f": median relative error {rel:.2f} on samples of p<sub>t</sub>"
    apply_style(fig, title=title)
    fig.update_layout(width=760, height=600, legend=dict(x=1.02, y=1.0, xanchor="left"), margin=dict(r=240))
    _square(fig, EXTENT)
    return fig


def score_widget(learned: ScoreFn | None = None, learned_name: str = "score from the network",
                 data: str = "8modes") -> View:
    """A t slider (0 to 0.95, live) over `render_score`."""
    return interactive_view(render_score, {"t": t_slider(0.5, 0.95)}, learned=learned, learned_name=learned_name,
                            data=data)


# --- trajectories against the noise level ---------------------------------------------------------------------------

class SDEPaths:
    """Samples of the SDE family from one batch of noise, solved once per noise level eta and kept.

    `field` is the velocity v(x, t); `score` the score (None: converted from the velocity). n particles, the first
    n_paths drawn as paths; `steps` Euler-Maruyama steps on [0, 1]; each eta uses the noise seed `seed`.
    """

    def __init__(self, field: Field, data: str = "8modes", n: int = 600, n_paths: int = 30, steps: int = 100,
                 seed: int = 0, score: ScoreFn | None = None):
        self.field, self.data, self.n, self.n_paths, self.steps, self.seed = field, data, n, n_paths, steps, seed
        self.score = score
        self.x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
        self._runs: dict[float, Trajectory] = {}

    def run(self, eta: float) -> Trajectory:
        key = round(float(eta), 6)
        if key not in self._runs:
            self._runs[key] = sample_sde(self.field, self.x0, steps=self.steps, eta=key, score=self.score,
                                         generator=torch.Generator().manual_seed(self.seed + 1),
                                         return_trajectory=True)
        return self._runs[key]

    def render(self, eta: float = 0.0, t: float = 1.0) -> go.Figure:
        """Particles at time t (green) over the closed-form p_t, with the paths of n_paths particles up to t."""
        t = unit_time(t)
        traj = self.run(eta)
        k = int(round(t * self.steps))
        xs = traj.xs[: k + 1, : self.n_paths].detach().cpu()
        ratio = path_length_ratio(traj.xs[:, : self.n_paths])
        fig = go.Figure([_contour(self.data, round(k / self.steps, 6))])
        px, py = _paths_xy(xs)
        fig.add_trace(go.Scatter(x=px, y=py, mode="lines", line=dict(color=COLORS["path"], width=1),
                                 name="paths (first particles)"))
        now = traj.xs[k].detach().cpu().double()
        fig.add_trace(go.Scatter(x=now[:, 0].numpy(), y=now[:, 1].numpy(), mode="markers", name="particles at t",
                                 marker=dict(color=COLORS["model"], size=4, opacity=0.7)))
        title = (f"η = {float(eta):.2f}, t = {k / self.steps:.2f}: path length / chord = {ratio:.2f} "
                 f"(1 = straight)")
        apply_style(fig, title=title)
        fig.update_layout(width=760, height=600, legend=dict(x=1.02, y=1.0, xanchor="left"), margin=dict(r=220))
        _square(fig, EXTENT)
        return fig


def sde_paths_widget(field: Field, data: str = "8modes", eta: float = 0.0, **kwargs) -> View:
    """Noise-level slider (0 to ETA_MAX, redraws on release: a new level is a new solve) and a live t slider."""
    paths = SDEPaths(field, data, **kwargs)
    controls = {"eta": slider("noise level η", 0.0, ETA_MAX, 0.25, eta, continuous_update=False),
                "t": t_slider(1.0)}
    view = interactive_view(paths.render, controls)
    view.paths = paths
    return view


# --- measurements: W2 against the noise level ------------------------------------------------------------------------

def sde_config(steps: int, seed: int = 0) -> Any:
    """The training run of the lab and of benchmarks/score_sde.py: flow matching on the 8-mode mixture with lab 04's
    network (MLP 128 x 3, batch 256, lr 3e-3); `steps` sets how well trained it is (200: deliberately under-trained)."""
    from ..train import TrainConfig

    return TrainConfig(data="8modes", loss="cfm", steps=steps, batch_size=256, hidden=128, depth=3, lr=3e-3,
                       warmup=min(100, max(1, steps // 5)), log_every=max(1, steps // 10), ckpt_every=0, seed=seed,
                       threads=1)


def mode_stats(x: Tensor, data: str = "8modes") -> tuple[float, float]:
    """(tv, rms): the total-variation distance between the fraction of samples nearest each mixture mean and the
    mixture weights (how mass is split between modes), and the root mean squared distance to the nearest mean
    (how blurred the modes are; sqrt(2) x 0.354 = 0.50 for the 8-mode data)."""
    gmm = _mixture(data)
    d = torch.cdist(x.detach().double().cpu(), gmm.means)
    frac = torch.bincount(d.argmin(1), minlength=gmm.n_components).double() / len(x)
    return 0.5 * float((frac - gmm.weights).abs().sum()), float(d.min(1).values.pow(2).mean().sqrt())


@dataclass(frozen=True)
class EtaSweep:
    """W2 (and mode statistics) of SDE samples against fresh data samples, per noise level, one value per seed."""

    etas: tuple[float, ...]
    w2: dict[float, list[float]]
    tv: dict[float, list[float]]
    rms: dict[float, list[float]]

    def mean_std(self, eta: float, what: str = "w2") -> tuple[float, float]:
        vals = np.asarray(getattr(self, what)[eta])
        return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0

    def table(self, label: str = "") -> str:
        lines = [f"{label:>22}  eta:" + "".join(f"{e:>14.2f}" for e in self.etas)]
        for what in ("w2", "tv", "rms"):
            cells = "".join("{:>8.3f} ± {:.3f}".format(*self.mean_std(e, what)) for e in self.etas)
            lines.append(f"{what:>28}{cells}")
        return "\n".join(lines)


def eta_sweep(field: Field, etas: Sequence[float], seeds: Sequence[int], n: int, steps: int = 100,
              data: str = "8modes", t_end: float = 1.0, score: ScoreFn | None = None) -> EtaSweep:
    """For each seed: noise x0 and a fresh sample of p_{t_end} (the exact mixture: a x1 + s x0') from that seed,
    then for each eta the SDE's samples at t_end from x0 and their W2 to the fresh sample. The same x0 and reference
    serve every eta of a seed (common random numbers)."""
    gmm, sched = _mixture(data), get_schedule("linear")
    w2: dict[float, list[float]] = {float(e): [] for e in etas}
    tv: dict[float, list[float]] = {float(e): [] for e in etas}
    rms: dict[float, list[float]] = {float(e): [] for e in etas}
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        x0 = torch.randn(n, 2, generator=g)
        a, s, _, _ = sched(torch.tensor(float(t_end)))
        ref = a * gmm.sample(n, generator=g) + s * torch.randn(n, 2, generator=g)  # exact p_t_end sample
        for eta in etas:
            steps_here = max(1, int(round(steps * t_end)))
            x = sample_sde(field, x0, steps=steps_here, eta=float(eta), score=score, t_end=t_end,
                           generator=torch.Generator().manual_seed(10_000 + int(seed)))
            w2[float(eta)].append(wasserstein(x, ref))
            mode_tv, mode_rms = mode_stats(x, data)
            tv[float(eta)].append(mode_tv)
            rms[float(eta)].append(mode_rms)
    return EtaSweep(tuple(float(e) for e in etas), w2, tv, rms)


def render_w2_vs_eta(sweeps: Mapping[str, EtaSweep], floor: tuple[float, float] | None = None,
                     title: str = "W2 to the exact mixture against the noise level η") -> go.Figure:
    """Mean W2 (error bars: std over seeds) against eta for each labelled sweep; the noise floor (W2 between two
    exact samples of the same size) as a dashed line with its +-1 std band."""
    fig = go.Figure()
    if floor is not None:
        m, s = floor
        etas = sorted({e for sw in sweeps.values() for e in sw.etas})
        lo, hi = etas[0], etas[-1]
        fig.add_trace(go.Scatter(x=[lo, hi, hi, lo], y=[m - s, m - s, m + s, m + s], fill="toself", mode="none",
                                 fillcolor="rgba(0,0,0,0.08)", name="noise floor ± std", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[m, m], mode="lines", line=dict(color=COLORS["reference"], dash="dash"),
                                 name="noise floor"))
    colors = {"closed-form v*": COLORS["reference"]}
    for i, (label, sw) in enumerate(sweeps.items()):
        stats = [sw.mean_std(e) for e in sw.etas]
        fig.add_trace(go.Scatter(x=list(sw.etas), y=[m for m, _ in stats], mode="lines+markers", name=label,
                                 error_y=dict(type="data", array=[s for _, s in stats], visible=True),
                                 line=dict(color=colors.get(label, SEQUENCE[i % len(SEQUENCE)]))))
    apply_style(fig, title=title, x_title="noise level η (0 = ODE)", y_title="W2")
    fig.update_layout(width=820, height=480)
    return fig


# --- loss weightings over log-SNR -----------------------------------------------------------------------------------

CURRENCIES = ("velocity", "x1", "eps")
SAMPLERS = ("uniform", "logit_normal")

# name -> (head whose squared error the loss takes, weight on that error as a function of (t, gamma))
LOSSES: dict[str, tuple[str, Callable[[Tensor, float], Tensor]]] = {
    "flow matching (velocity, w = 1)": ("velocity", lambda t, g: torch.ones_like(t)),
    "x1 head, w = 1": ("x1", lambda t, g: torch.ones_like(t)),
    "x1 head, w = 1/(1-t)² (= flow matching)": ("x1", lambda t, g: 1 / (1 - t) ** 2),
    "eps head, w = 1 (DDPM's loss)": ("eps", lambda t, g: torch.ones_like(t)),
    "min-SNR-γ (x1 head, w = min(SNR, γ))": ("x1", lambda t, g: loss_weight(t, "min_snr", gamma=g, prediction="x1")),
}


def implied_weight(t: Tensor, loss: str, on: str = "velocity", gamma: float = 5.0) -> Tensor:
    """The weight w' with loss = w' ||error of the `on` head||^2 (linear path): w (c_head / c_on)^2, where c is
    fmlab.paths.x1_error_gain (a head's error per unit x1 error)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if on not in CURRENCIES:
        raise ValueError(f"on must be one of {CURRENCIES}, got {on!r}")
    head, weight = LOSSES[loss]
    return weight(t, gamma) * (x1_error_gain(t, head) / x1_error_gain(t, on)) ** 2


def _sampler_density(t: Tensor, sampler: str) -> Tensor:
    if sampler == "uniform":
        return torch.ones_like(t)
    if sampler == "logit_normal":  # t = sigmoid(z), z ~ N(0, 1): p(t) = phi(logit t) / (t (1 - t))
        z = torch.log(t / (1 - t))
        return torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) / (t * (1 - t))
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


AXES = ("log_snr", "t")


def weight_profile(loss: str, gamma: float = 5.0, sampler: str = "uniform", axis: str = "log_snr",
                   n: int = 2001, lam_max: float = 10.0) -> tuple[Tensor, Tensor, Tensor]:
    """(x, w(x), share(x)) on a grid of log-SNR lambda in [-lam_max, lam_max] (axis 'log_snr'; linear path,
    t = sigmoid(lambda / 2)) or of t in [0, 1] (axis 't', the same lambda range): w is the loss's implied weight on
    the squared velocity error, and share the density of that weight over x when t ~ sampler,
    w p(t) dt/dx, normalised to integrate to 1 over the grid."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    lam = torch.linspace(-lam_max, lam_max, n, dtype=torch.float64)
    t = torch.sigmoid(lam / 2)  # lambda = 2 log(t / (1 - t))
    w = implied_weight(t, loss, "velocity", gamma)
    if axis == "log_snr":
        x, dens = lam, w * _sampler_density(t, sampler) * t * (1 - t) / 2  # dt / d lambda = t (1 - t) / 2
    else:
        x, dens = t, w * _sampler_density(t, sampler)
    area = torch.trapezoid(dens, x)
    return x, w, dens / area


def render_weightings(gamma: float = 5.0, sampler: str = "uniform", axis: str = "log_snr") -> go.Figure:
    """Left: the implied weight on the squared velocity error of every loss of LOSSES (log scale). Right: where that
    weight goes when t ~ sampler (each curve integrates to 1), against log-SNR or t."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "weight on ‖velocity error‖² (log scale)", f"share of the weight (t ~ {sampler})"))
    dashes = ["solid", "solid", "dash", "solid", "solid"]
    for i, loss in enumerate(LOSSES):
        x, w, share = weight_profile(loss, gamma, sampler, axis, n=401)  # smooth curves; fewer points to draw
        color = SEQUENCE[i % len(SEQUENCE)]
        for col, y in ((1, w), (2, share)):
            fig.add_trace(go.Scatter(x=x.numpy(), y=y.numpy(), mode="lines", name=loss, legendgroup=loss,
                                     showlegend=col == 1, line=dict(color=color, dash=dashes[i], width=2.5)),
                          row=1, col=col)
    switch = math.log(gamma) if axis == "log_snr" else math.sqrt(gamma) / (1 + math.sqrt(gamma))
    label = "log-SNR λ = log(t²/(1−t)²)   (noise ← → data)" if axis == "log_snr" else "time t (noise 0, data 1)"
    for col in (1, 2):
        fig.add_vline(x=switch, line=dict(color=COLORS["path"], dash="dot"), row=1, col=col)
        fig.update_xaxes(title_text=label, row=1, col=col)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    apply_style(fig, title=f"Loss weightings on the linear path (dotted: SNR = γ = {gamma:g})")
    fig.update_layout(width=NOTEBOOK_WIDTH, height=560, legend=dict(orientation="h", y=-0.3, x=0))
    return fig


def weightings_widget() -> View:
    """gamma slider, time-sampler and axis menus over `render_weightings` (analytic: redraws live)."""
    controls = {"gamma": slider("min-SNR γ", 0.5, 20.0, 0.5, 5.0),
                "sampler": dropdown("time sampler", list(SAMPLERS), "uniform"),
                "axis": dropdown("x axis", {"log-SNR λ": "log_snr", "time t": "t"}, "log_snr")}
    return interactive_view(render_weightings, controls)


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Lab 07's trained and under-trained networks (TRAINED, UNDER) for `python -m fmlab prewarm` (fmlab.prewarm)."""
    from ..prewarm import job

    return [job("07", "fmlab.viz.training:fit", sde_config(n), progress=False, cost=n)
            for n in (300 if fast else 4000, 200)]
