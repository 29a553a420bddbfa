"""Generator of labs/07_unrolling.ipynb: `python labs/_src/07_unrolling.py` (then, to record the
NBVAL_CHECK_OUTPUT outputs, `python scripts/strip_notebooks.py --execute labs/07_unrolling.ipynb`)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from strip_notebooks import code, md, solution, write_notebook  # noqa: E402

cells = [
    md(r"""
# Lab 07: when does unrolling help flow matching?

Flow matching trains on points of the *true* path, but sampling feeds the network its *own* previous states. Small
errors push a sample off the path and compound over the steps (exposure bias). The obvious fix is to train the way we
sample: unroll the solver for a few steps and backpropagate through it. This lab follows the argument of the
manuscript *When does unrolling help flow matching?* (Fruytier, 2026) and measures each step of it:

1. the unrolled (windowed) loss and its expansion into **single-step terms and cross-terms**;
2. **detaching** the state between steps, which removes the gradient through the states, and the
   **anchored-consistency** loss it leads to (consistency and shortcut models, up to weighting);
3. the **gradient variance of the cross-terms** against the window length $L$, beside the closed form
   $\mathrm{Var}(x_1 \mid x_t)^L$, and what **minibatch OT** does to it;
4. a training comparison at equal compute: does full backpropagation through time beat single-step flow matching?

**Convention.** Noise at $t = 0$, data at $t = 1$, $x_t = (1-t)\,x_0 + t\,x_1$, $u = x_1 - x_0$. The manuscript puts
data at $t = 0$; its $\mathrm{Var}(x_0 \mid x_t)$ is our $\mathrm{Var}(x_1 \mid x_t)$ and its windows run down to
$t = 0$ where ours run up to $t = 1$.

We use the **8 Gaussians** data set throughout: its Gaussian-mixture ground truth (`fmlab.data.gmm_2d("8modes")`)
gives $\mathrm{Var}(x_1 \mid x_t)$ in closed form.
"""),
    code("""
import torch

from fmlab.data import gmm_2d
from fmlab.diagnostics import kstep_decomposition, posterior_variance_power
from fmlab.exercises import unrolling as ex
from fmlab.labkit import fast_mode, pick, steps
from fmlab.viz import unrolling as U

torch.manual_seed(0)
DATA, DT_STEPS = "8gaussians", 16  # windows of Euler steps of dt = 1/16
BASE = steps(2000, 150)  # single-step FM training steps; other losses get the same compute
EVERY = pick(250, 75)  # measure the cross-term variance every EVERY steps
N_EVAL = steps(1000, 300)
print(f"fast mode: {fast_mode()}; single-step FM budget {BASE} steps; dt = 1/{DT_STEPS}")
"""),
    md(r"""
## 1. The window

From a true path point $x_{t_0}$ (with $t_0 \le 1 - L\,dt$ so that the window fits) unroll $L$ Euler steps of the
model, each fed its own previous state:

$$\hat x_0 = x_{t_0}, \qquad \hat x_{k+1} = \hat x_k + dt\,\hat v_k, \qquad \hat v_k = v_\theta(\hat x_k,\ t_0 + k\,dt).$$

**Windowed Trajectory Flow Matching (WT-FM)** penalises the terminal error against the true path point of the same
pair, $E_L = \hat x_L - x_{t_0 + L\,dt}$, and backpropagates through the generated states (BPTT). `fmlab` registers it
as `wtfm` (loss $= \|E_L\|^2 / (L\,dt)^2$, so that $L = 1$ is exactly flow matching).

We first train a plain single-step flow-matching model (cached) and look at its windows. Move $L$ and $t_0$: the green
states drift from the black true points, and the vermillion segment is $E_L$.
"""),
    code("""
fm = U.run(U.equal_time_config(DATA, "cfm", BASE), eval_steps=(DT_STEPS, 100), n_eval=N_EVAL)
U.window_widget(fm.model, DATA, euler_steps=DT_STEPS)
"""),
    md(r"""
## 2. Single-step terms and cross-terms

On the linear path the true point moves with the constant velocity $u$, so $x_{t_0 + L\,dt} = x_{t_0} + L\,dt\,u$ and,
with the step errors $e_k = \hat v_k - u$,

$$\|E_L\|^2 = dt^2\,\Big\|\sum_k e_k\Big\|^2
= dt^2\Big[\underbrace{\sum_k \|e_k\|^2}_{\text{single-step FM terms}}
+ \underbrace{\sum_{i \ne j} e_i^\top e_j}_{\text{cross-terms}}\Big].$$

