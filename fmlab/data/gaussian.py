"""Closed-form ground truth for Gaussian-mixture data under any schedule of `fmlab.paths`.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data x1 ~ sum_k w_k N(mu_k, S_k), and

    x_t = a_t x1 + s_t x0            (a, s, da, ds) = schedule(t), linear: a = t, s = 1 - t.

Every quantity follows from one fact: given the component k, (x1, x_t) is jointly Gaussian, with

    x_t | k ~ N(a mu_k, C_k),        C_k = a^2 S_k + s^2 I.

Writing S_k = Q_k diag(lam_k) Q_k^T, all of C_k, its inverse and the posterior covariance are diagonal in the
basis Q_k with entries c = a^2 lam + s^2, so with z = Q_k^T (x - a mu_k) (all per component k):

    E[x1 | x_t = x, k]   = mu_k + Q_k (a lam / c) z
    E[x0 | x_t = x, k]   = Q_k (s / c) z                    (= (x - a E[x1 | x, k]) / s, without dividing by s)
    Cov[x1 | x_t = x, k] = Q_k diag(lam s^2 / c) Q_k^T
    E[dx_t | x_t = x, k] = da mu_k + Q_k ((a da lam + s ds) / c) z
    grad log p(x | k)    = -Q_k z / c

and the mixture combines them with the posterior weights pi_k(x) = w_k N(x; a mu_k, C_k) / p_t(x). None of these
divide by s or a, so t = 0 and t = 1 are safe (Dirac components at t = 1 pick the nearest atom).

All computation runs in float64 (on the CPU when x lives on MPS, which lacks float64); results come back in the
input's dtype and device, differentiable in x by autograd (flow_map excepted: it is a numerical solve).
`sample` returns the dtype of the means given to the constructor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from fmlab.data.toy import EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD
from fmlab.paths import Schedule, check_time, get_schedule

from ..checks import check_int

__all__ = ["GaussianMixture", "Gaussian", "EmpiricalDistribution", "gmm_2d", "GMM_2D", "worked_example_1d"]

_F64 = torch.float64
_TINY = 1e-150  # floor for the variances c (Dirac components at t = 1); (1 / c) stays far from overflow
_CHUNK = 2**22  # max batch * components * dim elements per internal pass


def _work_device(x: Tensor) -> torch.device:
    return torch.device("cpu") if x.device.type == "mps" else x.device


class GaussianMixture:
    """p(x1) = sum_k w_k N(mu_k, S_k) in d dimensions, with closed-form marginals and posteriors along a path.

    means [K, d]; covs [K, d, d] (symmetric PSD, zero allowed = Dirac component) or, instead of covs, stds: a
    float, [K] (isotropic per component) or [K, d] (axis-aligned). weights [K] >= 0 (normalised; default uniform).
    The t-dependent methods take x [B, d], t a float or [B] in [0, 1] and a schedule name or object.
    """

    def __init__(self, means: Tensor, covs: Tensor | None = None, weights: Tensor | None = None,
                 stds: Tensor | float | None = None):
        means = torch.as_tensor(means)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape [K, d] with K, d >= 1, got {tuple(means.shape)}")
        self.dtype = means.dtype if means.is_floating_point() else torch.get_default_dtype()
        k, d = means.shape
        self.means = means.to(_F64)
        self.weights = self._check_weights(weights, k)
        self.log_weights = torch.log(self.weights)  # -inf for zero weights: softmax ignores them
        if (covs is None) == (stds is None):
            raise ValueError("give exactly one of covs [K, d, d] or stds (float, [K] or [K, d])")
        if covs is not None:
            self.covs = self._check_covs(torch.as_tensor(covs), k, d)
            lam, q = torch.linalg.eigh(self.covs)  # S_k = Q_k diag(lam_k) Q_k^T
            self.lam, self.q = lam.clamp_min(0.0), q
        else:
            self.lam, self.q = self._check_stds(stds, k, d), None  # lam [K, 1] (isotropic) or [K, d] (diagonal)
            self.covs = torch.diag_embed(self.lam.expand(k, d))

    # --- construction checks ------------------------------------------------------------------
    @staticmethod
    def _check_weights(weights: Tensor | None, k: int) -> Tensor:
        if weights is None:
            return torch.full((k,), 1.0 / k, dtype=_F64)
        w = torch.as_tensor(weights, dtype=_F64)
        if w.shape != (k,) or bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or w.sum() <= 0:
            raise ValueError(f"weights must be {k} finite non-negative numbers with a positive sum, got {w.tolist()}")
        return w / w.sum()

    @staticmethod
    def _check_covs(covs: Tensor, k: int, d: int) -> Tensor:
        covs = covs.to(_F64)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape [K, d, d] = [{k}, {d}, {d}], got {tuple(covs.shape)}")
        scale = covs.abs().amax().clamp_min(1.0)
        if not torch.allclose(covs, covs.transpose(1, 2), atol=1e-10 * scale.item()):
            raise ValueError("covs must be symmetric")
        if bool((torch.linalg.eigvalsh(covs) < -1e-10 * scale).any()):
            raise ValueError("covs must be positive semi-definite (eigenvalues >= 0)")
        return 0.5 * (covs + covs.transpose(1, 2))

    @staticmethod
    def _check_stds(stds: Tensor | float, k: int, d: int) -> Tensor:
        std = torch.as_tensor(stds, dtype=_F64)
        if std.ndim == 0:
            std = std.expand(k, 1)
        elif std.shape == (k,):
            std = std[:, None]
        elif std.shape != (k, d):
            raise ValueError(f"stds must be a float, [K] = [{k}] or [K, d] = [{k}, {d}], got {tuple(std.shape)}")
        if bool((std < 0).any()) or not bool(torch.isfinite(std).all()):
            raise ValueError("stds must be finite and >= 0")
        return std.clone() ** 2

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.n_components}, d={self.dim})"

    # --- sampling and data density -----------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None,
               return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """n draws x1 = mu_k + Q_k sqrt(lam_k) eps, k ~ w (on the CPU); labels are the components k."""
        check_int(n, "n", 1)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=_F64) * self.lam[k].sqrt()
        x = self.means[k] + (eps if self.q is None else torch.einsum("nij,nj->ni", self.q[k], eps))
        x = x.to(self.dtype)
        return (x, k) if return_labels else x

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x1) of the data [B]; -inf (or a huge number) off/on a Dirac component."""
        return self.marginal_log_prob(x, 1.0)

    # --- marginals and posteriors along the path ----------------------------------------------
    def marginal_log_prob(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear") -> Tensor:
        """log p_t(x) = logsumexp_k [log w_k + log N(x; a mu_k, a^2 S_k + s^2 I)] [B]."""
        return self._map(x, t, schedule, lambda st: torch.logsumexp(st.logits, dim=1))

    def posterior_weights(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear") -> Tensor:
        """pi_k(x) = P(component k | x_t = x) [B, K]."""
        return self._map(x, t, schedule, lambda st: st.pi)

    def denoiser(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear") -> Tensor:
        """E[x1 | x_t = x] = sum_k pi_k (mu_k + Q_k (a lam / c) z_k) [B, d]."""
        return self._map(x, t, schedule, lambda st: st.mix(st.mean_x1()))

    def posterior_cov(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear") -> Tensor:
        """Cov[x1 | x_t = x] = sum_k pi_k P_k + sum_k pi_k (m_k - m)(m_k - m)^T (total covariance) [B, d, d]."""
        return self._map(x, t, schedule, _posterior_cov)

    def posterior_variance(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear") -> Tensor:
        """tr Cov[x1 | x_t = x] = sum_k pi_k (tr P_k + ||m_k - m||^2) [B]."""
        return self._map(x, t, schedule, _posterior_variance)

    def velocity(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear") -> Tensor:
        """Marginal velocity E[dx_t | x_t = x] = da E[x1 | x] + ds E[x0 | x] [B, d] (the flow matching optimum)."""
        return self._map(x, t, schedule, lambda st: st.mix(st.velocity()))

    def component_velocities(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear"
                             ) -> tuple[Tensor, Tensor]:
        """(logits [B, K], v [B, K, d]): logits_k = log w_k N(x; a mu_k, C_k) and v_k = E[dx_t | x_t = x, k], each
        component's own velocity. velocity() is sum_k softmax(logits)_k v_k; a sub-mixture (a class) re-weights
        the same terms (fmlab.data.labelled)."""
        both = self._map(x, t, schedule, lambda st: torch.cat([st.logits[..., None], st.velocity()], dim=-1))
        return both[..., 0], both[..., 1:]

    def score(self, x: Tensor, t: Tensor | float, schedule: str | Schedule = "linear") -> Tensor:
        """grad_x log p_t(x) = -sum_k pi_k C_k^{-1} (x - a mu_k) [B, d]."""
        return self._map(x, t, schedule, lambda st: st.mix(st.from_eig(-st.z / st.c)))

    def flow_map(self, x: Tensor, s: Tensor | float, t: Tensor | float, schedule: str | Schedule = "linear",
                 rtol: float = 1e-9, atol: float = 1e-9) -> Tensor:
        """Reference flow map X(x, s, t): solve dx/dr = velocity(x, r) from r = s to r = t (s > t: backwards).

        A DOP853 solve in float64 (fmlab.solvers.solve_adaptive); s and t are floats or per-sample [B] tensors.
        One (s, t) for all: one solve in r. Several: still one solve, in tau from 0 to 1, of every sample's ODE
        with its own clock r_i = s_i + tau (t_i - s_i), i.e. dx_i / dtau = (t_i - s_i) velocity(x_i, r_i) (a
        training batch of distinct (s, t) pairs costs one solve, not one per pair). Near t = 1 the velocity of
        Dirac components blows up like 1 / (1 - t): stop short of 1 for EmpiricalDistribution.
        """
        from fmlab.solvers import solve_adaptive

        x64 = x.detach().to(device=_work_device(x), dtype=_F64)
        s_b, t_b = _batch_time(s, x64, "s"), _batch_time(t, x64, "t")
        if bool((s_b == s_b[0]).all() and (t_b == t_b[0]).all()):
            out = solve_adaptive(lambda y, r: self.velocity(y, r, schedule), x64, float(s_b[0]), float(t_b[0]),
                                 rtol, atol)
            return out.to(device=x.device, dtype=x.dtype)
        gap = t_b - s_b

        def clock_field(y: Tensor, tau: Tensor) -> Tensor:  # dx_i / dtau = (t_i - s_i) v(x_i, s_i + tau (t_i - s_i))
            return gap[:, None] * self.velocity(y, s_b + tau * gap, schedule)

        return solve_adaptive(clock_field, x64, 0.0, 1.0, rtol, atol).to(device=x.device, dtype=x.dtype)

    # --- internals ---------------------------------------------------------------------------
    def _map(self, x: Tensor, t: Tensor | float, schedule: str | Schedule, fn: Callable[[_Stats], Tensor]) -> Tensor:
        """Evaluate fn on the per-component statistics, chunked over the batch, in float64."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")
        dev = _work_device(x)
        x64 = x.to(device=dev, dtype=_F64)
        t64 = _batch_time(t, x64, "t")
        sched = get_schedule(schedule)
        params = self._params(dev)
        step = max(1, _CHUNK // (self.n_components * self.dim))
        outs = [fn(_Stats(x64[i:i + step], t64[i:i + step], sched, *params)) for i in range(0, len(x64), step)]
        return torch.cat(outs).to(device=x.device, dtype=x.dtype)

    def _params(self, dev: torch.device) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        q = None if self.q is None else self.q.to(dev)
        return self.means.to(dev), self.lam.to(dev), q, self.log_weights.to(dev)


def _batch_time(t: Tensor | float, x: Tensor, name: str) -> Tensor:
    """A time (float, 0-dim or [B]) as a float64 [B] tensor on x's device, checked to lie in [0, 1]."""
    t = torch.as_tensor(t, dtype=_F64, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a float or have shape [B] = [{x.shape[0]}], got {tuple(t.shape)}")
    check_time(t, name)
    return t


class _Stats:
    """Per-component quantities at (x [B, d], t [B]); tensors indexed [B, K, d] (c is [B, K, 1] if isotropic)."""

    def __init__(self, x: Tensor, t: Tensor, sched: Schedule, means: Tensor, lam: Tensor, q: Tensor | None,
                 log_w: Tensor):
        a, s, da, ds = (v[:, None, None] for v in sched(t))
        self.a, self.s, self.da, self.ds = a, s, da, ds
        self.means, self.lam, self.q, self.dim = means, lam, q, x.shape[1]
        self.c = (a**2 * lam + s**2).clamp_min(_TINY)  # c = a^2 lam + s^2, eigenvalues of C_k
        r = x[:, None, :] - a * means  # x - a mu_k
        self.z = r if q is None else torch.einsum("kij,bki->bkj", q, r)  # z = Q_k^T (x - a mu_k)
        logdet = torch.log(2 * math.pi * self.c).sum(-1) * (self.dim if lam.shape[-1] == 1 else 1)
        self.logits = log_w - 0.5 * ((self.z**2 / self.c).sum(-1) + logdet)  # log w_k N(x; a mu_k, C_k)
        self.pi = torch.softmax(self.logits, dim=1)  # posterior weights [B, K]

    def from_eig(self, y: Tensor) -> Tensor:
        """Q_k y_k: back from each component's eigenbasis, [B, K, d]."""
        return y if self.q is None else torch.einsum("kij,bkj->bki", self.q, y)

    def mix(self, y: Tensor) -> Tensor:
        """sum_k pi_k y_k, [B, d]."""
        return torch.einsum("bk,bkd->bd", self.pi, y)

    def mean_x1(self) -> Tensor:
        return self.means + self.from_eig(self.a * self.lam / self.c * self.z)  # m_k = mu_k + Q (a lam / c) z

    def var_x1(self) -> Tensor:
        """Eigenvalues of P_k = Cov[x1 | x_t, k]: lam s^2 / c (= lam - a^2 lam^2 / c), [B, K, d or 1]."""
        return self.lam * self.s**2 / self.c

    def velocity(self) -> Tensor:
        # v_k = da m_k + ds E[x0 | x, k] = da mu_k + Q ((a da lam + s ds) / c) z   (s ds, not ds / s: finite at t = 1)
        return self.da * self.means + self.from_eig((self.a * self.da * self.lam + self.s * self.ds) / self.c * self.z)


def _posterior_cov(st: _Stats) -> Tensor:
    m_k = st.mean_x1()
    dev = m_k - st.mix(m_k)[:, None, :]  # m_k - m
    p_eig = st.var_x1().expand(*m_k.shape)
    if st.q is None:
        within = torch.diag_embed(torch.einsum("bk,bkd->bd", st.pi, p_eig))
    else:
        within = torch.einsum("bk,kij,bkj,klj->bil", st.pi, st.q, p_eig, st.q)  # sum_k pi_k Q_k diag(p) Q_k^T
    return within + torch.einsum("bk,bki,bkj->bij", st.pi, dev, dev)


def _posterior_variance(st: _Stats) -> Tensor:
    m_k = st.mean_x1()
    dev = m_k - st.mix(m_k)[:, None, :]
    trace_p = st.var_x1().sum(-1) * (st.dim if st.lam.shape[-1] == 1 else 1)  # tr P_k
    return (st.pi * (trace_p + (dev**2).sum(-1))).sum(1)


class Gaussian(GaussianMixture):
    """A single Gaussian N(mean, cov) (K = 1): the marginal flow is affine and known in closed form."""

    def __init__(self, mean: Tensor, cov: Tensor | None = None, std: Tensor | float | None = None):
        mean = torch.as_tensor(mean)
        if mean.ndim != 1:
            raise ValueError(f"mean must have shape [d], got {tuple(mean.shape)}")
        if cov is None and std is None:
            std = 1.0
        covs = None if cov is None else torch.as_tensor(cov)[None]
        stds = None if std is None else torch.as_tensor(std, dtype=_F64)
        if stds is not None and stds.ndim == 1:
            stds = stds[None]  # per-axis stds [d] -> [1, d]
        super().__init__(mean[None], covs=covs, stds=stds)

    def _eig(self) -> tuple[Tensor, Tensor]:
        q = torch.eye(self.dim, dtype=_F64) if self.q is None else self.q[0]
        return self.lam[0].expand(self.dim), q

    def flow_map_exact(self, x: Tensor, s: Tensor | float, t: Tensor | float,
                       schedule: str | Schedule = "linear") -> Tensor:
        """X(x, s, t) = a_t m + Q diag(sqrt(var_t / var_s)) Q^T (x - a_s m), var_r = a_r^2 lam + s_r^2.

        Valid for any schedule since every C_r = Q diag(var_r) Q^T shares Q. s > t runs the flow backwards.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")
        dev = _work_device(x)
        x64 = x.to(device=dev, dtype=_F64)
        sched = get_schedule(schedule)
        (a_s, s_s, _, _), (a_t, s_t, _, _) = (sched(_batch_time(r, x64, n)[:, None]) for r, n in ((s, "s"), (t, "t")))
        lam, q = (v.to(dev) for v in self._eig())
        m = self.means[0].to(dev)
        var_s = (a_s**2 * lam + s_s**2).clamp_min(_TINY)  # var_r = a_r^2 lam + s_r^2, [B, d]
        var_t = a_t**2 * lam + s_t**2
        z = (x64 - a_s * m) @ q  # Q^T (x - a_s m)
        out = a_t * m + (torch.sqrt(var_t / var_s) * z) @ q.T
        return out.to(device=x.device, dtype=x.dtype)

    def velocity_affine(self, t: float | Tensor, schedule: str | Schedule = "linear") -> tuple[Tensor, Tensor]:
        """(A [d, d], b [d]) with velocity(x, t) = A x + b at a single time t:
        A = Q diag((a da lam + s ds) / (a^2 lam + s^2)) Q^T, b = da m - a A m."""
        t = torch.as_tensor(t, dtype=_F64)
        if t.numel() != 1:
            raise ValueError(f"t must be a single time, got shape {tuple(t.shape)}")
        check_time(t.reshape(1))
        a, s, da, ds = get_schedule(schedule)(t.reshape(()))
        lam, q = self._eig()
        gain = (a * da * lam + s * ds) / (a**2 * lam + s**2).clamp_min(_TINY)
        mat = q @ torch.diag(gain) @ q.T
        m = self.means[0]
        return mat.to(self.dtype), (da * m - a * mat @ m).to(self.dtype)


class EmpiricalDistribution(GaussianMixture):
    """The finite dataset sum_i w_i delta(x - x1_i) as a mixture of zero-covariance components.

    Its velocity is the exact optimum of flow matching on that dataset (it reproduces training points):
    v*(x, t) = sum_i pi_i (da x1_i + ds (x - a x1_i) / s), pi = softmax_i(log w_i - ||x - a x1_i||^2 / (2 s^2)).
    """

    def __init__(self, points: Tensor, weights: Tensor | None = None):
        points = torch.as_tensor(points)
        if points.ndim != 2:
            raise ValueError(f"points must have shape [N, d], got {tuple(points.shape)}")
        super().__init__(points, weights=weights, stds=0.0)


# --- ready-made targets for the labs --------------------------------------------------------------

def _two_modes() -> GaussianMixture:
    return GaussianMixture(torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), stds=0.5)


def _eight_modes() -> GaussianMixture:
    """The ground truth of sample_toy('8gaussians'): same centres and std."""
    angle = 2 * math.pi * torch.arange(8, dtype=_F64) / 8
    means = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return GaussianMixture(means.to(torch.get_default_dtype()), stds=EIGHT_GAUSSIANS_STD)


def _asymmetric() -> GaussianMixture:
    means = torch.tensor([[-2.0, -1.0], [2.0, 1.5], [0.5, -2.5]])
    covs = torch.tensor([[[0.6, 0.3], [0.3, 0.4]], [[0.15, 0.0], [0.0, 0.6]], [[0.05, -0.02], [-0.02, 0.05]]])
    return GaussianMixture(means, covs=covs, weights=torch.tensor([0.5, 0.3, 0.2]))


GMM_2D: dict[str, Callable[[], GaussianMixture]] = {
    "two_modes": _two_modes, "8modes": _eight_modes, "asymmetric": _asymmetric,
}


def gmm_2d(name: str) -> GaussianMixture:
    """Ready-made 2D mixtures (default float dtype) for the labs:

    - "two_modes": N((-3, 0), 0.25 I) and N((3, 0), 0.25 I), equal weights;
    - "8modes": the 8 modes of sample_toy('8gaussians') (radius 2 sqrt 2, std 0.5 / sqrt 2), equal weights;
    - "asymmetric": 3 components with weights (0.5, 0.3, 0.2), unequal and correlated covariances.
    """
    if name not in GMM_2D:
        raise ValueError(f"name must be one of {sorted(GMM_2D)}, got {name!r}")
    return GMM_2D[name]()


def worked_example_1d() -> EmpiricalDistribution:
    """The textbook example: data at -3 and +3 with equal weights (Dirac atoms, d = 1).

    On the linear path x_t = t x1 + (1 - t) x0, at t = 0.5 the marginal is 0.5 N(-1.5, 0.25) + 0.5 N(1.5, 0.25),
    the denoiser is E[x1 | x] = 3 tanh(6 x) and the velocity 2 (3 tanh(6 x) - x).
    """
    return EmpiricalDistribution(torch.tensor([[-3.0], [3.0]]))
