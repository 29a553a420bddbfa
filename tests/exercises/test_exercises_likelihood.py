"""Checkers of the likelihood lab: a correct answer passes, named mistakes get their own feedback, garbage fails."""

import math

import torch

from fmlab.exercises import likelihood as ex
from fmlab.exercises.code import STUB_MESSAGE
from fmlab.likelihood import divergence


def _out(capsys):
    return capsys.readouterr().out


def _jacobian_rows(field, x, t):
    x = x.detach().requires_grad_(True)
    v = field(x, t)
    return [torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0] for i in range(v.shape[1])]


def test_exercise_field_divergence_is_what_the_docstring_says():
    x, t = ex.divergence_inputs()
    assert torch.allclose(divergence(ex.exercise_field, x, t), 2 * t * x[:, 0] + x[:, 0])


def test_divergence_checker_accepts_autograd_and_fmlab(capsys):
    def mine(field, x, t):
        rows = _jacobian_rows(field, x, t)
        return sum(r[:, i] for i, r in enumerate(rows))

    assert ex.check_divergence(mine)
    assert ex.check_divergence(divergence, quiet=True)
    assert "correct" in _out(capsys)


def test_divergence_checker_names_the_mistakes(capsys):
    def all_entries(field, x, t):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(field(x, t).sum(), x)
        return g.sum(1)

    def diagonal(field, x, t):
        rows = _jacobian_rows(field, x, t)
        return torch.stack([r[:, i] for i, r in enumerate(rows)], dim=1)

    def batch_sum(field, x, t):
        return divergence(field, x, t).sum()

    assert not ex.check_divergence(all_entries)
    assert "every entry of the Jacobian" in _out(capsys)
    assert not ex.check_divergence(diagonal)
    assert "Sum it over the coordinates" in _out(capsys)
    assert not ex.check_divergence(batch_sum)
    assert "summed over the batch" in _out(capsys)
    assert not ex.check_divergence(lambda f, x, t: -divergence(f, x, t))
    assert "sign is flipped" in _out(capsys)


def test_divergence_checker_on_garbage_and_stubs(capsys):
    def stub(field, x, t):
        raise NotImplementedError

    assert not ex.check_divergence(stub)
    assert STUB_MESSAGE in _out(capsys)
    assert not ex.check_divergence(lambda f, x, t: None)
    assert "must return a tensor" in _out(capsys)
    assert not ex.check_divergence(lambda f, x, t: torch.zeros(3))
    assert "expected shape (12,), got (3,)" in _out(capsys)
    fn = ex.divergence_function(stub)
    assert fn is divergence and "using fmlab's divergence" in _out(capsys)


def test_log_density_change(capsys):
    assert ex.check_log_density_change(2.0)
    assert not ex.check_log_density_change(-2.0)
    assert "not the change of log p" in _out(capsys)
    assert not ex.check_log_density_change(1)
    assert "one dimension" in _out(capsys)
    assert not ex.check_log_density_change("two")


def test_bits_per_dim(capsys):
    right = ex.BPD_NATS / (2 * math.log(2))
    assert ex.check_bits_per_dim(right)
    assert not ex.check_bits_per_dim(ex.BPD_NATS / math.log(2))
    assert "bits per point" in _out(capsys)
    assert not ex.check_bits_per_dim(ex.BPD_NATS / 2)
    assert "nats per dimension" in _out(capsys)
    assert not ex.check_bits_per_dim([1, 2])


def test_probes_for_half_se(capsys):
    assert ex.check_probes_for_half_se(4)
    assert not ex.check_probes_for_half_se(2)
    assert "sqrt(2)" in _out(capsys)
    assert not ex.check_probes_for_half_se(16)
    assert not ex.check_probes_for_half_se(float("nan"))
