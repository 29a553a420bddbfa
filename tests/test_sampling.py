"""fmlab.sampling: a model is sampled the way its loss trained it, in the labs, the trainers and the CLI."""

import numpy as np
import pytest
import torch

from fmlab.checkpoint import load_checkpoint, save_checkpoint
from fmlab.cli import main
from fmlab.flowmaps import flow_map, sample_consistency, sample_flow_map
from fmlab.losses import get_loss, list_losses
from fmlab.models import build_model
from fmlab.runs import load_run
from fmlab.sampling import generate, methods_for, sample_methods, trajectory
from fmlab.train import CKPT_NAME

TINY = ["--steps", "20", "--hidden", "16", "--depth", "1", "--batch-size", "32", "--threads", "1",
        "--warmup", "2", "--log-every", "10", "--ckpt-every", "0", "--no-progress", "--data", "moons"]


class CountingModel(torch.nn.Module):
    """A two-time model that counts its calls."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.config = model, 0, model.config

    def forward(self, x, s, t):
        self.calls += 1
        return self.model(x, s, t)


@pytest.fixture(scope="module")
def two_time_model():
    torch.manual_seed(0)
    return build_model(time_inputs=2, hidden=16, depth=1).double().eval()


def test_every_loss_names_a_sampler_its_model_kind_supports():
    for spec in list_losses():
        assert spec.sampler in ("ode", "flowmap", "consistency", "noise_only")
        assert (spec.sampler == "ode") == (spec.time_inputs == 1), spec.name
        assert spec.display_name and methods_for(spec)[0] in sample_methods()
    assert {s.name for s in list_losses() if s.sampler == "consistency"} == {"ct", "cd", "facm"}
    assert {s.name for s in list_losses() if s.sampler == "noise_only"} == {"pid", "freeflow"}


def test_consistency_losses_sample_by_consistency_and_refuse_grid_jumps(two_time_model):
    x0 = torch.randn(64, 2, dtype=torch.float64)
    ours = generate(two_time_model, "ct", x0, 3, generator=torch.Generator().manual_seed(4))
    ref = sample_consistency(two_time_model, x0, steps=3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(ours, ref)
    assert not torch.allclose(ours, sample_flow_map(two_time_model, x0, steps=3))
    for method in ("flowmap", "euler"):
        with pytest.raises(ValueError, match=r"trained with 'ct' must be one of \('consistency',\)"):
            generate(two_time_model, "ct", x0, 3, method=method)


def test_noise_only_losses_make_one_jump_from_the_noise(two_time_model):
    counting = CountingModel(two_time_model)
    x0 = torch.randn(32, 2, dtype=torch.float64)
    for loss in ("pid", "freeflow"):
        counting.calls = 0
        x = generate(counting, loss, x0, 8)
        assert counting.calls == 1
        assert torch.allclose(x, flow_map(two_time_model, x0, 0.0, 1.0), atol=1e-12)
    traj = trajectory(two_time_model, "pid", x0, 4)
    assert traj.nfe == 1 and torch.allclose(traj.xs[2], flow_map(two_time_model, x0, 0.0, 0.5), atol=1e-12)


def test_flow_map_losses_jump_by_default_and_may_integrate_their_diagonal(two_time_model):
    x0 = torch.randn(16, 2, dtype=torch.float64)
    assert torch.equal(generate(two_time_model, "meanflow", x0, 4), sample_flow_map(two_time_model, x0, steps=4))
    assert generate(two_time_model, get_loss("meanflow"), x0, 4, method="heun").shape == x0.shape
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        generate(two_time_model, "meanflow", x0, 0)


def test_cli_sampling_of_a_ct_run_is_consistency_sampling(tmp_path, capsys):
    run = tmp_path / "ct"
    assert main(["train", "--loss", "ct", "--out", str(run), *TINY]) == 0
    out = tmp_path / "x.npy"
    assert main(["sample", str(run), "--n", "50", "--steps", "3", "--seed", "2", "--out", str(out)]) == 0
    model, _ = load_run(run)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(50, 2, generator=g)
    expected = sample_consistency(model, x0, steps=3, generator=g)
    assert np.allclose(np.load(out), expected.numpy(), atol=1e-6)
    assert not np.allclose(np.load(out), sample_flow_map(model, x0, steps=3).numpy(), atol=1e-3)
    assert main(["sample", str(run), "--steps", "3", "--solver", "flowmap", "--out", str(tmp_path / "y.npy")]) == 2
    assert "must be one of ('consistency',)" in capsys.readouterr().err


def test_cli_sampling_of_a_pid_run_is_one_jump(tmp_path):
    """PID needs a teacher object the CLI cannot pass: a two-time run relabelled as PID stands in for one."""
    run = tmp_path / "pid"
    assert main(["train", "--loss", "meanflow", "--out", str(run), *TINY]) == 0
    state = load_checkpoint(run / CKPT_NAME)
    state["config"]["loss"] = "pid"
    save_checkpoint(run / CKPT_NAME, state)
    out = tmp_path / "x.npy"
    assert main(["sample", str(run), "--n", "40", "--steps", "8", "--seed", "1", "--out", str(out)]) == 0
    model, _ = load_run(run)
    x0 = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    assert np.allclose(np.load(out), flow_map(model, x0, 0.0, 1.0).numpy(), atol=1e-6)


def test_velocity_losses_take_any_ode_solver_and_nothing_else():
    model = build_model(dim=2, hidden=8, depth=1)
    x0 = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    from fmlab.solvers import solve

    assert torch.equal(generate(model, "cfm", x0, 3, "heun"), solve(model, x0, steps=3, method="heun"))
    assert torch.equal(generate(model, "cfm", x0, 3), solve(model, x0, steps=3, method="euler"))
    for bad in ("rk45", "flowmap", "consistency"):
        with pytest.raises(ValueError, match=r"trained with 'cfm' must be one of \('euler'"):
            generate(model, "cfm", x0, 3, bad)
