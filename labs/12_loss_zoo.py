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
# # Lab 12 · The loss zoo: twenty-two ways to learn a flow map
#
# Lab 11 showed what an exact flow map is and the three rules it obeys. The literature has produced a zoo of losses
# that teach a network those rules: consistency models, shortcut models, MeanFlow, Align Your Flow, Lagrangian and
# Eulerian self-distillation, and more. Here they all live side by side, with the same network, the same data and the
# same time convention, so you can train any of them and compare what they give.
#
# **Learning objectives.** After this lab you can
#
# 1. place every loss of the zoo by the **rule** it enforces (compositional, Lagrangian, Eulerian), its **setting**
#    (distillation from a teacher, self-distillation, marginal-from-conditional, data-free) and how its model must be
#    **sampled**;
# 2. write the Eulerian residual and the **MeanFlow identity** in our convention and compute a MeanFlow target by hand;
# 3. train a loss of your choice and judge its samples and paths against the **exact flow map** of a Gaussian mixture,
#    from 1 to 16 steps;
# 4. read the **landscape table** of the benchmark: quality in 1, 2, 4, 8 steps, cost per training step and memory,
#    beside the estimates of Dieleman's survey, and explain why a JVP costs more on a small network than on paper.
#
# **Convention (all labs).** $t = 0$ is noise $x_0 \sim \mathcal N(0, I)$, $t = 1$ is data, $x_t = (1-t)\,x_0 + t\,x_1$.
# A flow map $X(x, s, t) = x + (t - s)\,u(x, s, t)$ jumps from time $s$ to time $t$ ($s \le t$ goes toward the data);
# $u$ is the **average velocity** and $u(x, t, t) = v(x, t)$ the ordinary one. Many papers put data at time 0; every
# loss's docstring (`help(get_loss("meanflow").fn)`) gives the paper's equation and its translation.

# %%
import torch

from fmlab.exercises import loss_zoo as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.losses import get_loss  # noqa: F401 (for help(get_loss(name).fn))
from fmlab.viz import loss_zoo as Z
from fmlab.viz import loss_zoo_results as ZR

torch.manual_seed(0)
TRAIN = steps(2000, 150)  # training steps per loss (the same for every loss, as in the benchmark)
N = pick(600, 150)  # samples drawn per model
print(f"fast mode: {fast_mode()}; {TRAIN} training steps per loss; {N} samples")

# %% [markdown]
# ## 1. Three rules, four settings
#
# An exact flow map satisfies, for all $s \le r \le t$ (lab 11):
#
# | rule | identity | what a loss compares |
# |---|---|---|
# | compositional | $X(X(x, s, r), r, t) = X(x, s, t)$ | one jump against two (shortcut, PSD, SplitMeanFlow, FMM) |
# | Lagrangian ("the canoe") | $\partial_t X(x, s, t) = v(X(x, s, t), t)$ | the speed at the **destination** with the velocity there (LMD, LSD, TVM, PID) |
# | Eulerian ("the bridge") | $\tfrac{d}{ds} X(x_s, s, t) = 0$ along $\dot x_s = v(x_s, s)$ | the destination seen from a **moving start** (MeanFlow, consistency models, EMD, ESD) |
#
# With $X = x + (t - s)\,u$ the Eulerian rule becomes a statement about $u$. Write $\tfrac{d}{ds}u = \partial_x u\,v +
# \partial_s u$ (one Jacobian-vector product, a **JVP**, with tangent $(v, 1, 0)$ in $(x, s, t)$). Then
#
# $$E(x, s, t) = \frac{d}{ds}X(x_s, s, t) = v - u + (t - s)\,\frac{d}{ds}u = 0
# \quad\Longleftrightarrow\quad u = v + (t - s)\,\frac{d}{ds}u .$$
#
# The right-hand form is the **MeanFlow identity** in our time (the paper, with data at 0, writes
# $u = v - (t - r)\,\tfrac{d}{dt}u$). MeanFlow regresses $u$ on the stop-gradient target $(x_1 - x_0) + (t - s)\,
# \tfrac{d}{ds}u$, using the conditional velocity $x_1 - x_0$ of one noise-data pair for $v$: its conditional mean is the
# marginal identity, so the exact map is a fixed point. A consistency model is the same rule with the destination
# fixed at the data, $f(x, s) = X(x, s, 1)$, discretised: CT compares $X(x_s, s, 1)$ with
# $X(x_{s+\delta}, s + \delta, 1)$ on the same noise-data segment.
#
# **Settings.** *Distillation* needs a teacher velocity (a trained flow-matching model, or here the closed-form velocity
# of the mixture: a perfect teacher that isolates the distillation error). *Self-distillation* uses the model's own
# diagonal $u(x, s, s)$ as teacher, trained by flow matching on the diagonal. *Marginal-from-conditional* losses use the
# pair's $x_1 - x_0$ and rely on averaging. *Data-free* losses start from noise only.
#
# **Sampling.** A loss that trains every pair $s \le t$ is sampled by jumps on a grid, $x_{k+1} = X(x_k, t_k, t_{k+1})$.
# CT, CD and FACM only learn jumps to the data: several steps need **re-noising** (jump to the data, put fresh noise
# back on the path at the next time, jump again). PID and FreeFlow only learn maps that start from the noise.
#
# The registry knows all of this:

