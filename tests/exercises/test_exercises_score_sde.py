"""Checkers of the score-and-SDE lab: a correct answer passes, named mistakes get their own feedback, garbage fails
with a message, and later cells fall back to fmlab's function while the stub is empty."""

import math

import torch

from fmlab.exercises import score_sde as ex
from fmlab.exercises.code import STUB_MESSAGE, run_student
from fmlab.paths import score_from_velocity
from fmlab.solvers import Euler, ddim_step, marginal_sde_drift, noise_level_diffusion


def _message(capsys):
    return capsys.readouterr().out


def test_score_checker_accepts_the_formula_and_fmlab(capsys):
    assert ex.check_score_from_velocity(lambda v, x, t: (t[:, None] * v - x) / (1 - t[:, None]))
    assert ex.check_score_from_velocity(score_from_velocity, quiet=True)
    assert "correct" in _message(capsys)


def test_score_checker_names_the_sign_and_the_time_convention(capsys):
    assert not ex.check_score_from_velocity(lambda v, x, t: (x - t[:, None] * v) / (1 - t[:, None]))
    assert "sign is flipped" in _message(capsys)
    assert not ex.check_score_from_velocity(lambda v, x, t: ((1 - t[:, None]) * v - x) / t[:, None])
    assert "time convention looks flipped" in _message(capsys)
    assert not ex.check_score_from_velocity(lambda v, x, t: x - t[:, None] * v)
    assert "noise head" in _message(capsys)
    assert not ex.check_score_from_velocity(lambda v, x, t: (t[:, None] * v - x) / (1 - t[:, None]) ** 2)
    assert "(1 - t)^2" in _message(capsys)


def test_score_checker_explains_shapes_and_broadcasting(capsys):
    assert not ex.check_score_from_velocity(lambda v, x, t: (t * v - x) / (1 - t))  # t [B] against [B, 2]
    out = _message(capsys)
    assert "raised RuntimeError" in out and "t[:, None]" in out
    assert not ex.check_score_from_velocity(lambda v, x, t: ((t[:, None] * v - x) / (1 - t[:, None])).sum(1))
    out = _message(capsys)
    assert "expected shape (16, 2), got (16,)" in out


def test_score_checker_on_garbage_and_stubs(capsys):
    def stub(v, x, t):
        raise NotImplementedError

    assert not ex.check_score_from_velocity(stub)
    assert STUB_MESSAGE in _message(capsys)
    assert not ex.check_score_from_velocity(lambda v, x, t: "score")
    assert "must return a tensor" in _message(capsys)
    assert not ex.check_score_from_velocity(lambda v, x, t: torch.zeros_like(x) / 0)
    assert "NaN" in _message(capsys)
    assert not ex.check_score_from_velocity(42)
    assert "expected a function" in _message(capsys)
    assert not ex.check_score_from_velocity(lambda v, x, t: torch.randn_like(x))
    assert "off by up to" in _message(capsys)


def test_score_function_falls_back_with_a_note(capsys):
    def stub(v, x, t):
        raise NotImplementedError

    fn = ex.score_function(stub)
    out = _message(capsys)
    assert "using fmlab's score from the velocity" in out and "stub is still empty" in out
    v, x, t, exact = ex.score_inputs()
    assert torch.allclose(fn(v, x, t), exact)
    mine = lambda v, x, t: (t[:, None] * v - x) / (1 - t[:, None])  # noqa: E731
    assert ex.score_function(mine) is mine
    assert "Using your score" in _message(capsys)


def test_sde_step_reference_is_fmlabs_euler_maruyama_step():
    v, x, t, dt, eta, z = ex.sde_step_inputs()
    from fmlab.data import gmm_2d
    gmm = gmm_2d("8modes")
    drift = marginal_sde_drift(lambda y, s: gmm.velocity(y, s), eta)
    g = noise_level_diffusion(eta)(t)[:, None]
    want = x + dt * drift(x, t) + g * math.sqrt(dt) * z
    assert torch.allclose(ex.reference_sde_step(v, x, t, dt, eta, z), want, atol=1e-12)


def test_sde_step_checker(capsys):
    assert ex.check_sde_step(ex.reference_sde_step)
    assert "correct" in _message(capsys)

    def wrong_sign(v, x, t, dt, eta, z):
        tc = t[:, None]
        return x + dt * (v + eta * (x - tc * v)) + torch.sqrt(2 * eta * (1 - tc) * dt) * z

    def dt_noise(v, x, t, dt, eta, z):
        tc = t[:, None]
        return x + dt * (v - eta * (x - tc * v)) + torch.sqrt(2 * eta * (1 - tc)) * dt * z

    def flipped(v, x, t, dt, eta, z):
        tc = t[:, None]
        return x + dt * (v - eta * (x - tc * v)) + torch.sqrt(2 * eta * tc * dt) * z

    assert not ex.check_sde_step(wrong_sign)
    assert "wrong sign" in _message(capsys)
    assert not ex.check_sde_step(dt_noise)
    assert "sqrt(dt)" in _message(capsys)
    assert not ex.check_sde_step(flipped)
    assert "time convention looks flipped" in _message(capsys)
    assert not ex.check_sde_step(lambda v, x, t, dt, eta, z: x + dt * v)
    assert "off by up to" in _message(capsys)


def test_ddim_answer_is_fmlabs_ddim_and_euler_step(capsys):
    setup = ex.DDIM_SETUP
    x = torch.tensor([setup["x"]], dtype=torch.float64)
    x1 = torch.tensor([setup["x1_hat"]], dtype=torch.float64)
    t = torch.tensor([setup["t"]], dtype=torch.float64)
    field = lambda y, s: (x1 - y) / (1 - s[:, None])  # noqa: E731  (a network predicting x1_hat)
    assert torch.allclose(ddim_step(field, x, t, setup["t_next"])[0], ex.ddim_answer())
    assert torch.allclose(Euler.step(field, x, t, setup["t_next"] - setup["t"])[0], ex.ddim_answer())
    assert ex.check_ddim_step(ex.ddim_answer().tolist())
    assert not ex.check_ddim_step([1.0, 1.0])
    assert not ex.check_ddim_step("one")
    assert "expected" in _message(capsys)


def test_min_snr_switch(capsys):
    t = ex.min_snr_switch_answer()
    assert math.isclose(t**2 / (1 - t) ** 2, 5.0)
    assert ex.check_min_snr_switch(t)
    assert not ex.check_min_snr_switch(1 - t)
    assert "data at t = 0" in _message(capsys)
    assert not ex.check_min_snr_switch(math.log(5))
    assert not ex.check_min_snr_switch(None)


def test_run_student_reports_exceptions():
    value, problem = run_student(lambda: 1 / 0)
    assert value is None and "ZeroDivisionError" in problem
