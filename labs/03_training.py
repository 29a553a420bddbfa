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
# # Lab 03: training flow matching
#
# Labs 01 and 02 built the probability path and its velocity field by hand. Now a neural network learns the field from
# samples alone, and we watch it happen.
#
# **You will**
#
# 1. write down the conditional flow-matching loss and say what its minimiser is;
# 2. train a small network on a 2D data set with a progress bar and a **live loss curve**, and read that curve: why the
#    loss never reaches zero (the **floor** $L^*$) and what part of it training removes (the **field error**);
# 3. watch particles being **carried from noise to data** by the learned flow (press play);
# 4. put the **learned field beside the closed-form one** at any time $t$ and see where the network is right and where
#    it is guessing.
#
# **Convention.** Noise $x_0 \sim \mathcal N(0, I)$ at $t = 0$, data $x_1$ at $t = 1$,
# $x_t = (1-t)\,x_0 + t\,x_1$, conditional velocity $x_1 - x_0$.
#
# The data are the **8 Gaussians**: eight round blobs on a circle of radius $2\sqrt 2$. It is a Gaussian mixture, so
# `fmlab.data.gmm_2d("8modes")` knows its marginal velocity in closed form, and we can grade the network exactly.

# %%
import torch

from fmlab.data import gmm_2d
from fmlab.exercises import training as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.train import TrainConfig
from fmlab.viz import training as T

torch.manual_seed(0)
GMM = gmm_2d("8modes")  # closed-form ground truth of the data
CONFIG = TrainConfig(data="8modes", loss="cfm", coupling="independent", steps=steps(4000, 400), batch_size=256,
                     hidden=128, depth=3, lr=3e-3, warmup=pick(100, 30), log_every=pick(100, 20), seed=0,
                     threads=1)  # a network this small runs as fast on one CPU thread, even on a busy machine
print(f"fast mode: {fast_mode()}; training {CONFIG.steps} steps of batch {CONFIG.batch_size}")

# %% [markdown]
# ## 1. The loss and its minimiser
#
# Training repeats one step. Draw a batch of data $x_1$, of noise $x_0$ and of times $t \sim U[0, 1]$, form the points
# $x_t = (1-t)\,x_0 + t\,x_1$ and regress the network on the conditional velocities:
#
# $$\mathcal L(\theta) = \mathbb E_{t,\,x_0,\,x_1}\ \big\|v_\theta(x_t, t) - (x_1 - x_0)\big\|^2 .$$
#
# The targets $x_1 - x_0$ are random: many pairs $(x_0, x_1)$ pass through the same point $x_t$ with different
# velocities. A squared error is minimised by the **mean** of its targets, so the best any network can do is the
# **marginal velocity**
#
# $$v^*(x, t) = \mathbb E\,[\,x_1 - x_0 \mid x_t = x\,] = \frac{\mathbb E[x_1 \mid x_t = x] - x}{1 - t},$$
#
# the field of lab 02, whose flow carries $\mathcal N(0, I)$ onto the data. Adding and subtracting $v^*$ splits the loss
# (the cross term has mean zero, as in lab 02):
#
# $$\mathcal L(\theta) =
# \underbrace{\mathbb E\,\big\|(x_1 - x_0) - v^*(x_t, t)\big\|^2}_{\text{floor } L^*,\ \text{independent of } \theta}
# \;+\; \underbrace{\mathbb E\,\big\|v_\theta(x_t, t) - v^*(x_t, t)\big\|^2}_{\text{field error}} .$$
#
# `fmlab` reports both per coordinate (divided by $d = 2$). The floor is how much the conditional targets scatter around
# their mean; the field error is what training can still remove.

# %% [markdown]
# ## 2. Train, live
#
# The cell below trains the network (`fmlab.train.Trainer` with the `cfm` loss). The **green** curve is the training
# loss, the **dashed black** line the floor $L^*$ (closed form, by Monte Carlo), the **dotted vermillion** curve the
# field error of the current (EMA) network, measured against the closed-form $v^*$. The result is cached: running the
# cell again returns at once.

# %%
trainer = T.fit_live(CONFIG)
model = trainer.ema  # the exponential moving average of the weights: what we sample from

# %% [markdown]
# The loss drops quickly and then **flattens just above the floor**, even though the field keeps improving: on a log
# scale the field error falls by an order of magnitude while the loss barely moves. A loss that "stops decreasing" does
# not mean that learning has stopped; here the loss is mostly the irreducible scatter of the targets.
#
# Check the split numerically on one large Monte Carlo batch:

