"""Why AYF's Lagrangian loss gets worse with more sampling steps on the checkerboard: its update per gap.

    python benchmarks/flowmaps_ayf.py                    # the committed results (checkerboard and moons, seed 0)
    python benchmarks/flowmaps_ayf.py --datasets checkerboard --seeds 0,1 --out /tmp/ayf.json

AYF-LMD (fmlab.losses.flowmap_lagrangian.ayf_lagrangian_loss) minimises the surrogate E <X(x_s, s, t), sg[g_hat]>
with g = d/dt X(x_s, s, t) - v_T(X, t) the Lagrangian residual and g_hat = g / (||g|| + c) (c = 0.1). Since
X = x_s + (t - s) u, the gradient on the average velocity u of a sample with gap h = t - s is h g_hat: at most h in
norm, whatever the residual. LMD, on the same rule and teacher, differentiates ||g||^2 itself, whose gradient on u
is about 2 g at every gap. So AYF-LMD pushes the short jumps that multi-step sampling uses (h = 1/8 at 8 steps)
about h times less than the one-step jump, and never pushes harder than h.

This script trains, exactly as the zoo benchmark does (benchmarks/flowmaps.py `train_and_eval`, same teacher,
2000 steps), four distillations of the same flow-matching teacher:
  ayf      AYF-LMD as in the zoo (c = 0.1);
  ayf_c0   AYF-LMD without the tangent normalisation (c = 0): the gradient on u is h g;
  ayf_u    AYF-LMD with the surrogate on u instead of X, E <u(x_s, s, t), sg[g_hat]> (each sample's gradient
           divided by h; the normalisation kept): a diagnostic variant registered here, not in fmlab;
  lmd      LMD (the same rule, the gradient of ||g||^2);
and measures, besides W2 at 1, 2, 4, 8 steps, the error of each model's jump against the teacher's own flow (RK4,
64 steps per unit time) per gap h in {1/8, 1/4, 1/2, 1}: the RMS of (X(x, s, s + h) - Phi_T(x, s, s + h)) / h
(an average-velocity error) over
  'path'     start points x_s on the interpolation path (where every loss trains), s uniform on [0, 1 - h];
  'sampler'  the start points the h-step sampler actually visits (the model's own previous jumps from the
             evaluation noise), i.e. the jumps that k = 1/h step sampling composes.
If short gaps are trained less, the path error at h = 1/8 is large for ayf and small for ayf_u and lmd; if the
degradation came from composing maps at start points never trained (the sampler's points off the path), the
sampler error would exceed the path error for every loss alike. Results: benchmarks/results/flowmaps_ayf.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import flowmaps as zoo  # noqa: E402  (benchmarks/flowmaps.py)

from fmlab.flowmaps import flow_map, path_point  # noqa: E402
from fmlab.losses import get_loss  # noqa: E402
from fmlab.losses.batch import Batch  # noqa: E402
from fmlab.losses.flowmap_lagrangian import ayf_tangent  # noqa: E402
from fmlab.losses.registry import LossSpec, register  # noqa: E402
from fmlab.viz.loss_zoo import zoo_model  # noqa: E402

GAPS = (0.125, 0.25, 0.5, 1.0)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ayf": ("ayf_lagrangian", {}),
    "ayf_c0": ("ayf_lagrangian", {"tangent_c": 0.0}),
    "ayf_u": ("ayf_lagrangian_u", {}),
    "lmd": ("lmd", {}),
}
RESULTS = ROOT / "benchmarks" / "results" / "flowmaps_ayf.json"


def ayf_lagrangian_u_loss(model: nn.Module, batch: Batch, teacher: Any = None, tangent_c: float = 0.1,
                          **_: Any) -> tuple[Tensor, dict]:
    """AYF-LMD with the surrogate on the average velocity: E <u(x_s, s, t), sg[g / (||g|| + c)]>, g the
    Lagrangian residual d/dt X - v_T(X, t). Its gradient on u is g_hat at every gap h, where AYF-LMD's
    E <X, sg[g_hat]> gives h g_hat (X = x_s + h u). A diagnostic variant, not a published loss."""
    x_s, g, res = ayf_tangent(model, batch, teacher, tangent_c)
    u = model(x_s, batch.s, batch.t)
    return (u * g).flatten(1).mean(1).mean(), {"lagrangian": res.mean(), "n_forward": 2, "n_jvp": 1,
                                               "n_backward": 1}


_AYF = get_loss("ayf_lagrangian")
try:
    get_loss("ayf_lagrangian_u")
except ValueError:
    register(LossSpec(name="ayf_lagrangian_u", fn=ayf_lagrangian_u_loss, family=_AYF.family, setting=_AYF.setting,
                      paper="diagnostic variant of " + _AYF.paper, convention=_AYF.convention, time_inputs=2,
                      make_batch=_AYF.make_batch, defaults=dict(_AYF.defaults),
                      summary="AYF-LMD surrogate on u instead of X (benchmarks/flowmaps_ayf.py)"))


def train_variant(job: dict[str, Any]) -> dict[str, Any]:
    """zoo.train_and_eval of a variant (keeping the student's state), then the per-gap errors against the
    teacher's flow. Runs in a worker process."""
    loss, settings = VARIANTS[job["variant"]]
    record = zoo.train_and_eval({**job, "loss": loss, "loss_settings": settings, "keep_state": True})
    student = zoo_model(loss)
    student.load_state_dict(record.pop("state"))
    teacher = zoo_model("cfm")
    teacher.load_state_dict(job["teacher"])
    return {**record, "variant": job["variant"], "gap_error": gap_errors(student.eval(), teacher.eval(), job)}


@torch.no_grad()
def teacher_flow(teacher: nn.Module, x: Tensor, s: Tensor, h: float) -> Tensor:
    """Phi_T(x, s, s + h): RK4 on the teacher's velocity, ceil(64 h) steps, every sample from its own s."""
    steps = max(1, round(64 * h))
    dt = h / steps
    t = s.clone()
    for _ in range(steps):
        k1 = teacher(x, t)
        k2 = teacher(x + 0.5 * dt * k1, t + 0.5 * dt)
        k3 = teacher(x + 0.5 * dt * k2, t + 0.5 * dt)
        k4 = teacher(x + dt * k3, t + dt)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t = t + dt
    return x


@torch.no_grad()
def gap_errors(student: nn.Module, teacher: nn.Module, job: dict[str, Any]) -> dict[str, dict[str, float]]:
    """RMS of (X - Phi_T) / h per gap h at path points and at the sampler's own points (module docstring)."""
    x0, x1 = zoo._eval_sets(job["data"], job["n_eval"])
    g = torch.Generator().manual_seed(40_000)
    out: dict[str, dict[str, float]] = {"path": {}, "sampler": {}}
    for h in GAPS:
        s = torch.rand(len(x0), generator=g) * (1 - h)
        x_s = path_point(x0, x1, s)
        err = (flow_map(student, x_s, s, s + h) - teacher_flow(teacher, x_s, s, h)) / h
        out["path"][f"{h:g}"] = err.pow(2).sum(1).mean().sqrt().item()
        k = round(1 / h)  # the k-step sampler's jumps: from the model's own states at t_j = j h
        x, errs = x0.clone(), []
        for j in range(k):
            t_j = torch.full((len(x),), j * h)
            nxt = flow_map(student, x, t_j, t_j + h)
            errs.append(((nxt - teacher_flow(teacher, x, t_j, h)) / h).pow(2).sum(1).mean())
            x = nxt
        out["sampler"][f"{h:g}"] = torch.stack(errs).mean().sqrt().item()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="checkerboard,moons")
    p.add_argument("--seeds", default="0")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--n-eval", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"--variants must name some of {list(VARIANTS)}, got {v!r}")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    seeds = zoo.parse_seeds(args.seeds)
    started = time.time()
    base = {"steps": args.steps, "n_eval": args.n_eval, "coupling": "independent"}
    teachers = {(r["data"], r["seed"]): r["state"] for r in zoo.run_jobs(
        [{**base, "loss": "cfm", "data": d, "seed": s} for s in seeds for d in datasets], args.workers)}
    jobs = [{**base, "loss": VARIANTS[v][0], "variant": v, "data": d, "seed": s, "teacher": teachers[(d, s)]}
            for s in seeds for d in datasets for v in variants]
    records = _run(jobs, args.workers)
    result = {"created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": "python benchmarks/flowmaps_ayf.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "config": {**zoo.ZOO_MODEL, "steps": args.steps, "n_eval": args.n_eval, "seeds": seeds,
                         "datasets": datasets, "gaps": list(GAPS),
                         "variants": {v: {"loss": VARIANTS[v][0], "settings": VARIANTS[v][1]} for v in variants}},
              "wall_s": round(time.time() - started, 1), "runs": records}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {out} in {result['wall_s']:.0f} s")
    return result


