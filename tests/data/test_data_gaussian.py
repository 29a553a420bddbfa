import math

import pytest
import torch

import fmlab.data.gaussian as gaussian_module
from fmlab.data.gaussian import EmpiricalDistribution, Gaussian, GaussianMixture, gmm_2d, worked_example_1d
from fmlab.data.toy import sample_toy
from fmlab.paths import get_schedule

F64 = torch.float64
SCHEDULES = ["linear", "cosine", "vp"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _f64(g: GaussianMixture) -> GaussianMixture:
    """The same mixture, built from float64 tensors (so that sample() returns float64)."""
    return GaussianMixture(g.means, covs=g.covs, weights=g.weights)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def asym() -> GaussianMixture:
    return _f64(gmm_2d("asymmetric"))


@pytest.fixture(scope="module")
def mix3() -> GaussianMixture:
    """A 3D mixture with random full covariances (non-symmetric eigenvector matrices)."""
    g = _gen(30)
    root = torch.randn(4, 3, 3, generator=g, dtype=F64)
    covs = root @ root.transpose(1, 2) / 3 + 0.05 * torch.eye(3, dtype=F64)
    return GaussianMixture(2 * torch.randn(4, 3, generator=g, dtype=F64), covs=covs,
                           weights=torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64))


@pytest.fixture(scope="module")
def gauss() -> Gaussian:
    return Gaussian(torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[1.5, 0.6], [0.6, 0.5]], dtype=F64))


def _coeffs(t: float, schedule: str):
    return [v.item() for v in get_schedule(schedule)(torch.tensor(t, dtype=F64))]


def _mixture_moments(g: GaussianMixture, t: float, schedule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of x_t = a x1 + s x0 from the mixture's moments."""
    a, s, _, _ = _coeffs(t, schedule)
    w, mu = g.weights, g.means
    mean = w @ mu
    cov = torch.einsum("k,kij->ij", w, g.covs) + torch.einsum("k,ki,kj->ij", w, mu - mean, mu - mean)
    return a * mean, a**2 * cov + s**2 * torch.eye(g.dim, dtype=F64)


def _grid(lim: float, n: int) -> tuple[torch.Tensor, float]:
    u = torch.linspace(-lim, lim, n, dtype=F64)
    xx, yy = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), (u[1] - u[0]).item() ** 2


