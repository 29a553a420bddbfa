"""Lab 10's training runs: equal-compute comparisons of single-step FM, WT-FM (BPTT, states detached, cross-terms
dropped) and anchored consistency, independent or OT coupling; the live cross-term variance during training; the
training view that trains a setting on demand.

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise, t = 1 is data; a window of L Euler steps of size dt runs
toward the data (fmlab.losses.unrolled). Runs come from fmlab.experiments (cached per kernel; training time is
counted in single-step FM steps by `relative_cost`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..data import sample_toy
from ..experiments import GMM_FOR_DATA, RunResult, evaluate_w1, lab_config, run, samples_of
from ..losses import get_loss
from .parametrisation import series_color
from .style import COLORS, apply_style
from .unrolling import render_variance
from .widgets import ReplayView, live_run

__all__ = [
    "render_loss_curves", "METHOD_COLORS", "method_color", "render_comparison", "STEP_OVERHEAD",
    "relative_cost", "equal_time_config", "COMPARISON", "comparison_configs", "comparison_runs",
    "comparison_table", "conclusion", "variance_live", "FM_KEYS", "fm_curve", "render_unrolling_run",
    "TRAINING_STEP_COUNTS", "unrolling_widget", "WIDGET_LOSSES", "MAX_WINDOW", "widget_config", "prewarm_jobs"]


def render_loss_curves(results: Sequence[RunResult], key: str = "first_step_fm", x: str = "elapsed_s",
                       title: str = "Training curves") -> go.Figure:
    """A logged quantity against wall time (x='elapsed_s') or step (x='step') for several runs."""
    fig = go.Figure()
    for i, r in enumerate(results):
        pts = [(rec[x], rec.get(key, rec["loss"])) for rec in r.log]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=r.label,
                                 line=dict(color=series_color(i, r.label), width=2)))
    apply_style(fig, title=title, x_title="training time (s)" if x == "elapsed_s" else "training step", y_title=key)
    fig.update_yaxes(type="log")
    return fig


METHOD_COLORS = {"single-step FM": COLORS["model"], "WT-FM": COLORS["highlight"], "WT-FM detached": "#0072B2",
                 "anchored": "#CC79A7", "WT-FM cross-terms dropped": "#E69F00"}


def method_color(label: str) -> str:
    """One colour per method family (OT variants share it and get a hatch pattern)."""
    if label.startswith("single-step"):
        return METHOD_COLORS["single-step FM"]
    if label.startswith("anchored"):
        return METHOD_COLORS["anchored"]
    if label.startswith("WT-FM") and "cross-terms dropped" in label:
        return METHOD_COLORS["WT-FM cross-terms dropped"]
    if label.startswith("WT-FM") and "detached" in label:
        return METHOD_COLORS["WT-FM detached"]
    return METHOD_COLORS["WT-FM"] if label.startswith("WT-FM") else COLORS["path"]


def render_comparison(results: Sequence[RunResult], steps: int, floor: float | None = None,
                      title: str | None = None) -> go.Figure:
    """Horizontal bars of W1 at `steps` Euler steps for several runs (colour: method; hatched: minibatch OT),
    annotated with their step count and measured training time."""
    labels = [r.label for r in results]
    values = [r.w1[steps] for r in results]
    text = [f"{v:.3f}  ({r.config.steps} steps, {r.elapsed:.0f} s)" for v, r in zip(values, results, strict=True)]
    fig = go.Figure(go.Bar(y=labels, x=values, orientation="h", text=text, textposition="outside",
                           marker=dict(color=[method_color(lbl) for lbl in labels],
                                       pattern=dict(shape=["/" if lbl.endswith("+ OT") else "" for lbl in labels]))))
    if floor is not None:
        fig.add_vline(x=floor, line=dict(color=COLORS["reference"], dash="dash"),
                      annotation_text="noise floor", annotation_position="top")
    apply_style(fig, title=title or f"W1 to the data, Euler with {steps} steps (lower is better; hatched: OT)",
                x_title="W1 (data units)")
    fig.update_xaxes(range=[0, 1.6 * max(values + [floor or 0.0])])
    fig.update_layout(width=920, height=max(320, 56 * len(labels) + 150), margin=dict(l=230))
    return fig


# --- lab 10: unrolling runs -----------------------------------------------------------------------------------

STEP_OVERHEAD = 3.0  # per-step cost outside the network passes (data, batch, optimiser, EMA), in forward passes


def relative_cost(loss: str, settings: Mapping[str, Any]) -> float:
    """Wall time of one training step relative to single-step FM, from a cost model: a forward pass costs 1, a
    backward 2, plus a fixed per-step overhead of about one forward + backward (STEP_OVERHEAD = 3). FM: 3 + 3;
    WT-FM (BPTT, detached, with or without cross-terms): 3 + 3 L; anchored BPTT: 3 + 3 L; anchored detached:
    3 + 3 + (L - 1) (no-graph calls). It underestimates the WT-FM / FM ratios `python benchmarks/unrolling.py cost`
    measures by 7% to 18% (benchmarks/README.md), so at "equal time" unrolled losses get slightly more, never less."""
    if loss in ("cfm", "x1_prediction"):
        return 1.0
    spec = get_loss(loss)
    window = int(settings.get("window", spec.defaults.get("window", 1)))
    detach = bool(settings.get("detach", spec.defaults.get("detach", False)))
    passes = 3 + (window - 1) if loss == "anchored_consistency" and detach else 3 * window
    return (STEP_OVERHEAD + passes) / (STEP_OVERHEAD + 3)


def equal_time_config(data: str, loss: str, base_steps: int, coupling: str = "independent", seed: int = 0,
                      **settings: Any) -> Any:
    """A config whose step count gives it the training time of `base_steps` single-step FM steps (relative_cost)."""
    n = max(20, int(round(base_steps / relative_cost(loss, settings))))
    return lab_config(data, loss, coupling=coupling, train_steps=n, seed=seed, log_every=_log_every(n), **settings)


def _log_every(steps: int) -> int:
    return max(1, steps // 40)


COMPARISON = (
    ("cfm", {}),
    ("wtfm", {"window": 4, "steps": 16, "detach": False}),
    ("wtfm", {"window": 4, "steps": 16, "detach": True}),
    ("wtfm", {"window": 4, "steps": 16, "detach": True, "cross_terms": False}),
    ("anchored_consistency", {"window": 2, "steps": 16, "detach": True}),
)


def comparison_configs(data: str, base_steps: int, couplings: Sequence[str] = ("independent", "ot"),
                       methods: Sequence[tuple[str, dict]] = COMPARISON, seed: int = 0) -> list[Any]:
    """The lab's equal-compute comparison: every method x coupling."""
    return [equal_time_config(data, loss, base_steps, coupling=c, seed=seed, **settings)
            for c in couplings for loss, settings in methods]


