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
# # Lab 10: when does unrolling help flow matching?
#
# Flow matching trains on points of the *true* path, but sampling feeds the network its *own* previous states. Small
# errors push a sample off the path and compound over the steps (exposure bias). The obvious fix is to train the way we
# sample: unroll the solver for a few steps and backpropagate through it. This lab follows the argument of the
# manuscript *When does unrolling help flow matching?* (Fruytier, 2026) and measures each step of it:
#
# 1. the unrolled (windowed) loss and its expansion into **single-step terms and cross-terms**;
# 2. what **detaching** the states between steps does to the gradient (it keeps the cross-terms), a variant that
#    really **drops the cross-terms**, and the **anchored-consistency** loss the manuscript derives (consistency and
#    shortcut models, up to weighting);
# 3. the **gradient variance of the cross-terms** against the window length $L$, beside the manuscript's heuristic
#    $\mathrm{Var}(x_1 \mid x_t)^L$, and what **minibatch OT** does to it;
# 4. a training comparison at equal compute: does full backpropagation through time beat single-step flow matching?
#
# **Convention.** Noise at $t = 0$, data at $t = 1$, $x_t = (1-t)\,x_0 + t\,x_1$, $u = x_1 - x_0$ (the velocity of the
# straight path of the pair). The manuscript puts data at $t = 0$; its $\mathrm{Var}(x_0 \mid x_t)$ is our
# $\mathrm{Var}(x_1 \mid x_t)$ and its windows run down to $t = 0$ where ours run up to $t = 1$.
#
# We use the **8 Gaussians** data set throughout: its Gaussian-mixture ground truth (`fmlab.data.gmm_2d("8modes")`)
# gives $\mathrm{Var}(x_1 \mid x_t)$ in closed form.

# %%
import torch

from fmlab import experiments as E
from fmlab.data import gmm_2d
from fmlab.data.gaussian import GaussianMixture
from fmlab.diagnostics import kstep_decomposition, posterior_variance_power
from fmlab.exercises import unrolling as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.losses import get_loss
from fmlab.losses.unrolled import consistency_weights, difference_bound_weight, unroll_batch
from fmlab.viz import unrolling as U
from fmlab.viz import unrolling_runs as R

torch.manual_seed(0)
DATA, DT_STEPS = "8gaussians", 16  # windows of Euler steps of dt = 1/16 (the sliders change it)
BASE = steps(2000, 100)  # single-step FM training steps; other losses get the same compute
EVERY = pick(250, 100)  # measure the cross-term variance every EVERY steps
N_EVAL = steps(1000, 300)
print(f"fast mode: {fast_mode()}; single-step FM budget {BASE} steps; dt = 1/{DT_STEPS}")

# %% [markdown]
# ## 1. The window
#
# From a true path point $x_{t_0}$ unroll $L$ Euler steps of size $dt$ of the model, each fed its own previous state.
# We call the window's states $z_k$ (the letters $x_0$ and $x_1$ are taken: noise and data):
#
# $$z_0 = x_{t_0}, \qquad z_{k+1} = z_k + dt\,\hat v_k, \qquad \hat v_k = v_\theta(z_k,\ t_k), \qquad t_k = t_0 + k\,dt,
# \qquad k = 0, \dots, L-1.$$
#
# Here $v_\theta$ is the network (a velocity field with parameters $\theta$), $\hat v_k$ its prediction at step $k$,
# $L$ the **window length** (the number of steps) and $dt$ the step size; the window must fit,
# $t_0 + L\,dt \le 1$.
#
# **Windowed Trajectory Flow Matching (WT-FM)** penalises the terminal error against the true path point of the same
# pair, $E_L = z_L - x_{t_0 + L\,dt}$, and backpropagates through the generated states (backpropagation through time,
# BPTT). `fmlab` registers it as `wtfm`, with the loss $\|E_L\|^2 / (L\,dt)^2$, so that $L = 1$ is exactly flow
# matching.
#
# We first train a plain single-step flow-matching model (cached) and look at its windows. Move $L$, $t_0$ and the
# number of Euler steps per unit time ($1/dt$): the green states $z_k$ drift from the black true points, and the
# vermillion segment is $E_L$. Press **play** to unroll the window one Euler step at a time ($k = 0, 1, \dots, L$):
# each green state is the model's step from the previous green state, not from the true point, which is how the
# error compounds.

