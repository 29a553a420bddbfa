"""The loss zoo (lab 09): every flow-map loss trained on the same small MLP, sampled in 1..16 steps, drawn beside the
exact flow map of a Gaussian mixture, and the benchmark's landscape table (benchmarks/flowmaps.py).

Convention (fmlab.conventions): t = 0 is noise, t = 1 is data; a flow map X(x, s, t) = x + (t - s) u(x, s, t)
jumps from s to t. A model is sampled the way its loss trained it (`SAMPLERS`):
- 'flowmap': jumps x_{i+1} = X(x_i, t_i, t_{i+1}) on a uniform grid (losses that learn every pair s <= t);
- 'consistency': jump to the data, re-noise onto the linear path with fresh noise, repeat (losses that learn only
  X(x, s, 1): CT, CD, FACM; Song et al. 2023, Algorithm 1);
- 'noise_only': X(x0, 0, t_k) from the noise (losses that learn only maps starting at t = 0: PID, FreeFlow); more
  steps add nothing, so every step count gives the one-step sample: the benchmark evaluates them at 1 step only
  and the tables show them as 1 NFE (`one_nfe`).

This module holds the shared numbers (the model, the survey's cost estimates) and the pure functions; the widget
layer at the end only wires controls to them. Training runs are cached per kernel (fmlab.labkit.train_cached).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..flowmaps import flow_map, sample_consistency, sample_flow_map
from ..losses import get_loss, list_losses
from ..solvers import Trajectory, solve

__all__ = [
    "ZOO_MODEL", "SURVEY_COST", "PAPER_MEMORY", "SAMPLERS", "RULES", "DISPLAY_NAMES", "RESULTS_PATH", "ZOO_TARGET",
    "ZOO_DATA", "ZOO_TIME_FREQ_MAX", "PAPER_MEMORY_GB", "TEACHERS", "MAX_STEPS", "flow_map_losses", "sampler_of",
    "rule_of", "needs_teacher", "classification", "time_gaps", "time_gap_table", "zoo_model", "zoo_config",
    "generate", "trajectory", "load_results", "zoo_teacher", "train_zoo", "ZooView", "render_zoo", "render_quality",
    "landscape_rows", "fm_reference", "DIVERGED_W2", "format_w2", "w2_stats", "format_w2_stats", "summarise_runs",
    "one_nfe", "steps_text", "headline_text", "AYF_VARIANTS", "ayf_gap_text", "render_landscape", "render_costs",
    "ZooLab", "zoo_widget",
]

# The one model of the zoo and the benchmark (the labs' MLP: 3 hidden layers of 128, batch 256, AdamW lr 2e-3, EMA),
# with time-embedding frequencies up to ZOO_TIME_FREQ_MAX = 10 instead of fmlab's default 200. Continuous-time losses
# differentiate the network in time (d/ds u through the JVP), and with frequencies up to 200 that derivative is large
# and noisy: AYF-EMD (a stop-gradient, sCM-style tangent) then diverges on the 8-mode mixture with the perfect teacher
# (RMS distance of its one-step map to the exact one 3.8 after 800 steps, against 0.46 with w_max = 10; EMD 0.54 vs
# 0.36), while flow matching is unchanged (100-step W2 on moons 0.207 vs 0.214, checkerboard 0.457 vs 0.454).
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

# Peak training memory reported by the SGFlow paper on its U-Net (GB; /work/shared/sources/sgflow-review.txt, the
# memory table): FM 16.8, MeanFlow 14.2, SGFlow 43.2, "Lagrange" 69.8, "Euler" 69.8, "Progressive" 54.3. Its results
# table names the Lagrange baseline "Lagrange (L-FMM)", Lagrangian flow map matching (Boffi et al. 2024): our 'fmm',
# not LSD. "Euler" and "Progressive" are not attached: the review does not say which Boffi et al. losses they are.
PAPER_MEMORY_GB: dict[str, float] = {"cfm": 16.8, "meanflow": 14.2, "sgflow": 43.2, "fmm": 69.8}
PAPER_MEMORY: dict[str, float] = {k: v / PAPER_MEMORY_GB["cfm"] for k, v in PAPER_MEMORY_GB.items()}

SAMPLERS: dict[str, str] = {"ct": "consistency", "cd": "consistency", "facm": "consistency",
                            "pid": "noise_only", "freeflow": "noise_only"}

RULES: dict[str, str] = {"flow map: compositional": "compositional", "flow map: Lagrangian": "Lagrangian",
                         "flow map: Eulerian": "Eulerian", "flow matching": "(velocity)"}

DISPLAY_NAMES: dict[str, str] = {
    "cfm": "flow matching", "meanflow": "MeanFlow", "imf": "iMF", "ct": "CT", "cd": "CD", "ctm": "CTM",
    "facm": "FACM", "soflow": "SoFlow", "emd": "EMD", "esd": "ESD", "ayf_emd": "AYF (Eulerian)",
    "ayf_lagrangian": "AYF (Lagrangian)", "lmd": "LMD", "lsd": "LSD", "tvm": "TVM", "pid": "PID",
    "shortcut": "Shortcut", "psd": "PSD", "splitmeanflow": "SplitMeanFlow", "fmm": "FMM", "pfmm": "PFMM",
    "freeflow": "FreeFlow", "sgflow": "SGFlow",
}

RESULTS_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "flowmaps.json"


# --- which loss is what -----------------------------------------------------------------------------------------

def flow_map_losses() -> list[str]:
    """Names of the registered two-time (flow-map) losses, in registry order."""
    return [s.name for s in list_losses() if s.time_inputs == 2]


def sampler_of(loss: str) -> str:
    """'flowmap', 'consistency' or 'noise_only' (see the module docstring); 'ode' for one-time (velocity) losses."""
    spec = get_loss(loss)
    if spec.time_inputs == 1:
        return "ode"
    return SAMPLERS.get(loss, "flowmap")


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
    """The states of `steps`-step sampling from noise x0 (t = 0) to data (t = 1), the way `loss` trained the model.

    'ode' (one-time velocity models): Euler steps; 'flowmap': jumps on the uniform grid; 'consistency': jump to
    the data and re-noise (fresh noise from `generator`); 'noise_only': X(x0, 0, t_k) at the grid times.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    kind = sampler_of(loss)
    if kind == "ode":
        return solve(model, x0, steps=steps, method="euler", return_trajectory=True)
    if kind == "flowmap":
        return sample_flow_map(model, x0, steps=steps, return_trajectory=True)
    if kind == "consistency":
        return sample_consistency(model, x0, steps=steps, generator=generator, return_trajectory=True)
    ts = torch.linspace(0, 1, steps + 1, dtype=x0.dtype, device=x0.device)
    xs = [x0] + [flow_map(model, x0, 0.0, float(t)) for t in ts[1:]]  # X(x0, 0, t_k): every state from the noise
    return Trajectory(xs=torch.stack(xs), ts=ts, nfe=1)


