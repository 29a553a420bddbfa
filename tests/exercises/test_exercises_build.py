"""The write-your-own ("build it") exercises of labs 00-06 and 11: each checker accepts a correct answer, names at
least two common mistakes (time convention, sign, stop-gradient, shapes, OT with replacement, ...) and rejects
garbage with a message; the fallbacks use fmlab's function while a stub is empty."""

import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch.func import jvp

from fmlab.exercises import couplings as ex05
from fmlab.exercises import fields as ex02
from fmlab.exercises import flowmaps as ex08
from fmlab.exercises import parametrisation as ex06
from fmlab.exercises import paths as ex01
from fmlab.exercises import solvers as ex04
from fmlab.exercises import training as ex03
from fmlab.exercises import welcome as ex00
from fmlab.exercises.code import STUB_MESSAGE


def _out(capsys):
    return capsys.readouterr().out


def stub(*_):
    raise NotImplementedError


def col(t):
    return t[:, None]


def garbage_checks(check, capsys, *extra):
    """Every checker: a stub, a non-function, a string result and NaNs each fail with their own message."""
    assert not check(stub, *extra)
    assert STUB_MESSAGE in _out(capsys)
    assert not check(42, *extra)
    assert "expected a function" in _out(capsys)
    assert not check(lambda *a: "no", *extra)
    out = _out(capsys)
    assert "must return a tensor" in out or "must be a torch tensor" in out
    assert not check(lambda *a: a[-1] * float("nan"), *extra)
    out = _out(capsys)
    assert "NaN" in out or "shape" in out or "depend on the model" in out


# --- lab 01 -----------------------------------------------------------------------------------------------------------

def linear_xt(x0, x1, t):
    return (1 - col(t)) * x0 + col(t) * x1


def cosine_xt(x0, x1, t):
    return torch.sin(math.pi / 2 * col(t)) * x1 + torch.cos(math.pi / 2 * col(t)) * x0


def cosine_v(x0, x1, t):
    a = math.pi / 2 * col(t)
    return math.pi / 2 * (torch.cos(a) * x1 - torch.sin(a) * x0)


def test_sample_xt_checker(capsys):
    assert ex01.check_sample_xt(linear_xt)
    assert ex01.check_sample_xt(cosine_xt, "cosine")
    assert "correct" in _out(capsys)
    assert not ex01.check_sample_xt(lambda x0, x1, t: col(t) * x0 + (1 - col(t)) * x1)
    assert "time convention is flipped" in _out(capsys)
    assert not ex01.check_sample_xt(linear_xt, "cosine")
    assert "That is the linear path" in _out(capsys)
    assert not ex01.check_sample_xt(lambda x0, x1, t: (1 - t) * x0 + t * x1)  # t [16] against [16, 2]
    out = _out(capsys)
    assert "raised RuntimeError" in out and "t[:, None]" in out
    assert not ex01.check_sample_xt(lambda x0, x1, t: linear_xt(x0, x1, t).sum(1))
    assert "expected shape (16, 2), got (16,)" in _out(capsys)
    garbage_checks(ex01.check_sample_xt, capsys)
    with pytest.raises(ValueError, match="schedule must be one of"):
        ex01.check_sample_xt(linear_xt, "vp")


def test_conditional_velocity_checker(capsys):
    assert ex01.check_conditional_velocity(lambda x0, x1, t: x1 - x0)
    assert ex01.check_conditional_velocity(cosine_v, "cosine")
    assert not ex01.check_conditional_velocity(lambda x0, x1, t: x0 - x1)
    assert "sign is flipped" in _out(capsys)
    assert not ex01.check_conditional_velocity(lambda *a: -cosine_v(*a), "cosine")
    assert "sign is flipped" in _out(capsys)
    assert not ex01.check_conditional_velocity(lambda *a: cosine_v(*a) / (math.pi / 2), "cosine")
    assert "chain-rule factor" in _out(capsys)
    assert not ex01.check_conditional_velocity(linear_xt)
    assert "x_t itself" in _out(capsys)
    garbage_checks(ex01.check_conditional_velocity, capsys)


