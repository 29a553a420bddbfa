"""Lab 11 figures and checkers: the exact flow map they draw against the adaptive reference, the three rules in
numbers, render functions responding to their parameters, widgets wiring, and the exercise checkers."""

from __future__ import annotations

import pytest
import torch

from fmlab.data import gmm_2d
from fmlab.exercises import flowmaps as ex
from fmlab.viz import flowmaps as F

F64 = torch.float64


def test_exact_flow_map_matches_the_adaptive_reference_with_per_sample_times():
    gmm = gmm_2d("asymmetric")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, generator=g, dtype=F64)
    s = torch.tensor([0.0, 0.3, 0.5, 0.6], dtype=F64)
    t = torch.tensor([1.0, 0.9, 0.5, 0.2], dtype=F64)  # forward, zero and backward jumps in one batch
    ours = F.exact_flow_map("asymmetric", x, s, t)
    for i in range(len(x)):
        ref = gmm.flow_map(x[i:i + 1], float(s[i]), float(t[i]), rtol=1e-10, atol=1e-10)
        assert torch.allclose(ours[i:i + 1], ref, atol=2e-6)
    back = F.exact_flow_map("asymmetric", ours, t, s)  # the map is invertible
    assert torch.allclose(back, x, atol=2e-6)


def test_trajectories_are_exact_jumps_between_grid_times():
    ts, xs = F.trajectories("asymmetric", 8)
    assert xs.shape == (len(ts), 8, 2) and ts[0] == 0.0 and ts[-1] == 1.0
    i, j = F._index(0.2), F._index(0.7)
    assert torch.allclose(xs[j], F.exact_flow_map("asymmetric", xs[i], 0.2, 0.7), atol=1e-6)


def test_rule_defects_vanish_for_the_exact_map_only():
    table = F.defects_table("asymmetric", 0.2, 0.5, 0.8)
    assert max(table["exact"].values()) < 1e-4
    for kind in ("euler", "midpoint"):
        assert min(table[kind].values()) > 0.1, (kind, table[kind])
    # the midpoint map is a better one-step map than Euler on every rule here
    assert all(table["midpoint"][k] < table["euler"][k] for k in table["exact"])
    with pytest.raises(ValueError, match="need h"):
        F.rule_defects(F.flow_map_fn("asymmetric", "euler"), lambda x, t: x, torch.zeros(2, 2), 0.5, 0.4, 0.9)


def test_approximate_maps_are_exact_at_zero_step_and_first_order():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    exact = F.exact_flow_map("two_modes", x, 0.3, 0.3 + 1e-2, steps=4)
    for kind, order in (("euler", 2), ("midpoint", 3)):  # local error O(h^(p+1))
        assert torch.equal(F.approximate_flow_map("two_modes", x, 0.3, 0.3, kind), x)
        e1 = (F.approximate_flow_map("two_modes", x, 0.3, 0.3 + 1e-2, kind) - exact).abs().max()
        e2 = (F.approximate_flow_map("two_modes", x, 0.3, 0.3 + 5e-3, kind) -
              F.exact_flow_map("two_modes", x, 0.3, 0.3 + 5e-3, steps=4)).abs().max()
        assert 2 ** order * 0.6 < e1 / e2 < 2 ** order * 1.6, (kind, (e1 / e2).item())
    with pytest.raises(ValueError, match="kind"):
        F.approximate_flow_map("two_modes", x, 0.1, 0.2, "rk4")
    with pytest.raises(ValueError, match="map must be"):
        F.flow_map_fn("two_modes", "rk4")


def test_render_jump_draws_the_jump_and_responds_to_s_and_t():
    a, b = F.render_jump(0.2, 0.7, n=10), F.render_jump(0.2, 0.9, n=10)
    assert a.layout.title.text != b.layout.title.text
    ends = [tr for tr in a.data if tr.name and tr.name.startswith("X(x, s, t)")][0]
    _, xs = F.trajectories("asymmetric", 10)
    assert torch.allclose(torch.tensor(ends.x), xs[F._index(0.7), :, 0])
    same = F.render_jump(0.5, 0.5, n=10)
    assert "X(x, s, s) = x" in same.layout.title.text
    with pytest.raises(ValueError, match="s must be <= t"):
        F.render_jump(0.8, 0.2)
    with pytest.raises(ValueError, match="mixture"):
        F.render_jump(0.1, 0.2, mixture="moons")


