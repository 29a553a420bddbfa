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
# # Lab 07: the score and stochastic sampling
#
# Diffusion models and flow matching are two descriptions of one family of models. Diffusion papers train a network
# to predict the **score** $\nabla_x \log p_t(x)$ or the noise, and sample with a **stochastic differential equation
# (SDE)**; flow matching trains a velocity and samples with an ordinary differential equation (ODE). This lab shows
# that any one of these quantities gives all the others, and that a whole family of SDEs, one per **noise level**
# $\eta \ge 0$, produces exactly the same distributions as the flow's ODE.
#
# **Notation** (as in every lab). Noise $x_0 \sim \mathcal N(0, I)$ at time $t = 0$, data $x_1 \sim q$ at $t = 1$; the
# linear path $x_t = (1-t)\,x_0 + t\,x_1$; $p_t$ is the density of $x_t$ (so $p_0 = \mathcal N(0, I)$ and $p_1 = q$);
# $v^*(x, t) = \mathbb E[x_1 - x_0 \mid x_t = x]$ is the **marginal field** that moves $p_0$ to $p_1$ (lab 02, vector
# fields), and $v_\theta$ is the network trained to approximate it (lab 03, training). The data are the 8-Gaussian
# mixture, whose $p_t$, $v^*$ and score are known in closed form: every figure can be checked against the truth
# (black).
#
# **You will**
#
# 1. turn a velocity into the score, $s = (t\,v - x)/(1-t)$, and check it against the closed-form score, on the
#    linear, cosine and VP paths;
# 2. see the noise, clean-data and velocity heads as three views of one quantity;
# 3. derive and run the family of SDEs that share the flow's marginals, with a noise-level slider, watching paths go
#    from straight to diffusive while the distribution stays the same (measured by W2);
# 4. measure whether the SDE corrects the errors of an under-trained network better than the ODE does;
# 5. see that DDIM is the Euler step of the same ODE;
# 6. compare how loss weightings (none, min-SNR, the clean-data head's) spread the training effort over noise levels.

# %%
import torch

from fmlab.data import gmm_2d
from fmlab.exercises import score_sde as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.metrics import noise_floor
from fmlab.paths import convert_prediction, score_from_prediction, score_from_velocity
from fmlab.viz import score_sde as SS
from fmlab.viz import training as T

torch.manual_seed(0)
GMM = gmm_2d("8modes")
TRAINED = SS.sde_config(steps(4000, 300))  # flow matching, the network of lab 04 (solvers)
UNDER = SS.sde_config(200)  # the same run stopped after 200 steps: deliberately under-trained
model = T.fit(TRAINED).ema
weak = T.fit(UNDER).ema


def exact(x, t):
    return GMM.velocity(x, t)  # the closed-form marginal field v*(x, t)


print(f"fast mode: {fast_mode()}; trained network: {TRAINED.steps} steps; under-trained: {UNDER.steps} steps")


# %% [markdown]
# ## 1. The score from the velocity
#
# The **score** of $p_t$ is the gradient of its log-density, $s(x, t) = \nabla_x \log p_t(x)$: a vector field that
# points towards higher density, longest where the density changes fastest in relative terms. It does not depend on
# the normalising constant of $p_t$, which is why diffusion models learn it.
#
# On our path, $x_t$ given the data point $x_1$ is Gaussian: $p_t(x \mid x_1) = \mathcal N(x;\ t\,x_1,\ (1-t)^2 I)$,
# whose score is $-(x - t\,x_1)/(1-t)^2 = -x_0/(1-t)$, with $x_0 = (x - t x_1)/(1-t)$ the noise on that path.
# Averaging over the data points that could have produced $x$ (the same step as in lab 02) gives **Tweedie's formula**
#
# $$s(x, t) = -\frac{\mathbb E[x_0 \mid x_t = x]}{1 - t}, \qquad 0 \le t < 1.$$
#
# The velocity knows $\mathbb E[x_0 \mid x_t = x]$ too: since $x = (1-t)\,x_0 + t\,x_1$ and $v^* = \mathbb E[x_1 - x_0 \mid
# x]$, taking $\mathbb E[\,\cdot \mid x_t = x]$ of $x_1 = x_0 + (x_1 - x_0)$ gives $x = \mathbb E[x_0 \mid x] + t\,v^*$,
# so $\mathbb E[x_0 \mid x] = x - t\,v^*$ and
#
# $$s(x, t) = \frac{t\,v^*(x, t) - x}{1 - t}.$$
#
# At $t = 0$ this is $-x$, the score of $\mathcal N(0, I)$. At $t = 1$ it is undefined: the data distribution may have
# no smooth density, and the velocity carries no information about it there.
#
# **Exercise 1 (code).** Write `my_score(v, x, t)`: `v` and `x` have shape [B, 2], `t` has shape [B]. The checker
# compares your function with the closed-form score of the 8-Gaussian mixture at 16 random points and times, and
# recognises the usual mistakes (sign, time convention, missing factor).

