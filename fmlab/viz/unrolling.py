"""Figures, runs and widgets for lab 10 (unrolled flow matching): the window, the k-step decomposition, the detach
switch and the cross-terms, the cross-term gradient variance, minibatch OT, equal-compute training comparisons.

Convention (ARCHITECTURE.md, "Time"): t = 0 is noise, t = 1 is data, x_t = (1 - t) x0 + t x1, u = x1 - x0. A window
of L Euler steps of size dt starts on the true path at x_{t0} and runs forward (toward the data); see
fmlab.losses.unrolled and fmlab.diagnostics for the equations. The manuscript ("When does unrolling help flow
matching?") puts data at t = 0: its "near the data, t -> 0" is our t -> 1, and its x0_hat head is our x1 head.

Runs come from fmlab.experiments (cached per kernel). Render functions are pure: they take numbers / run results and
return a plotly figure.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..data import sample_toy
from ..diagnostics import (
    CrossTermVariance,
    KStepDecomposition,
)
from ..losses.unrolled import unroll_window
from .style import COLORS, SEQUENCE, apply_style, to_numpy

__all__ = [
    "window_view_data", "render_window", "render_decomposition", "render_variance", "window_batch_at",
    "EULER_STEPS_SLIDER", "window_widget", "decomposition_widget", "variant_batch", "variant_rows",
    "variant_table", "GRADIENT_LOSSES", "call_gradients", "projections", "render_call_gradients",
    "gradient_view", "gradient_widget",
]


# --- figures: unrolling -------------------------------------------------------------------------------------------

def window_view_data(model: Any, x0: Tensor, x1: Tensor, t0: float, window: int, dt: float) -> dict[str, Tensor]:
    """Everything `render_window` draws: true path points x_{t0 + k dt} and the model's unrolled states."""
    t = torch.full((len(x0),), float(t0))
    start = (1 - t0) * x0 + t0 * x1
    with torch.no_grad():
        win = unroll_window(model, start, t, dt, window)
    ks = torch.arange(window + 1, dtype=x0.dtype)
    ts = (t0 + ks * dt)[:, None, None]
    true = (1 - ts) * x0 + ts * x1  # x_{t0 + k dt} on the straight path of each pair
    return {"true": true, "unrolled": win.xs.detach(), "x0": x0, "x1": x1}


def render_window(view: Mapping[str, Tensor], t0: float, window: int, dt: float, extent: float = 3.5,
                  k: int | None = None) -> go.Figure:
    """The unrolled window against the true path: grey segments x0 -> x1, the true points x_{t0 + j dt} (black)
    and the model's own states z_j (green) for j <= k (default: the whole window, k = L), and the error
    z_k - x_{t0 + k dt} in vermillion: at k = L the terminal error E_L that WT-FM penalises. Step k from 0 to L
    to watch the window unroll: each state is one Euler step of the model from the previous one."""
    true, unrolled, x0, x1 = view["true"], view["unrolled"], view["x0"], view["x1"]
    k = window if k is None else max(0, min(int(k), window))
    gap = torch.full((len(x0), 1), float("nan"), dtype=torch.float64)

    def polylines(a: Tensor, b: Tensor) -> tuple[Any, Any]:  # segments a_i -> b_i broken by NaN gaps
        pts = torch.stack([a.double(), b.double()], dim=1)  # [n, 2, 2]
        return (to_numpy(torch.cat([pts[..., 0], gap], 1).reshape(-1)),
                to_numpy(torch.cat([pts[..., 1], gap], 1).reshape(-1)))

    fig = go.Figure()
    px, py = polylines(x0, x1)
    fig.add_trace(go.Scatter(x=px, y=py, mode="lines", line=dict(color=COLORS["path"], width=1), name="path x0 -> x1"))
    fig.add_trace(go.Scatter(x=to_numpy(x1[:, 0]), y=to_numpy(x1[:, 1]), mode="markers", name="data x1",
                             marker=dict(color=COLORS["data"], size=6)))
    for name, pts, color, sym in (("true x_{t0 + j dt}", true, COLORS["reference"], "circle-open"),
                                  ("model's states z_j", unrolled, COLORS["model"], "circle")):
        seq = torch.cat([pts[: k + 1].double(), torch.full((1, len(x0), 2), float("nan"), dtype=torch.float64)])
        lines = seq.permute(1, 0, 2).reshape(-1, 2)  # each particle's states j = 0..k, then a gap
        fig.add_trace(go.Scatter(x=to_numpy(lines[:, 0]), y=to_numpy(lines[:, 1]), mode="lines+markers", name=name,
                                 line=dict(color=color, width=2), marker=dict(color=color, size=6, symbol=sym)))
    ex, ey = polylines(true[k], unrolled[k])
    label = "terminal error E_L" if k == window else f"error z_{k} − x_(t0 + {k} dt)"
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", name=label, line=dict(color=COLORS["highlight"], width=3)))
    err = (true[k] - unrolled[k]).pow(2).sum(1).mean()
    step = "" if k == window else f", step {k} of {window}"
    apply_style(fig, title=f"Window of L = {window} steps from t0 = {t0:.2f} (dt = {dt:.3g}{step}): "
                           f"mean ||z_{k} − x||^2 = {float(err):.4f}", x_title="coordinate 1", y_title="coordinate 2",
                square=True)
    fig.update_xaxes(range=[-extent, extent])
    fig.update_yaxes(range=[-extent, extent])
    fig.update_layout(legend=dict(orientation="h", y=-0.12), width=760, height=760, title_font_size=16)
    return fig