The manuscript shows this terminal loss is a $k$-step negative ELBO. The **cross-terms are the only coupling between
steps**: an error at step $i$ can be cancelled by an opposite error at step $j$ (self-correction). The view below
splits the loss of our model on a batch (`fmlab.diagnostics.kstep_decomposition`): the diagonal of the matrix holds
the single-step terms, the rest the cross-terms.
"""),
    code("""
U.decomposition_widget(fm.model, DATA, euler_steps=DT_STEPS)
"""),
    code("""
batch = U.window_batch_at(DATA, 512, t0=0.2)
d = kstep_decomposition(fm.model, batch, window=4, steps=DT_STEPS)
print(f"L = 4: single-step {float(d.single_total):.3e} + cross {float(d.cross_total):.3e} = {float(d.total):.3e}; "
      f"k-step loss {float(d.terminal):.3e}")
assert torch.allclose(d.total, d.terminal, rtol=1e-4), "the expansion must hold exactly"
"""),
    md(r"""
### Your turn

**Exercise 4.** How many cross-terms $e_i^\top e_j$ ($i \ne j$, ordered pairs) does a window of $L = 4$ have?
"""),
    code("""
answer = None  # your number
ex.check_cross_term_count(answer)
"""),
    solution(r"""$L(L-1) = 12$: the cross-terms outnumber the $L$ single-step terms as soon as $L > 2$."""),
    md(r"""
**Exercise 5.** Suppose every step makes the same error, $e_k = e$. Which fraction of the $k$-step loss are
cross-terms when $L = 4$?
"""),
    code("""
answer = None  # your number
ex.check_cross_share(answer)
"""),
    solution(r"""
$\|\sum_k e\|^2 = L^2\|e\|^2$ while the single-step part is $L\|e\|^2$: the cross-terms are $1 - 1/L = 0.75$ of it.
Errors that keep the same sign compound; errors that alternate cancel.
"""),
    md(r"""
**Exercise 7.** Compute the split yourself with a loop over the window (use `fm.model`, `batch` above, $L = 4$,
$dt = 1/16$): unroll $\hat x_{k+1} = \hat x_k + dt\,\hat v_k$ from $x_{t_0} = (1-t_0)x_0 + t_0 x_1$, collect
$e_k = \hat v_k - (x_1 - x_0)$, and average $dt^2\sum_k\|e_k\|^2/d$ and $dt^2\sum_{i\ne j}e_i^\top e_j/d$ over the
batch ($d = 2$).
"""),
    code("""
single, cross = None, None  # your two numbers
ex.check_kstep_split(single, cross, fm.model, batch, window=4, steps=DT_STEPS)
"""),
    solution(r"""
```python
dt, x, t = 1 / 16, (1 - batch.t[:, None]) * batch.x0 + batch.t[:, None] * batch.x1, batch.t.clone()
errors = []
with torch.no_grad():
    for _ in range(4):
        v = fm.model(x, t)
        errors.append(v - (batch.x1 - batch.x0))
        x, t = x + dt * v, t + dt
e = torch.stack(errors)                                   # [L, B, d]
single = dt**2 * (e**2).sum(-1).sum(0).mean() / 2
cross = dt**2 * ((e.sum(0)**2).sum(-1) - (e**2).sum(-1).sum(0)).mean() / 2
```
"""),
    md(r"""
## 3. Detaching, and the anchored-consistency loss

Full BPTT differentiates every step through the states that earlier steps produced: the gradient flows along the
chain of transition Jacobians $I + dt\,J_{\hat v}$ (lab 06). **Detaching** feeds each step a stop-gradient copy of
its state. The loss value is unchanged; the gradient through the states, which is where the cross-terms couple the
steps, is gone. The table measures it on our trained model: same loss, different gradient (cosine below 1 as soon as
there is a state path).
"""),
    code("""
rows = U.detach_gradients(fm.model, DATA, windows=(1, 2, 4, 8), euler_steps=DT_STEPS)
print(f"{'L':>2} {'loss (BPTT)':>12} {'loss (detached)':>16} {'|grad| BPTT':>12} {'|grad| detached':>16} {'cosine':>7}")
for r in rows:
    print(f"{r['L']:>2} {r['loss BPTT']:>12.5f} {r['loss detached']:>16.5f} {r['|grad| BPTT']:>12.4f} "
          f"{r['|grad| detached']:>16.4f} {r['cosine']:>7.4f}")
assert all(abs(r["loss BPTT"] - r["loss detached"]) < 1e-5 * max(1.0, r["loss BPTT"]) for r in rows)
assert rows[0]["cosine"] > 0.9999 and rows[-1]["cosine"] < rows[0]["cosine"]
"""),
    md(r"""