# --- marginal density -------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t", [0.0, 0.4, 0.9])
def test_marginal_density_normalised_with_right_moments(asym, schedule, t):
    x, cell = _grid(9.0, 301)
    p = asym.marginal_log_prob(x, t, schedule).exp() * cell
    assert abs(p.sum().item() - 1) < 1e-6
    mean, cov = _mixture_moments(asym, t, schedule)
    m = p @ x
    c = (p[:, None] * (x - m)).T @ (x - m)
    torch.testing.assert_close(m, mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(c, cov, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stds", [torch.tensor([0.3, 0.8, 1.2]), torch.tensor([[0.3, 1.0], [0.8, 0.2], [1.5, 0.5]])])
def test_isotropic_and_diagonal_mixtures_normalised(stds):
    g = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], dtype=F64), stds=stds.double(),
                        weights=torch.tensor([0.2, 0.3, 0.5], dtype=F64))
    x, cell = _grid(9.0, 301)
    for t in (0.5, 1.0):
        p = g.marginal_log_prob(x, t).exp() * cell
        assert abs(p.sum().item() - 1) < 1e-6
        mean, cov = _mixture_moments(g, t, "linear")
        torch.testing.assert_close((p[:, None] * (x - mean)).T @ (x - mean), cov, atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_marginal_log_prob_matches_torch_distributions(mix3, schedule):
    x = 2 * torch.randn(64, 3, generator=_gen(31), dtype=F64)
    for t in (0.0, 0.35, 0.8, 1.0):
        a, s, _, _ = _coeffs(t, schedule)
        comp = torch.distributions.MultivariateNormal(a * mix3.means, a**2 * mix3.covs + s**2 * torch.eye(3))
        log_joint = comp.log_prob(x[:, None]) + mix3.weights.log()  # [B, K]
        torch.testing.assert_close(mix3.marginal_log_prob(x, t, schedule), torch.logsumexp(log_joint, 1))
        torch.testing.assert_close(mix3.posterior_weights(x, t, schedule), torch.softmax(log_joint, 1))


@pytest.mark.parametrize("schedule,t", [("linear", 0.7), ("cosine", 0.5)])
def test_marginal_density_matches_samples_of_x_t(asym, schedule, t):
    n = 200_000
    a, s, _, _ = _coeffs(t, schedule)
    g = _gen(1)
    x_t = a * asym.sample(n, g) + s * torch.randn(n, 2, generator=g, dtype=F64)
    edges = torch.linspace(-4, 4, 9, dtype=F64)
    observed = torch.histogramdd(x_t, bins=[edges, edges]).hist / n
    x, cell = _grid(4.0, 321)  # integrate the density over each bin (midpoint-free: trapezoid-like)
    p = asym.marginal_log_prob(x, t, schedule).exp() * cell
    inside = (x.abs() < 4).all(1)
    expected = torch.histogramdd(x[inside], bins=[edges, edges], weight=p[inside]).hist
    se = (expected * (1 - expected) / n).sqrt()
    assert ((observed - expected).abs() < 5 * se + 2e-3).all()


def test_log_prob_is_the_data_density():
    g = GaussianMixture(torch.tensor([[0.0], [2.0]], dtype=F64), stds=torch.tensor([1.0, 0.5], dtype=F64),
                        weights=torch.tensor([0.25, 0.75], dtype=F64))
    x = torch.linspace(-3, 4, 11, dtype=F64)[:, None]
    def pdf(m, sd):
        return torch.exp(-0.5 * ((x[:, 0] - m) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    torch.testing.assert_close(g.log_prob(x).exp(), 0.25 * pdf(0.0, 1.0) + 0.75 * pdf(2.0, 0.5))


# --- posterior quantities against importance-weighted Monte Carlo --------------------------------

def _mc_posterior(g: GaussianMixture, x: torch.Tensor, t: float, schedule: str, n: int = 400_000):
    """E[x1 | x_t = x], Cov[x1 | x_t = x], E[dx_t | x_t = x] by weighting draws x1 ~ p with N(x; a x1, s^2 I)."""
    a, s, da, ds = _coeffs(t, schedule)
    x1 = g.sample(n, _gen(7))
    w = torch.softmax(-((x - a * x1) ** 2).sum(1) / (2 * s**2), dim=0)
    ess = 1 / (w**2).sum()
    mean = w @ x1
    cov = (w[:, None] * (x1 - mean)).T @ (x1 - mean)
    v = da * x1 + ds * (x - a * x1) / s  # dx_t = da x1 + ds x0 with x0 = (x_t - a x1) / s on the event x_t = x
    vel = w @ v
    v_var = w @ (v - vel) ** 2
    return mean, cov, vel, v_var, ess


@pytest.mark.parametrize("schedule,t", [("linear", 0.3), ("linear", 0.6), ("cosine", 0.5), ("vp", 0.6)])
@pytest.mark.parametrize("point", [(0.0, 0.0), (-1.0, -0.5), (1.0, 0.5)])
def test_posterior_matches_monte_carlo(asym, schedule, t, point):
    x = torch.tensor([point], dtype=F64)
    mean, cov, vel, v_var, ess = _mc_posterior(asym, x[0], t, schedule)
    assert ess > 2000
    tol_mean = 5 * (cov.diagonal() / ess).sqrt() + 1e-4
    assert ((asym.denoiser(x, t, schedule)[0] - mean).abs() < tol_mean).all()
    assert ((asym.velocity(x, t, schedule)[0] - vel).abs() < 5 * (v_var / ess).sqrt() + 1e-4).all()
    scale = cov.diagonal().max()
    assert (asym.posterior_cov(x, t, schedule)[0] - cov).abs().max() < 8 * scale * (2 / ess).sqrt() + 1e-4
    assert abs(asym.posterior_variance(x, t, schedule)[0] - cov.trace()) < 8 * scale * (2 / ess).sqrt() + 1e-4


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", ["asym", "mix3"])
def test_score_tweedie_and_velocity_identities(request, name, schedule):
    asym = request.getfixturevalue(name)
    d = asym.dim
    x = 2 * torch.randn(16, d, generator=_gen(2), dtype=F64)
    t = torch.rand(16, generator=_gen(3), dtype=F64) * 0.9 + 0.05  # per-sample times
    a, s, da, ds = (v[:, None] for v in get_schedule(schedule)(t))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(asym.marginal_log_prob(xg, t, schedule).sum(), xg)
    score = asym.score(x, t, schedule)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)
    x1_hat = asym.denoiser(x, t, schedule)
    torch.testing.assert_close(x1_hat, (x + s**2 * score) / a, rtol=1e-9, atol=1e-9)  # Tweedie
    torch.testing.assert_close(asym.velocity(x, t, schedule), da * x1_hat + ds * (x - a * x1_hat) / s)
    # posterior covariance: symmetric PSD, trace = posterior variance, and Tweedie's second-order formula
    cov = asym.posterior_cov(x, t, schedule)
    torch.testing.assert_close(cov, cov.transpose(1, 2))
    assert (torch.linalg.eigvalsh(cov) > -1e-12).all()
    torch.testing.assert_close(cov.diagonal(dim1=1, dim2=2).sum(-1), asym.posterior_variance(x, t, schedule))
    xg = x.clone().requires_grad_(True)
    x1_g = asym.denoiser(xg, t, schedule)
    jac = torch.stack([torch.autograd.grad(x1_g[:, i].sum(), xg, retain_graph=True)[0] for i in range(d)], dim=1)
    torch.testing.assert_close(cov, (s**2 / a)[..., None] * jac, rtol=1e-7, atol=1e-9)  # Cov = s^2/a dE[x1|x]/dx


def test_endpoints_are_finite_and_exact(asym):
    x = 3 * torch.randn(32, 2, generator=_gen(4), dtype=F64)
    ones, zeros = torch.ones(32, dtype=F64), torch.zeros(32, dtype=F64)
    # t = 1 on the linear path: x_1 = x1, so E[x1 | x] = x, no posterior variance, and v = x1 - E[x0] = x
    torch.testing.assert_close(asym.denoiser(x, ones), x)
    torch.testing.assert_close(asym.velocity(x, ones), x)
    assert asym.posterior_variance(x, ones).abs().max() < 1e-12
    # t = 0: x_0 is pure noise, the posterior is the prior: E[x1] and Var = tr Cov(x1); v = E[x1] - x
    mean, cov = _mixture_moments(asym, 1.0, "linear")
    torch.testing.assert_close(asym.denoiser(x, zeros), mean.expand(32, 2))
    torch.testing.assert_close(asym.posterior_variance(x, zeros), cov.trace().expand(32))
    torch.testing.assert_close(asym.velocity(x, zeros), mean - x)
    for schedule in ("cosine", "vp"):
        for t in (zeros, ones):
            for f in (asym.velocity, asym.denoiser, asym.score, asym.posterior_cov):
                assert torch.isfinite(f(x, t, schedule)).all()
    _, _, da, _ = _coeffs(1.0, "vp")
    torch.testing.assert_close(asym.velocity(x, ones, "vp"), da * x)  # E[x0 | x_1] = 0


# --- single Gaussian: affine velocity and exact flow map ---------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES)
def test_gaussian_velocity_affine_and_posterior_cov(gauss, schedule):
    x = torch.randn(8, 2, generator=_gen(5), dtype=F64)
    for t in (0.0, 0.3, 0.8, 1.0):
        mat, b = gauss.velocity_affine(t, schedule)
        torch.testing.assert_close(x @ mat.T + b, gauss.velocity(x, t, schedule))
        a, s, _, _ = _coeffs(t, schedule)
        S = gauss.covs[0]
        C = a**2 * S + s**2 * torch.eye(2, dtype=F64)
        expected = S - a**2 * S @ torch.linalg.solve(C, S)  # Cov[x1 | x_t] = S - a^2 S C^-1 S, independent of x
        torch.testing.assert_close(gauss.posterior_cov(x, t, schedule), expected.expand(8, 2, 2), atol=1e-12, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_gaussian_exact_flow_map_matches_adaptive_solve(gauss, schedule):
    x = 2 * torch.randn(6, 2, generator=_gen(6), dtype=F64)
    s = torch.tensor([0.0, 0.0, 0.2, 0.2, 0.9, 0.7], dtype=F64)
    t = torch.tensor([1.0, 1.0, 0.7, 0.7, 0.1, 0.7], dtype=F64)  # per-sample; includes s > t and s = t
    exact = gauss.flow_map_exact(x, s, t, schedule)
    reference = gauss.flow_map(x, s, t, schedule)
    assert (exact - reference).abs().max() < 1e-6
    torch.testing.assert_close(exact[5], x[5])


def test_gaussian_flow_map_pushes_marginals(gauss):
    # the map is affine: pushing N(a_s m, C_s) gives exactly N(a_t m, C_t) (mean and covariance through the map)
    for schedule, s, t in (("linear", 0.1, 0.8), ("cosine", 0.9, 0.3), ("vp", 0.0, 1.0)):
        mean_s, cov_s = _mixture_moments(gauss, s, schedule)
        mean_t, cov_t = _mixture_moments(gauss, t, schedule)
        jac = torch.autograd.functional.jacobian(
            lambda y, s=s, t=t, schedule=schedule: gauss.flow_map_exact(y[None], s, t, schedule)[0], mean_s)
        torch.testing.assert_close(gauss.flow_map_exact(mean_s[None], s, t, schedule)[0], mean_t)
        torch.testing.assert_close(jac @ cov_s @ jac.T, cov_t)
    # and by sampling: x_s = a_s x1 + s_s x0 pushed to t has the moments of x_t
    n, g = 100_000, _gen(8)
    a, sig, _, _ = _coeffs(0.2, "linear")
    x_s = a * gauss.sample(n, g) + sig * torch.randn(n, 2, generator=g, dtype=F64)
    pushed = gauss.flow_map_exact(x_s, 0.2, 0.9)
    mean_t, cov_t = _mixture_moments(gauss, 0.9, "linear")
    torch.testing.assert_close(pushed.mean(0), mean_t, atol=0.02, rtol=0)
    torch.testing.assert_close(pushed.T.cov(), cov_t, atol=0.03, rtol=0)


def test_gaussian_flow_map_composition_and_inverse(gauss):
    x = torch.randn(10, 2, generator=_gen(9), dtype=F64)
    for schedule in SCHEDULES:
        direct = gauss.flow_map_exact(x, 0.1, 0.95, schedule)
        via = gauss.flow_map_exact(gauss.flow_map_exact(x, 0.1, 0.5, schedule), 0.5, 0.95, schedule)
        torch.testing.assert_close(via, direct, rtol=1e-12, atol=1e-12)
        back = gauss.flow_map_exact(direct, 0.95, 0.1, schedule)
        torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)


# --- mixture flow map (adaptive reference) -------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_velocity_is_time_derivative_of_flow_map(asym, gauss, schedule):
    x = torch.randn(4, 2, generator=_gen(10), dtype=F64)
    s, h = 0.4, 2e-4
    for g in (asym, gauss):
        fwd = g.flow_map(x, s, s + h, schedule, rtol=1e-12, atol=1e-12)
        bwd = g.flow_map(x, s, s - h, schedule, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close((fwd - bwd) / (2 * h), g.velocity(x, s, schedule), rtol=0, atol=1e-5)
    fd = (gauss.flow_map_exact(x, s, s + h, schedule) - gauss.flow_map_exact(x, s, s - h, schedule)) / (2 * h)
    torch.testing.assert_close(fd, gauss.velocity(x, s, schedule), rtol=0, atol=1e-5)


def test_mixture_flow_map_composition_and_inverse(asym):
    x = 2 * torch.randn(8, 2, generator=_gen(11), dtype=F64)
    direct = asym.flow_map(x, 0.1, 0.9)
    via = asym.flow_map(asym.flow_map(x, 0.1, 0.5), 0.5, 0.9)
    torch.testing.assert_close(via, direct, rtol=0, atol=1e-7)
    torch.testing.assert_close(asym.flow_map(direct, 0.9, 0.1), x, rtol=0, atol=1e-7)
    torch.testing.assert_close(asym.flow_map(x, 0.3, 0.3), x)


def test_mixture_flow_map_transports_noise_to_the_marginal():
    g = _f64(gmm_2d("two_modes"))
    x0 = torch.randn(2000, 2, generator=_gen(12), dtype=F64)
    x_t = g.flow_map(x0, 0.0, 0.95, rtol=1e-6, atol=1e-6)
    mean, cov = _mixture_moments(g, 0.95, "linear")
    torch.testing.assert_close(x_t.mean(0), mean, atol=0.15, rtol=0)
    torch.testing.assert_close(x_t.T.cov(), cov, atol=0.3, rtol=0)
    assert abs((x_t[:, 0] > 0).double().mean() - 0.5) < 0.04
    # the flow is monotone in 1D slices and sends the right half-plane to the right mode
    assert ((x_t[:, 0] > 0) == (x0[:, 0] > 0)).all()


# --- empirical distribution, worked example, ready-made mixtures ---------------------------------------

def test_empirical_equals_mixture_with_tiny_covariances():
    pts = torch.randn(20, 2, generator=_gen(13), dtype=F64)
    emp = EmpiricalDistribution(pts)
    tiny_iso = GaussianMixture(pts, stds=1e-7)
    tiny_full = GaussianMixture(pts, covs=1e-14 * torch.eye(2, dtype=F64).expand(20, 2, 2))
    x = torch.randn(16, 2, generator=_gen(14), dtype=F64)
    for t in (0.2, 0.5, 0.9):
        for g in (tiny_iso, tiny_full):
            torch.testing.assert_close(emp.velocity(x, t), g.velocity(x, t), rtol=1e-8, atol=1e-8)
            torch.testing.assert_close(emp.denoiser(x, t), g.denoiser(x, t), rtol=1e-8, atol=1e-8)
            torch.testing.assert_close(emp.posterior_variance(x, t), g.posterior_variance(x, t), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_empirical_velocity_is_the_softmax_formula(schedule):
    pts = torch.randn(30, 3, generator=_gen(15), dtype=F64)
    emp = EmpiricalDistribution(pts)
    x = torch.randn(5, 3, generator=_gen(16), dtype=F64)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=F64)
    a, s, da, ds = (v[:, None, None] for v in get_schedule(schedule)(t))
    w = torch.softmax(-((x[:, None] - a * pts) ** 2).sum(-1) / (2 * s[..., 0] ** 2), dim=1)  # [B, N]
    v = torch.einsum("bn,bnd->bd", w, da * pts + ds * (x[:, None] - a * pts) / s)
    torch.testing.assert_close(emp.velocity(x, t, schedule), v)
    torch.testing.assert_close(emp.posterior_weights(x, t, schedule), w)
    # the optimum reproduces the data: at t = 1 a point near atom i is denoised to atom i
    torch.testing.assert_close(emp.denoiser(pts + 1e-3, torch.ones(30, dtype=F64), schedule), pts)


def test_worked_example_1d():
    ex = worked_example_1d()
    assert ex.dim == 1 and ex.n_components == 2
    x = torch.linspace(-4, 4, 41, dtype=F64)[:, None]
    pdf = sum(0.5 * torch.exp(-((x[:, 0] - m) ** 2) / (2 * 0.25)) / math.sqrt(2 * math.pi * 0.25) for m in (-1.5, 1.5))
    torch.testing.assert_close(ex.marginal_log_prob(x, 0.5).exp(), pdf)
    torch.testing.assert_close(ex.denoiser(x, 0.5)[:, 0], 3 * torch.tanh(6 * x[:, 0]))
    torch.testing.assert_close(ex.velocity(x, 0.5)[:, 0], 2 * (3 * torch.tanh(6 * x[:, 0]) - x[:, 0]))
    torch.testing.assert_close(ex.posterior_variance(x, 0.5), 9 / torch.cosh(6 * x[:, 0]) ** 2)  # 9 (1 - tanh^2)
    assert set(ex.sample(100, _gen()).flatten().tolist()) == {-3.0, 3.0}


def test_sampling_moments_labels_and_seeds(asym):
    x, k = asym.sample(100_000, _gen(17), return_labels=True)
    mean, cov = _mixture_moments(asym, 1.0, "linear")
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(x.T.cov(), cov, atol=0.05, rtol=0)
    torch.testing.assert_close(k.bincount().double() / 100_000, asym.weights, atol=0.01, rtol=0)
    for j in range(3):  # each component's samples have that component's covariance
        torch.testing.assert_close(x[k == j].T.cov(), asym.covs[j], atol=0.03, rtol=0)
    assert torch.equal(asym.sample(50, _gen(1)), asym.sample(50, _gen(1)))
    assert gmm_2d("asymmetric").sample(5).dtype == torch.get_default_dtype()


def test_eight_modes_is_the_toy_8gaussians():
    g = _f64(gmm_2d("8modes"))
    toy = sample_toy("8gaussians", 20_000, _gen(18)).double()
    own = g.sample(20_000, _gen(19))
    # same distribution: the average log-likelihood (cross-entropy) matches the entropy estimate
    assert abs(g.log_prob(toy).mean() - g.log_prob(own).mean()) < 0.03
    for name in ("two_modes", "asymmetric"):
        assert gmm_2d(name).dim == 2


def test_dtype_device_and_chunking(asym, monkeypatch):
    x = torch.randn(50, 2, generator=_gen(20), dtype=F64)
    t = torch.rand(50, generator=_gen(21), dtype=F64)
    full, full_cov = asym.velocity(x, t), asym.posterior_cov(x, t)
    out32 = asym.velocity(x.float(), t.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, full.float())
    monkeypatch.setattr(gaussian_module, "_CHUNK", 12)  # 2 samples per internal chunk
    torch.testing.assert_close(asym.velocity(x, t), full, rtol=0, atol=0)
    torch.testing.assert_close(asym.posterior_cov(x, t), full_cov, rtol=0, atol=0)


def test_bad_input(asym, gauss):
    eye = torch.eye(2, dtype=F64)
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(torch.zeros(3), stds=1.0)
    with pytest.raises(ValueError, match="exactly one of covs"):
        GaussianMixture(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="exactly one of covs"):
        GaussianMixture(torch.zeros(2, 2), covs=eye.expand(2, 2, 2), stds=1.0)
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture(torch.zeros(2, 2), covs=eye)
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture(torch.zeros(2, 2), stds=-1.0)
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture(torch.zeros(2, 2), stds=torch.ones(3))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 2), stds=1.0, weights=torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.zeros(2, 2), stds=1.0, weights=torch.tensor([1.0, 1.0, 1.0]))
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        asym.velocity(x, 1.5)
    with pytest.raises(ValueError, match="t must be a float or have shape"):
        asym.velocity(x, torch.zeros(3))
    with pytest.raises(ValueError, match="x must have shape"):
        asym.denoiser(torch.zeros(4, 3), 0.5)
    with pytest.raises(ValueError, match="schedule must be one of"):
        asym.score(x, 0.5, "sqrt")
    with pytest.raises(ValueError, match=r"s must lie in \[0, 1\]"):
        gauss.flow_map_exact(x, -0.1, 0.5)
    with pytest.raises(ValueError, match="t must be a single time"):
        gauss.velocity_affine(torch.zeros(2))
    with pytest.raises(ValueError, match="n must be"):
        asym.sample(0)
    with pytest.raises(ValueError, match="name must be one of"):
        gmm_2d("nine_modes")
    with pytest.raises(ValueError, match="points"):
        EmpiricalDistribution(torch.zeros(5))


def test_flow_map_with_per_sample_times_is_one_solve_that_matches_each_pair_solved_alone(asym):
    # a batch of distinct (s, t) pairs (a training batch) is one solve in tau, r_i = s_i + tau (t_i - s_i)
    x = torch.randn(5, 2, generator=_gen(7), dtype=F64)
    s = torch.tensor([0.0, 0.2, 0.9, 0.5, 0.3], dtype=F64)
    t = torch.tensor([1.0, 0.7, 0.1, 0.5, 0.95], dtype=F64)  # forward, backward and s = t rows
    calls = []
    real = asym.velocity

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    asym.velocity = counted
    try:
        batched = asym.flow_map(x, s, t)
        n_batched = len(calls)
        alone = torch.stack([asym.flow_map(x[i:i + 1], float(s[i]), float(t[i]))[0] for i in range(5)])
    finally:
        del asym.velocity
    assert len(calls) - n_batched > 2 * n_batched  # the pairs alone take several solves' worth of calls
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-7)
    torch.testing.assert_close(batched[3], x[3])
