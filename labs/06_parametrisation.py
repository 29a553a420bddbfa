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
# # Lab 06: what should the network output?
#
# Flow matching trains a network whose output defines a velocity field $\hat v(x, t)$: the sampler moves particles
# with it from noise ($t = 0$) to data ($t = 1$). The network does not have to output the velocity itself. It can
# output any quantity from which the velocity follows; that choice is its **head** (or *parametrisation*). Three heads
# are common:
#
# - the **velocity field** ("the field"): $\hat v_\theta(x, t)$ directly;
# - the **clean-data head**: $\hat x_{1,\theta}(x, t)$, a guess of the data point $x_1$ on whose path $x$ lies at time
#   $t$ (the best guess is the average of the data points that could have produced $x$: $\mathbb E[x_1 \mid x_t = x]$);
# - the **noise head**: $\hat\varepsilon_\theta(x, t)$, a guess of the noise $x_0$ on whose path $x$ lies (at best
#   $\mathbb E[x_0 \mid x_t = x]$; diffusion papers call the noise $\varepsilon$).
#
# All three can describe the same flow. They do not train the same, and that is this lab's subject.
#
# This lab reproduces the parametrisation part of the manuscript *When does unrolling help flow matching?*
# (Fruytier, 2026), translated into our convention. The manuscript puts data at $t = 0$ and calls the clean-data head
# $\hat x_0$; here data sit at $t = 1$, so its "near the data, $t \to 0$" is our $t \to 1$ and its $\hat x_0$ is our
# $\hat x_1$.
#
# **Learning objectives.** By the end you can
#
# 1. convert between the three heads and say at which end of $[0, 1]$ each conversion amplifies errors;
# 2. explain why an $\hat x_1$ loss weighted by $1/(1-t)^2$ *is* the flow-matching loss, while plain $\hat x_1$
#    regression is a different loss that neglects the data end;
# 3. write the transition Jacobian of one Euler step for the field and for the $\hat x_1$ head;
# 4. measure the two heads' gradient norms at four noise levels, at equal training steps and at **matched loss**;
# 5. compare their sample quality (Wasserstein-1) on moons, S-curve and Swiss roll, and say which gaps exceed the
#    seed-to-seed noise.
#
# Run the cells from top to bottom. Training cells show a progress bar and cache their result: running them again is
# instant. With `FMLAB_FAST=1` every run is shortened (same code) so the whole notebook takes seconds.

# %%
import torch

from fmlab import experiments as E
from fmlab.data import sample_toy
from fmlab.diagnostics import DEFAULT_LEVELS
from fmlab.exercises import parametrisation as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.losses import Batch
from fmlab.models import build_model
from fmlab.viz import parametrisation as P

torch.manual_seed(0)
STEPS = steps(3000, 150)  # training steps per run (FMLAB_FAST=1: 150)
TRACK = pick(50, 25)  # measure the gradient norms every TRACK steps
N_EVAL = steps(1000, 300)  # samples for W1
print(f"fast mode: {fast_mode()}; {STEPS} steps per run; gradient norms at t = {DEFAULT_LEVELS}")

