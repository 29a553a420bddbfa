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
# # Lab 04: solvers and step count
#
# A trained flow generates by solving $dx/dt = v_\theta(x, t)$ from noise at $t = 0$ to data at $t = 1$. Every step of
# a solver calls the network, so the number of **function evaluations (NFE)** is the price of a sample. How few can we
# afford, and which solver spends them best?
#
# **You will**
#
# 1. sample the trained model of lab 03 with **Euler, midpoint, Heun and RK4** and a **step-count slider** (1 to 100),
#    watching the samples and the trajectories;
# 2. plot **sample quality (W2) against NFE** for every solver;
# 3. **measure the order of convergence** of each solver (the slope of its error against the number of steps on a
#    log-log plot), on the closed-form field and on the network;
# 4. relate the trouble with few steps to **how curved the paths are** (straightness).
#
# **Convention.** Noise $x_0 \sim \mathcal N(0, I)$ at $t = 0$, data at $t = 1$; solvers integrate forward in $t$.

# %%
import torch

from fmlab.data import gmm_2d
from fmlab.exercises import solvers as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.metrics import noise_floor
from fmlab.solvers import SOLVERS, solve
from fmlab.train import TrainConfig
from fmlab.viz import solvers as S
from fmlab.viz import training as T

torch.manual_seed(0)
GMM = gmm_2d("8modes")
CONFIG = TrainConfig(data="8modes", loss="cfm", coupling="independent", steps=steps(4000, 400), batch_size=256,
                     hidden=128, depth=3, lr=3e-3, warmup=pick(100, 30), log_every=pick(100, 20), seed=0,
                     threads=1)  # a network this small runs as fast on one CPU thread, even on a busy machine
model = T.fit(CONFIG).ema  # the network of lab 03 (trained here once, then cached)


def exact(x, t):
    return GMM.velocity(x, t)  # the closed-form marginal velocity v*(x, t)


N = pick(1000, 400)
X0 = torch.randn(N, 2, generator=torch.Generator().manual_seed(1))  # one fixed batch of noise for every solver
DATA = GMM.sample(N, generator=torch.Generator().manual_seed(2))  # a data sample to measure W2 against
print(f"fast mode: {fast_mode()}; {CONFIG.steps} training steps; {N} samples per solve")

# %% [markdown]
# ## 1. Four one-step methods
#
# Write $h = 1/N$ for the step of an $N$-step solve, $t_k = k h$ and $v = v_\theta$. From $x_k \approx x(t_k)$:
#
# | method | one step $x_k \to x_{k+1}$ | NFE per step | order $p$ |
# |---|---|---|---|
# | Euler | $x_k + h\,v(x_k, t_k)$ | 1 | 1 |
# | midpoint | $x_k + h\,v\big(x_k + \tfrac h2 k_1,\ t_k + \tfrac h2\big)$, $k_1 = v(x_k, t_k)$ | 2 | 2 |
# | Heun | $x_k + \tfrac h2\,(k_1 + k_2)$, $k_2 = v(x_k + h k_1,\ t_k + h)$ | 2 | 2 |
# | RK4 | $x_k + \tfrac h6\,(k_1 + 2k_2 + 2k_3 + k_4)$ (classical Runge-Kutta) | 4 | 4 |
#
# A method of **order $p$** makes an error $O(h^{p+1})$ per step and, over the $N = 1/h$ steps,
#
# $$\|x_N - x(1)\| \approx C\,N^{-p}:$$
#
# doubling the steps divides the error by $2^p$. A step costs its NFE, so the fair comparison is at equal NFE.
#
# Pick a velocity field, a solver and a step count. Grey lines are the paths of 40 particles, one dot per step; green
# dots are the samples at $t = 1$. The title gives the NFE and W2, the Wasserstein-2 distance to a data sample: the root
# mean squared distance of the best one-to-one matching between the two point clouds (lower is better).

# %%
S.solver_widget({"trained network": model, "closed form v*": exact}, X0, DATA, method="euler", steps=4)