# %%
# NBVAL_CHECK_OUTPUT
print(Z.classification())

# %% [markdown]
# ## 2. Train one, look at it
#
# The data are the 8-Gaussian toy set, whose exact flow map we can compute (RK4 on the closed-form velocity of the
# mixture). Pick a loss, and for distillation losses a teacher; the first use of a loss trains it (progress bar below
# the figure) and caches it, later moves are instant. The **step-count slider** samples the same noise in 1 to 16
# steps.
#
# - Left: the model's samples (green) over the exact flow map's endpoints of *the same noise* (black) and data (orange).
# - Right: paths of 24 particles: the model's jumps (green, a dot per step) against the exact flow (black).
# - Title: W2 to a data sample, and the RMS distance between the model's samples and the exact endpoints (the better
#   measure here: it compares each particle with where the exact flow sends it).
#
# Try LSD, then MeanFlow, then CD with 1 and with 8 steps, then flow matching with 1 step.

# %%
Z.zoo_widget(loss="lsd", train_steps=TRAIN, n=N)

# %% [markdown]
# What to notice:
#
# - **Flow matching** (a velocity model, Euler steps) needs many steps: with one step every particle moves straight
#   toward the data mean. The flow-map losses jump in one.
# - **Flow-map jumps compose**: for a good map, more steps change little, and paths follow the exact flow.
# - **Consistency models** (CT, CD, FACM) re-noise between steps: their paths zig-zag and their samples do *not*
#   approach the exact endpoints of the same noise as steps increase (fresh noise is injected), even when the samples
#   look right as a distribution.

# %% [markdown]
# ## 3. Four rules of thumb in one plot
#
# Four losses, one per family: flow matching (velocity), PSD (compositional), LSD (Lagrangian) and MeanFlow (Eulerian),
# trained with the same budget. The plot shows the RMS distance to the exact flow map against the number of steps.

# %%
chosen = {"flow matching": "cfm", "PSD": "psd", "LSD": "lsd", "MeanFlow": "meanflow"}
views = {label: Z.ZooView(Z.train_zoo(loss, steps=TRAIN).ema, loss, n=N) for label, loss in chosen.items()}
Z.render_quality(views)

# %%
err = {label: view.error for label, view in views.items()}
print({label: {k: round(e[k], 2) for k in (1, 4, 16)} for label, e in err.items()})
best_map = min(err[label][1] for label in ("PSD", "LSD", "MeanFlow"))
assert best_map < 0.85 * err["flow matching"][1]  # one jump of a flow map beats one Euler step of the velocity
assert err["flow matching"][16] < 0.85 * err["flow matching"][1]  # ... which needs many steps to get there

# %% [markdown]
# One Euler step of the velocity is far off; a flow map trained for the same number of steps is already close in one
# jump. With 16 steps flow matching catches up. (In fast mode the models are barely trained; run the lab without
# `FMLAB_FAST` for the real picture.)