def generate(model: Any, loss: str, x0: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """Samples at t = 1 after `steps` steps (see `trajectory`)."""
    return trajectory(model, loss, x0, steps, generator).x


# --- the benchmark's results file -----------------------------------------------------------------------------

def load_results(path: str | Path | None = None) -> dict[str, Any]:
    """The results written by benchmarks/flowmaps.py (default benchmarks/results/flowmaps.json)."""
    path = Path(path) if path is not None else RESULTS_PATH
    if not path.exists():
        raise FileNotFoundError(f"no benchmark results at {path}: run `python benchmarks/flowmaps.py` "
                                f"(about 15 minutes on 2 cores) to create them")
    return json.loads(path.read_text())


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


class ZooView:
    """Everything the step-count slider shows, computed once per model: for k = 1..16 the samples at t = 1 and the
    paths of a few particles, the exact flow map of the same noise (RK4 on the closed-form velocity, 64 steps),
    W2 against a data sample and the RMS distance to the exact map's endpoints."""

    def __init__(self, model: Any, loss: str, n: int = 600, n_paths: int = 24, seed: int = 0,
                 max_steps: int = MAX_STEPS, exact_steps: int = 64):
        from ..data import gmm_2d
        from ..metrics import wasserstein

        if n_paths > n:
            raise ValueError(f"n_paths must be <= n, got {n_paths} > {n}")
        self.loss, self.name = loss, DISPLAY_NAMES.get(loss, loss)
        gmm = gmm_2d(ZOO_TARGET)
        g = torch.Generator().manual_seed(seed)
        self.x0 = torch.randn(n, 2, generator=g)
        self.data = gmm.sample(n, generator=g).float()
        exact = solve(lambda x, t: gmm.velocity(x, t), self.x0.double(), steps=exact_steps, method="rk4",
                      return_trajectory=True)  # the exact flow from the same noise (RK4 error ~1e-5 at 64 steps)
        self.exact_end = exact.x.float()
        self.exact_paths = exact.xs[:, :n_paths].float()  # [exact_steps + 1, n_paths, 2]
        self.exact_ts = exact.ts.float()
        self.samples: dict[int, Tensor] = {}
        self.paths: dict[int, Tensor] = {}
        self.w2: dict[int, float] = {}
        self.error: dict[int, float] = {}
        for k in range(1, max_steps + 1):
            traj = trajectory(model, loss, self.x0, k, generator=torch.Generator().manual_seed(seed + 1000 + k))
            end = traj.x.float()
            self.samples[k], self.paths[k] = end, traj.xs[:, :n_paths].float()
            self.w2[k] = wasserstein(end, self.data) if bool(torch.isfinite(end).all()) else float("nan")
            self.error[k] = (end - self.exact_end).pow(2).sum(1).mean().sqrt().item()  # RMS ||X - X_exact||
        self.exact_w2 = wasserstein(self.exact_end, self.data)


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
    title = (f"{view.name}: {steps} step(s). W2 to data {view.w2[steps]:.3f} (exact map {view.exact_w2:.3f}); "
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


# --- the benchmark table ---------------------------------------------------------------------------------------

def landscape_rows(results: dict[str, Any], coupling: str = "independent") -> list[dict[str, Any]]:
    """One row per loss trained with `coupling`: name, rule, setting, survey cost, our cost, memory, sampler, and
    the W2 over seeds at each step count per data set (keys 'w2/<data>/<k>': w2_stats dicts, mean +- std)."""
    summary = {(r["loss"], r["data"]): r for r in summarise_runs(results["runs"]) if r["coupling"] == coupling}
    rows = []
    for loss, info in results["losses"].items():
        if not any(key[0] == loss for key in summary):
            continue
        row = {"loss": loss, "name": info["name"], "rule": info["rule"], "setting": info["setting"],
               "survey_cost": info.get("survey_cost"), "fwd_eq": info.get("fwd_eq"),
               "mem_rel_fm": info.get("mem_rel_fm"), "sampler": info.get("sampler")}
        for data in results["config"]["datasets"]:
            for k, stats in summary.get((loss, data), {"w2": {}})["w2"].items():
                row[f"w2/{data}/{k}"] = stats
        rows.append(row)
    return rows


def fm_reference(results: dict[str, Any], data: str, coupling: str = "independent") -> dict[str, Any]:
    """W2 over seeds (w2_stats: mean, std, n) of flow matching with the benchmark's many-step Euler sampler (100)."""
    runs = [r for r in results["runs"] if r["loss"] == "cfm" and r["data"] == data and r["coupling"] == coupling]
    if not runs:
        raise ValueError(f"no flow-matching run for data={data!r}, coupling={coupling!r} in the results")
    return w2_stats([r["w2"][str(results["config"]["fm_steps"])] for r in runs])


TABLE_DATA_NAMES = {"checkerboard": "checker-<br>board"}  # narrow table columns: long names on two lines
DIVERGED_W2 = 100.0  # W2 beyond this on the 2D sets (data within a few units of the origin): training diverged


def format_w2(w2: float | None) -> str:
    """A W2 for the tables: 3 decimals, '-' when missing, 'diverged' when non-finite or beyond DIVERGED_W2."""
    if w2 is None:
        return "-"
    return "diverged" if not w2 <= DIVERGED_W2 else f"{w2:.3f}"


def w2_stats(values: Sequence[float]) -> dict[str, Any]:
    """W2 over seeds: mean and std (ddof 1; 0 for one seed) of the runs that did not diverge, the number of runs
    `n` and of diverged runs `n_diverged` (non-finite or beyond DIVERGED_W2); mean is nan when all diverged."""
    if not values:
        raise ValueError("values must hold at least one W2")
    finite = [float(v) for v in values if v <= DIVERGED_W2]  # nan fails the comparison
    mean = statistics.mean(finite) if finite else float("nan")
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values), "n_diverged": len(values) - len(finite)}


