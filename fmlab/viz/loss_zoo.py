"""The loss zoo (lab 12): every flow-map loss trained on the same small MLP, sampled in 1..16 steps, drawn beside the
exact flow map of a Gaussian mixture, and the benchmark's landscape table (benchmarks/flowmaps.py).

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise, t = 1 is data; a flow map X(x, s, t) = x + (t - s) u(x, s, t)
jumps from s to t. A model is sampled the way its loss trained it (`LossSpec.sampler`, run by fmlab.sampling):
flow-map jumps on a uniform grid, consistency sampling (CT, CD, FACM: jump to the data, re-noise), or one jump from
the noise (PID, FreeFlow: more steps add nothing, so the benchmark evaluates them at 1 step only and the tables show
them as 1 NFE, `one_nfe`).

This module holds the shared numbers (the model, the survey's cost estimates) and the pure functions; the widget
layer at the end only wires controls to them. Training runs are cached per kernel (fmlab.labkit.train_cached).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import sampling
from ..losses import get_loss, list_losses
from ..solvers import Trajectory, solve

__all__ = [
    "ZOO_MODEL", "ZOO_TIME_FREQ_MAX", "SURVEY_COST", "PAPER_MEMORY_GB", "PAPER_MEMORY", "RULES",
    "DISPLAY_NAMES", "RESULTS_PATH", "flow_map_losses", "sampler_of", "rule_of", "needs_teacher",
    "classification", "time_gaps", "time_gap_table", "zoo_model", "zoo_config", "trajectory", "generate",
    "ZOO_TARGET", "ZOO_DATA", "TEACHERS", "zoo_teacher", "train_zoo", "MAX_STEPS", "ZooView", "render_zoo",
    "render_quality", "ZooLab", "zoo_widget",
    "prewarm_jobs",
]


# The one model of the zoo and the benchmark (the labs' MLP: 3 hidden layers of 128, batch 256, AdamW lr 2e-3, EMA),
# with time-embedding frequencies up to ZOO_TIME_FREQ_MAX = 10 (now also fmlab's default; it was 200). Continuous-time
# losses differentiate the network in time (d/ds u through the JVP), and with frequencies up to 200 that derivative is
# large and noisy: AYF-EMD (a stop-gradient, sCM-style tangent) then diverges on the 8-mode mixture with the perfect
# teacher (RMS distance of its one-step map to the exact one 3.8 after 800 steps, against 0.46 with w_max = 10; EMD 0.54
# vs 0.36), while flow matching is unchanged (100-step W2 on moons 0.207 vs 0.214, checkerboard 0.457 vs 0.454).
ZOO_MODEL: dict[str, Any] = {"hidden": 128, "depth": 3, "batch_size": 256, "lr": 2e-3, "warmup": 100,
                             "ema_decay": 0.995}
ZOO_TIME_FREQ_MAX = 10.0

# Training cost in forward-pass equivalents per step, as estimated in Dieleman's survey "Learning the integral of a
# diffusion model" (a forward pass = 1, its backward = 2). SGFlow is not in the survey.
SURVEY_COST: dict[str, float | None] = {
    "cfm": 3, "meanflow": 4, "imf": 5, "ct": 4, "cd": 5, "shortcut": 8, "psd": 8, "lsd": 10, "esd": 10, "tvm": 10,
    "fmm": 9, "lmd": 9, "emd": 7, "ayf_emd": 6, "ayf_lagrangian": 6, "soflow": 7, "facm": 8, "ctm": 7, "pid": 7,
    "splitmeanflow": 9, "pfmm": 5, "freeflow": 12, "sgflow": None,
}

# Peak training memory reported by the SGFlow paper on its U-Net (GB, its memory table): FM 16.8, MeanFlow 14.2,
# SGFlow 43.2, "Lagrange" 69.8, "Euler" 69.8, "Progressive" 54.3. Its results table names the Lagrange baseline
# "Lagrange (L-FMM)", Lagrangian flow map matching (Boffi et al. 2024): our 'fmm', not LSD. "Euler" and "Progressive"
# are not attached: the review does not say which Boffi et al. losses they are.
PAPER_MEMORY_GB: dict[str, float] = {"cfm": 16.8, "meanflow": 14.2, "sgflow": 43.2, "fmm": 69.8}
PAPER_MEMORY: dict[str, float] = {k: v / PAPER_MEMORY_GB["cfm"] for k, v in PAPER_MEMORY_GB.items()}

RULES: dict[str, str] = {"flow map: compositional": "compositional", "flow map: Lagrangian": "Lagrangian",
                         "flow map: Eulerian": "Eulerian", "flow matching": "(velocity)"}

DISPLAY_NAMES: dict[str, str] = {spec.name: spec.display_name for spec in list_losses()}  # from the registry

# the benchmark results lab 12 reads, shipped as package data (pyproject.toml) and written there by
# benchmarks/flowmaps.py and benchmarks/flowmaps_ayf.py
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "flowmaps.json"


# --- which loss is what -----------------------------------------------------------------------------------------

def flow_map_losses() -> list[str]:
    """Names of the registered two-time (flow-map) losses, in registry order."""
    return [s.name for s in list_losses() if s.time_inputs == 2]


def sampler_of(loss: str) -> str:
    """The sampler `loss` trained its model for (LossSpec.sampler: 'ode', 'flowmap', 'consistency', 'noise_only')."""
    return get_loss(loss).sampler


def rule_of(loss: str) -> str:
    """The consistency rule a loss enforces: 'compositional', 'Lagrangian', 'Eulerian' (from its family)."""
    family = get_loss(loss).family
    return RULES.get(family, family)


def needs_teacher(loss: str) -> bool:
    """True for distillation losses (a `teacher` setting: a trained velocity model or a closed-form velocity)."""
    return "teacher" in get_loss(loss).defaults


def classification(losses: Sequence[str] | None = None) -> str:
    """A text table of the flow-map losses: name, the rule each enforces, its setting, its sampler, the survey's
    cost estimate (read from the registry, so it always matches the code)."""
    names = list(losses) if losses is not None else flow_map_losses()
    order = {"compositional": 0, "Lagrangian": 1, "Eulerian": 2}
    names.sort(key=lambda n: order.get(rule_of(n), 3))  # stable: registry order within a rule
    lines = [f"{'loss':18s} {'rule':14s} {'setting':26s} {'sampler':12s} survey cost"]
    for n in names:
        cost = SURVEY_COST.get(n)
        lines.append(f"{DISPLAY_NAMES.get(n, n):18s} {rule_of(n):14s} {get_loss(n).setting:26s} {sampler_of(n):12s} "
                     f"{'-' if cost is None else cost}")
    return "\n".join(lines)


def time_gaps(loss: str, n: int = 100_000, seed: int = 0) -> dict[str, float]:
    """How often `loss` trains each jump length: one batch of n rows from the loss's own batch sampler with its
    default settings; the fraction of diagonal rows (s = t), and among the others the fraction with t - s <= 1/8
    (the jump of 8-step sampling) and >= 1/2, and their median gap t - s."""
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
    spec = get_loss(loss)
    if spec.time_inputs != 2:
        raise ValueError(f"loss must be a flow-map loss (two times), got {loss!r}")
    settings = {k: v for k, v in spec.settings({}).items() if k not in ("teacher", "ema")}
    batch = spec.make_batch(x0, x1, g, **settings)
    gap = batch.t - batch.s
    off = gap[gap > 0]
    return {"diagonal": (gap == 0).float().mean().item(), "short": (off <= 0.125).float().mean().item(),
            "long": (off >= 0.5).float().mean().item(), "median": off.median().item()}


def time_gap_table(losses: Sequence[str], n: int = 100_000, seed: int = 0) -> str:
    """`time_gaps` of each loss as a Markdown table."""
    lines = ["| loss | diagonal rows (s = t) | off-diagonal gaps <= 1/8 | off-diagonal gaps >= 1/2 | median gap |",
             "|---|---|---|---|---|"]
    for loss in losses:
        f = time_gaps(loss, n, seed)
        lines.append(f"| {DISPLAY_NAMES.get(loss, loss)} | {f['diagonal']:.3f} | {f['short']:.3f} | {f['long']:.3f} | "
                     f"{f['median']:.3f} |")
    return "\n".join(lines)


def zoo_model(loss: str) -> Any:
    """A fresh model for `loss` (one-time velocity MLP for flow matching, two-time for flow maps) with the zoo's
    size and time embedding (frequencies 1 .. ZOO_TIME_FREQ_MAX)."""
    from ..models import build_model
    from ..models.embeddings import FourierTimeEmbedding

    model = build_model(time_inputs=get_loss(loss).time_inputs, hidden=ZOO_MODEL["hidden"], depth=ZOO_MODEL["depth"])
    n_freqs = len(model.backbone.embed.freqs)
    model.backbone.embed = FourierTimeEmbedding(n_freqs, w_max=ZOO_TIME_FREQ_MAX)
    model.config["time_freq_max"] = ZOO_TIME_FREQ_MAX
    return model


def zoo_config(loss: str, data: str = "moons", coupling: str = "independent", steps: int = 3000, seed: int = 0,
               threads: int | None = 1, log_every: int = 100, **loss_settings: Any) -> Any:
    """A fmlab.train.TrainConfig with the zoo's model (ZOO_MODEL) for `loss` on the toy set `data`."""
    from ..train import TrainConfig

    return TrainConfig(data=data, loss=loss, coupling=coupling, steps=steps, seed=seed, threads=threads,
                       log_every=log_every, ckpt_every=0, loss_settings=dict(loss_settings), **ZOO_MODEL)


