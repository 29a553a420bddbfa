"""How close to the data-vs-data floor do the 100-step flow-matching reference and one-step flow maps get?

    python benchmarks/flowmaps_floor.py            # every recipe, moons and checkerboard, seeds 0,1,2
    python benchmarks/flowmaps_floor.py --recipes zoo,wide-8000 --seeds 0 --workers 2

Each recipe trains one model with fmlab.train.Trainer (independent coupling, linear path; t = 0 noise, t = 1 data):
flow matching, sampled with 100 Euler steps, or a flow-map loss, sampled in one jump (fmlab.sampling.generate), from
n fixed noise points. The score is the exact
W2 (fmlab.metrics.wasserstein) against n held-out data points (the same points and noise for every recipe and seed,
as in benchmarks/flowmaps.py), divided by the noise floor: the mean W2 between two independent data samples of the
same size n (over --floor-draws pairs; its std says how much a single W2 at this n can move by chance). A ratio of 1
is a model indistinguishable from the data at this n. Lines go to stdout and --out (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmlab.data import sample_toy  # noqa: E402
from fmlab.losses import get_loss  # noqa: E402
from fmlab.metrics import noise_floor, wasserstein  # noqa: E402
from fmlab.models import build_model  # noqa: E402
from fmlab.sampling import generate  # noqa: E402
from fmlab.train import TrainConfig, Trainer  # noqa: E402
from fmlab.viz.loss_zoo import needs_teacher  # noqa: E402

# name -> TrainConfig fields (the rest: fmlab's defaults; loss 'cfm' unless named). A distillation loss (a `teacher`
# setting, e.g. PID) learns from the flow-matching model of the recipe named by "teacher", same data and seed.
RECIPES: dict[str, dict] = {
    "zoo": dict(hidden=128, depth=3, batch_size=256, lr=2e-3, warmup=100, ema_decay=0.995, steps=2000),
    "zoo-8000": dict(hidden=128, depth=3, batch_size=256, lr=2e-3, warmup=100, ema_decay=0.995, steps=8000),
    "wide-8000": dict(hidden=256, depth=4, batch_size=512, lr=1e-3, warmup=200, ema_decay=0.999, steps=8000),
    "wide-20000": dict(hidden=256, depth=4, batch_size=512, lr=1e-3, warmup=200, ema_decay=0.999, steps=20000),
    "pid-wide-8000": dict(loss="pid", teacher="wide-8000", hidden=256, depth=4, batch_size=512, lr=1e-3, warmup=200,
                          ema_decay=0.999, steps=8000),
    "esd-wide-8000": dict(loss="esd", hidden=256, depth=4, batch_size=512, lr=1e-3, warmup=200, ema_decay=0.999,
                          steps=8000),
    "lsd-wide-8000": dict(loss="lsd", hidden=256, depth=4, batch_size=512, lr=1e-3, warmup=200, ema_decay=0.999,
                          steps=8000),
}
FM_STEPS = 100


def eval_sets(data: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out data (seed 10_000) and the evaluation noise (seed 20_000), as in benchmarks/flowmaps.py."""
    x1 = sample_toy(data, n, generator=torch.Generator().manual_seed(10_000))
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(20_000))
    return x0, x1


def train(recipe_name: str, data: str, seed: int) -> tuple[torch.nn.Module, float, dict]:
    """The EMA model of `recipe_name` on `data` with `seed`, its training seconds, and {teacher recipe: (model,
    seconds)} for a distillation recipe (its teacher trained first, same data and seed)."""
    recipe = dict(RECIPES[recipe_name])
    loss, teacher = recipe.pop("loss", "cfm"), recipe.pop("teacher", None)
    runtime, teachers = {}, {}
    if needs_teacher(loss):
        if teacher is None:
            raise ValueError(f"recipe {recipe_name!r}: loss {loss!r} distills a teacher; name its recipe")
        model, seconds, _ = train(teacher, data, seed)
        teachers[teacher] = (model, seconds)
        runtime["teacher"] = model.requires_grad_(False).eval()
    config = TrainConfig(data=data, loss=loss, seed=seed, threads=1, log_every=10**6, ckpt_every=0, **recipe)
    torch.manual_seed(seed)
    model = build_model(time_inputs=get_loss(loss).time_inputs, hidden=config.hidden, depth=config.depth)
    trainer = Trainer(config, model=model, runtime_settings=runtime)
    start = time.perf_counter()
    trainer.fit(progress=False)
    return trainer.ema.eval(), time.perf_counter() - start, teachers