# %%
fm = E.run(R.equal_time_config(DATA, "cfm", BASE), eval_steps=(DT_STEPS, 100), n_eval=N_EVAL)
U.window_widget(fm.model, DATA, euler_steps=DT_STEPS)

# %% [markdown]
# ## 2. Single-step terms and cross-terms
#
# On the linear path the true point moves with the constant velocity $u$, so $x_{t_0 + L\,dt} = x_{t_0} + L\,dt\,u$ and,
# with the step errors $e_k = \hat v_k - u$,
#
# $$\|E_L\|^2 = dt^2\,\Big\|\sum_k e_k\Big\|^2
# = dt^2\Big[\underbrace{\sum_k \|e_k\|^2}_{\text{single-step FM terms}}
# + \underbrace{\sum_{i \ne j} e_i^\top e_j}_{\text{cross-terms}}\Big].$$
#
# Each single-step term is a flow-matching error of one step (at a state $z_k$ the model reached itself). Each
# cross-term pairs the errors of two different steps: it lets an error at step $i$ be cancelled by an opposite error
# at step $j$ (self-correction). (The manuscript writes this expansion with weights $w_i$, $w_{ij}$ that it takes from
# a $k$-step ELBO, its $k$ our $L$; we do not derive those and keep the plain $dt^2$.) The view below splits the
# terminal loss $\|E_L\|^2$ of our model on a batch (`fmlab.diagnostics.kstep_decomposition`; per coordinate and
# averaged over the batch): the diagonal of the matrix holds the single-step terms, the rest the cross-terms.

# %%
U.decomposition_widget(fm.model, DATA, euler_steps=DT_STEPS)

# %%
batch = U.window_batch_at(DATA, 512, t0=0.2)
d = kstep_decomposition(fm.model, batch, window=4, steps=DT_STEPS)
print(f"L = 4: single-step {float(d.single_total):.3e} + cross {float(d.cross_total):.3e} = {float(d.total):.3e}; "
      f"terminal loss {float(d.terminal):.3e}")
assert torch.allclose(d.total, d.terminal, rtol=1e-4), "the expansion must hold exactly"

# %% [markdown]
# ### Your turn
#
# **Exercise 1.** How many cross-terms $e_i^\top e_j$ ($i \ne j$, ordered pairs) does a window of $L = 4$ have?

