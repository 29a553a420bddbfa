"""fmlab.exercises: the checkers accept the right answers, reject wrong ones and explain why."""

import math

import pytest
import torch

from fmlab.exercises import check_array, check_choice, check_number
from fmlab.exercises import fields as EF
from fmlab.exercises import paths as EP
from fmlab.paths import get_schedule


def test_shared_checkers(capsys):
    assert check_number("x", 1.001, 1.0)
    assert "correct" in capsys.readouterr().out
    assert not check_number("x", 2.0, 1.0, hint="think")
    assert "too large. think" in capsys.readouterr().out
    assert not check_number("x", "abc", 1.0, quiet=True)
    assert not check_number("x", float("nan"), 1.0, quiet=True)
    assert check_array("v", [1.0, 2.0], torch.tensor([1.0, 2.0]), quiet=True)
    assert not check_array("v", [1.0, 2.0, 3.0], torch.tensor([1.0, 2.0]), quiet=True)
    assert not check_array("v", [1.0, 2.5], torch.tensor([1.0, 2.0]), quiet=True)
    assert check_choice("c", "b", "b", ["a", "b"], quiet=True)
    assert not check_choice("c", "z", "b", ["a", "b"], quiet=True)
    assert "\u2713" in repr(check_number("x", 1.0, 1.0, quiet=True))


def test_paths_checkers_against_sampling():
    g = torch.Generator().manual_seed(0)
    t = EP.CONDITIONAL_T
    x1 = torch.tensor([2.0, 1.0])
    xt = t * x1 + (1 - t) * torch.randn(400_000, 2, generator=g)
    assert EP.check_conditional_variance(xt.var(0).mean().item(), quiet=True)  # (1 - t)^2
    assert not EP.check_conditional_variance(1 - t, quiet=True)  # the std, not the variance
    s = EP.MARGINAL_T
    x1 = torch.where(torch.rand(400_000, generator=g) < 0.5, -3.0, 3.0)
    xt = s * x1 + (1 - s) * torch.randn(400_000, generator=g)
    assert EP.check_marginal_variance(xt.var().item(), quiet=True)  # 9 t^2 + (1 - t)^2 = 2.5
    assert not EP.check_marginal_variance(2.25, quiet=True)  # forgot the noise


def test_vp_crossing():
    t = EP.vp_crossing_time()
    a, s, _, _ = get_schedule("vp")(torch.tensor(t, dtype=torch.float64))
    assert a.item() == pytest.approx(s.item(), abs=1e-8)
    assert EP.check_vp_crossing(round(t, 2), quiet=True) and not EP.check_vp_crossing(0.5, quiet=True)


def test_fields_checkers():
    assert EF.check_conditional_velocity([4.0, 2.0], quiet=True)
    assert not EF.check_conditional_velocity([2.0, 1.0], quiet=True)  # forgot the 1 / (1 - t)
    assert EF.marginal_velocity_answer() == pytest.approx(2 * (3 * math.tanh(0.6) - 0.1), rel=1e-12)
    assert EF.check_marginal_velocity(3.0223, quiet=True)
    assert not EF.check_marginal_velocity(2 * (0.0 - 0.1), quiet=True)  # the average of the atoms, not posterior


def test_loss_constant_matches_monte_carlo():
    from fmlab.data import worked_example_1d

    data, t = worked_example_1d(), EF.WORKED_T
    g = torch.Generator().manual_seed(0)
    x1 = data.sample(1_000_000, generator=g).double()
    xt = t * x1 + (1 - t) * torch.randn(x1.shape, generator=g, dtype=torch.float64)
    mc = (data.posterior_variance(xt, t) / (1 - t) ** 2).mean().item()
    assert EF.loss_constant() == pytest.approx(mc, rel=0.02)
    assert EF.check_loss_constant(mc, quiet=True)
    assert not EF.check_loss_constant(9.0 / (1 - t) ** 2, quiet=True)  # the prior variance, not the posterior


def test_welcome_checker():
    from fmlab.exercises.welcome import check_time_on_path

    assert check_time_on_path(0.75, quiet=True) and not check_time_on_path(0.25, quiet=True)  # 0.25: noise share


def test_verdict_shown_once_in_a_notebook(capsys):
    """A checker ending a cell prints its verdict; IPython's display of the returned value adds nothing."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("from fmlab.exercises import check_number\ncheck_number('x', 1.0, 1.0)")
    shell.run_cell("check_number('y', 1.0, 2.0, quiet=True)")
    out = capsys.readouterr().out
    assert out.count("x = 1: correct.") == 1
    assert out.count("y = 1 is too small.") == 1  # a quiet verdict is shown by the display instead