# %% [markdown]
# ## 1. Three heads, one flow
#
# On the linear path $x_t = (1-t)\,x_0 + t\,x_1$ (noise $x_0 \sim \mathcal N(0, I)$, data $x_1$) the conditional
# velocity is $u = x_1 - x_0$. Given $x_t$ and $t$, knowing one of $x_0$, $x_1$ or $u$ gives the other two:
#
# $$x_0 = \frac{x_t - t\,x_1}{1-t} \;\Rightarrow\; u = \frac{x_1 - x_t}{1 - t}, \qquad\qquad
# x_1 = \frac{x_t - (1-t)\,x_0}{t} \;\Rightarrow\; u = \frac{x_t - x_0}{t}.$$
#
# A head is turned into a velocity by the same formulas, with the network's guess in place of the unknown:
#
# $$\hat v = \frac{\hat x_1 - x_t}{1 - t} \quad(\hat x_1\text{ head}), \qquad\qquad
# \hat v = \frac{x_t - \hat\varepsilon}{t}, \quad \hat x_1 = \frac{x_t - (1-t)\,\hat\varepsilon}{t}
# \quad(\text{noise head}).$$
#
# `fmlab.paths` has these conversions (`velocity_from_x1`, `velocity_from_eps`, `x1_from_eps`, ... and
# `convert_prediction(pred, x_t, t, source, target)` between any two of `"velocity"`, `"x1"`, `"eps"`); the models of
# `fmlab.models` apply them, so every model returns a velocity to the sampler whatever its head.
#
# **Where each head is ill-conditioned.** An error $\delta$ in the head becomes an error in the velocity of
# $\delta/(1-t)$ for the $\hat x_1$ head and $-\delta/t$ for the noise head. The $\hat x_1$ head's errors blow up
# **near the data** ($t \to 1$): there $x_t$ is almost $x_1$, and the velocity is the small remainder $\hat x_1 - x_t$
# divided by $1-t$. The noise head's errors blow up **near the noise** ($t \to 0$): there $x_t$ is almost the noise
# $x_0$, the guess $\hat\varepsilon \approx x_t$ is easy, and what matters, the small remainder $x_t - \hat\varepsilon$,
# is divided by $t$. (Papers with data at $t = 0$ put this at their $t \to 1$, the high-noise end.) The field has no
# such division.
#
# The cell below checks both statements on a closed-form two-dimensional mixture (`gmm_2d("8modes")`, in float64),
# whose exact heads are known: $\hat x_1 = \mathbb E[x_1 \mid x_t]$ and $\hat\varepsilon = \mathbb E[x_0 \mid x_t]$.
# Converted with `fmlab.paths`, both give back the mixture's exact velocity; and an error of $\delta = 0.01$ in every
# coordinate of a head moves the velocity by $\delta$ times the printed gain.

# %%
# NBVAL_CHECK_OUTPUT
rows = P.head_conversions(times=(0.02, 0.5, 0.98), delta=0.01)
for t, row in rows.items():
    assert row["x1 exact"] < 1e-10 and row["eps exact"] < 1e-10, row  # the exact velocity, recovered
    assert abs(row["x1 gain"] - 1 / (1 - t)) < 1e-6 and abs(row["eps gain"] - 1 / t) < 1e-6, row
    print(f"t = {t:4.2f}: gain of the x1 head 1/(1-t) = {row['x1 gain']:5.2f}, "
          f"of the noise head 1/t = {row['eps gain']:5.2f}")
print("converted exact heads match the exact velocity to < 1e-10")

# %% [markdown]
# ## 2. Which loss? The weight decides
#
# Flow matching regresses $\hat v$ on $u$. Through an $\hat x_1$ head, since $\hat v - u = (\hat x_1 - x_1)/(1-t)$,
#
# $$\|\hat v - u\|^2 = \frac{1}{(1-t)^2}\,\|\hat x_1 - x_1\|^2 .$$
#
# So there are two natural losses for an $\hat x_1$ head, and they are not the same:
#
# - **weighted** $\hat x_1$ regression, $\mathbb E\,\|\hat x_1 - x_1\|^2/(1-t)^2$, *is* the flow-matching loss written
#   through the head: for the same network it is the same function of the weights, hence the same minimiser and the
#   same gradient. `fmlab` registers it as `x1_prediction`, with weight $1/((1-t)^2 + \epsilon)$ and
#   $\epsilon = 10^{-3}$, which keeps the weight below $1/\epsilon = 1000$ and differs from $1/(1-t)^2$ only within about
#   $0.03$ of the data (the manuscript's `1/(t**2 + eps)` in its time).
# - **plain** $\hat x_1$ regression, $\mathbb E\,\|\hat x_1 - x_1\|^2 = \mathbb E\,(1-t)^2\,\|\hat v - u\|^2$, is
#   the velocity loss with weight $(1-t)^2$: $0.01$ at $t = 0.9$. Its exact minimiser is the same
#   ($\hat x_1 = \mathbb E[x_1 \mid x_t]$, which gives the exact velocity), but a network of finite size trained with it
#   spends little effort near the data, precisely where the sampler divides its errors by $1-t$.
#
# (The same holds for the noise head: flow matching through it weighs $\|\hat\varepsilon - x_0\|^2$ by $1/t^2$, while
# plain noise regression, the loss of DDPM on its own path, weighs the velocity error by $t^2$.)
#
# **What this lab trains.** Every $\hat x_1$ run in this lab, in `benchmarks/unrolling.py parametrisation` and in
# lab 13 trains the *weighted* loss `x1_prediction`: the field and the $\hat x_1$ head then minimise the same loss and
# the comparison isolates the head. Plain $\hat x_1$ regression is not trained: it would change the loss and the head
# at once.
#
# What does differ between the two heads, then? Not the loss, but how the weights produce the velocity. The gradient
# reaching the network's output is $\partial L/\partial \hat v$ for the field and
# $\partial L/\partial \hat x_1 = \frac{1}{1-t}\,\partial L/\partial \hat v$ for the $\hat x_1$ head: at the same velocity
# error, **the closer to the data, the larger the $\hat x_1$ head's gradient**.
#
# The first cell checks the two identities on an untrained $\hat x_1$-head network and a random batch; the second prints
# the weights at the four noise levels we track.

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
torch.manual_seed(0)
net = build_model(prediction="x1", hidden=32, depth=2)
batch = Batch(x0=torch.randn(512, 2, generator=g), x1=sample_toy("moons", 512, generator=g),
              t=0.99 * torch.rand(512, generator=g))
