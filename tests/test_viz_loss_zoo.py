"""Lab 09 (the loss zoo): samplers, the precomputed view, figures, the landscape table, the widget, the exercise
checkers, and a tiny smoke run of benchmarks/flowmaps.py."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from fmlab.data.gaussian import Gaussian
from fmlab.exercises import loss_zoo as ex
from fmlab.models import ExactFlowMapModel, build_model
from fmlab.viz import loss_zoo as Z

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_model(time_inputs=2, hidden=16, depth=2)


def test_every_flow_map_loss_has_a_sampler_a_rule_and_a_name():
    names = Z.flow_map_losses()
    assert len(names) >= 21
    for name in names:
        assert Z.sampler_of(name) in ("flowmap", "consistency", "noise_only")
        assert Z.rule_of(name) in ("compositional", "Lagrangian", "Eulerian")
        assert name in Z.DISPLAY_NAMES and name in Z.SURVEY_COST
    assert Z.sampler_of("cfm") == "ode" and Z.sampler_of("cd") == "consistency" and Z.sampler_of("pid") == "noise_only"
    assert Z.needs_teacher("cd") and not Z.needs_teacher("meanflow")
    assert Z.PAPER_MEMORY["cfm"] == 1.0 and Z.PAPER_MEMORY["sgflow"] == pytest.approx(43.2 / 16.8)


def test_flow_map_sampler_of_the_exact_map_lands_on_the_exact_endpoint_for_any_step_count():
    target = Gaussian(torch.tensor([1.0, -0.5]), cov=torch.tensor([[1.2, 0.4], [0.4, 0.3]]))
    model = ExactFlowMapModel(target).double()
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = target.flow_map_exact(x0, 0.0, 1.0)
    for k in (1, 3, 8):  # composition of k exact jumps = one exact jump
        traj = Z.trajectory(model, "meanflow", x0, k)
        assert traj.xs.shape == (k + 1, 64, 2) and torch.allclose(traj.x, exact, atol=1e-10)
    # the consistency sampler re-noises: same distribution, different points for k > 1
    cons = Z.generate(model, "cd", x0, 4, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(cons, exact, atol=1e-3)
    assert torch.allclose(cons.mean(0), exact.mean(0), atol=0.4)
    # from the noise only: every step count gives the one-step sample
    assert torch.allclose(Z.generate(model, "pid", x0, 5), exact, atol=1e-10)


def test_samplers_reject_bad_steps_and_are_deterministic(small_model):
    x0 = torch.randn(8, 2)
    with pytest.raises(ValueError, match="steps"):
        Z.trajectory(small_model, "meanflow", x0, 0)
    a = Z.generate(small_model, "ct", x0, 3, generator=torch.Generator().manual_seed(5))
    b = Z.generate(small_model, "ct", x0, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    ode = Z.trajectory(build_model(hidden=16, depth=2), "cfm", x0, 4)
    assert ode.xs.shape == (5, 8, 2)


@pytest.fixture(scope="module")
def view(small_model):
    return Z.ZooView(small_model, "meanflow", n=80, n_paths=5, max_steps=4)


def test_zoo_view_measures_distance_to_the_exact_map(view):
    assert set(view.samples) == {1, 2, 3, 4} and view.paths[3].shape == (4, 5, 2)
    rms = (view.samples[2] - view.exact_end).pow(2).sum(1).mean().sqrt().item()
    assert view.error[2] == pytest.approx(rms)
    assert view.exact_paths.shape[1:] == (5, 2) and torch.allclose(view.exact_paths[0], view.x0[:5])
    # the exact endpoints are the mixture's flow map (adaptive reference solve)
    from fmlab.data import gmm_2d

    ref = gmm_2d(Z.ZOO_TARGET).flow_map(view.x0[:6].double(), 0.0, 1.0, rtol=1e-7, atol=1e-7)
    assert torch.allclose(view.exact_end[:6].double(), ref, atol=1e-3)
    assert math.isfinite(view.exact_w2) and view.exact_w2 < min(view.w2.values())


def test_render_zoo_follows_the_slider(view):
    f1, f3 = Z.render_zoo(view, 1), Z.render_zoo(view, 3)
    assert "1 step" in f1.layout.title.text and "3 step" in f3.layout.title.text
    assert not (f1.data[2].x == f3.data[2].x).all()  # the model's samples move
    assert len(f3.data) == 6 and f3.data[4].visible
    assert not Z.render_zoo(view, 3, show_paths=False).data[4].visible
    with pytest.raises(ValueError, match="steps"):
        Z.render_zoo(view, 9)


def test_render_quality(view):
    fig = Z.render_quality({"a": view, "b": view}, metric="w2")
    assert len(fig.data) == 2 and list(fig.data[0].x) == [1, 2, 3, 4]
    assert Z.render_quality({"a": view}).layout.yaxis.title.text.startswith("RMS")
    with pytest.raises(ValueError, match="metric"):
        Z.render_quality({"a": view}, metric="fid")


def _fake_results():
    losses = {n: {"name": Z.DISPLAY_NAMES[n], "rule": r, "setting": "s", "survey_cost": c, "fwd_eq": f,
                  "mem_rel_fm": m, "sampler": "flowmap"}
              for n, r, c, f, m in (("cfm", "(velocity)", 3, 3.1, 1.0), ("meanflow", "Eulerian", 4, 9.0, 3.0),
                                    ("lsd", "Lagrangian", 10, 20.0, 5.0))}
    runs = []
    for data in ("moons", "checkerboard"):
        runs.append({"loss": "cfm", "data": data, "coupling": "independent",
                     "w2": {"1": 0.9, "2": 0.5, "4": 0.3, "8": 0.2, "100": 0.16}})
        runs.append({"loss": "meanflow", "data": data, "coupling": "independent",
                     "w2": {"1": 0.4, "2": 0.3, "4": 0.25, "8": 0.2}})
        runs.append({"loss": "lsd", "data": data, "coupling": "independent",
                     "w2": {"1": 0.18, "2": 0.17, "4": 0.16, "8": 0.16}})
    return {"config": {"datasets": ["moons", "checkerboard"], "steps": 2000, "fm_steps": 100, "n_eval": 1000},
            "noise_floor": {"moons": {"mean": 0.06}, "checkerboard": {"mean": 0.2}}, "losses": losses, "runs": runs}


def test_landscape_table_colours_quality_against_flow_matching():
    res = _fake_results()
    fig = Z.render_landscape(res, sort_by="moons")
    table = fig.data[0]
    names = list(table.cells.values[0])
    assert names == ["flow matching", "LSD", "MeanFlow"]  # flow matching first, then by 1-step W2
    col = 6  # moons W2 at 1 step
    assert table.header.values[col] == "<b>moons<br>W2 1</b>"
    fills = table.cells.fill.color[col]
    assert fills[1] == "#c7e9c0" and fills[2] == "#fcbba1"  # 0.18 / 0.16 <= 1.2 green; 0.4 / 0.16 > 2 red
    assert Z.fm_reference(res, "moons") == 0.16
    with pytest.raises(ValueError, match="coupling"):
        Z.render_landscape(res, coupling="ot")
    with pytest.raises(ValueError, match="sort_by"):
        Z.render_landscape(res, sort_by="spirals")
    bars = Z.render_costs(res)
    assert list(bars.data[1].y) == [3.1, 9.0, 20.0]


def test_diverged_runs_are_named_and_sorted_last():
    res = _fake_results()
    res["runs"][1]["w2"]["1"] = 3.4e5  # meanflow on moons blew up
    table = Z.render_landscape(res, sort_by="moons").data[0]
    assert list(table.cells.values[0]) == ["flow matching", "LSD", "MeanFlow"]
    assert table.cells.values[6][2] == "diverged" and table.cells.fill.color[6][2] == "#fcbba1"
    assert [Z.format_w2(v) for v in (None, float("nan"), float("inf"), 0.1234)] == ["-", "diverged", "diverged",
                                                                                      "0.123"]


def test_committed_benchmark_results_render():
    if not Z.RESULTS_PATH.exists():
        pytest.skip("benchmarks/results/flowmaps.json not written yet")
    res = Z.load_results()
    fig = Z.render_landscape(res)
    assert len(fig.data[0].cells.values[0]) >= 22  # flow matching + every flow-map loss
    assert set(res["target"]) >= {"moons/independent", "checkerboard/independent"}


def test_missing_results_file_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks/flowmaps.py"):
        Z.load_results(tmp_path / "nope.json")


def test_zoo_widget_trains_and_redraws():
    w = Z.zoo_widget(losses=["cfm", "meanflow"], loss="meanflow", train_steps=3, n=40, max_steps=3)
    title = w.figure.layout.title.text
    w.controls["steps"].value = 2
    assert w.figure.layout.title.text != title and w.status.value == ""
    w.controls["loss"].value = "cfm"
    assert "flow matching" in w.figure.layout.title.text


def test_exercise_checkers():
    assert ex.check_meanflow_target(6.5, quiet=True) and not ex.check_meanflow_target(-6.5, quiet=True)
    assert ex.check_gaussian_jump(2 - math.sqrt(0.25 / 0.3125), quiet=True)
    assert not ex.check_gaussian_jump(2.0, quiet=True)
    assert ex.check_rule("lsd", "Lagrangian", quiet=True) and not ex.check_rule("meanflow", "Lagrangian", quiet=True)
    assert ex.check_sampler("facm", "consistency", quiet=True) and not ex.check_sampler("lsd", "consistency",
                                                                                          quiet=True)
    assert not ex.check_rule("lsd", "sideways", quiet=True)


def test_benchmark_smoke_run(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_flowmaps", ROOT / "benchmarks" / "flowmaps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "fm.json"
    res = bench.main(["--steps", "4", "--losses", "meanflow,cd", "--datasets", "moons", "--ot", "best:1",
                      "--n-eval", "40", "--workers", "1", "--no-cost", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert {(r["loss"], r["coupling"]) for r in saved["runs"]} == {
        ("cfm", "independent"), ("meanflow", "independent"), ("cd", "independent"), ("cfm", "ot"),
        (bench.best_losses(saved["runs"], 1)[0], "ot")}
    assert set(saved["runs"][0]["w2"]) == {"1", "2", "4", "8", "100"}
    assert "moons/independent" in res["target"] and out.with_suffix(".md").read_text().startswith("W2 (exact")
    Z.render_landscape(saved)  # the lab can draw what the benchmark writes
