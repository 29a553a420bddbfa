# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 08: the continuity equation and exact likelihoods
#
# A flow moves particles; how does it move their *density*? The answer, the **continuity equation**, explains why the
# marginal field of flow matching produces the right distribution at every time, and it turns a trained flow into a
# model whose likelihood $p(x)$ of any point can be computed exactly (up to the ODE solver's error), which a GAN, for
# instance, cannot offer at all.
#
# **Notation** (as in every lab). Noise $x_0 \sim \mathcal N(0, I)$ at time $t = 0$, data $x_1 \sim q$ at $t = 1$; the
# linear path $x_t = (1-t)\,x_0 + t\,x_1$ with density $p_t$; $v^*(x, t) = \mathbb E[x_1 - x_0 \mid x_t = x]$ is the
# **marginal field** (lab 02, vector fields) and $v_\theta$ the trained network (lab 03, training). A particle follows
# $dx/dt = v(x, t)$. The data are Gaussian mixtures whose $p_t$ and $v^*$ are known in closed form (black in every
# figure).
#
# **You will**
#
# 1. derive the continuity equation $\partial_t p + \nabla\cdot(p\,v) = 0$ and watch it hold in 1D: particles against
#    the closed-form density, with the probability flux drawn, under a $t$ slider;
# 2. follow the log-density along one trajectory, $\tfrac{d}{dt}\log p_t(x_t) = -\nabla\cdot v$, and compute a
#    divergence yourself;
# 3. compute exact log-likelihoods by integrating the divergence, and estimate the divergence with Hutchinson's
#    random probes, with a slider for the number of probes;
# 4. measure a trained 2D model's likelihood on held-out data in bits per dimension, against the true density's.

# %%
import torch

from fmlab.data import gmm_2d
from fmlab.exercises import likelihood as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.likelihood import bits_per_dim, log_likelihood
from fmlab.viz import likelihood as LK
from fmlab.viz import training as T
from fmlab.viz.score_sde import sde_config

torch.manual_seed(0)
GMM = gmm_2d("8modes")
CONFIG = sde_config(steps(4000, 300))  # flow matching on the 8 Gaussians, the network of lab 07 (score and SDEs)
model = T.fit(CONFIG).ema


def exact(x, t):
    return GMM.velocity(x, t)  # the closed-form marginal field v*(x, t)


print(f"fast mode: {fast_mode()}; {CONFIG.steps} training steps")

# %% [markdown]
# ## 1. The continuity equation
#
# Start in one dimension. Particles move with velocity $v(x, t)$ and have density $p_t(x)$. The **flux**
# $J = p_t\,v$ is the rate at which probability mass crosses the point $x$ (mass per unit length times distance per
# unit time). Mass is neither created nor destroyed, so the mass in an interval $[a, b]$ changes only by what flows in
# at $a$ and out at $b$:
#
# $$\frac{d}{dt}\int_a^b p_t(x)\,dx = J(a, t) - J(b, t) = -\int_a^b \frac{\partial J}{\partial x}\,dx.$$
#
# This holds for every interval, so the integrands agree: $\partial_t p = -\partial_x J$. In $d$ dimensions the same
# bookkeeping over a small box gives the **continuity equation**
#
# $$\frac{\partial p_t}{\partial t} + \nabla\cdot(p_t\,v) = 0, \qquad \nabla\cdot u = \sum_{i=1}^d
# \frac{\partial u_i}{\partial x_i}\ \text{(the divergence)}.$$
#
# The figure uses 1D data, $q = 0.4\,\mathcal N(-2, 0.4^2) + 0.6\,\mathcal N(1.5, 0.5^2)$. Particles start as
# $\mathcal N(0, 1)$ samples and are moved by the closed-form $v^*$ (RK4); their histogram (green) is drawn over the
# closed-form $p_t$ (black), with the flux $J = p_t\,v^*$ (vermillion). Below, the two sides of the equation:
# $\partial_t p$ and $-\partial_x J$, both from finite differences of the closed form. Move $t$: where the flux
# decreases with $x$, mass piles up and the density rises.

# %%
LK.continuity_widget(n=pick(20_000, 5_000))