# %% [markdown]
# ## 4. The landscape table
#
# `python benchmarks/flowmaps.py` trains every loss with the same network, optimiser, data (moons and checkerboard),
# independent coupling and budget (2000 steps), samples each in 1, 2, 4 and 8 steps the way it was trained, and measures
# the exact W2 against 1000 held-out data points. The held-out points and the sampling noise are the same for every
# model and seed, so two seeds differ only by training. Every loss ran on seed 0; the two best at one step on each
# data set, and MeanFlow, iMF and SoFlow, ran on seeds 1 and 2 as well. A cell shows the mean +- standard deviation
# over the seeds it ran (a bare number is one seed).
#
# Two references say what a W2 of 1000 points can show. **Flow matching with 100 Euler steps** (in the title) is the
# many-step model the flow maps try to match in one. The **noise floor** is the W2 between two independent samples of
# 1000 points of the data itself (mean +- std over 10 pairs): even a perfect sampler measures about this much. Green
# cells are within 1.2x of 100-step flow matching's mean, yellow within 2x. PID and FreeFlow only learn the jump from
# the noise to the data, one network evaluation (**1 NFE**): more steps cannot change their sample, so their 2-8 step
# cells are n/a. The benchmark also measures the cost of a training step in **forward-pass equivalents** (step time
# over the time of one forward pass of the same network on the same batch) beside the survey's estimate, and the peak
# memory of a step relative to flow matching. This lab reads the committed results; it does not rerun them.

# %%
RESULTS = ZR.load_results()
ZR.render_landscape(RESULTS, sort_by="moons")

# %% [markdown]
# The headline: the leading losses at one step against 100-step flow matching. A difference between two means counts
# only when it exceeds two standard errors, $2\sqrt{s_a^2/n_a + s_b^2/n_b}$ ($s$ the standard deviation over $n$ seeds
# or floor draws); otherwise it is *within noise*. The last line of each block is the selection effect: the loss that
# wins on seed 0 alone, among all that did not diverge, and its mean W2 on the other two seeds.

# %%
# NBVAL_CHECK_OUTPUT
print(ZR.headline_text(RESULTS))

# %%
HEAD = RESULTS["headline"]
for data in RESULTS["config"]["datasets"]:
    leader = HEAD[data][0]
    assert leader["w2_1"]["n"] == 3 and leader["ratio_fm_100"] < 1.2  # one jump within 1.2x of 100 velocity steps
costs = {n: info["fwd_eq"] for n, info in RESULTS["losses"].items()}
assert costs["lmd"] > costs["meanflow"] > costs["cfm"]  # JVPs cost more; backprop through a JVP even more

# %% [markdown]
# On moons the two leading one-jump losses beat 100-step flow matching beyond noise: ESD 0.179 +- 0.001 and CTM
# 0.188 +- 0.013 against 0.215 +- 0.002 (three seeds each). On the checkerboard the leaders, PID 0.494 +- 0.018
# and LMD 0.501 +- 0.018, are within noise of 100-step flow matching (0.477 +- 0.024) and of each other. The leaders
# and flow matching all stay above the noise floor beyond noise (moons 0.074 +- 0.022, checkerboard 0.329 +- 0.087).
# *Which* loss leads is itself within noise: on moons Shortcut, FMM and TVM are within 0.004 of ESD on seed 0, and on
# the checkerboard the winner of seed 0 alone (PID, 0.475) averages 0.504 on the other two seeds: the best of 20 on one
# seed is flattered by its luck. Seed 0 alone ranks the rest of the table, so differences of a few hundredths between
# single-seed cells mean nothing.
#
# **ESD diverged on the checkerboard** (seed 0 here; seeds 1 and 2 too, in `benchmarks/README.md`) once its spatial JVP
# was put under a stop-gradient, as the method prescribes; before that fix it trained there (0.602). On moons it leads.
# The cause is its self-teacher: ESD's target uses the model's own velocity $u(x, s, s)$, trained only on the diagonal
# rows, 25% of each batch in the zoo. With 75% of the batch on the diagonal, as in the ESD paper's checkerboard runs,
# no seed diverges (one-step $W_2$ 0.555 over 3 seeds, `benchmarks/esd_diagonal.py`).
#
# **Read the table with its budget in mind.** 2000 steps are short: flow matching's own 100-step W2 is still above the
# noise floor, so the flow maps are measured against an under-trained reference, and the distilled students (EMD, LMD,
# PID, FreeFlow, PFMM) inherit their teacher's error: on moons they measure 0.211-0.215 at one step (seed 0), their
# teacher 0.215 +- 0.002 at 100 steps.
#
# **With a wider network and four times the budget both reach the floor** (`python benchmarks/flowmaps_floor.py
# --recipes wide-8000,pid-wide-8000`: MLP 4 x 256, batch 512, EMA 0.999, 8000 steps; W2 at n = 2000, where the floor is
# moons 0.063 +- 0.013 and checkerboard 0.299 +- 0.072; three seeds, table in `benchmarks/README.md`). Flow matching at
# 100 steps: moons 0.066 +- 0.001 (1.05x the floor), checkerboard 0.277 +- 0.005 (0.92x). PID distilled from it, one
# jump: 0.071 +- 0.002 (1.13x) and 0.294 +- 0.001 (0.98x). Ratios below 1 are within the floor's own spread (a W2
# between two data samples of 2000 moves by +- 0.07 on the checkerboard). The zoo's ranking was made at the short
# budget; at this one only PID was run.
#
# **SGFlow diverged on the checkerboard.** In expectation over $x_1 - x_0$ given the path point, its objective is
# $\|\partial_s X + \nabla_x X\, v^*\|^2 - \|\nabla_x X\,(v^* - v_\theta)\|^2$: the subtracted term removes the bias of
# the conditional velocity only once the model's own velocity $v_\theta$ is right. Before that the objective is
# unbounded below, and a large spatial Jacobian $\nabla_x X$ pays off. On moons it trained.