def test_canoe_and_bridge_follow_the_two_rules():
    fig = F.render_canoe_bridge(t=0.6, s=0.3)
    other = F.render_canoe_bridge(t=0.8, s=0.5)
    assert fig.layout.title.text != other.layout.title.text
    # canoe: the raft's arrivals move with the velocity where they are (Lagrangian)
    canoe = F._canoe("asymmetric", 0.2)
    j = F._index(0.6)
    rate = (canoe[j + 1] - canoe[j - 1]) / 0.04
    v = gmm_2d("asymmetric").velocity(canoe[j], 0.6)
    assert (rate - v).abs().max() < 0.05  # central difference on the 0.02 grid
    # bridge: d/ds X(x, s, t0) = -(dX/dx) v(x, s) (Eulerian), with dX/dx v by a difference along v
    bridge = F._bridge("asymmetric", 0.8)
    k = F._index(0.3)
    ds_X = (bridge[k + 1] - bridge[k - 1]) / 0.04
    v_b = gmm_2d("asymmetric").velocity(F.BRIDGE, 0.3)
    h = 1e-3
    ends = F.exact_flow_map("asymmetric", torch.cat([F.BRIDGE + h * v_b, F.BRIDGE - h * v_b]), 0.3, 0.8)
    jv = (ends[:9] - ends[9:]) / (2 * h)
    assert (ds_X + jv).abs().max() < 0.05
    assert torch.isnan(bridge[F._index(0.9)]).all()  # s > t0: not drawn


def test_render_composition_defect_is_zero_for_the_exact_map_only():
    exact = F.render_composition(0.1, 0.5, 0.9, "exact", n=12)
    euler = F.render_composition(0.1, 0.5, 0.9, "euler", n=12)
    assert "= 0.000" in exact.layout.title.text
    assert float(euler.layout.title.text.split("= ")[1].split(" ")[0]) > 0.1
    with pytest.raises(ValueError, match="s <= r <= t"):
        F.render_composition(0.5, 0.2, 0.9)


def test_render_rule_defects_is_a_log_bar_chart():
    fig = F.render_rule_defects()
    assert len(fig.data) == 3 and fig.layout.yaxis.type == "log"


def test_widgets_redraw_when_a_control_moves_and_keep_times_ordered():
    view = F.jump_widget()
    title = view.figure.layout.title.text
    view.controls["t"].value = 0.9
    assert view.figure.layout.title.text != title and view.status.value == ""
    view.controls["s"].value = 0.96  # past t: t follows
    assert view.controls["t"].value >= view.controls["s"].value
    comp = F.composition_widget()
    comp.controls["r"].value = 0.98  # beyond t = 0.9: clamped
    assert comp.controls["r"].value <= comp.controls["t"].value
    before = comp.figure.layout.title.text
    comp.controls["kind"].value = "euler"
    assert comp.figure.layout.title.text != before
    cb = F.canoe_bridge_widget()
    before = cb.figure.layout.title.text
    cb.controls["s"].value = 0.5
    assert cb.figure.layout.title.text != before


def test_exercise_checkers():
    assert ex.check_flow_map_1d(ex.gaussian_flow_map_1d, quiet=True)
    assert not ex.check_flow_map_1d(lambda x, s, t: x + (t - s) * ex.M, quiet=True)
    assert not ex.check_flow_map_1d(lambda x, s, t: 1 / 0, quiet=True)
    assert not ex.check_flow_map_1d("X", quiet=True)
    # the 1D reference equals fmlab's Gaussian flow map
    from fmlab.data.gaussian import Gaussian

    g = Gaussian(torch.tensor([ex.M], dtype=F64), std=ex.SD)
    x = torch.randn(20, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(g.flow_map_exact(x, 0.2, 0.7)[:, 0],
                          ex.gaussian_flow_map_1d(x[:, 0], torch.tensor(0.2, dtype=F64), torch.tensor(0.7, dtype=F64)))
    v = g.velocity(torch.tensor([[0.0]], dtype=F64), 0.5).item()
    assert ex.check_velocity_limit(v, quiet=True) and not ex.check_velocity_limit(ex.M, quiet=True)
    assert ex.check_rule_for_loss("shortcut", "compositional", quiet=True)
    assert ex.check_rule_for_loss("lsd", "Lagrangian", quiet=True)
    assert not ex.check_rule_for_loss("lsd", "Eulerian", quiet=True)
    assert not ex.check_rule_for_loss("lsd", "lagrange", quiet=True)
    with pytest.raises(ValueError, match="not a flow-map loss"):
        ex.check_rule_for_loss("cfm", "Eulerian", quiet=True)