# %%
# NBVAL_CHECK_OUTPUT
for t in (0.0, 0.3, 0.7, 1.0):
    _, dp_dt, minus_dj_dx = LK.continuity_residual(t)
    relative = ((dp_dt - minus_dj_dx).abs().max() / dp_dt.abs().max()).item()
    print(f"t = {t:.1f}: max |dp/dt + dJ/dx| / max |dp/dt| {'< 1e-4' if relative < 1e-4 else relative}")
    assert relative < 1e-4


# %% [markdown]
# **Why the marginal field produces $p_t$.** Given one data point $x_1$, the conditional path has density
# $p_t(x \mid x_1)$ and velocity $u(x \mid x_1) = (x_1 - x)/(1-t)$ (that is $x_1 - x_0$ on the path), and they
# satisfy the continuity equation (every particle of it moves with $u$). Average these equations over $x_1 \sim q$: because the equation is *linear* in $p$, the
# averaged density is $p_t$ and the averaged flux is $\int p_t(x \mid x_1)\,u\,q(x_1)\,dx_1 = p_t(x)\,\mathbb E[u \mid
# x_t = x] = p_t\,v^*$. So $\partial_t p_t + \nabla\cdot(p_t v^*) = 0$: the field $v^*$ moves $p_0$ exactly through
# the $p_t$ of the path and ends at the data. This is the marginalisation trick of lab 02 (vector fields), seen from the
# density's side.

# %% [markdown]
# ## 2. The density along one trajectory
#
# Follow one particle, $dx_t/dt = v(x_t, t)$. By the chain rule, the density it sees changes as
# $\tfrac{d}{dt}\,p_t(x_t) = \partial_t p + v\cdot\nabla p$. The continuity equation, written out with the product
# rule, is $\partial_t p + v\cdot\nabla p + p\,\nabla\cdot v = 0$, so
#
# $$\frac{d}{dt}\log p_t(x_t) = -\,\nabla\cdot v(x_t, t).$$
#
# This is the **instantaneous change of variables** (Chen et al. 2018, neural ODEs). Where the field spreads particles
# apart ($\nabla\cdot v > 0$) the density along the trajectory falls; where it squeezes them together it rises.
#
# **Exercise 1 (code).** Write `my_divergence(field, x, t)`: `field(x, t)` returns [B, 2] for `x` [B, 2] and `t` [B];
# return $\nabla\cdot v$ at each sample, shape [B], with `torch.autograd.grad`. The checker uses a field whose Jacobian
# is not symmetric and recognises the usual mistakes (summing the whole Jacobian, keeping the diagonal unsummed).

# %%
def my_divergence(field, x, t):
    """sum_i d v_i / d x_i at each sample: [B]."""
    raise NotImplementedError


ex.check_divergence(my_divergence)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def my_divergence(field, x, t):
#     x = x.detach().requires_grad_(True)
#     v = field(x, t)
#     div = torch.zeros(len(x), dtype=x.dtype)
#     for i in range(x.shape[1]):
#         # samples are independent, so the gradient of the batch sum of v_i gives d v_i / d x at every sample
#         grad_i = torch.autograd.grad(v[:, i].sum(), x, create_graph=False, retain_graph=True)[0]
#         div = div + grad_i[:, i]
#     return div
# ```
#
# </details>

# %% [markdown]
# **Exercise 2.** In 2D, the field $v(x, t) = -x$ moves a particle from $t = 0$ to $t = 1$. By how much does
# $\log p_t(x_t)$ change along its trajectory?

