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
# # Lab 02 · Vector fields and the marginalisation trick
#
# **Learning objectives.** After this lab you can
#
# 1. derive the **conditional velocity** $u_t(x \mid x_1) = (x_1 - x)/(1 - t)$ that moves the conditional path of
#    one data point;
# 2. write the **marginal velocity** $v^*(x, t)$ as a posterior-weighted average of conditional velocities, and read the
#    posterior weights $p(x_1 \mid x_t = x)$ off a picture;
# 3. show that the **conditional** flow-matching loss (which we can compute) and the **marginal** one (which we
#    cannot) differ by a constant, so they have the same minimiser and the same gradient, and compute that constant.
#
# Convention: $t = 0$ is noise, $t = 1$ is data; linear path $x_t = (1 - t) x_0 + t x_1$.

# %% [markdown]
# ## 1. Velocities that move distributions
#
# A velocity field $v(x, t)$ moves points by the ODE $\dot x = v(x, t)$. Started from $x_0 \sim p_0$, the points at
# time $t$ have some distribution; we say $v$ **generates** the path $p_t$ if that distribution is $p_t$ for every $t$.
#
# **One data point.** On the linear path every particle moves in a straight line at constant speed:
# $\frac{d}{dt} x_t = x_1 - x_0$. Eliminating $x_0 = (x_t - t x_1)/(1 - t)$ gives a field of position and time:
#
# $$u_t(x \mid x_1) = \frac{x_1 - x}{1 - t},$$
#
# "cover the remaining distance $x_1 - x$ in the remaining time $1 - t$". It generates the conditional path
# $p_t(x \mid x_1) = \mathcal N(t x_1, (1 - t)^2 I)$ of lab 01.
#
# **The whole distribution.** Which field generates the *marginal* path $p_t(x)$? A particle at $x$ at time $t$
# could be heading to any data point; average the conditional velocities over where it is likely heading:
#
# $$v^*(x, t) = \mathbb E\big[\,u_t(x \mid x_1) \;\big|\; x_t = x\,\big]
# = \int u_t(x \mid x_1)\, \underbrace{\frac{p_t(x \mid x_1)\, q(x_1)}{p_t(x)}}_{p(x_1 \mid x_t = x)}\, dx_1
# = \frac{\mathbb E[x_1 \mid x_t = x] - x}{1 - t}.$$
#
# This is the **marginalisation trick** (Lipman et al. 2023): the marginal field generates the marginal path.
# For data made of a few points, or a Gaussian mixture $\sum_k w_k \mathcal N(\mu_k, S_k)$, the posterior splits into
# **posterior weights** $\pi_k(x) = p(k \mid x_t = x) \propto w_k\, \mathcal N(x; t\mu_k, t^2 S_k + (1-t)^2 I)$ and
# $v^*(x, t) = \sum_k \pi_k(x)\, v^*_k(x, t)$, with $v^*_k$ the marginal field of component $k$ alone
# (lab 00's notation table: $u_t(x \mid x_1)$ is always the conditional field, $v^*$ the marginal one, $v_\theta$ the
# network).

# %% [markdown]
# ### In one dimension first
#
# Data at $\pm 3$ again. The two dashed lines are the conditional fields $u_t(x \mid {\pm 3})$; the thick black curve is
# the marginal field, their average weighted by the posterior $P(x_1 = +3 \mid x_t = x)$ (purple, right axis).
# Far from 0 the posterior is certain and the marginal field follows one conditional field; near 0 it switches.
# Move $t$: the switch sharpens as the two bumps of $p_t$ separate.

# %%
from fmlab.viz.fields import marginalisation_1d_widget

marginalisation_1d_widget()

# %% [markdown]
# The closed form behind the curve, checked against the textbook formula
# $u_{0.5}(x) = 2\,(3 \tanh(6x) - x)$ at a few points (nbval compares this output on every run):

# %%
# NBVAL_CHECK_OUTPUT
import math

import torch

from fmlab.data import worked_example_1d

data_pm3 = worked_example_1d()
for x in (-2.0, -0.5, 0.05, 0.1, 1.5):
    code_value = data_pm3.velocity(torch.tensor([[x]], dtype=torch.float64), 0.5).item()
    textbook = 2 * (3 * math.tanh(6 * x) - x)
    print(f"x = {x:+.2f}:  fmlab u_0.5(x) = {code_value:+.4f}   textbook 2(3 tanh 6x - x) = {textbook:+.4f}")

# %% [markdown]
# ### In two dimensions
#
# Left: the conditional field of one data point $x_1$ (star), arrows pointing straight at it, with samples of its
# conditional path. Right: the marginal field (black arrows, closed form) over the posterior weights: each component
# has a colour, and the background blends them by $p(k \mid x_t = x)$. Each arrow shows where a particle moves in
# $\Delta t = 0.1$ (long arrows are capped). Choose the data, the point $x_1$, and move $t$.

