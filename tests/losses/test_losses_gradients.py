"""The update of every flow-map loss equals the gradient of its paper's formula with the stop-gradients written out.

A stop-gradient moved to another place often keeps the fixed point (at the exact map each sample's residual is zero
whatever is detached), so stationarity tests cannot see it; the parameter gradient can. For each loss the autograd
gradient of `spec.fn` w.r.t. the parameters of a small random float64 MLP is compared (rtol 1e-8) with the gradient
of a reference written here from the paper's formula in our convention (noise at t = 0, X(x, s, t) = x + (t - s)
u(x, s, t)), using only model calls, torch.func.jvp and explicit `.detach()` where the paper puts sg[.]. Each
reference names the stop-gradients it places. Losses without a stop-gradient (EMD, LMD, FMM) are checked the same
way (the reference detaches nothing).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from flowmap_harness import draw_batch, loss_settings
from torch.func import functional_call, jvp

from fmlab.losses import get_loss
from fmlab.models import build_model


def mse(a):
    """Per-sample mean square over dimensions [B]."""
    return a.pow(2).mean(1)


def col(t):
    return t[:, None]


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(time_inputs=2, hidden=16, depth=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return model


def make_teacher(seed: int = 1) -> torch.nn.Module:
    """A frozen velocity field v_T(x, t): a random one-time MLP (its input stays differentiable)."""
    torch.manual_seed(seed)
    teacher = build_model(time_inputs=1, hidden=16, depth=2).double()
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return teacher.requires_grad_(False)


def X(model, x, s, t):
    return x + col(t - s) * model(x, s, t)


def jvp_u(model, x, s, t, dx=None, ds=None, dt=None):
    z = torch.zeros_like
    return jvp(model, (x, s, t), (z(x) if dx is None else dx, z(s) if ds is None else ds, z(t) if dt is None else dt))


def frozen(model):
    params = {k: p.detach() for k, p in model.named_parameters()}
    return lambda *args: functional_call(model, params, args)


# --- references (the paper's formula, ours; sg[.] = .detach()) ------------------------------------------------------

def ref_meanflow(model, b, norm_p=0.0, norm_c=1e-3, **_):
    # MeanFlow: || u - sg[(x1 - x0) + (t - s) d/ds u] ||^2, d/ds u along (x1 - x0, 1, 0); w = sg(1 / (err + c)^p)
    x, v = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1, b.x1 - b.x0
    u, du = jvp_u(model, x, b.s, b.t, dx=v, ds=torch.ones_like(b.s))
    err = mse(u - (v + col(b.t - b.s) * du).detach())
    return ((err.detach() + norm_c).pow(-norm_p) * err).mean()


def ref_imf(model, b, **_):
    # iMF: V = u - (t - s) sg[d/ds u along sg[u(x, s, s)]];
    # ||V - (x1 - x0)||^2 + (off-diagonal rows) ||u(x, s, s) - (x1 - x0)||^2
    x, v = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1, b.x1 - b.x0
    v_head = model(x, b.s, b.s)
    u, du = jvp_u(model, x, b.s, b.t, dx=v_head.detach(), ds=torch.ones_like(b.s))
    V = u - col(b.t - b.s) * du.detach()
    return (mse(V - v) + (b.s != b.t).double() * mse(v_head - v)).mean()


def ref_soflow(model, b, **_):
    # SoFlow: diagonal ||u(x, s, s) - (x1 - x0)||^2; off-diagonal, the gradient of
    # ||X(x_s, s, t) - sg X(x_r, r, t)||^2 / (2 d (t - s)(r - s))  (the paper's <NN, sg Delta> form has this gradient)
    x, v = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1, b.x1 - b.x0
    diag = b.s == b.t
    fm = mse(model(x, b.s, b.s) - v)
    x_r = (1 - col(b.r)) * b.x0 + col(b.r) * b.x1
    gap = torch.where(diag, torch.ones_like(b.s), (b.t - b.s) * (b.r - b.s))
    cons = mse(X(model, x, b.s, b.t) - X(model, x_r, b.r, b.t).detach()) / (2 * gap)
    return torch.where(diag, fm, cons).mean()


def ref_esd(model, b, **_):
    # ESD: b - u + (t - s)(d_s u + sg[(du/dx) b]), b = sg[u(x, s, s)] (x1 - x0 on the diagonal)
    x, v = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1, b.x1 - b.x0
    vel = torch.where(col(b.s == b.t), v, model(x, b.s, b.s).detach())
    u, du_s = jvp_u(model, x, b.s, b.t, ds=torch.ones_like(b.s))
    _, du_x = jvp_u(model, x, b.s, b.t, dx=vel)
    return mse(vel - u + col(b.t - b.s) * (du_s + du_x.detach())).mean()


def ref_emd(model, b, teacher=None, **_):
    # EMD: || v_T - u + (t - s)(d/ds u along v_T) ||^2, no stop-gradient (the teacher is frozen)
    x = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    v = teacher(x, b.s)
    u, du = jvp_u(model, x, b.s, b.t, dx=v, ds=torch.ones_like(b.s))
    return mse(v - u + col(b.t - b.s) * du).mean()


def ref_ayf_emd(model, b, teacher=None, tangent_norm=0.1, **_):
    # AYF-EMD: || u - sg[u + E / (||E|| + c)] ||^2, E the Eulerian residual along the teacher
    x = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    v = teacher(x, b.s)
    u, du = jvp_u(model, x, b.s, b.t, dx=v, ds=torch.ones_like(b.s))
    E = (v - u + col(b.t - b.s) * du).detach()
    return mse(u - (u + E / (E.norm(dim=1, keepdim=True) + tangent_norm)).detach()).mean()


def _arrival(model, b):
    x = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    u, du = jvp_u(model, x, b.s, b.t, dt=torch.ones_like(b.t))
    return x + col(b.t - b.s) * u, u + col(b.t - b.s) * du  # X and d/dt X = u + (t - s) d/dt u


def ref_lmd(model, b, teacher=None, **_):
    # LMD: || d/dt X - v_T(X, t) ||^2, no stop-gradient (gradient through the teacher's input)
    Xa, dX = _arrival(model, b)
    return mse(dX - teacher(Xa, b.t)).mean()


def ref_lsd(model, b, **_):
    # LSD: ||u(x_t, t, t) - (x1 - x0)||^2 + || d/dt X - sg[u(sg[X], t, t)] ||^2
    x_t = (1 - col(b.t)) * b.x0 + col(b.t) * b.x1
    Xa, dX = _arrival(model, b)
    return (mse(model(x_t, b.t, b.t) - (b.x1 - b.x0)) + mse(dX - model(Xa.detach(), b.t, b.t).detach())).mean()


def ref_tvm(model, b, **_):
    # TVM: ||u(x_t, t, t) - (x1 - x0)||^2 + || d/dt X - u_{sg(theta)}(X, t, t) ||^2 (gradient through X)
    x_t = (1 - col(b.t)) * b.x0 + col(b.t) * b.x1
    Xa, dX = _arrival(model, b)
    return (mse(model(x_t, b.t, b.t) - (b.x1 - b.x0)) + mse(dX - frozen(model)(Xa, b.t, b.t))).mean()


def ref_ayf_lagrangian(model, b, teacher=None, tangent_c=0.1, **_):
    # AYF-LMD: < X, sg[g / (||g|| + c)] >, g = d/dt X - v_T(X, t)
    Xa, dX = _arrival(model, b)
    g = (dX - teacher(Xa, b.t)).detach()
    return (Xa * g / (g.norm(dim=1, keepdim=True) + tangent_c)).mean(1).mean()


def ref_pid(model, b, teacher=None, h=1e-2, **_):
    # PID: || [X(x0, 0, t + h) - X(x0, 0, t - h)] / 2h - sg[v_T(X(x0, 0, t), t)] ||^2 (gradient through the FD)
    zero = torch.zeros_like(b.t)
    dX = (X(model, b.x0, zero, b.t + h) - X(model, b.x0, zero, b.t - h)) / (2 * h)
    return mse(dX - teacher(X(model, b.x0, zero, b.t), b.t).detach()).mean()


def ref_freeflow(model, b, teacher=None, derivative="fd", h=1e-3, **_):
    # FreeFlow predictor: || u(x0, 0, t) - sg[v_T(X, t) - t d/dt u(x0, 0, t)] ||^2, X = x0 + t u
    zero = torch.zeros_like(b.t)
    u = model(b.x0, zero, b.t)
    if derivative == "jvp":
        du = jvp_u(model, b.x0, zero, b.t, dt=torch.ones_like(b.t))[1]
    else:
        du = (model(b.x0, zero, b.t + h) - model(b.x0, zero, b.t - h)) / (2 * h)
    target = teacher(b.x0 + col(b.t) * u, b.t) - col(b.t) * du
    return mse(u - target.detach()).mean()


def ref_ct(model, b, **_):
    # CT: || X(x_s, s, 1) - sg X(x_r, r, 1) ||^2 / delta, x_s and x_r on the same segment
    x_s, x_r = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1, (1 - col(b.r)) * b.x0 + col(b.r) * b.x1
    return (mse(X(model, x_s, b.s, b.t) - X(model, x_r, b.r, b.t).detach()) / (b.r - b.s)).mean()


def _heun(teacher, x, a, c, steps):
    h = (c - a) / steps
    for i in range(steps):
        r = a + i * h
        k1 = teacher(x, r)
        x = x + col(h) / 2 * (k1 + teacher(x + col(h) * k1, r + h))
    return x


def ref_cd(model, b, teacher=None, **_):
    # CD: || X(x_s, s, 1) - sg X(x_hat, r, 1) ||^2 / delta, x_hat one Heun step of the teacher
    x_s = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    x_hat = _heun(teacher, x_s, b.s, b.r, 1)
    return (mse(X(model, x_s, b.s, b.t) - X(model, x_hat, b.r, b.t).detach()) / (b.r - b.s)).mean()


def ref_ctm(model, b, teacher=None, teacher_steps=2, **_):
    # CTM: off-diagonal || X_sg(X(x_s, s, t), t, 1) - sg[X(X(x_hat, r, t), t, 1)] ||^2 (x_hat: teacher Heun s -> r),
    # diagonal ||u(x_s, s, s) - (x1 - x0)||^2
    x_s = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    one = torch.ones_like(b.t)
    outer = frozen(model)
    Y = X(model, x_s, b.s, b.t)
    Y = Y + col(one - b.t) * outer(Y, b.t, one)
    Z = X(model, _heun(teacher, x_s, b.s, b.r, teacher_steps), b.r, b.t)
    Z = (Z + col(one - b.t) * model(Z, b.t, one)).detach()
    diag = b.s == b.t
    return torch.where(diag, mse(model(x_s, b.s, b.s) - (b.x1 - b.x0)), mse(Y - Z)).mean()


def ref_facm(model, b, teacher=None, cos_weight=1.0, **_):
    # FACM: cos(pi s / 2) ||u - sg[u - alpha clip(g)]||^2 / sg(e + c)^0.5, g = -(v - u + (1 - s) d/ds u), alpha = 1 -
    # sqrt(s); anchor ||u(x, s, s) - v||^2 + k (1 - cos(u(x, s, s), v))
    x = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    v = teacher(x, b.s)
    u_fm = model(x, b.s, b.s)
    fm = mse(u_fm - v) + cos_weight * (1 - F.cosine_similarity(u_fm, v, dim=1))
    u, du = jvp_u(model, x, b.s, b.t, dx=v, ds=torch.ones_like(b.s))
    g = (-(v - u + col(b.t - b.s) * du)).detach().clamp(-1, 1)
    e = mse(u - (u - col(1 - b.s.sqrt()) * g).detach())
    return (torch.cos(0.5 * math.pi * b.s) * e / (e.detach() + 1e-3).sqrt() + fm).mean()


def _convex(model, x, s, r, t):
    lam = col((r - s) / (t - s))
    u1 = model(x, s, r)
    return (lam * u1 + (1 - lam) * model(x + col(r - s) * u1, r, t)).detach()


def ref_shortcut(model, b, levels=7, **_):
    # Shortcut: diagonal flow matching; else ||u(x_s, s, t) - sg[(u(x_s, s, r) + u(X(x_s, s, r), r, t)) / 2]||^2,
    # at the finest level sg[(v(x_s, s) + v(x_s + d v(x_s, s), r)) / 2] with v = u(., ., same time)
    x = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    diag = b.s == b.t
    fm = mse(model(x, b.s, b.s) - (b.x1 - b.x0))
    t = torch.where(diag, b.s + 0.5, b.t)  # placeholder times on diagonal rows (masked out below)
    r = torch.where(diag, b.s + 0.25, b.r)
    target = _convex(model, x, b.s, r, t)
    v1 = model(x, b.s, b.s)
    anchored = (0.5 * (v1 + model(x + col(r - b.s) * v1, r, r))).detach()
    finest = col((t - b.s) < 1.5 * 2.0 ** -(levels - 1))
    sc = mse(model(x, b.s, t) - torch.where(finest, anchored, target))
    return torch.where(diag, fm, sc).mean()


def ref_psd(model, b, **_):
    # PSD: ||u(x_t, t, t) - (x1 - x0)||^2 + ||u(x_s, s, t) - sg[lam u(x_s, s, r) + (1 - lam) u(X(x_s, s, r), r, t)]||^2
    x_s, x_t = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1, (1 - col(b.t)) * b.x0 + col(b.t) * b.x1
    fm = mse(model(x_t, b.t, b.t) - (b.x1 - b.x0))
    return (fm + mse(model(x_s, b.s, b.t) - _convex(model, x_s, b.s, b.r, b.t))).mean()


def ref_splitmeanflow(model, b, **_):
    # SplitMeanFlow: boundary rows ||u(x_t, t, t) - (x1 - x0)||^2, the others PSD's splitting term
    x_s = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    diag = b.s == b.t
    t = torch.where(diag, b.s + 0.5, b.t)
    r = torch.where(diag, b.s + 0.25, b.r)
    split = mse(model(x_s, b.s, t) - _convex(model, x_s, b.s, r, t))
    return torch.where(diag, mse(model(x_s, b.s, b.s) - (b.x1 - b.x0)), split).mean()


def ref_fmm(model, b, **_):
    # FMM (no stop-gradient): (a, b) unordered, every second row a = s, b = t, the others a = t, b = s;
    # ||d/da X(X(x_a, a, b), b, a) - (x1 - x0)||^2 + ||X(X(x_a, a, b), b, a) - x_a||^2
    odd = torch.arange(len(b.s)) % 2 == 1
    a, c = torch.where(odd, b.s, b.t), torch.where(odd, b.t, b.s)
    x_a = (1 - col(a)) * b.x0 + col(a) * b.x1
    y = X(model, x_a, a, c)
    u, du = jvp_u(model, y, c, a, dt=torch.ones_like(a))
    return (mse(u + col(a - c) * du - (b.x1 - b.x0)) + mse(y + col(a - c) * u - x_a)).mean()


def ref_pfmm(model, b, teacher=None, jumps=2, teacher_steps=4, **_):
    # PFMM: ||u(x_s, s, t) - sg[(X_T(x_s) - x_s) / (t - s)]||^2, X_T = two teacher jumps of teacher_steps Heun steps
    x_s = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    y = x_s
    for k in range(jumps):
        y = _heun(teacher, y, b.s + (b.t - b.s) * k / jumps, b.s + (b.t - b.s) * (k + 1) / jumps, teacher_steps)
    return mse(model(x_s, b.s, b.t) - ((y - x_s) / col(b.t - b.s)).detach()).mean()


def ref_sgflow(model, b, **_):
    # SGFlow: ||a||^2 - ||a - b||^2, a = JVP of X along (x1 - x0, 1, 0), b along (sg[u(x_s, s, s)], 1, 0)
    x = (1 - col(b.s)) * b.x0 + col(b.s) * b.x1
    one = torch.ones_like(b.s)

    def dX(tangent):
        u, du = jvp_u(model, x, b.s, b.t, dx=tangent, ds=one)
        return tangent - u + col(b.t - b.s) * du  # d/de X(x + e tangent, s + e, t)

    a, c = dX(b.x1 - b.x0), dX(model(x, b.s, b.s).detach())
    return (mse(a) - mse(a - c)).mean()


# name: (reference, setting overrides)
CASES = {
    "meanflow": (ref_meanflow, {"diagonal_fraction": 0.5}),
    "imf": (ref_imf, {}),
    "soflow": (ref_soflow, {"diagonal_fraction": 0.5}),
    "esd": (ref_esd, {"diagonal_fraction": 0.5}),
    "emd": (ref_emd, {}),
    "ayf_emd": (ref_ayf_emd, {}),
    "lmd": (ref_lmd, {}),
    "lsd": (ref_lsd, {}),
    "tvm": (ref_tvm, {}),
    "ayf_lagrangian": (ref_ayf_lagrangian, {}),
    "pid": (ref_pid, {}),
    "freeflow": (ref_freeflow, {}),
    "ct": (ref_ct, {}),
    "cd": (ref_cd, {}),
    "ctm": (ref_ctm, {"diagonal_fraction": 0.5}),
    "facm": (ref_facm, {}),
    "shortcut": (ref_shortcut, {"diagonal_fraction": 0.5, "levels": 3}),
    "psd": (ref_psd, {}),
    "splitmeanflow": (ref_splitmeanflow, {}),
    "fmm": (ref_fmm, {}),
    "pfmm": (ref_pfmm, {}),
    "sgflow": (ref_sgflow, {}),
}
EXTRA = [  # settings whose stop-gradient placement differs from the defaults
    ("meanflow", {"norm_p": 1.0, "norm_c": 1e-3}),
    ("freeflow", {"derivative": "jvp"}),
    ("facm", {"cos_weight": 0.0}),
]


def _check(name: str, overrides: dict) -> None:
    spec = get_loss(name)
    reference, base = CASES[name]
    teacher = make_teacher() if "teacher" in spec.defaults else None
    settings = loss_settings(spec, **{**base, **overrides})
    if teacher is not None:
        settings["teacher"] = teacher
    batch = draw_batch(spec, settings, 32, seed=3)
    model = make_model()
    params = list(model.parameters())
    loss, _ = spec.fn(model, batch, **settings)
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(reference(model, batch, **settings), params, allow_unused=True)
    total = 0.0
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None), name
        if g is not None:
            assert torch.allclose(g, w, rtol=1e-8, atol=1e-12), f"{name}: max |diff| {(g - w).abs().max():.3e}"
            total += g.abs().sum().item()
    assert total > 1e-6, f"{name}: the gradient is zero, the comparison says nothing"


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_equals_the_papers_formula_with_explicit_stop_gradients(name):
    _check(name, {})


@pytest.mark.parametrize(("name", "overrides"), EXTRA, ids=lambda v: v if isinstance(v, str) else "-")
def test_gradient_with_other_settings(name, overrides):
    _check(name, overrides)


def test_every_flow_map_loss_has_a_reference():
    from fmlab.viz.loss_zoo import flow_map_losses

    assert set(flow_map_losses()) <= set(CASES) | {"cfm", "wtfm", "anchored_consistency"}, \
        sorted(set(flow_map_losses()) - set(CASES))


def test_a_moved_stop_gradient_changes_the_gradient():
    # the comparison can fail: ESD with its spatial JVP differentiated (the old code) has another gradient
    spec = get_loss("esd")
    settings = loss_settings(spec, diagonal_fraction=0.5)
    batch = draw_batch(spec, settings, 32, seed=3)
    model = make_model()
    x = (1 - col(batch.s)) * batch.x0 + col(batch.s) * batch.x1
    vel = torch.where(col(batch.s == batch.t), batch.x1 - batch.x0, model(x, batch.s, batch.s).detach())
    u, du = jvp_u(model, x, batch.s, batch.t, dx=vel, ds=torch.ones_like(batch.s))
    old = mse(vel - u + col(batch.t - batch.s) * du).mean()
    g_old = torch.autograd.grad(old, list(model.parameters()))
    g_new = torch.autograd.grad(spec.fn(model, batch, **settings)[0], list(model.parameters()))
    diff = max((a - b).abs().max().item() for a, b in zip(g_old, g_new, strict=True))
    new = spec.fn(model, batch, **settings)[0].item()
    assert diff > 1e-3 and abs(old.item() - new) < 1e-12 * abs(new)  # same value, another update
