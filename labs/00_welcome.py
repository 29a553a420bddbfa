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
# # Lab 00 · Welcome to fmlab
#
# **What you will be able to do after this lab**
#
# 1. Run a lab: execute its cells, move its sliders, switch the fast mode on and off.
# 2. Say what the device summary means for you (CPU, GPU, threads).
# 3. Describe in one sentence what flow matching does, having trained and sampled a 2D model yourself in about a minute.
#
# The labs follow one convention everywhere: **time runs from noise at $t = 0$ to data at $t = 1$**.
# A noise point $x_0 \sim \mathcal N(0, I)$ and a data point $x_1$ are joined by the straight line
#
# $$x_t = (1 - t)\, x_0 + t\, x_1, \qquad t \in [0, 1].$$
#
# Colours mean the same thing in every figure: <span style="color:#0072B2">**blue = noise**</span>,
# <span style="color:#E69F00">**orange = data**</span>, <span style="color:#009E73">**green = model**</span>,
# **black = exact (closed-form) ground truth**, <span style="color:#999999">**grey = paths**</span> and
# <span style="color:#D55E00">**vermillion = whatever the slider moves**</span>.

# %% [markdown]
# ## Notation used in every lab
#
# | symbol | name | meaning |
# |---|---|---|
# | $x_0 \sim \mathcal N(0, I)$, $x_1 \sim q$ | noise, data | the two ends of a path; $t = 0$ is noise, $t = 1$ is data |
# | $x_t = \alpha_t x_1 + \sigma_t x_0$ | point on the path | linear path: $\alpha_t = t$, $\sigma_t = 1 - t$ (lab 01) |
# | $p_t(x \mid x_1)$, $p_t(x)$ | conditional, marginal path | the law of $x_t$ given one data point, and over all data (lab 01) |
# | $u_t(x \mid x_1)$ | conditional field | the velocity that moves $p_t(\cdot \mid x_1)$; linear path: $(x_1 - x)/(1 - t)$ (lab 02) |
# | $v^*(x, t)$ | marginal field | $\mathbb E[x_1 - x_0 \mid x_t = x]$, the velocity that moves $p_t$; what training learns (labs 02, 03) |
# | $v_\theta(x, t)$ | the network | a learned velocity field, parameters $\theta$ (lab 03) |
# | $\hat x_1(x, t)$ | clean-data head | a network's guess of $x_1$; at best $\mathbb E[x_1 \mid x_t = x]$ (lab 06; $\hat\varepsilon$ is the noise head) |
# | $X(x, s, t)$ | flow map | where the flow carries a point $x$ from time $s$ to time $t$ (lab 11) |
# | $u(x, s, t)$ | average velocity | $X(x, s, t) = x + (t - s)\, u(x, s, t)$; $u(x, t, t) = v^*(x, t)$ (lab 11) |
#
# Papers that put data at $t = 0$ are translated into this convention in each module's docstring
# (`fmlab.conventions`).

# %% [markdown]
# ## How the labs work
#
# * **Run the cells from top to bottom** (*Run → Run All Cells*). Each lab is self-contained: no hidden state,
#   nothing downloaded. If something looks odd, *Kernel → Restart Kernel and Run All Cells*.
# * **Sliders and dropdowns** redraw their figure at once. Views that cost more to redraw update when you release
#   the slider. If a redraw fails, a red line under the figure says why.
# * **Training cells** show a progress bar. Their result is cached on disk, keyed on the training configuration:
#   re-running the cell, moving a slider afterwards or re-opening the lab tomorrow is instant. A lecturer can train
#   everything the night before with `python -m fmlab prewarm` (labs/README.md).
# * **On a projector**, run `presentation(True)` (imported in the next cell) in any lab: every figure drawn
#   afterwards has larger fonts, markers and lines.
# * **Fast mode.** Starting Jupyter with the environment variable `FMLAB_FAST=1` shrinks training steps and sample
#   sizes (this is how the labs are tested automatically). The code path is the same; only the numbers are smaller,
#   so pictures are a little rougher. Without it you get the real lesson, a few minutes at most per lab on a laptop.
# * **CPU or GPU.** Every 2D lab is sized for a laptop CPU. fmlab picks CUDA, then Apple MPS, then the CPU.
# * **Your turn.** Exercises end with a call to a checker from `fmlab.exercises`, which prints ✓ or ✗ with a hint.
#   Solutions are folded under *Solution*: try first.
#
# Here is what this kernel sees:

# %%
from fmlab.labkit import device_summary, steps
from fmlab.viz.style import presentation

presentation(False)  # notebook sizes; presentation(True) for a projector (any lab, any time)
print(device_summary())

# %% [markdown]
# ## Your first slider
#
# Each orange data point $x_1$ (the *two moons* data set) is paired with a blue noise point $x_0$.
# Move $t$ from 0 to 1: the vermillion points $x_t = (1 - t) x_0 + t x_1$ slide along the grey straight lines
# from the noise cloud to the data. At $t = 0$ they *are* the noise, at $t = 1$ they *are* the data.

# %%
from fmlab.viz.welcome import interpolation_widget

interpolation_widget("moons")

# %% [markdown]
# ## A one-minute tour of flow matching
#
# The slider above needs the data to draw the path. A generative model must *create* new data from noise alone.
# Flow matching learns a **velocity field** $v_\theta(x, t)$, a small neural network, such that following it,
#
# $$\frac{d x}{d t} = v_\theta(x, t), \qquad x(0) = x_0 \sim \mathcal N(0, I),$$
#
# carries noise to data. Training is plain regression: pick a random pair $(x_0, x_1)$ and a random time $t$,
# and ask the network at the point $x_t$ to predict the direction of the straight line, $x_1 - x_0$:
#
# $$\mathcal L(\theta) = \mathbb E_{t, x_0, x_1} \big\| v_\theta(x_t, t) - (x_1 - x_0) \big\|^2 .$$
#
# Labs 01 and 02 explain why this works. For now, train it: the bar below shows the progress
# (about a minute on a laptop CPU; a few seconds in fast mode). The trained model is saved in fmlab's disk cache,
# so re-running the cell, or re-opening the lab tomorrow, loads it at once instead of training again.

# %%
from fmlab.labkit import train_cached
from fmlab.train import TrainConfig

config = TrainConfig(data="moons", loss="cfm", steps=steps(2000, 300), batch_size=256, hidden=128, depth=3,
                     lr=2e-3, warmup=50, log_every=25, ckpt_every=0, seed=0)
trainer = train_cached(config)   # trains once, then loads from the disk cache
print(f"trained {trainer.step} steps in {trainer.elapsed:.1f} s on {trainer.device}; final loss {trainer.log[-1]['loss']:.3f}")

# %% [markdown]
# To **sample**, draw fresh noise and integrate the learned ODE from $t = 0$ to $t = 1$ with 50 small Euler steps
# $x \leftarrow x + \Delta t\, v_\theta(x, t)$. We compare the samples with held-out data using the
# Wasserstein-2 distance $W_2$ (the average distance points must travel to turn one cloud into the other;
# 0 means identical clouds).

# %%
import torch

from fmlab.metrics import wasserstein
from fmlab.viz.welcome import render_tour, sample_model, toy_points

data = toy_points("moons", 1000, seed=123)         # held-out data, not seen in training
samples = sample_model(trainer.ema, n=1000, steps=50)
noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(7))
w2_model, w2_noise = wasserstein(samples, data), wasserstein(noise, data)
print(f"W2(model samples, data) = {w2_model:.3f}   vs   W2(pure noise, data) = {w2_noise:.3f}")
render_tour(samples, data, trainer.log, w2_model)