# %% [markdown]
# Try **1 step**: every sample lands near the centre. At $t = 0$ the field is $v(x, 0) = \mathbb E[x_1] - x$ (lab 03),
# so one Euler step sends every particle to the data mean $\mathbb E[x_1] = 0$. The paths start towards the mean and turn
# towards a blob only later; a solver needs enough steps to follow the turn. With 4 to 8 steps the blobs appear; RK4
# with 2 steps (8 NFE) already looks right.

# %% [markdown]
# ## 2. Sample quality against the evaluation budget
#
# For budgets of 1 to 64 NFE, each solver takes as many whole steps as it can afford. The dashed line is the W2 between
# two independent data samples of the same size (`fmlab.metrics.noise_floor`): below it, differences are sampling
# noise.

# %%
budgets = (1, 2, 4, 8, 16, 32, 64)
w2 = S.w2_vs_nfe(model, X0, DATA, budgets=budgets)
floor, _ = noise_floor(lambda n, generator: GMM.sample(n, generator=generator), N, repeats=2)
S.render_w2_vs_nfe(w2, floor=floor)

# %%
best = {m: rows[-1][1] for m, rows in w2.items()}  # W2 at 64 NFE
print("W2 at 64 NFE:", {m: round(v, 3) for m, v in best.items()}, f"noise floor {floor:.3f}")
assert w2["euler"][0][1] > 3 * best["rk4"]  # one step is useless ...
assert max(best.values()) < 1.1 * min(best.values())  # ... and with enough NFE every solver reaches the same samples

# %% [markdown]
# The curves fall steeply and then flatten at the noise floor (plus the network's own error): beyond some 8 to 16 NFE
# no solver can improve what W2 sees. At small budgets the ranking is not simply "higher order wins": a 2-NFE Heun step
# is a single step of a second-order method, and a single step cannot follow the turn of the paths.

# %% [markdown]
# ## 3. Measuring the order of convergence
#
# W2 mixes solver error with sampling noise. To see the solver alone, compare each $N$-step solve with a **reference**
# solution $x(1)$ from the same $x_0$: SciPy's adaptive DOP853 (order 8) in float64 with tolerance $10^{-10}$
# (`fmlab.solvers.solve_adaptive`). The measured order is the slope $-p$ of $\log \text{error}$ against $\log N$ (a
# least-squares fit). Dotted grey lines show the slopes $N^{-1}$, $N^{-2}$ and $N^{-4}$.
#
# First on the **closed-form field** $v^*$:

# %%
X0_SMALL = X0[:64].double()
conv_exact = S.convergence(exact, X0_SMALL, steps=(16, 32, 64, 128, 256))
S.render_convergence(conv_exact, title="Closed-form field: error against steps")

# %%
# NBVAL_CHECK_OUTPUT
for method, res in conv_exact.items():
    print(f"{method:9s} theory {SOLVERS[method].order}   measured {res['order']:.1f}")
    assert abs(res["order"] - SOLVERS[method].order) < 0.3

# %% [markdown]
# Every solver shows its textbook order. Now the **trained network**, at the step counts one actually uses (evaluated
# in float64 so that rounding does not hide the error):

# %%
conv_net = S.convergence(model, X0_SMALL, steps=(8, 16, 32, 64))
S.render_convergence(conv_net, title="Trained network: error against steps")

# %%
for method, res in conv_net.items():
    tail = S.measured_order(res["steps"][-2:], res["errors"][-2:])
    print(f"{method:9s} theory {SOLVERS[method].order}   8 -> 64 steps {res['order']:.2f}   32 -> 64 steps {tail:.2f}")
    assert abs(tail - SOLVERS[method].order) < 0.3 and res["order"] > SOLVERS[method].order - 0.3, method

