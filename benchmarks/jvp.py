"""What a JVP costs on fmlab's MLPs, by method, and what every JVP loss's training step costs, in forward passes.

Unit: one forward pass of the same two-time network on the same batch with autograd on (as in training), the unit
of benchmarks/flowmaps.py and of the survey's estimates (Dieleman, "Learning the integral of a diffusion model":
a forward pass 1, its backward 2). Two networks: the loss zoo's (fmlab.viz.loss_zoo.zoo_model: 3 x 128, time
frequencies up to 10, batch 256), where per-operation overhead dominates, and a wide one (3 x 1024, batch 2048),
where arithmetic does. One thread; the timed functions run in interleaved rounds and we report the median over
rounds of (CPU time per call) / (CPU time per forward), so that load from other processes hits numerator and denominator
alike.

Parts:
- `profile`: where a JVP loss's step goes on the zoo network (torch.profiler: operator calls per step and the share
  of matrix products in the step's CPU time), with torch.func.jvp and with the MLP's own tangent pass;
- `methods`: one JVP of the network by torch.func.jvp, torch.autograd.forward_ad dual tensors, the double-backward
  trick (J v = d/dw <J^T w, v>), torch.compile of torch.func.jvp (inductor, if it compiles here) and the MLP's hand
  tangent pass (fmlab.models.tangent), each without gradients, with a backward through the value only (tangent
  detached, as MeanFlow) and with a backward through value and tangent (as EMD, LMD, TVM);
- `losses`: the step (batch + loss + backward; no optimizer step) of every loss that takes a JVP, with the JVP done
  by torch.func.jvp (the old path) and by fmlab.flowmaps.flow_map_jvp's dispatch to the model's own `jvp` (the
  default), beside the survey's estimate.

    python benchmarks/jvp.py                                  # everything, ~15 minutes on a busy 2-core machine
    python benchmarks/jvp.py --parts losses --rounds 7
    python benchmarks/jvp.py --quick                          # smoke test
    python benchmarks/jvp.py --parts losses --losses imf 'imf:aux_v_loss=False' --out results/jvp_imf.json
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.autograd.forward_ad as fwad
from torch.func import jvp

from fmlab.data import sample_toy
from fmlab.losses import get_loss
from fmlab.models import build_model
from fmlab.models.parametrisation import FlowMapModel
from fmlab.viz.loss_zoo import SURVEY_COST, ZOO_MODEL, ZOO_TIME_FREQ_MAX, flow_map_losses, needs_teacher

ROOT = Path(__file__).resolve().parent
NETWORKS = {"zoo": (ZOO_MODEL["hidden"], ZOO_MODEL["depth"], ZOO_MODEL["batch_size"]), "wide": (1024, 3, 2048)}


def network(kind: str, time_inputs: int = 2, seed: int = 0) -> torch.nn.Module:
    """The zoo's MLP (time frequencies up to ZOO_TIME_FREQ_MAX) at the size of `kind`."""
    hidden, depth, _ = NETWORKS[kind]
    torch.manual_seed(seed)
    return build_model(time_inputs=time_inputs, hidden=hidden, depth=depth, time_freq_max=ZOO_TIME_FREQ_MAX)


def inputs(batch: int, seed: int = 0) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    x, s, t = torch.randn(batch, 2, generator=g), torch.rand(batch, generator=g), torch.rand(batch, generator=g)
    return (x, s, t), (torch.randn(batch, 2, generator=g), torch.ones(batch), torch.zeros(batch))  # (v, 1, 0)


