"""Solvers against analytic ODEs: measured orders of convergence, the adaptive reference, gradients, bookkeeping."""

import math

import numpy as np
import pytest
import torch

from fmlab.solvers import SOLVERS, Trajectory, nfe, solve, solve_adaptive, time_grid

torch.set_num_threads(1)
DT = torch.float64

# x' = A x with A = rotation (omega = 2) plus decay (-0.5): x(t) = expm(A t) x(0).
A = torch.tensor([[-0.5, -2.0], [2.0, -0.5]], dtype=DT)


def linear_field(x, t):
    return x @ A.T


def linear_exact(x, t):
    return x @ torch.linalg.matrix_exp(A * t).T


# Time-dependent nonlinear x' = -2 t x^2 (per coordinate): x(t) = x(0) / (1 + x(0) t^2) for x(0) > 0.
def nonlinear_field(x, t):
    return -2 * t[:, None] * x**2


def nonlinear_exact(x, t0, t1):
    c = 1 / x - t0**2  # 1 / x(t) = t^2 + c
    return 1 / (t1**2 + c)


def x_init(n=4):
    g = torch.Generator().manual_seed(0)
    return 0.5 + torch.rand(n, 2, generator=g, dtype=DT)


ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
STEPS = {"euler": [16, 32, 64, 128], "midpoint": [8, 16, 32, 64], "heun": [8, 16, 32, 64], "rk4": [8, 16, 32, 64]}


def measured_order(method, field, exact, x):
    errs = [(solve(field, x, k, method) - exact).abs().max().item() for k in STEPS[method]]
    slope = np.polyfit(np.log(STEPS[method]), np.log(errs), 1)[0]
    return -slope


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_order_linear(method):
    x = x_init()
    order = measured_order(method, linear_field, linear_exact(x, 1.0), x)
    assert abs(order - ORDERS[method]) < 0.2, (method, order)


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_order_time_dependent_nonlinear(method):
    x = x_init()
    order = measured_order(method, nonlinear_field, nonlinear_exact(x, 0.0, 1.0), x)
    assert abs(order - ORDERS[method]) < 0.2, (method, order)