Dropping the cross-terms and bounding what is left (summation by parts, then Cauchy-Schwarz) gives

$$\frac{1}{K^2 dt^2}\,\|E_K\|^2 \;\lesssim\; \underbrace{\|\hat v_1 - v_1\|^2}_{\text{anchor: single-step FM}}
\;+\; \Big(\frac{K-1}{K}\Big)^2\,\underbrace{\mathbb{E}_i\,\|\hat v_i - \hat v_{i-1}\|^2}_{\text{self-consistency}},$$

which is, up to weighting, **consistency and shortcut models**. The manuscript's code reduces it to one function,
registered here as `anchored_consistency`: stack the window's predictions; anchor $=$ MSE(first prediction, $u$);
teacher $=$ mean of the later predictions, **detached or not**; loss $= 0.8\,$anchor $+ 0.2\,$MSE(first prediction,
teacher) (the 4:1 Taylor weight; `weighting="taylor"` gives $1$ and $((K-1)/K)^2$). The detach flag is the whole
story: on, the consistency/shortcut form; off, full BPTT. Below, the gradient reaching each network call of a window
of 4: with detach only the first call is trained.
"""),
    code("""
for detach in (True, False):
    g = U.step_gradients(fm.model, batch, "anchored_consistency", window=4, steps=DT_STEPS, detach=detach)
    shown = ["-" if v is None else f"{v:.2e}" for v in g["outputs"]]
    print(f"detach={detach!s:>5}: gradient reaching the outputs of calls 1..4: {shown}")
    if detach:
        assert g["outputs"][0] is not None and all(v is None for v in g["outputs"][1:])
    else:
        assert all(v is not None and v > 0 for v in g["outputs"])
"""),
    md(r"""**Exercise 6.** What consistency weight $((K-1)/K)^2$ does the bound give a window of $K = 4$?"""),
    code("""
answer = None  # your number
ex.check_taylor_weight(answer)
"""),
    solution(r"""$(3/4)^2 = 0.5625$. It tends to 1 for long windows: the consistency term then counts as much as the anchor."""),
    md(r"""
## 4. Why drop the cross-terms: their gradient variance

Each $e_k$ contains the same noisy target $u = x_1 - x_0$. Given $x_t$, the target's spread is set by the posterior
variance $\mathrm{Var}(x_1 \mid x_t)$ (since $u = (x_1 - x_t)/(1-t)$). The manuscript argues that the cross-terms'
gradient variance compounds like $\mathrm{Var}(x_1 \mid x_t)^L$ across a window, which is what makes full BPTT
fragile, and that **minibatch OT**, which pairs each noise with a nearby data point, collapses that variance.

`fmlab.diagnostics.cross_term_grad_variance` measures it: the trace of the covariance, across minibatches, of the
gradient of the cross-term part of the WT-FM loss, for each $L$ (windows from $t_0 = 0.25$). We measure it on two
models **while they train**, single-step FM with independent and with OT coupling, and draw the closed form
$\overline{\mathrm{Var}}(x_1 \mid x_{t_0})^L$ of the 8-Gaussian mixture (per coordinate) beside it. Replay the
training afterwards with the play button.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
vbar, closed = posterior_variance_power(gmm_2d("8modes"), 0.25, (1, 2, 4, 8))
print(f"closed form: Var(x1 | x_t0) = {vbar:.3f} per coordinate at t0 = 0.25 (8 Gaussians)")
print("Var^L at L = 1, 2, 4, 8: " + ", ".join(f"{float(x):.3g}" for x in closed))
"""),
    code("""
var_runs, var_view = U.variance_live(DATA, steps=BASE, every=EVERY, t0=0.25, batches=pick(16, 6), n_eval=N_EVAL)
"""),
    code("""
final = {r.config.coupling: r.variances[-1].variance for r in var_runs}
for coupling, v in final.items():
    print(f"{coupling:>11}: cross-term gradient variance at L = 2, 4, 8: "
          + ", ".join(f"{float(x):.3g}" for x in v[1:]) + f"  (growth L=2->8: {float(v[3] / v[1]):.1f}x)")
print("closed form Var^L at L = 2, 4, 8: " + ", ".join(f"{float(x):.3g}" for x in closed[1:])
      + f"  (growth {float(closed[3] / closed[1]):.0f}x)")
print("independent / OT at L = 2, 4, 8: " + ", ".join(f"{float(a / b):.1f}x" for a, b in
                                                    zip(final['independent'][1:], final['ot'][1:])))