# %%
parts = T.loss_decomposition(model, GMM, n=20000, seed=0)
print(f"loss {parts['loss']:.4f} = floor {parts['floor']:.4f} + field error {parts['field_error']:.4f} "
      f"(sum {parts['floor'] + parts['field_error']:.4f})")
assert abs(parts["loss"] - parts["floor"] - parts["field_error"]) < 0.03 * parts["loss"]
first, last = trainer.log[0]["field_error"], trainer.log[-1]["field_error"]
assert last < 0.3 * first, (first, last)  # training removed most of the field error

# %% [markdown]
# The floor itself depends only on the data and the path, not on the network, so it is the same on every machine
# (closed form, fixed seed):

# %%
# NBVAL_CHECK_OUTPUT
print(f"floor L* for the 8 Gaussians: {T.loss_floor(GMM, n=20000, seed=0):.3f}")
x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
for t in (0.0, 0.5, 0.9):
    v = GMM.velocity(x, t).numpy().round(3) + 0.0  # + 0.0 turns -0.0 into 0.0
    print(f"t = {t}: v*(x, t) at (0,0), (2,0), (2,2) =", v.tolist())

# %% [markdown]
# ## 3. Particles carried from noise to data
#
# A trained field generates by solving the ODE
#
# $$\frac{dx}{dt} = v_\theta(x, t), \qquad x(0) = x_0 \sim \mathcal N(0, I),$$
#
# from $t = 0$ to $t = 1$ (here with 50 RK4 steps; lab 04 is about that choice). Press **play**, or drag the time
# slider. Particles change colour from noise blue to model green; grey trails follow a few of them. Watch how they first
# drift together and only later commit to a blob.

# %%
traj = T.particle_paths(model, n=pick(600, 300), steps=50, method="rk4", seed=0)
T.render_particle_animation(traj.xs, traj.ts, data=GMM.sample(1000, generator=torch.Generator().manual_seed(1)))

# %% [markdown]
# ## 4. The learned field beside the closed form
#
# Left: the exact marginal velocity $v^*(x, t)$ (black). Middle: the network's $v_\theta(x, t)$ (green), with the same
# arrow scale. Right: the error $\|v_\theta - v^*\|$ as a heat map, under grey contour lines of the density $p_t$ of
# $x_t$. The title gives the error averaged over $x \sim p_t$. Drag $t$ from 0 to 1 and watch where the error
# lives: the figure redraws as you drag.

# %%
T.field_comparison_widget(model, GMM, t=0.5)

# %% [markdown]
# Things to notice:
#
# - **Where $p_t$ has mass, the two fields agree.** The error heat map is pale inside the contours and dark outside:
#   the loss only ever evaluates the network at points $x_t \sim p_t$, so far from them it extrapolates freely.
# - **Early ($t$ near 0)** $v^*(x, 0) = \mathbb E[x_1] - x$: every particle first heads for the data mean.
# - **Late ($t$ near 1)** the field points at the nearest blob and grows like $1/(1-t)$ between blobs: the hard part.
#
# The weighted error over all times is the field error of the loss curve. Compared with the field $v = 0$, the network
# explains most of $v^*$:

# %%
learned = T.field_error(model, GMM, n=20000)
nothing = T.field_error(lambda x, t: torch.zeros_like(x), GMM, n=20000)
print(f"field error of the network {learned:.3f}; of the zero field {nothing:.3f}")
assert learned < 0.25 * nothing

# %% [markdown]
# ## Your turn
#
# **Exercise 1.** At $t = 0$, $x_t = x_0$ is pure noise and independent of $x_1$. Show that
# $v^*(x, 0) = \mathbb E[x_1] - x$ and compute $v^*((1, 1), 0)$ for the mixture `gmm_2d("asymmetric")` (means
# $(-2,-1)$, $(2, 1.5)$, $(0.5,-2.5)$ with weights $0.5, 0.3, 0.2$). Answer with a list `[vx, vy]`.