def test_registry_matches_orders_and_nfe():
    assert {m: SOLVERS[m].order for m in SOLVERS} == ORDERS
    assert {m: SOLVERS[m].nfe for m in SOLVERS} == {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_nfe_counted(method):
    calls = []

    def field(x, t):
        calls.append(t)
        return linear_field(x, t)

    traj = solve(field, x_init(), 5, method, return_trajectory=True)
    assert len(calls) == traj.nfe == nfe(method, 5) == 5 * SOLVERS[method].nfe
    assert all(t.shape == (4,) and t.dtype == DT for t in calls)  # per-sample time [B] in x's dtype
    assert calls[0].eq(0).all() and all(0 <= float(t.min()) <= float(t.max()) <= 1 for t in calls)


def test_trajectory_shapes_and_image_batches():
    x = torch.randn(3, 1, 2, 2)
    traj = solve(lambda x, t: -x, x, 4, "heun", return_trajectory=True)
    assert isinstance(traj, Trajectory)
    assert traj.xs.shape == (5, 3, 1, 2, 2) and traj.ts.shape == (5,) and traj.nfe == 8
    assert torch.equal(traj.xs[0], x) and torch.equal(traj.x, traj.xs[-1])
    assert torch.allclose(traj.ts, torch.linspace(0, 1, 5))
    assert torch.equal(traj.xs[-1], solve(lambda x, t: -x, x, 4, "heun"))
    with pytest.raises(AttributeError):
        traj.nfe = 0  # frozen


def test_time_grid():
    g = time_grid(4, 0.2, 0.6)
    assert g.dtype == DT and torch.allclose(g, torch.tensor([0.2, 0.3, 0.4, 0.5, 0.6], dtype=DT))
    assert torch.allclose(time_grid(2, 1.0, 0.0), torch.tensor([1.0, 0.5, 0.0], dtype=DT))


def test_custom_grid_partial_interval_and_backward():
    x = x_init()
    grid = torch.tensor([0.0, 0.05, 0.15, 0.3, 0.5, 0.75, 1.0]) ** 1.5  # non-uniform
    y = solve(nonlinear_field, x, method="rk4", t_grid=grid)
    assert (y - nonlinear_exact(x, 0.0, 1.0)).abs().max() < 1e-3
    y = solve(linear_field, x, 64, "rk4", t_start=0.25, t_end=0.75)
    assert (y - linear_exact(x, 0.5)).abs().max() < 1e-8
    back = solve(linear_field, linear_exact(x, 1.0), 64, "rk4", t_start=1.0, t_end=0.0)
    assert (back - x).abs().max() < 1e-7


def test_keep_graph_gradients_match_finite_differences():
    x = x_init(3)
    theta = torch.tensor(0.7, dtype=DT, requires_grad=True)

    def loss(x, theta):
        field = lambda z, t: theta * linear_field(z, t) + torch.sin(3 * t)[:, None]  # noqa: E731
        return solve(field, x, 6, "rk4", keep_graph=True).pow(2).sum()

    xg = x.clone().requires_grad_(True)
    gx, gtheta = torch.autograd.grad(loss(xg, theta), (xg, theta))
    eps = 1e-6
    with torch.no_grad():
        fd_theta = (loss(x, theta + eps) - loss(x, theta - eps)) / (2 * eps)
        e = torch.zeros_like(x)
        e[1, 0] = eps
        fd_x = (loss(x + e, theta) - loss(x - e, theta)) / (2 * eps)
    assert gtheta.item() == pytest.approx(fd_theta.item(), rel=1e-6)
    assert gx[1, 0].item() == pytest.approx(fd_x.item(), rel=1e-6)


def test_no_graph_by_default():
    theta = torch.tensor(1.0, requires_grad=True)
    y = solve(lambda x, t: theta * x, torch.randn(2, 2), 3, "midpoint")
    assert not y.requires_grad
    assert solve(lambda x, t: theta * x, torch.randn(2, 2), 3, "midpoint", keep_graph=True).requires_grad


def test_solve_adaptive_matches_analytic():
    x = x_init()
    assert (solve_adaptive(linear_field, x, 0.0, 1.0) - linear_exact(x, 1.0)).abs().max() < 1e-7
    assert (solve_adaptive(nonlinear_field, x, 0.0, 1.0) - nonlinear_exact(x, 0.0, 1.0)).abs().max() < 1e-7


def test_solve_adaptive_backward_and_t_eval():
    x = x_init()
    x1 = nonlinear_exact(x, 0.0, 1.0)
    assert (solve_adaptive(nonlinear_field, x1, 1.0, 0.0) - x).abs().max() < 1e-7
    ts = [0.0, 0.3, 0.8]
    ys = solve_adaptive(nonlinear_field, x, 0.0, 0.8, t_eval=ts)
    assert ys.shape == (3, 4, 2)
    for y, t in zip(ys, ts, strict=True):
        assert (y - nonlinear_exact(x, 0.0, t)).abs().max() < 1e-7
    back = solve_adaptive(nonlinear_field, x1, 1.0, 0.5, t_eval=[1.0, 0.5])
    assert (back[1] - nonlinear_exact(x, 0.0, 0.5)).abs().max() < 1e-7
    assert torch.equal(solve_adaptive(nonlinear_field, x, 0.3, 0.3), x)


def test_solve_adaptive_dtype_shape_and_no_grad():
    x = torch.randn(3, 1, 2, requires_grad=True)
    y = solve_adaptive(lambda z, t: -z * t[:, None, None], x, 0.0, 1.0)
    assert y.shape == x.shape and y.dtype == torch.float32 and not y.requires_grad
    assert torch.allclose(y, x.detach() * math.exp(-0.5), atol=1e-6)  # x(t) = x(0) exp(-t^2 / 2)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"steps": True}, "steps"),
    ({"steps": 4, "method": "rk45"}, "method"),
    ({}, "exactly one"),
    ({"steps": 4, "t_grid": [0.0, 1.0]}, "exactly one"),
    ({"t_grid": [0.0, 0.5, 0.4, 1.0]}, "t_grid"),
    ({"t_grid": [0.0, 0.0, 1.0]}, "t_grid"),
    ({"t_grid": [0.0, 1.5]}, "t_grid"),
    ({"t_grid": [0.5]}, "t_grid"),
    ({"steps": 4, "t_start": -0.1}, "t_start"),
    ({"steps": 4, "t_end": 1.1}, "t_end"),
    ({"steps": 4, "t_start": 0.5, "t_end": 0.5}, "t_start"),
])
def test_solve_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve(linear_field, x_init(), **kwargs)


def test_other_errors():
    with pytest.raises(ValueError, match="method"):
        nfe("dopri5", 3)
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)
    with pytest.raises(ValueError, match="rtol"):
        solve_adaptive(linear_field, x_init(), 0.0, 1.0, rtol=0.0)
    with pytest.raises(ValueError, match="t_eval"):
        solve_adaptive(linear_field, x_init(), 0.0, 1.0, t_eval=[0.5, 1.2])
    with pytest.raises(ValueError, match="t_eval"):
        solve_adaptive(linear_field, x_init(), 1.0, 0.0, t_eval=[0.2, 0.8])  # wrong direction
