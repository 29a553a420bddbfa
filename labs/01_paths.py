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
# # Lab 01 · Probability paths
#
# **Learning objectives.** After this lab you can
#
# 1. write down the **conditional path** $p_t(x \mid x_1)$ of one data point and sketch it for any $t$;
# 2. explain the **marginal path** $p_t(x)$ as the average of conditional paths over the data, and compute it in closed
#    form for a Gaussian mixture;
# 3. compare the **linear, cosine and variance-preserving schedules** through $\alpha_t$, $\sigma_t$ and the
#    signal-to-noise ratio;
# 4. check a textbook worked example against the code.
#
# Convention (all labs): $t = 0$ is noise $x_0 \sim \mathcal N(0, I)$, $t = 1$ is data $x_1 \sim q$.

# %% [markdown]
# ## 1. From one data point to a whole distribution
#
# A **schedule** mixes a data point and a noise point:
#
# $$x_t = \alpha_t\, x_1 + \sigma_t\, x_0, \qquad \alpha_0 = 0,\ \sigma_0 = 1, \qquad \alpha_1 = 1,\ \sigma_1 = 0 .$$
#
# The simplest choice, used throughout these labs, is the **linear** (a.k.a. *CondOT* or *rectified-flow*) path
# $\alpha_t = t$, $\sigma_t = 1 - t$, so $x_t = (1 - t) x_0 + t x_1$.
#
# **Conditional path.** Fix one data point $x_1$. Since $x_0$ is Gaussian, so is $x_t$:
#
# $$p_t(x \mid x_1) = \mathcal N\!\big(x;\ \alpha_t x_1,\ \sigma_t^2 I\big)
# \quad\overset{\text{linear}}{=}\quad \mathcal N\!\big(x;\ t\, x_1,\ (1 - t)^2 I\big).$$
#
# At $t = 0$ it is the standard normal; as $t \to 1$ its mean slides to $x_1$ and its width shrinks to zero.
#
# **Marginal path.** Now draw the data point too, $x_1 \sim q$. The distribution of $x_t$ is the average of the
# conditional paths over the data:
#
# $$p_t(x) = \int p_t(x \mid x_1)\, q(x_1)\, dx_1 .$$
#
# It starts as pure noise, $p_0 = \mathcal N(0, I)$, and ends as the data, $p_1 = q$. For a **Gaussian mixture**
# $q = \sum_k w_k\, \mathcal N(\mu_k, S_k)$ the integral is closed-form: each component stays Gaussian,
#
# $$p_t(x) = \sum_k w_k\, \mathcal N\!\big(x;\ \alpha_t \mu_k,\ \alpha_t^2 S_k + \sigma_t^2 I\big),$$
#
# which is what `fmlab.data.GaussianMixture.marginal_log_prob` computes.
#
# **Try it.** Left: the conditional path of the single data point $x_1 = (2, 1)$ (star), with $1\sigma_t$ and
# $2\sigma_t$ circles. Right: the marginal path of a three-component mixture, exact density as grey contours and
# samples $x_t$ on top. Move $t$; switch the schedule and the data.

# %%
from fmlab.viz.paths import paths_widget

paths_widget(x1=(2.0, 1.0))

# %% [markdown]
# **What to look for**
#
# * Left, linear schedule: the cloud's centre moves on the straight line from the origin to $x_1$ at constant speed, and
#   its radius shrinks linearly, $1 - t$. Every grey line from a noise point ends at the star.
# * Right: at small $t$ the marginal is still one blob; the components separate only later, once $\alpha_t \mu_k$ are
#   further apart than the noise width $\sigma_t$. Each component is the average of the conditional paths of its own
#   data points.
# * Switch to *VP*: the cloud hardly moves during the first third of the time, then the structure appears quickly.
#   The next section shows why.