# %%
answer = None
ex.check_log_density_change(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\nabla\cdot(-x) = -1 - 1 = -2$ at every point, so $\tfrac{d}{dt}\log p = +2$ and over one unit of time the log-density
# rises by 2: `ex.check_log_density_change(2)`. The field contracts areas by $e^{-2}$, and the same mass in a smaller
# area has a density $e^{2}$ times higher.
#
# </details>

# %% [markdown]
# ## 3. Exact log-likelihood by the ODE
#
# Integrate the last equation from $t = 0$ to $t = 1$ along the trajectory that ends at a data point $x$:
#
# $$\log p_1(x) = \log \mathcal N(x_0; 0, I) - \int_0^1 \nabla\cdot v(x_t, t)\,dt,$$
#
# where $x_0$ is the noise the trajectory started from. We do not know $x_0$, but we can find it: solve the ODE
# **backward** from $x$ at $t = 1$ to $t = 0$, carrying the running integral of the divergence as an extra coordinate
# (`fmlab.likelihood.log_likelihood`, RK4). For the closed-form field $v^*$, $p_1$ is the 8-Gaussian mixture, whose
# log-density we can evaluate directly: the two must agree up to the solver's error. The divergence here is yours once
# it passes exercise 1 (fmlab's `divergence` until then).

# %%
# NBVAL_CHECK_OUTPUT
div_fn = ex.divergence_function(my_divergence)
x_test = GMM.sample(8, generator=torch.Generator().manual_seed(4))
by_ode = log_likelihood(exact, x_test, steps=50, estimator=div_fn).log_prob
closed_form = GMM.log_prob(x_test)
print(f"8 data points, RK4 with 50 steps: max |log p by the ODE - closed form| = "
      f"{'< 1e-3' if (by_ode - closed_form).abs().max() < 1e-3 else (by_ode - closed_form).abs().max().item()}")
assert (by_ode - closed_form).abs().max() < 1e-3

# %% [markdown]
# ## 4. Hutchinson's estimator: the divergence from random probes
#
# The exact divergence costs one backward pass per dimension: $d$ passes, fine in 2D but not for a $64\times64$ image
# with $d = 12288$. **Hutchinson's estimator** needs one. Write $A = \partial v/\partial x$ for the Jacobian, so that
# $\nabla\cdot v = \operatorname{tr} A$. Draw a random probe $z$ with $\mathbb E[z z^\top] = I$, e.g. **Rademacher**
# entries $\pm 1$ with probability $\tfrac12$ each; then
#
# $$\mathbb E\big[z^\top A z\big] = \operatorname{tr}\big(A\,\mathbb E[z z^\top]\big) = \operatorname{tr} A,$$
#
# and $z^\top A z$ costs one vector-Jacobian product. The estimate is unbiased but noisy. With Rademacher probes
# $z^\top A z = \sum_i A_{ii} + \sum_{i<j}(A_{ij} + A_{ji})\,z_i z_j$: the diagonal is exact and the noise comes from
# the off-diagonal entries only. Averaging $K$ independent probes divides the variance by $K$, so the **standard error**
# (the standard deviation of the average) is $\text{std}/\sqrt K$. As in FFJORD (Grathwohl et al. 2019), each probe is
# held fixed along a trajectory, so one probe gives one estimate of the whole log-likelihood.
#
# Below, points of the 8-Gaussian mixture: each vermillion dot is the $K$-probe estimate of $\log p_1$ with 2 standard
# errors as bars, each black circle the exact-trace value, both against the closed-form log-density (the dotted line
# is "estimate = truth"). The right panel shows the measured RMS error against $K$ with a $1/\sqrt K$ line. Move
# **probes K**.

# %%
x_points = GMM.sample(pick(40, 16), generator=torch.Generator().manual_seed(5))
runs = LK.HutchinsonRuns(exact, x_points, GMM.log_prob(x_points), max_probes=pick(64, 16), steps=pick(50, 20))
LK.hutchinson_widget(runs, probes=1)

# %%
slope = torch.log(torch.tensor(runs.rms[-1] / runs.rms[0])) / torch.log(torch.tensor(runs.ks[-1] / runs.ks[0]))
print(f"RMS error {runs.rms[0]:.3f} nats with 1 probe, {runs.rms[-1]:.3f} with {runs.ks[-1]}; slope {slope:.2f} "
      "(1/sqrt(K): -0.5)")
assert -0.8 < slope < -0.25

# %% [markdown]
# **Exercise 3.** By what factor must the number of probes grow to halve the standard error?

# %%
answer = None
ex.check_probes_for_half_se(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\text{SE} = \text{std}/\sqrt K$, so halving it takes $4K$ probes: `ex.check_probes_for_half_se(4)`. Precision is
# expensive: each further halving costs four times as many passes.
#
# </details>

# %% [markdown]
# ## 5. A trained model's likelihood, in bits per dimension
#
# Now the network $v_\theta$ trained by flow matching on the 8 Gaussians. Its log-density by the ODE (exact trace, on a
# grid; left) is compared with the true mixture's (right), on the same colour scale; orange dots are held-out data
# points, never seen in training.

# %%
res, ode_steps = pick(41, 21), pick(50, 20)
model_grid = LK.density_grid(model, res=res, steps=ode_steps)
axis = torch.linspace(-T.EXTENT, T.EXTENT, res, dtype=torch.float64)
true_grid = GMM.log_prob(torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)).reshape(res, res)
held_out = GMM.sample(pick(2000, 300), generator=torch.Generator().manual_seed(12_345))
LK.render_density_comparison(model_grid, true_grid, held_out=held_out[:300])

# %% [markdown]
# The usual score of a likelihood model is the **negative log-likelihood (NLL)** of held-out data, averaged over the
# points: lower is better. Since $\mathbb E_{x \sim q}[\log q(x) - \log p_\theta(x)] = \mathrm{KL}(q\,\|\,p_\theta)
# \ge 0$ (the Kullback-Leibler divergence), no model beats the true density on average, and the gap between the two
# NLLs estimates how far the model is from the data distribution. Papers quote **bits per dimension**: the NLL in
# nats (natural log) divided by $d \ln 2$ (nats to bits, per coordinate), so that numbers compare across dimensions.

# %%
model_lp = log_likelihood(model, held_out.float(), steps=ode_steps).log_prob.double()
summary = LK.nll_summary(model_lp, GMM.log_prob(held_out), dim=2)
print(summary.table())
assert summary.nats("gap")[0] > -3 * summary.nats("gap")[1]  # the truth is not beaten beyond noise

# %% [markdown]
# In a full-size measurement (3 training seeds of 4000 steps, the same 2000 held-out points, RK4 with 50 steps, exact
# trace; mean ± std over the seeds)
#
# ```
# python benchmarks/likelihood.py --n 2000 --seeds 3 --train-steps 4000 --ode-steps 50
# ```
#
# | | nats per point | bits per dimension |
# |---|---|---|
# | model $v_\theta$ (ODE) | 2.910 ± 0.001 | 2.099 ± 0.000 |
# | true density | 2.866 | 2.068 |
# | gap (estimate of $\mathrm{KL}(q\,\|\,p_\theta)$) | 0.043 ± 0.001 | 0.031 ± 0.000 |
#
# Each seed's gap is about 7 standard errors (over the 2000 points, 0.006 nats) above zero: the trained flow is close to
# the data distribution, and measurably not equal to it. In fast mode the network is trained for 300 steps only,
# so the live numbers above differ from these.
#
# **Exercise 4.** A model's NLL is 2.1 nats per 2D point. How many bits per dimension is that?

# %%
answer = None
ex.check_bits_per_dim(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $2.1 / (2 \ln 2) = 1.515$ bits per dimension: `ex.check_bits_per_dim(2.1 / (2 * 0.6931))`, or with fmlab,
# `bits_per_dim(2.1, 2)`.
#
# </details>

# %%
print(f"bits_per_dim(2.1, 2) = {bits_per_dim(2.1, 2):.3f}")

# %% [markdown]
# ## Summary
#
# - Mass conservation gives the continuity equation $\partial_t p + \nabla\cdot(p\,v) = 0$; because it is linear,
#   averaging the conditional paths' equations shows that $v^*$ moves the noise exactly through $p_t$ to the data.
# - Along a trajectory $\tfrac{d}{dt}\log p_t = -\nabla\cdot v$, so a flow's exact log-likelihood is $\log\mathcal N(x_0)$
#   minus the integral of the divergence, with $x_0$ found by solving the ODE backward.
# - The exact divergence costs $d$ backward passes; Hutchinson's estimate $z^\top A z$ costs one, is unbiased, and
#   its standard error falls as $1/\sqrt K$ with $K$ probes.
# - A trained 2D flow's held-out NLL sits above the true density's; the gap estimates $\mathrm{KL}(q\,\|\,p_\theta)$.
#
# **Next:** lab 13 (CelebA 64) scales flow matching to images; there $d = 12288$, and a likelihood would need
# Hutchinson's estimator.

# %% [markdown]
# ## Further reading
#
# * R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, *Neural Ordinary Differential Equations*, NeurIPS 2018:
#   the instantaneous change of variables.
# * W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, *FFJORD: Free-form Continuous Dynamics
#   for Scalable Reversible Generative Models*, ICLR 2019: Hutchinson's trace estimator for flow likelihoods.
# * M. F. Hutchinson, *A stochastic estimator of the trace of the influence matrix for Laplacian smoothing splines*,
#   1989: the estimator.
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023: the
#   continuity equation behind the marginal field, and likelihoods of flow-matching models.
#
# The notation is lab 00's table.
