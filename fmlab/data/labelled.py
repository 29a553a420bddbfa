"""Labelled Gaussian mixtures: exact class-conditional fields and what classifier-free guidance does to them.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data; x_t = a_t x1 + s_t x0 (linear path: a = t, s = 1 - t).

A `LabelledMixture` is a GaussianMixture p(x1) = sum_k w_k N(mu_k, S_k) whose components carry class labels
c(k) in {0, ..., C - 1}. A class is itself a mixture: its own components, re-weighted,

    p(x1 | c) = sum_{k: c(k) = c} (w_k / P(c)) N(mu_k, S_k),        P(c) = sum_{k: c(k) = c} w_k.

Along the path, with pi_k(x) = P(component k | x_t = x) the component posteriors of the whole mixture,

    P(c | x_t = x)  = sum_{k: c(k) = c} pi_k(x)                               class posterior
    pi_k(x | c)     = pi_k(x) / P(c | x) for c(k) = c, else 0                  posterior weights within the class
    v(x, t | c)     = E[x1 - x0 | x_t = x, c] = sum_k pi_k(x | c) v_k(x, t)    class-conditional velocity
    v(x, t)         = sum_c P(c | x) v(x, t | c)                              the unconditional velocity

(v_k: the velocity of component k alone, fmlab.data.gaussian). Classifier-free guidance with scale w moves along the
line through the two fields (Ho & Salimans 2022, written in velocities and in our convention):

    v_w(x, t | c) = v(x, t) + w (v(x, t | c) - v(x, t)),

so w = 0 is the unconditional field, w = 1 the conditional one and w > 1 extrapolates beyond it. (Ho & Salimans
write (1 + w') eps_c - w' eps_u; their w' is our w - 1.)

What v_w samples. On the linear path the velocity is affine in the score with the same slope for both fields,
v = (x + (1 - t) grad log p_t) / t (Tweedie's formula), so v_w is the velocity of the score

    (1 - w) grad log p_t(x) + w grad log p_t(x | c) = grad log [ p_t(x | c)^w p_t(x)^(1 - w) ]:

at each time t the guided field is the probability-flow field of the *tilted* density
p_{t,w} ∝ p_t(x | c)^w p_t(x)^(1 - w). The curve t -> p_{t,w} is not the path of any flow for w != 0, 1, however, so
solving dx/dt = v_w from noise does not end at the tilted data density p_{1,w} (Chidambaram et al. 2024; Bradley &
Nakkiran 2024). `guided_flow` integrates the exact v_w with a fine solver; `sample_tilted` samples p_{1,w} exactly,
by rejection: for 0 <= w <= 1 propose x ~ p(x) and accept with probability P(c | x)^w; for w >= 1 propose
x ~ p(x | c) and accept with probability P(c | x)^(w - 1). Both follow from

    p(x | c)^w p(x)^(1 - w) = p(x) (P(c | x) / P(c))^w = p(x | c) (P(c | x) / P(c))^(w - 1).

(For w < 0 the tilt p(x) P(c | x)^w need not be normalisable, so it is not offered.)

Labels: an integer or a long tensor [B]; the value C (= `null_label`) means "no label" (the unconditional field),
as in the conditional models of fmlab.models.conditioning. All computation is float64 and differentiable in x.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property

import torch
from torch import Tensor

from ..checks import check_choice, check_int
from .gaussian import GaussianMixture, gmm_2d

__all__ = ["LabelledMixture", "labelled_2d", "LABELLED_2D", "TOY_CLASSES", "labelled_data", "class_data"]

_F64 = torch.float64


def _mix(logits: Tensor, v_k: Tensor, member: Tensor | None) -> Tensor:
    """sum_k pi_k v_k with pi = softmax over the member components of each row (all of them if member is None)."""
    if member is not None:
        logits = logits.masked_fill(~member, -math.inf)  # pi_k(x | c) = pi_k(x) / P(c | x) on the class, 0 off it
    return torch.einsum("bk,bkd->bd", torch.softmax(logits, dim=1), v_k)


class LabelledMixture:
    """A Gaussian mixture whose components carry class labels (see the module docstring for every formula).

    mixture: the unconditional GaussianMixture. component_labels: [K] integers in {0, ..., C - 1}, every class used.
    class_names: optional names of the C classes. The t-dependent methods take x [B, d], t a float or [B] in [0, 1],
    labels y an int or a long tensor [B] (`null_label` = C: unconditional), and a schedule name or object.
    """

    def __init__(self, mixture: GaussianMixture, component_labels: Sequence[int] | Tensor,
                 class_names: Sequence[str] | None = None):
        if not isinstance(mixture, GaussianMixture):
            raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
        labels = torch.as_tensor(component_labels)
        k = mixture.n_components
        if labels.shape != (k,) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"component_labels must be {k} integers (one per component), got {labels.tolist()}")
        labels = labels.long()
        n_classes = int(labels.max()) + 1 if bool((labels >= 0).all()) else 0
        if n_classes < 1 or sorted(set(labels.tolist())) != list(range(n_classes)):
            raise ValueError(f"component_labels must use every class 0, ..., C - 1 at least once, "
                             f"got {labels.tolist()}")
        if class_names is not None and len(class_names) != n_classes:
            raise ValueError(f"class_names must name the {n_classes} classes, got {list(class_names)}")
        self.mixture, self.component_labels, self.n_classes = mixture, labels, n_classes
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(n_classes))
        self.class_prior = torch.zeros(n_classes, dtype=_F64).index_add_(0, labels, mixture.weights)  # P(c)
        if bool((self.class_prior <= 0).any()):
            raise ValueError(f"every class needs a positive weight, got P(c) = {self.class_prior.tolist()}")

    @property
    def null_label(self) -> int:
        """The label that means "no class": C."""
        return self.n_classes

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def __repr__(self) -> str:
        return f"LabelledMixture(K={self.mixture.n_components}, C={self.n_classes}, d={self.dim})"

    @cached_property
    def _class_mixtures(self) -> list[GaussianMixture]:
        m = self.mixture
        out = []
        for c in range(self.n_classes):
            rows = self.component_labels == c
            means, weights = m.means[rows].to(m.dtype), m.weights[rows]  # weights w_k, renormalised to w_k / P(c)
            if m.q is None:  # isotropic or axis-aligned components keep their fast path
                stds = m.lam[rows].sqrt()
                out.append(GaussianMixture(means, weights=weights, stds=stds[:, 0] if stds.shape[1] == 1 else stds))
            else:
                out.append(GaussianMixture(means, covs=m.covs[rows], weights=weights))
        return out

    def class_mixture(self, c: int) -> GaussianMixture:
        """p(x1 | c): the components of class c with weights w_k / P(c)."""
        return self._class_mixtures[self._class(c)]

    def _class(self, c: int) -> int:
        return check_int(c, "class", 0, self.n_classes - 1)

    # --- sampling ------------------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n labelled draws (x1 [n, d], y [n]): a component k ~ w, x1 from it, y = c(k) (on the CPU)."""
        x, k = self.mixture.sample(n, generator=generator, return_labels=True)
        return x, self.component_labels[k]

    def sample_class(self, n: int, c: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws of p(x1 | c)."""
        return self.class_mixture(c).sample(n, generator=generator)

    # --- class posterior, conditional fields ----------------------------------------------------------------------
    def class_posterior(self, x: Tensor, t: Tensor | float, schedule: str = "linear") -> Tensor:
        """P(c | x_t = x) = sum_{k in c} pi_k(x), [B, C]."""
        pi = self.mixture.posterior_weights(x, t, schedule)  # [B, K]
        return torch.zeros(len(x), self.n_classes, dtype=pi.dtype, device=pi.device).index_add_(
            1, self.component_labels.to(pi.device), pi)

    def velocity(self, x: Tensor, t: Tensor | float, y: Tensor | int | None = None,
                 schedule: str = "linear") -> Tensor:
        """v(x, t | y) = sum_k pi_k(x | y) v_k(x, t) [B, d] for each row's label; y None (or a null label): the
        unconditional velocity v(x, t) = sum_k pi_k(x) v_k(x, t)."""
        logits, v_k = self.mixture.component_velocities(x, t, schedule)
        return _mix(logits, v_k, self._membership(y, len(x), logits.device))

    def score(self, x: Tensor, t: Tensor | float, y: Tensor | int | None = None, schedule: str = "linear") -> Tensor:
        """grad_x log p_t(x | y) [B, d] (y None or null: grad_x log p_t(x))."""
        return self._per_class(x, t, y, lambda g, xx, tt: g.score(xx, tt, schedule))

    def denoiser(self, x: Tensor, t: Tensor | float, y: Tensor | int | None = None,
                 schedule: str = "linear") -> Tensor:
        """E[x1 | x_t = x, y] [B, d] (y None or null: E[x1 | x_t = x])."""
        return self._per_class(x, t, y, lambda g, xx, tt: g.denoiser(xx, tt, schedule))

    def guided_velocity(self, x: Tensor, t: Tensor | float, y: Tensor | int, w: Tensor | float,
                        schedule: str = "linear") -> Tensor:
        """v_w(x, t | y) = v(x, t) + w (v(x, t | y) - v(x, t)) [B, d]; w a float or one scale per row [B]."""
        logits, v_k = self.mixture.component_velocities(x, t, schedule)
        v_cond = _mix(logits, v_k, self._membership(y, len(x), logits.device))
        v_uncond = _mix(logits, v_k, None)
        w = torch.as_tensor(w, dtype=v_cond.dtype, device=v_cond.device)
        if w.ndim > 1 or (w.ndim == 1 and w.shape != (len(x),)):
            raise ValueError(f"w must be a float or have shape [B] = [{len(x)}], got {tuple(w.shape)}")
        w = w[:, None] if w.ndim == 1 else w
        return v_uncond + w * (v_cond - v_uncond)  # v_w = v_u + w (v_c - v_u)

    def _membership(self, y: Tensor | int | None, n: int, device: torch.device) -> Tensor | None:
        """[B, K] booleans: component k belongs to row b's class (every component for a null label); None if y is."""
        if y is None:
            return None
        y = self._labels(y, n)
        member = (self.component_labels[None, :] == y[:, None]) | (y == self.n_classes)[:, None]
        return member.to(device)

    def _labels(self, y: Tensor | int, n: int) -> Tensor:
        y = torch.as_tensor(y)
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"labels y must be integers, got dtype {y.dtype}")
        y = y.long().expand(n) if y.ndim == 0 else y.long()
        if y.shape != (n,):
            raise ValueError(f"labels y must be an int or have shape [B] = [{n}], got {tuple(y.shape)}")
        if bool(((y < 0) | (y > self.n_classes)).any()):
            raise ValueError(f"labels y must lie in [0, {self.n_classes}] ({self.n_classes} = no label), got values "
                             f"in [{int(y.min())}, {int(y.max())}]")
        return y.cpu()

    def _per_class(self, x: Tensor, t: Tensor | float, y: Tensor | int | None,
                   fn: Callable[[GaussianMixture, Tensor, Tensor], Tensor]) -> Tensor:
        """fn(mixture of row's class, x rows, t rows), assembled row by row (null / None rows: the whole mixture)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=_F64)
        t = t.expand(len(x)) if t.ndim == 0 else t
        if y is None:
            return fn(self.mixture, x, t)
        y = self._labels(y, len(x))
        parts, rows_of = [], []
        for c in torch.unique(y).tolist():
            rows = (y == c).nonzero().squeeze(1)
            g = self.mixture if c == self.n_classes else self._class_mixtures[c]
            parts.append(fn(g, x[rows.to(x.device)], t[rows]))
            rows_of.append(rows)
        order = torch.argsort(torch.cat(rows_of)).to(x.device)
        return torch.cat(parts)[order]  # differentiable in x: a permutation of the per-class results

    # --- what guidance targets: the tilted density ----------------------------------------------------------------
    def tilted_log_prob(self, x: Tensor, c: int, w: float, t: float = 1.0, schedule: str = "linear") -> Tensor:
        """Unnormalised log p_{t,w}(x) = w log p_t(x | c) + (1 - w) log p_t(x), [B] (w >= 0)."""
        _check_scale(w)
        g = self.class_mixture(c)
        return w * g.marginal_log_prob(x, t, schedule) + (1 - w) * self.mixture.marginal_log_prob(x, t, schedule)

    def sample_tilted(self, n: int, c: int, w: float, generator: torch.Generator | None = None,
                      max_rounds: int = 1000) -> Tensor:
        """n exact draws of the tilted data density p_{1,w} ∝ p(x | c)^w p(x)^(1 - w) (w >= 0), by rejection:
        0 <= w <= 1: x ~ p(x), accept with probability P(c | x)^w; w >= 1: x ~ p(x | c), accept with P(c | x)^(w - 1).
        Raises RuntimeError if fewer than n are accepted in max_rounds rounds of n proposals."""
        _check_scale(w)
        c = self._class(c)
        check_int(n, "n", 1)
        kept, total = [], 0
        for _ in range(max_rounds):
            if w <= 1:
                x = self.mixture.sample(n, generator=generator)
                power = w
            else:
                x = self.class_mixture(c).sample(n, generator=generator)
                power = w - 1
            p_c = self.class_posterior(x.to(_F64), 1.0)[:, c]
            accept = torch.rand(n, generator=generator, dtype=_F64) < p_c.pow(power)
            kept.append(x[accept])
            total += int(accept.sum())
            if total >= n:
                return torch.cat(kept)[:n]
        raise RuntimeError(f"sample_tilted: only {total} of {n} draws accepted in {max_rounds} rounds (w = {w})")

    def guided_flow(self, x0: Tensor, c: Tensor | int, w: Tensor | float, steps: int = 100, method: str = "rk4",
                    schedule: str = "linear") -> Tensor:
        """Noise x0 [B, d] carried from t = 0 to t = 1 by the exact guided field v_w(x, t | c) (float64, `steps`
        fixed steps of `method`; w a float or one scale per row). `steps`=100 of RK4 is converged for the labs' 2D
        mixtures at w <= 8 (max error ~1e-6; 50 steps: ~3e-5; tests/data/test_data_labelled.py checks against 200)."""
        from ..solvers import solve

        x = x0.detach().to(_F64)
        y = self._labels(c, len(x))
        w = torch.as_tensor(w, dtype=_F64)
        return solve(lambda xx, tt: self.guided_velocity(xx, tt, y, w, schedule), x, steps=steps, method=method)


def _check_scale(w: float) -> None:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
        raise ValueError(f"the guidance scale w must be a finite number >= 0 for the tilted density, got {w!r}")


# --- ready-made labelled mixtures ------------------------------------------------------------------------------------

def _eight_by_mode() -> LabelledMixture:
    return LabelledMixture(gmm_2d("8modes"), list(range(8)), [f"mode {k}" for k in range(8)])


def _eight_by_half() -> LabelledMixture:
    return LabelledMixture(gmm_2d("8modes"), [0, 0, 0, 0, 1, 1, 1, 1], ["modes 0-3", "modes 4-7"])


LABELLED_2D: dict[str, Callable[[], LabelledMixture]] = {"8modes": _eight_by_mode, "8modes_halves": _eight_by_half}


def labelled_2d(name: str) -> LabelledMixture:
    """Ready-made labelled 2D mixtures (the 8 Gaussians of fmlab.data.gmm_2d('8modes'), mode k at angle 2 pi k / 8):

    - "8modes": 8 classes, one per mode (the labels of sample_toy('8gaussians'));
    - "8modes_halves": 2 classes of 4 neighbouring modes each, a class being itself a mixture: class 0 holds the
      modes 0-3 (at 0, 45, 90 and 135 degrees), class 1 the modes 4-7 (180 ... 315 degrees). Modes 0 and 3 of class
      0 border class 1; modes 1 and 2 lie inside their class.
    """
    check_choice(name, "name", sorted(LABELLED_2D))
    return LABELLED_2D[name]()


# --- labelled data for the trainer ----------------------------------------------------------------------------------

TOY_CLASSES = {"moons": 2, "8gaussians": 8, "spirals": 2, "circles": 2}  # toy sets whose labels mean something
DataFn = Callable[[int, torch.Generator | None], tuple[Tensor, Tensor]]


def labelled_data(name: str) -> tuple[DataFn, int]:
    """(data_fn, n_classes) of a labelled 2D set: `data_fn(n, generator) -> (x1 [n, 2] float32, labels [n] long)`.

    Names: the LABELLED_2D mixtures ('8modes': 8 classes, '8modes_halves': 2), whose ground truth is exact, and the
    toy sets of TOY_CLASSES (fmlab.data.sample_toy's labels: moons 2, 8gaussians 8, spirals 2, circles 2).
    """
    if name in LABELLED_2D:
        mixture = labelled_2d(name)

        def draw(n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
            x, y = mixture.sample(n, generator)
            return x.float(), y

        return draw, mixture.n_classes
    if name in TOY_CLASSES:
        from .toy import sample_toy

        return (lambda n, generator=None: sample_toy(name, n, generator, return_labels=True)), TOY_CLASSES[name]
    raise ValueError(f"data must be a labelled set, one of {sorted([*LABELLED_2D, *TOY_CLASSES])}, got {name!r}")


def class_data(name: str, n: int, c: int, generator: torch.Generator | None = None) -> Tensor:
    """n points of class c of the labelled set `name` (drawn in rounds of n from labelled_data and kept by label)."""
    fn, n_classes = labelled_data(name)
    check_int(c, "class", 0, n_classes - 1)
    check_int(n, "n", 1)
    kept, total = [], 0
    while total < n:
        x, y = fn(n, generator)
        kept.append(x[y == c])
        total += int((y == c).sum())
    return torch.cat(kept)[:n]