# %% [markdown]
# The trained network shows the textbook orders too: over 8 to 64 steps RK4's error falls at least as fast as
# $N^{-4}$ (a little faster at first, while the higher-order terms still shrink), and over the last doubling every
# method is within a few hundredths of its order. That is not automatic. An order is a statement about *small* steps,
# small compared with how fast the field changes along the path, and a network can change fast in $t$: fmlab's MLP
# sees time through the features $[t, \sin(\omega_k t), \cos(\omega_k t)]$ with 16 frequencies $\omega_k$ from 1 to
# $\omega_{\max}$ (`fmlab.models.FourierTimeEmbedding`), so $v_\theta$ can vary in $t$ on a scale of about
# $1/\omega_{\max}$. Here $\omega_{\max} = 10$. With $\omega_{\max} = 200$, a common choice for image models and
# fmlab's default before, the same training gives a field that wiggles in $t$ on a scale of a few hundredths, and a
# step of $1/64$ does not resolve it. See for yourself:

# %%
wiggly = S.wiggly_network(CONFIG).ema  # CONFIG's training, time frequencies up to 200 (cached like every run)
conv_wiggly = S.convergence(wiggly, X0_SMALL, steps=(8, 16, 32, 64, 128, 256))
S.render_convergence(conv_wiggly, title="The same training, time frequencies up to 200")

# %%
for method, res in conv_wiggly.items():
    fit = S.measured_order(res["steps"][:4], res["errors"][:4])
    print(f"{method:9s} theory {SOLVERS[method].order}   8 -> 64 steps {fit:.2f}   "
          f"error at 64 steps {res['errors'][3]:.1e} (frequencies up to 10: {conv_net[method]['errors'][3]:.1e})")
assert S.measured_order(conv_wiggly["rk4"]["steps"][:4], conv_wiggly["rk4"]["errors"][:4]) < 3

# %% [markdown]
# With frequencies up to 200, midpoint, Heun and RK4 gain little over the first doublings and then fall steeply, faster
# than their order, once the step starts to resolve the wiggles; a straight-line fit over 8 to 64 steps gives orders far
# below 2 and 4. Over three training seeds (`python benchmarks/time_embedding.py`:
# this network and 4000 training steps; mean $\pm$ standard deviation over the seeds) the orders measured over 8 to 64
# steps are
#
# | $\omega_{\max}$ | Euler | midpoint | Heun | RK4 | W2 of 100 Euler steps |
# |---:|---:|---:|---:|---:|---:|
# | 200 | 0.99 $\pm$ 0.01 | 1.38 $\pm$ 0.14 | 1.27 $\pm$ 0.11 | 1.80 $\pm$ 0.11 | 0.404 $\pm$ 0.018 |
# | 50 | 1.01 $\pm$ 0.02 | 2.18 $\pm$ 0.12 | 2.38 $\pm$ 0.07 | 4.83 $\pm$ 0.13 | 0.411 $\pm$ 0.025 |
# | 20 | 0.99 $\pm$ 0.00 | 1.98 $\pm$ 0.08 | 1.97 $\pm$ 0.05 | 4.65 $\pm$ 0.06 | 0.412 $\pm$ 0.023 |
# | 10 | 1.00 $\pm$ 0.00 | 1.93 $\pm$ 0.04 | 1.90 $\pm$ 0.01 | 4.46 $\pm$ 0.18 | 0.409 $\pm$ 0.020 |
# | 5 | 1.00 $\pm$ 0.00 | 1.94 $\pm$ 0.04 | 1.91 $\pm$ 0.01 | 4.08 $\pm$ 0.14 | 0.403 $\pm$ 0.024 |
#
# The lower frequencies cost nothing in quality (the W2 column: the differences are within the spread over seeds). They
# also keep the time derivative of the network small, which matters for the flow-map losses of labs 11 and 12 that
# differentiate the network in $t$.

# %% [markdown]
# ## 4. Straight paths need fewer steps
#
# Euler with one step is exact exactly when every path is a straight line travelled at constant speed: then
# $x(1) = x_0 + v(x_0, 0)$. Liu et al. (2023, rectified flow) measure the departure from that ideal by the
# **straightness**
#
# $$S = \int_0^1 \mathbb E\,\big\|(x(1) - x(0)) - \dot x(t)\big\|^2\,dt,$$
#
# zero for straight constant-speed paths. The figure shows the integrand against $t$ (where the paths bend), with $S$ and
# the mean ratio of path length to chord length in the legend; below, the paths themselves.