def test_path_functions_fall_back(capsys):
    sample, velocity = ex01.path_functions(stub, stub, "cosine")
    out = _out(capsys)
    assert out.count("using fmlab's") == 2 and "stub is still empty" in out
    x0, x1, t = torch.zeros(3, 2), torch.ones(3, 2), torch.full((3,), 1.0)
    assert torch.allclose(sample(x0, x1, t), x1)
    sample, velocity = ex01.path_functions(linear_xt, lambda x0, x1, t: x1 - x0)
    assert sample is linear_xt
    assert _out(capsys).count("Using your") == 2


# --- lab 02 -----------------------------------------------------------------------------------------------------------

def marginal_field(x, t, means, weights):
    logits = weights.log()[None] - (x[:, None] - col(t) * means[None]) ** 2 / (2 * (1 - col(t)) ** 2)
    return (torch.softmax(logits, dim=1) * (means[None] - x[:, None]) / (1 - col(t))).sum(1)


def test_conditional_field_checker(capsys):
    assert ex02.check_conditional_field(lambda x, x1, t: (x1 - x) / (1 - col(t)))
    assert not ex02.check_conditional_field(lambda x, x1, t: (x - x1) / (1 - col(t)))
    assert "sign is flipped" in _out(capsys)
    assert not ex02.check_conditional_field(lambda x, x1, t: (x1 - x) / col(t))
    assert "time convention looks flipped" in _out(capsys)
    assert not ex02.check_conditional_field(lambda x, x1, t: x1 - x)
    assert "division by the time left" in _out(capsys)
    garbage_checks(ex02.check_conditional_field, capsys)


def test_marginal_field_checker_matches_the_closed_form(capsys):
    x, t, means, weights = ex02.mixture_inputs()
    from fmlab.data import EmpiricalDistribution
    exact = EmpiricalDistribution(means[:, None], weights).velocity(x[:, None], t)[:, 0]
    assert torch.allclose(marginal_field(x, t, means, weights), exact)  # the solution is the closed form
    assert ex02.check_marginal_field(marginal_field)
    assert not ex02.check_marginal_field(lambda x, t, m, w: (w * (m[None] - x[:, None]) / (1 - col(t))).sum(1))
    assert "mixture weights w_k" in _out(capsys)
    assert not ex02.check_marginal_field(lambda *a: -marginal_field(*a))
    assert "sign is flipped" in _out(capsys)
    assert not ex02.check_marginal_field(lambda *a: marginal_field(*a)[:, None])
    assert "expected shape (32,), got (32, 1)" in _out(capsys)
    garbage_checks(ex02.check_marginal_field, capsys)
    fn = ex02.marginal_field_function(stub)
    assert "using fmlab's marginal field" in _out(capsys)
    assert torch.allclose(fn(x, t, means, weights), exact)


# --- lab 03 -----------------------------------------------------------------------------------------------------------

def cfm(model, x0, x1, t):
    x_t = (1 - col(t)) * x0 + col(t) * x1
    return (model(x_t, t) - (x1 - x0)).pow(2).mean()


def test_cfm_loss_checker(capsys):
    assert ex03.check_cfm_loss(cfm)
    assert "value and gradient" in _out(capsys)
    assert not ex03.check_cfm_loss(lambda m, x0, x1, t: (m(linear_xt(x0, x1, t), t) - (x0 - x1)).pow(2).mean())
    assert "sign is flipped" in _out(capsys)
    assert not ex03.check_cfm_loss(lambda m, x0, x1, t: (m(linear_xt(x1, x0, t), t) - (x0 - x1)).pow(2).mean())
    assert "time convention is flipped" in _out(capsys)
    assert not ex03.check_cfm_loss(lambda m, x0, x1, t: (m(linear_xt(x0, x1, t), t) - (x1 - x0)).pow(2).sum(1).mean())
    assert "summed the squared error" in _out(capsys)
    assert not ex03.check_cfm_loss(lambda m, x0, x1, t: (m(linear_xt(x0, x1, t), t) - (x1 - x0)).pow(2).mean(1))
    assert "shape ()" in _out(capsys)
    assert not ex03.check_cfm_loss(lambda m, x0, x1, t: cfm(m, x0, x1, t).detach())
    assert "does not depend on the model" in _out(capsys)
    garbage_checks(ex03.check_cfm_loss, capsys)