# %% [markdown]
# ### More steps: MeanFlow, iMF and SoFlow
#
# A flow map should not get worse when its jump is split into several: each short jump is an easier task. The three
# MeanFlow-style losses, over three seeds:

# %%
# NBVAL_CHECK_OUTPUT
print(ZR.steps_text(RESULTS, ["meanflow", "imf", "soflow"]))

# %% [markdown]
# In the mean over three seeds none of the three gets worse from one step to four: W2 falls on moons for MeanFlow
# (0.232 to 0.162) and SoFlow (0.257 to 0.207) and on the checkerboard for iMF (0.532 to 0.455) and SoFlow (0.554 to
# 0.484), beyond two standard errors; iMF on moons (0.216 to 0.203) and MeanFlow on the checkerboard (0.524 to 0.514)
# change within noise, and in each of those one seed of three is slightly worse at four steps.
#
# It was not always so. With the adaptive loss weight of the papers' image setting, $w = \mathrm{sg}[1/(\epsilon +
# c)^p]$ with $p = 1$ ($\epsilon$ a sample's squared error), all three got worse with every added step on both sets:
# MeanFlow on moons 0.248 +- 0.034 at one step, 0.299 +- 0.027 at four, 0.322 +- 0.022 at eight; on the checkerboard
# 0.758, 1.034, 1.076 (`python benchmarks/meanflow_weighting.py`, three seeds). An earlier version of this lab blamed
# short jumps being trained less. The table below says the opposite: their time samplers train short gaps *more* often
# than a uniform one (LSD's). The measured cause is the weight: the same runs with $p = 0$ do not degrade. Why it hurts:
# MeanFlow's regression target uses the noisy pair velocity $x_1 - x_0$, whose mean given the path point is what the
# identity needs; the weight gives the pairs with a large error, those far from that mean, less say, so the fixed point
# becomes a weighted mean $\mathbb E[w\,y] / \mathbb E[w]$ pulled toward the pair velocities nearest the model's own
# prediction (mode seeking), not the average velocity. (Why the damage grows with the number of steps was not measured.)
# The zoo now uses $p = 0$, no adaptive weight: the numbers above.
#
# How often each loss's time sampler trains a short or a long gap $t - s$ (counted live from each sampler, 100 000
# pairs, 20 000 in fast mode; "diagonal" rows have $s = t$ and train the velocity):

# %%
print(Z.time_gap_table(["meanflow", "imf", "soflow", "lsd"], n=pick(100_000, 20_000)))