# %%
answer = None  # your number
ex.check_cross_term_count(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $L(L-1) = 12$: the cross-terms outnumber the $L$ single-step terms as soon as $L > 2$.
#
# </details>

# %% [markdown]
# **Exercise 2.** Suppose every step makes the same error, $e_k = e$. Which fraction of the terminal loss are
# cross-terms when $L = 4$?

# %%
answer = None  # your number
ex.check_cross_share(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $\|\sum_k e\|^2 = L^2\|e\|^2$ while the single-step part is $L\|e\|^2$: the cross-terms are $1 - 1/L = 0.75$ of it.
# Errors that keep the same sign compound; errors that alternate cancel.
#
# </details>

# %% [markdown]
# **Exercise 3.** Compute the split yourself with a loop over the window (use `fm.model`, `batch` above, $L = 4$,
# $dt = 1/16$): unroll $z_{k+1} = z_k + dt\,\hat v_k$ from $z_0 = x_{t_0} = (1-t_0)x_0 + t_0 x_1$, collect
# $e_k = \hat v_k - (x_1 - x_0)$, and average $dt^2\sum_k\|e_k\|^2/d$ and $dt^2\sum_{i\ne j}e_i^\top e_j/d$ over the
# batch ($d = 2$, the dimension).

# %%
single, cross = None, None  # your two numbers
ex.check_kstep_split(single, cross, fm.model, batch, window=4, steps=DT_STEPS)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# dt, t = 1 / 16, batch.t.clone()
# z = (1 - t[:, None]) * batch.x0 + t[:, None] * batch.x1   # z_0 = x_{t0}
# errors = []
# with torch.no_grad():
#     for _ in range(4):
#         v = fm.model(z, t)
#         errors.append(v - (batch.x1 - batch.x0))
#         z, t = z + dt * v, t + dt
# e = torch.stack(errors)                                   # [L, B, d]
# single = dt**2 * (e**2).sum(-1).sum(0).mean() / 2
# cross = dt**2 * ((e.sum(0)**2).sum(-1) - (e**2).sum(-1).sum(0)).mean() / 2
# ```
#
# </details>

# %% [markdown]
# ## 3. What detaching does to the gradient, and what it does not
#
# Full BPTT differentiates every step through the states that earlier steps produced: the gradient flows along the
# chain of transition Jacobians $I + dt\,\partial \hat v / \partial z$ (lab 06). **Detaching** feeds each step a
# stop-gradient copy of its state: the loss value is unchanged and those paths are cut. Look at what is left. Write
# $J_k = \partial \hat v_k / \partial\theta$ for how the prediction of call $k$ moves with the parameters. With
# detached states (leaving out the mean over the batch and the coordinates),
#
# $$\nabla_\theta\,\frac{\|E_L\|^2}{(L\,dt)^2} = \frac{2}{L^2}\sum_k J_k^\top \sum_j e_j
# = \underbrace{\frac{2}{L^2}\sum_k J_k^\top e_k}_{\text{single-step terms}}
# + \underbrace{\frac{2}{L^2}\sum_k J_k^\top \sum_{j \ne k} e_j}_{\text{cross-terms}}.$$
#
# Call $k$ is still pushed to cancel the errors $e_j$ of the *other* steps: **detaching removes the paths through the
# states, not the cross-terms.** To drop them, keep only the single-step part, on the detached states:
#
# $$\mathcal L_{\text{drop}} = \frac{dt^2 \sum_k \|e_k\|^2}{(L\,dt)^2} = \frac{1}{L^2}\sum_k \|\hat v_k - u\|^2,$$
#
# whose gradient is the sum of $L$ single-step flow-matching gradients (divided by $L^2$), each at a state the model
# reached itself (`wtfm` with `cross_terms=False`). Three variants of the same window:
#
# | variant | `wtfm` settings | gradient through the states | cross-terms in the gradient |
# |---|---|---|---|
# | full BPTT | `detach=False` | yes | yes |
# | states detached | `detach=True` | no | yes |
# | cross-terms dropped | `detach=True, cross_terms=False` | no | no |
#
# The view below takes the model trained above and a fixed batch of pairs, and computes the gradient that flows
# through each network call of the window: **nothing trains, every control redraws at once.** Left: for the chosen
# setting, the norm of the gradient through each call $k$, split into its single-step part and its cross-term part.
# Right: the whole gradient $g$ of each variant, its length $\|g\|$ split into the projections of the two parts onto
# it, $\langle g_{\text{single}}, g\rangle/\|g\|$ and $\langle g_{\text{cross}}, g\rangle/\|g\|$, which add up to
# $\|g\|$. We call $\langle g_{\text{cross}}, g\rangle / \|g\|^2$ **the cross-terms' share** of the gradient. The title
# also gives the cosine between the chosen gradient and the full-BPTT one (1: same direction). The loss menu holds the
# anchored-consistency loss of section 4 too.

# %%
U.gradient_widget(fm.model, DATA, euler_steps=DT_STEPS)

# %% [markdown]
# The same numbers for $L = 1, 2, 4, 8$ (`fmlab.diagnostics.variant_gradients`; loss, $\|g\|$, the cross-terms' share
# and the cosine to full BPTT):

# %%
rows = U.variant_rows(fm.model, DATA, windows=(1, 2, 4, 8), euler_steps=DT_STEPS)
print(U.variant_table(rows))
share = {(r["L"], r["variant"]): r["cross_share"] for r in rows}
loss = {(r["L"], r["variant"]): r["loss"] for r in rows}
assert all(abs(loss[L, "full BPTT"] - loss[L, "states detached"]) < 1e-5 * loss[L, "full BPTT"] for L in (2, 4, 8))
assert all(share[L, "cross-terms dropped"] == 0 for L in (1, 2, 4, 8))
assert 0.3 < share[2, "states detached"] < share[4, "states detached"] < share[8, "states detached"]

# %% [markdown]
# **Reading the table.** Detaching leaves the loss value as it is and the cross-terms in: on this model they supply
# about half of the detached gradient at $L = 2$ and most of it at $L = 8$, close to $1 - 1/L$, their share when every
# step makes the same error (exercise 2). The three gradients point in almost the same direction (cosines near 1): the
# errors of the steps of a window are nearly equal (each is a prediction minus the same noisy target $u$; the matrix
# of section 2 is nearly uniform), so the cross-term gradient is close to $L - 1$ copies of the single-step one. On a
# trained model the variants differ mainly in the length of the gradient, and in the noise the cross-terms carry
# (section 5). `python benchmarks/unrolling.py variants` measures this table over 3 seeds (`benchmarks/README.md`):
# the cross-terms supply $50 \pm 1\%$, $72 \pm 1\%$ and $85 \pm 0.4\%$ of the detached gradient at $L = 2, 4, 8$,
# about as much as of the full-BPTT gradient, and the detached gradient's cosine to full BPTT is $0.998$, $0.994$
# and $0.988$ (the dropped variant's: $0.996$, $0.978$, $0.978$).

# %% [markdown]
# ## 4. Anchored consistency: what the manuscript calls dropping the cross-terms
#
# The manuscript removes the cross-terms another way. Call the mean of the later predictions of the window the
# **teacher**, $\bar v = \frac{1}{L-1}\sum_{k=1}^{L-1} \hat v_k$ ($L \ge 2$). The window's mean prediction is
# $\frac{1}{L}\hat v_0 + \frac{L-1}{L}\bar v$, so with $c = (L-1)/L$ the WT-FM loss is exactly
#
# $$\frac{\|E_L\|^2}{(L\,dt)^2} = \big\|e_0 - c\,(\hat v_0 - \bar v)\big\|^2
# = \underbrace{\|\hat v_0 - u\|^2}_{\text{anchor}} + c^2\,\underbrace{\|\hat v_0 - \bar v\|^2}_{\text{consistency}}
# - 2c\,e_0^\top(\hat v_0 - \bar v).$$
#
# Dropping the last term (a cross-term between the anchor and the consistency term) and **detaching the teacher**
# (treating $\bar v$ as a fixed target) leaves an anchor, single-step flow matching on the first prediction, plus a
# self-consistency term: consistency and shortcut models, up to weighting. This is what the manuscript means by
# dropping the cross-terms. Its code, registered here as `anchored_consistency`, uses the weights $0.8$ and $0.2$, a
# ratio $4:1 = 1 : (1/2)^2$: the weights above for $L = 2$ only. For longer windows the expansion gives
# $1 : ((L-1)/L)^2$ (`weighting="taylor"`); at $L = 4$ that is $1 : 0.5625$, where $0.8 / 0.2$ gives $1 : 0.25$.
#
# The manuscript states its bound with differences of consecutive predictions instead,
# $\frac{\|E_L\|^2}{(L\,dt)^2} \lesssim \|\hat v_0 - u\|^2 + \big(\frac{L-1}{L}\big)^2\,
# \frac{1}{L-1}\sum_{i=1}^{L-1}\|\hat v_i - \hat v_{i-1}\|^2$ ($\lesssim$: up to a factor, here 2).
# Summation by parts gives $\frac{1}{L}\sum_k e_k = e_0 + \sum_{i=1}^{L-1} \frac{L-i}{L}\,(\hat v_i - \hat v_{i-1})$,
# and the Cauchy-Schwarz inequality then gives that form the consistency weight $(L-1)^2(2L-1)/(6L)$, equal to
# $((L-1)/L)^2 = 1/4$ at $L = 2$ and larger beyond (`tests/losses/test_unrolled.py` builds windows where $((L-1)/L)^2$ is
# too small to bound it for $L \ge 3$). The weights side by side, and the expansion checked on our model:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'L':>2} {'0.8/0.2 ratio':>14} {'expansion ((L-1)/L)^2':>22} {'difference bound (L-1)^2(2L-1)/(6L)':>37}")
for L in (2, 3, 4, 8):
    print(f"{L:>2} {0.2 / 0.8:>14.4f} {consistency_weights(L, 'taylor')[1]:>22.4f} {difference_bound_weight(L):>37.4f}")

# %%
b4 = U.variant_batch(DATA, 512, 4, DT_STEPS)
with torch.no_grad():
    wt = get_loss("wtfm").fn(fm.model, b4, window=4, steps=DT_STEPS)[0]
    taylor = get_loss("anchored_consistency").fn(fm.model, b4, window=4, steps=DT_STEPS, weighting="taylor")[0]
    win, u = unroll_batch(fm.model, b4, window=4, steps=DT_STEPS)  # the window's predictions vhat_0 .. vhat_3
    e0, gap = win.vs[0] - u, win.vs[0] - win.vs[1:].mean(0)  # e_0 and vhat_0 - teacher
    cross = -2 * 0.75 * (e0 * gap).mean()  # -2c e_0 . (vhat_0 - teacher), per coordinate, batch mean
print(f"L = 4: WT-FM loss {float(wt):.4f} = anchor + 0.5625 consistency ({float(taylor):.4f}) "
      f"+ their cross-term ({float(cross):+.4f})")
assert torch.allclose(wt, taylor + cross, rtol=1e-4), "the expansion is exact"
for detach in (True, False):
    parts = U.call_gradients(fm.model, b4, "anchored_consistency", 4, DT_STEPS, detach=detach)
    per_call = sum(parts.values()).norm(dim=1)
    print(f"anchored, detach={detach!s:>5}: gradient through calls 0..3: "
          + ", ".join(f"{float(v):.2e}" for v in per_call))
    assert (float(per_call[1:].max()) == 0.0) == detach  # a detached teacher: only the first call is trained

# %% [markdown]
# With the teacher detached only the first call is trained (one backward pass through one network call: the cheapest
# of the unrolled losses, `benchmarks/README.md`). Note the direction it is pushed. In the WT-FM gradient (states
# detached), the cross-term part of call 0 is $\frac{2}{L^2}J_0^\top\sum_{j \ge 1} e_j =
# \frac{2(L-1)}{L^2}\,J_0^\top(\bar v - u)$: a gradient step moves $\hat v_0$ *against* the later errors, to cancel
# them. In the anchored loss, with weights $w_a$ and $w_c$, the consistency term contributes
# $2w_c\,J_0^\top(\hat v_0 - \bar v) = 2w_c\,J_0^\top e_0 - 2w_c\,J_0^\top(\bar v - u)$: its part in
# $\bar v - u$ has the opposite sign and moves $\hat v_0$ *toward* the later predictions. The anchored loss is not
# WT-FM with fewer terms: it is a different training signal, which the expansion of the WT-FM loss suggests.
#
# **Exercise 4.** What consistency weight $((L-1)/L)^2$ does the expansion give a window of $L = 4$?

# %%
answer = None  # your number
ex.check_taylor_weight(answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# $(3/4)^2 = 0.5625$. It tends to 1 for long windows: the consistency term then counts as much as the anchor. The
# manuscript's 0.8 / 0.2 is this weighting for $L = 2$.
#
# </details>

# %% [markdown]
# ## 5. Why drop the cross-terms: their gradient variance
#
# Each $e_k$ contains the same noisy target $u = x_1 - x_0$. Given $x_t$, the target's spread is set by the posterior
# variance $\mathrm{Var}(x_1 \mid x_t)$ (since $u = (x_1 - x_t)/(1-t)$). The manuscript argues that the cross-terms'
# gradient variance compounds like $\mathrm{Var}(x_1 \mid x_t)^L$ across a window, which is what makes full BPTT
# fragile, and that **minibatch OT**, which pairs each noise with a nearby data point, collapses that variance.
#
# Read $\mathrm{Var}^L$ as the manuscript's heuristic, not a prediction, for two reasons you can check:
#
# - **It depends on the units of the data.** $\mathrm{Var}(x_1 \mid x_t)$ is measured in squared data units. Whether
#   its $L$-th power grows or decays with $L$ depends on whether it is above or below 1, which a change of units
#   decides: the cell below rescales the 8 Gaussians, $x_1 \to a\,x_1$ (noise unchanged).
# - **The measured growth depends on a normalisation.** `fmlab.diagnostics.cross_term_grad_variance` measures the
#   trace of the covariance, across minibatches, of the gradient of the cross-term part of the WT-FM loss, divided
#   by $(L\,dt)^2$ as in the loss. Without that division (the raw $dt^2\sum_{i\ne j} e_i^\top e_j$) the variance is
#   $(L\,dt)^4$ times larger: 16 times more growth per doubling of $L$.

# %%
# NBVAL_CHECK_OUTPUT
G = gmm_2d("8modes")
print(f"{'a':>5} {'Var(x1|x_t0)':>13}   Var^L growth per doubling of L: 2->4, 4->8   (t0 = 0.25, per coordinate)")
for a in (0.25, 0.5, 1.0, 2.0):
    vbar_a, closed_a = posterior_variance_power(GaussianMixture(G.means * a, covs=G.covs * a**2), 0.25, (2, 4, 8))
    print(f"{a:>5} {vbar_a:>13.3f}   {float(closed_a[1] / closed_a[0]):>10.3g} {float(closed_a[2] / closed_a[1]):>10.3g}")
vbar, closed = posterior_variance_power(G, 0.25, (1, 2, 4, 8))

# %% [markdown]
# We measure the cross-term gradient variance on two models **while they train**, single-step FM with independent
# and with OT coupling, windows from $t_0 = 0.25$, and draw the closed form
# $\overline{\mathrm{Var}}(x_1 \mid x_{t_0})^L$ of the 8-Gaussian mixture (per coordinate, averaged over $x_{t_0}$)
# beside it. Replay the training afterwards with the play button.

# %%
var_runs, var_view = R.variance_live(DATA, steps=BASE, every=EVERY, t0=0.25, batches=pick(16, 6), n_eval=N_EVAL)

# %%
final = {r.config.coupling: r.variances[-1].variance for r in var_runs}
for coupling, v in final.items():
    print(f"{coupling:>11}: cross-term gradient variance at L = 2, 4, 8: "
          + ", ".join(f"{float(x):.3g}" for x in v[1:])
          + f"  (x{float(v[2] / v[1]):.1f}, x{float(v[3] / v[2]):.1f} per doubling)")
print("closed form Var^L at L = 2, 4, 8: " + ", ".join(f"{float(x):.3g}" for x in closed[1:])
      + f"  (x{float(closed[2] / closed[1]):.1f}, x{float(closed[3] / closed[2]):.0f} per doubling)")
print("independent / OT at L = 2, 4, 8: " + ", ".join(f"{float(a / b):.1f}x" for a, b in
                                                    zip(final['independent'][1:], final['ot'][1:])))

# %%
assert vbar > 1 and float(final["independent"][3]) > float(final["independent"][1]), "variance should grow with L"
assert float(final["ot"][3]) < float(final["independent"][3]), "OT should lower the cross-term variance"

# %% [markdown]
# **Reading the figure.** The measured variance grows with $L$, but by a roughly constant factor per doubling of $L$
# (like a power of $L$), where $\mathrm{Var}^L$ multiplies its growth at every doubling. `python benchmarks/unrolling.py
# variance` (3 seeds, mean $\pm$ standard deviation, `benchmarks/README.md`) finds $\times 4.4 \pm 0.3$ from $L = 2$ to
# 4 and $\times 3.7 \pm 0.2$ from 4 to 8, against $\times 7.8$ and $\times 60$ for the closed form. With the data
# shrunk by $a = 0.25$ the closed form predicts a 16-fold, then a 250-fold *decay*; the measured variance still grows,
# then barely falls ($\times 1.77 \pm 0.04$, then $\times 0.92 \pm 0.02$). Minibatch OT lowers the variance,
# $1.9 \pm 0.3$ times at $L = 2$ and $9.3 \pm 0.4$ times at $L = 8$, and slows its growth ($\times 2.3$, then
# $\times 1.4$ per doubling). In
# the short `FMLAB_FAST` runs the gap between the couplings only shows at long windows, which is what the check tests.

# %% [markdown]
# ## 6. Training through the sampler
#
# Pick a loss, a window length $L$, the step count ($dt$), the detach and cross-terms switches and the coupling.
# Each new setting trains a model for **the same training time** as single-step flow matching, by a cost model (a
# forward pass costs 1, a backward 2, plus a per-step overhead of 3: a WT-FM step of window $L$ costs $(3 + 3L)/6$
# single steps with or without its cross-terms, an anchored step with detach $(3 + 3 + L - 1)/6$;
# `python benchmarks/unrolling.py cost` measures the real ratios). It shows the model's samples with the window's
# Euler step and the single-step FM error of its first prediction beside the single-step FM baseline with the same
# coupling. Settings trained before are cached: flipping a switch back redraws at once. (For the gradient of a
# setting without training, use the view of section 3.)

# %%
R.unrolling_widget(DATA, base_steps=BASE, n_eval=N_EVAL, euler_steps=DT_STEPS)

# %% [markdown]
# ## 7. The verdict at equal compute
#
# Finally the comparison the manuscript makes: single-step FM, WT-FM with full BPTT, with its states detached and
# with its cross-terms dropped, and anchored consistency (detached), each with independent and with OT coupling,
# every run with the training time of `BASE` single-step FM steps (the cost model above; the table also shows the
# measured seconds). W1 is measured with 16 Euler steps (the sampler the windows imitate) and with 100. This is one
# seed per method. Over 3 seeds `benchmarks/unrolling.py` measured a standard deviation of W1 between 0.4% and 14% of
# its value on 8 Gaussians (`benchmarks/README.md`), so the verdict below calls a difference under 15% within noise.

# %%
results = R.comparison_runs(R.comparison_configs(DATA, BASE), eval_steps=(DT_STEPS, 100), n_eval=N_EVAL)
print(R.comparison_table(results, (DT_STEPS, 100)))
R.render_comparison(results, DT_STEPS, floor=E.noise_floor_w1(DATA, N_EVAL))

# %%
if fast_mode():
    print("FMLAB_FAST=1: these runs are a few hundred steps long; their numbers do not carry the lesson.")
print(R.conclusion(results, DT_STEPS, noise=0.15))

# %%
w1 = {r.label: r.w1[DT_STEPS] for r in results}
slack = 1.5 if fast_mode() else 1.1
assert w1["WT-FM L=4 BPTT"] > w1["single-step FM"] / slack, w1  # full BPTT does not beat single-step FM
assert w1["anchored L=2 (detached)"] < slack * w1["single-step FM"], w1  # anchored consistency: within 10% of FM
ot_better = sum(w1[k + " + OT"] < w1[k] for k in w1 if not k.endswith(" + OT"))
assert ot_better >= (2 if fast_mode() else 3), w1  # OT helps most methods

# %% [markdown]
# ## Summary
#
# - The WT-FM terminal loss is $dt^2$ times single-step FM terms plus cross-terms $e_i^\top e_j$; the cross-terms pair
#   the errors of different steps and dominate long windows.
# - Detaching the states keeps the loss value and cuts the gradient paths through the states, but not the
#   cross-terms: they still supply most of the detached gradient, which stays almost parallel to full BPTT's.
#   Dropping them means keeping only the single-step terms (`cross_terms=False`).
# - The manuscript's "dropping the cross-terms" is the anchored-consistency loss: the WT-FM loss expands exactly into
#   an anchor (single-step FM), a consistency term with weight $((L-1)/L)^2$ and one cross-term between them; drop it
#   and detach the teacher. Its 0.8 / 0.2 weights are this expansion for $L = 2$.
# - The cross-terms' gradient variance grows with the window, by a roughly constant factor per doubling of $L$;
#   $\mathrm{Var}(x_1 \mid x_t)^L$ is a heuristic whose growth or decay depends on the data's units. Minibatch OT
#   lowers the variance at every $L$.
# - At equal training time (`python benchmarks/unrolling.py unrolling`, 3 seeds, `benchmarks/README.md`) full BPTT
#   does not beat single-step flow matching and gets worse with the window. Detaching the states or dropping the
#   cross-terms changes nothing measurable at $L = 4$ (W1 within noise of full BPTT on 8 Gaussians and moons).
#   Anchored consistency with $L = 2$ is within noise of single-step FM on both data sets (on moons 7-9% behind, within
#   two standard errors). Minibatch OT improves every WT-FM variant with $L \ge 4$ beyond noise
#   and rescues the longest windows (8 Gaussians, $L = 8$: W1 1.16 to 0.35): of the changes measured here it is the one that helps
#   most consistently, though on 8 Gaussians it does not measurably improve single-step FM at this budget.

# %% [markdown]
# ## Further reading
#
# * The unrolling manuscript, *When does unrolling help flow matching?*: windowed trajectory flow matching, the
#   cross-terms, the anchored-consistency loss and its weights (its time runs from data at 0; see the convention note
#   at the top).
# * Y. Lipman, R. T. Q. Chen, H. Ben-Hamu, M. Nickel, M. Le, *Flow Matching for Generative Modeling*, ICLR 2023.
# * A. Tong, K. Fatras, N. Malkin, G. Huguet, Y. Zhang, J. Rector-Brooks, G. Wolf, Y. Bengio, *Improving and
#   Generalizing Flow-Based Generative Models with Minibatch Optimal Transport*, TMLR 2024, and A.-A. Pooladian,
#   H. Ben-Hamu, C. Domingo-Enrich, B. Amos, Y. Lipman, R. T. Q. Chen, *Multisample Flow Matching: Straightening Flows
#   with Minibatch Couplings*, ICML 2023: the OT coupling that lowers the cross-term variance.
#
# The notation is lab 00's table.
