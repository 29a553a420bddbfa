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
# # Lab 11 · Flow maps: one jump instead of many steps
#
# A flow-matching model gives a **velocity**; sampling integrates it in many small steps. A **flow map** learns the
# integral itself: it jumps from any time of the sampling path to any other in one network call. Consistency models,
# shortcut models, MeanFlow and their relatives all learn (parts of) a flow map. They differ in *which rule of the exact
# flow map* they enforce during training, and this lab makes those rules visible.
#
# **Learning objectives.** After this lab you can
#
# 1. define the flow map $X(x, s, t)$ and its **average velocity** $u(x, s, t)$, and say why $u(x, t, t)$ is the
#    ordinary velocity;
# 2. state the three **consistency rules** of an exact flow map (compositional, Lagrangian, Eulerian) and recognise
#    them in pictures: two jumps vs one, **the canoe** and **the bridge**;
# 3. check the rules numerically, and see that a one-step solver "map" breaks all three;
# 4. place a training loss (shortcut, LSD, MeanFlow, ...) by the rule it enforces.
#
# **Convention (all labs).** $t = 0$ is noise $x_0 \sim \mathcal N(0, I)$, $t = 1$ is data; $x_t = (1-t)\,x_0 + t\,x_1$.
# Many flow-map papers put data at $t = 0$; fmlab translates every loss into this convention (see each loss's docstring).
# Everything here uses a 2D Gaussian mixture, whose velocity is known in closed form, so the flow map we draw is
# **exact** (an accurate ODE solve), not learned.

# %% [markdown]
# ## 1. The flow map and its average velocity
#
# Let $v(x, t)$ be the velocity of the probability-flow ODE $\dot x = v(x, t)$ (for flow matching: the marginal
# velocity $\mathbb E[x_1 - x_0 \mid x_t = x]$). The **flow map** sends a point $x$ at time $s$ to where its trajectory is
# at time $t$:
#
# $$X(x, s, t) = x + \int_s^t v\big(x(\tau), \tau\big)\, d\tau, \qquad x(s) = x .$$
#
# Writing the jump as a time step times a velocity defines the **average velocity** $u$ over $[s, t]$:
#
# $$X(x, s, t) = x + (t - s)\, u(x, s, t), \qquad u(x, t, t) = v(x, t).$$
#
# A network that outputs $u(x, s, t)$ (fmlab: `build_model(time_inputs=2)`, `FlowMapModel`) satisfies the boundary
# condition $X(x, s, s) = x$ by construction, and on its **diagonal** $s = t$ it is an ordinary velocity field (so the
# usual ODE solvers run on it). With $s = 0$, $t = 1$ one call generates a sample.
#
# **Try it.** Particles at time $s$ (blue) jump to $X(x, s, t)$ (vermillion). The black curves are the true paths
# between $s$ and $t$; the dotted segments are the jumps $(t - s)\,u$: straight, although the paths curve. The grey
# shading is the density $p_t$ at the destination time.

# %%
from fmlab.viz.flowmaps import jump_widget

jump_widget()

# %% [markdown]
# **What to look for**
#
# * With $t$ close to $s$ the jump hugs the path: the average velocity is the local velocity.
# * Long jumps from early times cut corners: the paths bend toward the mixture components, the jumps do not need to.
#   The average velocity of a long jump is *not* the velocity at its start; that is exactly what a flow map learns
#   and a velocity field cannot give you in one step.
# * Set $s = t$: nothing moves, $X(x, s, s) = x$.