ids = P.x1_loss_identities(net, batch)
assert abs(ids["weighted x1"] / ids["velocity"] - 1) < 1e-5 and ids["gradient gap"] < 1e-5
assert abs(ids["plain x1"] / ids["velocity x (1-t)^2"] - 1) < 1e-5
print("weighted x1 loss = velocity loss through the head; their gradients agree to < 1e-5 (relative)")
print("plain x1 loss    = velocity loss weighted by (1-t)^2")

# %%
# NBVAL_CHECK_OUTPUT
for t in DEFAULT_LEVELS:
    print(f"t = {t:.1f}: weighted x1 loss 1/(1-t)^2 = {1 / (1 - t) ** 2:6.2f} x ||x1 error||^2;  "
          f"plain x1 loss = {(1 - t) ** 2:4.2f} x ||v error||^2;  output gradient factor 1/(1-t) = {1 / (1 - t):5.2f}")

# %% [markdown]
# ## 3. One Euler step, two transition Jacobians
#
# A sampler (and an unrolled training window, lab 10) moves a particle by Euler steps $x \mapsto x + dt\,\hat v(x, t)$.
# How does a small change of the state propagate through one step? Its Jacobian $T = \partial x_{k+1} / \partial x_k$ is
#
# $$T^{\text{field}} = I + dt\, J_{\hat v}, \qquad
# T^{\hat x_1} = \Big(1 - \frac{dt}{1-t}\Big) I + \frac{dt}{1-t}\, J_{\hat x_1},$$
#
# with $J$ the network's Jacobian in $x$. Written this way the field's step is a **near-identity** ($dt \ll 1$, the
# network only nudges), while the $\hat x_1$ step mixes the identity with the network's own Jacobian in the proportion
# $dt/(1-t)$, which reaches 1 at the last step before the data: there the particle is simply *replaced* by the
# network's guess.
#
# Two heads that have learned the *same* flow have the same $T$ (substitute $\hat v = (\hat x_1 - x)/(1-t)$). What
# differs is how the network's **output** moves the next state: by $dt$ for a field, by $dt/(1-t)$ for an $\hat x_1$
# head. Every gradient that reaches the network through a state (the loss of an unrolled window, lab 10) is multiplied
# by this gain. `fmlab.diagnostics.transition_jacobians` computes $T$ by autograd along a model's own trajectory; we look
# at both quantities once the two heads are trained.