def comparison_runs(configs: Sequence[Any], eval_steps: Sequence[int] = (16, 100), n_eval: int = 1000
                    ) -> list[RunResult]:
    return [run(c, eval_steps=eval_steps, n_eval=n_eval) for c in configs]


def comparison_table(results: Sequence[RunResult], eval_steps: Sequence[int] = (16, 100)) -> str:
    """A text table of the comparison (method, coupling, steps, W1 at each Euler step count, training time)."""
    head = f"{'method':<31}{'coupling':<13}{'steps':>6}" + "".join(f"{'W1@' + str(k):>9}" for k in eval_steps)
    lines = [head + f"{'time s':>8}", "-" * (len(head) + 8)]
    for r in results:
        lines.append(f"{r.label.replace(' + OT', ''):<31}{r.config.coupling:<13}{r.config.steps:>6}"
                     + "".join(f"{r.w1[k]:>9.3f}" for k in eval_steps) + f"{r.elapsed:>8.1f}")
    return "\n".join(lines)


def conclusion(results: Sequence[RunResult], euler_steps: int = 16, noise: float = 0.0) -> str:
    """The lab's verdict, in sentences that quote this run's numbers (W1 at `euler_steps` Euler steps).

    noise: a relative W1 difference below it is reported as "within noise" (e.g. the spread between seeds that
    benchmarks/unrolling.py measured), not as a win or a loss."""
    w1 = {r.label: r.w1[euler_steps] for r in results}

    def rel(a: str, b: str) -> str:
        change = 100 * (w1[a] / w1[b] - 1)
        within = " within noise" if abs(change) < 100 * noise else ""
        return f"{w1[a]:.3f} vs {w1[b]:.3f} ({change:+.0f}%{within})"

    lines = []
    for suffix, name in (("", "independent coupling"), (" + OT", "minibatch OT")):
        fm, bptt = "single-step FM" + suffix, "WT-FM L=4 BPTT" + suffix
        det, anc = "WT-FM L=4 detached" + suffix, "anchored L=2 (detached)" + suffix
        drop = "WT-FM L=4 cross-terms dropped" + suffix
        if not all(k in w1 for k in (fm, bptt, det, anc)):
            continue
        if abs(w1[bptt] / w1[fm] - 1) < noise:
            verdict = "is within noise of"
        else:
            verdict = "is not better than" if w1[bptt] >= w1[fm] else "beats"
        dropped = f"; WT-FM with the cross-terms dropped {rel(drop, fm)}" if drop in w1 else ""
        lines.append(f"With {name}: full BPTT (L = 4) {verdict} single-step FM at equal compute, W1 {rel(bptt, fm)}; "
                     f"detached WT-FM {rel(det, fm)}{dropped}; anchored consistency {rel(anc, fm)}.")
    pairs = [(k, k + " + OT") for k in w1 if not k.endswith(" + OT") and k + " + OT" in w1]
    if pairs:
        better = [k for k, o in pairs if w1[o] < w1[k]]
        clear = [k for k, o in pairs if w1[o] < (1 - noise) * w1[k]]
        mean_gain = 100 * sum(1 - w1[o] / w1[k] for k, o in pairs) / len(pairs)
        beyond = f", by more than the noise ({100 * noise:.0f}%) for {len(clear)}" if noise > 0 else ""
        lines.append(f"Minibatch OT lowers W1 for {len(better)} of {len(pairs)} methods{beyond} (mean change "
                     f"{-mean_gain:+.0f}%).")
    return "\n".join(lines)


