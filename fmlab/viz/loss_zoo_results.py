"""The flow-map benchmark's results as lab 12 (the loss zoo) shows them: the landscape table of quality, cost and
memory, mean +- std over seeds, the headline against flow matching and the noise floor, per-step and AYF texts.

The numbers come from benchmarks/flowmaps.py (benchmarks/results/flowmaps.json); nothing here trains. W2 is the exact
2-Wasserstein distance between 1000 model samples and 1000 data samples (fmlab.metrics).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..losses import get_loss, list_losses
from .loss_zoo import DISPLAY_NAMES, RESULTS_PATH

__all__ = [
    "load_results", "landscape_rows", "fm_reference", "TABLE_DATA_NAMES", "DIVERGED_W2", "format_w2",
    "w2_stats", "format_w2_stats", "summarise_runs", "one_nfe", "render_landscape", "steps_text",
    "AYF_VARIANTS", "ayf_gap_text", "headline_text", "render_costs",
]


# --- the benchmark's results file -----------------------------------------------------------------------------

def load_results(path: str | Path | None = None) -> dict[str, Any]:
    """The results written by benchmarks/flowmaps.py (default benchmarks/results/flowmaps.json)."""
    path = Path(path) if path is not None else RESULTS_PATH
    if not path.exists():
        raise FileNotFoundError(f"no benchmark results at {path}: run `python benchmarks/flowmaps.py` "
                                f"(about 15 minutes on 2 cores) to create them")
    return json.loads(path.read_text())


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
    return loss in {s.name for s in list_losses()} and get_loss(loss).sampler == "noise_only"


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


