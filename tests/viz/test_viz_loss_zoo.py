"""Lab 12 (the loss zoo): samplers, the precomputed view, figures, the landscape table, the widget, the exercise
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
from fmlab.viz import loss_zoo_results as ZR

ROOT = Path(__file__).resolve().parents[2]


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
    # the SGFlow paper's 69.8 GB "Lagrange (L-FMM)" is Lagrangian flow map matching (our FMM), not LSD
    assert Z.PAPER_MEMORY["fmm"] == pytest.approx(69.8 / 16.8) and "lsd" not in Z.PAPER_MEMORY
    assert [n for n in names if ZR.one_nfe(n)] == ["pid", "freeflow"]


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


def test_zoo_view_w2_is_computed_when_shown_and_the_reference_shared(view, small_model):
    from fmlab.metrics import wasserstein

    fresh = Z.ZooView(small_model, "meanflow", n=80, n_paths=5, max_steps=4)
    assert fresh._w2 == {}  # nothing solved until a step count is shown
    Z.render_zoo(fresh, 2)
    assert set(fresh._w2) == {2} and fresh.w2_at(2) == pytest.approx(wasserstein(fresh.samples[2], fresh.data))
    assert fresh.x0 is view.x0 and fresh.exact_w2 == view.exact_w2  # one exact flow for every loss of a widget


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
    """Two seeds per run: seed 0 and seed 1 differ by +-0.01 around the means quoted in the comments."""
    losses = {n: {"name": Z.DISPLAY_NAMES[n], "rule": r, "setting": "s", "survey_cost": c, "fwd_eq": f,
                  "mem_rel_fm": m, "sampler": Z.sampler_of(n)}
              for n, r, c, f, m in (("cfm", "(velocity)", 3, 3.1, 1.0), ("meanflow", "Eulerian", 4, 9.0, 3.0),
                                    ("lsd", "Lagrangian", 10, 20.0, 5.0), ("pid", "Lagrangian", 7, 8.0, 4.0))}
    means = {"cfm": {"1": 0.9, "2": 0.5, "4": 0.3, "8": 0.2, "100": 0.16},
             "meanflow": {"1": 0.4, "2": 0.3, "4": 0.25, "8": 0.2}, "lsd": {"1": 0.18, "2": 0.17, "4": 0.16, "8": 0.16},
             "pid": {"1": 0.2}}
    runs = [{"loss": loss, "data": data, "coupling": "independent", "seed": seed, "sampler": Z.sampler_of(loss),
             "w2": {k: v + (0.01 if seed else -0.01) for k, v in w2.items()}}
            for seed in (0, 1) for data in ("moons", "checkerboard") for loss, w2 in means.items()]
    return {"config": {"datasets": ["moons", "checkerboard"], "steps": 2000, "fm_steps": 100, "n_eval": 1000},
            "noise_floor": {"moons": {"mean": 0.06, "std": 0.01}, "checkerboard": {"mean": 0.2, "std": 0.05}},
            "losses": losses, "runs": runs}


def test_w2_over_seeds_mean_std_and_divergence():
    stats = ZR.w2_stats([0.2, 0.4, float("nan")])
    assert stats == {"mean": pytest.approx(0.3), "std": pytest.approx(math.sqrt(0.02)), "n": 3, "n_diverged": 1}
    assert ZR.format_w2_stats(stats) == "0.300 +- 0.141 (1/3 diverged)"
    assert ZR.format_w2_stats(ZR.w2_stats([0.25])) == "0.250"
    assert ZR.format_w2_stats(ZR.w2_stats([3e5, float("inf")])) == "diverged (2/2)"
    assert ZR.format_w2_stats(ZR.w2_stats([0.1, 0.3]), sep="<br>") == "0.200<br>+- 0.141"
    assert ZR.format_w2_stats(None) == "-"
    with pytest.raises(ValueError, match="values"):
        ZR.w2_stats([])
    rows = ZR.summarise_runs(_fake_results()["runs"])
    pid = next(r for r in rows if r["loss"] == "pid" and r["data"] == "moons")
    assert pid["seeds"] == [0, 1] and set(pid["w2"]) == {"1"} and pid["w2"]["1"]["mean"] == pytest.approx(0.2)


def test_landscape_table_colours_quality_against_flow_matching():
    res = _fake_results()
    fig = ZR.render_landscape(res, sort_by="moons")
    table = fig.data[0]
    names = list(table.cells.values[0])
    assert names == ["flow matching", "LSD", "PID", "MeanFlow"]  # flow matching first, then by mean 1-step W2
    col = 6  # moons W2 at 1 step
    assert table.header.values[col] == "<b>moons<br>W2 1</b>"
    assert table.cells.values[col][1] == "0.180<br>+- 0.014"  # mean +- std over the two seeds
    fills = table.cells.fill.color[col]
    assert fills[1] == "#c7e9c0" and fills[3] == "#fcbba1"  # 0.18 / 0.16 <= 1.2 green; 0.4 / 0.16 > 2 red
    # PID samples in one jump from the noise: 1 NFE at 1 step, n/a at more steps
    assert table.cells.values[col][2].endswith("(1 NFE)") and table.cells.values[col + 1][2].startswith("n/a")
    assert ZR.fm_reference(res, "moons")["mean"] == pytest.approx(0.16)
    assert "2 seed(s)" in fig.layout.title.text
    with pytest.raises(ValueError, match="coupling"):
        ZR.render_landscape(res, coupling="ot")
    with pytest.raises(ValueError, match="sort_by"):
        ZR.render_landscape(res, sort_by="spirals")
    bars = ZR.render_costs(res)
    assert list(bars.data[1].y) == [3.1, 8.0, 9.0, 20.0]


def test_diverged_runs_are_named_and_sorted_last():
    res = _fake_results()
    for r in res["runs"]:
        if r["loss"] == "lsd" and r["data"] == "moons":
            r["w2"]["1"] = 3.4e5  # LSD on moons blew up on both seeds
    table = ZR.render_landscape(res, sort_by="moons").data[0]
    assert list(table.cells.values[0]) == ["flow matching", "PID", "MeanFlow", "LSD"]
    assert table.cells.values[6][3] == "diverged (2/2)" and table.cells.fill.color[6][3] == "#fcbba1"
    assert [ZR.format_w2(v) for v in (None, float("nan"), float("inf"), 0.1234)] == ["-", "diverged", "diverged",
                                                                                      "0.123"]


def test_committed_benchmark_results_render():
    if not Z.RESULTS_PATH.exists():
        pytest.skip("fmlab/viz/results/flowmaps.json not written yet")
    res = ZR.load_results()
    fig = ZR.render_landscape(res)
    assert len(fig.data[0].cells.values[0]) >= 22  # flow matching + every flow-map loss
    assert set(res["target"]) >= {"moons/independent", "checkerboard/independent"}


def test_missing_results_file_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks/flowmaps.py"):
        ZR.load_results(tmp_path / "nope.json")


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


def _bench():
    spec = importlib.util.spec_from_file_location("bench_flowmaps", ROOT / "benchmarks" / "flowmaps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_smoke_run(tmp_path):
    bench = _bench()
    out = tmp_path / "fm.json"
    res = bench.main(["--steps", "4", "--losses", "meanflow,pid", "--datasets", "moons", "--seeds", "0,1",
                      "--all-seeds-for", "best:1", "--ot", "best:1", "--ot-seeds", "first", "--n-eval", "40",
                      "--floor-draws", "3", "--workers", "1", "--no-cost", "--out", str(out)])
    saved = json.loads(out.read_text())
    leader = saved["config"]["leaders"]["moons"][0]  # the better 1-step W2 on seed 0 runs on seed 1 too
    seed0 = {r["loss"]: r["w2"]["1"] for r in saved["runs"] if r["seed"] == 0 and r["coupling"] == "independent"}
    assert seed0[leader] == min(seed0[n] for n in ("meanflow", "pid"))
    best = bench.best_losses([r for r in saved["runs"] if r["seed"] == 0], 1)[0]
    assert sorted((r["loss"], r["coupling"], r["seed"]) for r in saved["runs"]) == sorted(
        [(n, "independent", 0) for n in ("cfm", "meanflow", "pid")] + [("cfm", "independent", 1),
                                                                      (leader, "independent", 1),
                                                                      ("cfm", "ot", 0), (best, "ot", 0)])
    first = saved["runs"][0]
    assert first["loss"] == "cfm" and set(first["w2"]) == {"1", "2", "4", "8", "100"}
    assert all(set(r["w2"]) == {"1"} for r in saved["runs"] if r["loss"] == "pid")  # one jump from the noise only
    row = next(r for r in saved["summary"] if (r["loss"], r["coupling"]) == (leader, "independent"))
    values = [r["w2"]["1"] for r in saved["runs"] if (r["loss"], r["coupling"]) == (leader, "independent")]
    assert row["w2"]["1"]["n"] == 2 and row["w2"]["1"]["mean"] == pytest.approx(sum(values) / 2)
    assert saved["noise_floor"]["moons"]["draws"] == 3
    target = res["target"]["moons/independent"]
    assert target["best_loss"] == leader and target["n_seeds"] == 2  # among the losses run on every seed
    assert [s["seed"] for s in target["selection"]] == [0, 1] and target["selection"][0]["n_losses"] == 2
    assert target["vs_fm_100"]["verdict"] in ("lower", "higher", "within noise")
    assert [r["loss"] for r in saved["headline"]["moons"]] == [leader]
    md = out.with_suffix(".md").read_text()
    assert md.startswith("W2 (exact") and "(1 NFE) | n/a |" in md
    assert not out.with_suffix(".partial.jsonl").exists()  # the resume files are removed after a complete run
    ZR.render_landscape(saved)  # the lab can draw and print what the benchmark writes
    text = ZR.headline_text(saved)
    assert text.startswith("moons: flow matching, 100 Euler steps") and "best of 2 on seed 0 alone" in text
    assert "(1 seed) steps 1: " in ZR.steps_text(saved, ["pid" if leader == "meanflow" else "meanflow"])
    with pytest.raises(ValueError, match="headline"):
        ZR.headline_text({k: v for k, v in saved.items() if k != "headline"})
    with pytest.raises(ValueError, match="--all-seeds-for"):
        bench.parse_args(["--all-seeds-for", "top3"])


def test_benchmark_resumes_finished_runs(tmp_path):
    bench = _bench()
    out = tmp_path / "fm.json"
    store = bench.RunStore(out, resume=False)
    store.add({"loss": "cfm", "data": "moons", "coupling": "independent", "seed": 0, "w2": {"1": 1.0},
               "state": {"w": torch.ones(2)}})
    store.add({"loss": "pid", "data": "moons", "coupling": "independent", "seed": 0, "w2": {"1": 0.5}})
    again = bench.RunStore(out, resume=True)
    assert set(again.done) == {"cfm/moons/independent/0", "pid/moons/independent/0"}
    assert torch.equal(again.done["cfm/moons/independent/0"]["state"]["w"], torch.ones(2))
    job = {"loss": "pid", "data": "moons", "coupling": "independent", "seed": 0}
    assert bench.run_stored([job], 1, again) == [again.done["pid/moons/independent/0"]]  # not trained again
    assert bench.RunStore(out, resume=False).done == {}  # a fresh run starts empty


def test_benchmark_reuses_only_runs_it_would_reproduce(tmp_path):
    bench = _bench()
    run = {"data": "moons", "coupling": "independent", "steps": 2000, "w2": {"1": 0.2}, "seed": 1}
    earlier = {"config": {"steps": 2000}, "runs": [
        {**run, "loss": "cfm"},  # the teacher's weights are not in the file: trained again
        {**run, "loss": "meanflow", "loss_settings": {"norm_p": 1.0}, "weighting": "p1"},  # not the default
        {**run, "loss": "meanflow", "loss_settings": {"norm_p": 0.0}, "weighting": "p0"},  # the default
        {**run, "loss": "lsd"}, {**run, "loss": "emd", "steps": 8000}]}
    kept = bench.reusable_runs(earlier, steps=2000)
    assert [(r["loss"], r["seed"]) for r in kept] == [("meanflow", 1), ("lsd", 1)]
    assert "weighting" not in kept[0] and "loss_settings" not in kept[0]
    assert [r["loss"] for r in bench.reusable_runs(earlier, steps=2000, losses=["lsd"])] == ["lsd"]
    unseeded = {k: v for k, v in run.items() if k != "seed"} | {"loss": "ct"}
    old = {"config": {"steps": 2000, "seed": 0}, "runs": [unseeded]}
    assert bench.reusable_runs(old, steps=2000)[0]["seed"] == 0  # files from before --seeds held one seed
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    store = bench.RunStore(tmp_path / "fm.json", resume=False, reuse=[bench.parse_reuse(str(path))], steps=2000)
    assert set(store.done) == {"meanflow/moons/independent/1", "lsd/moons/independent/1"}
    assert bench.parse_reuse(f"{path}:lsd,ct") == (path, ["lsd", "ct"])
    with pytest.raises(FileNotFoundError, match="--reuse"):
        bench.parse_reuse(str(tmp_path / "none.json"))


def test_time_gaps_count_the_samplers_gaps():
    mf, lsd = Z.time_gaps("meanflow", n=20_000), Z.time_gaps("lsd", n=20_000)
    assert mf["diagonal"] == pytest.approx(0.75) and lsd["diagonal"] == 0.0  # diagonal rows
    # uniform on the triangle: P(t - s <= 1/8) = 1 - (7/8)^2 = 0.234, P(t - s >= 1/2) = 1/4
    assert lsd["short"] == pytest.approx(1 - (7 / 8) ** 2, abs=0.02) and lsd["long"] == pytest.approx(0.25, abs=0.02)
    assert mf["short"] > 0.3 and mf["long"] < 0.15  # MeanFlow's logit-normal pairs: short gaps more often
    table = Z.time_gap_table(["meanflow", "lsd"], n=2000).splitlines()
    assert len(table) == 4 and table[2].startswith("| MeanFlow | 0.750 |")
    with pytest.raises(ValueError, match="flow-map loss"):
        Z.time_gaps("cfm")


def test_benchmark_job_carries_loss_settings():
    bench = _bench()
    job = {"loss": "meanflow", "data": "moons", "coupling": "independent", "steps": 3, "seed": 0, "n_eval": 30}
    plain = bench.train_and_eval(job)
    weighted = bench.train_and_eval({**job, "loss_settings": {"norm_p": 1.0, "norm_c": 1e-3}})
    assert weighted["loss_settings"] == {"norm_p": 1.0, "norm_c": 1e-3} and "loss_settings" not in plain
    assert weighted["w2"]["1"] != plain["w2"]["1"]  # the setting reached the loss
    assert bench.train_and_eval(job)["w2"] == plain["w2"]  # a seed gives the same run


def test_benchmark_compare_and_arguments(tmp_path):
    bench = _bench()
    a, b = {"mean": 0.20, "std": 0.01, "n": 3}, {"mean": 0.25, "std": 0.01, "n": 3}
    assert bench.compare(a, b)["verdict"] == "lower" and bench.compare(b, a)["verdict"] == "higher"
    assert bench.compare(a, {**b, "std": 0.1})["verdict"] == "within noise"
    assert bench.compare(a, {**b, "n": 1})["verdict"] == "one seed"
    assert bench.compare(a, b)["se"] == pytest.approx(math.sqrt(2 * 0.01**2 / 3))
    with pytest.raises(ValueError, match="--seeds"):
        bench.parse_seeds("0,0")
    with pytest.raises(ValueError, match="--seeds"):
        bench.parse_seeds("a")
    with pytest.raises(FileNotFoundError, match="--cost-only"):
        bench.main(["--cost-only", "--out", str(tmp_path / "none.json")])


def _bench_ayf():
    spec = importlib.util.spec_from_file_location("bench_flowmaps_ayf", ROOT / "benchmarks" / "flowmaps_ayf.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_ayf_variant_divides_the_update_by_the_gap():
    """The diagnostic AYF-LMD variant (surrogate on u) has the zoo AYF-LMD gradient divided by h = t - s."""
    from fmlab.data import gmm_2d
    from fmlab.flowmaps import GaussianMixtureTeacher
    from fmlab.losses import get_loss
    from fmlab.losses.batch import Batch

    bench = _bench_ayf()
    torch.manual_seed(0)
    model = build_model(time_inputs=2, hidden=16, depth=2)
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    s = torch.rand(64, generator=g) * 0.6
    batch = Batch(x0=x0, x1=x1, s=s, t=s + 0.4, r=s + 0.2)  # one gap h = 0.4 for every row
    teacher = GaussianMixtureTeacher(gmm_2d("8modes"))
    grads = []
    for fn in (get_loss("ayf_lagrangian").fn, bench.ayf_lagrangian_u_loss):
        model.zero_grad()
        fn(model, batch, teacher=teacher)[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], 0.4 * grads[1], rtol=1e-4, atol=1e-7)


def test_ayf_benchmark_smoke_run_and_text(tmp_path):
    bench = _bench_ayf()
    out = tmp_path / "ayf.json"
    res = bench.main(["--steps", "3", "--n-eval", "30", "--workers", "1", "--datasets", "moons", "--variants",
                      "ayf,lmd", "--out", str(out)])
    assert [r["variant"] for r in res["runs"]] == ["ayf", "lmd"]
    assert set(res["runs"][0]["gap_error"]["path"]) == {"0.125", "0.25", "0.5", "1"}
    assert all(math.isfinite(v) for r in res["runs"] for part in r["gap_error"].values() for v in part.values())
    text = ZR.ayf_gap_text(json.loads(out.read_text()))
    assert "AYF-LMD as in the zoo" in text and text.count("\n") == 2
    with pytest.raises(ValueError, match="--variants"):
        bench.main(["--variants", "ayf,nope", "--out", str(out)])