# %% [markdown]
# ## 2. Three rules every exact flow map obeys
#
# Because $X$ follows trajectories of one ODE, it satisfies three identities. Each family of training losses enforces one
# of them (Dieleman, *Learning the integral of a diffusion model*; Boffi, Albergo & Vanden-Eijnden, *How to build a
# consistency model*):
#
# | rule | identity | picture | losses that enforce it |
# |---|---|---|---|
# | **compositional** | $X\big(X(x, s, r), r, t\big) = X(x, s, t)$ for $s \le r \le t$ | two jumps = one | shortcut, PSD, SplitMeanFlow, FMM, PFMM |
# | **Lagrangian** | $\partial_t X(x, s, t) = v\big(X(x, s, t), t\big)$ | the **canoe** | LMD, LSD, AYF-LMD, TVM, PID, FreeFlow |
# | **Eulerian** | $\partial_s X(x, s, t) + \nabla_x X(x, s, t)\, v(x, s) = 0$ | the **bridge** | EMD, ESD, AYF-EMD, CT, CD, CTM, MeanFlow, iMF, SoFlow, SGFlow |
#
# **The canoe (Lagrangian).** Sit in a canoe that starts at $x$ at time $s$ and let the water carry you. Where you are at
# time $t$ is $X(x, s, t)$; how fast you move is the water's velocity *where you are*: $\partial_t X = v(X, t)$.
# Differentiating in the **destination time** needs only $\partial_t$ of the network: one JVP along $t$.
#
# **The bridge (Eulerian).** Stand on a bridge at a fixed place $x$ and watch the water pass under it. The water that is
# under the bridge at time $s$ will be at $X(x, s, t)$ at the later time $t$. Water arriving a little later, $s + ds$,
# started upstream, and it lands elsewhere: the destination moves at $\partial_s X = -\nabla_x X\, v(x, s)$. Differentiating
# in the **start time** brings in the spatial Jacobian along $v$: a JVP along $(v, 1, 0)$.
#
# For the average velocity, dividing by $t - s$ turns the rules into the forms the papers use, e.g. the Eulerian one
# becomes MeanFlow's identity $u(x, s, t) = v(x, s) + (t - s)\big(\partial_s u + \nabla_x u\, v\big)$.
#
# **Try it.** Left: a raft of nine points starts at time $s_0 = 0.2$; the slider moves the destination time $t$ and
# the arrows are $v(X, t)$, the velocity where each point has arrived. Right: the bridge (black line) stays where it is;
# the destination time $t_0 = 0.8$ is fixed and the slider moves the start time $s$; the purple points are
# $X(x, s, t_0)$, the purple curves show where they go as $s$ changes, and the arrows are $\partial_s X$.

# %%
from fmlab.viz.flowmaps import canoe_bridge_widget

canoe_bridge_widget()

# %% [markdown]
# **What to look for**
#
# * Canoe: each arrow is tangent to its point's path. The raft splits: points on either side of a "watershed" go to
#   different components.
# * Bridge: at $s = t_0$ the destinations sit on the bridge itself ($X(x, t_0, t_0) = x$). Moving $s$ back toward the
#   noise, the same bridge location sends its water further along; the destinations slide along the purple curves.
#   Water under the bridge at very early times has not yet "decided" which component it joins.

# %% [markdown]
# ## 3. Two jumps against one
#
# The compositional rule says it does not matter where you stop on the way: $X(X(x, s, r), r, t) = X(x, s, t)$. The
# exact map composes perfectly. A cheap "map" built from the velocity alone, one Euler step
# $x + (t - s)\,v(x, s)$, does not: two half-steps land elsewhere than one full step, and both land off the true
# path. Shortcut models and PSD turn exactly this defect into a loss: they regress the one-jump prediction onto the
# (stop-gradient) two-jump one.
#
# **Try it.** Move the stop $r$ and switch between the exact map and the one-step maps. The title reports the mean
# distance between the two-jump and one-jump endpoints.

# %%
from fmlab.viz.flowmaps import composition_widget

composition_widget()

# %% [markdown]
# ## 4. The three rules in numbers
#
# `rule_defects` measures each identity by central differences (step $10^{-3}$) at particles $x \sim p_s$: the
# exact map satisfies all three to the accuracy of the ODE solve and the differences; the one-step maps violate all
# three by $O(1)$. (A one-step map *is* exact at $s = t$ and accurate for short jumps, so the defects grow with $t - s$.)

# %%
from fmlab.viz.flowmaps import render_rule_defects

render_rule_defects(s=0.2, r=0.5, t=0.8)

# %%
# NBVAL_CHECK_OUTPUT
from fmlab.viz.flowmaps import defects_table

table = defects_table("asymmetric", 0.2, 0.5, 0.8)
print(f"{'map':<10}{'compositional':>15}{'Lagrangian':>12}{'Eulerian':>10}")
for kind, row in table.items():
    cells = ["< 1e-4" if v < 1e-4 else f"{v:.2f}" for v in row.values()]
    print(f"{kind:<10}" + "".join(f"{c:>{w}}" for c, w in zip(cells, (15, 12, 10))))

# %%
assert max(table["exact"].values()) < 1e-4                              # the exact map obeys all three rules
assert min(table["euler"].values()) > 0.1 and min(table["midpoint"].values()) > 0.1  # one-step maps do not
print("rule checks passed")