# %%
from fmlab.viz.fields import fields_widget

fields_widget("three_points")

# %% [markdown]
# **What to look for**
#
# * At $t = 0$ the background is one blended colour (every component is equally likely from pure noise) and all
#   marginal arrows point towards the data mean $\mathbb E[x_1]$: a one-step sampler would land there.
# * As $t$ grows the colours separate into regions, one per component, with sharp borders; inside a region the
#   marginal arrows agree with the conditional arrows of that component.
# * On a border a particle is "undecided": the marginal arrows there are short and point along the border, an
#   average of two directions. Marginal trajectories therefore **bend** and never cross, although every conditional
#   trajectory is straight. Labs 04 and 05 come back to this.

# %% [markdown]
# ## 2. The loss we can compute has the gradient of the loss we want
#
# We would like to regress a network $v_\theta$ on the marginal field,
#
# $$\mathcal L_{\mathrm{FM}}(\theta) = \mathbb E_{t, x_t}\,\big\| v_\theta(x_t, t) - v^*(x_t, t) \big\|^2,$$
#
# but $v^*$ needs the posterior over the whole data set. **Conditional flow matching** uses the conditional target
# instead, which only needs the pair we drew, $u_t(x_t \mid x_1) = x_1 - x_0$:
#
# $$\mathcal L_{\mathrm{CFM}}(\theta) = \mathbb E_{t, x_0, x_1}\,\big\| v_\theta(x_t, t) - (x_1 - x_0) \big\|^2 .$$
#
# Write $x_1 - x_0 = v^*(x_t, t) + \varepsilon$ with $\varepsilon = (x_1 - x_0) - v^*(x_t, t)$ and expand the square:
#
# $$\mathcal L_{\mathrm{CFM}} = \mathcal L_{\mathrm{FM}}
# - 2\,\mathbb E\big[\langle v_\theta(x_t, t) - v^*(x_t, t),\ \varepsilon \rangle\big]
# + \mathbb E\,\|\varepsilon\|^2 .$$
#
# Given $x_t$, the first factor is fixed and $\mathbb E[\varepsilon \mid x_t] = 0$ (that is the definition of $v^*$), so
# the middle term vanishes and
#
# $$\boxed{\ \mathcal L_{\mathrm{CFM}}(\theta) = \mathcal L_{\mathrm{FM}}(\theta) + C,\qquad
# C = \mathbb E\,\mathrm{tr}\,\mathrm{Var}\big(x_1 - x_0 \mid x_t\big)
# = \mathbb E\,\frac{\mathrm{tr}\,\mathrm{Cov}(x_1 \mid x_t)}{(1 - t)^2}\ }$$
#
# with $C$ independent of $\theta$: same minimiser, same gradient. $C$ is also the **smallest value the CFM loss can
# reach**: a perfect model does not drive the training loss to zero.
#
# Let us check all of this numerically on the 8-mode mixture: both losses for two untrained networks of different
# shapes on the same Monte Carlo batch, the gap between them, the cosine between their parameter gradients, and $C$
# computed independently from the closed-form posterior covariance (`GaussianMixture.posterior_variance`).

# %%
from fmlab.labkit import pick
from fmlab.viz.fields import marginalisation_demo, render_loss_gap

demo = marginalisation_demo("8modes", n=pick(400_000, 100_000), seed=0)
print(demo.table())
render_loss_gap(demo)

# %% [markdown]
# The claims, asserted (a regression in the closed-form velocity, the posterior or the loss fails here):

# %%
import math

gaps = [g.gap for g in demo.gaps.values()]
C = demo.constant_posterior
assert max(gaps) - min(gaps) < 0.03 * C, gaps                  # the gap does not depend on the model
assert abs(demo.constant_mc - C) < 0.05 * C                     # ... and equals E tr Var(x1 - x0 | x_t)
cosines = [g.grad_cosine for g in demo.gaps.values() if not math.isnan(g.grad_cosine)]
assert min(cosines) > 0.99, cosines                             # same gradient direction
print(f"gap = {sum(gaps) / len(gaps):.3f} for every model;  C from the posterior = {C:.3f}")

# %% [markdown]
# ### Same gradient *in expectation*
#
# The identity holds for expectations. On a finite batch the conditional gradient carries extra noise from
# $\varepsilon$, and that noise matters once the model is good, because the true gradient becomes small while the
# noise does not. Train a network for a little while and compare again:

# %%
from fmlab.labkit import steps, train_cached
from fmlab.train import TrainConfig

trained = train_cached(TrainConfig(data="8gaussians", steps=steps(1500, 200), batch_size=256, hidden=64, depth=3,
                                   lr=3e-3, warmup=50, log_every=50, ckpt_every=0, seed=0))
