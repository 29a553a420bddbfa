import pytest
import torch
from torch.func import jvp

from fmlab.conventions import from_paper_time, paper_average_velocity, paper_path, paper_velocity, to_paper_time
from fmlab.paths import sample_path

pytestmark = pytest.mark.usefixtures("float64")


def test_paper_path_is_our_path_and_velocity_is_eps_minus_x():
    x, eps, t = torch.randn(16, 2), torch.randn(16, 2), torch.rand(16)
    ours = sample_path(eps, x, t)
    tau = to_paper_time(t)
    assert torch.allclose(paper_path(x, eps, tau), ours.x_t)
    assert torch.allclose(from_paper_time(tau), t)
    conditional = lambda z, tt: (x - z) / (1 - tt[:, None])  # noqa: E731  ours: (x1 - x_t) / (1 - t)
    assert torch.allclose(paper_velocity(conditional)(ours.x_t, tau), eps - x)  # MeanFlow's v = eps - x


def test_meanflow_identity_in_paper_symbols_holds_for_our_exact_map():
    # A 1D Gaussian target N(m, lam): our exact flow map is affine, X(x,s,t) = a_t m + r(s,t) (x - a_s m),
    # r = sqrt(var_t / var_s), var = t^2 lam + (1 - t)^2.  MeanFlow (Geng et al. 2025), data at 0:
    #   u(z, r, t) = v(z, t) - (t - r) d/dt u(z, r, t)   (total derivative along dz/dt = v)
    m, lam = 1.5, 0.3
    var = lambda t: t**2 * lam + (1 - t) ** 2  # noqa: E731
    dvar = lambda t: 2 * t * lam - 2 * (1 - t)  # noqa: E731

    def X(x, s, t):
        return t * m + torch.sqrt(var(t) / var(s)) * (x - s * m)

    def u(x, s, t):
        return (X(x, s, t) - x) / (t - s)

    def v(x, t):  # d/dt X at t = s: m + dvar / (2 var) (x - t m)
        return m + dvar(t) / (2 * var(t)) * (x - t * m)

    u_p, v_p = paper_average_velocity(lambda z, s, t: u(z, s, t)), paper_velocity(v)
    z, r, t = torch.randn(8), torch.rand(8) * 0.4 + 0.05, torch.rand(8) * 0.4 + 0.55  # r < t, paper times
    f = lambda zz, tt: u_p(zz, r, tt)  # noqa: E731
    _, dudt = jvp(f, (z, t), (v_p(z, t), torch.ones_like(t)))
    assert torch.allclose(u_p(z, r, t), v_p(z, t) - (t - r) * dudt, atol=1e-10)