# %% [markdown]
# ## 5. From rules to losses, checked against the exact map
#
# For **Gaussian** data every marginal is Gaussian and the exact flow map is affine in $x$:
# $X(x, s, t) = t\,m + Q\,\mathrm{diag}\big(\sqrt{\mathrm{var}_t / \mathrm{var}_s}\big)\,Q^\top (x - s\,m)$ with
# $\mathrm{var}_r = r^2 \lambda + (1 - r)^2$ (eigenvalues $\lambda$ of the data covariance $Q\,\mathrm{diag}(\lambda)\,Q^\top$).
# fmlab wraps it as a two-time model, `ExactFlowMapModel`, which the test suite uses to verify every flow-map loss:
# at the exact map each self-distillation residual is zero and each flow-matching term sits at its closed-form floor.
#
# The cell below evaluates one loss of each rule at the exact map and at a perturbed one: the rule's residual is zero
# only at the exact map (the flow-matching term `fm` is never zero: it is the irreducible conditional variance).

# %%
import torch

from fmlab.data.gaussian import Gaussian
from fmlab.flowmaps import sample_flow_map
from fmlab.losses import get_loss
from fmlab.losses.batch import two_time_batch
from fmlab.models import ExactFlowMapModel

torch.manual_seed(0)
target = Gaussian(torch.tensor([1.0, -0.5]), cov=torch.tensor([[1.2, 0.4], [0.4, 0.3]]))
exact = ExactFlowMapModel(target).double()
wrong = ExactFlowMapModel(target).double().perturb(0.3, torch.Generator().manual_seed(1))

g = torch.Generator().manual_seed(0)
x0 = torch.randn(2048, 2, generator=g, dtype=torch.float64)
x1 = target.sample(2048, generator=g).double()
batch = two_time_batch(x0, x1, g, diagonal_fraction=0.0)
rows = []
for name in ("psd", "lsd", "sgflow"):
    spec = get_loss(name)
    for label, model in (("exact", exact), ("perturbed", wrong)):
        _, diag = spec.fn(model, batch, **spec.settings())
        terms = {k: float(v) for k, v in diag.items() if not k.startswith("n_")}
        rows.append((name, spec.family.split(": ")[-1], label, terms))
for name, rule, label, terms in rows:
    print(f"{name:<7}{rule:<14}{label:<10}" + "  ".join(f"{k}={v:.2e}" for k, v in terms.items()))

# %%
by_key = {(n, l): t for n, _, l, t in rows}
assert by_key["psd", "exact"]["psd"] < 1e-20 and by_key["psd", "perturbed"]["psd"] > 1e-4
assert by_key["lsd", "exact"]["lagrangian"] < 1e-20 and by_key["lsd", "perturbed"]["lagrangian"] > 1e-3
assert by_key["sgflow", "exact"]["eulerian_self"] < 1e-20 and by_key["sgflow", "perturbed"]["eulerian_self"] > 1e-3
# one jump of the exact flow map is an exact sampler: X(x0, 0, 1) has the data's mean and covariance
samples = sample_flow_map(exact, torch.randn(40_000, 2, generator=g, dtype=torch.float64), steps=1)
assert torch.allclose(samples.mean(0), target.means[0], atol=0.03)
assert torch.allclose(torch.cov(samples.T), target.covs[0], atol=0.05)
print("loss checks passed")

# %% [markdown]
# The second lab on flow maps (the **loss zoo**) trains every one of these losses on 2D data and compares their quality
# at 1 to 16 steps and their cost per training step.
#
# ## Your turn
#
# The exercises use **one-dimensional** Gaussian data $x_1 \sim \mathcal N(M, \mathrm{SD}^2)$ with $M = 2$,
# $\mathrm{SD} = 0.5$, on the linear path.
#
# **Exercise 1.** Write the exact flow map `X(x, s, t)` (elementwise on tensors). Hint: $x_r$ is Gaussian with mean $r M$
# and variance $\mathrm{var}_r = r^2\,\mathrm{SD}^2 + (1 - r)^2$, and the flow map is the monotone (affine) map that
# sends $p_s$ to $p_t$.

# %%
import torch

from fmlab.exercises.flowmaps import SD, M, check_flow_map_1d  # noqa: F401 (M, SD: for your answer)


def X(x, s, t):
    return x   # replace with your flow map