def euler(field, x, steps):
    dt = 1.0 / steps
    for k in range(steps):
        x = x + dt * field(x, torch.full((len(x),), k * dt, dtype=x.dtype))
    return x


def test_euler_sampler_checker(capsys):
    assert ex03.check_euler_sampler(euler)
    assert not ex03.check_euler_sampler(lambda f, x, n: euler(lambda y, t: -f(y, t), x, n))
    assert "sign is flipped" in _out(capsys)
    assert not ex03.check_euler_sampler(lambda f, x, n: euler(lambda y, t: f(y, t + 1.0 / n), x, n))
    assert "end of each step" in _out(capsys)
    assert not ex03.check_euler_sampler(lambda f, x, n: euler(lambda y, t: f(y, 1 - t), x, n))
    assert "times run backwards" in _out(capsys)
    assert not ex03.check_euler_sampler(lambda f, x, n: torch.stack([x, euler(f, x, n)]))
    assert "expected shape (16, 2), got (2, 16, 2)" in _out(capsys)
    garbage_checks(ex03.check_euler_sampler, capsys)


def train_loop(model, loss_fn, sample_data, steps, batch_size, lr, zero_grad=True, step=True):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        x1 = sample_data(batch_size)
        x0 = torch.randn_like(x1)
        t = torch.rand(batch_size)
        loss = loss_fn(model, x0, x1, t)
        if zero_grad:
            opt.zero_grad()
        loss.backward()
        if step:
            opt.step()


def test_training_loop_checker(capsys):
    assert ex03.check_training_loop(train_loop, cfm)  # the stated target, LOOP_STEPS steps
    assert f"target <= {ex03.LOOP_W2}" in _out(capsys)
    assert not ex03.check_training_loop(lambda *a: train_loop(*a, zero_grad=False), steps=20)
    assert "opt.zero_grad()" in _out(capsys)
    assert not ex03.check_training_loop(lambda *a: train_loop(*a, step=False), steps=20)
    assert "parameters did not change" in _out(capsys)
    assert not ex03.check_training_loop(train_loop, steps=20)  # too short to reach the target
    assert "above the target" in _out(capsys)
    assert not ex03.check_training_loop(stub)
    assert STUB_MESSAGE in _out(capsys)
    assert not ex03.check_training_loop(lambda *a: 1 / 0)
    assert "ZeroDivisionError" in _out(capsys)


# --- lab 04 -----------------------------------------------------------------------------------------------------------

def heun(field, x, t, dt):
    k1 = field(x, t)
    return x + dt / 2 * (k1 + field(x + dt * k1, t + dt))


def rk4(field, x, t, dt):
    k1 = field(x, t)
    k2 = field(x + dt / 2 * k1, t + dt / 2)
    k3 = field(x + dt / 2 * k2, t + dt / 2)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + field(x + dt * k3, t + dt))


def test_solver_order_checker_measures_the_order(capsys):
    order, errors = ex04.measured_order(heun)
    assert 1.8 < order < 2.3 and errors[-1] < errors[0]
    assert 3.8 < ex04.measured_order(rk4)[0] < 4.5
    assert 0.8 < ex04.measured_order(lambda f, x, t, dt: x + dt * f(x, t))[0] < 1.2
    assert ex04.check_solver_order(heun)
    assert ex04.check_solver_order(rk4, "rk4")
    assert "measured order" in _out(capsys)
    assert not ex04.check_solver_order(lambda f, x, t, dt: x + dt * f(x, t))
    assert "That is an Euler step (order 1)" in _out(capsys)
    assert not ex04.check_solver_order(lambda f, x, t, dt: 2 * x - heun(f, x, t, dt))
    assert "sign of the update is flipped" in _out(capsys)
    assert not ex04.check_solver_order(lambda f, x, t, dt: heun(f, x, t, dt)[:, 0])
    assert "expected shape (16, 2), got (16,)" in _out(capsys)
    garbage_checks(ex04.check_solver_order, capsys)