# %%
def my_score(v, x, t):
    """The score (t v - x) / (1 - t) of the linear path, one vector per sample: [B, 2]."""
    raise NotImplementedError


ex.check_score_from_velocity(my_score)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def my_score(v, x, t):
#     t = t[:, None]  # [B, 1]: one time per sample, broadcast over the two coordinates
#     return (t * v - x) / (1 - t)
# ```
#
# </details>

# %% [markdown]
# The figure converts the trained network's velocity into a score with your function (or fmlab's,
# `fmlab.paths.score_from_velocity`, until yours passes) and draws it in green over the closed-form score (black) and
# the contours of $p_t$. Move $t$: near the noise end the score is the gentle pull $-x$ of a Gaussian; towards the data
# it points sharply into the eight blobs and grows like $1/(1-t)$ (arrows are capped in length). The title gives the
# median relative error of the network's score on samples of $p_t$.

# %%
score_fn = ex.score_function(my_score)


def network_score(x, t):
    with torch.no_grad():
        return score_fn(model(x, t), x, t)


SS.score_widget(network_score, "score of the network (your conversion)")

# %% [markdown]
# **Other schedules.** The cosine path $x_t = \sin(\tfrac{\pi t}{2})\,x_1 + \cos(\tfrac{\pi t}{2})\,x_0$ and the
# variance-preserving (VP) path of diffusion models have the form $x_t = a_t\,x_1 + \sigma_t\,x_0$ with other
# coefficients $a_t$ (data weight) and $\sigma_t$ (noise level). The same argument gives $s = -\mathbb E[x_0 \mid x]/
# \sigma_t$ and, with the velocity $v = \dot a_t\,\mathbb E[x_1 \mid x] + \dot\sigma_t\,\mathbb E[x_0 \mid x]$ (dots are
# time derivatives), $\mathbb E[x_0 \mid x] = (a_t\,v - \dot a_t\,x)/(a_t\dot\sigma_t - \dot a_t\sigma_t)$.
# `fmlab.paths.score_from_velocity(v, x, t, schedule)` implements this. Here it is checked against the closed-form score
# of each path's own $p_t$:

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
x_check = 2.5 * torch.randn(500, 2, generator=g, dtype=torch.float64)
t_check = 0.02 + 0.96 * torch.rand(500, generator=g, dtype=torch.float64)
for schedule in ("linear", "cosine", "vp"):
    converted = score_from_velocity(GMM.velocity(x_check, t_check, schedule), x_check, t_check, schedule)
    error = (converted - GMM.score(x_check, t_check, schedule)).abs().max().item()
    print(f"{schedule:7s} max |score from v* - closed-form score| = {'< 1e-9' if error < 1e-9 else error}")
    assert error < 1e-9

# %% [markdown]
# ## 2. Three heads, one quantity
#
# Lab 06 (parametrisation) trained networks with three **heads** (outputs): the velocity $\hat v$, the clean-data
# guess $\hat x_1 \approx \mathbb E[x_1 \mid x]$ and the noise guess $\hat\varepsilon \approx \mathbb E[x_0 \mid x]$
# (diffusion papers call the noise $\varepsilon$). At a given $(x, t)$ the two guesses must be consistent with the point
# itself, $x = t\,\hat x_1 + (1-t)\,\hat\varepsilon$, and the velocity is their difference, $\hat v = \hat x_1 -
# \hat\varepsilon$. Two equations, so one head fixes the others; and by Tweedie the score is the noise head rescaled:
#
# | from the velocity $v$ | from the clean-data head $\hat x_1$ | from the noise head $\hat\varepsilon$ |
# |---|---|---|
# | $\hat\varepsilon = x - t\,v$ | $\hat\varepsilon = (x - t\,\hat x_1)/(1-t)$ | — |
# | $\hat x_1 = x + (1-t)\,v$ | — | $\hat x_1 = (x - (1-t)\,\hat\varepsilon)/t$ |
# | $s = (t v - x)/(1-t)$ | $s = (t\,\hat x_1 - x)/(1-t)^2$ | $s = -\hat\varepsilon/(1-t)$ |
#
# The score is a fourth view. Below, the closed-form velocity is converted to each head and each head to the score
# (`fmlab.paths.convert_prediction`, `score_from_prediction`): all four agree with the closed-form score.