# %%
fine = {"closed form v*": solve(exact, X0[:300], steps=100, method="rk4", return_trajectory=True),
        "trained network": solve(model, X0[:300], steps=100, method="rk4", return_trajectory=True)}
S.render_straightness(fine)

# %%
S.render_paths(fine, data=DATA)

# %%
from fmlab.metrics import path_length_ratio, straightness

s_exact = straightness(fine["closed form v*"])
print(f"straightness of the exact flow S = {s_exact:.2f}, length ratio {path_length_ratio(fine['closed form v*']):.3f}")
assert s_exact > 0.5  # the paths of flow matching with independent pairs are far from straight


# %% [markdown]
# Most of the bending happens early: particles leave towards the mean and turn towards their blob by $t \approx 0.4$; in
# the second half their velocity drifts again, less strongly, as they settle inside a blob. A solver with few steps cuts
# those corners. Two ways out: spend more NFE on a better solver (this lab), or **make the paths straighter** so that
# few steps suffice (lab 05).

# %% [markdown]
# ## Your turn
#
# **Exercise 1.** Write the midpoint step yourself: a function `my_midpoint(field, x, t, dt)` that returns $x_{k+1}$ for
# a batch `x` [B, 2], per-sample times `t` [B] and a float step `dt`. The checker compares it with `fmlab.solvers` on
# the 8-Gaussian field.

# %%
def my_midpoint(field, x, t, dt):
    return x  # replace with one midpoint step


ex.check_step_function(my_midpoint, "midpoint")

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def my_midpoint(field, x, t, dt):
#     k1 = field(x, t)
#     return x + dt * field(x + 0.5 * dt * k1, t + 0.5 * dt)
#
# ex.check_step_function(my_midpoint, "midpoint")
# ```
#
# </details>

# %% [markdown]
# **Exercise 2.** By what factor does Heun's error shrink when you double the number of steps (in the asymptotic
# regime)? Read it off the closed-form plot or derive it from the order.