def variance_live(data: str = "8gaussians", steps: int = 2000, every: int = 250, windows: Sequence[int] = (1, 2, 4, 8),
                  t0: float = 0.25, batches: int = 16, n_eval: int = 1000, show: bool = True
                  ) -> tuple[list[RunResult], ReplayView]:
    """Train single-step FM with independent and with OT coupling; the cross-term gradient variance against L is
    measured every `every` steps on the model being trained and drawn live, with Var(x1 | x_t0)^L beside it
    (closed form for mixtures fmlab.data ships, e.g. 8gaussians)."""
    from ..data import gmm_2d
    from ..diagnostics import posterior_variance_power

    closed = None
    if data in GMM_FOR_DATA:
        closed = (list(windows), posterior_variance_power(gmm_2d(GMM_FOR_DATA[data]), t0, windows)[1])
    configs = [lab_config(data, "cfm", coupling=c, train_steps=steps, log_every=every) for c in ("independent", "ot")]

    def render(results: Sequence[RunResult], upto: int | None) -> go.Figure:
        latest = {}
        for r in results:
            pick = [i for i, s in enumerate(r.var_steps) if upto is None or s <= upto]
            if pick:
                latest["independent" if r.config.coupling == "independent" else "OT"] = r.variances[pick[-1]]
        step = upto if upto is not None else (results[-1].var_steps[-1] if results and results[-1].var_steps else 0)
        return render_variance(latest, closed, step=step)

    return live_run(configs, render, lambda r: r.var_steps, show=show, variance_every=every,
                    variance_windows=windows, variance_t0=t0, variance_batches=batches, eval_steps=(100,),
                    n_eval=n_eval)