"""),
    code("""
assert vbar > 1 and float(final["independent"][3]) > float(final["independent"][1]), "variance should grow with L"
assert float(final["ot"][3]) < float(final["independent"][3]), "OT should lower the cross-term variance"
"""),
    md(r"""
**Reading the figure.** The measured variance grows with $L$, in the direction the closed form predicts for a
target whose posterior variance exceeds one ($\overline{\mathrm{Var}} \approx 2.8$ here), but far more slowly
than $\mathrm{Var}^L$: in the full run about 12x from $L = 2$ to $L = 8$, against 470x for the closed form. Read
$\mathrm{Var}^L$ as the manuscript's worst case, not as a prediction of the size. Minibatch OT lowers the variance
and slows its growth (in the full run 3x lower at $L = 2$ and 9x lower at $L = 8$; `benchmarks/README.md` has the
numbers); in the short `FMLAB_FAST` runs the gap only shows at long windows, which is what the check tests.
"""),
    md(r"""
## 5. Training through the sampler

Pick a loss, a window length $L$, the detach switch and the coupling. Each new setting trains a model for **the same
training time** as single-step flow matching, by a cost model (a forward pass costs 1, a backward 2, plus a per-step
overhead of 3: a WT-FM step of window $L$ costs $(3 + 3L)/6$ single steps, an anchored step with detach
$(3 + 3 + L - 1)/6$; `python benchmarks/unrolling.py cost` measures the real ratios). It shows the model's 16-step
samples and the single-step FM error of its first prediction beside the single-step FM baseline with the same
coupling. Settings trained before are cached: flipping a switch back redraws at once.
"""),
    code("""
U.unrolling_widget(DATA, base_steps=BASE, n_eval=N_EVAL, euler_steps=DT_STEPS)
"""),
    md(r"""
## 6. The verdict at equal compute

Finally the comparison the manuscript makes: single-step FM, WT-FM with full BPTT, WT-FM detached and anchored
consistency (detached), each with independent and with OT coupling, every run with the training time of `BASE`
single-step FM steps (the cost model above; the table also shows the measured seconds). W1 is measured with 16
Euler steps (the sampler the windows imitate) and with 100.
"""),
    code("""
results = U.comparison_runs(U.comparison_configs(DATA, BASE), eval_steps=(DT_STEPS, 100), n_eval=N_EVAL)
print(U.comparison_table(results, (DT_STEPS, 100)))
U.render_comparison(results, DT_STEPS, floor=U.noise_floor_w1(DATA, N_EVAL))
"""),
    code("""
if fast_mode():
    print("FMLAB_FAST=1: these runs are a few hundred steps long; their numbers do not carry the lesson.")
print(U.conclusion(results, DT_STEPS))
"""),
    code("""
w1 = {r.label: r.w1[DT_STEPS] for r in results}
slack = 1.5 if fast_mode() else 1.1
assert w1["WT-FM L=4 BPTT"] > w1["single-step FM"] / slack, w1  # full BPTT does not beat single-step FM
assert w1["anchored L=2 (detached)"] < slack * w1["single-step FM"], w1  # anchored consistency: within 10% of FM
ot_better = sum(w1[k + " + OT"] < w1[k] for k in w1 if not k.endswith(" + OT"))
assert ot_better >= (2 if fast_mode() else 3), w1  # OT helps most methods
"""),
    md(r"""
## Summary

- The WT-FM terminal loss is $dt^2$ times single-step FM terms plus cross-terms $e_i^\top e_j$; the cross-terms are
  the only coupling between steps and dominate long windows.
- Detaching keeps the loss value and removes the gradient through the states. Bounding what is left gives an anchor
  (single-step FM) plus a self-consistency term: consistency and shortcut models, `anchored_consistency` here.
- The cross-terms' gradient variance grows with the window and scales with $\mathrm{Var}(x_1 \mid x_t)$; minibatch OT
  lowers it at every $L$.
- At equal training time full BPTT does not beat single-step flow matching, and gets worse with the window.
  Anchored consistency (detached) beats full BPTT of the same window and comes close to single-step FM: on
  8 Gaussians it matches it, on moons `benchmarks/unrolling.py` finds it 14% (independent) and 34% (OT) behind. Minibatch OT improves
  every method and rescues the longest windows: it is the most consistent stabiliser (the numbers above are this
  run's; `benchmarks/README.md` has the full tables).
"""),
]

if __name__ == "__main__":
    print(write_notebook(ROOT / "labs" / "07_unrolling.ipynb", cells))