# --- lab 05 -----------------------------------------------------------------------------------------------------------

def ot_pair(x0, x1):
    _, cols = linear_sum_assignment(torch.cdist(x0, x1).pow(2).numpy())
    return x1[cols]


def test_ot_pair_checker(capsys):
    assert ex05.check_ot_pair(ot_pair)
    assert "the optimum (ot.emd2)" in _out(capsys)
    assert not ex05.check_ot_pair(lambda x0, x1: x1[torch.cdist(x0, x1).argmin(1)])
    assert "OT with replacement" in _out(capsys)
    assert not ex05.check_ot_pair(lambda x0, x1: x1)
    assert "independent pairing" in _out(capsys)
    assert not ex05.check_ot_pair(lambda x0, x1: x1[linear_sum_assignment(torch.cdist(x0, x1).numpy())[1]])
    assert "not of squared distances" in _out(capsys)
    assert not ex05.check_ot_pair(lambda x0, x1: torch.as_tensor(linear_sum_assignment(torch.cdist(x0, x1))[1]))
    assert "You returned indices" in _out(capsys)
    assert not ex05.check_ot_pair(lambda x0, x1: x1 + 0.1)
    assert "not rows of x1" in _out(capsys)
    garbage_checks(ex05.check_ot_pair, capsys)
    fn = ex05.ot_pair_function(stub)
    assert "using fmlab's OT pairing" in _out(capsys)
    x0, x1 = ex05.ot_pair_inputs()
    assert torch.allclose((x0 - fn(x0, x1)).pow(2).sum(), (x0 - ot_pair(x0, x1)).pow(2).sum())


# --- lab 06 -----------------------------------------------------------------------------------------------------------

CONVERSIONS = {("velocity", "x1"): lambda v, x, t: x + (1 - col(t)) * v,
               ("x1", "velocity"): lambda a, x, t: (a - x) / (1 - col(t)),
               ("velocity", "eps"): lambda v, x, t: x - col(t) * v,
               ("eps", "velocity"): lambda e, x, t: (x - e) / col(t)}


@pytest.mark.parametrize("pair", list(CONVERSIONS))
def test_conversion_checker(pair, capsys):
    fn = CONVERSIONS[pair]
    assert ex06.check_conversion(fn, *pair)
    assert not ex06.check_conversion(lambda p, x, t: -fn(p, x, t), *pair)
    assert "sign is flipped" in _out(capsys)
    assert not ex06.check_conversion(lambda p, x, t: fn(p, x, 1 - t), *pair)
    assert "time convention looks flipped" in _out(capsys)
    garbage_checks(lambda f, quiet=False: ex06.check_conversion(f, *pair, quiet=quiet), capsys)


def test_conversion_checker_names_the_other_head(capsys):
    assert not ex06.check_conversion(lambda v, x, t: x - col(t) * v, "velocity", "x1")
    assert "That is the noise head" in _out(capsys)
    assert not ex06.check_conversion(lambda v, x, t: x + v, "velocity", "x1")
    assert "time factor is missing" in _out(capsys)
    with pytest.raises(ValueError, match="source, target"):
        ex06.check_conversion(CONVERSIONS["velocity", "x1"], "x1", "eps")


# --- lab 11 -----------------------------------------------------------------------------------------------------------

def meanflow(model, x0, x1, s, t, detach=True, tangent=(1.0, 0.0)):
    x = (1 - col(s)) * x0 + col(s) * x1
    v = x1 - x0
    u, du = jvp(lambda a, b, c: model(a, b, c), (x, s, t), (v, tangent[0] * torch.ones_like(s),
                                                            tangent[1] * torch.ones_like(t)))
    target = v + col(t - s) * du
    return (u - (target.detach() if detach else target)).pow(2).mean()