demo_trained = marginalisation_demo("8modes", n=pick(400_000, 100_000), seed=0,
                                    models={f"trained MLP ({trained.step} steps)": trained.model})
print(demo_trained.table())

# %% [markdown]
# The trained model's marginal loss is far smaller, its gap is still $C$, but its gradient cosine is lower: with the
# same batch size, the conditional gradient of a good model is mostly noise. (Increase `n` to watch the cosine climb
# back towards 1.) This variance of the conditional target is exactly what better **couplings** reduce in lab 05.

# %% [markdown]
# ## Your turn
#
# **Exercise 1.** Compute the conditional velocity $u_t(x \mid x_1)$ at $x = (0, 0)$ for $x_1 = (2, 1)$ and
# $t = 0.5$ (a list of two numbers).

# %%
from fmlab.exercises.fields import check_conditional_velocity

my_velocity = None   # your answer, e.g. [a, b]
check_conditional_velocity(my_velocity)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $u_t(x \mid x_1) = (x_1 - x)/(1 - t) = (2, 1)/0.5 = (4, 2)$: twice the remaining distance, because only half
# the time is left.
#
# </details>

# %% [markdown]
# **Exercise 2.** For data at $\pm 3$, compute the marginal velocity at $x = 0.1$, $t = 0.5$ **by hand** from the
# posterior weights: $\pi_\pm \propto \mathcal N(x;\ \pm 3t,\ (1 - t)^2)$ and
# $v^*(x, t) = \pi_+ u_t(x \mid 3) + \pi_- u_t(x \mid -3)$. Surprised how large it is, so close to the middle?

# %%
from fmlab.exercises.fields import check_marginal_velocity

my_velocity = None   # your answer
check_marginal_velocity(my_velocity)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# t, x = 0.5, 0.1
# log_w = torch.tensor([-(x + 3 * t) ** 2, -(x - 3 * t) ** 2]) / (2 * (1 - t) ** 2)   # equal prior weights
# pi_minus, pi_plus = torch.softmax(log_w, 0)
# u = pi_plus * (3 - x) / (1 - t) + pi_minus * (-3 - x) / (1 - t)
# check_marginal_velocity(u.item())   # 3.022 = 2 (3 tanh(0.6) - 0.1)
# ```
# The posterior ratio is $\pi_+/\pi_- = e^{1.2} \approx 3.3$ already at $x = 0.1$: the two bumps at $\pm 1.5$ have
# width $0.5$, so a small step off-centre is strong evidence.
#
# </details>

# %% [markdown]
# **Exercise 3.** For data at $\pm 3$ and the **fixed** time $t = 0.5$, compute the constant
# $C = \mathbb E\,\mathrm{Var}(x_1 - x_0 \mid x_t)$, the lowest possible value of the conditional loss at that time.
# Use samples $x_t$ and `data_pm3.posterior_variance(x, 0.5)` (which returns $\mathrm{Var}(x_1 \mid x_t = x)$);
# about a million samples give 1 % accuracy.

# %%
from fmlab.exercises.fields import check_loss_constant

my_constant = None   # your answer
check_loss_constant(my_constant)


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# g = torch.Generator().manual_seed(0)
# x1 = data_pm3.sample(10**6, generator=g).double()
# xt = 0.5 * x1 + 0.5 * torch.randn(x1.shape, generator=g, dtype=torch.float64)
# C = (data_pm3.posterior_variance(xt, 0.5) / 0.5**2).mean().item()   # Var(x1 - x0 | x_t) = Var(x1 | x_t) / (1 - t)^2
# check_loss_constant(C)   # about 0.15
# ```
# Only points near $x_t \approx 0$ are uncertain about their destination, so $C$ is small at $t = 0.5$; at $t = 0$
# every point is uncertain about its destination and $C = \mathrm{Var}(x_1) = 9$
# (given $x_t = x_0$, only $x_1$ is random).
#
# </details>

# %% [markdown]
# ## Write it yourself
#
# The next two exercises ask for code. Replace `raise NotImplementedError` in each stub with your code, run the cell,
# then run the checker below it: it compares your function with fmlab's closed form at random points and names the
# common mistakes. The cell after uses your function once it passes, and fmlab's (with a note) until then. Batches:
# points `x` of shape `[B, 2]` (or `[B]` in one dimension) and one time per point, `t` of shape `[B]`.
#
# **Exercise 4.** Write `conditional_field(x, x1, t)`, the conditional field of one data point,
# $u_t(x \mid x_1) = (x_1 - x) / (1 - t)$, for a batch of points `x` and data points `x1` (both `[B, 2]`).

# %%
def conditional_field(x, x1, t):
    """u_t(x | x1) = (x1 - x) / (1 - t). x, x1: [B, 2]; t: [B] in [0, 1). Returns [B, 2]."""
    raise NotImplementedError


