"""Figures and measurements for the likelihood lab: the continuity equation in 1D, the instantaneous change of
variables with the exact trace and Hutchinson's estimator, and bits per dimension against the true density.

Convention: t = 0 is noise N(0, I), t = 1 is data; the flow dx/dt = v(x, t) moves the density p_t by the continuity
equation d p_t / dt + div(p_t v) = 0, and log p_1(x_1) = log N(x_0) - int_0^1 div v(x_t, t) dt (fmlab.likelihood).
Render functions are pure and cheap for a slider: particles and probe estimates are computed once and kept.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data import GaussianMixture
from ..likelihood import bits_per_dim, log_likelihood
from ..paths import unit_time
from ..solvers import Field, solve
from .style import COLORS, NOTEBOOK_WIDTH, apply_style
from .training import AXIS_X, AXIS_Y, EXTENT, grid
from .widgets import View, int_slider, interactive_view, t_slider

__all__ = ["mixture_1d", "continuity_residual", "ContinuityParticles", "continuity_widget", "HutchinsonRuns",
           "hutchinson_widget", "density_grid", "render_density_comparison", "NLLSummary", "nll_summary",
           "prewarm_jobs"]

X_RANGE = (-4.5, 4.5)


@functools.lru_cache(maxsize=1)
def mixture_1d() -> GaussianMixture:
    """The 1D data of the continuity figure: 0.4 N(-2, 0.4^2) + 0.6 N(1.5, 0.5^2)."""
    return GaussianMixture(torch.tensor([[-2.0], [1.5]], dtype=torch.float64), stds=torch.tensor([0.4, 0.5]),
                           weights=torch.tensor([0.4, 0.6]))


def _density_flux(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """(p_t(x), J_t(x) = p_t(x) v(x, t)) of the 1D mixture at points x [n]."""
    gmm = mixture_1d()
    p = gmm.marginal_log_prob(x[:, None], t).exp()
    return p, p * gmm.velocity(x[:, None], t)[:, 0]


def continuity_residual(t: float, n: int = 801, h: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """(x, dp/dt, -dJ/dx) on n points of X_RANGE at time t, both by second-order finite differences of the closed
    form (central; one-sided in t at t = 0 and 1). The continuity equation says the two curves are the same."""
    t = unit_time(t)
    x = torch.linspace(*X_RANGE, n, dtype=torch.float64)
    def p(tau: float) -> Tensor:
        return _density_flux(x, tau)[0]

    if t - h < 0 or t + h > 1:  # one-sided: (-3 f(t) + 4 f(t + e) - f(t + 2e)) / (2e), e = +-h
        e = h if t - h < 0 else -h
        dp_dt = (-3 * p(t) + 4 * p(t + e) - p(t + 2 * e)) / (2 * e)
    else:
        dp_dt = (p(t + h) - p(t - h)) / (2 * h)
    dx = 1e-5
    dj_dx = (_density_flux(x + dx, t)[1] - _density_flux(x - dx, t)[1]) / (2 * dx)
    return x, dp_dt, -dj_dx


class ContinuityParticles:
    """n particles x0 ~ N(0, 1) carried by the closed-form velocity of `mixture_1d` (RK4, 100 steps), kept at the
    times k / frames so that a t slider only indexes them."""

    def __init__(self, n: int = 20_000, frames: int = 20, seed: int = 0):
        gmm = mixture_1d()
        x0 = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        traj = solve(lambda x, t: gmm.velocity(x, t), x0, steps=5 * frames, method="rk4", return_trajectory=True)
        self.frames, self.xs = frames, traj.xs[::5, :, 0]  # [frames + 1, n]

    def render(self, t: float = 0.5, bins: int = 60) -> go.Figure:
        """Top: histogram of the particles at t, the closed-form p_t (black) and the flux J = p_t v (vermillion).
        Bottom: dp/dt against -dJ/dx (the continuity equation)."""
        k = int(round(unit_time(t) * self.frames))
        t = k / self.frames
        x = torch.linspace(*X_RANGE, 401, dtype=torch.float64)
        p, flux = _density_flux(x, t)
        counts, edges = np.histogram(self.xs[k].numpy(), bins=bins, range=X_RANGE, density=True)
        xr, dp_dt, minus_dj = continuity_residual(t, n=401)
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4])
        fig.add_trace(go.Bar(x=0.5 * (edges[1:] + edges[:-1]), y=counts, width=edges[1] - edges[0],
                             marker=dict(color=COLORS["model"], opacity=0.45), name="particles (histogram)"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=x.numpy(), y=p.numpy(), mode="lines", line=dict(color=COLORS["reference"], width=3),
                                 name="p<sub>t</sub>(x) (closed form)"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x.numpy(), y=flux.numpy(), mode="lines", name="flux J = p<sub>t</sub> v",
                                 line=dict(color=COLORS["highlight"], width=2.5)), row=1, col=1)
        fig.add_trace(go.Scatter(x=xr.numpy(), y=dp_dt.numpy(), mode="lines", name="∂p/∂t",
                                 line=dict(color=COLORS["reference"], width=3)), row=2, col=1)
        fig.add_trace(go.Scatter(x=xr.numpy(), y=minus_dj.numpy(), mode="lines", name="−∂J/∂x",
                                 line=dict(color=COLORS["highlight"], width=2.5, dash="dash")), row=2, col=1)
        rel = float((dp_dt - minus_dj).abs().max() / dp_dt.abs().max().clamp_min(1e-12))
        apply_style(fig, title=f"t = {t:.2f}: max |∂p/∂t + ∂J/∂x| / max |∂p/∂t| = {rel:.1e}")
        fig.update_xaxes(range=list(X_RANGE), title_text="x", row=2, col=1)
        fig.update_yaxes(title_text="density, flux", row=1, col=1)
        fig.update_yaxes(title_text="rate", row=2, col=1)
        fig.update_layout(width=900, height=640, legend=dict(x=1.02, y=1.0, xanchor="left"), margin=dict(r=200),
                          bargap=0)
        return fig


def continuity_widget(n: int = 20_000) -> View:
    """A live t slider over `ContinuityParticles.render`."""
    particles = ContinuityParticles(n)
    view = interactive_view(particles.render, {"t": t_slider(0.3)})
    view.particles = particles
    return view


# --- Hutchinson's estimator against the exact trace -------------------------------------------------------------------

class HutchinsonRuns:
    """Log-likelihoods of points x [M, d] under `field`: closed-form `truth` [M], the exact-trace ODE value, and
    max_probes single-probe Hutchinson estimates per point (Rademacher, each fixed along its trajectory), so that the
    K-probe estimate is the mean of the first K."""

    def __init__(self, field: Field, x: Tensor, truth: Tensor, max_probes: int = 64, steps: int = 50, seed: int = 0):
        self.truth = truth.detach().double()
        self.exact = log_likelihood(field, x, steps=steps).log_prob.double()
        copies = x.repeat(max_probes, 1)  # one probe per copy
        single = log_likelihood(field, copies, steps=steps, estimator="hutchinson", probes=1,
                                generator=torch.Generator().manual_seed(seed))
        self.single = single.log_prob.double().reshape(max_probes, len(x))  # [K_max, M]
        self.max_probes = max_probes
        self.ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= max_probes]
        self.rms = [float((self.estimate(k)[0] - self.exact).pow(2).mean().sqrt()) for k in self.ks]

    def estimate(self, probes: int) -> tuple[Tensor, Tensor]:
        """(mean of the first `probes` estimates [M], its standard error std / sqrt(K) [M]; NaN for K = 1)."""
        if not 1 <= probes <= self.max_probes:
            raise ValueError(f"probes must lie in [1, {self.max_probes}], got {probes}")
        first = self.single[:probes]
        se = first.std(0) / math.sqrt(probes) if probes > 1 else torch.full_like(first[0], float("nan"))
        return first.mean(0), se

    def render(self, probes: int = 4) -> go.Figure:
        """Left: K-probe estimates (error bars: 2 standard errors) and exact-trace values against the closed-form
        log-density. Right: RMS error of the K-probe estimate against K (measured) with the 1/sqrt(K) line."""
        est, se = self.estimate(probes)
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
            f"{probes} probe{'s' if probes > 1 else ''} per point", "error of Hutchinson against the number of probes"))
        lo, hi = float(self.truth.min()) - 0.5, float(self.truth.max()) + 0.5
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color=COLORS["path"], dash="dot"),
                                 name="estimate = truth"), row=1, col=1)
        bars = None if probes == 1 else dict(type="data", array=(2 * se).numpy(), visible=True, thickness=1)
        fig.add_trace(go.Scatter(x=self.truth.numpy(), y=est.numpy(), mode="markers", error_y=bars,
                                 marker=dict(color=COLORS["highlight"], size=7), name="Hutchinson (± 2 SE)"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=self.truth.numpy(), y=self.exact.numpy(), mode="markers", name="exact trace",
                                 marker=dict(color=COLORS["reference"], size=9, symbol="circle-open")), row=1, col=1)
        ks, rms = self.ks, self.rms
        fig.add_trace(go.Scatter(x=ks, y=rms, mode="lines+markers", name="RMS error (measured)",
                                 line=dict(color=COLORS["highlight"])), row=1, col=2)
        fig.add_trace(go.Scatter(x=ks, y=[rms[0] / math.sqrt(k) for k in ks], mode="lines", name="∝ 1/√K",
                                 line=dict(color=COLORS["path"], dash="dash")), row=1, col=2)
        now = float((est - self.exact).pow(2).mean().sqrt())
        fig.add_trace(go.Scatter(x=[probes], y=[now], mode="markers", showlegend=False,
                                 marker=dict(color=COLORS["highlight"], size=14, symbol="diamond")), row=1, col=2)
        fig.update_xaxes(title_text="closed-form log p(x)", row=1, col=1)
        fig.update_yaxes(title_text="log p(x) by the ODE", row=1, col=1)
        fig.update_xaxes(title_text="probes K", type="log", row=1, col=2)
        fig.update_yaxes(title_text="RMS error (nats)", type="log", row=1, col=2)
        exact_err = float((self.exact - self.truth).abs().max())
        apply_style(fig, title=f"K = {probes}: RMS error {now:.3f} nats; exact trace max error {exact_err:.1e}")
        fig.update_layout(width=NOTEBOOK_WIDTH, height=480, legend=dict(orientation="h", y=-0.2, x=0))
        return fig


def hutchinson_widget(runs: HutchinsonRuns, probes: int = 1) -> View:
    """A live probes slider (1 to runs.max_probes) over `runs.render`."""
    return interactive_view(runs.render, {"probes": int_slider("probes K", 1, runs.max_probes, probes)})


# --- the model's density against the true one -------------------------------------------------------------------------

def density_grid(field: Field, res: int = 41, steps: int = 50, extent: float = EXTENT) -> Tensor:
    """log p_1 by the ODE (exact trace) on a res x res grid over [-extent, extent]^2, rows = y. [res, res]"""
    pts = grid(extent, res)
    return log_likelihood(field, pts, steps=steps).log_prob.reshape(res, res).detach().double()


def render_density_comparison(model_logp: Tensor, true_logp: Tensor, held_out: Tensor | None = None,
                              extent: float = EXTENT, floor: float = -12.0) -> go.Figure:
    """Two heat maps of log-density on the same colour scale (clipped below at `floor`): the model's by the ODE and
    the closed form, with held-out points over the model's."""
    res = model_logp.shape[0]
    axis = np.linspace(-extent, extent, res)
    zmax = float(max(model_logp.max(), true_logp.max()))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        "model: log p by the ODE (exact trace)", "closed form: log p of the mixture"))
    for col, z in ((1, model_logp), (2, true_logp)):
        fig.add_trace(go.Heatmap(x=axis, y=axis, z=z.clamp_min(floor).numpy(), zmin=floor, zmax=zmax,
                                 colorscale="Viridis", showscale=col == 2, colorbar=dict(title="log p")),
                      row=1, col=col)
    if held_out is not None:
        h = held_out.detach().double().cpu()
        fig.add_trace(go.Scatter(x=h[:, 0].numpy(), y=h[:, 1].numpy(), mode="markers", name="held-out data",
                                 marker=dict(color=COLORS["data"], size=3, opacity=0.6)), row=1, col=1)
    apply_style(fig)
    fig.update_layout(width=NOTEBOOK_WIDTH, height=500, showlegend=False)
    for col in (1, 2):
        fig.update_xaxes(range=[-extent, extent], title_text=AXIS_X, row=1, col=col)
        fig.update_yaxes(range=[-extent, extent], title_text=AXIS_Y if col == 1 else "",
                         scaleanchor=f"x{'' if col == 1 else col}", scaleratio=1, row=1, col=col)
    return fig


