"""Training-step throughput of fmlab's CFM, measured side by side in one run.

1. fmlab's Trainer step (independent coupling) against a hand-written plain-PyTorch loop doing the same
   work (same MLP, batch, data sampler, loss, Adam, clipping, LR schedule, EMA): the abstraction's cost.
2. fmlab's OT-CFM at batch 256 against torchcfm's ExactOptimalTransportConditionalFlowMatcher with the
   same model and optimiser, and OT-CFM's cost relative to independent CFM.

Methods are timed in interleaved rounds (A, B, C, A, B, C, ...) so that load from other processes hits
all of them alike; we report the median step time over rounds and the ratios.

    python benchmarks/cfm.py                 # ~1-2 minutes on 2 cores
    python benchmarks/cfm.py --rounds 3      # quicker, noisier

torchcfm is optional: `pip install --no-deps torchcfm` (its own dependencies pull torchvision and with
it a CUDA torch; the matcher we time needs only torch, numpy and POT). Without it that row is skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from fmlab.data import sample_toy
from fmlab.train import TrainConfig, Trainer, ema_decay_at, ema_update, lr_schedule


def plain_loop(batch: int, hidden: int, depth: int, seed: int = 0) -> Callable[[], None]:
    """The same step written by hand: no registry, no coupling layer, no Batch."""
    trainer = Trainer(TrainConfig(steps=10**6, batch_size=batch, hidden=hidden, depth=depth, seed=seed))
    model, ema, opt = trainer.model, trainer.ema, trainer.optimizer  # same module and Adam
    g = torch.Generator().manual_seed(seed)
    step = [0]

    def run() -> None:
        x1 = sample_toy("moons", batch, g)
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(batch, generator=g)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        loss = (model(x_t, t) - (x1 - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = lr_schedule(step[0], 1e-3, 200, 10**6)
        opt.step()
        ema_update(ema, model, ema_decay_at(step[0], 0.999))
        step[0] += 1

    return run


def fmlab_step(batch: int, hidden: int, depth: int, coupling: str) -> Callable[[], None]:
    trainer = Trainer(TrainConfig(steps=10**6, batch_size=batch, hidden=hidden, depth=depth, coupling=coupling))
    return lambda: trainer.train_step()


def torchcfm_step(batch: int, hidden: int, depth: int) -> Callable[[], None] | None:
    try:
        from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher
    except ImportError:
        return None
    trainer = Trainer(TrainConfig(steps=10**6, batch_size=batch, hidden=hidden, depth=depth))
    model, opt = trainer.model, trainer.optimizer
    matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
    g = torch.Generator().manual_seed(0)

    def run() -> None:
        x1 = sample_toy("moons", batch, g)
        x0 = torch.randn(x1.shape, generator=g)
        t, x_t, u_t = matcher.sample_location_and_conditional_flow(x0, x1)
        loss = (model(x_t, t) - u_t).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def time_steps(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps-per-round", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (args.batch, args.hidden, args.depth)
    methods = {"plain PyTorch loop": plain_loop(*shape), "fmlab CFM (independent)": fmlab_step(*shape, "independent"),
               "fmlab OT-CFM": fmlab_step(*shape, "ot")}
    tcfm = torchcfm_step(*shape)
    if tcfm is not None:
        methods["torchcfm ExactOT-CFM"] = tcfm
    for fn in methods.values():  # warm up
        time_steps(fn, 10)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            times[name].append(time_steps(fn, args.steps_per_round))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"batch {args.batch}, MLP {args.hidden}x{args.depth}, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds of {args.steps_per_round} steps; median ms/step:")
    for name, t in med.items():
        print(f"  {name:28s} {1e3 * t:8.3f} ms   {1 / t:8.1f} steps/s")
    print("ratios:")
    print(f"  fmlab CFM / plain loop step time      {med['fmlab CFM (independent)'] / med['plain PyTorch loop']:.3f}"
          "   (abstraction overhead; target < 1.05)")
    print(f"  fmlab OT-CFM / fmlab CFM step time    {med['fmlab OT-CFM'] / med['fmlab CFM (independent)']:.3f}"
          "   (cost of exact minibatch OT)")
    if tcfm is not None:
        print(f"  fmlab OT-CFM throughput / torchcfm    {med['torchcfm ExactOT-CFM'] / med['fmlab OT-CFM']:.2f}x"
              "   (target >= 5x)")
    else:
        print("  torchcfm not installed: `pip install --no-deps torchcfm` to add that comparison")


if __name__ == "__main__":
    main()