# %%
from fmlab.exercises.fields import check_conditional_field, check_marginal_field, marginal_field_function

results = {"Exercise 4: conditional_field": check_conditional_field(conditional_field)}


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def conditional_field(x, x1, t):
#     return (x1 - x) / (1 - t[:, None])
# ```
#
# </details>

# %% [markdown]
# **Exercise 5.** Write `marginal_field(x, t, means, weights)`, the marginal field $v^*(x, t)$ of one-dimensional
# data made of two points $m_1, m_2$ with mixture weights $w_1, w_2$ (the checker uses $m = (-1, 2)$,
# $w = (0.3, 0.7)$). Here `x` and `t` have shape `[B]`, `means` and `weights` shape `[2]`:
#
# $$\pi_k(x) = \frac{w_k\, \mathcal N\big(x;\ t\, m_k,\ (1 - t)^2\big)}{\sum_j w_j\, \mathcal N\big(x;\ t\, m_j,\ (1 - t)^2\big)},
# \qquad v^*(x, t) = \sum_k \pi_k(x)\, \frac{m_k - x}{1 - t}.$$
#
# Compute the posterior weights with `torch.softmax` over the log-weights: the Gaussians' common factor cancels.

# %%
def marginal_field(x, t, means, weights):
    """v*(x, t) = sum_k pi_k(x) (m_k - x) / (1 - t), pi_k the posterior weights. x, t: [B]; means, weights: [2].
    Returns [B]."""
    raise NotImplementedError


# %%
results["Exercise 5: marginal_field"] = check_marginal_field(marginal_field)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def marginal_field(x, t, means, weights):
#     x, t = x[:, None], t[:, None]                        # [B, 1] against the two components [2]
#     log_post = weights.log() - (x - t * means) ** 2 / (2 * (1 - t) ** 2)
#     post = torch.softmax(log_post, dim=1)                # pi_k(x), [B, 2]
#     return (post * (means - x) / (1 - t)).sum(dim=1)
# ```
#
# </details>

# %% [markdown]
# **Using your field.** The marginal field must carry the noise onto the data with the right weights. The cell below
# moves 4000 noise points with 200 Euler steps of the field from $t = 0$ to $t = 0.99$ and counts how many end
# near $m_2 = 2$ (weight $0.7$); with 4000 points the count's standard error is $0.007$.

# %%
from fmlab.exercises.fields import MIXTURE_MEANS, MIXTURE_WEIGHTS

field = marginal_field_function(marginal_field)
means, weights = torch.tensor(MIXTURE_MEANS, dtype=torch.float64), torch.tensor(MIXTURE_WEIGHTS, dtype=torch.float64)
x = torch.randn(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
n_steps, t_end = 200, 0.99
for k in range(n_steps):
    x = x + t_end / n_steps * field(x, torch.full_like(x, k * t_end / n_steps), means, weights)
share = (x > 0.5).double().mean().item()
print(f"share of particles near m_2 = 2: {share:.3f} (weight 0.7)")
assert abs(share - MIXTURE_WEIGHTS[1]) < 0.03

# %%
from fmlab.exercises.code import exercise_report

open_exercises = exercise_report(results)

# %% [markdown]
# ## Summary
#
# * Conditional field: $u_t(x \mid x_1) = (x_1 - x)/(1 - t)$, straight at the data point.
# * Marginal field: $v^*(x, t) = \mathbb E[u_t(x \mid x_1) \mid x_t = x]$, a posterior-weighted average that generates
#   the marginal path; its trajectories bend where the posterior is uncertain.
# * $\mathcal L_{\mathrm{CFM}} = \mathcal L_{\mathrm{FM}} + C$ with $C = \mathbb E\,\mathrm{tr}\,\mathrm{Var}(x_1 - x_0 \mid x_t)$:
#   training on the easy conditional target learns the marginal field, at the price of gradient noise of size $C$.
#
# **Next, lab 03:** train a flow-matching model live and compare the learned field with the closed-form one.

# %% [markdown]
# ## Further reading
#
# Notation as in lab 00's table. This lab draws on:
#
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023:
#   conditional fields, the marginalisation trick, conditional and marginal losses with the same gradient.
# * M. S. Albergo, E. Vanden-Eijnden, *Building Normalizing Flows with Stochastic Interpolants*, ICLR 2023: the
#   marginal velocity as a conditional expectation.
# * A. Tong, K. Fatras, N. Malkin, G. Huguet, Y. Zhang, J. Rector-Brooks, G. Wolf, Y. Bengio, *Improving and
#   Generalizing Flow-Based Generative Models with Minibatch Optimal Transport*, TMLR 2024: the variance of the
#   conditional target.