# %% [markdown]
# ## 2. Schedules: how fast the signal arrives
#
# Three schedules ship with fmlab (`fmlab.paths`):
#
# | schedule | $\alpha_t$ | $\sigma_t$ | note |
# |---|---|---|---|
# | linear (CondOT) | $t$ | $1 - t$ | straight lines, constant velocity $x_1 - x_0$ |
# | cosine | $\sin(\tfrac{\pi}{2} t)$ | $\cos(\tfrac{\pi}{2} t)$ | variance preserving: $\alpha_t^2 + \sigma_t^2 = 1$ |
# | VP (DDPM) | $e^{-\frac12 T(1 - t)}$ | $\sqrt{1 - \alpha_t^2}$ | $T(r) = \beta_{\min} r + \tfrac12 (\beta_{\max} - \beta_{\min}) r^2$, $\beta_{\min} = 0.1$, $\beta_{\max} = 20$ |
#
# A useful single number is the **signal-to-noise ratio** $\mathrm{SNR}_t = \alpha_t^2 / \sigma_t^2$: how much of
# $x_t$ is data. The right panel shows $\log \mathrm{SNR}_t$; where it crosses 0, signal and noise have equal weight.

# %%
from fmlab.viz.paths import schedules_widget

schedules_widget()

# %% [markdown]
# The values below are part of the lab's regression test (nbval compares this cell's printed output with the committed
# one, so a change in any schedule fails CI):

# %%
# NBVAL_CHECK_OUTPUT
from fmlab.viz.paths import schedule_values

print(f"{'t':>5} | {'linear a, s':>13} | {'cosine a, s':>13} | {'vp a, s':>13}")
for t in (0.0, 0.25, 0.5, 0.75, 1.0):
    row = [schedule_values(name, t) for name in ("linear", "cosine", "vp")]
    print(f"{t:5.2f} | " + " | ".join(f"{float(a):6.3f},{float(s):6.3f}" for a, s in row))

# %% [markdown]
# ## 3. The worked example: data at $\pm 3$
#
# The classic textbook example has two data points, $x_1 = -3$ and $x_1 = +3$, with probability $\tfrac12$ each
# (one dimension). On the linear path the marginal is a mixture of two Gaussians,
#
# $$p_t(x) = \tfrac12\, \mathcal N\!\big(x;\ -3t,\ (1 - t)^2\big) + \tfrac12\, \mathcal N\!\big(x;\ 3t,\ (1 - t)^2\big),$$
#
# so at $t = 0.5$: $\;p_{0.5} = \tfrac12 \mathcal N(-1.5, 0.25) + \tfrac12 \mathcal N(1.5, 0.25)$.
# The figure draws fmlab's closed form (black), the two halves of the formula (dashed) and a histogram of
# samples $x_t = (1 - t) x_0 + t x_1$. Move $t$: when do the two bumps separate?

# %%
from fmlab.viz.paths import worked_example_widget

worked_example_widget()

# %% [markdown]
# And the same check in numbers, compared by nbval on every run:

# %%
# NBVAL_CHECK_OUTPUT
from fmlab.viz.paths import worked_example_check

print(worked_example_check(0.5))

# %% [markdown]
# Two more facts the lesson relies on, asserted (these cells fail if the code disagrees): the marginal path starts as
# pure noise and ends as the data, and its mean moves as $\mathbb E[x_t] = \alpha_t\, \mathbb E[x_1]$.

# %%
import math

import torch

from fmlab.data import gmm_2d

mixture = gmm_2d("asymmetric")
x = 2 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
standard_normal = -0.5 * (x**2).sum(1) - math.log(2 * math.pi)
assert torch.allclose(mixture.marginal_log_prob(x, 0.0), standard_normal)   # p_0 = N(0, I)
assert torch.allclose(mixture.marginal_log_prob(x, 1.0), mixture.log_prob(x))  # p_1 = data

g = torch.Generator().manual_seed(1)
x1 = mixture.sample(100_000, generator=g).double()
x0 = torch.randn(x1.shape, generator=g, dtype=torch.float64)
for name in ("linear", "cosine", "vp"):
    a, s = schedule_values(name, 0.6)
    xt = a * x1 + s * x0
    assert torch.allclose(xt.mean(0), a * x1.mean(0), atol=0.02), name  # E[x_t] = alpha_t E[x1]
print("all path checks passed")

# %% [markdown]
# ## Your turn
#
# **Exercise 1.** On the linear path, what is the variance (per coordinate) of $p_t(x \mid x_1)$ at $t = 0.3$?

# %%
from fmlab.exercises.paths import check_conditional_variance

my_variance = None   # your answer
check_conditional_variance(my_variance)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# Given $x_1$, only $(1 - t) x_0$ is random, so $\mathrm{Var}[x_t \mid x_1] = (1 - t)^2 = 0.7^2 = 0.49$ per coordinate
# (the standard deviation is $0.7$).
#
# </details>