# %%
answer = None
ex.check_error_ratio("heun", answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# Error $\approx C N^{-2}$, so $\text{error}(N) / \text{error}(2N) = 2^2 = 4$: `ex.check_error_ratio("heun", 4)`.
# For RK4 it is $2^4 = 16$.
#
# </details>

# %% [markdown]
# **Exercise 3.** With the **exact** field, one Euler step maps every $x_0$ to $\mathbb E[x_1]$. What is the W2 distance
# between that point mass and the 8-Gaussian data? (The mixture has 8 means on a circle of radius $2\sqrt 2$ and
# standard deviation $0.5/\sqrt 2$ per coordinate.)

# %%
answer = None
ex.check_one_step_w2(answer)


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# All mass sits at $\mathbb E[x_1] = 0$, and the only way to move a point mass onto a distribution is to spread it, so
# $W_2^2 = \mathbb E\,\|x_1 - 0\|^2 = (2\sqrt 2)^2 + 2\cdot\tfrac{0.25}{2} = 8.25$ and $W_2 = \sqrt{8.25} \approx 2.87$:
# `ex.check_one_step_w2(8.25 ** 0.5)`. Compare with the 1-NFE point of the W2 plot.
#
# </details>

# %% [markdown]
# ## Write it yourself
#
# **Exercise 4.** Write Heun's step `heun_step(field, x, t, dt)` from the table of section 1: $k_1 = v(x, t)$,
# $k_2 = v(x + \Delta t\, k_1,\ t + \Delta t)$, $x + \tfrac{\Delta t}{2}(k_1 + k_2)$. Here `x` has shape `[B, 2]`, `t`
# shape `[B]` (one time per sample) and `dt` is a float. The checker compares one step with `fmlab.solvers` and
# **measures the order of convergence** of your step: it solves a problem whose exact flow is known (a Gaussian,
# `fmlab.data.Gaussian.flow_map_exact`) with $N = 8, 16, 32, 64$ steps and fits the slope of the error against $N$ on
# a log-log scale, as in section 3. An Euler step in disguise shows order 1.

# %%
def heun_step(field, x, t, dt):
    """k1 = field(x, t); k2 = field(x + dt k1, t + dt); return x + dt / 2 (k1 + k2). x: [B, 2]; t: [B]; dt: float."""
    raise NotImplementedError


# %%
results = {"Exercise 4: heun_step": ex.check_solver_order(heun_step, "heun")}


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def heun_step(field, x, t, dt):
#     k1 = field(x, t)
#     k2 = field(x + dt * k1, t + dt)
#     return x + dt / 2 * (k1 + k2)
# ```
#
# </details>

# %% [markdown]
# **Exercise 5.** The same for the classical Runge-Kutta step `rk4_step(field, x, t, dt)`:
# $k_1 = v(x, t)$, $k_2 = v(x + \tfrac{\Delta t}{2} k_1, t + \tfrac{\Delta t}{2})$,
# $k_3 = v(x + \tfrac{\Delta t}{2} k_2, t + \tfrac{\Delta t}{2})$, $k_4 = v(x + \Delta t\, k_3, t + \Delta t)$ and
# $x + \tfrac{\Delta t}{6}(k_1 + 2 k_2 + 2 k_3 + k_4)$. The checker expects order about 4.

# %%
def rk4_step(field, x, t, dt):
    """Classical RK4: x + dt / 6 (k1 + 2 k2 + 2 k3 + k4). x: [B, 2]; t: [B]; dt: float."""
    raise NotImplementedError


# %%
results["Exercise 5: rk4_step"] = ex.check_solver_order(rk4_step, "rk4")

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def rk4_step(field, x, t, dt):
#     k1 = field(x, t)
#     k2 = field(x + dt / 2 * k1, t + dt / 2)
#     k3 = field(x + dt / 2 * k2, t + dt / 2)
#     k4 = field(x + dt * k3, t + dt)
#     return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
# ```
#
# </details>

# %% [markdown]
# **Using your steps.** The same budget of 8 field evaluations per sample spent three ways on the closed-form field
# $v^*$ of the 8 Gaussians, each against the adaptive reference solution of section 3 (max error over 64 samples):

# %%
from fmlab.solvers import solve_adaptive

steppers = {"euler": SOLVERS["euler"].step, "heun": ex.step_function(heun_step, "heun"),
            "rk4": ex.step_function(rk4_step, "rk4")}
reference = solve_adaptive(exact, X0_SMALL, 0.0, 1.0)
for name, step in steppers.items():
    n = 8 // SOLVERS[name].nfe
    x = X0_SMALL.clone()
    for k in range(n):
        x = step(exact, x, torch.full((len(x),), k / n, dtype=x.dtype), 1.0 / n)
    print(f"{name:6s} {n} steps ({8} NFE): max error {(x - reference).abs().max().item():.2e}")

# %%
from fmlab.exercises.code import exercise_report

open_exercises = exercise_report(results)

# %% [markdown]
# ## Summary
#
# - An $N$-step solve costs $N \times$ (evaluations per step) network calls; compare solvers at equal NFE.
# - Euler, midpoint/Heun and RK4 have orders 1, 2 and 4 on smooth fields; a trained network reaches them once the step
#   resolves how fast it varies in $t$: from 8 steps with time frequencies up to 10 (fmlab's default), only after
#   some tens of steps with frequencies up to 200.
# - Sample quality saturates at the noise floor after a handful of NFE; with one or two steps every solver fails
#   because the paths of flow matching with independent pairs are curved.
#
# **Next:** lab 05 straightens the paths by choosing which noise goes with which data point.

# %% [markdown]
# ## Further reading
#
# Notation as in lab 00's table. This lab draws on:
#
# * X. Liu, C. Gong, Q. Liu, *Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow*,
#   ICLR 2023: straightness and few-step sampling.
# * Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, *Score-Based Generative Modeling through
#   Stochastic Differential Equations*, ICLR 2021: sampling as an ODE solve (the probability-flow ODE).
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023:
#   sampling a flow-matching model with off-the-shelf ODE solvers.