def render_decomposition(decomp: KStepDecomposition, title: str | None = None) -> go.Figure:
    """Left: the L x L matrix of terms dt^2 e_i . e_j (diagonal: single-step terms, off: cross-terms).
    Right: the totals, single + cross = the terminal loss ||E_L||^2."""
    L = decomp.window
    mat = (decomp.cross + torch.diag(decomp.single)).double()
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.22,
                        subplot_titles=("terms dt^2 e_i . e_j (per coordinate)", "sum of the terms"))
    scale = float(mat.abs().max()) or 1.0
    fig.add_trace(go.Heatmap(z=mat.tolist(), x=list(range(L)), y=list(range(L)), zmid=0.0,  # k = 0 .. L - 1
                             zmin=-scale, zmax=scale, colorscale="RdBu_r",
                             colorbar=dict(x=0.39, len=0.9, thickness=14, tickformat=".1e"),
                             hovertemplate="i=%{y}, j=%{x}: %{z:.3g}<extra></extra>"), row=1, col=1)
    names = ["single-step", "cross-terms", "terminal loss"]
    values = [float(decomp.single_total), float(decomp.cross_total), float(decomp.terminal)]
    colors = [COLORS["model"], COLORS["highlight"], COLORS["reference"]]
    fig.add_trace(go.Bar(x=names, y=values, marker_color=colors, text=[f"{v:.3g}" for v in values],
                         textposition="outside", showlegend=False), row=1, col=2)
    share = values[1] / values[2] if values[2] else 0.0
    apply_style(fig, title=title or f"terminal loss of a window of L = {L}: cross-terms are {100 * share:.0f}% of it")
    fig.update_xaxes(title_text="step j (error e_j)", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="step i (error e_i)", autorange="reversed", dtick=1, row=1, col=1)
    fig.update_yaxes(tickformat=".2~g", row=1, col=2)
    fig.update_layout(width=940, height=520)
    return fig