# %% [markdown]
# **Exercise 2.** For the worked example (data at $\pm 3$), what is the variance of $x_t$ at $t = 0.5$?
# Derive it, then confirm it by sampling.

# %%
from fmlab.exercises.paths import check_marginal_variance

my_variance = None   # your answer
check_marginal_variance(my_variance)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $x_0$ and $x_1$ are independent, so variances add: $\mathrm{Var}[x_t] = t^2 \mathrm{Var}[x_1] + (1-t)^2 \mathrm{Var}[x_0]
# = 9t^2 + (1 - t)^2 = 2.25 + 0.25 = 2.5$. By sampling:
# ```python
# g = torch.Generator().manual_seed(0)
# x1 = torch.where(torch.rand(10**6, generator=g) < 0.5, -3.0, 3.0)
# xt = 0.5 * x1 + 0.5 * torch.randn(10**6, generator=g)
# check_marginal_variance(xt.var().item())
# ```
#
# </details>

# %% [markdown]
# **Exercise 3.** At which time $t$ does the VP schedule give signal and noise equal weight, $\alpha_t = \sigma_t$?
# (Read it off the schedule plot, or solve numerically with `fmlab.paths.get_schedule("vp")`.) Compare with the
# linear and cosine schedules: what does this say about where a VP model spends its time?

# %%
from fmlab.exercises.paths import check_vp_crossing

my_t = None   # your answer
check_vp_crossing(my_t)


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\alpha_t = \sigma_t$ means $\alpha_t^2 = \tfrac12$, i.e. $T(1 - t) = \ln 2$ with
# $T(r) = 0.1 r + 9.95 r^2$: $r \approx 0.259$, so $t \approx 0.741$. Numerically:
# ```python
# from fmlab.paths import get_schedule
# ts = torch.linspace(0, 1, 100001, dtype=torch.float64)
# a, s, _, _ = get_schedule("vp")(ts)
# print(ts[(a - s).abs().argmin()].item())   # 0.741
# ```
# Linear and cosine cross at $t = 0.5$. Under VP, $x_t$ is nearly pure noise for the first ~half of the time
# ($\alpha_t < 0.1$ until $t \approx 0.33$) and all the structure appears late: uniform time steps spend many
# steps where nothing visible happens.
#
# </details>

# %% [markdown]
# ## Write it yourself
#
# The next two exercises ask for code. Each has a **stub** (a function that raises `NotImplementedError`): replace the
# `raise` line with your code and run the cell, then run the checker below it. The checker compares your function
# with fmlab's on a fixed batch and names the common mistakes. Later cells use your function once it passes, and
# fmlab's (with a note) while it does not, so you can go on either way. All functions work on a batch: `x0`, `x1` of
# shape `[B, 2]` and one time per sample, `t` of shape `[B]` (write `t[:, None]` to multiply a `[B, 2]` tensor).
#
# **Exercise 4.** Write `sample_xt(x0, x1, t)`, the point $x_t = (1 - t)\, x_0 + t\, x_1$ of the linear path, and
# `conditional_velocity(x0, x1, t)`, its time derivative $\frac{d}{dt} x_t = x_1 - x_0$ (the velocity of the
# straight line joining a noise point to a data point).

# %%
def sample_xt(x0, x1, t):
    """x_t = (1 - t) x0 + t x1 on the linear path. x0, x1: [B, 2]; t: [B]. Returns [B, 2]."""
    raise NotImplementedError


def conditional_velocity(x0, x1, t):
    """d/dt x_t = x1 - x0 on the linear path (the same at every t). Returns [B, 2]."""
    raise NotImplementedError


# %%
from fmlab.exercises.paths import check_conditional_velocity, check_sample_xt, path_functions

results = {"Exercise 4: sample_xt": check_sample_xt(sample_xt),
           "Exercise 4: conditional_velocity": check_conditional_velocity(conditional_velocity)}


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def sample_xt(x0, x1, t):
#     t = t[:, None]                 # [B] -> [B, 1], broadcasts over the coordinates
#     return (1 - t) * x0 + t * x1
#
#
# def conditional_velocity(x0, x1, t):
#     return x1 - x0
# ```
#
# </details>