def format_w2_stats(stats: dict[str, Any] | None, sep: str = " ") -> str:
    """'mean +- std' (3 decimals; the mean alone for one seed), '-' when missing, 'diverged' when every seed
    diverged, and '(k/n diverged)' after the mean of the others when some did. `sep` goes before '+-' (use '<br>'
    for narrow table cells)."""
    if stats is None:
        return "-"
    n, bad = stats["n"], stats["n_diverged"]
    if bad == n:
        return "diverged" if n == 1 else f"diverged ({bad}/{n})"
    text = f"{stats['mean']:.3f}" + (f"{sep}+- {stats['std']:.3f}" if n - bad > 1 else "")
    return text + (f" ({bad}/{n} diverged)" if bad else "")


def summarise_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (loss, data, coupling) of the benchmark's per-seed run records: the seeds, the sampler and
    w2_stats at each evaluated step count (keys as in the records: '1', '2', ..., '100' for flow matching)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["loss"], r["data"], r["coupling"]), []).append(r)
    rows = []
    for (loss, data, coupling), records in groups.items():
        keys = [k for k in records[0]["w2"] if all(k in r["w2"] for r in records)]
        rows.append({"loss": loss, "data": data, "coupling": coupling, "sampler": records[0].get("sampler"),
                     "seeds": [r.get("seed", 0) for r in records],
                     "w2": {k: w2_stats([r["w2"][k] for r in records]) for k in keys}})
    return rows