# %% [markdown]
# ## 4. Gradient norms while training (the manuscript's figure)
#
# We train the two heads on **moons** with the same backbone (an MLP, 3 layers of 128), the same optimiser, the same
# data stream and the same loss (section 2). Every few steps `fmlab.diagnostics.grad_norms_at_levels` measures the
# norm of the gradient of each run's own loss with respect to all the network's weights, on a fresh minibatch of 256
# whose times are all set to one noise level $t \in \{0.1, 0.4, 0.7, 0.9\}$ ($t = 0.9$ is near the data: the
# manuscript's $t = 0.1$).
#
# The figure redraws while the runs train. When they are done, press **play** (or drag the slider) to replay it.

# %%
moons_runs, grad_view = P.parametrisation_live("moons", steps=STEPS, track_every=TRACK, n_eval=N_EVAL)

# %%
summary = P.summarise_gradients(moons_runs)
for label, stats in summary.items():
    print(f"{label:>14}: mean |grad| at t = {DEFAULT_LEVELS}: " + ", ".join(f"{float(v):.2f}" for v in stats["mean"])
          + f"; max at t = 0.9: {float(stats['max'][-1]):.2f}; "
          f"spikiness (std/mean) at 0.9: {float(stats['cv'][-1]):.2f}")
ratio = summary["x1 prediction"]["mean"] / summary["field"]["mean"]
print("x1 / field, mean over the run: " + ", ".join(f"t={t}: {float(r):.1f}x" for t, r in zip(DEFAULT_LEVELS, ratio)))

# %% [markdown]
# **What to look at.** Near the data ($t = 0.9$) the $\hat x_1$ head's gradient is much larger than the field's and
# jumps from minibatch to minibatch; near the noise ($t = 0.1$) it is somewhat *smaller*. The ratio grows with $t$, as
# the factor $1/(1-t)$ says. (In the benchmark below, 3 seeds of 3000 steps, this mean ratio is 12 to 18 at $t = 0.9$
# and 0.65 to 0.84 at $t = 0.1$; a fast-mode run is too short to show it reliably.)
#
# ### Equal steps or matched loss?
#
# The ratio above averages over the whole run, and the two runs do not progress at the same speed. A minibatch gradient
# is the gradient of the loss, which vanishes only at the optimum, plus minibatch noise: a run that is further from its
# optimum has larger gradients for that reason alone. A
# fair comparison takes both heads **at the same loss**. We measure it on a fixed held-out set of 4096 triples
# $(x_0, x_1, t)$, with the loss that both heads minimise: the velocity-equivalent loss
# $\mathbb E\,\|\hat x_1 - x_1\|^2/((1-t)^2 + 10^{-3})$, where a field's $\hat x_1 = x_t + (1-t)\,\hat v$
# (`P.velocity_equivalent_loss`). The matched loss is the lowest one both runs reach; each run is taken at the first
# measured step where it gets there, and its gradient norms are averaged over 16 fresh minibatches
# (`P.matched_gradients`). For comparison, the same average at equal steps (both at the end).

# %%
matched = P.matched_gradients(moons_runs)
print(f"matched velocity-equivalent loss {matched.target:.4f}: reached by the field at step {matched.steps['field']}, "
      f"by the x1 head at step {matched.steps['x1 prediction']}")
for name, r in (("matched loss", matched.matched_ratio), (f"equal steps ({matched.final_step})", matched.final_ratio)):
    print(f"x1 / field at {name:>18}: " + ", ".join(f"t={t}: {float(x):.1f}x" for t, x in zip(DEFAULT_LEVELS, r)))