# --- sampling -----------------------------------------------------------------------------------------------

@torch.no_grad()
def trajectory(model: Any, loss: str, x0: Tensor, steps: int, generator: torch.Generator | None = None) -> Trajectory:
    """The states of `steps`-step sampling from noise x0 (t = 0) to data (t = 1), the way `loss` trained the model
    (fmlab.sampling.trajectory with the loss's sampler)."""
    return sampling.trajectory(model, loss, x0, steps, generator=generator)


def generate(model: Any, loss: str, x0: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """Samples at t = 1 after `steps` steps of the loss's sampler (fmlab.sampling.generate)."""
    return sampling.generate(model, loss, x0, steps, generator=generator)


# --- training in the lab -------------------------------------------------------------------------------------

ZOO_TARGET = "8modes"  # the mixture whose exact flow map the lab draws; its samples are the toy set below
ZOO_DATA = "8gaussians"
TEACHERS = {"exact velocity (perfect teacher)": "exact", "trained flow matching": "fm"}


def zoo_teacher(kind: str = "exact", steps: int = 2000, progress: bool = True) -> Any:
    """The teacher of distillation losses: 'exact' = the closed-form velocity of the 8-mode mixture (no error of its
    own), 'fm' = a flow-matching model trained on the same data with the zoo's model (cached)."""
    from ..data import gmm_2d
    from ..flowmaps import GaussianMixtureTeacher

    if kind == "exact":
        return GaussianMixtureTeacher(gmm_2d(ZOO_TARGET))
    if kind == "fm":
        return train_zoo("cfm", steps=steps, progress=progress).ema
    raise ValueError(f"teacher must be one of {sorted(TEACHERS.values())}, got {kind!r}")


def train_zoo(loss: str, steps: int = 2000, teacher: str = "exact", seed: int = 0, progress: bool = True) -> Any:
    """Train `loss` on the 8-Gaussian toy set with the zoo's model, once per kernel (a tqdm bar while it runs).

    Distillation losses get `teacher` ('exact' or 'fm', see `zoo_teacher`); returns the fmlab.train.Trainer
    (sample from `.ema`)."""
    from ..labkit import train_cached

    config = zoo_config(loss, data=ZOO_DATA, steps=steps, seed=seed, log_every=max(1, steps // 50))
    torch.manual_seed(seed)
    model = zoo_model(loss)
    if not needs_teacher(loss):
        return train_cached(config, progress=progress, model=model, cache_name="zoo model")
    runtime = {"teacher": zoo_teacher(teacher, steps=steps, progress=progress)}
    return train_cached(config, progress=progress, model=model, runtime_settings=runtime,
                        cache_name=f"zoo model, teacher={teacher}")


# --- the precomputed view: samples and paths for every step count ------------------------------------------------

MAX_STEPS = 16


@functools.lru_cache(maxsize=4)
def _zoo_reference(n: int, seed: int, exact_steps: int) -> tuple[Tensor, Tensor, Trajectory, float]:
    """(noise x0, a data sample, the exact flow from x0, W2 of the exact map's endpoints to the data): the same for
    every loss of one widget, so computed once (RK4 on the closed-form velocity; error ~1e-5 at 64 steps)."""
    from ..data import gmm_2d
    from ..metrics import wasserstein

    gmm = gmm_2d(ZOO_TARGET)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g)
    data = gmm.sample(n, generator=g).float()
    exact = solve(lambda x, t: gmm.velocity(x, t), x0.double(), steps=exact_steps, method="rk4",
                  return_trajectory=True)
    return x0, data, exact, wasserstein(exact.x.float(), data)


class ZooView:
    """Everything the step-count slider shows, computed once per model: for k = 1..16 the samples at t = 1 and the
    paths of a few particles, the exact flow map of the same noise (RK4 on the closed-form velocity, 64 steps; shared
    by every view of the same n and seed), the RMS distance to the exact map's endpoints, and W2 against a data
    sample (`w2_at(k)`: an exact OT solve, about 30 ms at n = 600, so each is computed when first shown; `w2` gives
    all of them)."""

    def __init__(self, model: Any, loss: str, n: int = 600, n_paths: int = 24, seed: int = 0,
                 max_steps: int = MAX_STEPS, exact_steps: int = 64):
        if n_paths > n:
            raise ValueError(f"n_paths must be <= n, got {n_paths} > {n}")
        self.loss, self.name = loss, DISPLAY_NAMES.get(loss, loss)
        self.x0, self.data, exact, self.exact_w2 = _zoo_reference(n, seed, exact_steps)
        self.exact_end = exact.x.float()
        self.exact_paths = exact.xs[:, :n_paths].float()  # [exact_steps + 1, n_paths, 2]
        self.exact_ts = exact.ts.float()
        self.samples: dict[int, Tensor] = {}
        self.paths: dict[int, Tensor] = {}
        self.error: dict[int, float] = {}
        self._w2: dict[int, float] = {}
        for k in range(1, max_steps + 1):
            traj = trajectory(model, loss, self.x0, k, generator=torch.Generator().manual_seed(seed + 1000 + k))
            end = traj.x.float()
            self.samples[k], self.paths[k] = end, traj.xs[:, :n_paths].float()
            self.error[k] = (end - self.exact_end).pow(2).sum(1).mean().sqrt().item()  # RMS ||X - X_exact||

    def w2_at(self, steps: int) -> float:
        """W2 of the `steps`-step samples to the data sample (nan when a sample is not finite); computed once."""
        from ..metrics import wasserstein

        if steps not in self._w2:
            end = self.samples[steps]
            self._w2[steps] = wasserstein(end, self.data) if bool(torch.isfinite(end).all()) else float("nan")
        return self._w2[steps]

    @property
    def w2(self) -> dict[int, float]:
        """{k: W2 of the k-step samples to the data sample} for every step count."""
        return {k: self.w2_at(k) for k in self.samples}


def render_zoo(view: ZooView, steps: int = 1, show_paths: bool = True) -> Any:
    """Left: the model's samples after `steps` steps (green) over the exact flow map's endpoints of the same noise
    (black) and data (orange). Right: paths of a few particles, the model's jumps (green, one marker per step) and
    the exact flow (black dotted). Title: W2 to data and RMS distance to the exact endpoints."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .style import COLORS, NOTEBOOK_WIDTH, apply_style

    if steps not in view.samples:
        raise ValueError(f"steps must be one of 1..{max(view.samples)}, got {steps}")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("samples at t = 1", "paths from the noise (t = 0)"))
    d, e, m = view.data.numpy(), view.exact_end.numpy(), view.samples[steps].numpy()
    fig.add_trace(go.Scatter(x=d[:, 0], y=d[:, 1], mode="markers", name="data",
                             marker=dict(color=COLORS["data"], size=4, opacity=0.35)), 1, 1)
    fig.add_trace(go.Scatter(x=e[:, 0], y=e[:, 1], mode="markers", name="exact flow map X(x0, 0, 1)",
                             marker=dict(color=COLORS["reference"], size=3)), 1, 1)
    fig.add_trace(go.Scatter(x=m[:, 0], y=m[:, 1], mode="markers", name=f"{view.name}, {steps} step(s)",
                             marker=dict(color=COLORS["model"], size=4, opacity=0.8)), 1, 1)
    ex_x, ex_y = _polylines(view.exact_paths)
    mo_x, mo_y = _polylines(view.paths[steps])
    start = view.exact_paths[0].numpy()
    fig.add_trace(go.Scatter(x=ex_x, y=ex_y, mode="lines", name="exact paths", visible=bool(show_paths),
                             line=dict(color=COLORS["reference"], width=1.5), opacity=0.55), 1, 2)
    fig.add_trace(go.Scatter(x=mo_x, y=mo_y, mode="lines+markers", name="model jumps", visible=bool(show_paths),
                             line=dict(color=COLORS["model"], width=2), marker=dict(size=5)), 1, 2)
    fig.add_trace(go.Scatter(x=start[:, 0], y=start[:, 1], mode="markers", name="noise x0", visible=bool(show_paths),
                             marker=dict(color=COLORS["noise"], size=7)), 1, 2)
    title = (f"{view.name}: {steps} step(s). W2 to data {view.w2_at(steps):.3f} (exact map {view.exact_w2:.3f}); "
             f"RMS distance to the exact map {view.error[steps]:.3f}")
    apply_style(fig, title=title)
    fig.update_layout(width=NOTEBOOK_WIDTH, height=560, title=dict(font=dict(size=17)))
    for col in (1, 2):
        fig.update_xaxes(title_text="x<sub>1</sub>", range=[-4.5, 4.5], row=1, col=col)
        fig.update_yaxes(title_text="x<sub>2</sub>", range=[-4.5, 4.5], scaleanchor=f"x{'' if col == 1 else 2}",
                         scaleratio=1, row=1, col=col)
    return fig


def _polylines(xs: Tensor) -> tuple[list[float | None], list[float | None]]:
    """Paths [T, P, 2] as one x/y list with None between particles (one trace for all paths)."""
    px: list[float | None] = []
    py: list[float | None] = []
    for p in range(xs.shape[1]):
        px += xs[:, p, 0].tolist() + [None]
        py += xs[:, p, 1].tolist() + [None]
    return px, py


def render_quality(views: dict[str, ZooView], metric: str = "error") -> Any:
    """RMS distance to the exact map ('error') or W2 to data ('w2') against the step count, one line per loss."""
    import plotly.graph_objects as go

    from .style import COLORS, SEQUENCE, apply_style

    if metric not in ("error", "w2"):
        raise ValueError(f"metric must be 'error' or 'w2', got {metric!r}")
    fig = go.Figure()
    for i, (label, view) in enumerate(views.items()):
        values = getattr(view, metric)
        fig.add_trace(go.Scatter(x=list(values), y=list(values.values()), mode="lines+markers", name=label,
                                 line=dict(color=SEQUENCE[i % len(SEQUENCE)], width=3)))
    if metric == "w2" and views:
        floor = next(iter(views.values())).exact_w2
        fig.add_hline(y=floor, line=dict(color=COLORS["reference"], dash="dash"),
                      annotation_text="exact flow map", annotation_position="top right")
    label = "RMS distance to the exact flow map" if metric == "error" else "W2 to data"
    apply_style(fig, title=f"{label} against the number of steps", x_title="sampling steps (network calls)",
                y_title=label)
    fig.update_xaxes(type="log", tickvals=[1, 2, 4, 8, 16])
    fig.update_yaxes(type="log")
    return fig


# --- the widget ---------------------------------------------------------------------------------------------------

class ZooLab:
    """Train-and-look state behind the widget: one cached ZooView per (loss, teacher, training steps)."""

    def __init__(self, train_steps: int = 2000, n: int = 600, seed: int = 0, progress: bool = True,
                 max_steps: int = MAX_STEPS):
        self.train_steps, self.n, self.seed, self.progress = train_steps, n, seed, progress
        self.max_steps = max_steps
        self.views: dict[tuple[str, str], ZooView] = {}

    def view(self, loss: str, teacher: str = "exact") -> ZooView:
        key = (loss, teacher if needs_teacher(loss) else "-")
        if key not in self.views:
            trainer = train_zoo(loss, self.train_steps, teacher, self.seed, progress=self.progress)
            self.views[key] = ZooView(trainer.ema, loss, n=self.n, seed=self.seed, max_steps=self.max_steps)
        return self.views[key]

    def render(self, loss: str, teacher: str = "exact", steps: int = 1, show_paths: bool = True) -> Any:
        return render_zoo(self.view(loss, teacher), steps, show_paths)


def zoo_widget(losses: Sequence[str] | None = None, loss: str = "meanflow", train_steps: int = 2000, n: int = 600,
               seed: int = 0, max_steps: int = MAX_STEPS) -> Any:
    """Pick a loss (and, for distillation, the teacher), train it (progress bar; cached), and move the step-count
    slider (1 to 16) over its samples and paths against the exact flow map of the 8-mode mixture."""
    import ipywidgets as W

    from .widgets import checkbox, dropdown, int_slider, interactive_view

    names = list(losses) if losses is not None else ["cfm"] + flow_map_losses()
    lab = ZooLab(train_steps, n, seed, max_steps=max_steps)
    # Train the first one now, its bar in the cell's own output: a bar displayed inside `progress` while the cell runs
    # would make nbclient (nbconvert --execute) answer on the shell channel and can stall the cell (View._show).
    lab.view(loss)
    progress = W.Output()  # bars of later trainings (another loss picked in the menu) show here
    controls = {"loss": dropdown("loss", {DISPLAY_NAMES.get(n_, n_): n_ for n_ in names}, loss),
                "teacher": dropdown("teacher (distillation)", TEACHERS, "exact"),
                "steps": int_slider("sampling steps", 1, max_steps, 1),
                "show_paths": checkbox("show paths", True)}

    def render(**params: Any) -> Any:
        with progress:
            return lab.render(**params)

    view = interactive_view(render, controls)
    view.children = (*view.children, progress)
    view.lab = lab
    return view


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Every run lab 12's zoo widget and quality plot can train (each loss; distillation with each teacher; its
    TRAIN steps) for `python -m fmlab prewarm` (fmlab.prewarm): the flow-matching teacher alone in stage 0, so that
    every other run can start as soon as it is done."""
    from ..prewarm import job

    steps = 150 if fast else 2000
    jobs = [job("12", "fmlab.viz.loss_zoo:train_zoo", "cfm", steps, progress=False, cost=steps)]
    for loss in flow_map_losses():
        for teacher in TEACHERS.values() if needs_teacher(loss) else ["exact"]:
            jobs.append(job("12", "fmlab.viz.loss_zoo:train_zoo", loss, steps, teacher, progress=False, cost=steps,
                            stage=1))
    return jobs