def score(recipe: str, model: torch.nn.Module, job: dict, train_s: float) -> dict:
    """W2 of `model` (recipe `recipe`): flow matching after FM_STEPS Euler steps, a flow map after one jump."""
    loss = RECIPES[recipe].get("loss", "cfm")
    steps = FM_STEPS if loss == "cfm" else 1
    x0, x1 = eval_sets(job["data"], job["n"])
    with torch.no_grad():
        samples = generate(model, loss, x0, steps, generator=torch.Generator().manual_seed(30_000 + steps))
    return {**job, "recipe": recipe, "loss": loss, "sample_steps": steps, "w2": wasserstein(samples, x1),
            "train_s": round(train_s, 1)}


def run(job: dict) -> list[dict]:
    """The records of one recipe, data set and seed: its teacher's (a distillation recipe) and its own."""
    torch.set_num_threads(1)
    model, train_s, teachers = train(job["recipe"], job["data"], job["seed"])
    return [*(score(name, m, job, s) for name, (m, s) in teachers.items()), score(job["recipe"], model, job, train_s)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--datasets", default="moons,checkerboard")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=2000, help="samples and held-out points (W2 at this n)")
    parser.add_argument("--floor-draws", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/flowmaps_floor.jsonl")
    args = parser.parse_args(argv)
    recipes, datasets = args.recipes.split(","), args.datasets.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown {unknown}; allowed: {list(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    floors = {}
    for data in datasets:
        floors[data] = noise_floor(partial(sample_toy, data), args.n, repeats=args.floor_draws)
        print(f"# floor {data} n={args.n}: {floors[data][0]:.4f} +- {floors[data][1]:.4f} "
              f"({args.floor_draws} draws)", flush=True)
    taught = {RECIPES[r].get("teacher") for r in recipes}  # trained (and scored) inside their students' jobs
    recipes += [t for t in taught if t and t not in recipes]
    jobs = [{"recipe": r, "data": d, "seed": s, "n": args.n} for r in recipes if r not in taught
            for d in datasets for s in seeds]
    records = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.workers) as pool, out.open("a") as sink:
        for record in (r for records_of_job in pool.map(run, jobs) for r in records_of_job):
            record["floor"], record["floor_std"] = floors[record["data"]]
            record["ratio"] = record["w2"] / record["floor"]
            record["machine"] = f"{platform.machine()}, torch {torch.__version__}"
            records.append(record)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            print(f"{record['recipe']:<14} {record['data']:<13} seed {record['seed']}, "
                  f"{record['sample_steps']:>3} steps: W2 {record['w2']:.4f} = "
                  f"{record['ratio']:.2f}x floor ({record['train_s']:.0f} s)", flush=True)
    print("\n| recipe | data | sampling steps | W2 | / floor | seeds |\n|---|---|---:|---:|---:|---:|")
    for r in recipes:
        for d in datasets:
            w = [x["w2"] for x in records if x["recipe"] == r and x["data"] == d]
            sd = statistics.stdev(w) if len(w) > 1 else 0.0
            steps = FM_STEPS if RECIPES[r].get("loss", "cfm") == "cfm" else 1
            mean = statistics.mean(w)
            print(f"| {r} | {d} | {steps} | {mean:.4f} ± {sd:.4f} | {mean / floors[d][0]:.2f} | {len(w)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