# %%
# NBVAL_CHECK_OUTPUT
v_star = GMM.velocity(x_check, t_check)
truth = GMM.score(x_check, t_check)
for head in ("velocity", "x1", "eps"):
    prediction = convert_prediction(v_star, x_check, t_check, "velocity", head)
    error = (score_from_prediction(prediction, x_check, t_check, head) - truth).abs().max().item()
    print(f"score from the {head:8s} head: max error {'< 1e-9' if error < 1e-9 else error}")
    assert error < 1e-9


# %% [markdown]
# The views agree for the exact field, but a network's *error* is amplified differently by each conversion: an error
# $\delta$ in $\hat x_1$ becomes $\delta/(1-t)$ in the velocity and $t\,\delta/(1-t)^2$ in the score, large near the
# data; an error $\delta$ in $\hat\varepsilon$ becomes $(1-t)\,\delta/t$ in $\hat x_1$, large near the noise. Lab 06 (parametrisation)
# measures the consequences for training.

# %% [markdown]
# ## 3. A family of SDEs with the flow's marginals
#
# An **SDE** $dx = b(x, t)\,dt + g(t)\,dW$ moves a particle with the drift $b$ and adds Gaussian noise: in a short time
# $h$ its position changes by $b\,h + g\sqrt h\,z$ with $z \sim \mathcal N(0, I)$ ($W$ is Brownian motion, whose
# increments over $h$ have variance $h$). Its simplest solver, **Euler-Maruyama**, repeats exactly that step:
#
# $$x_{k+1} = x_k + b(x_k, t_k)\,h + g(t_k)\sqrt h\,z_k, \qquad z_k \sim \mathcal N(0, I)\ \text{independent}.$$
#
# **Why a score term makes noise harmless.** Lab 08 (likelihood) derives the *continuity equation*: a density moved by
# a drift $b$ changes as $\partial_t p = -\nabla\cdot(p\,b)$. Added noise spreads it further; its effect is the heat
# equation's, $+\tfrac{g^2}{2}\Delta p$ (the Fokker-Planck equation; $\Delta$ is the Laplacian, the sum of second
# derivatives). Now take the drift $b = v^* + \tfrac{g^2}{2}\nabla \log p_t$. Since $p\,\nabla\log p = \nabla p$,
#
# $$\partial_t p = -\nabla\cdot(p\,v^*) - \tfrac{g^2}{2}\nabla\cdot(\nabla p) + \tfrac{g^2}{2}\Delta p
# = -\nabla\cdot(p\,v^*):$$
#
# the score term removes exactly what the noise adds, and the density evolves as under the ODE $dx = v^*\,dt$. Every
# choice of $g$ gives a sampler with the **same marginals** $p_t$. We choose $g(t)^2 = 2\eta\,(1-t)$ with a **noise
# level** $\eta \ge 0$: noise is largest at the noise end and vanishes at the data. Then $\tfrac{g^2}{2}\,s = \eta\,(1-t)
# \,s = -\eta\,\mathbb E[x_0 \mid x]$, and the sampler is
#
# $$dx = \big[v(x, t) - \eta\,(x - t\,v(x, t))\big]\,dt + \sqrt{2\eta\,(1-t)}\;dW, \qquad \eta = 0:\ \text{the ODE}.$$
#
# The drift never divides by $1 - t$: it is as well behaved as $v$ itself (`fmlab.solvers.sample_sde`).
#
# **Exercise 2 (code).** Write one Euler-Maruyama step `my_sde_step(v, x, t, dt, eta, z)`: `v = v(x, t)` and `x` are
# [B, 2], `t` is [B], `dt` and `eta` are numbers, `z` [B, 2] is standard normal.

