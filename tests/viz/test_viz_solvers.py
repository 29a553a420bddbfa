"""fmlab.viz.solvers (lab 04 figures) and fmlab.exercises.solvers: orders of convergence measured against the exact
Gaussian flow map, W2 budgets, straightness of known paths."""

import pytest
import torch

from fmlab.data import Gaussian, gmm_2d
from fmlab.exercises import solvers as ex
from fmlab.metrics import straightness
from fmlab.models import build_model
from fmlab.solvers import SOLVERS, Midpoint, solve
from fmlab.viz import solvers as S

torch.set_num_threads(1)
GMM = gmm_2d("8modes")
GAUSS = Gaussian(torch.tensor([2.0, -1.0]), std=torch.tensor([0.5, 1.5]))


def gmm_field(x, t):
    return GMM.velocity(x, t)


def gauss_field(x, t):
    return GAUSS.velocity(x, t)


def test_float64_field_casts_a_network_without_touching_it():
    net = build_model(dim=2, hidden=8, depth=1)
    f64 = S.float64_field(net)
    out = f64(torch.zeros(3, 2), torch.zeros(3))
    assert out.dtype == torch.float64 and next(net.parameters()).dtype == torch.float32
    assert S.float64_field(gmm_field)(torch.zeros(2, 2), torch.zeros(2)).dtype == torch.float64


def test_measured_order_recovers_a_power_law():
    steps = [4, 8, 16, 32]
    assert S.measured_order(steps, [3.0 * n**-2.5 for n in steps]) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="same length"):
        S.measured_order([1, 2], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        S.measured_order([1, 2], [1.0, 0.0])


def test_reference_is_the_exact_gaussian_flow_map():
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert (S.reference_solution(gauss_field, x0) - GAUSS.flow_map_exact(x0, 0.0, 1.0)).abs().max() < 1e-8


def test_orders_of_convergence_on_the_mixture_flow():
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = S.convergence(gmm_field, x0, steps=(16, 32, 64, 128))
    for method, r in res.items():
        assert r["order"] == pytest.approx(SOLVERS[method].order, abs=0.2), method
        assert r["nfe"] == [n * SOLVERS[method].nfe for n in r["steps"]]
    fig = S.render_convergence(res)
    assert "RK4: order" in fig.data[3].name and fig.layout.xaxis.type == "log"
    assert S.render_convergence(res, against="nfe").data[3].x[0] == 64
    with pytest.raises(ValueError, match="against"):
        S.render_convergence(res, against="time")


def test_w2_vs_nfe_spends_whole_steps_and_improves():
    x0 = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    data = GMM.sample(200, generator=torch.Generator().manual_seed(2))
    res = S.w2_vs_nfe(gmm_field, x0, data, budgets=(1, 2, 4, 16))
    assert [n for n, _ in res["euler"]] == [1, 2, 4, 16] and [n for n, _ in res["rk4"]] == [4, 16]
    assert [n for n, _ in res["heun"]] == [2, 4, 16]
    assert res["euler"][-1][1] < 0.5 * res["euler"][0][1]  # one Euler step collapses onto the mean
    fig = S.render_w2_vs_nfe(res, floor=0.3)
    assert fig.data[-1].name.startswith("noise floor") and list(fig.data[-1].y) == [0.3, 0.3]
    with pytest.raises(ValueError, match="method"):
        S.w2_vs_nfe(gmm_field, x0, data, methods=("leapfrog",))


def test_solver_samples_title_and_traces():
    x0 = torch.randn(30, 2, generator=torch.Generator().manual_seed(3))
    traj = solve(gmm_field, x0, steps=3, method="heun", return_trajectory=True)
    fig = S.render_solver_samples(traj, GMM.sample(40), "heun", w2=0.5, n_paths=5, field_name="exact")
    assert fig.layout.title.text == "exact, Heun, 3 steps = 6 NFE: W2 = 0.500"
    assert list(fig.data[-1].x) == pytest.approx(traj.xs[-1, :, 0].tolist())
    assert sum(v is None for v in fig.data[1].x) == 5  # one polyline per drawn path
    with pytest.raises(ValueError, match="method"):
        S.render_solver_samples(traj, x0, "rk5")


def test_solver_widget_redraws_and_caches():
    x0 = torch.randn(40, 2, generator=torch.Generator().manual_seed(4))
    view = S.solver_widget({"exact": gmm_field}, x0, GMM.sample(40), steps=2)
    assert "Euler, 2 steps = 2 NFE" in view.figure.layout.title.text
    view.controls["method"].value = "rk4"
    assert "RK4, 2 steps = 8 NFE" in view.figure.layout.title.text
    view.controls["steps"].value = 5
    assert "5 steps = 20 NFE" in view.figure.layout.title.text
    assert len(view.runs._runs) == 3 and view.runs.run("exact", "rk4", 5) is view.runs.run("exact", "rk4", 5)
    with pytest.raises(ValueError, match="field"):
        view.runs.run("learned", "rk4", 5)


def test_straightness_profile_is_zero_for_straight_paths_and_averages_to_straightness():
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(5))
    straight = solve(lambda x, t: torch.ones_like(x), x0, steps=8, return_trajectory=True)
    t_mid, e = S.straightness_profile(straight)
    assert t_mid[0] == pytest.approx(1 / 16) and e.abs().max() < 1e-12
    curved = solve(gmm_field, x0, steps=20, method="rk4", return_trajectory=True)
    _, e = S.straightness_profile(curved)
    assert float(e.mean()) == pytest.approx(straightness(curved), rel=1e-6) and float(e.mean()) > 0.1
    fig = S.render_straightness({"straight": straight, "curved": curved})
    assert "S = 0.000" in fig.data[0].name and "length ratio 1.000" in fig.data[0].name
    paths = S.render_paths({"straight": straight, "curved": curved}, data=GMM.sample(20), n_paths=4)
    assert [a.text for a in paths.layout.annotations][0] == "straight: S = 0.000"


def test_exercise_checkers():
    assert ex.check_step_function(Midpoint.step, "midpoint", quiet=True)
    assert not ex.check_step_function(lambda f, x, t, dt: x + dt * f(x, t), "midpoint", quiet=True)
    assert not ex.check_step_function(lambda f, x, t, dt: x[:1], "midpoint", quiet=True)
    assert not ex.check_step_function(lambda f, x, t, dt: 1 / 0, "midpoint", quiet=True)
    assert ex.check_error_ratio("rk4", 16, quiet=True) and not ex.check_error_ratio("heun", 2, quiet=True)
    x1 = GMM.sample(20000, generator=torch.Generator().manual_seed(6)).double()
    assert ex.check_one_step_w2(float(x1.sub(x1.mean(0)).pow(2).sum(1).mean().sqrt()), quiet=True)
    assert ex.one_step_w2_answer() == pytest.approx((8 + 2 * 0.125) ** 0.5)