# %% [markdown]
# Compare the two steps: if the field reaches the $\hat x_1$ head's best loss earlier, it learns the same loss faster.
# And compare the matched ratio near the data with the mean over the run above.
#
# **Three seeds, three data sets, two budgets.** `python benchmarks/unrolling.py parametrisation --steps 3000 --seeds 3`
# repeats this comparison with seeds 0, 1, 2 on moons, S-curve and Swiss roll, and the same command with
# `--steps 10000 --track-every 100` with a longer budget (`benchmarks/README.md`, "Parametrisation"; mean $\pm$ std over
# the 3 seeds). The ratio $\hat x_1$ / field of the gradient norms at $t = 0.9$ is
#
# | | moons | S-curve | Swiss roll |
# |---|---|---|---|
# | 3000 steps: mean over the run (the figure above) | $16.1 \pm 1.9$ | $13.9 \pm 0.6$ | $18.5 \pm 0.7$ |
# | 3000 steps: at matched loss | $4.6 \pm 0.2$ | $5.1 \pm 1.5$ | $5.3 \pm 0.9$ |
# | 3000 steps: at equal steps (the end) | $4.9 \pm 0.3$ | $4.4 \pm 0.3$ | $7.0 \pm 0.4$ |
# | 10000 steps: at matched loss | $3.1 \pm 0.3$ | $3.9 \pm 1.3$ | $5.0 \pm 0.1$ |
# | 10000 steps: at equal steps (the end) | $3.6 \pm 0.3$ | $5.1 \pm 0.7$ | $5.6 \pm 0.5$ |
#
# It exceeds 1 in every seed (the smallest single value is 2.7); at $t = 0.1$ it is below 1 on average (0.44 to 0.91,
# means over seeds; single seeds up to 1.0). In every run the field reaches the $\hat x_1$ head's best loss in 17 to 49%
# of the steps the $\hat x_1$ head takes: it learns the same loss faster. Averaged over the four levels, the $\hat x_1$
# head's gradient norm at matched loss is 2.3 to 2.7 times the field's after 3000 steps and 2.0 to 2.8 times after
# 10000: the manuscript's "roughly $3\times$ the mean gradient norm at matched training loss" (it does not say how it
# averages) is at the top of this range. Its spikes, up
# to about 22 against about 0.3 for the field, compare with our tracked maxima at $t = 0.9$: 37 to 226 for the
# $\hat x_1$ head against 1.3 to 3.5 for the field (means over seeds), with a std/mean along the run of 0.6 to 1.8
# against 0.3 to 0.4.
#
# So what we reproduce is: **near the data the $\hat x_1$ head's gradient is several times the field's (3.1 to 5.3 at
# matched loss, 3.6 to 7.0 at equal steps) and far spikier; averaged over noise levels, about 2.0 to 2.8 times at matched
# loss**. The mean over the run, which our earlier one-seed report quoted, is larger than either. One caveat: at matched
# loss the field is taken mid-training, at a high learning rate, and the $\hat x_1$ head at the end of its learning-rate
# decay; the equal-step comparison, where both are at the end, has no such difference and shows the same pattern.
#
# The next cell turns the lesson's claim into a check on this notebook's own run.

# %%
near = DEFAULT_LEVELS.index(0.9)
near_ratio = float(matched.matched_ratio[near])
assert near_ratio > 1.0, f"x1 head's gradient near the data, matched loss: {near_ratio:.2f}x the field's"
assert near_ratio > matched.matched_ratio[0], "the gap should grow towards the data"
print(f"checked: at matched loss, near the data the x1 head's gradient is {near_ratio:.1f}x the field's")

# %% [markdown]
# ### Transition Jacobians along each model's flow
#
# The slider sets the number of Euler steps, hence $dt$. Left: $\|T\|$ of one step along each model's own flow. Both
# stay close to 1, as they should once both heads represent nearly the same flow. Right: the gain from the network's
# output to the next state, constant $dt$ for the field and $dt/(1-t)$, growing to 1, for the $\hat x_1$ head: the
# same $1/(1-t)$ that inflates its gradient.

# %%
models = {r.label: r.model for r in moons_runs}
P.transition_widget(models, euler_steps=16)

# %% [markdown]
# ## 5. Sample quality on three manifolds
#
# Now both heads on **moons**, **S-curve** and **Swiss roll** (the moons runs are the ones above, taken from the
# cache), one seed each. We sample with 100 Euler steps and measure the exact Wasserstein-1 distance
# (`fmlab.metrics.wasserstein`, in data units) between `N_EVAL` samples and as many fresh data points (1000; 300 in
# fast mode). The black tick is the noise floor, the W1 between two data samples of the same size: the best any model
# can score.