FM_KEYS = ("mse", "first_step_fm", "anchor")  # the single-step FM error each loss logs for its first prediction


def fm_curve(result: RunResult) -> tuple[list[float], list[float]]:
    """(training time in single-step FM steps, by relative_cost; single-step FM error of the first prediction)."""
    cost = relative_cost(result.config.loss, result.config.loss_settings)
    xs, ys = [], []
    for rec in result.log:
        key = next((k for k in FM_KEYS if k in rec), "loss")
        xs.append(rec["step"] * cost)
        ys.append(rec[key])
    return xs, ys


def render_unrolling_run(result: RunResult, baseline: RunResult, euler_steps: int = 16, n: int = 600,
                         note: str = "") -> go.Figure:
    """Left: samples of the run (Euler, `euler_steps` steps) over the data. Right: single-step FM error of the
    first prediction against training time, for the run and for single-step FM (same coupling, same compute)."""
    data = sample_toy(result.config.data, n, generator=torch.Generator().manual_seed(7))
    pts = samples_of(result.model, n, euler_steps)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12,
                        subplot_titles=(f"samples, {euler_steps} Euler steps", "FM error of the first prediction"))
    fig.add_trace(go.Scatter(x=data[:, 0].tolist(), y=data[:, 1].tolist(), mode="markers", name="data x1",
                             marker=dict(color=COLORS["data"], size=3, opacity=0.35)), row=1, col=1)
    fig.add_trace(go.Scatter(x=pts[:, 0].tolist(), y=pts[:, 1].tolist(), mode="markers", name=result.label,
                             marker=dict(color=COLORS["model"], size=3, opacity=0.7)), row=1, col=1)
    for r, color, dash in ((baseline, COLORS["reference"], "dash"), (result, COLORS["model"], "solid")):
        xs, ys = fm_curve(r)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=r.label + (" (baseline)" if r is baseline else ""),
                                 line=dict(color=color, dash=dash, width=2), showlegend=r is baseline), row=1, col=2)
    fig.update_xaxes(range=[-3.2, 3.2], row=1, col=1)
    fig.update_yaxes(range=[-3.2, 3.2], scaleanchor="x", row=1, col=1)
    fig.update_xaxes(title_text="training time (in single-step FM steps)", row=1, col=2)
    fig.update_yaxes(title_text="MSE / coordinate", row=1, col=2)
    w1, w1b = result.w1[euler_steps], baseline.w1[euler_steps]
    apply_style(fig, title=f"{result.label}: W1 = {w1:.3f} vs single-step FM {w1b:.3f} "
                           f"({euler_steps} steps){note}")
    fig.update_layout(width=1000, height=500, legend=dict(orientation="h", y=-0.15), title_font_size=17)
    return fig


def _w1_at(result: RunResult, steps: int, n_eval: int) -> float:
    """W1 of a finished run at `steps` Euler steps, evaluated once and kept in result.w1 (no retraining)."""
    if steps not in result.w1:
        result.w1[steps] = evaluate_w1(result.model, result.config.data, steps=steps, n=n_eval, seed=result.config.seed)
    return result.w1[steps]


TRAINING_STEP_COUNTS = (8, 16, 32)  # the window's dt = 1 / steps offered by the training view
WIDGET_LOSSES = {"WT-FM (terminal loss)": "wtfm", "anchored consistency": "anchored_consistency"}
MAX_WINDOW = 8


def widget_config(data: str, base_steps: int, loss: str, window: int, euler_steps: int, detach: bool,
                  cross_terms: bool, ot: bool) -> tuple[Any, str]:
    """(the equal-compute config that `unrolling_widget`'s controls select, a note on a window it had to change)."""
    note = ""
    window = min(window, euler_steps)
    if loss == "anchored_consistency" and window < 2:
        window, note = 2, " (anchored needs L >= 2)"
    settings = {"window": window, "steps": euler_steps, "detach": detach}
    if loss == "wtfm" and not cross_terms:  # only when off: the default run is the comparison's (cached)
        settings["cross_terms"] = False
    return equal_time_config(data, loss, base_steps, coupling="ot" if ot else "independent", **settings), note


