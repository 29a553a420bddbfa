"""Which highest frequency w_max should the MLP's time embedding have? Measured on trained networks.

The MLP sees t through emb(t) = [t, sin(w_k t), cos(w_k t)], w_k log-spaced from 1 to w_max
(fmlab.models.FourierTimeEmbedding). With w_max = 200 the network can vary in t on a scale of 1/200; t lives in
[0, 1]. For each candidate w_max and seed this script measures:

- `solvers` (lab 04's network: CFM on the 8-Gaussian mixture, MLP 3 x 128, 4000 steps, lr 3e-3, batch 256):
  W2 of 100 Euler steps (n = 1000 against 1000 data points, exact), the field error E||v_theta - v*||^2 / d against
  the closed-form velocity, and the measured order of Euler, midpoint, Heun and RK4 on the trained network
  (fmlab.viz.solvers.convergence: mean error against SciPy's DOP853 at rtol 1e-10, float64, 64 noise points),
  fitted over 8, 16, 32, 64 steps and over the last doubling 32 -> 64;
- `moons` (the default MLP 4 x 256 with its default training, lr 1e-3, batch 256, 5000 steps, moons): W2 of
  100 Euler steps (n = 2000 against 2000 data points);
- `jvp` (the loss zoo's network, 3 x 128, lr 2e-3, EMA 0.995, 800 steps on the 8-Gaussian toy set; distillation
  with the exact velocity as teacher): RMS distance of the one-step map X(x0, 0, 1) to the exact flow's endpoint
  (RK4, 64 steps on the closed-form velocity; n = 600), for JVP losses whose stability the embedding decides.

    python benchmarks/time_embedding.py                      # all parts, w_max in 200 50 20 10 5, seeds 0 1 2
    python benchmarks/time_embedding.py --parts solvers --freqs 200 10 --seeds 0
    python benchmarks/time_embedding.py --quick              # a smoke test (short training)

One thread; results are appended to --out (JSON lines, one record per run) and summarised as mean +- std over
seeds (ddof 1). Runs already in --out are skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from fmlab.data import gmm_2d, sample_toy
from fmlab.flowmaps import GaussianMixtureTeacher, flow_map
from fmlab.losses import get_loss
from fmlab.metrics import noise_floor, wasserstein
from fmlab.models import build_model
from fmlab.solvers import solve
from fmlab.train import TrainConfig, Trainer
from fmlab.viz.solvers import convergence, measured_order
from fmlab.viz.training import data_fn, field_error

ROOT = Path(__file__).resolve().parent
METHODS = ("euler", "midpoint", "heun", "rk4")
JVP_LOSSES = ("meanflow", "emd", "ayf_emd", "lsd", "tvm")


def _train(config: TrainConfig, model: torch.nn.Module, runtime: dict[str, Any] | None = None,
           data: Any = None) -> Trainer:
    trainer = Trainer(config, model=model, data_fn=data, runtime_settings=runtime)
    trainer.fit(progress=False)
    return trainer


def run_solvers(w_max: float, seed: int, steps: int) -> dict[str, Any]:
    """Lab 04's network with time frequencies up to w_max."""
    gmm = gmm_2d("8modes")
    config = TrainConfig(data="8modes", loss="cfm", steps=steps, batch_size=256, hidden=128, depth=3, lr=3e-3,
                         warmup=100, log_every=max(1, steps // 10), ckpt_every=0, seed=seed, threads=1)
    torch.manual_seed(seed)
    model = build_model(hidden=128, depth=3, time_freq_max=w_max)
    ema = _train(config, model, data=data_fn("8modes")).ema.eval()
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))  # lab 04's noise and data
    data = gmm.sample(1000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        w2 = wasserstein(solve(ema, x0, steps=100, method="euler"), data)
    conv = convergence(ema, x0[:64].double(), METHODS, steps=(8, 16, 32, 64))
    return {"w2_100": w2, "field_error": field_error(ema, gmm),
            "order": {m: conv[m]["order"] for m in METHODS},
            "order_32_64": {m: measured_order(conv[m]["steps"][-2:], conv[m]["errors"][-2:]) for m in METHODS},
            "errors": {m: conv[m]["errors"] for m in METHODS}}


def run_moons(w_max: float, seed: int, steps: int) -> dict[str, Any]:
    """The default MLP and training on moons, time frequencies up to w_max."""
    config = TrainConfig(data="moons", loss="cfm", steps=steps, log_every=max(1, steps // 10), ckpt_every=0,
                         seed=seed, threads=1)
    torch.manual_seed(seed)
    ema = _train(config, build_model(time_freq_max=w_max)).ema.eval()
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    data = sample_toy("moons", 2000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return {"w2_100": wasserstein(solve(ema, x0, steps=100, method="euler"), data)}


def run_jvp(w_max: float, seed: int, steps: int, loss: str) -> dict[str, Any]:
    """A JVP loss on the zoo's network and data with time frequencies up to w_max."""
    from fmlab.viz.loss_zoo import ZOO_DATA, ZOO_TARGET, needs_teacher, zoo_config

    gmm = gmm_2d(ZOO_TARGET)
    config = zoo_config(loss, data=ZOO_DATA, steps=steps, seed=seed, log_every=max(1, steps // 10))
    config = TrainConfig(**{**config.to_dict(), "threads": 1})
    torch.manual_seed(seed)
    model = build_model(time_inputs=get_loss(loss).time_inputs, hidden=config.hidden, depth=config.depth,
                        time_freq_max=w_max)
    runtime = {"teacher": GaussianMixtureTeacher(gmm)} if needs_teacher(loss) else None
    try:
        ema = _train(config, model, runtime).ema.eval()
    except FloatingPointError:
        return {"rms_1step": math.inf, "diverged": True}
    x0 = torch.randn(600, 2, generator=torch.Generator().manual_seed(0))  # the zoo's view: noise, exact endpoints
    exact = solve(lambda x, t: gmm.velocity(x, t), x0.double(), steps=64, method="rk4").float()
    with torch.no_grad():
        end = flow_map(ema, x0, 0.0, 1.0)
    rms = float((end - exact).pow(2).sum(1).mean().sqrt())
    return {"rms_1step": rms if math.isfinite(rms) else math.inf, "diverged": not math.isfinite(rms)}


def _done(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {(r["part"], r["w_max"], r["seed"], r.get("loss")) for r in map(json.loads, path.read_text().splitlines())}


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ms(values: list[float], digits: int = 3) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return f"diverged {len(values) - len(finite)}/{len(values)}"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def summary(path: Path, freqs: list[float], floors: dict[str, float]) -> str:
    recs = _records(path)
    lines = []
    by = {}
    for r in recs:
        by.setdefault((r["part"], r["w_max"], r.get("loss")), []).append(r)
    if any(k[0] == "solvers" for k in by):
        lines += ["", f"lab 04 network (8 Gaussians, 3 x 128): W2 of 100 Euler steps (noise floor "
                      f"{floors.get('8modes', float('nan')):.3f}), field error, measured order over 8-64 steps "
                      "(last doubling 32 -> 64 in brackets); mean +- std over seeds", "",
                  "| w_max | seeds | W2 (100 Euler) | field error | Euler | midpoint | Heun | RK4 |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for w in freqs:
            rs = by.get(("solvers", w, None), [])
            if not rs:
                continue
            orders = " | ".join(f"{_ms([r['order'][m] for r in rs], 2)} ({_ms([r['order_32_64'][m] for r in rs], 2)})"
                                for m in METHODS)
            lines.append(f"| {w:g} | {len(rs)} | {_ms([r['w2_100'] for r in rs])} | "
                         f"{_ms([r['field_error'] for r in rs], 4)} | {orders} |")
    if any(k[0] == "moons" for k in by):
        lines += ["", f"default MLP (4 x 256) on moons: W2 of 100 Euler steps (noise floor "
                      f"{floors.get('moons', float('nan')):.4f})", "", "| w_max | seeds | W2 (100 Euler) |",
                  "|---:|---:|---:|"]
        for w in freqs:
            rs = by.get(("moons", w, None), [])
            if rs:
                lines.append(f"| {w:g} | {len(rs)} | {_ms([r['w2_100'] for r in rs], 4)} |")
    jvp_losses = sorted({k[2] for k in by if k[0] == "jvp"}, key=lambda n: JVP_LOSSES.index(n)
                        if n in JVP_LOSSES else 99)
    if jvp_losses:
        lines += ["", "zoo network (3 x 128, 8 Gaussians): RMS distance of the one-step map to the exact flow",
                  "", "| w_max | " + " | ".join(jvp_losses) + " |", "|---:|" + "---:|" * len(jvp_losses)]
        for w in freqs:
            cells = [_ms([r["rms_1step"] for r in by.get(("jvp", w, n), [])]) if by.get(("jvp", w, n)) else "-"
                     for n in jvp_losses]
            lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["solvers", "jvp", "moons"], choices=["solvers", "jvp", "moons"])
    parser.add_argument("--freqs", type=float, nargs="+", default=[200.0, 50.0, 20.0, 10.0, 5.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=list(JVP_LOSSES))
    parser.add_argument("--solver-steps", type=int, default=4000)
    parser.add_argument("--moons-steps", type=int, default=5000)
    parser.add_argument("--jvp-steps", type=int, default=800)
    parser.add_argument("--quick", action="store_true", help="smoke test: 60 training steps, seed 0")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "time_embedding.jsonl")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.solver_steps = args.moons_steps = args.jvp_steps = 60
        args.seeds = [0]
        args.out = args.out.with_name("time_embedding_quick.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(args.out)
    jobs = []
    for part in args.parts:
        for seed in args.seeds:
            for w in args.freqs:
                for loss in (args.losses if part == "jvp" else [None]):
                    if (part, w, seed, loss) not in done:
                        jobs.append((part, w, seed, loss))
    for part, w, seed, loss in jobs:
        start = time.process_time()
        if part == "solvers":
            result = run_solvers(w, seed, args.solver_steps)
        elif part == "moons":
            result = run_moons(w, seed, args.moons_steps)
        else:
            result = run_jvp(w, seed, args.jvp_steps, loss)
        record = {"part": part, "w_max": w, "seed": seed, "loss": loss, **result,
                  "cpu_s": round(time.process_time() - start, 1)}
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: v for k, v in record.items() if k != "errors"}), flush=True)
    floors = {"8modes": noise_floor(lambda n, generator: gmm_2d("8modes").sample(n, generator=generator), 1000)[0],
              "moons": noise_floor(lambda n, generator: sample_toy("moons", n, generator=generator), 2000)[0]}
    print(summary(args.out, args.freqs, floors))


if __name__ == "__main__":
    main()