# %%
answer = None  # your answer: [vx, vy]
ex.check_velocity_at_noise(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $v^*(x, 0) = \mathbb E[x_1 - x_0 \mid x_0 = x] = \mathbb E[x_1] - x$ since $x_1$ is independent of $x_0$.
# $\mathbb E[x_1] = 0.5\,(-2,-1) + 0.3\,(2, 1.5) + 0.2\,(0.5,-2.5) = (-0.3, -0.55)$, so
# $v^*((1,1), 0) = (-1.3, -1.55)$:
#
# ```python
# ex.check_velocity_at_noise([-1.3, -1.55])
# ```
#
# </details>

# %% [markdown]
# **Exercise 2.** Estimate the floor $L^* = \mathbb E\,\|(x_1 - x_0) - v^*(x_t, t)\|^2 / 2$ of the 8 Gaussians
# yourself by Monte Carlo, using only `GMM.sample` and the closed-form `GMM.velocity(x, t)` (which accepts a time per
# sample). It should match the dashed line.

# %%
g = torch.Generator().manual_seed(1)
n = 20_000
# x1 = GMM.sample(n, generator=g).double(); x0 = ...; t = ...; x_t = ...
my_floor = None
ex.check_loss_floor(my_floor)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# x1 = GMM.sample(n, generator=g).double()
# x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
# t = torch.rand(n, generator=g, dtype=torch.float64)
# x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
# my_floor = ((x1 - x0) - GMM.velocity(x_t, t)).pow(2).mean().item()  # mean over samples and the 2 coordinates
# ex.check_loss_floor(my_floor)
# ```
#
# </details>

# %% [markdown]
# **Exercise 3.** Where is the learned field least accurate? Answer with one of
# `"near the modes"`, `"where p_t has little mass"`, `"the same everywhere"`.

# %%
answer = None
ex.check_where_error(answer)


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# `"where p_t has little mass"`: the loss samples $x_t \sim p_t$ only, so the network is never told what to do
# elsewhere. That is harmless for sampling as long as the ODE keeps particles where $p_t$ lives, which is exactly what
# an accurate solver does (lab 04).
#
# </details>

# %% [markdown]
# ## Write it yourself
#
# Now build the whole pipeline in plain PyTorch: the loss, the sampler and the training loop. Replace
# `raise NotImplementedError` in each stub, run it, then run its checker, which compares your function with fmlab's and
# names the common mistakes. Later cells use your functions once they pass and fmlab's (with a note) until then.
#
# **Exercise 4.** Write `cfm_loss(model, x0, x1, t)`: the flow-matching loss of section 1 on one batch,
#
# $$\mathcal L = \frac{1}{B\, d} \sum_{i=1}^{B} \big\| v_\theta(x_{t_i}, t_i) - (x_{1,i} - x_{0,i}) \big\|^2,
# \qquad x_{t_i} = (1 - t_i)\, x_{0,i} + t_i\, x_{1,i},$$
#
# with `x0`, `x1` of shape `[B, 2]` and `t` of shape `[B]`; `model(x, t)` returns $v_\theta$, shape `[B, 2]`. Return
# one number (a tensor of shape `()`): the mean over the batch and the $d = 2$ coordinates. The checker compares its
# value **and its gradient** with fmlab's registered `cfm` loss on a fixed batch.

# %%
def cfm_loss(model, x0, x1, t):
    """mean ||model(x_t, t) - (x1 - x0)||^2 over batch and coordinates, x_t = (1 - t) x0 + t x1. Returns shape ()."""
    raise NotImplementedError


# %%
results = {"Exercise 4: cfm_loss": ex.check_cfm_loss(cfm_loss)}


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def cfm_loss(model, x0, x1, t):
#     x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
#     return (model(x_t, t) - (x1 - x0)).pow(2).mean()
# ```
#
# </details>

# %% [markdown]
# **Exercise 5.** Write the Euler sampler `euler_sample(field, x0, steps)`: integrate $dx/dt = $ `field(x, t)` from
# $t = 0$ to $t = 1$ in `steps` equal steps of $\Delta t = 1 / $ `steps`,
# $x_{k+1} = x_k + \Delta t\, v(x_k, t_k)$ with $t_k = k\, \Delta t$, and return the final state `[B, 2]`. The field
# takes a time per sample, a tensor of shape `[B]`.

# %%
def euler_sample(field, x0, steps):
    """x_{k+1} = x_k + dt * field(x_k, t_k), t_k = k dt, dt = 1 / steps, k = 0 .. steps - 1. Returns x at t = 1."""
    raise NotImplementedError


# %%
results["Exercise 5: euler_sample"] = ex.check_euler_sampler(euler_sample)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def euler_sample(field, x0, steps):
#     x, dt = x0, 1.0 / steps
#     for k in range(steps):
#         t = torch.full((len(x),), k * dt, dtype=x.dtype)
#         x = x + dt * field(x, t)
#     return x
# ```
#
# </details>

# %% [markdown]
# **Using your loss and sampler** on the network trained above: its loss on a fresh batch of 20 000 (close to the
# floor $L^*$ of section 2, never below it by more than the sampling noise) and the $W_2$ distance of 2000 samples of
# your Euler sampler (50 steps) to 2000 data points.

# %%
from fmlab.metrics import wasserstein

loss_fn, sampler = ex.cfm_function(cfm_loss), ex.euler_function(euler_sample)
g = torch.Generator().manual_seed(4)
x1 = GMM.sample(20_000, generator=g).float()
x0, t = torch.randn(x1.shape, generator=g), torch.rand(len(x1), generator=g)
with torch.no_grad():
    batch_loss = loss_fn(model, x0, x1, t).item()
floor = T.loss_floor(GMM, n=20000, seed=0)
with torch.no_grad():
    samples = sampler(model, torch.randn(2000, 2, generator=g), 50)
w2 = wasserstein(samples, GMM.sample(2000, generator=g).float())
print(f"loss on a fresh batch {batch_loss:.3f} (floor {floor:.3f}); W2 of 50 Euler steps to the data {w2:.3f}")
assert batch_loss > 0.95 * floor


# %% [markdown]
# **Exercise 6.** Write the training loop, about 15 lines of plain PyTorch:
# `train_loop(model, loss_fn, sample_data, steps, batch_size, lr)` creates an Adam optimiser on `model.parameters()`
# with learning rate `lr` and, `steps` times, draws a fresh batch (`x1 = sample_data(batch_size)`, noise `x0` like
# `x1`, times `t` uniform in $[0, 1]$, shape `[batch_size]`), computes `loss_fn(model, x0, x1, t)`, zeroes the
# gradients, backpropagates and takes an optimiser step. The checker trains a fresh network (hidden width 64, 3
# layers) with your loop and your loss for `ex.LOOP_STEPS` = 600 steps of batch 256 at lr $2 \cdot 10^{-3}$ on the 8
# Gaussians, samples 1000 points with 50 Euler steps and passes when their $W_2$ to 1000 data points is at most
# `ex.LOOP_W2` = 0.6. For scale: two independent 1000-point data samples are $W_2 \approx 0.30$ apart (the floor), and
# fmlab's own loop reached $0.45 \pm 0.04$ (3 seeds, `python benchmarks/exercise_training_loop.py`). It takes a few seconds.

# %%
def train_loop(model, loss_fn, sample_data, steps, batch_size, lr):
    """Adam(lr) on model.parameters(); `steps` times: fresh batch, loss_fn(model, x0, x1, t), zero_grad, backward,
    step."""
    raise NotImplementedError


# %%
results["Exercise 6: train_loop"] = ex.check_training_loop(train_loop, loss_fn)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def train_loop(model, loss_fn, sample_data, steps, batch_size, lr):
#     opt = torch.optim.Adam(model.parameters(), lr=lr)
#     for _ in range(steps):
#         x1 = sample_data(batch_size)
#         x0 = torch.randn_like(x1)
#         t = torch.rand(batch_size)
#         loss = loss_fn(model, x0, x1, t)
#         opt.zero_grad()
#         loss.backward()
#         opt.step()
# ```
#
# </details>

# %%
from fmlab.exercises.code import exercise_report

open_exercises = exercise_report(results)

# %% [markdown]
# ## Summary
#
# - Flow matching regresses $v_\theta(x_t, t)$ on $x_1 - x_0$; the optimum is the marginal velocity
#   $v^*(x, t) = \mathbb E[x_1 - x_0 \mid x_t = x]$.
# - The loss is **floor + field error**. The floor is the scatter of the conditional targets and does not depend on the
#   network; only the field error can be trained away, so judge training by samples or by ground truth, not by how
#   close the loss gets to zero.
# - Samples come from solving $dx/dt = v_\theta(x, t)$ from noise at $t = 0$ to $t = 1$.
#
# **Next:** lab 04 asks how many steps that ODE solve needs, and with which solver.

# %% [markdown]
# ## Further reading
#
# Notation as in lab 00's table. This lab draws on:
#
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023:
#   the conditional flow-matching loss and its minimiser.
# * X. Liu, C. Gong, Q. Liu, *Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow*,
#   ICLR 2023: the same regression on $x_1 - x_0$.
# * M. S. Albergo, E. Vanden-Eijnden, *Building Normalizing Flows with Stochastic Interpolants*, ICLR 2023: the
#   interpolant loss and its floor.