def unrolling_widget(data: str = "8gaussians", base_steps: int = 2000, n_eval: int = 1000,
                     euler_steps: int = 16) -> Any:
    """Loss, window length L, step count (dt), detach, cross-terms and OT controls driving equal-compute training
    runs (cached: flipping a control back to a trained configuration is instant). Each run is sampled with the
    Euler step of its window; the single-step FM baseline (same coupling) is trained once and sampled the same way."""
    import ipywidgets as W

    from .widgets import View, checkbox, dropdown, enable_when, int_slider

    def render(loss: str, window: int, euler_steps: int, detach: bool, cross_terms: bool, ot: bool) -> go.Figure:
        config, note = widget_config(data, base_steps, loss, window, euler_steps, detach, cross_terms, ot)
        base = run(equal_time_config(data, "cfm", base_steps, coupling=config.coupling), eval_steps=(16, 100),
                   n_eval=n_eval, progress=False)
        result = run(config, eval_steps=(16, 100), n_eval=n_eval, progress=False)
        _w1_at(base, euler_steps, n_eval)
        _w1_at(result, euler_steps, n_eval)
        return render_unrolling_run(result, base, euler_steps, note=note)

    controls = {"loss": dropdown("loss", WIDGET_LOSSES),
                "window": int_slider("window length L", 1, MAX_WINDOW, 4, continuous_update=False),
                "euler_steps": dropdown("Euler steps (dt = 1/steps)", list(TRAINING_STEP_COUNTS), euler_steps),
                "detach": checkbox("detach (stop-gradient between steps)", False),
                "cross_terms": checkbox("keep the cross-terms (WT-FM)", True),
                "ot": checkbox("minibatch OT coupling", False)}
    view = View(render, controls, per_row=3)
    enable_when(controls["cross_terms"], controls["loss"], lambda loss: loss == "wtfm")
    view.children = (W.HTML("<i>Each new setting trains once (a few seconds to a minute); settings seen "
                            "before redraw at once.</i>"),) + tuple(view.children)
    return view


# --- pre-warming ----------------------------------------------------------------------------------------------

def prewarm_jobs(fast: bool) -> list:
    """Every run lab 10 trains (its BASE, EVERY, N_EVAL; DATA = 8gaussians, dt = 1/16): the single-step FM run, the
    variance runs, the comparison and every setting of the unrolling widget's controls; for `python -m fmlab
    prewarm` (fmlab.prewarm)."""
    from ..prewarm import job

    data, base, every, n_eval, batches = ("8gaussians", 100, 100, 300, 6) if fast else ("8gaussians", 2000, 250, 1000,
                                                                                        16)
    configs = [equal_time_config(data, "cfm", base), *comparison_configs(data, base),
               *(equal_time_config(data, "cfm", base, coupling=c) for c in ("independent", "ot"))]
    for loss in WIDGET_LOSSES.values():
        for window, steps, detach, cross, ot in itertools.product(range(1, MAX_WINDOW + 1), TRAINING_STEP_COUNTS,
                                                                  (False, True), (True, False), (False, True)):
            if cross or loss == "wtfm":
                configs.append(widget_config(data, base, loss, window, steps, detach, cross, ot)[0])
    # the FM run, the comparison and the widget all evaluate at dt = 1/16 and with 100 steps (prewarm drops repeats)
    jobs = [job("10", "fmlab.experiments:run", c, progress=False, cost=base, eval_steps=(16, 100), n_eval=n_eval)
            for c in configs]
    for coupling in ("independent", "ot"):  # variance_live
        config = lab_config(data, "cfm", coupling=coupling, train_steps=base, log_every=every)
        jobs.append(job("10", "fmlab.experiments:run", config, progress=False, cost=2 * base, variance_every=every,
                        variance_windows=(1, 2, 4, 8), variance_t0=0.25, variance_batches=batches, eval_steps=(100,),
                        n_eval=n_eval))
    return jobs
