"""Figures and widgets for lab 13 (CelebA-64): image grids, the CelebA crops, live training (sample grid + loss),
samples at 1, 2, 4 and 50 steps, loss curves and the score table.

Images are uint8 [n, H, W, 3] arrays (fmlab.train_images.to_uint8). Plotly draws them as `go.Image` traces whose
`source` is a PNG data URI: a 64-image grid costs ~50 kB to send to the browser instead of ~3 MB of numbers, so
sliders stay instant. Time runs from noise at t = 0 to data at t = 1; "steps" counts sampler steps from noise.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..checks import check_int
from .style import COLORS, FONT_SIZE, SEQUENCE, apply_style, log_ticks

__all__ = ["png_source", "grid_image", "render_image_grid", "aligned_face", "render_crops", "crop_widget",
           "render_training", "LiveTraining", "render_samples", "samples_widget", "render_sample_overview",
           "render_loss_curves", "render_scores", "scores_table", "format_scores", "render_guided_grid",
           "guided_grid_widget", "STRIP_TIMES", "path_frames", "render_path_strip", "path_strip_widget",
           "load_long_run", "render_long_run", "prewarm_jobs"]


def png_source(image: np.ndarray) -> str:
    """A uint8 [H, W, 3] image as a 'data:image/png;base64,...' URI (what go.Image(source=...) takes)."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def grid_image(images: np.ndarray, nrow: int | None = None, scale: int = 1) -> np.ndarray:
    """uint8 [n, H, W, 3] -> one uint8 grid image (white 1-px gaps), each pixel repeated `scale` x `scale`."""
    from ..image_grid import make_grid

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty uint8 array [n, H, W, 3], got {images.dtype} {images.shape}")
    grid = make_grid(images, nrow)
    return grid.repeat(scale, 0).repeat(scale, 1) if scale > 1 else grid


def _image_axes(fig: go.Figure, row: int | None = None, col: int | None = None) -> None:
    kw = {} if row is None else {"row": row, "col": col}
    fig.update_xaxes(visible=False, **kw)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor=None, **kw)