@contextlib.contextmanager
def torch_func_path() -> Iterator[None]:
    """flow_map_jvp as before the MLP had its own tangent pass: torch.func.jvp on the backbone."""
    own = FlowMapModel.jvp

    def via_torch_func(self, x, s, t, dx=None, ds=None, dt=None):
        filled = tuple(torch.zeros_like(p) if d is None else d for p, d in ((x, dx), (s, ds), (t, dt)))
        return jvp(self.backbone, (x, s, t), filled)

    FlowMapModel.jvp = via_torch_func
    try:
        yield
    finally:
        FlowMapModel.jvp = own


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """CPU seconds per call (process time: on one thread, what an idle core would take; load from other processes
    does not count, unlike wall-clock time)."""
    fn()  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def ratios(fns: dict[str, Callable[[], Any]], forward: Callable[[], Any], rounds: int, repeats: int
           ) -> dict[str, float]:
    """Median over interleaved rounds of time(fn) / time(forward)."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        f = timed(forward, 4 * repeats)
        for name, fn in fns.items():
            samples[name].append(timed(fn, repeats) / f)
    return {k: statistics.median(v) for k, v in samples.items()}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min)"


# --- methods -------------------------------------------------------------------------------------------------

def jvp_methods(model: torch.nn.Module, primals: tuple, tangents: tuple, compile_ok: bool
                ) -> dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    backbone = model.backbone

    def func():
        return jvp(backbone, primals, tangents)

    def forward_ad():
        with fwad.dual_level():
            out = backbone(*(fwad.make_dual(p, d) for p, d in zip(primals, tangents, strict=True)))
            u, du = fwad.unpack_dual(out)
        return u, du

    def double_backward():  # J v = d/dw <J^T w, v> at any w
        ps = [p.detach().requires_grad_(True) for p in primals]
        u = backbone(*ps)
        w = torch.zeros_like(u, requires_grad=True)
        vjp = torch.autograd.grad(u, ps, w, create_graph=True)
        return u, torch.autograd.grad(vjp, w, tangents, create_graph=True)[0]

    def hand():
        return model.jvp(*primals, *tangents)

    out = {"torch.func.jvp": func, "forward_ad": forward_ad, "double backward": double_backward}
    if compile_ok:
        compiled = torch.compile(lambda *a: jvp(backbone, a[:3], a[3:]))
        out["torch.compile(torch.func.jvp)"] = lambda: compiled(*primals, *tangents)
    out["hand tangent (MLP.jvp)"] = hand
    return out


def methods_part(kind: str, rounds: int, repeats: int, try_compile: bool) -> dict[str, Any]:
    model = network(kind)
    primals, tangents = inputs(NETWORKS[kind][2])
    ref_u, ref_du = jvp(model.backbone, primals, tangents)
    fns, notes = {}, {}
    compile_ok = try_compile
    if try_compile:
        try:
            jvp_methods(model, primals, tangents, True)["torch.compile(torch.func.jvp)"]()
        except Exception as e:  # noqa: BLE001 - report any compiler failure and go on without it
            compile_ok, notes["torch.compile(torch.func.jvp)"] = False, f"failed: {type(e).__name__}: {e}"[:200]
    for name, fn in jvp_methods(model, primals, tangents, compile_ok).items():
        u, du = fn()
        err = float((du.detach() - ref_du.detach()).abs().max())
        notes.setdefault(name, f"max |du - du_torch.func| = {err:.1e} (float32)")

        def nograd(fn=fn):
            with torch.no_grad():
                fn()

        def value_only(fn=fn):  # MeanFlow: the tangent under stop-gradient
            model.zero_grad(set_to_none=True)
            u, du = fn()
            (u - du.detach()).pow(2).mean().backward()

        def through_tangent(fn=fn):  # EMD, LMD, TVM: backpropagate through the tangent
            model.zero_grad(set_to_none=True)
            u, du = fn()
            (u + du).pow(2).mean().backward()

        if name != "double backward":  # it needs autograd by construction
            fns[(name, "JVP, no grad")] = nograd
        fns[(name, "JVP + backward, tangent detached")] = value_only
        fns[(name, "JVP + backward through the tangent")] = through_tangent
    for key in list(fns):
        try:
            fns[key]()
        except Exception as e:  # noqa: BLE001 - e.g. a compiler bug in one pass: report it, time the rest
            del fns[key]
            notes[f"{key[0]}, {key[1]}"] = f"failed: {type(e).__name__}: {e}"[:200]
    forward = _forward(model, primals)
    res = ratios(fns, forward, rounds, repeats)
    table: dict[str, dict[str, float]] = {}
    for (name, kind_), value in res.items():
        table.setdefault(name, {})[kind_] = round(value, 2)
    return {"network": kind, "fwd_eq": table, "notes": notes}


def _forward(model: torch.nn.Module, primals: tuple) -> Callable[[], Any]:
    return lambda: model(*primals)  # autograd on, as in training: the unit


# --- losses ---------------------------------------------------------------------------------------------------

def jvp_losses() -> list[str]:
    """The flow-map losses whose step takes a JVP (n_jvp > 0 in their diagnostics), in registry order."""
    out = []
    for name in flow_map_losses():
        step, _ = step_fn(name, "zoo", batch=16)
        if step(return_diag=True).get("n_jvp", 0):
            out.append(name)
    return out


def parse_variant(loss: str) -> tuple[str, dict[str, Any]]:
    """'imf:aux_v_loss=False' -> ('imf', {'aux_v_loss': False}): a loss with some settings changed (Python values)."""
    name, _, rest = loss.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = ast.literal_eval(value)
    return name, overrides


def step_fn(loss: str, kind: str, batch: int | None = None, seed: int = 0):
    """batch + loss + backward on moons for `loss` (a name, or a variant: see parse_variant) with the network of
    `kind` (the optimizer step is not timed)."""
    name, overrides = parse_variant(loss)
    spec = get_loss(name)
    model = network(kind, spec.time_inputs, seed)
    teacher = network(kind, 1, seed + 1).requires_grad_(False) if needs_teacher(name) else None
    settings = spec.settings({**overrides, **({"teacher": teacher} if teacher is not None else {})})
    n = batch or NETWORKS[kind][2]
    g = torch.Generator().manual_seed(seed)
    x1 = sample_toy("moons", n, generator=g)
    x0 = torch.randn(x1.shape, generator=g)

    def step(return_diag: bool = False):
        b = spec.make_batch(x0, x1, g, **settings)
        value, diag = spec.fn(model, b, **settings)
        model.zero_grad(set_to_none=True)
        value.backward()
        return diag if return_diag else None

    return step, model


def losses_part(kind: str, names: list[str], rounds: int, repeats: int) -> dict[str, Any]:
    fns: dict[tuple[str, str], Callable[[], Any]] = {}
    for name in ["cfm"] + names:
        step, _ = step_fn(name, kind)
        fns[(name, "hand")] = step

        def old(step=step):
            with torch_func_path():
                step()

        if name != "cfm":
            fns[(name, "torch.func")] = old
    model = network(kind)
    primals, _ = inputs(NETWORKS[kind][2])
    res = ratios(fns, _forward(model, primals), rounds, repeats)
    rows = {}
    for name in ["cfm"] + names:
        survey = SURVEY_COST.get(parse_variant(name)[0])
        rows[name] = {"survey": survey, "torch.func": round(res.get((name, "torch.func"), res[(name, "hand")]), 2),
                      "hand": round(res[(name, "hand")], 2)}
    return {"network": kind, "rows": rows}


def losses_markdown(zoo: dict[str, Any], wide: dict[str, Any] | None) -> str:
    lines = ["| loss | survey | zoo: torch.func.jvp | zoo: hand tangent | hand / survey | wide: torch.func.jvp | "
             "wide: hand tangent | hand / survey |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in zoo["rows"].items():
        w = (wide or {}).get("rows", {}).get(name)
        survey = r["survey"]

        def rel(x, s=survey):
            return "-" if s is None else f"{x / s:.2f}"

        wide_cells = "- | - | -" if w is None else f"{w['torch.func']:.1f} | {w['hand']:.1f} | {rel(w['hand'])}"
        lines.append(f"| {name} | {'-' if survey is None else survey} | {r['torch.func']:.1f} | {r['hand']:.1f} | "
                     f"{rel(r['hand'])} | {wide_cells} |")
    return "\n".join(lines)


# --- profile --------------------------------------------------------------------------------------------------

MATMULS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_mkldnn")


def profile_part(losses: list[str]) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name in losses:
        step, _ = step_fn(name, "zoo")
        for path in ("torch.func", "hand"):
            ctx = torch_func_path() if path == "torch.func" else contextlib.nullcontext()
            with ctx:
                step()
                step()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    step()
            events = prof.key_averages()
            calls = sum(e.count for e in events if e.key.startswith("aten::"))
            total = sum(e.self_cpu_time_total for e in events)
            mm = sum(e.self_cpu_time_total for e in events if e.key.startswith(("aten::addmm", "aten::mm",
                                                                               "aten::bmm")))
            top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
            out[f"{name} / {path}"] = {
                "aten_calls": calls, "matmul_share": round(mm / total, 3),
                "top": [(e.key, e.count, round(e.self_cpu_time_total / total, 3)) for e in top]}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["profile", "methods", "losses"],
                        choices=["profile", "methods", "losses"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per function per round (zoo)")
    parser.add_argument("--wide-rounds", type=int, default=3)
    parser.add_argument("--no-wide", action="store_true")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "jvp.json")
    parser.add_argument("--losses", nargs="+", default=None,
                        help="losses part: these losses or variants (imf 'imf:aux_v_loss=False'), not every JVP loss")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.rounds, args.repeats, args.wide_rounds, args.no_wide = 1, 2, 1, True
        args.out = args.out.with_name("jvp_quick.json")
    command = "python benchmarks/jvp.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result: dict[str, Any] = {"command": command, "torch": torch.__version__,
                              "networks": NETWORKS, "load": {"start": load()}}
    started = time.time()
    names = args.losses or jvp_losses()
    print(f"losses that take a JVP: {names}; {load()}", flush=True)
    if "profile" in args.parts:
        result["profile"] = profile_part(["meanflow", "emd"])
        print(json.dumps(result["profile"], indent=1), flush=True)
    kinds = ["zoo"] + ([] if args.no_wide else ["wide"])
    if "methods" in args.parts:
        result["methods"] = {}
        for kind in kinds:
            rounds, repeats = (args.rounds, args.repeats) if kind == "zoo" else (args.wide_rounds, 1)
            result["methods"][kind] = methods_part(kind, rounds, repeats, not args.no_compile)
            print(json.dumps(result["methods"][kind], indent=1), f"\n{load()}", flush=True)
    if "losses" in args.parts:
        result["losses"] = {}
        for kind in kinds:
            rounds, repeats = (args.rounds, args.repeats) if kind == "zoo" else (args.wide_rounds, 1)
            result["losses"][kind] = losses_part(kind, names, rounds, repeats)
            print(f"{kind} done; {load()}", flush=True)
        print(losses_markdown(result["losses"]["zoo"], result["losses"].get("wide")))
    result["load"]["end"] = load()
    result["wall_s"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