check_flow_map_1d(X)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# Standardise at time $s$, un-standardise at time $t$:
#
# $$X(x, s, t) = t M + \sqrt{\mathrm{var}_t / \mathrm{var}_s}\,\big(x - s M\big),\qquad \mathrm{var}_r = r^2 \mathrm{SD}^2 + (1 - r)^2 .$$
#
# ```python
# def X(x, s, t):
#     var = lambda r: r**2 * SD**2 + (1 - r) ** 2
#     return t * M + torch.sqrt(var(t) / var(s)) * (x - s * M)
# ```
# An affine map between two 1D Gaussians that preserves order is unique, and the ODE flow preserves order (paths
# never cross), so this is the flow map.
#
# </details>

# %% [markdown]
# **Exercise 2.** For the same data, what is $\lim_{t \to s} u(x, s, t)$ at $x = 0$, $s = 0.5$? (Use your `X`:
# $u = (X - x) / (t - s)$ for a $t$ very close to $s$, or differentiate.)

# %%
from fmlab.exercises.flowmaps import check_velocity_limit

my_answer = None   # a number
check_velocity_limit(my_answer)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# The limit is the instantaneous velocity $v(x, s) = \partial_t X(x, s, t)\big|_{t = s}$. From exercise 1,
# $\partial_t \sqrt{\mathrm{var}_t}\big|_{t=s} = \tfrac{s(\mathrm{SD}^2 + 1) - 1}{\sqrt{\mathrm{var}_s}}$, so
# $v(x, s) = M + \tfrac{s(\mathrm{SD}^2 + 1) - 1}{\mathrm{var}_s}(x - s M)$. At $x = 0$, $s = 0.5$:
# $\mathrm{var}_s = 0.3125$, the gain is $(0.625 - 1)/0.3125 = -1.2$ and $v = 2 + (-1.2)(0 - 1) = 3.2$.
# Numerically: `((X(torch.tensor(0.), torch.tensor(.5), torch.tensor(.5 + 1e-6)) - 0) / 1e-6).item()` gives 3.2.
#
# </details>

# %% [markdown]
# **Exercise 3.** Which rule does each loss enforce? Read the definitions in `fmlab.losses` (e.g.
# `help(get_loss("shortcut").fn)`) and answer with `"compositional"`, `"Lagrangian"` or `"Eulerian"`.

# %%
from fmlab.exercises.flowmaps import check_rule_for_loss

check_rule_for_loss("shortcut", None)   # your answer instead of None
check_rule_for_loss("lsd", None)
check_rule_for_loss("meanflow", None)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# * **shortcut: compositional.** Its target for a jump of size $2d$ is the average of two jumps of size $d$.
# * **lsd: Lagrangian.** It matches $\partial_t X(x_s, s, t)$, a derivative in the *destination* time, to the model's
#   own velocity at the arrival point.
# * **meanflow: Eulerian.** Its target $u = v + (t - s)\,\tfrac{d}{ds}u$ (in our time direction) uses the total
#   derivative along the flow at the *start* point, $\partial_s u + \nabla_x u\, v$: the bridge.
#
# </details>

# %% [markdown]
# ## Write it yourself
#
# Two flow-map losses in plain PyTorch. The network is a two-time model `model(x, s, t)` that returns the average
# velocity $u(x, s, t)$, shape `[B, 2]`, for points `x` `[B, 2]` and times `s`, `t` `[B]`. The checkers use a small
# network with fixed random weights and a fixed batch, so your loss must match fmlab's number for number.
#
# **Exercise 4 (MeanFlow).** Differentiating $X(x_s, s, t)$ along the trajectory gives the MeanFlow identity (in our
# time: noise at 0, data at 1)
#
# $$u(x_s, s, t) = v(x_s, s) + (t - s)\, \frac{d}{ds} u(x_s, s, t), \qquad
# \frac{d}{ds} u = \nabla_x u \cdot v + \partial_s u ,$$
#
# and the MeanFlow loss (Geng et al. 2025) replaces the velocity $v$ by the conditional one, $x_1 - x_0$, and puts the
# whole right-hand side under **stop-gradient** (`.detach()`):
#
# $$\mathcal L = \operatorname{mean} \big\| u(x_s, s, t) - \operatorname{sg}\!\big[(x_1 - x_0) + (t - s)\, \tfrac{d}{ds}
# u(x_s, s, t)\big] \big\|^2, \qquad x_s = (1 - s)\, x_0 + s\, x_1 .$$
#
# The total derivative $\frac{d}{ds} u$ is one forward-mode product, `torch.func.jvp(f, primals, tangents)`:
# `u, du = jvp(lambda x, s, t: model(x, s, t), (x_s, s, t), tangents)` with the tangent that moves $x$ along
# $x_1 - x_0$, $s$ by 1 and $t$ not at all. The checker compares the value **and the gradient** with fmlab's
# registered `meanflow` loss: a forgotten stop-gradient leaves the value unchanged and shows only in the gradient.
# (The papers put data at time 0 and write the target with a minus sign; `fmlab.losses.meanflow` translates.)

