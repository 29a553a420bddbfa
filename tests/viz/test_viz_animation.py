"""Side-by-side particle animations: one panel per method from the same noise, frames that hold each method's states
at the shared times, a slider and play button that work without the kernel, and clear errors."""

import numpy as np
import pytest
import torch

from fmlab.solvers import solve
from fmlab.viz.animation import MAX_FRAMES, render_particles_animation, trajectory_states


def _straight(n_steps=10, n=5, scale=1.0):
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    ts = torch.linspace(0, 1, n_steps + 1)
    return (1 - ts[:, None, None]) * x0 + ts[:, None, None] * scale * torch.sign(x0)


def test_frames_hold_every_panels_states_at_the_shared_times():
    a, b = _straight(), _straight(scale=2.0)
    data = torch.zeros(3, 2)
    fig = render_particles_animation({"a": a, "b": b}, data=data, colors={"a": "#000000"})
    assert len(fig.frames) == 11 and [f.name for f in fig.frames][:2] == ["0.00", "0.10"]
    particles = fig.frames[0].traces
    assert len(fig.data) == 4 and list(particles) == [2, 3]  # two data backgrounds, then the particles
    np.testing.assert_allclose(fig.data[2].x, a[0, :, 0].numpy())
    np.testing.assert_allclose(fig.frames[7].data[1].y, b[7, :, 1].numpy())  # panel b at t = 0.7
    assert fig.data[2].marker.color == "#000000"
    steps = fig.layout.sliders[0].steps
    assert len(steps) == 11 and list(steps[3].args[0]) == ["0.30"]  # the slider jumps to the frame of the same name
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["play", "pause"]


def test_long_trajectories_are_thinned_and_solver_trajectories_accepted():
    fig = render_particles_animation({"a": _straight(200)})
    assert len(fig.frames) == MAX_FRAMES and fig.frames[-1].name == "1.00" and fig.frames[0].name == "0.00"

    def field(x, t):
        return -x

    trajectory = solve(field, torch.ones(4, 2), steps=4, method="euler", return_trajectory=True)
    xs, ts = trajectory_states(trajectory)
    assert xs.shape == (5, 4, 2) and torch.allclose(ts.double(), torch.linspace(0, 1, 5).double())
    fig = render_particles_animation({"euler": trajectory})
    np.testing.assert_allclose(fig.frames[-1].data[0].x, trajectory.xs[-1, :, 0].numpy())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least one"):
        render_particles_animation({})
    with pytest.raises(ValueError, match=r"tensor \[n \+ 1, B, 2\]"):
        render_particles_animation({"a": torch.zeros(5, 2)})
    with pytest.raises(ValueError, match="times and particle count of the first"):
        render_particles_animation({"a": _straight(10), "b": _straight(5)})
    with pytest.raises(ValueError, match="max_frames must be an integer >= 2"):
        render_particles_animation({"a": _straight()}, max_frames=1)