def render_variance(results: Mapping[str, CrossTermVariance], closed_form: tuple[Sequence[int], Tensor] | None = None,
                    step: int | None = None) -> go.Figure:
    """Cross-term gradient variance against the window length L (log-log). Left: as measured, one curve per run.
    Right: growth relative to L = 2, beside the closed form Var(x1 | x_t0)^L / Var(x1 | x_t0)^2."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("measured variance", "growth relative to L = 2"))
    for i, (label, r) in enumerate(results.items()):
        ws = [w for w in r.windows if w >= 2]
        var = torch.stack([r.variance[r.windows.index(w)] for w in ws]).double()
        color = COLORS["ot"] if "OT" in label else COLORS["independent"] if i == 0 else SEQUENCE[i % len(SEQUENCE)]
        for col, y in ((1, var), (2, var / var[0])):
            fig.add_trace(go.Scatter(x=ws, y=y.tolist(), mode="lines+markers", name=f"measured: {label}",
                                     legendgroup=label, showlegend=col == 1, line=dict(color=color, width=3),
                                     marker=dict(size=9)), row=1, col=col)
    if closed_form is not None:
        pairs = [(w, float(c)) for w, c in zip(closed_form[0], closed_form[1], strict=True) if w >= 2]
        fig.add_trace(go.Scatter(x=[w for w, _ in pairs], y=[c / pairs[0][1] for _, c in pairs], mode="lines+markers",
                                 name="closed form Var(x1|x_t0)^L", line=dict(color=COLORS["reference"], dash="dash"),
                                 marker=dict(symbol="diamond", size=9)), row=1, col=2)
    t0 = next(iter(results.values())).t0 if results else 0.0
    when = f", training step {step}" if step is not None else ""
    apply_style(fig, title=f"Cross-term gradient variance against the window length (t0 = {t0:g}{when})")
    fig.update_yaxes(type="log", dtick=1, tickformat=".0e")
    fig.update_yaxes(title_text="variance (trace)", row=1, col=1)
    fig.update_yaxes(title_text="variance(L) / variance(2)", row=1, col=2)
    fig.update_xaxes(type="log", tickvals=[2, 4, 8, 16], title_text="window length L")
    fig.update_layout(width=980, height=500, legend=dict(orientation="h", y=-0.22))
    return fig


def window_batch_at(data: str, n: int, t0: float, seed: int = 0) -> Any:
    """A batch of n independent pairs (x0 ~ N(0, I), x1 ~ data) whose windows all start at t0."""
    from ..losses import Batch

    g = torch.Generator().manual_seed(seed)
    x1 = sample_toy(data, n, generator=g)
    x0 = torch.randn(x1.shape, generator=g)
    return Batch(x0=x0, x1=x1, t=torch.full((n,), float(t0)))


def _fit_window(window: int, t0: float, euler_steps: int) -> tuple[int, float]:
    """Clamp the window to the step count (L <= 1 / dt) and its start so that it ends by t = 1."""
    window = min(window, euler_steps)
    return window, min(t0, 1.0 - window / euler_steps)


EULER_STEPS_SLIDER = ("Euler steps (dt = 1/steps)", 4, 64)  # the window's step size, as in lab 06


def window_widget(model: Any, data: str = "8gaussians", n: int = 12, euler_steps: int = 16, seed: int = 0) -> Any:
    """Sliders for the window length L, its start t0, the step count 1 / dt and the unrolled steps k (with a play
    button that unrolls the window step by step) over `render_window` (the model's own states z_k against the true
    path points of the same pairs)."""
    from .widgets import int_slider, interactive_view, slider, with_play

    batch = window_batch_at(data, n, 0.0, seed)

    def render(window: int, t0: float, euler_steps: int, k: int) -> go.Figure:
        window, t0 = _fit_window(window, t0, euler_steps)
        dt = 1.0 / euler_steps
        return render_window(window_view_data(model, batch.x0, batch.x1, t0, window, dt), t0, window, dt, k=k)

    view = interactive_view(render, {"window": int_slider("window length L", 1, 16, 4),
                                     "t0": slider("window start t0", 0.0, 1.0, 0.05, 0.3),
                                     "euler_steps": int_slider(*EULER_STEPS_SLIDER, euler_steps),
                                     "k": int_slider("unrolled steps k", 0, 4, 4)})
    window, k = view.controls["window"], view.controls["k"]

    def follow_window(change: dict) -> None:  # a new L shows its whole window; play then unrolls 0..L
        k.max = change["new"]
        k.value = change["new"]

    window.observe(follow_window, names="value")
    return with_play(view, "k", interval_ms=600)


def decomposition_widget(model: Any, data: str = "8gaussians", n: int = 512, euler_steps: int = 16,
                         seed: int = 0) -> Any:
    """Sliders for L, t0 and the step count 1 / dt over `render_decomposition` of the terminal loss on a fixed batch,
    for a snapshot of `model` taken now: every setting drawn is kept and those one move away are drawn in the
    background, on the snapshot, so nothing a later cell does to `model` can race with them or change a kept figure."""
    from ..diagnostics import kstep_decomposition
    from .widgets import int_slider, interactive_view, slider

    model = copy.deepcopy(model)

    def render(window: int, t0: float, euler_steps: int) -> go.Figure:
        window, t0 = _fit_window(window, t0, euler_steps)
        batch = window_batch_at(data, n, t0, seed)
        d = kstep_decomposition(model, batch, window, euler_steps)
        share = float(d.cross_total / d.terminal) if float(d.terminal) else 0.0
        return render_decomposition(d, f"terminal loss, L = {window}, t0 = {t0:.2f}, dt = 1/{euler_steps}: "
                                       f"cross-terms {100 * share:.0f}% of {float(d.terminal):.2e}")

    return interactive_view(render, {"window": int_slider("window length L", 1, 8, 4, continuous_update=False),
                                     "t0": slider("window start t0", 0.0, 0.5, 0.05, 0.2, continuous_update=False),
                                     "euler_steps": int_slider(*EULER_STEPS_SLIDER, euler_steps,
                                                               continuous_update=False)}, prefetch=True)


def variant_batch(data: str, n: int, window: int, euler_steps: int, seed: int = 0) -> Any:
    """n independent pairs with window starts t0 drawn as in training (`fmlab.losses.unrolled.window_batch`)."""
    from ..losses.unrolled import window_batch

    g = torch.Generator().manual_seed(seed)
    x1 = sample_toy(data, n, generator=g)
    x0 = torch.randn(x1.shape, generator=g)
    return window_batch(x0, x1, torch.Generator().manual_seed(seed), window=window, steps=euler_steps)


def variant_rows(model: Any, data: str = "8gaussians", windows: Sequence[int] = (1, 2, 4, 8), n: int = 512,
                 euler_steps: int = 16, seed: int = 0) -> list[dict[str, Any]]:
    """For each L and each WT-FM variant (full BPTT, states detached, cross-terms dropped): the loss, ||grad||, the
    cross-terms' share of the gradient and its cosine to the full-BPTT gradient (`fmlab.diagnostics.
    variant_gradients`), on one batch per L."""
    from ..diagnostics import variant_gradients

    rows = []
    for w in windows:
        batch = variant_batch(data, n, w, euler_steps, seed)
        for name, r in variant_gradients(model, batch, w, euler_steps).items():
            rows.append({"L": w, "variant": name, **r})
    return rows


def variant_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """`variant_rows` as a text table."""
    head = f"{'L':>2}  {'variant':<20}{'loss':>9}{'|grad|':>9}{'cross-term share':>18}{'cosine to BPTT':>16}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['L']:>2}  {r['variant']:<20}{r['loss']:>9.4f}{r['grad_norm']:>9.4f}"
                     f"{100 * r['cross_share']:>17.0f}%{r['cosine_to_bptt']:>16.4f}")
    return "\n".join(lines)


GRADIENT_LOSSES = {"WT-FM (terminal loss)": "wtfm", "anchored consistency": "anchored_consistency"}


def call_gradients(model: Any, batch: Any, loss: str, window: int, steps: int, detach: bool,
                   cross_terms: bool = True) -> dict[str, Tensor]:
    """{part: [L, P]}: the gradient of each part of the loss through each network call of the window
    (`fmlab.diagnostics.per_call_gradients`). WT-FM: single-step terms and cross-terms; anchored consistency
    (weights 0.8 / 0.2): anchor and consistency term."""
    from ..diagnostics import per_call_gradients, wtfm_gradient_split
    from ..losses.unrolled import anchored_consistency_loss

    if loss == "wtfm":
        split = wtfm_gradient_split(model, batch, window, steps, detach=detach, cross_terms=cross_terms)
        return {"single-step terms": split.single, "cross-terms": split.cross}
    if loss == "anchored_consistency":
        def part(w_a: float, w_c: float) -> Tensor:
            return per_call_gradients(model, lambda m: anchored_consistency_loss(
                m, batch, window=window, steps=steps, detach=detach, anchor_weight=w_a, consistency_weight=w_c)[0])

        return {"anchor": part(0.8, 0.0), "consistency": part(0.0, 0.2)}
    raise ValueError(f"loss must be one of {sorted(GRADIENT_LOSSES.values())}, got {loss!r}")


_PART_COLORS = {"single-step terms": COLORS["model"], "cross-terms": COLORS["highlight"], "anchor": COLORS["model"],
                "consistency": "#CC79A7"}


def projections(parts: Mapping[str, Tensor]) -> dict[str, float]:
    """{part: <g_part, g> / ||g||}: how much of ||g|| (g the whole gradient) each part supplies along g's direction.
    They sum to ||g||; divided by ||g|| they are the parts' shares (`WindowGradients.cross_share`)."""
    totals = {name: rows.sum(0) for name, rows in parts.items()}
    g = sum(totals.values())
    norm = float(g.norm())
    return {name: (float(v @ g) / norm if norm > 0 else 0.0) for name, v in totals.items()}


def render_call_gradients(variants: Mapping[str, Mapping[str, Tensor]], selected: str, title: str) -> go.Figure:
    """Left: for the selected variant, the norm of each part's gradient through each network call k (and of their
    sum, black). Right: every variant's ||grad|| as a bar split into the parts' projections onto its direction."""
    parts = variants[selected]
    calls = list(range(next(iter(parts.values())).shape[0]))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.16,
                        subplot_titles=(f"{selected}: gradient through each network call",
                                        "||grad||, split by part (projection onto grad)"))
    for name, rows in parts.items():
        fig.add_trace(go.Bar(x=calls, y=rows.norm(dim=1).tolist(), name=name, legendgroup=name, offsetgroup=name,
                             marker_color=_PART_COLORS.get(name, COLORS["path"])), row=1, col=1)
    total = sum(parts.values()).norm(dim=1)
    fig.add_trace(go.Scatter(x=calls, y=total.tolist(), mode="markers", name="both parts together",
                             marker=dict(color=COLORS["reference"], symbol="diamond", size=11)), row=1, col=1)
    names = list(variants)
    base = [0.0] * len(names)
    for part in parts:  # stacked: one offset group, each part starting where the previous ended
        values = [projections(variants[v]).get(part, 0.0) for v in names]
        fig.add_trace(go.Bar(x=names, y=values, base=list(base), name=part, legendgroup=part, showlegend=False,
                             offsetgroup="projection", marker_color=_PART_COLORS.get(part, COLORS["path"]),
                             marker_line=dict(color=[COLORS["reference"] if v == selected else "rgba(0,0,0,0)"
                                                     for v in names], width=3)), row=1, col=2)
        base = [b + v for b, v in zip(base, values, strict=True)]
    apply_style(fig, title=title)
    fig.update_layout(barmode="group", width=1060, height=540, legend=dict(orientation="h", y=-0.22),
                      title_font_size=15)
    fig.update_xaxes(title_text="network call k (prediction v\u0302_k)", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="gradient norm", row=1, col=1)
    fig.update_yaxes(title_text="projection onto grad", row=1, col=2)
    return fig


def gradient_view(model: Any, batch: Any, loss: str, window: int, steps: int, detach: bool,
                  cross_terms: bool = True) -> go.Figure:
    """The per-call gradient of the current model on `batch` for one setting, beside the other settings of the
    same loss (WT-FM: full BPTT, states detached, cross-terms dropped; anchored: teacher detached or not)."""
    from ..losses.unrolled import WTFM_VARIANTS

    if loss == "wtfm":
        settings = dict(WTFM_VARIANTS)
        chosen = next((name for name, s in settings.items() if s == {"detach": detach, "cross_terms": cross_terms}),
                      "BPTT, cross-terms dropped")
        settings.setdefault(chosen, {"detach": detach, "cross_terms": cross_terms})
    else:
        settings = {"teacher detached": {"detach": True}, "full BPTT": {"detach": False}}
        chosen = "teacher detached" if detach else "full BPTT"
    variants = {name: call_gradients(model, batch, loss, window, steps, **s) for name, s in settings.items()}
    g = {name: sum(parts.values()).sum(0) for name, parts in variants.items()}
    bptt = g["full BPTT"]
    cosine = float(torch.nn.functional.cosine_similarity(g[chosen], bptt, dim=0))
    second = list(variants[chosen])[1]  # the cross-terms (WT-FM) or the consistency term (anchored)
    norm = float(g[chosen].norm())
    share = projections(variants[chosen])[second] / norm if norm > 0 else 0.0
    name = "WT-FM" if loss == "wtfm" else "anchored consistency"
    title = (f"{name}, {chosen}, L = {window}, dt = 1/{steps}: ||grad|| = {norm:.3g}, {second} "
             f"{100 * share:.0f}% of it, cosine to full BPTT {cosine:.3f}")
    return render_call_gradients(variants, chosen, title)


def gradient_widget(model: Any, data: str = "8gaussians", n: int = 256, euler_steps: int = 16,
                    seed: int = 0) -> Any:
    """Loss, L, step count, detach and cross-terms controls over `gradient_view` for a snapshot of `model` taken now,
    on a fixed set of pairs: nothing trains; every setting drawn is kept and those one move away are drawn in the
    background, on the snapshot (per-call gradients run on private copies: `fmlab.diagnostics.per_call_gradients`),
    so nothing a later cell does to `model` can race with them or change a kept figure."""
    from .widgets import checkbox, dropdown, enable_when, int_slider, interactive_view

    model = copy.deepcopy(model)

    def render(loss: str, window: int, euler_steps: int, detach: bool, cross_terms: bool) -> go.Figure:
        window = min(window, euler_steps)
        if loss == "anchored_consistency":
            window = max(window, 2)  # the teacher is the mean of the predictions after the first
        batch = variant_batch(data, n, window, euler_steps, seed)
        return gradient_view(model, batch, loss, window, euler_steps, detach, cross_terms)

    view = interactive_view(render, {
        "loss": dropdown("loss", GRADIENT_LOSSES),
        "window": int_slider("window length L", 1, 8, 4, continuous_update=False),
        "euler_steps": int_slider(*EULER_STEPS_SLIDER, euler_steps, continuous_update=False),
        "detach": checkbox("detach (stop-gradient between steps)", False),
        "cross_terms": checkbox("keep the cross-terms (WT-FM)", True)}, prefetch=True)
    enable_when(view.controls["cross_terms"], view.controls["loss"], lambda loss: loss == "wtfm")
    return view