def one_nfe(loss: str) -> bool:
    """True for losses sampled only in one jump from the noise (PID, FreeFlow): more steps add nothing."""
    return SAMPLERS.get(loss) == "noise_only"


def _cell_colour(stats: dict[str, Any] | None, ref: float) -> str:
    """Green when the mean W2 is within 1.2x of `ref`, yellow within 2x, red beyond or diverged, grey if missing."""
    if stats is None:
        return "#eeeeee"
    if stats["n_diverged"] == stats["n"]:
        return "#fcbba1"
    ratio = stats["mean"] / ref
    return "#c7e9c0" if ratio <= 1.2 else "#fee391" if ratio <= 2.0 else "#fcbba1"


def _landscape_cell(row: dict[str, Any], data: str, k: int) -> tuple[str, str, float]:
    """(text, fill, sort value) of one W2 cell: 'mean<br>+- std'; 'n/a' beyond 1 step for 1-NFE samplers."""
    stats = row.get(f"w2/{data}/{k}")
    if row["sampler"] == "noise_only" and k != 1:
        return "n/a<br>(1 NFE)", "#eeeeee", float("inf")
    text = format_w2_stats(stats, sep="<br>")
    if row["sampler"] == "noise_only" and stats is not None:
        text += " (1 NFE)"
    return text, "", _nan_last(stats)