# --- bits per dimension ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NLLSummary:
    """Mean negative log-likelihoods over n held-out points (nats per point and bits per dimension), each with its
    standard error over the points, and the paired gap model - truth (an estimate of KL(data || model) >= 0)."""

    n: int
    dim: int
    nll_model: tuple[float, float]
    nll_true: tuple[float, float]
    gap: tuple[float, float]

    def nats(self, which: str) -> tuple[float, float]:
        """(mean, standard error) in nats per point of 'model', 'true' or 'gap'."""
        if which not in ("model", "true", "gap"):
            raise ValueError(f"which must be 'model', 'true' or 'gap', got {which!r}")
        return {"model": self.nll_model, "true": self.nll_true, "gap": self.gap}[which]

    def bpd(self, which: str) -> tuple[float, float]:
        """(mean, standard error) in bits per dimension: nats / (d ln 2)."""
        mean, se = self.nats(which)
        return mean / (self.dim * math.log(2)), se / (self.dim * math.log(2))

    def table(self) -> str:
        out = [f"{'':>28} {'nats / point':>18} {'bits / dim':>18}   ({self.n} held-out points, ± standard error)"]
        for label, key in (("model (ODE, exact trace)", "model"), ("true density (closed form)", "true"),
                           ("gap = KL estimate", "gap")):
            (m, s), (b, bs) = self.nats(key), self.bpd(key)
            out.append(f"{label:>28} {m:>10.3f} ± {s:.3f} {b:>10.3f} ± {bs:.3f}")
        return "\n".join(out)


def nll_summary(model_log_prob: Tensor, true_log_prob: Tensor, dim: int) -> NLLSummary:
    """NLLSummary from per-point log-likelihoods of the model and of the true density at the same points."""
    if model_log_prob.shape != true_log_prob.shape or model_log_prob.ndim != 1:
        raise ValueError(f"model_log_prob and true_log_prob must both have shape [n], got "
                         f"{tuple(model_log_prob.shape)} and {tuple(true_log_prob.shape)}")
    n = len(model_log_prob)

    def mean_se(v: Tensor) -> tuple[float, float]:
        v = v.detach().double()
        return float(v.mean()), float(v.std() / math.sqrt(n)) if n > 1 else 0.0

    bits_per_dim(0.0, dim)  # validates dim
    return NLLSummary(n, dim, mean_se(-model_log_prob), mean_se(-true_log_prob),
                      mean_se(true_log_prob - model_log_prob))


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Lab 08's network (lab 07's trained run, its CONFIG) for `python -m fmlab prewarm` (fmlab.prewarm)."""
    from ..prewarm import job
    from .score_sde import sde_config

    n = 300 if fast else 4000
    return [job("08", "fmlab.viz.training:fit", sde_config(n), progress=False, cost=n)]