# %%
table = P.parametrisation_table(STEPS, n_eval=N_EVAL, track_every=TRACK)
w1 = {d: {lbl: r.w1[100] for lbl, r in row.items()} for d, row in table.items()}
floors = {d: E.noise_floor_w1(d, N_EVAL) for d in table}
P.render_w1_bars(w1, floors)

# %%
samples = {d: {lbl: E.samples_of(r.model, 600) for lbl, r in row.items()} for d, row in table.items()}
data = {d: sample_toy(d, 600, generator=torch.Generator().manual_seed(1)) for d in table}
P.render_samples(samples, data, w1)

# %%
for d in w1:
    worse = 100 * (w1[d]["x1 prediction"] / w1[d]["field"] - 1)
    print(f"{d:>10}: W1 field {w1[d]['field']:.3f}, x1 prediction {w1[d]['x1 prediction']:.3f} ({worse:+.0f}%), "
          f"noise floor {floors[d]:.3f}")

# %% [markdown]
# **One seed is not a result.** The benchmark's three seeds (the commands above) give, as mean $\pm$ std over seeds:
#
# | | steps | W1 field | W1 $\hat x_1$ | $\hat x_1$ / field $- 1$ | noise floor |
# |---|---|---|---|---|---|
# | moons | 3000 | $0.127 \pm 0.007$ | $0.150 \pm 0.009$ | $+18 \pm 12\%$ | 0.059 |
# | S-curve | 3000 | $0.165 \pm 0.019$ | $0.339 \pm 0.050$ | $+104 \pm 7\%$ | 0.115 |
# | Swiss roll | 3000 | $0.260 \pm 0.012$ | $0.324 \pm 0.025$ | $+25 \pm 11\%$ | 0.153 |
# | moons | 10000 | $0.062 \pm 0.004$ | $0.112 \pm 0.014$ | $+82 \pm 36\%$ | 0.059 |
# | S-curve | 10000 | $0.142 \pm 0.020$ | $0.152 \pm 0.009$ | $+8 \pm 9\%$ | 0.115 |
# | Swiss roll | 10000 | $0.168 \pm 0.012$ | $0.256 \pm 0.005$ | $+53 \pm 9\%$ | 0.153 |
#
# The $\hat x_1$ head is worse in 17 of the 18 (manifold, budget, seed) runs, and five of the six gaps exceed twice
# their standard error (the rule the benchmark uses to call a difference resolved). The exception is S-curve at 10000
# steps: $+8 \pm 9\%$, one seed $-1\%$, within the noise. The two heads are compared on the same seed, so a gap can be
# resolved even where it is smaller than the spread of W1 across seeds. The size of the gap depends on the budget:
# S-curve goes from $+104\%$ to $+8\%$ with the longer training, moons from $+18\%$ to $+82\%$ (its field is then
# within 0.003 of the noise floor). The manuscript reports $+130$ to $+690\%$ with its own models and budgets, which we do not have; so we
# reproduce the sign of its claim, not its size.
#
# (Under `FMLAB_FAST=1` the runs are far too short for either head to have converged, so the next check only runs in
# the full lesson.)

# %%
worse = [d for d in w1 if w1[d]["x1 prediction"] > w1[d]["field"]]
if not fast_mode():
    assert len(worse) == len(w1), w1  # x1 prediction is worse on every manifold (3 seeds: 9 of 9 at 3000 steps)
print("x1 prediction is worse than the field in W1 on", worse)

# %% [markdown]
# ## Your turn
#
# **Exercise 1.** At $t = 0.9$, by what factor $w$ does the velocity error exceed the clean-data error,
# $\|\hat v - u\|^2 = w\,\|\hat x_1 - x_1\|^2$?