# %%
def my_sde_step(v, x, t, dt, eta, z):
    """x + [v + eta (1 - t) s] dt + sqrt(2 eta (1 - t) dt) z, with s = (t v - x) / (1 - t). Returns [B, 2]."""
    raise NotImplementedError


ex.check_sde_step(my_sde_step)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def my_sde_step(v, x, t, dt, eta, z):
#     t = t[:, None]
#     drift = v - eta * (x - t * v)  # v + eta (1 - t) s, with (1 - t) s = t v - x
#     return x + drift * dt + torch.sqrt(2 * eta * (1 - t) * dt) * z
# ```
#
# </details>

# %% [markdown]
# **Watch it.** The closed-form field $v^*$ drives 600 particles (400 in fast mode) from one batch of noise, with the
# score term from the same $v^*$; grey lines are the paths of the first 30. The **noise level** slider solves again (100
# Euler-Maruyama steps; redraws when released), the **t** slider moves along the solution. At $\eta = 0$ the paths are
# smooth curves (the ODE); as $\eta$ grows they become jagged random walks, and the title's ratio of path length to
# chord grows, yet at every $t$ the cloud of particles follows the same contours of $p_t$.

# %%
SS.sde_paths_widget(exact, eta=1.0, n=pick(600, 400))

# %% [markdown]
# ## 4. Measured: the marginals do not depend on the noise level
#
# "Same marginals" is a claim about distributions, so we measure it with **W2**, the Wasserstein-2 distance between
# the SDE's samples at time $t$ and fresh samples of the exact $p_t$ (the root mean squared distance of the best
# one-to-one matching of the two point clouds; lab 04, solvers). Two finite samples of the *same* distribution are
# not at distance 0: the dashed **noise floor** is the W2 between two independent exact samples of the same size. A
# noise level whose W2 sits on the floor is indistinguishable from the truth at this sample size.

# %%
ETAS = (0.0, 0.5, 1.0, 2.0, 4.0)
N, SEEDS, EM_STEPS = pick(1000, 400), range(pick(3, 2)), pick(200, 100)
sweeps = {"closed-form v*": SS.eta_sweep(exact, ETAS, SEEDS, N, steps=EM_STEPS)}
floor = noise_floor(lambda n, generator: GMM.sample(n, generator=generator), N, repeats=len(SEEDS))
SS.render_w2_vs_eta(sweeps, floor=floor, title=f"Closed-form v*: W2 at t = 1 against η ({N} samples)")

# %%
w2_exact = [sweeps["closed-form v*"].mean_std(e)[0] for e in ETAS]
print("W2 at t = 1 per η:", [round(w, 3) for w in w2_exact], f"floor {floor[0]:.3f} ± {floor[1]:.3f}")
assert max(w2_exact) < floor[0] + 4 * floor[1] + 0.05  # every noise level stays on the floor

# %% [markdown]
# In a full-size measurement (2000 samples, 200 steps, 3 seeds, mean ± std over seeds; the score from $v^*$ itself)
#
# ```
# python benchmarks/score_sde.py marginals --n 2000 --seeds 3 --steps 200
# ```
#
# | W2 to the exact $p_t$ | noise floor | $\eta = 0$ (ODE) | $\eta = 0.5$ | $\eta = 1$ | $\eta = 2$ | $\eta = 4$ |
# |---|---|---|---|---|---|---|
# | at $t = 0.5$ | 0.138 ± 0.012 | 0.139 ± 0.018 | 0.139 ± 0.014 | 0.135 ± 0.011 | 0.134 ± 0.008 | 0.139 ± 0.011 |
# | at $t = 1$ | 0.240 ± 0.044 | 0.257 ± 0.037 | 0.243 ± 0.073 | 0.240 ± 0.047 | 0.230 ± 0.052 | 0.257 ± 0.079 |
#
# Every noise level sits on the noise floor, at the middle of the path and at its end; the differences between noise
# levels are smaller than the spread over seeds, so this measurement cannot tell them apart. The same script makes a
# **control** that must fail: with the score correction's sign flipped ($b = v^* - \tfrac{g^2}{2}\,s$, $\eta = 1$) W2 at
# $t = 1$ is 1.983 ± 0.020, eight times the floor. So the measurement can see a sampler with the wrong marginals, and
# the score term is what keeps the marginals in place.