# %% [markdown]
# ### AYF (Lagrangian) gets worse with more steps on the checkerboard
#
# AYF's Lagrangian loss (AYF-LMD) gets worse with every added step on the checkerboard (seed 0: 0.657 at one step, 0.893
# at eight). Its surrogate is $\mathbb E\,\langle X(x_s, s, t), \mathrm{sg}[\hat g]\rangle$, with $g = \partial_t X(x_s,
# s, t) - v_T(X, t)$ the Lagrangian residual against the teacher's velocity $v_T$ and $\hat g = g / (\|g\| + c)$ its
# direction ($c = 0.1$). Since $X = x_s + (t - s)\,u$, the push this gives the average velocity $u$ of a pair with gap
# $h = t - s$ is $h\,\hat g$: never more than $h$, whatever the residual. Eight-step sampling composes jumps of $h =
# 1/8$, which are pushed eight times less than the one-step jump. LMD, on the same rule and teacher, differentiates
# $\|g\|^2$ itself and pushes about $2g$ at every gap.
#
# `python benchmarks/flowmaps_ayf.py --datasets checkerboard --variants ayf,ayf_u,lmd --workers 1` (seed 0, the zoo's
# training) tests this. It trains AYF-LMD as in the zoo, a diagnostic variant whose update is divided by $h$ (the
# surrogate on $u$ instead of $X$; not a published loss) and LMD, and measures the error of one jump of length $h$
# against the teacher's own flow (RMS of $(X - \Phi_T)/h$, RK4 on the teacher): from points on the interpolation path,
# where the losses train, and from the points the $1/h$-step sampler actually visits.

# %%
AYF = ZR.load_results(Z.RESULTS_PATH.parent / "flowmaps_ayf.json")
print(ZR.ayf_gap_text(AYF))

# %% [markdown]
# AYF-LMD's jump error on the path is largest at the *shortest* gap (0.52 at $h = 1/8$ against 0.40 at $h = 1$), the
# reverse of LMD's. Dividing its update by $h$ cuts the short-gap error to 0.21, and its W2 then improves with steps
# (0.605 at one step, 0.549 at eight). At the sampler's own points the short-jump error is larger still (0.85): the
# composed jumps leave the path, where nothing was trained. One seed: the factor of 2.4 at $h = 1/8$ is far beyond
# what a seed changes here, but the one-step difference between the two AYF variants is not judged.

# %% [markdown]
# ### How our costs compare with the survey's
#
# The survey counts passes: a forward is 1, a backward 2, a JVP with its forward 2, and a backward through both 4.
# fmlab's MLP computes a JVP by carrying the tangent beside the value through each layer (`fmlab.models.tangent`: one
# more matrix product per layer), so the passes cost about what the survey says: the breakdown printed below the
# chart measures a JVP at about 2 forwards, with a backward about 4, with a backward through the tangent about 6. A
# whole step also draws its times and evaluates the loss, which on this small network (3 x 128, batch 256, one CPU
# thread) adds about one forward: flow matching costs 3.4 against the survey's 3. Where a loss sits far above its
# estimate, our step does more than the survey's formula counts: CTM and PFMM integrate a *velocity* teacher with
# Heun steps (4 and 16 teacher calls per step; the survey's PFMM assumes a flow-map teacher, one call per jump), and
# iMF trains its velocity with the paper's auxiliary loss (7 by the survey's own rule). The chart is one run of the
# benchmark; between runs on this machine a bar moves by up to about 30%. With eager `torch.func.jvp` instead (a dual
# tensor around every operation) the JVP losses cost 1.6-2.3x more on this network (benchmarks/README.md, "JVPs at
# their cost"). Memory follows the passes: a JVP keeps a tangent beside every activation.

# %%
ZR.render_costs(RESULTS)

# %%
for size, parts in (("3 x 128, batch 256", RESULTS["jvp_breakdown"]),
                    ("3 x 1024, batch 2048", RESULTS["jvp_breakdown_wide"])):
    print(size, {k: round(v, 1) for k, v in parts.items()})

# %% [markdown]
# ## Your turn
#
# **Exercise 1 (the MeanFlow target).** A toy average velocity in 1D is $u(x, s, t) = 2x + s - t$. At $x = 1$,
# $s = 0.25$, $t = 0.75$, with conditional velocity $v = x_1 - x_0 = 3$, what is MeanFlow's target
# $u_{\text{tgt}} = v + (t - s)\,\tfrac{d}{ds}u$?

