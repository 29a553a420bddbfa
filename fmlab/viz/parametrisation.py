"""Figures, runs and widgets for lab 06 (parametrisation): the velocity head against the clean-data (x1) head,
gradient norms near the data, matched-loss gradients, the heads' conversions, transition norms.

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1, u = x1 - x0; the x1
head predicts E[x1 | x_t]. Runs come from fmlab.experiments (cached per kernel). Render functions are pure: they
take numbers / run results and return a plotly figure.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data import sample_toy
from ..diagnostics import (
    DEFAULT_LEVELS,
    grad_norms_at_levels,
    transition_jacobians,
)
from ..experiments import RunResult, lab_config, run, run_from_state, run_state
from ..labkit import cache_key, persisted
from ..losses import get_loss
from ..solvers import solve
from .style import COLORS, SEQUENCE, apply_style
from .widgets import ReplayView, show_final, show_live

__all__ = [
    "series_color", "render_grad_norms", "render_w1_bars", "render_transition_norms",
    "PARAM_DATASETS", "EVAL_LOSS_N", "MATCHED_BATCHES", "head_conversions", "x1_loss_identities",
    "parametrisation_configs", "head_label", "grad_norm_curves", "velocity_equivalent_loss",
    "ParametrisationRun", "parametrisation_run", "gradients_at", "MatchedGradients", "matched_gradients",
    "parametrisation_live", "parametrisation_table", "summarise_gradients", "render_samples",
    "transition_profiles", "transition_widget",
    "prewarm_jobs",
]


# --- figures: parametrisation -------------------------------------------------------------------------------------

_HEAD_COLORS = {"field": COLORS["noise"], "x1": COLORS["highlight"]}


def series_color(i: int, label: str) -> str:
    """The colour of run `label` (i-th in a figure): the velocity head, the x1 head, single-step FM, OT."""
    if "x1" in label:
        return _HEAD_COLORS["x1"]
    if label.startswith("single-step") or label == "field":
        return COLORS["model"] if "OT" not in label else COLORS["ot"]
    return SEQUENCE[(i + 1) % len(SEQUENCE)]


def render_grad_norms(curves: Mapping[str, tuple[Sequence[int], Tensor]], levels: Sequence[float],
                      upto: int | None = None, total_steps: int | None = None, log_y: bool = True) -> go.Figure:
    """Gradient norm against training step, one panel per noise level (the manuscript's figure, our time).

    curves: {label: (steps [n], norms [n, len(levels)])}; `upto` shows only measurements at steps <= upto (replay).
    """
    n = len(levels)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    titles = [f"t = {lv:g}" + (" (near data)" if lv >= 0.85 else " (near noise)" if lv <= 0.15 else "")
              for lv in levels]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True, vertical_spacing=0.14,
                        horizontal_spacing=0.1)
    shown = 0
    for i, (label, (steps, norms)) in enumerate(curves.items()):
        steps_t = torch.as_tensor(list(steps))
        keep = steps_t <= upto if upto is not None else torch.ones(len(steps_t), dtype=torch.bool)
        norms = torch.as_tensor(norms)
        for j in range(n):
            y = norms[keep, j].tolist() if len(norms) else []
            fig.add_trace(go.Scatter(x=steps_t[keep].tolist(), y=y, mode="lines", name=label, legendgroup=label,
                                     showlegend=j == 0, line=dict(color=series_color(i, label), width=2)),
                          row=j // cols + 1, col=j % cols + 1)
        shown = max(shown, int(steps_t[keep].max()) if bool(keep.any()) else 0)
    step_text = f" (step {shown})" if upto is not None else ""
    apply_style(fig, title=f"Gradient norm at four noise levels{step_text}")
    fig.update_yaxes(type="log" if log_y else "linear", tickformat=".3~g", title_text="||grad||")
    if log_y:
        fig.update_yaxes(dtick="D2")  # 1-2-5 ticks in each decade
    fig.update_xaxes(title_text="training step", row=rows)
    if total_steps:
        fig.update_xaxes(range=[0, total_steps])
    fig.update_layout(width=900, height=640, legend=dict(orientation="h", y=-0.14, x=0.0))
    fig.update_annotations(font_size=15)
    return fig


def render_w1_bars(table: Mapping[str, Mapping[str, float]], floors: Mapping[str, float] | None = None,
                   title: str = "Sample quality: W1 to the data (lower is better)") -> go.Figure:
    """Grouped bars: table {dataset: {label: W1}}; `floors` {dataset: data-vs-data W1} drawn as black ticks."""
    datasets = list(table)
    labels = list(dict.fromkeys(lbl for row in table.values() for lbl in row))
    fig = go.Figure()
    for i, label in enumerate(labels):
        fig.add_trace(go.Bar(x=datasets, y=[table[d].get(label) for d in datasets], name=label,
                             marker_color=series_color(i, label),
                             text=[f"{table[d][label]:.3f}" if label in table[d] else "" for d in datasets],
                             textposition="outside"))
    if floors:
        fig.add_trace(go.Scatter(x=list(floors), y=list(floors.values()), mode="markers",
                                 name="noise floor (data vs data)",
                                 marker=dict(symbol="line-ew-open", size=40, color=COLORS["reference"],
                                             line=dict(width=3))))
    apply_style(fig, title=title, x_title="dataset", y_title="W1 (data units)")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.2))
    return fig


def render_transition_norms(profiles: Mapping[str, tuple[Tensor, Tensor]], dt: float) -> go.Figure:
    """Left: ||T||_2 of one Euler step (mean over particles) against t for each head. Right: the gain from the
    network's output to the next state, d x_{k+1} / d(output): dt for a field, dt / (1 - t) for an x1 head; every
    gradient that reaches the network through a state is multiplied by it."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("state Jacobian ||T|| of one step", "gain: output -> next state"))
    for i, (label, (ts, norms)) in enumerate(profiles.items()):
        fig.add_trace(go.Scatter(x=ts.tolist(), y=norms.tolist(), mode="lines+markers", name=label, legendgroup=label,
                                 line=dict(color=series_color(i, label), width=3)), row=1, col=1)
        gain = (dt / (1 - ts)) if "x1" in label else torch.full_like(ts, dt)
        fig.add_trace(go.Scatter(x=ts.tolist(), y=gain.tolist(), mode="lines+markers", name=label, legendgroup=label,
                                 showlegend=False, line=dict(color=series_color(i, label), width=3, dash="dot")),
                      row=1, col=2)
    fig.add_hline(y=1.0, line=dict(color=COLORS["path"], dash="dash"), row=1, col=1)
    apply_style(fig, title=f"One Euler step of each head (dt = {dt:.3g})")
    fig.update_xaxes(title_text="time t (1 = data)")
    fig.update_yaxes(title_text="spectral norm", row=1, col=1)
    fig.update_yaxes(title_text="d x_next / d output", type="log", tickformat=".3~g", dtick="D2", row=1, col=2)
    fig.update_layout(width=980, height=480, legend=dict(orientation="h", y=-0.22))
    return fig


# --- lab 06: parametrisation runs -------------------------------------------------------------------------------

PARAM_DATASETS = ("moons", "scurve", "swissroll")
EVAL_LOSS_N = 4096  # held-out (x0, x1, t) triples of the velocity-equivalent loss
MATCHED_BATCHES = 16  # minibatches averaged for a gradient norm at one checkpoint


def head_conversions(times: Sequence[float] = (0.02, 0.5, 0.98), delta: float = 0.01, mixture: str = "8modes",
                     n: int = 512, seed: int = 0) -> dict[float, dict[str, float]]:
    """The three heads of the exact flow of a closed-form 2D mixture (fmlab.data.gmm_2d(mixture), float64), at points
    x_t of its marginal at each time t, converted with fmlab.paths.convert_prediction:

    'x1 exact' / 'eps exact': the largest |v - v*| after converting the exact x1 head (the denoiser E[x1 | x_t]) and
    the exact eps head (E[x0 | x_t] = eps_from_x1 of it) to a velocity, v* the mixture's own velocity (about 1e-15);
    'x1 gain' / 'eps gain': |velocity error| / delta when each head is off by delta in every coordinate:
    1 / (1 - t) for x1 (ill-conditioned at the data end) and 1 / t for eps (at the noise end).
    """
    from ..data import gmm_2d
    from ..paths import convert_prediction, eps_from_x1

    gmm = gmm_2d(mixture)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t_value in times:
        t = torch.full((n,), float(t_value), dtype=torch.float64)
        x1 = gmm.sample(n, generator=g).double()
        x_t = (1 - t[:, None]) * torch.randn(n, 2, generator=g, dtype=torch.float64) + t[:, None] * x1
        v_star = gmm.velocity(x_t, t)
        heads = {"x1": gmm.denoiser(x_t, t)}
        heads["eps"] = eps_from_x1(heads["x1"], x_t, t)
        row = {}
        for name, head in heads.items():
            v = convert_prediction(head, x_t, t, name, "velocity")
            v_off = convert_prediction(head + delta, x_t, t, name, "velocity")
            row[f"{name} exact"] = float((v - v_star).abs().max())
            row[f"{name} gain"] = float((v_off - v).abs().mean() / delta)
        out[float(t_value)] = row
    return out


def x1_loss_identities(model: Any, batch: Any) -> dict[str, float]:
    """For an x1-head model on a batch (x0, x1, t), with the exact conversion v_hat = (x1_hat - x_t) / (1 - t):

    'weighted x1' = mean ||x1_hat - x1||^2 / (1 - t)^2 and 'velocity' = mean ||v_hat - (x1 - x0)||^2 (equal: the same
    function of the weights), 'gradient gap' = |grad weighted x1 - grad velocity| / |grad velocity| (0 up to
    rounding); 'plain x1' = mean ||x1_hat - x1||^2 and 'velocity x (1-t)^2' = mean (1 - t)^2 ||v_hat - u||^2
    (equal: plain x1 MSE is the velocity loss with weight (1 - t)^2, small near the data). Per-sample errors are
    means over coordinates, as in fmlab.losses."""
    from ..losses.flow_matching import per_sample_mse
    from ..paths import sample_path, velocity_from_x1

    path = sample_path(batch.x0, batch.x1, batch.t)
    x1_hat = model.predict(path.x_t, batch.t)
    v_hat = velocity_from_x1(x1_hat, path.x_t, batch.t)
    x1_err, v_err = per_sample_mse(x1_hat, batch.x1), per_sample_mse(v_hat, path.dx_t)
    w = (1 - batch.t).pow(2)
    values = {"weighted x1": (x1_err / w).mean(), "velocity": v_err.mean(), "plain x1": x1_err.mean(),
              "velocity x (1-t)^2": (w * v_err).mean()}
    params = [p for p in model.parameters() if p.requires_grad]
    g_x1 = torch.autograd.grad(values["weighted x1"], params, retain_graph=True)
    g_v = torch.autograd.grad(values["velocity"], params)
    gap = torch.sqrt(sum((a - b).pow(2).sum() for a, b in zip(g_x1, g_v, strict=True)))
    scale = torch.sqrt(sum(b.pow(2).sum() for b in g_v))
    return {**{k: float(v.detach()) for k, v in values.items()}, "gradient gap": float(gap / scale)}


def parametrisation_configs(data: str, steps: int, seed: int = 0, log_every: int = 50) -> list[Any]:
    """The two runs of lab 06 on one dataset: the field (`cfm`, velocity head) and x1 prediction (`x1_prediction`,
    x1 head, weight 1 / ((1 - t)^2 + 1e-3): the velocity loss seen through the x1 head)."""
    return [lab_config(data, "cfm", train_steps=steps, seed=seed, log_every=log_every),
            lab_config(data, "x1_prediction", prediction="x1", train_steps=steps, seed=seed, log_every=log_every)]


def head_label(result: Any) -> str:
    return "x1 prediction" if result.config.head == "x1" else "field"


def grad_norm_curves(results: Sequence[Any]) -> dict[str, tuple[list[int], Tensor]]:
    """{label: (steps, norms [n, levels])} of runs (RunResult or ParametrisationRun) that tracked gradient norms."""
    results = [getattr(r, "result", r) for r in results]
    return {head_label(r) if r.config.loss in ("cfm", "x1_prediction") else r.label: (r.grad_steps, r.norms())
            for r in results}


def velocity_equivalent_loss(model: Any, data: str, n: int = EVAL_LOSS_N, seed: int = 0) -> float:
    """E[w(t) ||x1_hat - x1||^2], w = 1 / ((1 - t)^2 + 1e-3), on a fixed held-out set of n triples (x0 ~ N(0, I),
    x1 ~ data, t ~ U[0, 1]): the `x1_prediction` loss, one yardstick for both heads. With x1_hat = x_t + (1 - t) v_hat
    the x1 error is (1 - t) times the velocity error, so for either head this is the flow-matching loss
    ||v_hat - (x1 - x0)||^2 with its weight capped at 1000 within about 0.03 of the data."""
    from ..losses import Batch

    g = torch.Generator().manual_seed(30_000 + seed)
    x1 = sample_toy(data, n, generator=g)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(n, generator=g)
    device = next(model.parameters()).device
    batch = Batch(x0=x0.to(device), x1=x1.to(device), t=t.to(device))
    with torch.no_grad():
        value, _ = get_loss("x1_prediction").fn(model, batch)
    return float(value)


@dataclass
class ParametrisationRun:
    """A lab-06 run (`result`) and, at each tracked step (result.grad_steps), the velocity-equivalent loss of the
    trained (not EMA) weights on a fixed held-out set and a copy of those weights: what comparing the heads at
    matched loss needs."""

    result: RunResult
    losses: list[float] = field(default_factory=list)
    states: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def config(self) -> Any:
        return self.result.config

    @property
    def label(self) -> str:
        return head_label(self.result)

    @property
    def model(self) -> Any:
        return self.result.model

    @property
    def w1(self) -> dict[int, float]:
        return self.result.w1

    @property
    def steps(self) -> list[int]:
        return self.result.grad_steps


def parametrisation_run(config: Any, track_every: int = 50, n_eval: int = 1000,
                        on_update: Callable[[RunResult], Any] | None = None, progress: bool = True
                        ) -> ParametrisationRun:
    """Train `config` with `run` (gradient norms at DEFAULT_LEVELS every `track_every` steps, W1 of the EMA model
    with 100 Euler steps) and record the velocity-equivalent loss and the weights at every tracked step. Cached in the
    kernel and on disk (fmlab.labkit.persisted) on the arguments."""
    kwargs = dict(levels=DEFAULT_LEVELS, track_every=track_every, eval_steps=(100,), n_eval=n_eval)

    def train() -> ParametrisationRun:
        losses: list[float] = []
        states: list[dict[str, Tensor]] = []

        def update(result: RunResult) -> None:
            if len(losses) < len(result.grad_steps):  # a new measurement: the live weights are at that step
                model = result.trainer.model
                losses.append(velocity_equivalent_loss(model, config.data, seed=config.seed))
                states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            if on_update is not None:
                on_update(result)

        result = run(config, on_update=update, progress=progress, **kwargs)
        if len(losses) != len(result.grad_steps):  # `run` had it cached (no callbacks): train again, recording
            losses.clear()
            states.clear()
            result = run(config, on_update=update, progress=progress, refresh=True, **kwargs)
        return ParametrisationRun(result, losses, states)

    def to_state(record: ParametrisationRun) -> dict[str, Any]:
        return {"run": run_state(record.result), "losses": list(record.losses), "states": list(record.states)}

    def from_state(state: dict[str, Any]) -> ParametrisationRun:
        return ParametrisationRun(run_from_state(state["run"], config), [float(v) for v in state["losses"]],
                                  [dict(weights) for weights in state["states"]])

    return persisted(cache_key("parametrisation_run", config, track_every, n_eval), train, to_state, from_state)


def gradients_at(run_: ParametrisationRun, index: int, n_batches: int = MATCHED_BATCHES, batch_size: int = 256,
                 seed: int = 0) -> Tensor:
    """Mean over n_batches fresh minibatches of the gradient norm of the run's own loss at each of DEFAULT_LEVELS,
    for the weights saved at tracked step run_.steps[index]: [len(DEFAULT_LEVELS)]."""
    model = copy.deepcopy(run_.result.trainer.model)
    model.load_state_dict(run_.states[index])
    g = torch.Generator().manual_seed(40_000 + seed)
    device = next(model.parameters()).device
    norms = []
    for _ in range(n_batches):
        x1 = sample_toy(run_.config.data, batch_size, generator=g)
        x0 = torch.randn(x1.shape, generator=g)
        norms.append(grad_norms_at_levels(model, run_.config.loss, x0.to(device), x1.to(device), DEFAULT_LEVELS,
                                          run_.config.loss_settings, g))
    return torch.stack(norms).mean(0)


@dataclass
class MatchedGradients:
    """The two heads' gradient norms (mean over MATCHED_BATCHES minibatches, at DEFAULT_LEVELS) compared two ways.

    Matched loss: `target` is the lowest velocity-equivalent loss both runs reach; each run is taken at the first
    tracked step where its loss is <= target (`steps`). Equal steps: both runs at their last step (`final_step`).
    """

    target: float
    steps: dict[str, int]
    matched: dict[str, Tensor]
    final_step: int
    final: dict[str, Tensor]

    @property
    def matched_ratio(self) -> Tensor:
        return self.matched["x1 prediction"] / self.matched["field"]

    @property
    def final_ratio(self) -> Tensor:
        return self.final["x1 prediction"] / self.final["field"]


def matched_gradients(runs: Sequence[ParametrisationRun], n_batches: int = MATCHED_BATCHES,
                      seed: int = 0) -> MatchedGradients:
    """Compare a field run and an x1 run (same data and budget) at matched velocity-equivalent loss and at equal
    steps (see MatchedGradients). The step-0 measurement (initialisation) is never a match."""
    by_label = {r.label: r for r in runs}
    if set(by_label) != {"field", "x1 prediction"}:
        raise ValueError(f"runs must be one field run and one x1 prediction run, got {[r.label for r in runs]}")
    if any(len(r.losses) < 2 for r in runs):
        raise ValueError("each run needs tracked losses after step 0 (train with track_every > 0)")
    target = max(min(r.losses[1:]) for r in runs)
    steps, matched, final = {}, {}, {}
    for label, r in by_label.items():
        index = next(i for i in range(1, len(r.losses)) if r.losses[i] <= target)
        steps[label] = r.steps[index]
        matched[label] = gradients_at(r, index, n_batches, seed=seed)
        final[label] = gradients_at(r, len(r.losses) - 1, n_batches, seed=seed)
    return MatchedGradients(target=target, steps=steps, matched=matched,
                            final_step=by_label["field"].steps[-1], final=final)


def parametrisation_live(data: str = "moons", steps: int = 3000, track_every: int = 50, n_eval: int = 1000,
                         show: bool = True, seed: int = 0) -> tuple[list[ParametrisationRun], ReplayView]:
    """Train the field and the x1 head on `data`, the gradient-norm figure redrawn live, then replayable."""

    done: list[ParametrisationRun] = []

    def render(results: Sequence[Any], upto: int | None) -> go.Figure:
        return render_grad_norms(grad_norm_curves(results), DEFAULT_LEVELS, upto=upto, total_steps=steps)

    view = ReplayView(lambda upto: render(done, upto))
    if show:
        show_live(view.box)
    for config in parametrisation_configs(data, steps, seed=seed, log_every=track_every):
        def update(result: RunResult) -> None:
            view.render = lambda upto, result=result: render([*done, result], upto)
            view.live(None)

        done.append(parametrisation_run(config, track_every, n_eval, on_update=update))
        view.render = lambda upto: render(done, upto)
    view.finish(done[0].steps)
    if show:
        show_final(view.figure, ["measurement"])
    return done, view


def parametrisation_table(steps: int, n_eval: int = 1000, track_every: int = 50, seed: int = 0,
                          datasets: Sequence[str] = PARAM_DATASETS) -> dict[str, dict[str, ParametrisationRun]]:
    """{dataset: {'field': run, 'x1 prediction': run}} (cached runs; moons reuses lab 06's live runs when the
    arguments match)."""
    table: dict[str, dict[str, ParametrisationRun]] = {}
    for data in datasets:
        for config in parametrisation_configs(data, steps, seed=seed, log_every=track_every):
            r = parametrisation_run(config, track_every, n_eval)
            table.setdefault(data, {})[r.label] = r
    return table


def summarise_gradients(results: Sequence[Any], skip_first: int = 1) -> dict[str, dict[str, Tensor]]:
    """{label: {'mean': [levels], 'max': [levels], 'cv': [levels]}} over the tracked measurements (the first
    `skip_first`, at initialisation, left out); cv = std / mean, how spiky the curve is."""
    out = {}
    for label, (_, norms) in grad_norm_curves(results).items():
        n = norms[skip_first:] if len(norms) > skip_first else norms
        out[label] = {"mean": n.mean(0), "max": n.max(0).values, "cv": n.std(0) / n.mean(0)}
    return out


__all__ += [  # lab 06
    "PARAM_DATASETS", "EVAL_LOSS_N", "MATCHED_BATCHES", "head_conversions", "x1_loss_identities",
    "parametrisation_configs", "head_label", "grad_norm_curves", "velocity_equivalent_loss", "ParametrisationRun",
    "parametrisation_run", "gradients_at", "MatchedGradients", "matched_gradients", "parametrisation_live",
    "parametrisation_table", "summarise_gradients",
]


def render_samples(samples: Mapping[str, Mapping[str, Tensor]], data: Mapping[str, Tensor],
                   w1: Mapping[str, Mapping[str, float]] | None = None, extent: float = 3.2) -> go.Figure:
    """A grid: one row per dataset, one column per head, model samples (green / vermillion) over the data."""
    rows, cols = list(samples), list(dict.fromkeys(c for row in samples.values() for c in row))
    titles = [f"{d}: {c}" + (f" (W1 {w1[d][c]:.3f})" if w1 and c in w1.get(d, {}) else "") for d in rows for c in cols]
    fig = make_subplots(rows=len(rows), cols=len(cols), subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.08)
    for i, d in enumerate(rows, start=1):
        for j, c in enumerate(cols, start=1):
            ref = data[d]
            fig.add_trace(go.Scatter(x=ref[:, 0].tolist(), y=ref[:, 1].tolist(), mode="markers", name="data x1",
                                     marker=dict(color=COLORS["data"], size=3, opacity=0.25), legendgroup="data",
                                     showlegend=i == 1 and j == 1), row=i, col=j)
            pts = samples[d].get(c)
            if pts is not None:
                color = _HEAD_COLORS["x1"] if "x1" in c else COLORS["model"]
                fig.add_trace(go.Scatter(x=pts[:, 0].tolist(), y=pts[:, 1].tolist(), mode="markers", name=c,
                                         marker=dict(color=color, size=4, opacity=0.8), legendgroup=c,
                                         showlegend=i == 1), row=i, col=j)
            fig.update_xaxes(range=[-extent, extent], row=i, col=j)
            fig.update_yaxes(range=[-extent, extent], scaleanchor=f"x{(i - 1) * len(cols) + j}", row=i, col=j)
    apply_style(fig, title="Samples (Euler, 100 steps) over the data")
    fig.update_layout(width=360 * len(cols) + 80, height=330 * len(rows) + 120, legend=dict(orientation="h", y=-0.05))
    fig.update_annotations(font_size=14)
    return fig


def transition_profiles(models: Mapping[str, Any], data: str = "moons", n: int = 256, n_times: int = 15,
                        euler_steps: int = 16, seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """{label: (t [n_times], mean ||T|| [n_times])}: one-step transition Jacobians along each model's own flow,
    at states generated by the model itself from seeded noise."""
    dt = 1.0 / euler_steps
    ts = torch.linspace(0.0, 1.0 - dt, n_times)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, generator=g)
    out = {}
    for label, model in models.items():
        with torch.no_grad():
            traj = solve(model, x0, steps=200, method="euler", return_trajectory=True)
        norms = []
        for t in ts.tolist():
            x = traj.xs[min(int(round(t * 200)), 200)]
            norms.append(transition_jacobians(model, x, t, dt, 1).spectral_norm[0].mean())
        out[label] = (ts, torch.stack(norms))
    return out


def transition_widget(models: Mapping[str, Any], euler_steps: int = 16) -> Any:
    """A slider for the Euler step count (dt = 1 / steps) over `render_transition_norms` (redraws on release; every
    figure kept, the neighbouring step counts drawn in the background)."""
    from .widgets import int_slider, interactive_view

    def render(euler_steps: int) -> go.Figure:
        return render_transition_norms(transition_profiles(models, euler_steps=euler_steps), 1.0 / euler_steps)

    return interactive_view(render, {"euler_steps": int_slider("Euler steps (dt = 1/steps)", 4, 64, euler_steps,
                                                                continuous_update=False)}, prefetch=True)


def prewarm_jobs(fast: bool) -> list:
    """Lab 06's runs (both heads on every PARAM_DATASETS set; its STEPS, TRACK, N_EVAL) for `python -m fmlab
    prewarm` (fmlab.prewarm)."""
    from ..prewarm import job

    steps, track, n_eval = (150, 25, 300) if fast else (3000, 50, 1000)
    return [job("06", "fmlab.viz.parametrisation:parametrisation_run", config, track, n_eval, progress=False,
                cost=2 * steps) for data in PARAM_DATASETS
            for config in parametrisation_configs(data, steps, seed=0, log_every=track)]