# %%
answer = None  # your number
ex.check_x1_loss_weight(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\hat v - u = \big((\hat x_1 - x_t) - (x_1 - x_t)\big)/(1-t) = (\hat x_1 - x_1)/(1-t)$, so
# $w = 1/(1-t)^2 = 1/0.01 = 100$.
#
# </details>

# %% [markdown]
# **Exercise 2.** An $\hat x_1$ head whose Jacobian is $J_{\hat x_1} = 0.5\,I$ takes one Euler step of $dt = 1/8$ at
# $t = 0.75$. What is the spectral norm of its transition Jacobian $T$? (Compare: a field with $J_{\hat v} = 0.5\,I$
# gives $\|T\| = 1.0625$.)

# %%
answer = None  # your number
ex.check_x1_transition_norm(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $dt/(1-t) = 0.125/0.25 = 0.5$, so $T = (1 - 0.5) I + 0.5 \cdot 0.5 I = 0.75\,I$ and $\|T\| = 0.75$. Half of the
# step is the network's guess: far from the near-identity $1 + dt \cdot 0.5 = 1.0625$ of the field.
#
# </details>

# %% [markdown]
# **Exercise 3.** The gradient at the $\hat x_1$ head's output carries the factor $1/(1-t)$. By how much larger is that
# factor at $t = 0.9$ than at $t = 0.1$? Compare with how much the measured ratio $\hat x_1$ / field of the gradient
# norms grows from $t = 0.1$ to $t = 0.9$.

# %%
answer = None  # your number
ex.check_gradient_factor_ratio(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $(1/0.1)/(1/0.9) = 9$. In the benchmark (3000 steps, matched loss), the ratio grows from 0.51 to 0.65 at $t = 0.1$ to
# 3.6 to 6.7 at $t = 0.9$: by a factor of about 7 to 13, the same order as 9. It is not exactly 9 because the factor
# acts at the output, while the gradient norm also depends on the size of the velocity error at each $t$ and on how
# the two networks' weights map to their outputs.
#
# </details>

# %% [markdown]
# **Exercise 4.** A noise head is off by $\delta = 0.01$ in one coordinate at $t = 0.05$, close to the noise. How large
# is the error in that coordinate of the velocity it implies?

# %%
answer = None  # your number
ex.check_eps_velocity_error(answer)


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\hat v = (x_t - \hat\varepsilon)/t$, so the error is $\delta/t = 0.01/0.05 = 0.2$, twenty times the head's error. An
# $\hat x_1$ head off by the same $\delta$ at the same $t$ gives only $\delta/(1-t) \approx 0.0105$.
#
# </details>

# %% [markdown]
# ## Write it yourself
#
# **Exercise 5.** Write the four conversions of section 1 between the velocity $v$, the clean-data head $\hat x_1$
# and the noise head $\hat\varepsilon$, for a batch of points `x` (that is, $x_t$) of shape `[B, 2]` at times `t` of
# shape `[B]` (write `t[:, None]` to broadcast). Each takes the head's output first:
#
# | function | formula |
# |---|---|
# | `x1_from_velocity(v, x, t)` | $\hat x_1 = x_t + (1 - t)\, v$ |
# | `velocity_from_x1(x1_hat, x, t)` | $v = (\hat x_1 - x_t) / (1 - t)$ |
# | `eps_from_velocity(v, x, t)` | $\hat\varepsilon = x_t - t\, v$ |
# | `velocity_from_eps(eps_hat, x, t)` | $v = (x_t - \hat\varepsilon) / t$ |
#
# Derive each from $x_t = (1 - t)\, x_0 + t\, x_1$ and $v = x_1 - x_0$ before you code it. The checker feeds exact
# heads (it knows $x_0$ and $x_1$) and names a flipped sign, a flipped time convention (data at $t = 0$) and a result
# that is the *other* head.

# %%
def x1_from_velocity(v, x, t):
    """x1_hat = x + (1 - t) v. v, x: [B, 2]; t: [B]."""
    raise NotImplementedError


def velocity_from_x1(x1_hat, x, t):
    """v = (x1_hat - x) / (1 - t)."""
    raise NotImplementedError


def eps_from_velocity(v, x, t):
    """eps_hat = x - t v."""
    raise NotImplementedError


def velocity_from_eps(eps_hat, x, t):
    """v = (x - eps_hat) / t."""
    raise NotImplementedError


# %%
my_conversions = {("velocity", "x1"): x1_from_velocity, ("x1", "velocity"): velocity_from_x1,
                  ("velocity", "eps"): eps_from_velocity, ("eps", "velocity"): velocity_from_eps}
results = {f"Exercise 5: {fn.__name__}": ex.check_conversion(fn, *pair) for pair, fn in my_conversions.items()}

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def x1_from_velocity(v, x, t):
#     return x + (1 - t[:, None]) * v
#
#
# def velocity_from_x1(x1_hat, x, t):
#     return (x1_hat - x) / (1 - t[:, None])
#
#
# def eps_from_velocity(v, x, t):
#     return x - t[:, None] * v
#
#
# def velocity_from_eps(eps_hat, x, t):
#     return (x - eps_hat) / t[:, None]
# ```
#
# </details>

# %% [markdown]
# **Using your conversions** on the closed-form 8-Gaussian mixture: from its exact velocity $v^*$, your
# `x1_from_velocity` must give the posterior mean $\mathbb E[x_1 \mid x_t]$ (`GaussianMixture.denoiser`), and each
# head converted back must give $v^*$ again.

# %%
from fmlab.data import gmm_2d

mixture = gmm_2d("8modes")
g = torch.Generator().manual_seed(3)
x = 2 * torch.randn(500, 2, generator=g, dtype=torch.float64)
t = 0.05 + 0.9 * torch.rand(500, generator=g, dtype=torch.float64)
v_star = mixture.velocity(x, t)
convert = {pair: ex.conversion_function(fn, *pair) for pair, fn in my_conversions.items()}
x1_hat = convert["velocity", "x1"](v_star, x, t)
eps_hat = convert["velocity", "eps"](v_star, x, t)
assert torch.allclose(x1_hat, mixture.denoiser(x, t))
assert torch.allclose(convert["x1", "velocity"](x1_hat, x, t), v_star)
assert torch.allclose(convert["eps", "velocity"](eps_hat, x, t), v_star)
print("x1_hat = E[x1 | x_t], and both heads convert back to v* (500 points, float64)")

# %%
from fmlab.exercises.code import exercise_report

open_exercises = exercise_report(results)

# %% [markdown]
# ## Summary
#
# - Three heads describe the same flow on the linear path: $\hat v = (\hat x_1 - x_t)/(1-t) = (x_t - \hat\varepsilon)/t$.
#   Their conversions amplify errors by $1/(1-t)$ near the data ($\hat x_1$) and by $1/t$ near the noise
#   ($\hat\varepsilon$).
# - The $\hat x_1$ loss weighted by $1/(1-t)^2$ is the flow-matching loss; plain $\hat x_1$ MSE weighs velocity errors by
#   $(1-t)^2$ and neglects the data end. Every $\hat x_1$ run in these labs trains the weighted loss.
# - One Euler step of the field is a near-identity $I + dt\,J_{\hat v}$; an $\hat x_1$ step hands a fraction
#   $dt/(1-t)$ of the state to the network, all of it at the last step.
# - Measured over 3 seeds and two budgets: near the data the $\hat x_1$ head's gradient norm is 3.1 to 5.3 times the
#   field's at matched loss (2.0 to 2.8 times averaged over noise levels) and far spikier; its samples are worse in W1
#   in 17 of 18 runs, beyond the seed noise on all three manifolds at 3000 steps, by an amount that depends on the
#   budget (+8% to +104%) and stays below the manuscript's +130 to +690%. The field is the parametrisation lab 10 unrolls.

# %% [markdown]
# ## Further reading
#
# Notation as in lab 00's table. This lab draws on:
#
# * *When does unrolling help flow matching?* (Fruytier, manuscript, 2026): field against clean-data
#   parametrisation, the weight $1/(1-t)^2$ and the gradient norms near the data.
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023:
#   the velocity head.
# * Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, *Score-Based Generative Modeling through
#   Stochastic Differential Equations*, ICLR 2021: noise and score parametrisations.
# * M. S. Albergo, N. M. Boffi, E. Vanden-Eijnden, *Stochastic Interpolants: A Unifying Framework for Flows and
#   Diffusions*, 2023: the conversions between velocity, denoiser and score.
