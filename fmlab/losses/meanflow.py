"""The MeanFlow family: MeanFlow (Geng et al. 2025), improved MeanFlow (iMF, Geng, Lu et al. 2025), SoFlow (Luo, Yuan
& Liu 2025). All three learn the average velocity u from the conditional path alone (no teacher), by the Eulerian rule.

Convention (fmlab.conventions): t = 0 is noise, t = 1 is data, x_s = (1 - s) x0 + s x1,
X(x, s, t) = x + (t - s) u(x, s, t).
The papers put data at time 0 (z_tau = (1 - tau) x + tau eps, fmlab.conventions): with tau = 1 - t their
u(z_t, r, t) (from t_p down to r_p < t_p) is our -u(z, s = 1 - t_p, t = 1 - r_p), their v = eps - x is our
-(x1 - x0), and d/dt_p = -d/ds. Differentiating X(x_s, s, t) = const along the trajectory gives the MeanFlow identity
in our time,

    u(x_s, s, t) = v(x_s, s) + (t - s) d/ds u(x_s, s, t),    d/ds u = (du/dx) v + du/ds   (JVP, tangent (v, 1, 0)),

which is the Eulerian residual E = v - u + (t - s) du_v = 0 of fmlab.losses.flowmap_eulerian.

Adaptive weighting. All three papers weight each sample's squared error by w = sg(1 / (err + c)^p) (MeanFlow's
"adaptive loss", `adaptive_weight`). Here err is the per-sample MEAN over dimensions; the official MeanFlow and
iMF code (github.com/Gsunshine/meanflow `meanflow.py`, Gsunshine/py-meanflow, Lyy-iiis/imeanflow `imf.py`) weight
the SUM over dimensions, which is our weight with c_ours = c_paper / d (times the constant d^-p); SoFlow's
(zlab-princeton/SoFlow `models.py`) weights the mean, as we do. Their settings: MeanFlow ImageNet p = 1,
c = 0.01 in the JAX code (this module used c = 1e-3, quoted from the paper and not re-checked), CIFAR-10
p = 0.75, c = 1e-3 (py-meanflow); iMF p = 1, c = 0.01; SoFlow ImageNet p = 1, c = 0.01, CIFAR-10 p = 0.75,
c = 1e-3. With p > 0 the weight depends on the noise
of the conditional target, so the fixed point is E[w y | x] / E[w | x], not E[y | x]: mode seeking wherever the
conditional target is multimodal. On images that may be a welcome robustness; on our 2D sets it is a bias that
grows with the number of sampling steps. Defaults here: p = 0 (no adaptive weight; c unused); set `norm_p` = 1
(and `norm_c`, per dimension) for the papers' weighting. Measured with `python benchmarks/meanflow_weighting.py`
(the zoo's model and training, 2000 steps, seeds 0-2; exact W2 to 1000 held-out points, mean +- std over seeds;
benchmarks/results/meanflow_weighting.json), W2 at 1 -> 4 sampling steps:

                 moons, p = 1 (old)     moons, p = 0 (new)     checkerboard, p = 1    checkerboard, p = 0
    MeanFlow     0.248+-0.034 -> 0.299  0.232+-0.005 -> 0.162  0.758+-0.048 -> 1.034  0.524+-0.037 -> 0.514
    iMF          0.216+-0.017 -> 0.262  0.216+-0.013 -> 0.203  0.770+-0.038 -> 0.981  0.532+-0.015 -> 0.455
    SoFlow       0.232+-0.054 -> 0.270  0.257+-0.015 -> 0.207  0.684+-0.034 -> 0.972  0.554+-0.032 -> 0.484

p = 0.5 lies in between (c = old c or c = 1 per dimension; in the json). With p = 0 no loss gets worse with more
steps on average; iMF's moons seed 0 ties (0.201 at 1 step, 0.202 at 4), both at the level of a flow-matching
model solved in 100 Euler steps (0.214, fmlab/viz/results/flowmaps.json). The mixture test
(tests/losses/test_losses_mixture_stationarity.py) shows the bias of p = 1 directly in the expected update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_float
from ..flowmaps import flow_map
from ..paths import expand_t, path_point
from .batch import Batch, draw_times, two_time_batch
from .flow_matching import per_sample_mse
from .flowmap_eulerian import adaptive_weight, diagonal_mask, eulerian_residual
from .registry import EULERIAN, LossSpec, register

__all__ = ["meanflow_loss", "imf_loss", "soflow_loss", "soflow_batch"]


def meanflow_loss(model: nn.Module, batch: Batch, norm_p: float = 0.0, norm_c: float = 1e-3,
                  **_: Any) -> tuple[Tensor, dict]:
    """MeanFlow (Geng, Deng, Bai, Kolter & He 2025, Algorithm 1; official code Gsunshine/meanflow `forward`).

    Paper (data at 0): L = w || u(z_t, r, t) - sg(u_tgt) ||^2, u_tgt = v - (t - r)(v d_z u + d_t u), v = eps - x,
    w = sg(1 / (||Delta||^2 + c)^p) (adaptive weight, p = 1; the code sums ||Delta||^2 over the latent's 4096
    dimensions with c = 0.01, i.e. c = 2.4e-6 per dimension here). Ours (tau = 1 - t, u_paper = -u):

        L = w || u(x_s, s, t) - sg[ (x1 - x0) + (t - s) du ] ||^2,   du = d/ds u(x_s, s, t) along x1 - x0 (one JVP).

    The target uses the conditional velocity x1 - x0 twice (target and JVP tangent); its conditional mean given x_s
    is the marginal identity, so the expected update vanishes at the exact map when p = 0. With p > 0 the weight
    correlates with the noise of the conditional target and moves the fixed point (module docstring).
    Stop-gradient: the whole target, JVP included, and the weight. On the diagonal s = t the loss is flow matching.
    Time sampling (defaults): both times logit-normal, paper (-0.4, 1.0) = ours (mu = 0.4, sigma = 1.0), sorted;
    a fraction 0.75 of samples on the diagonal s = t (the paper's "25% r != t", the code's data_proportion 0.75).
    Weighting: w = sg(1 / (err + c)^p), p = `norm_p` = 0 by default (none), c = `norm_c` per dimension (used when
    p > 0; the JAX code's p = 1, c = 0.01 on the sum is norm_p=1.0, norm_c=0.01 / d; the old default here was
    norm_p=1.0, norm_c=1e-3 on the mean).
    """
    x = path_point(batch.x0, batch.x1, batch.s)
    v = batch.x1 - batch.x0
    _, u, du = eulerian_residual(model, x, batch.s, batch.t, v)
    u_tgt = (v + expand_t(batch.t - batch.s, x) * du).detach()  # u = v + (t - s) d/ds u
    err = per_sample_mse(u, u_tgt)
    loss = (adaptive_weight(err, norm_p, norm_c) * err).mean()
    diag = diagonal_mask(batch)
    return loss, {"mse": err.mean().detach(), "fm": _mean(err, diag), "meanflow": _mean(err, ~diag),
                  "n_forward": 0, "n_jvp": 1, "n_backward": 1}


def imf_loss(model: nn.Module, batch: Batch, norm_p: float = 0.0, norm_c: float = 0.01, aux_v_loss: bool = True,
             **_: Any) -> tuple[Tensor, dict]:
    """Improved MeanFlow, iMF (Geng, Lu, Wu, Shechtman, Kolter & He 2025; official code Lyy-iiis/imeanflow
    `imf.py`, `iMeanFlow.forward`).

    Paper (data at 0): the compound velocity V = u(z_t, r, t) + (t - r) sg(d/dt u) with the JVP tangent the model's
    own predicted velocity v_theta(z_t, t) (not eps - x), and a v-loss L = w || V - (eps - x) ||^2, plus the
    auxiliary loss w || v_theta - (eps - x) ||^2 on a separate velocity head, on every row (w adaptive: the code
    sums the squared error over dimensions, p = 1, c = 0.01). Ours, with the diagonal u(x, s, s) as the velocity
    head (iMF's boundary-condition option; no extra head):

        V = u(x_s, s, t) - (t - s) sg[du],   du = d/ds u(x_s, s, t) along sg[u(x_s, s, s)]   (one JVP),
        L = w || V - (x1 - x0) ||^2  +  [s < t] w' || u(x_s, s, s) - (x1 - x0) ||^2   (`aux_v_loss`).

    On the diagonal rows V is u(x_s, s, s) itself, so the auxiliary term runs on the off-diagonal rows only: with
    one head for both, adding it there too would count those rows' velocity loss twice (the code's two heads each
    get it once). V is a function of x_s alone (the tangent is no longer the noisy x1 - x0), so the first term is a
    plain regression of V on the conditional velocity; its minimiser is V = v*, i.e. the MeanFlow identity with the
    marginal velocity. Stop-gradient: the JVP term and the tangent; gradients flow through u and (aux) the diagonal.
    Time sampling (defaults): both times logit-normal, paper (-0.4, 1.0) = ours (0.4, 1.0), sorted; a fraction 0.5
    of samples on the diagonal (the official `data_proportion`; MeanFlow's 0.75 trades one-step for multi-step
    quality on moons: W2 0.232 +- 0.017 -> 0.174 +- 0.008 at 1 -> 4 steps against 0.216 +- 0.013 -> 0.203 +- 0.001,
    3 seeds, benchmarks/results/meanflow_weighting_imf_diag075.json). Weighting: w = sg(1 / (err + c)^p),
    p = `norm_p` = 0 by default (none; the paper's p = 1, c = 0.01 is norm_p=1.0, norm_c=0.01 / d), the same w on
    both terms.
    """
    x = path_point(batch.x0, batch.x1, batch.s)
    v_c = batch.x1 - batch.x0
    v_pred = model(x, batch.s, batch.s)  # the velocity head: the diagonal u(x, s, s)
    _, u, du = eulerian_residual(model, x, batch.s, batch.t, v_pred.detach())
    V = u - expand_t(batch.t - batch.s, x) * du.detach()  # compound velocity V = u - (t - s) sg(d/ds u)
    err_u = per_sample_mse(V, v_c)
    per = adaptive_weight(err_u, norm_p, norm_c) * err_u
    err_v = per_sample_mse(v_pred, v_c)
    if aux_v_loss:  # off the diagonal only: on s = t rows V is u(x, s, s) already (count each row's velocity once)
        off = (~diagonal_mask(batch)).to(err_v.dtype)
        per = per + off * adaptive_weight(err_v, norm_p, norm_c) * err_v
    return per.mean(), {"v_loss": err_u.mean().detach(), "aux_v": err_v.mean().detach(), "n_forward": 1, "n_jvp": 1,
                        "n_backward": 1}


def soflow_batch(x0: Tensor, x1: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                 diagonal_fraction: float = 0.75, velocity_mu: float = 0.2, velocity_sigma: float = 1.0,
                 start_mu: float = -0.2, start_sigma: float = 0.8, end_mu: float = 1.0, end_sigma: float = 0.8,
                 l_ratio: float = 0.01, min_gap: float = 1e-4, **_: Any) -> Batch:
    """SoFlow's times, in ours: a fraction `diagonal_fraction` of velocity samples s = t ~ logit-normal(0.2, 1.0);
    the rest s ~ logit-normal(-0.2, 0.8), t = max(logit-normal(1.0, 0.8), s + min_gap); the finite-difference
    neighbour r = s + l_ratio (t - s). (Paper, data at 0: t ~ LN(-0.2, 1.0); t ~ LN(0.2, 0.8), s ~ LN(-1.0, 0.8).)"""
    check_float(diagonal_fraction, "diagonal_fraction", 0.0, 1.0)
    check_float(l_ratio, "l_ratio", 0.0, 1.0, strict=True, strict_high=True)
    n, dev, dtype = len(x1), x1.device, x1.dtype
    n_diag = int(round(diagonal_fraction * n))
    ln = lambda m, sd: draw_times(n, generator, dev, "logit_normal", m, sd).to(dtype)  # noqa: E731
    v_time = ln(velocity_mu, velocity_sigma)
    s = ln(start_mu, start_sigma).clamp(max=1 - min_gap)
    t = torch.maximum(ln(end_mu, end_sigma), s + min_gap).clamp(max=1.0)
    perm = torch.randperm(n, generator=generator, device=dev)
    diag = torch.zeros(n, dtype=torch.bool, device=dev)
    diag[perm[:n_diag]] = True
    s, t = torch.where(diag, v_time, s), torch.where(diag, v_time, t)
    return Batch(x0=x0, x1=x1, s=s, t=t, r=(s + l_ratio * (t - s)).clamp(s, t), labels=labels)


def soflow_loss(model: nn.Module, batch: Batch, norm_p: float = 0.0, norm_c: float = 0.01,
                **_: Any) -> tuple[Tensor, dict]:
    """SoFlow, solution flow models (Luo, Yuan & Liu 2025; official code `Soflow.get_consistency_loss`): JVP-free.

    Paper (data at 0; f(x_t, t, s) = x_t + (s - t) NN(x_t, t, s) from t down to s): a velocity loss
    w || NN(x_t, t, t) - (eps - x) ||^2 on 75% of the batch and, on the rest, the solution-consistency loss between
    f(x_t, t, s) and sg f(x_l, l, s) at l = t + (s - t) ratio, x_l = x_t + (l - t)(eps - x) (an exact step of the
    conditional path), implemented as sgn(s - t) <NN, sg((f_t - f_l) / (t - l)) w>. Ours (start s, destination t,
    neighbour r = s + ratio (t - s) toward the data, x_r = x_s + (r - s)(x1 - x0)):

        velocity (s = t):    w || u(x_s, s, s) - (x1 - x0) ||^2,
        consistency (s < t): w < u(x_s, s, t), sg Delta >,   Delta = (X(x_s, s, t) - sg X(x_r, r, t)) / (r - s),

    whose gradient equals that of w || X(x_s, s, t) - sg X(x_r, r, t) ||^2 / (2 (t - s)(r - s)): a finite-difference
    (in s) Eulerian residual, Delta -> -E as r -> s, with no JVP. Stop-gradient: the neighbour's jump and the
    weights. Time sampling (defaults): `soflow_batch`, a fraction 0.75 of samples on the diagonal (velocity loss),
    ratio 0.01 fixed (the paper anneals it: `get_middle_time`, exponentially from 0.1 to 0.002 on ImageNet; a fixed
    ratio leaves an O(ratio) bias, like CT's delta). Weighting: w = sg(1 / (err + c)^p) on each term (consistency:
    err = ||Delta||^2 / d); the code means over dimensions like us, with p = 1, c = 0.01 (ImageNet) or p = 0.75,
    c = 1e-3 (CIFAR-10). Default here p = `norm_p` = 0 (none); norm_p=1.0, norm_c=0.01 is the paper's.
    """
    diag = diagonal_mask(batch)
    off = ~diag
    x = path_point(batch.x0, batch.x1, batch.s)
    v_c = batch.x1 - batch.x0
    per = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    fm_err = delta_err = torch.zeros((), dtype=x.dtype)
    if bool(diag.any()):
        err = per_sample_mse(model(x[diag], batch.s[diag], batch.s[diag]), v_c[diag])
        per = per.index_put((diag.nonzero().squeeze(1),), adaptive_weight(err, norm_p, norm_c) * err)
        fm_err = err.mean().detach()
    if bool(off.any()):
        s, r, t = batch.s[off], batch.r[off], batch.t[off]
        u = model(x[off], s, t)
        X_s = x[off] + expand_t(t - s, u) * u  # X(x_s, s, t)
        with torch.no_grad():
            X_r = flow_map(model, path_point(batch.x0, batch.x1, batch.r)[off], r, t)  # sg X(x_r, r, t), same (x0, x1)
            delta = (X_s - X_r) / expand_t(r - s, u)  # finite-difference residual, ~ -E
            d_err = per_sample_mse(delta)
        w = adaptive_weight(d_err, norm_p, norm_c)
        per = per.index_put((off.nonzero().squeeze(1),), w * (u * delta).flatten(1).mean(1))  # w <u, sg Delta> / d
        delta_err = d_err.mean()
    return per.mean(), {"fm": fm_err, "consistency": delta_err, "n_forward": 3, "n_jvp": 0, "n_backward": 1}


def _mean(values: Tensor, mask: Tensor) -> Tensor:
    return values[mask].mean().detach() if bool(mask.any()) else torch.zeros((), dtype=values.dtype)


MEANFLOW_CONVENTION = ("paper: data at 0, u(z, r, t) from t down to r; "
                       "ours: tau = 1 - t, u_paper(z, r, t) = -u(z, 1-t, 1-r)")

register(LossSpec(
    name="meanflow", display_name="MeanFlow", fn=meanflow_loss, family=EULERIAN, setting="marginal-from-conditional",
    paper="Geng, Deng, Bai, Kolter & He 2025, Mean flows for one-step generative modeling",
    convention=MEANFLOW_CONVENTION, time_inputs=2, prediction="average_velocity", make_batch=two_time_batch,
    defaults={"diagonal_fraction": 0.75, "time_sampler": "logit_normal", "mu": 0.4, "sigma": 1.0, "norm_p": 0.0,
              "norm_c": 1e-3},
    summary="regress u on sg[(x1 - x0) + (t - s) d/ds u] (the MeanFlow identity, conditional tangent)"))

register(LossSpec(
    name="imf", display_name="iMF", fn=imf_loss, family=EULERIAN, setting="marginal-from-conditional",
    paper="Geng, Lu, Wu, Shechtman, Kolter & He 2025, Improved mean flows (iMF)",
    convention=MEANFLOW_CONVENTION, time_inputs=2, prediction="average_velocity", make_batch=two_time_batch,
    defaults={"diagonal_fraction": 0.5, "time_sampler": "logit_normal", "mu": 0.4, "sigma": 1.0, "norm_p": 0.0,
              "norm_c": 0.01, "aux_v_loss": True},
    summary="regress V = u - (t - s) sg(d/ds u along the model's own velocity) on x1 - x0 (a v-loss)"))

register(LossSpec(
    name="soflow", display_name="SoFlow", fn=soflow_loss, family=EULERIAN, setting="marginal-from-conditional",
    paper="Luo, Yuan & Liu 2025, SoFlow: solution flow models for one-step generative modeling",
    convention="paper: data at 0, f(x_t, t, s) = x_t + (s - t) NN from t down to s; ours: tau = 1 - t, NN = -u",
    time_inputs=2, prediction="average_velocity", make_batch=soflow_batch,
    defaults={"diagonal_fraction": 0.75, "velocity_mu": 0.2, "velocity_sigma": 1.0, "start_mu": -0.2,
              "start_sigma": 0.8, "end_mu": 1.0, "end_sigma": 0.8, "l_ratio": 0.01, "min_gap": 1e-4, "norm_p": 0.0,
              "norm_c": 0.01},
    summary="flow matching on the diagonal + finite-difference (no JVP) Eulerian consistency"))