# %% [markdown]
# The lesson's claim, checked (this cell fails if training or sampling breaks): the model's samples are far closer
# to the data than the noise they started from.

# %%
assert w2_model < 0.6 * w2_noise, (w2_model, w2_noise)
assert trainer.log[-1]["loss"] < trainer.log[0]["loss"]

# %% [markdown]
# ## How many steps does sampling need?
#
# Move the slider: with one Euler step every point jumps in a straight line along its first velocity,
# $x_1 \approx x_0 + v_\theta(x_0, 0)$. That lands near the *average* of the data, because at $t = 0$ the
# network cannot yet know which moon a point will end up on. A few more steps let the trajectories bend.
# Lab 04 measures this properly, and lab 05 shows how to make one step work.

# %%
from fmlab.viz.welcome import sampling_steps_widget

sampling_steps_widget(trainer.ema, data, n=1000, max_steps=50)

# %% [markdown]
# ## Your turn
#
# **Exercise 1.** Take $x_0 = (0, 0)$ and $x_1 = (2, 1)$. At which time $t$ is $x_t = (1.5, 0.75)$?
# Replace `None` with your answer and run the cell.

# %%
from fmlab.exercises.welcome import check_time_on_path

my_t = None   # your answer
check_time_on_path(my_t)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# With $x_0 = 0$ the path is $x_t = t\, x_1 = (2t, t)$. Setting $(2t, t) = (1.5, 0.75)$ gives $t = 0.75$:
# three quarters of the way from noise to data. `check_time_on_path(0.75)`.
#
# </details>

# %% [markdown]
# **Exercise 2.** Use `wasserstein(sample_model(trainer.ema, 1000, steps=k), data)` to find the smallest number of
# Euler steps `k` whose $W_2$ is within 10 % of the 50-step value. Does it match what you saw on the slider? The
# checker accepts `k` when `k` steps are within 10 % and `k - 1` steps are not.

# %%
from fmlab.exercises.welcome import check_min_steps

my_k = None   # your answer: a whole number of steps
check_min_steps(my_k, trainer.ema, data)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# w50 = wasserstein(sample_model(trainer.ema, 1000, steps=50), data)
# for k in (1, 2, 3, 5, 8, 10, 20):
#     w = wasserstein(sample_model(trainer.ema, 1000, steps=k), data)
#     print(k, round(w, 3), w < 1.1 * w50)
# k_min = next(k for k in range(1, 51)
#              if wasserstein(sample_model(trainer.ema, 1000, steps=k), data) <= 1.1 * w50)
# check_min_steps(k_min, trainer.ema, data)
# ```
# With the full training, somewhere between 5 and 10 Euler steps come within 10 %; one step is far off
# (its $W_2$ is close to that of pure noise). The exact number depends on training length and seed.
#
# </details>

# %% [markdown]
# ## What's next
#
# * **Lab 01 · Probability paths**: what the cloud of $x_t$ looks like at every $t$, for one data point and for a whole
#   distribution, and how different *schedules* move from noise to data.
# * **Lab 02 · Vector fields**: why regressing on $x_1 - x_0$, a target that depends on the data point we happened to
#   draw, still learns the one velocity field that moves the whole distribution.
#
# Then: 03 training, 04 solvers and step count, 05 couplings, 06 parametrisation (velocity, clean-data and noise
# heads), 07 the score and SDEs, 08 the continuity equation and likelihoods, 09 conditional generation and guidance,
# 10 unrolled flow matching, 11 flow maps, 12 the loss zoo, 13 faces at 64 x 64 (`labs/README.md` has one line each).

# %% [markdown]
# ## Further reading
#
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023.
# * X. Liu, C. Gong, Q. Liu, *Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow*,
#   ICLR 2023.
# * M. S. Albergo, E. Vanden-Eijnden, *Building Normalizing Flows with Stochastic Interpolants*, ICLR 2023.
#
# Each lab ends with the papers it draws on.