# %%
from torch.func import jvp  # noqa: F401 (for your code)


def meanflow_loss(model, x0, x1, s, t):
    """mean ||u(x_s, s, t) - sg[(x1 - x0) + (t - s) du]||^2, du = d/ds u(x_s, s, t) along (x1 - x0, 1, 0) by
    torch.func.jvp. x0, x1: [B, 2]; s, t: [B]. Returns shape ()."""
    raise NotImplementedError


# %%
from fmlab.exercises.flowmaps import check_meanflow_loss, check_shortcut_target

results = {"Exercise 4: meanflow_loss": check_meanflow_loss(meanflow_loss)}


# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# from torch.func import jvp
#
#
# def meanflow_loss(model, x0, x1, s, t):
#     x_s = (1 - s[:, None]) * x0 + s[:, None] * x1
#     v = x1 - x0
#     u, du = jvp(lambda x, s_, t_: model(x, s_, t_), (x_s, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))
#     target = (v + (t - s)[:, None] * du).detach()   # stop-gradient on the whole target, JVP included
#     return (u - target).pow(2).mean()
# ```
#
# </details>

# %% [markdown]
# **Exercise 5 (a compositional target).** Two jumps make one: $X(x, s, t) = X(X(x, s, r), r, t)$ for
# $s \le r \le t$. Write both sides as "start + time $\times$ average velocity" and solve for $u(x, s, t)$:
#
# $$u(x, s, t) = \lambda\, u(x, s, r) + (1 - \lambda)\, u\big(X(x, s, r), r, t\big), \qquad
# \lambda = \frac{r - s}{t - s}, \quad X(x, s, r) = x + (r - s)\, u(x, s, r).$$
#
# Shortcut models (Frans et al. 2024, $r$ the midpoint, so $\lambda = \tfrac12$) and progressive self-distillation
# (Boffi et al. 2025, any $r$) train $u(x, s, t)$ on this right-hand side **under stop-gradient**. Write
# `shortcut_target(model, x, s, r, t)` that returns it, shape `[B, 2]`, computed under `torch.no_grad()`. The checker
# uses an $r$ that is not the midpoint.

# %%
def shortcut_target(model, x, s, r, t):
    """sg[lam u(x, s, r) + (1 - lam) u(X(x, s, r), r, t)], lam = (r - s) / (t - s), X(x, s, r) = x + (r - s) u(x, s, r).
    x: [B, 2]; s, r, t: [B]. Returns [B, 2] without gradient."""
    raise NotImplementedError


# %%
results["Exercise 5: shortcut_target"] = check_shortcut_target(shortcut_target)

# %% [markdown]
# <details><summary><b>Solution</b> (click to open)</summary>
#
# ```python
# def shortcut_target(model, x, s, r, t):
#     with torch.no_grad():                           # a target: no gradient flows through it
#         u1 = model(x, s, r)                         # first jump s -> r
#         x_r = x + (r - s)[:, None] * u1             # where it lands, X(x, s, r)
#         u2 = model(x_r, r, t)                       # second jump r -> t from there
#         lam = ((r - s) / (t - s))[:, None]
#         return lam * u1 + (1 - lam) * u2
# ```
#
# </details>

# %% [markdown]
# **Using your functions** on the exact Gaussian flow map of section 5 (`exact`) and its perturbed copy (`wrong`): at the
# exact map the compositional target equals $u(x, s, t)$, and the MeanFlow loss sits at its floor (the scatter of the
# conditional velocity), lower than at the perturbed map. Your functions are used if they pass, fmlab's otherwise.

# %%
from fmlab.exercises.code import student_or_reference
from fmlab.exercises.flowmaps import reference_meanflow_loss, reference_shortcut_target

mf_loss = student_or_reference(meanflow_loss, reference_meanflow_loss, check_meanflow_loss, "MeanFlow loss")
target_fn = student_or_reference(shortcut_target, reference_shortcut_target, check_shortcut_target,
                                 "compositional target")