def render_landscape(results: dict[str, Any], coupling: str = "independent", steps: Sequence[int] = (1, 2, 4, 8),
                     sort_by: str | None = None) -> Any:
    """The survey's landscape table with our measurements: rule, setting, the survey's cost estimate beside our
    measured cost (forward-pass equivalents), peak memory relative to flow matching, and W2 (mean +- std over the
    benchmark's seeds) at 1..8 steps per data set, coloured by the ratio of the mean to 100-step flow matching's
    mean (green <= 1.2x, yellow <= 2x, red beyond). PID and FreeFlow sample in one jump from the noise: their
    1-step cell says 1 NFE, the others are n/a."""
    import plotly.graph_objects as go

    from .style import NOTEBOOK_WIDTH, apply_style

    rows = landscape_rows(results, coupling)
    if not rows:
        raise ValueError(f"no runs with coupling={coupling!r} in the results")
    datasets = results["config"]["datasets"]
    if sort_by is not None:
        if sort_by not in datasets:
            raise ValueError(f"sort_by must be None or one of {datasets}, got {sort_by!r}")
        rows.sort(key=lambda r: (r["loss"] != "cfm", _nan_last(r.get(f"w2/{sort_by}/1"))))
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    header = ["method", "rule", "setting", "cost: survey", "cost: ours", "memory vs FM"]
    columns = [[r["name"] for r in rows], [r["rule"] for r in rows], [r["setting"] for r in rows],
               [fmt(r["survey_cost"], "g") for r in rows], [fmt(r["fwd_eq"], ".1f") for r in rows],
               [fmt(r["mem_rel_fm"], ".2f") for r in rows]]
    fills = [["white"] * len(rows)] * len(columns)
    for data in datasets:
        ref = fm_reference(results, data, coupling)["mean"]
        for k in steps:
            header.append(f"{TABLE_DATA_NAMES.get(data, data)}<br>W2 {k}")
            cells = [_landscape_cell(r, data, k) for r in rows]
            columns.append([text for text, _, _ in cells])
            fills.append([fill or _cell_colour(r.get(f"w2/{data}/{k}"), ref) for r, (_, fill, _) in zip(rows, cells,
                                                                                                         strict=True)])
    seeds = sorted({r.get("seed", 0) for r in results["runs"]})
    fig = go.Figure(go.Table(
        columnwidth=[105, 85, 135, 50, 50, 55] + [66] * (len(header) - 6),
        header=dict(values=[f"<b>{h}</b>" for h in header], fill_color="#f0f0f0", align="center",
                    font=dict(size=11), height=48),
        cells=dict(values=columns, fill_color=fills, align="center", font=dict(size=11), height=34)))
    refs = ", ".join(f"{d} {_pm(fm_reference(results, d, coupling))}" for d in datasets)
    floors = ", ".join(f"{d} {_pm(results['noise_floor'][d])}" for d in datasets)
    title = (f"Flow-map losses, {coupling} coupling, {results['config']['steps']} training steps, W2 mean +- std over "
             f"{len(seeds)} seed(s)<br><sup>flow matching with {results['config']['fm_steps']} steps: {refs}; noise "
             f"floor: {floors}</sup>")
    apply_style(fig, title=title)
    fig.update_layout(width=NOTEBOOK_WIDTH, height=160 + 36 * len(rows), title=dict(font=dict(size=15)),
                      margin=dict(l=10, r=10, t=80, b=10))
    return fig


def _pm(stats: dict[str, Any]) -> str:
    return f"{stats['mean']:.3f} +- {stats.get('std', 0.0):.3f}"


def _nan_last(stats: dict[str, Any] | None) -> float:
    if stats is None or stats["n_diverged"] == stats["n"]:
        return float("inf")
    return stats["mean"] + (1e6 if stats["n_diverged"] else 0.0)  # a loss that diverged on some seed sorts late


def steps_text(results: dict[str, Any], losses: Sequence[str], coupling: str = "independent") -> str:
    """W2 at each sampling step count (mean +- std over the seeds each run had), one line per loss and data set."""
    rows = {(r["loss"], r["data"]): r for r in summarise_runs(results["runs"]) if r["coupling"] == coupling}
    lines = []
    for loss in losses:
        for data in results["config"]["datasets"]:
            row = rows.get((loss, data))
            if row is None:
                raise ValueError(f"no {coupling} run of {loss!r} on {data!r} in the results")
            cells = ", ".join(f"{k}: {format_w2_stats(stats)}" for k, stats in row["w2"].items())
            n = len(row["seeds"])
            lines.append(f"{DISPLAY_NAMES.get(loss, loss):17s} {data:12s} ({n} seed{'s' * (n > 1)}) steps {cells}")
    return "\n".join(lines)


AYF_VARIANTS = {"ayf": "AYF-LMD as in the zoo", "ayf_c0": "AYF-LMD, c = 0", "ayf_u": "AYF-LMD, gradient / h",
                "lmd": "LMD"}  # benchmarks/flowmaps_ayf.py: the variants it trains


