"""Metrics against closed forms: Bures W2, translations, 1D quantile formulas, Gaussian MMD, rotation geometry."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.linalg import sqrtm

from fmlab import metrics
from fmlab.metrics import (
    mmd,
    noise_floor,
    path_length_ratio,
    sliced_wasserstein,
    straightness,
    w2_vs_steps,
    wasserstein,
)
from fmlab.solvers import Trajectory, solve

torch.set_num_threads(1)
DT = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def moment_matched(n, mean, cov, seed):
    """n points whose empirical mean and covariance equal (mean, cov) exactly."""
    z = torch.randn(n, len(mean), generator=gen(seed), dtype=DT)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T  # empirical cov I
    return z @ torch.linalg.cholesky(torch.as_tensor(cov, dtype=DT)).T + torch.as_tensor(mean, dtype=DT)


def test_w2_gaussians_approach_bures():
    m1, m2 = np.array([0.0, 0.0]), np.array([2.0, 1.0])
    s1, s2 = np.array([[1.0, 0.3], [0.3, 0.5]]), np.array([[0.5, -0.2], [-0.2, 1.5]])
    r = np.real(sqrtm(s1))
    bures = math.sqrt(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(r @ s2 @ r))))
    w2 = wasserstein(moment_matched(800, m1, s1, 0), moment_matched(800, m2, s2, 1))
    # Gelbrich: W2 >= Bures distance of the moments, equal for Gaussians; samples converge from above.
    assert bures - 1e-9 <= w2 < bures + 0.02


@pytest.mark.parametrize("p", [1, 2, 3])
def test_translation_is_exact(p):
    x = torch.randn(60, 3, generator=gen(1), dtype=DT)
    shift = torch.tensor([0.3, -1.2, 0.5], dtype=DT)
    y = (x + shift)[torch.randperm(60, generator=gen(2))]
    assert wasserstein(x, y, p=p) == pytest.approx(shift.norm().item(), rel=1e-9)


def test_w1_1d_sorted_formula_and_unequal_sizes():
    x = torch.randn(200, 1, generator=gen(3), dtype=DT)
    y = 0.5 * torch.randn(200, generator=gen(4), dtype=DT)[:, None] ** 3 + 0.2
    sorted_w1 = (x.flatten().sort().values - y.flatten().sort().values).abs().mean().item()
    assert wasserstein(x, y, p=1) == pytest.approx(sorted_w1, rel=1e-9)
    sorted_w2 = (x.flatten().sort().values - y.flatten().sort().values).pow(2).mean().sqrt().item()
    assert wasserstein(x, y, p=2) == pytest.approx(sorted_w2, rel=1e-9)
    z = y[:130]
    assert wasserstein(x, z, p=1) == pytest.approx(scipy.stats.wasserstein_distance(x[:, 0], z[:, 0]), rel=1e-7)


def test_wasserstein_accepts_images_and_float32():
    x = torch.randn(20, 1, 2, 2, generator=gen(5))
    assert wasserstein(x, x) == pytest.approx(0.0, abs=1e-6)
    assert wasserstein(x, x + 1) == pytest.approx(2.0, rel=1e-5)  # ||1_4|| = 2


def test_wasserstein_raises_when_solver_stops_early(monkeypatch):
    monkeypatch.setattr(metrics.ot, "emd2", lambda *a, **k: (0.0, {"result_code": 3, "warning": "numItermax"}))
    with pytest.raises(RuntimeError, match="numItermax"):
        wasserstein(torch.zeros(3, 2), torch.ones(3, 2))


def test_sliced_matches_translation_and_1d():
    x = torch.randn(100, 2, generator=gen(6), dtype=DT)
    c = torch.tensor([1.5, -2.0], dtype=DT)
    sw = sliced_wasserstein(x, x + c, n_projections=4000, generator=gen(7))
    assert sw == pytest.approx(c.norm().item() / math.sqrt(2), rel=0.03)  # SW2^2 = E (theta . c)^2 = |c|^2 / d
    assert sw <= wasserstein(x, x + c)
    x1, y1 = x[:, :1], x[:70, 1:] * 2
    assert sliced_wasserstein(x1, y1, n_projections=3) == pytest.approx(wasserstein(x1, y1), rel=1e-7)


def gaussian_mmd2(m1, s1, m2, s2, d, bandwidths):
    """Closed-form MMD^2 between N(m1, s1^2 I) and N(m2, s2^2 I) for a sum of RBF kernels."""

    def ek(ma, sa, mb, sb):
        return sum((h**2 / (h**2 + sa**2 + sb**2)) ** (d / 2)
                   * math.exp(-np.sum((ma - mb) ** 2) / (2 * (h**2 + sa**2 + sb**2))) for h in bandwidths)

    return ek(m1, s1, m1, s1) + ek(m2, s2, m2, s2) - 2 * ek(m1, s1, m2, s2)


def test_mmd_matches_gaussian_closed_form():
    bw = (0.5, 1.0, 2.0)
    truth = gaussian_mmd2(np.zeros(2), 1.0, np.array([0.7, 0.0]), 0.8, 2, bw)
    shift = torch.tensor([0.7, 0.0], dtype=DT)
    draws = [(torch.randn(1000, 2, generator=gen(2 * k), dtype=DT),
              0.8 * torch.randn(1000, 2, generator=gen(2 * k + 1), dtype=DT) + shift) for k in range(4)]
    estimate = np.mean([mmd(x, y, bw) for x, y in draws])  # std of one draw ~ 9% of truth, of the mean ~ 4.6%
    assert estimate == pytest.approx(truth, rel=0.15)
    same = mmd(draws[0][0], draws[1][0], bw)
    assert abs(same) < 0.05 * truth


def test_mmd_is_the_unbiased_u_statistic():
    x, y = torch.randn(5, 2, generator=gen(11), dtype=DT), torch.randn(4, 2, generator=gen(12), dtype=DT)

    def k(a, b):
        return sum(math.exp(-float((a - b).pow(2).sum()) / (2 * h**2)) for h in (0.5, 1.0))

    kxx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    kyy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    kxy = sum(k(a, b) for a in x for b in y) / 20
    assert mmd(x, y, (0.5, 1.0)) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)


def test_noise_floor_decreases_with_n():
    def sample(n, generator):
        return torch.randn(n, 2, generator=generator, dtype=DT)

    small, small_std = noise_floor(sample, 50, "w2", repeats=3)
    large, large_std = noise_floor(sample, 400, "w2", repeats=3)
    assert large < small and small_std > 0 and large_std >= 0
    assert noise_floor(sample, 50, "w2", repeats=3) == (small, small_std)  # seeded
    mean, std = noise_floor(sample, 100, "mmd", repeats=1, seed=3)
    assert std == 0.0 and abs(mean) < 0.05


def test_straightness_zero_for_straight_constant_speed_paths():
    # v(x, t) = x / (1 + t) moves x(t) = (1 + t) x(0) along a straight line at constant speed; Euler is exact.
    x = torch.randn(50, 2, generator=gen(13), dtype=DT)
    traj = solve(lambda z, t: z / (1 + t[:, None]), x, 10, "euler", return_trajectory=True)
    assert torch.allclose(traj.x, 2 * x)
    assert straightness(traj) < 1e-20
    assert path_length_ratio(traj) == pytest.approx(1.0, abs=1e-12)


def test_rotation_matches_closed_form():
    # v = omega J x rotates by omega over [0, 1]: S = |x0|^2 (omega^2 - 4 sin^2(omega / 2)),
    # path length / chord = omega / (2 sin(omega / 2)).
    omega = math.pi / 2
    jmat = torch.tensor([[0.0, -omega], [omega, 0.0]], dtype=DT)
    x = torch.randn(40, 2, generator=gen(14), dtype=DT)
    traj = solve(lambda z, t: z @ jmat.T, x, 200, "rk4", return_trajectory=True)
    s_true = x.pow(2).sum(-1).mean().item() * (omega**2 - 4 * math.sin(omega / 2) ** 2)
    assert straightness(traj) == pytest.approx(s_true, rel=1e-3)
    assert straightness(traj.xs) == pytest.approx(s_true, rel=1e-3)  # bare tensor: uniform grid on [0, 1]
    assert path_length_ratio(traj) == pytest.approx(omega / (2 * math.sin(omega / 2)), rel=1e-4)


def test_straightness_on_partial_interval_is_time_averaged():
    # x(t) = t^2 e on [0.5, 1]: chord speed 1.5, v = 2t; (1/T) int (1.5 - 2t)^2 dt = 1 / 12 (T = 1/2).
    ts = torch.linspace(0.5, 1.0, 2001, dtype=DT)
    xs = (ts**2)[:, None, None] * torch.tensor([[1.0, 0.0]], dtype=DT)
    assert straightness(Trajectory(xs=xs, ts=ts, nfe=0)) == pytest.approx(1 / 12, rel=1e-5)


def test_w2_vs_steps_improves_with_steps():
    omega = 1.0
    jmat = torch.tensor([[0.0, -omega], [omega, 0.0]], dtype=DT)
    x0 = torch.randn(100, 2, generator=gen(15), dtype=DT)
    data = x0 @ torch.linalg.matrix_exp(jmat).T
    res = w2_vs_steps(lambda z, t: z @ jmat.T, x0, data, [1, 4, 16], method="euler")
    assert list(res) == [1, 4, 16] and res[1] > res[4] > res[16]
    # bounded by the pointwise error: Euler multiplies radii by (1 + omega^2 / k^2)^(k / 2)
    assert res[16] <= (math.sqrt(1 + 1 / 256) ** 16 - 1) * x0.norm(dim=1).pow(2).mean().sqrt().item() * 1.01 + 1e-9


@pytest.mark.parametrize(("call", "match"), [
    (lambda: wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), p=0.5), "p must"),
    (lambda: wasserstein(torch.zeros(3, 2), torch.zeros(3, 3)), "y must"),
    (lambda: wasserstein(torch.zeros(0, 2), torch.zeros(3, 2)), "x must"),
    (lambda: sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), n_projections=0), "n_projections"),
    (lambda: mmd(torch.zeros(3, 2), torch.zeros(3, 2), bandwidths=(1.0, -1.0)), "bandwidths"),
    (lambda: mmd(torch.zeros(1, 2), torch.zeros(3, 2)), "at least 2"),
    (lambda: noise_floor(lambda n, generator: torch.zeros(n, 2), 10, metric="fid"), "metric"),
    (lambda: noise_floor(lambda n, generator: torch.zeros(n, 2), 0), "n must"),
    (lambda: straightness(torch.zeros(1, 4, 2)), "traj"),
    (lambda: straightness(torch.zeros(3, 4, 2), ts=torch.tensor([0.0, 0.5, 0.5])), "ts"),
    (lambda: w2_vs_steps(lambda z, t: z, torch.zeros(3, 2), torch.zeros(3, 2), []), "steps"),
    (lambda: w2_vs_steps(lambda z, t: z, torch.zeros(3, 2), torch.zeros(3, 2), [2], p=0), "p must"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