# %% [markdown]
# **Exercise 5.** The same for the **cosine** schedule of section 2: write `sample_xt_cosine(x0, x1, t)`,
# $x_t = \sin(\tfrac{\pi}{2} t)\, x_1 + \cos(\tfrac{\pi}{2} t)\, x_0$, and `velocity_cosine(x0, x1, t)`, its time
# derivative (chain rule: $\frac{d}{dt} \sin(\tfrac{\pi}{2} t) = \tfrac{\pi}{2} \cos(\tfrac{\pi}{2} t)$).

# %%
def sample_xt_cosine(x0, x1, t):
    """x_t = sin(pi t / 2) x1 + cos(pi t / 2) x0. x0, x1: [B, 2]; t: [B]. Returns [B, 2]."""
    raise NotImplementedError


def velocity_cosine(x0, x1, t):
    """d/dt x_t = (pi / 2) (cos(pi t / 2) x1 - sin(pi t / 2) x0). Returns [B, 2]."""
    raise NotImplementedError


# %%
results["Exercise 5: sample_xt_cosine"] = check_sample_xt(sample_xt_cosine, "cosine")
results["Exercise 5: velocity_cosine"] = check_conditional_velocity(velocity_cosine, "cosine")

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# import math
#
#
# def sample_xt_cosine(x0, x1, t):
#     a = math.pi / 2 * t[:, None]
#     return torch.sin(a) * x1 + torch.cos(a) * x0
#
#
# def velocity_cosine(x0, x1, t):
#     a = math.pi / 2 * t[:, None]
#     return math.pi / 2 * (torch.cos(a) * x1 - torch.sin(a) * x0)
# ```
#
# </details>

# %% [markdown]
# **Using your functions.** A velocity is right when it is the time derivative of the path. The cell below checks
# that with a central finite difference, $\big(x_{t+h} - x_{t-h}\big) / 2h$ with $h = 10^{-4}$, for both schedules,
# with your functions where they pass and fmlab's otherwise (the printed note says which).

# %%
g = torch.Generator().manual_seed(2)
x0, x1 = torch.randn(256, 2, generator=g, dtype=torch.float64), torch.randn(256, 2, generator=g, dtype=torch.float64)
t, h = 0.1 + 0.8 * torch.rand(256, generator=g, dtype=torch.float64), 1e-4
for schedule, (xt_fn, v_fn) in {"linear": path_functions(sample_xt, conditional_velocity),
                                "cosine": path_functions(sample_xt_cosine, velocity_cosine, "cosine")}.items():
    finite_difference = (xt_fn(x0, x1, t + h) - xt_fn(x0, x1, t - h)) / (2 * h)
    gap = (finite_difference - v_fn(x0, x1, t)).abs().max().item()
    print(f"{schedule}: max |finite difference - velocity| = {gap:.1e}")
    assert gap < 1e-6

# %%
from fmlab.exercises.code import exercise_report

open_exercises = exercise_report(results)

# %% [markdown]
# ## Summary
#
# * One data point: $p_t(x \mid x_1) = \mathcal N(\alpha_t x_1, \sigma_t^2 I)$, a Gaussian sliding from the origin to
#   $x_1$ and shrinking to a point.
# * The whole distribution: $p_t(x) = \mathbb E_{x_1 \sim q}\, p_t(x \mid x_1)$, from $\mathcal N(0, I)$ at $t = 0$ to
#   the data at $t = 1$; closed-form for Gaussian mixtures.
# * Schedules differ in *when* the signal arrives; $\log \mathrm{SNR}_t$ makes that visible.
#
# **Next, lab 02:** the conditional path has an obvious velocity, $(x_1 - x)/(1 - t)$. Which velocity moves the
# *marginal* path, and how can we learn it without knowing it?

# %% [markdown]
# ## Further reading
#
# Notation as in lab 00's table. This lab draws on:
#
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023:
#   conditional paths and the linear (CondOT) path.
# * X. Liu, C. Gong, Q. Liu, *Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow*,
#   ICLR 2023: the straight-line interpolation.
# * M. S. Albergo, E. Vanden-Eijnden, *Building Normalizing Flows with Stochastic Interpolants*, ICLR 2023; M. S.
#   Albergo, N. M. Boffi, E. Vanden-Eijnden, *Stochastic Interpolants: A Unifying Framework for Flows and Diffusions*,
#   2023: schedules $\alpha_t, \sigma_t$ as interpolants.
# * Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, *Score-Based Generative Modeling through
#   Stochastic Differential Equations*, ICLR 2021: the variance-preserving (VP) schedule.