def test_meanflow_checker_uses_value_and_gradient(capsys):
    assert ex08.check_meanflow_loss(meanflow)
    assert "value and gradient" in _out(capsys)
    assert not ex08.check_meanflow_loss(lambda *a: meanflow(*a, detach=False))
    assert "forgot the stop-gradient" in _out(capsys)
    assert not ex08.check_meanflow_loss(lambda *a: meanflow(*a, tangent=(0.0, 1.0)))
    assert "differentiated in t instead of s" in _out(capsys)
    assert not ex08.check_meanflow_loss(lambda *a: meanflow(*a, tangent=(0.0, 0.0)))
    assert "misses the time direction" in _out(capsys)
    garbage_checks(ex08.check_meanflow_loss, capsys)


def test_meanflow_stop_gradient_changes_only_the_gradient():
    """The detector's premise: without the stop-gradient the value is the same and the gradient is not."""
    model = ex03.loss_model(time_inputs=2)
    x0, x1, s, _, t = ex08.two_time_inputs()
    a, b = meanflow(model, x0, x1, s, t), meanflow(model, x0, x1, s, t, detach=False)
    assert torch.allclose(a, b)
    from fmlab.exercises.code import gradient_of
    ga, gb = gradient_of(a, model), gradient_of(b, model)
    assert (ga - gb).abs().max() > 1e-3 * ga.abs().max()


def shortcut_target(model, x, s, r, t, no_grad=True):
    with torch.no_grad() if no_grad else torch.enable_grad():
        u1 = model(x, s, r)
        u2 = model(x + col(r - s) * u1, r, t)
        lam = col((r - s) / (t - s))
        return lam * u1 + (1 - lam) * u2


def test_shortcut_target_checker(capsys):
    assert ex08.check_shortcut_target(shortcut_target)
    assert not ex08.check_shortcut_target(lambda *a: shortcut_target(*a, no_grad=False))
    assert "still carries a gradient" in _out(capsys)

    def equal_weights(model, x, s, r, t):
        with torch.no_grad():
            u1 = model(x, s, r)
            return 0.5 * (u1 + model(x + col(r - s) * u1, r, t))

    assert not ex08.check_shortcut_target(equal_weights)
    assert "equal weights" in _out(capsys)

    def from_x(model, x, s, r, t):
        with torch.no_grad():
            lam = col((r - s) / (t - s))
            return lam * model(x, s, r) + (1 - lam) * model(x, r, t)

    assert not ex08.check_shortcut_target(from_x)
    assert "second jump starts from x" in _out(capsys)
    garbage_checks(ex08.check_shortcut_target, capsys)


# --- lab 00 -----------------------------------------------------------------------------------------------------------

def test_min_steps_checker(capsys):
    """On the exact field of a 2-mode mixture (no training): the checker's verdict follows its definition."""
    from fmlab.data import gmm_2d
    from fmlab.metrics import wasserstein
    from fmlab.viz.welcome import sample_model

    gmm = gmm_2d("8modes")

    class Exact(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t):
            return gmm.velocity(x.double(), t.double()).to(x.dtype)

    model, data = Exact(), gmm.sample(300, generator=torch.Generator().manual_seed(0)).float()
    target = 1.1 * wasserstein(sample_model(model, 300, steps=50), data)
    w = {k: wasserstein(sample_model(model, 300, steps=k), data) for k in range(1, 13)}
    k_min = next(k for k in w if w[k] <= target and (k == 1 or w[k - 1] > target))
    assert ex00.check_min_steps(k_min, model, data)
    assert not ex00.check_min_steps(k_min + 1, model, data) or w[k_min] > target
    assert "smaller k" in _out(capsys)
    if k_min > 1:
        assert not ex00.check_min_steps(k_min - 1, model, data)
        assert "more steps" in _out(capsys)
    assert not ex00.check_min_steps(None, model, data)
    assert "whole number" in _out(capsys)
    assert not ex00.check_min_steps(2.5, model, data)