# %% [markdown]
# ## 5. Does noise correct the errors of an imperfect field?
#
# With the exact field, every $\eta$ gives the same samples (in distribution). With a network, the ODE and the SDEs
# differ: the derivation of section 3 needs the score computed from $v_\theta$ to be the score of the densities that
# $v_\theta$'s own ODE produces. That holds for $v^*$, not for a network. The usual argument for stochastic sampling (Song et al. 2021; Karras et al. 2022) is that the ODE
# carries an early error all the way to $t = 1$, whereas in the SDE the score term keeps pulling particles towards the
# regions the model itself considers likely, while the noise lets them move between regions, so that errors are
# partly forgotten.
#
# We test this on two networks: the trained one, and the **under-trained** one (the same run stopped after 200 of
# the steps). Besides W2 the table gives two mode statistics: **mode balance**, the total-variation distance between the
# fraction of samples nearest each of the 8 means and the true weights (0 = every mode gets its share), and **mode
# blur**, the root mean squared distance of the samples to their nearest mean (0.50 for the data themselves).

# %%
sweeps["trained network"] = SS.eta_sweep(model, ETAS, SEEDS, N, steps=EM_STEPS)
sweeps["under-trained network"] = SS.eta_sweep(weak, ETAS, SEEDS, N, steps=EM_STEPS)
SS.render_w2_vs_eta(sweeps, floor=floor, title=f"W2 at t = 1 against η ({N} samples, {len(SEEDS)} seeds)")

# %%
for label in ("trained network", "under-trained network"):
    print(sweeps[label].table(label))
under = sweeps["under-trained network"]
assert under.mean_std(4.0)[0] < under.mean_std(0.0)[0] - 0.05  # noise helps the under-trained network (section text)

# %% [markdown]
# The live numbers above use few samples and, in fast mode, a shorter training run. The committed measurement trains
# each network with 3 seeds and samples each twice:
#
# ```
# python benchmarks/score_sde.py imperfect --n 2000 --train-seeds 3 --sample-seeds 2 --train-steps 200,500,4000
# ```
#
# | training steps | | $\eta = 0$ (ODE) | $\eta = 0.5$ | $\eta = 1$ | $\eta = 2$ | $\eta = 4$ |
# |---|---|---|---|---|---|---|
# | 200 (under-trained) | W2 | 0.799 ± 0.009 | 0.731 ± 0.004 | 0.679 ± 0.009 | 0.614 ± 0.024 | 0.562 ± 0.036 |
# | | W2($\eta$) − W2(0), paired | 0 | −0.068 ± 0.011 | −0.119 ± 0.013 | −0.185 ± 0.027 | −0.237 ± 0.040 |
# | | mode blur (data: 0.50) | 1.215 ± 0.019 | 1.145 ± 0.012 | 1.089 ± 0.016 | 1.008 ± 0.020 | 0.921 ± 0.020 |
# | | mode balance (TV) | 0.031 ± 0.011 | 0.037 ± 0.006 | 0.037 ± 0.007 | 0.039 ± 0.011 | 0.050 ± 0.017 |
# | 500 | W2 | 0.382 ± 0.011 | 0.360 ± 0.011 | 0.358 ± 0.009 | 0.355 ± 0.006 | 0.371 ± 0.003 |
# | | W2($\eta$) − W2(0), paired | 0 | −0.021 ± 0.010 | −0.024 ± 0.006 | −0.027 ± 0.010 | −0.010 ± 0.011 |
# | 4000 (trained) | W2 | 0.262 ± 0.023 | 0.236 ± 0.031 | 0.238 ± 0.020 | 0.237 ± 0.035 | 0.256 ± 0.032 |
# | | W2($\eta$) − W2(0), paired | 0 | −0.026 ± 0.022 | −0.024 ± 0.021 | −0.025 ± 0.028 | −0.006 ± 0.041 |
#
# (2000 samples, 200 Euler-Maruyama steps, mean ± std over the 3 training seeds of the mean over 2 sampling seeds; the
# paired difference compares the noise levels on the same network and the same starting noise; the noise floor of W2
# at this size is 0.240 ± 0.044, section 4.)
#
# - **Under-trained network: noise corrects errors, and more noise corrects more.** W2 falls by 0.24 ± 0.04 from the
#   ODE to $\eta = 4$, six standard deviations. The gain is in the shape of the blobs: the ODE leaves them smeared (mode
#   blur 1.22 against 0.50 for the data) and the score term pulls samples back towards the blob centres (0.92 at
#   $\eta = 4$). Noise does not fix *how much* mass each blob gets: mode balance gets no better (0.031 ± 0.011 to
#   0.050 ± 0.017, within the spread).
# - **500 steps:** a small gain of 0.02 to 0.03 at $\eta$ from 0.5 to 2 (two to four standard deviations), none
#   beyond the spread at $\eta = 4$.
# - **Trained network:** no difference beyond the spread over seeds at any noise level; the ODE is already close to the
#   floor.
#
# So in this measurement stochastic sampling is an error-correction mechanism whose benefit grows with the field's
# error; for a good field it neither helps nor hurts measurably at 200 steps.