def render_image_grid(images: np.ndarray, title: str = "", nrow: int | None = None,
                      scale: int | None = None) -> go.Figure:
    """A grid of images as one figure; `scale` repeats pixels (default: the grid fills ~600 px, so 16-px and 64-px
    faces both read on a projector)."""
    grid = grid_image(images, nrow, 1)
    scale = scale or max(1, min(8, 600 // grid.shape[1]))
    grid = grid_image(images, nrow, scale)
    fig = go.Figure(go.Image(source=png_source(grid), hoverinfo="skip"))
    apply_style(fig, title=title)
    h, w = grid.shape[:2]
    fig.update_layout(width=max(560, min(900, w + 80)), height=min(900, h + 110), margin=dict(l=10, r=10, t=70, b=10))
    _image_axes(fig)
    return fig


# --- the CelebA crops --------------------------------------------------------------------------------------------

def aligned_face(seed: int = 0) -> np.ndarray:
    """A procedural face laid out like an aligned CelebA image: uint8 [218, 178, 3] (a 218-px face, centre 178 cols)."""
    from ..data.faces import make_faces

    face = make_faces(1, 218, seed=seed)[0]
    return np.ascontiguousarray(face[:, 20:198])


def render_crops(image: np.ndarray, crop: str = "ddim", size: int = 64) -> go.Figure:
    """Left: the 178 x 218 aligned image with the three standard crop boxes (the chosen one in vermillion). Right:
    what the model sees, the crop resized to size x size."""
    from PIL import Image

    from ..data.celeba import CROPS, preprocess

    if crop not in CROPS:
        raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
    small = preprocess(Image.fromarray(image), crop, size)
    fig = make_subplots(1, 2, column_widths=[0.55, 0.45], horizontal_spacing=0.06,
                        subplot_titles=("aligned image, 178 x 218 px", f"{crop} crop resized to {size} x {size}"))
    fig.add_trace(go.Image(source=png_source(image), hoverinfo="skip"), 1, 1)
    big = small.repeat(218 // size, 0).repeat(218 // size, 1)
    fig.add_trace(go.Image(source=png_source(big), hoverinfo="skip"), 1, 2)
    for name, (left, upper, right, lower) in CROPS.items():
        chosen = name == crop
        fig.add_shape(type="rect", x0=left - 0.5, y0=upper - 0.5, x1=right - 0.5, y1=lower - 0.5, row=1, col=1,
                      line=dict(color=COLORS["highlight"] if chosen else COLORS["path"], width=3 if chosen else 1.5,
                                dash="solid" if chosen else "dot"))
        fig.add_annotation(x=left + 2, y=upper + 2, text=name, showarrow=False, xanchor="left", yanchor="top",
                           font=dict(size=FONT_SIZE - 4, color=COLORS["highlight"] if chosen else COLORS["path"]),
                           row=1, col=1)
    left, upper, right, lower = CROPS[crop]
    apply_style(fig, title=f"Preprocessing: crop '{crop}' = columns {left}..{right - 1}, rows {upper}..{lower - 1}, "
                           f"then resize to {size} px")
    fig.update_layout(width=820, height=430, showlegend=False, title_font_size=FONT_SIZE)
    for c in (1, 2):
        _image_axes(fig, 1, c)
    return fig


def crop_widget(image: np.ndarray | None = None, size: int = 64) -> Any:
    """A dropdown over the three crops redrawing `render_crops` (default image: a procedural aligned face)."""
    from ..data.celeba import CROPS
    from .widgets import dropdown, interactive_view

    img = aligned_face() if image is None else image
    return interactive_view(render_crops, {"crop": dropdown("crop", list(CROPS), "ddim")}, image=img, size=size)


# --- live training -------------------------------------------------------------------------------------------

def render_training(grid: np.ndarray | None, log: Sequence[Mapping[str, Any]], title: str,
                    total_steps: int | None = None) -> go.Figure:
    """Left: the latest sample grid (fixed noise). Right: the training loss (log y) against the step."""
    fig = make_subplots(1, 2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=("EMA samples (same noise each time)", "training loss"))
    blank = np.full((8, 8, 3), 255, np.uint8)
    fig.add_trace(go.Image(source=png_source(blank if grid is None else grid), hoverinfo="skip"), 1, 1)
    fig.add_trace(go.Scatter(x=[r["step"] for r in log], y=[r["loss"] for r in log], mode="lines",
                             line=dict(color=COLORS["model"], width=2), name="loss"), 1, 2)
    apply_style(fig, title=title)
    fig.update_layout(width=900, height=430, showlegend=False, title_font_size=FONT_SIZE)
    _image_axes(fig, 1, 1)
    fig.update_xaxes(title_text="training step", row=1, col=2, range=[0, total_steps] if total_steps else None)
    fig.update_yaxes(title_text="loss (per pixel)", type="log", row=1, col=2, **log_ticks([r["loss"] for r in log]))
    return fig


class LiveTraining:
    """A FigureWidget that follows an ImageTrainer: pass `on_grid` to the trainer and `on_record` as fit's callback.

    Updates touch only the image source, the curve and the title (cheap), at most once per log record / grid.
    """

    def __init__(self, title: str, total_steps: int, show: bool = True):
        from .widgets import figure_widget

        self.title, self.total, self.log, self.grid = title, total_steps, [], None
        self.widget = figure_widget(render_training(None, [], f"{title}: starting", total_steps))
        if show:
            from .widgets import show_live

            show_live(self.widget)

    def _refresh(self, step: int) -> None:
        with self.widget.batch_update():
            if self.grid is not None:
                self.widget.data[0].source = png_source(self.grid)
            self.widget.data[1].x = [r["step"] for r in self.log]
            self.widget.data[1].y = [r["loss"] for r in self.log]
            ticks = log_ticks([r["loss"] for r in self.log])
            self.widget.layout.yaxis2.update(tickvals=ticks.get("tickvals"), ticktext=ticks.get("ticktext"))
            last = f", loss {self.log[-1]['loss']:.3f}" if self.log else ""
            self.widget.layout.title.text = f"{self.title}: step {step} of {self.total}{last}"

    def on_grid(self, step: int, grid: np.ndarray) -> None:
        self.grid = grid
        self._refresh(step)

    def on_record(self, step: int, record: dict[str, Any]) -> None:
        self.log.append(dict(record))
        self._refresh(step)

    def show_final(self, trainer: Any) -> None:
        """Draw a finished (possibly cached) run: its last grid and full log."""
        self.log = [dict(r) for r in trainer.log]
        if trainer.grids:
            self.grid = trainer.grids[max(trainer.grids)]
        self._refresh(trainer.step)
        from .widgets import show_final

        show_final(self.widget)


# --- samples at several step counts ----------------------------------------------------------------------------

def _check_samples(samples: Mapping[str, Mapping[int, np.ndarray]], model: str, steps: int) -> np.ndarray:
    if model not in samples:
        raise ValueError(f"model must be one of {list(samples)}, got {model!r}")
    if steps not in samples[model]:
        raise ValueError(f"steps must be one of {sorted(samples[model])}, got {steps!r}")
    return samples[model][steps]


def render_samples(samples: Mapping[str, Mapping[int, np.ndarray]], model: str, steps: int, n_show: int = 36,
                   nfe: Mapping[str, int] | None = None,
                   sample: Callable[[str, int], np.ndarray] | None = None) -> go.Figure:
    """One model's samples at one step count (the same noise for every model and step count). A step count that
    `samples` lacks is drawn by `sample(model, steps)` when given (fmlab.images.lab_sampler)."""
    if sample is not None and model in samples and steps not in samples[model]:
        check_int(steps, "steps", 1)
        images = sample(model, steps)[:n_show]
    else:
        images = _check_samples(samples, model, steps)[:n_show]
    evals = f", {nfe[model] * steps} network evaluations" if nfe and model in nfe else ""
    return render_image_grid(images, title=f"{model}: {steps} step{'s' if steps > 1 else ''}{evals}")


def samples_widget(samples: Mapping[str, Mapping[int, np.ndarray]], n_show: int = 36,
                   nfe: Mapping[str, int] | None = None, sample: Callable[[str, int], np.ndarray] | None = None,
                   max_steps: int = 50) -> Any:
    """A model menu and a step control over `render_samples`: a menu of the precomputed step counts, or, with
    `sample`, a slider over every step count from 1 to max_steps (drawn on release, once each)."""
    from .widgets import dropdown, int_slider, interactive_view

    models = list(samples)
    step_counts = sorted(samples[models[0]])
    steps = (dropdown("steps", step_counts, step_counts[0]) if sample is None else
             int_slider("sampling steps", 1, max_steps, min(step_counts[0], max_steps), continuous_update=False))
    controls = {"model": dropdown("model", models, models[0]), "steps": steps}
    return interactive_view(render_samples, controls, samples=samples, n_show=n_show, nfe=nfe, sample=sample)


# --- the path x_t of one image ------------------------------------------------------------------------------------

STRIP_TIMES = tuple(k / 8 for k in range(9))  # the frames of the strip: t = 0, 1/8, ..., 1


def path_frames(image: np.ndarray, noise: np.ndarray, times: Sequence[float]) -> np.ndarray:
    """uint8 [len(times), H, W, 3]: x_t = (1 - t) x0 + t x1 for the image x1 (uint8 [H, W, 3], mapped to [-1, 1])
    and the noise x0 (float [H, W, 3], N(0, 1)), clipped to [-1, 1] for display."""
    if image.ndim != 3 or image.dtype != np.uint8 or noise.shape != image.shape:
        raise ValueError(f"image must be uint8 [H, W, 3] and noise float of the same shape, got {image.dtype} "
                         f"{image.shape} and {noise.shape}")
    from ..image_grid import to_uint8

    x1 = image.astype(np.float64) / 127.5 - 1.0
    frames = np.stack([(1 - t) * noise + t * x1 for t in times])  # x_t = (1 - t) x0 + t x1
    return to_uint8(torch.from_numpy(frames).permute(0, 3, 1, 2))  # clipped to [-1, 1], as every image grid


def render_path_strip(image: np.ndarray, t: float = 0.5, seed: int = 0) -> go.Figure:
    """One image on its way from noise (t = 0) to data (t = 1): x_t at the slider's t, large, beside the strip of
    x_t at t = 0, 1/8, ..., 1 with the slider's position marked."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t!r}")
    noise = np.random.default_rng(seed).standard_normal(image.shape)
    current = path_frames(image, noise, [t])[0]
    strip = grid_image(path_frames(image, noise, STRIP_TIMES), nrow=len(STRIP_TIMES), scale=4)
    scale = max(1, 160 // image.shape[0])
    fig = make_subplots(1, 2, column_widths=[0.22, 0.78], horizontal_spacing=0.02,
                        subplot_titles=[f"x_t at t = {t:.2f}", "t = 0 (noise), 1/8, ..., 1 (data)"])
    fig.add_trace(go.Image(source=png_source(np.kron(current, np.ones((scale, scale, 1), np.uint8))),
                           hoverinfo="skip"), 1, 1)
    fig.add_trace(go.Image(source=png_source(strip), hoverinfo="skip"), 1, 2)
    w = image.shape[1]
    x = 4 * (1 + w / 2 + t * (len(STRIP_TIMES) - 1) * (w + 1))  # frame k is centred at 4 (1 + w/2 + k (w + 1))
    fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=strip.shape[0], line=dict(color=COLORS["highlight"], width=3),
                  row=1, col=2)
    for col in (1, 2):
        _image_axes(fig, 1, col)
    apply_style(fig, title="x_t = (1 - t) x0 + t x1 for one training image")
    fig.update_layout(height=300, width=1000)
    return fig


def path_strip_widget(image: np.ndarray, seed: int = 0) -> Any:
    """A t slider (redraws while dragging) over `render_path_strip`."""
    from .widgets import interactive_view, t_slider

    return interactive_view(render_path_strip, {"t": t_slider(0.5)}, image=image, seed=seed)


def render_sample_overview(samples: Mapping[str, Mapping[int, np.ndarray]], n_show: int = 9,
                           title: str = "Samples from the same noise: rows are models, columns step counts"
                           ) -> go.Figure:
    """Every model (rows) at every step count (columns): a small grid of n_show images in each cell."""
    models = list(samples)
    step_counts = sorted(samples[models[0]])
    fig = make_subplots(len(models), len(step_counts), horizontal_spacing=0.01, vertical_spacing=0.03,
                        column_titles=[f"{k} step{'s' if k > 1 else ''}" for k in step_counts], row_titles=models)
    for i, m in enumerate(models, 1):
        for j, k in enumerate(step_counts, 1):
            grid = grid_image(_check_samples(samples, m, k)[:n_show])
            fig.add_trace(go.Image(source=png_source(grid), hoverinfo="skip"), i, j)
            _image_axes(fig, i, j)
    apply_style(fig, title=title)
    fig.update_layout(width=190 * len(step_counts) + 160, height=180 * len(models) + 90, title_font_size=FONT_SIZE,
                      margin=dict(l=10, r=150, t=90, b=10))
    fig.for_each_annotation(lambda a: a.update(font=dict(size=FONT_SIZE - 3)))
    return fig


# --- curves and scores --------------------------------------------------------------------------------------------

def render_loss_curves(logs: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "Training loss") -> go.Figure:
    """Loss against step, one line per run (log y). Losses of different families are not comparable in value:
    read the shape (still falling? noisy?), not the level."""
    fig = go.Figure()
    for i, (name, log) in enumerate(logs.items()):
        fig.add_trace(go.Scatter(x=[r["step"] for r in log], y=[r["loss"] for r in log], mode="lines", name=name,
                                 line=dict(color=SEQUENCE[i % len(SEQUENCE)], width=2)))
    apply_style(fig, title=title, x_title="training step", y_title="loss (per pixel, log scale)")
    fig.update_yaxes(type="log", **log_ticks([r["loss"] for log in logs.values() for r in log]))
    return fig


def scores_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """{model: {steps: {metric name: value}}} from rows {'model', 'steps', 'name', 'value'}."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for r in rows:
        out.setdefault(r["model"], {}).setdefault(int(r["steps"]), {})[r["name"]] = float(r["value"])
    return out


def render_scores(rows: Sequence[Mapping[str, Any]], metric: str | None = None,
                  title: str | None = None) -> go.Figure:
    """Score of each model against the step count (lower is better), for one metric (default: the first listed:
    FID when Inception weights are present, else the SWD-LapPyr proxy). Baselines are dashed lines; one with a
    'spread' (real images, `fmlab.images.lab_scores`) gets a band of ± 2 standard deviations."""
    names = list(dict.fromkeys(r["name"] for r in rows))
    if not names:
        raise ValueError("rows must not be empty")
    metric = metric or names[0]
    if metric not in names:
        raise ValueError(f"metric must be one of {names}, got {metric!r}")
    table = scores_table(rows)
    step_counts = sorted({int(r["steps"]) for r in rows if int(r["steps"]) > 0})
    fig = go.Figure()
    for i, (model, by_steps) in enumerate(table.items()):
        if set(by_steps) == {0}:  # a baseline without steps (noise images, real images): a dashed horizontal line
            value = by_steps[0].get(metric)
            color = COLORS["data"] if model.startswith("data") else COLORS["noise"]
            if value is not None and step_counts:
                fig.add_trace(go.Scatter(x=[step_counts[0], step_counts[-1]], y=[value, value], mode="lines",
                                         name=model, line=dict(color=color, dash="dash", width=2)))
                spread = next((r["spread"] for r in rows if r["model"] == model and r["name"] == metric
                               and r.get("spread") is not None), None)
                if spread:  # ± 2 std of the score over draws of real images: differences inside it are noise
                    fig.add_hrect(y0=value - 2 * spread, y1=value + 2 * spread, fillcolor=color, opacity=0.15,
                                  line_width=0)
            continue
        ks = sorted(k for k in by_steps if metric in by_steps[k])
        fig.add_trace(go.Scatter(x=ks, y=[by_steps[k][metric] for k in ks], mode="lines+markers", name=model,
                                 line=dict(color=SEQUENCE[i % len(SEQUENCE)], width=2), marker=dict(size=9)))
    note = "" if metric.startswith("FID") else " (a weights-free proxy, not FID)"
    apply_style(fig, title=title or f"{metric}{note}: lower is better", x_title="sampling steps (log scale)",
                y_title=metric)
    fig.update_xaxes(type="log", tickvals=step_counts)
    return fig


def format_scores(rows: Sequence[Mapping[str, Any]]) -> str:
    """The score rows as a text table: one line per model, one column per (metric, step count)."""
    table = scores_table(rows)
    names = list(dict.fromkeys(r["name"] for r in rows))
    steps = sorted({int(r["steps"]) for r in rows if int(r["steps"]) > 0})
    width = max(len(m) for m in table) + 2
    lines = []
    for name in names:
        lines.append(f"{name} (lower is better; n = {max(r['n'] for r in rows if r['name'] == name)})")
        lines.append(" " * width + "".join(f"{f'{k} step' + ('s' if k > 1 else ''):>12}" for k in steps))
        for model, by_steps in table.items():
            if set(by_steps) == {0}:
                value = by_steps[0].get(name)
                spread = next((r["spread"] for r in rows if r["model"] == model and r["name"] == name
                               and r.get("spread") is not None), None)
                lines.append(f"{model:<{width}}" + (f"{value:>12.4g}" if value is not None else "")
                             + (f" ± {spread:.2g} (std over draws)" if spread is not None else "  (all steps)"))
                continue
            cells = "".join(f"{by_steps[k][name]:>12.4g}" if name in by_steps.get(k, {}) else f"{'-':>12}"
                            for k in steps)
            lines.append(f"{model:<{width}}{cells}")
        lines.append("")
    return "\n".join(lines).rstrip()


# --- classifier-free guidance on the sample grid ------------------------------------------------------------------

def render_guided_grid(trainer: Any, w: float = 1.0, label: int = 1, n: int = 16, steps: int = 8) -> go.Figure:
    """The sample grid of a conditional lab run (fmlab.images.train_lab_guidance) for class `label` at guidance
    scale w: v_w = v + w (v(. | label) - v), the same noise for every w and class."""
    from ..images import guided_lab_samples

    attribute = trainer.config.attribute
    if label not in (0, 1):
        raise ValueError(f"label must be 0 (without {attribute}) or 1 (with it), got {label!r}")
    images = guided_lab_samples(trainer, label, w, n=n, steps=steps)
    return render_image_grid(images, title=f"{'with' if label else 'without'} {attribute}, guidance w = {w:g} "
                                           f"({steps} Euler steps)")


def guided_grid_widget(trainer: Any, n: int = 16, steps: int = 8) -> Any:
    """A guidance-scale slider (0 to 8, on release) and a class menu over `render_guided_grid`. The settings one move
    away (w one step down and up, the other class: a UNet sampling run each, about 1 s on a laptop CPU in full mode)
    are drawn in the background; a render only reads the trainer's EMA network and seeds its own noise."""
    from .widgets import dropdown, interactive_view, slider

    attribute = trainer.config.attribute
    controls = {"w": slider("guidance scale w", 0.0, 8.0, 0.5, 1.0, continuous_update=False),
                "label": dropdown("class", {f"with {attribute}": 1, f"without {attribute}": 0})}
    return interactive_view(render_guided_grid, controls, prefetch=True, trainer=trainer, n=n, steps=steps)


# --- what a long run gives (artefacts of scripts/lab13_long_run.py) ----------------------------------------------

def load_long_run(folder: str | Path) -> dict[str, Any] | None:
    """The artefacts scripts/lab13_long_run.py wrote into `folder` ({'meta', 'scores', 'curves', 'grids':
    {label: {steps: uint8 grid [1, H, W, 3]}}}), or None when there are none."""
    from PIL import Image

    folder = Path(folder)
    if not (folder / "meta.json").is_file():
        return None
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    grids = {label: {k: np.asarray(Image.open(folder / f"grid_{run['loss']}_{k}.png").convert("RGB"))[None]
                     for k in meta["plan"]["eval_steps"]}
             for label, run in meta["runs"].items()}
    return {"meta": meta, "grids": grids,
            "scores": json.loads((folder / "scores.json").read_text(encoding="utf-8")),
            "curves": json.loads((folder / "loss_curves.json").read_text(encoding="utf-8"))}


def render_long_run(artefacts: Mapping[str, Any]) -> go.Figure:
    """The long run's samples, models by step counts, titled with how they were made (command, device, time)."""
    meta = artefacts["meta"]
    minutes = sum(run["minutes"] for run in meta["runs"].values())
    steps = ", ".join(f"{run['steps']}" for run in meta["runs"].values())
    title = (f"A long run: {meta['command']}<br><sup>{meta['device']}, {meta['date']}, {minutes:.0f} min in all "
             f"({steps} steps)</sup>")
    return render_sample_overview(artefacts["grids"], n_show=1, title=title)


# --- pre-warming ----------------------------------------------------------------------------------------------

_STEP_COST = {"meanflow": 2.1, "anchored_consistency": 1.5}  # per step, relative to flow matching (a rough weight)


def prewarm_jobs(fast: bool) -> list:
    """Lab 13's four runs (each with its samples), its conditional run at the lab's default budget and, once the four
    are done, their scores, for `python -m fmlab prewarm` (fmlab.prewarm). The plan comes from the throughput kept in
    the disk cache (`fmlab.images.plan_lab`), so the lab's own plan, in a later kernel, asks for exactly these
    configurations."""
    from ..images import LAB_RUNS, plan_lab
    from ..prewarm import job

    plan = plan_lab(fast=fast)
    runs = [job("13", "fmlab.images:prepare_lab_run", plan, label,  # the run and its samples
                cost=max(1, round(plan.steps * _STEP_COST.get(loss, 1.0)))) for label, loss in LAB_RUNS.items()]
    scores = job("13", "fmlab.images:prepare_lab_scores", plan, cost=max(1, plan.steps // 4), stage=1)  # after the runs
    return runs + [job("13", "fmlab.images:train_lab_guidance", plan, live=False, cost=plan.steps), scores]