def test_fallbacks_and_the_exercise_report(capsys):
    """Each *_function helper returns fmlab's function with a note while the stub is empty, the student's once it
    passes; the report lists the open exercises."""
    from fmlab.exercises.code import exercise_report
    from fmlab.solvers import SOLVERS

    assert ex04.step_function(stub, "rk4") is SOLVERS["rk4"].step
    assert ex04.step_function(rk4, "rk4") is rk4
    assert ex03.euler_function(euler) is euler
    assert ex03.cfm_function(stub) is ex03.reference_cfm_loss
    fn = ex06.conversion_function(stub, "eps", "velocity")
    out = _out(capsys)
    assert out.count("Note: using fmlab's") == 3 and out.count("Using your") == 2
    x0, x1, t = torch.randn(4, 2), torch.randn(4, 2), torch.full((4,), 0.5)
    assert torch.allclose(fn(x0, 0.5 * x0 + 0.5 * x1, t), x1 - x0)
    state = torch.random.get_rng_state()
    assert not ex03.check_training_loop(stub)
    assert torch.equal(torch.random.get_rng_state(), state)  # the checker leaves the global random stream alone
    _out(capsys)
    assert exercise_report({"a": ex01.check_sample_xt(linear_xt, quiet=True),
                            "b": ex01.check_sample_xt(stub, quiet=True)}) == ["b"]
    out = _out(capsys)
    assert "1 of 2 pass" in out and "open: b" in out
    assert exercise_report({"a": ex01.check_sample_xt(linear_xt, quiet=True)}) == []
    assert "all done" in _out(capsys)


# --- lab 13 -----------------------------------------------------------------------------------------------------------

def image_step(model, optimizer, x0, x1, t, *, flip=False, zero=True, step=True, reduce="mean"):
    tc = t.view(-1, 1, 1, 1)
    x_t = tc * x0 + (1 - tc) * x1 if flip else (1 - tc) * x0 + tc * x1
    err = (model(x_t, t) - ((x0 - x1) if flip else (x1 - x0))).pow(2)
    loss = err.mean() if reduce == "mean" else err.sum((1, 2, 3)).mean()
    if zero:
        optimizer.zero_grad()
    loss.backward()
    if step:
        optimizer.step()
    return loss.item()


def test_image_training_step_checker(capsys):
    from fmlab.exercises import celeba64 as ex13

    state = torch.random.get_rng_state()
    assert ex13.check_train_step(image_step)
    assert "correct" in _out(capsys)
    assert torch.equal(torch.random.get_rng_state(), state)  # the checker leaves the global random stream alone
    assert ex13.check_train_step(ex13.reference_train_step, quiet=True)
    cases = {
        "Gradients were not zeroed": dict(zero=False),
        "time convention is flipped": dict(flip=True),
        "summed the squared error over pixels": dict(reduce="sum"),
        "parameters did not change": dict(step=False),
    }
    for message, kwargs in cases.items():
        assert not ex13.check_train_step(lambda *a, kw=kwargs: image_step(*a, **kw))
        assert message in _out(capsys), message

    def no_backward(model, optimizer, x0, x1, t):
        optimizer.step()
        return 0.0

    assert not ex13.check_train_step(no_backward)
    assert "loss.backward() was not called" in _out(capsys)

    def ascent(model, optimizer, x0, x1, t):
        tc = t.view(-1, 1, 1, 1)
        loss = (model((1 - tc) * x0 + tc * x1, t) - (x1 - x0)).pow(2).mean()
        optimizer.zero_grad()
        (-loss).backward()
        optimizer.step()
        return loss.item()

    assert not ex13.check_train_step(ascent)
    assert "climbs the loss" in _out(capsys)

    def unshaped_time(model, optimizer, x0, x1, t):
        return image_step(model, optimizer, x0, x1, t[:, None, None, None]) + ((1 - t) * x0).sum().item()

    assert not ex13.check_train_step(unshaped_time)
    assert "t.view(-1, 1, 1, 1)" in _out(capsys)
    assert not ex13.check_train_step(lambda *a: image_step(*a) + 1.0)  # the update is right, the value is not
    assert "returned loss" in _out(capsys)
    assert not ex13.check_train_step(stub)
    assert STUB_MESSAGE in _out(capsys)
    assert not ex13.check_train_step(42)
    assert "expected a function" in _out(capsys)
    assert not ex13.check_train_step(lambda *a: "no")
    assert "must return the loss as a number" in _out(capsys)
    assert ex13.train_step_function(stub) is ex13.reference_train_step
    assert ex13.train_step_function(image_step) is image_step