# %%
answer = None
ex.check_meanflow_target(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\tfrac{d}{ds}u = \partial_x u\,v + \partial_s u = 2 \cdot 3 + 1 = 7$, so $u_{\text{tgt}} = 3 + 0.5 \cdot 7 = 6.5$:
# `ex.check_meanflow_target(6.5)`. With the paper's sign in our time ($-(t - s)$) you would get $-0.5$.
#
# </details>

# %% [markdown]
# **Exercise 2 (an exact flow map).** For 1D data $x_1 \sim \mathcal N(m, \lambda)$ with $m = 2$, $\lambda = 0.25$, the
# marginal at time $r$ is $\mathcal N(r m, \mathrm{var}_r)$ with $\mathrm{var}_r = r^2 \lambda + (1 - r)^2$, and the flow
# map is affine: standardise at time $s$, rescale at time $t$. Where does $x = 0$ at $s = 0.5$ land at $t = 1$?

# %%
answer = None
ex.check_gaussian_jump(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $X(x, s, t) = t m + \sqrt{\mathrm{var}_t / \mathrm{var}_s}\,(x - s m)$ with $\mathrm{var}_{0.5} = 0.3125$,
# $\mathrm{var}_1 = 0.25$: $X = 2 + \sqrt{0.8}\,(0 - 1) \approx 1.106$: `ex.check_gaussian_jump(2 - 0.8 ** 0.5)`.
# This affine map is what the test suite trains every loss against.
#
# </details>

# %% [markdown]
# **Exercise 3 (which rule?).** Terminal velocity matching (TVM) matches $\partial_t X(x, s, t)$ with the model's own
# velocity at the destination, $u(X(x, s, t), t, t)$. Which rule is that?

# %%
answer = None  # "compositional", "Lagrangian" or "Eulerian"
ex.check_rule("tvm", answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# It differentiates in the destination time $t$ and compares with the velocity where the particle is: the Lagrangian
# rule (the canoe). `ex.check_rule("tvm", "Lagrangian")`.
#
# </details>

# %% [markdown]
# **Exercise 4 (how to sample).** A model trained with consistency distillation (CD) is asked for 4 steps. Should you
# jump along the grid, re-noise between jumps to the data, or always restart from the noise?

# %%
answer = None  # "flowmap", "consistency" or "noise_only"
ex.check_sampler("cd", answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# CD only ever trained $X(x, s, 1)$, jumps to the data. Multistep sampling must re-noise: jump to the data, put the
# estimate back on the path at the next time with fresh noise, jump again: `ex.check_sampler("cd", "consistency")`.
# Try it in the widget: CD with 8 steps zig-zags.
#
# </details>

# %% [markdown]
# ## Summary
#
# - Every loss of the zoo enforces one of three rules of the exact flow map; the Eulerian residual
#   $v - u + (t - s)\,\tfrac{d}{ds}u$ underlies MeanFlow, consistency models, EMD and ESD.
# - Settings differ in where the velocity comes from: a teacher, the model's own diagonal, or the noisy pair
#   $x_1 - x_0$; samplers must follow what the loss trained.
# - With the same small network and budget, the best flow-map losses in one jump beat 100 flow-matching steps on moons
#   and are within noise of them on the checkerboard (three seeds); which loss leads is within noise. With the tangent
#   carried by hand, a JVP-based loss costs close to the survey's pass count wherever its step does what the survey
#   counts (within 1.25x on this network in the repeated timing of benchmarks/README.md, "JVPs at their cost"; the
#   chart above is one noisier run, and CTM, PFMM and iMF do more); eager `torch.func.jvp` would cost 1.6-2.3x that.

# %% [markdown]
# ## Further reading
#
# Each loss names its paper and the paper's time convention: `get_loss(name).paper`, `get_loss(name).convention`.
#
# * S. Dieleman, *Learning the integral of a diffusion model* (a survey of flow maps, 2026): the landscape, the three
#   rules and the cost counts the table compares with.
# * N. M. Boffi, M. S. Albergo, E. Vanden-Eijnden, *Flow Map Matching*, 2024, and *How to build a consistency model:
#   Learning flow maps via self-distillation*, 2025.
# * Z. Geng, M. Deng, X. Bai, J. Z. Kolter, K. He, *Mean Flows for One-step Generative Modeling*, 2025.
# * K. Frans, D. Hafner, S. Levine, P. Abbeel, *One Step Diffusion via Shortcut Models*, 2024.
# * Y. Song, P. Dhariwal, M. Chen, I. Sutskever, *Consistency Models*, ICML 2023.
# * A. Sabour, S. Fidler, K. Kreis, *Align Your Flow*, 2025.
# * *Flow Map Learning via Non-Gradient Vector Flow* (SGFlow), ICLR 2026.
#
# The notation is lab 00's table.