def _run(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        return [_report(train_variant(job)) for job in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=zoo._warm_up) as pool:
        return [_report(r) for r in pool.map(train_variant, jobs)]


def _report(r: dict[str, Any]) -> dict[str, Any]:
    w2 = " ".join(f"{k}:{v:.3f}" for k, v in r["w2"].items())
    path = " ".join(f"{k}:{v:.3f}" for k, v in r["gap_error"]["path"].items())
    samp = " ".join(f"{k}:{v:.3f}" for k, v in r["gap_error"]["sampler"].items())
    print(f"  {r['variant']:7s} {r['data']:12s} seed {r['seed']}  W2 {w2} | path err {path} | sampler err {samp}",
          flush=True)
    return r


def table(result: dict[str, Any]) -> str:
    gaps = [f"{h:g}" for h in result["config"]["gaps"]]
    lines = ["| variant | data | seed | W2 1 / 2 / 4 / 8 steps | error on the path, h = " + " / ".join(gaps)
             + " | error at the sampler's points, h = " + " / ".join(gaps) + " |", "|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['variant']} | {r['data']} | {r['seed']} | "
                     + " / ".join(f"{r['w2'][k]:.3f}" for k in ("1", "2", "4", "8")) + " | "
                     + " / ".join(f"{r['gap_error']['path'][h]:.3f}" for h in gaps) + " | "
                     + " / ".join(f"{r['gap_error']['sampler'][h]:.3f}" for h in gaps) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