# %% [markdown]
# ## 6. DDIM is the Euler step of the same ODE
#
# DDIM (Song, Meng & Ermon 2021), the standard fast sampler of diffusion models, makes a step from $t$ to $t' > t$ by
# predicting the clean data and the noise at $(x, t)$ and putting them back together at the new noise level:
#
# $$x' = t'\,\hat x_1 + (1 - t')\,\hat\varepsilon, \qquad \hat x_1, \hat\varepsilon \text{ the heads at } (x, t).$$
#
# Substitute $\hat\varepsilon = \hat x_1 - \hat v$ and $x = t\,\hat x_1 + (1-t)\,\hat\varepsilon$: $x' = x + (t' - t)\,
# \hat v$. On the linear path, DDIM **is** Euler's method on the flow's ODE, nothing else (`fmlab.solvers.ddim_step`).
# On other schedules it is Euler's method on the same ODE in rescaled variables $y = x/a_t$, $\rho = \sigma_t/a_t$.
#
# **Exercise 3.** From $x = (1, -0.5)$ at $t = 0.25$, the network predicts $\hat x_1 = (2, 0)$. Compute the DDIM step
# to $t' = 0.5$ by hand (first $\hat\varepsilon$, then $x'$) and pass it as a list of two numbers.

# %%
answer = None
ex.check_ddim_step(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\hat\varepsilon = (x - t\,\hat x_1)/(1-t) = ((1, -0.5) - (0.5, 0))/0.75 = (2/3, -2/3)$, so
# $x' = 0.5\,(2, 0) + 0.5\,(2/3, -2/3) = (4/3, -1/3)$: `ex.check_ddim_step([4 / 3, -1 / 3])`. The Euler step gives the
# same: $\hat v = (\hat x_1 - x)/(1-t) = (4/3, 2/3)$ and $x + 0.25\,\hat v = (4/3, -1/3)$.
#
# </details>

# %%
# NBVAL_CHECK_OUTPUT
from fmlab.solvers import ddim_step, solve

x_start = torch.randn(200, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
x_ddim = x_start
for k in range(10):
    x_ddim = ddim_step(exact, x_ddim, torch.full((200,), k / 10, dtype=torch.float64), (k + 1) / 10)
gap = (x_ddim - solve(exact, x_start, steps=10, method="euler")).abs().max().item()
print(f"10 DDIM steps against 10 Euler steps on the linear path: max difference {'< 1e-9' if gap < 1e-9 else gap}")
assert gap < 1e-9

# %% [markdown]
# ## 7. Loss weightings over the noise levels
#
# Each diffusion paper trains with its own head and its own weight on the error; comparing them requires one common
# axis and one common currency. The axis is the **log signal-to-noise ratio** $\lambda = \log(a_t^2/\sigma_t^2)$, here
# $\lambda = \log\big(t^2/(1-t)^2\big)$: $-\infty$ at the noise, $+\infty$ at the data, and the same for every schedule.
# The currency is the squared *velocity* error: by the table of section 2, a loss $w\,\|\hat x_1 - x_1\|^2$ equals
# $w\,(1-t)^2\,\|\hat v - v\|^2$, and a loss $w\,\|\hat\varepsilon - x_0\|^2$ equals $w\,t^2\,\|\hat v - v\|^2$.
#
# - plain flow matching: weight 1 on the velocity error;
# - the clean-data head with weight $1/(1-t)^2$: the same loss (lab 06, parametrisation);
# - the clean-data head unweighted, and DDPM's unweighted noise loss: weights $(1-t)^2$ and $t^2$;
# - **min-SNR-$\gamma$** (Hang et al. 2023): the clean-data loss weighted by $\min(\mathrm{SNR}, \gamma)$, with
#   $\mathrm{SNR} = t^2/(1-t)^2$, which caps the weight of the nearly clean noise levels.
#
# The left panel shows each weight on the squared velocity error; the right panel where the training effort goes, the
# weight times how often each noise level is drawn ($t$ uniform, or logit-normal as in Stable Diffusion 3), each curve
# normalised to area 1. Move $\gamma$ (the dotted line is $\mathrm{SNR} = \gamma$), switch the time sampler or the axis.

# %%
SS.weightings_widget()

# %% [markdown]
# With $t$ uniform, flow matching spreads its effort over a wide band of $\lambda$ around 0, the clean-data head
# without weights neglects the data end ($\lambda > 0$) and the noise loss neglects the noise end. Min-SNR is the noise
# loss up to $\mathrm{SNR} = \gamma$ (there $\mathrm{SNR}\,\|\hat x_1 - x_1\|^2 = \|\hat\varepsilon - x_0\|^2$) and the
# clean-data loss times $\gamma$ beyond: it stops giving ever more weight to nearly clean data. The logit-normal sampler
# concentrates every loss on the middle noise levels.
#
# **Exercise 4.** At which time $t$ does the min-SNR-5 weight $\min(\mathrm{SNR}, 5)$ stop following the SNR (on our
# linear path)?

# %%
answer = None
ex.check_min_snr_switch(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $t^2/(1-t)^2 = 5 \iff t/(1-t) = \sqrt 5 \iff t = \sqrt 5/(1 + \sqrt 5) \approx 0.691$:
# `ex.check_min_snr_switch(5 ** 0.5 / (1 + 5 ** 0.5))`. Papers with data at $t = 0$ give $1 - 0.691 = 0.309$.
#
# </details>

# %% [markdown]
# ## Summary
#
# - The score of the linear path is $s = (t\,v - x)/(1-t) = -\mathbb E[x_0 \mid x]/(1-t)$: velocity, clean data, noise
#   and score are four views of one quantity, each converting errors differently.
# - Adding noise $g\,dW$ and the drift correction $\tfrac{g^2}{2}\,s$ leaves the marginals unchanged, for every noise
#   level $\eta$: measured, W2 to the exact mixture stays on the noise floor from $\eta = 0$ to 4.
# - With an imperfect network the noise level changes the samples: for an under-trained network W2 falls by
#   0.24 ± 0.04 from the ODE to $\eta = 4$ (3 seeds) as the score term sharpens the smeared blobs; for a trained
#   network the differences are within the spread over seeds.
# - DDIM is Euler's method on the flow's ODE; loss weightings differ in where on the log-SNR axis they put the effort.
#
# **Next:** lab 08 (likelihood) shows why $v^*$ moves $p_0$ to $p_1$ (the continuity equation) and turns the flow into
# an exact likelihood.

# %% [markdown]
# ## Further reading
#
# * Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, *Score-Based Generative Modeling through
#   Stochastic Differential Equations*, ICLR 2021: the score, the SDE family and the probability-flow ODE.
# * J. Ho, A. Jain, P. Abbeel, *Denoising Diffusion Probabilistic Models*, NeurIPS 2020: the noise head and its loss.
# * J. Song, C. Meng, S. Ermon, *Denoising Diffusion Implicit Models*, ICLR 2021: DDIM.
# * M. S. Albergo, N. M. Boffi, E. Vanden-Eijnden, *Stochastic Interpolants: A Unifying Framework for Flows and
#   Diffusions*, 2023: velocity and score on one path, and the SDEs that share its marginals.
# * T. Karras, M. Aittala, T. Aila, S. Laine, *Elucidating the Design Space of Diffusion-Based Generative Models*,
#   NeurIPS 2022: stochastic sampling as error correction, loss weightings over noise levels.
# * T. Hang et al., *Efficient Diffusion Training via Min-SNR Weighting Strategy*, ICCV 2023: min-SNR weighting.
#
# The notation is lab 00's table.
