"""Checkers of the guidance lab (fmlab.exercises.guidance): right answers pass, each named mistake is recognised."""

from fmlab.exercises import guidance as ex
from fmlab.exercises.code import STUB_MESSAGE
from fmlab.guidance import cfg_combine


def _stub(v_cond, v_uncond, w):
    raise NotImplementedError


def test_guided_velocity_checker():
    assert ex.check_guided_velocity(cfg_combine, quiet=True)
    assert ex.check_guided_velocity(lambda c, u, w: u + w * (c - u), quiet=True)
    assert STUB_MESSAGE in ex.check_guided_velocity(_stub, quiet=True).message
    cases = {
        "swapped": lambda c, u, w: c + w * (u - c),
        "Ho & Salimans": lambda c, u, w: (1 + w) * c - w * u,
        "base field is missing": lambda c, u, w: w * (c - u),
        "conditional field alone": lambda c, u, w: w * c,
    }
    for words, fn in cases.items():
        result = ex.check_guided_velocity(fn, quiet=True)
        assert not result and words in result.message, (words, result.message)
    fixed = ex.check_guided_velocity(lambda c, u, w: u + 2.5 * (c - u), quiet=True)  # right at w = 2.5 only
    assert not fixed and "not at w = 0" in fixed.message
    assert "shape" in ex.check_guided_velocity(lambda c, u, w: (u + w * (c - u)).sum(1), quiet=True).message


def test_guidance_rule_falls_back_to_fmlab(capsys):
    assert ex.guidance_rule(_stub) is cfg_combine
    assert "using fmlab's" in capsys.readouterr().out


def test_number_checkers():
    assert ex.check_ho_salimans(3, quiet=True) and ex.check_ho_salimans(3.0, quiet=True)
    assert "conditional model" in ex.check_ho_salimans(1, quiet=True).message
    assert not ex.check_ho_salimans(2, quiet=True)
    assert ex.check_acceptance(0.36, quiet=True)
    assert "P(c | x)^w" in ex.check_acceptance(0.216, quiet=True).message
    assert not ex.check_acceptance(0.6, quiet=True) and not ex.check_acceptance(None, quiet=True)
