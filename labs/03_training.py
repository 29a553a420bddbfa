# ---
# jupyter:
#   jupytext:
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
# $x_t$. The title gives the error averaged over $x \sim p_t$. Move $t$ (the figure redraws when you release the
# slider).

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