s_ = 0.8 * torch.rand(2048, generator=g, dtype=torch.float64)
t_ = s_ + (1 - s_) * torch.rand(2048, generator=g, dtype=torch.float64)
r_ = s_ + 0.3 * (t_ - s_)
x_s = (1 - s_[:, None]) * x0 + s_[:, None] * x1
gap = (target_fn(exact, x_s, s_, r_, t_) - exact(x_s, s_, t_)).abs().max().item()
loss_exact, loss_wrong = mf_loss(exact, x0, x1, s_, t_).item(), mf_loss(wrong, x0, x1, s_, t_).item()
print(f"exact map: |target - u| <= {gap:.1e}; MeanFlow loss {loss_exact:.4f} (exact) < {loss_wrong:.4f} (perturbed)")
assert gap < 1e-8 and loss_exact < loss_wrong

# %%
from fmlab.exercises.code import exercise_report

open_exercises = exercise_report(results)

# %% [markdown]
# ## Glossary of loss acronyms
#
# The names of `fmlab.losses` (lab 12 trains them all). The rule each enforces is in `get_loss(name).family`.
#
# | acronym | name | rule / kind |
# |---|---|---|
# | FM, CFM | (conditional) flow matching | velocity regression on $x_1 - x_0$ |
# | OT-CFM | CFM with minibatch optimal-transport pairs (lab 05) | velocity |
# | WT-FM | windowed trajectory flow matching (lab 10) | unrolled velocity |
# | FMM, PFMM | flow map matching, progressive FMM | compositional (PFMM: distillation) |
# | EMD, ESD | Eulerian map distillation, Eulerian self-distillation | Eulerian |
# | LMD, LSD | Lagrangian map distillation, Lagrangian self-distillation | Lagrangian |
# | PSD | progressive self-distillation | compositional |
# | CT, CD | consistency training, consistency distillation | Eulerian (jump to the data) |
# | CTM | consistency trajectory models | Eulerian (any jump) |
# | FACM | flow-anchored consistency models | Eulerian + flow-matching anchor |
# | AYF | Align Your Flow (AYF-EMD, AYF-LMD) | Eulerian / Lagrangian |
# | TVM | terminal velocity matching | Lagrangian |
# | PID | physics-informed distillation | Lagrangian, data-free |
# | MeanFlow, iMF | mean flows, improved mean flows | Eulerian |
# | SoFlow | solution flow models | Eulerian (finite differences) |
# | SplitMeanFlow | interval-splitting mean flows | compositional |
# | SGFlow | flow map learning via non-gradient vector flow | Eulerian, not the gradient of a loss |
# | FreeFlow | flow map distillation without data | Lagrangian, data-free |
#
# Two abbreviations recur in their formulas: **JVP**, a Jacobian-vector product (one forward-mode derivative,
# `torch.func.jvp`), and **sg**, stop-gradient (`.detach()`).

# %% [markdown]
# ## Summary
#
# * A flow map $X(x, s, t) = x + (t - s)\,u(x, s, t)$ jumps along the sampling path; its diagonal $u(x, t, t)$ is the
#   velocity.
# * The exact map obeys three rules: **compositional** (two jumps = one), **Lagrangian** (the canoe: differentiate in the
#   destination time) and **Eulerian** (the bridge: differentiate in the start time, with a Jacobian along $v$).
# * Each flow-map loss enforces one rule, from a teacher (distillation), from the model itself (self-distillation) or
#   from conditional targets; fmlab verifies every one of them against the exact Gaussian flow map.
#
# **Next, lab 12 (the loss zoo):** train them all and compare quality per step and cost per training step.

# %% [markdown]
# ## Further reading
#
# Notation as in lab 00's table. This lab draws on:
#
# * S. Dieleman, *Learning the integral of a diffusion model* (a survey of flow maps, 2026): the flow map, the
#   Lagrangian, Eulerian and compositional rules and the landscape of losses.
# * N. M. Boffi, M. S. Albergo, E. Vanden-Eijnden, *Flow Map Matching*, 2024, and *How to build a consistency model:
#   Learning flow maps via self-distillation*, 2025: EMD, LMD, FMM, ESD, LSD, PSD.
# * Z. Geng, M. Deng, X. Bai, J. Z. Kolter, K. He, *Mean Flows for One-step Generative Modeling*, 2025: the MeanFlow
#   identity and loss.
# * K. Frans, D. Hafner, S. Levine, P. Abbeel, *One Step Diffusion via Shortcut Models*, 2024: the two-half-jump
#   target.
# * Y. Song, P. Dhariwal, M. Chen, I. Sutskever, *Consistency Models*, ICML 2023: consistency training and
#   distillation.
# * *Flow Map Learning via Non-Gradient Vector Flow* (SGFlow), ICLR 2026: an Eulerian update that is not a gradient.