def ayf_gap_text(results: dict[str, Any]) -> str:
    """benchmarks/flowmaps_ayf.py's results as text: per variant and data set, W2 at 1/2/4/8 steps and the RMS
    average-velocity error of a jump of length h against the teacher's flow, from points on the path and from the
    points the 1/h-step sampler visits."""
    gaps = [f"{h:g}" for h in results["config"]["gaps"]]
    lines = [f"{'variant':22s} {'data':12s} {'W2 at 1 / 2 / 4 / 8 steps':28s} error per jump, h = {' / '.join(gaps)}:"
             " on the path | at the sampler's points"]
    for r in results["runs"]:
        lines.append(f"{AYF_VARIANTS.get(r['variant'], r['variant']):22s} {r['data']:12s} "
                     + " / ".join(f"{r['w2'][k]:.3f}" for k in ("1", "2", "4", "8")) + "    "
                     + " / ".join(f"{r['gap_error']['path'][h]:.2f}" for h in gaps) + " | "
                     + " / ".join(f"{r['gap_error']['sampler'][h]:.2f}" for h in gaps))
    return "\n".join(lines)


def headline_text(results: dict[str, Any]) -> str:
    """The benchmark's headline as text, per data set: 100-step flow matching and the noise floor (mean +- std),
    then the leading flow-map losses at 1 step (mean +- std over seeds) with their ratio to flow matching and the
    verdict of the difference (benchmarks/flowmaps.py `compare`: resolved beyond 2 standard errors), and the
    selection effect (the loss that wins on one seed alone, and its W2 on the other seeds)."""
    if "headline" not in results:
        raise ValueError("these results have no 'headline': rerun benchmarks/flowmaps.py")
    lines = []
    for data, rows in results["headline"].items():
        fm, floor = fm_reference(results, data), results["noise_floor"][data]
        lines.append(f"{data}: flow matching, {results['config']['fm_steps']} Euler steps {_pm(fm)} ({fm['n']} seeds); "
                     f"data vs data {_pm(floor)} ({floor.get('draws', '?')} draws)")
        for r in rows:
            verdict = r["vs_fm_100"]["verdict"]
            verdict = {"lower": "below it", "higher": "above it", "within noise": "within noise of it"}.get(verdict,
                                                                                                      verdict)
            lines.append(f"  {DISPLAY_NAMES.get(r['loss'], r['loss']):17s} 1 step {_pm(r['w2_1'])} "
                         f"({r['ratio_fm_100']:.2f}x flow matching; {verdict})")
        for sel in results["target"][f"{data}/independent"]["selection"][:1]:
            other = sel["w2_1_other_seeds"]
            lines.append(f"  best of {sel['n_losses']} on seed {sel['seed']} alone: "
                         f"{DISPLAY_NAMES.get(sel['best_loss'], sel['best_loss'])} {sel['w2_1']:.3f}"
                         + ("" if other is None else f", {other:.3f} on average over its other seeds"))
    return "\n".join(lines)


def render_costs(results: dict[str, Any]) -> Any:
    """Our measured cost per training step against the survey's estimate, in forward-pass equivalents."""
    import plotly.graph_objects as go

    from .style import COLORS, NOTEBOOK_WIDTH, apply_style

    names = [n for n, info in results["losses"].items() if info.get("fwd_eq") is not None]
    names.sort(key=lambda n: results["losses"][n]["fwd_eq"])
    labels = [results["losses"][n]["name"] for n in names]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=[results["losses"][n].get("survey_cost") for n in names],
                         name="survey's estimate", marker_color=COLORS["path"]))
    fig.add_trace(go.Bar(x=labels, y=[results["losses"][n]["fwd_eq"] for n in names],
                         name="measured here (3 x 128 MLP, CPU)", marker_color=COLORS["model"]))
    apply_style(fig, title="Cost of one training step", y_title="forward-pass equivalents")
    fig.update_layout(barmode="group", width=NOTEBOOK_WIDTH, height=520)
    fig.update_xaxes(tickangle=-45)
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
