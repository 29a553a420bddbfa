"""`python -m fmlab ...`: list losses, train a run, sample from it, evaluate it.

    python -m fmlab losses
    python -m fmlab train --data moons --loss cfm --coupling ot --steps 15000 --seed 0 --out runs/moons-ot
    python -m fmlab sample runs/moons-ot --n 2000 --steps 100 --solver euler --out samples.npy
    python -m fmlab eval runs/moons-ot --n 2000 --steps 1,2,4,8,100
    python -m fmlab train --data 8modes_halves --cond --p-uncond 0.2 --steps 8000 --out runs/halves-cond
    python -m fmlab sample runs/halves-cond --label 0 --guidance 3 --n 2000 --out class0_w3.npy
    python -m fmlab prewarm 05 10 --jobs 4     # train what labs 05 and 10 can ask for (default: every lab)
    python -m fmlab cache info                 # where the labs' trained results are kept; `cache clear` empties it

Time runs from noise (t = 0) to data (t = 1); sampling solves the EMA model's ODE forward in t.
Bad input ends with a message naming the parameter and what is allowed, exit code 2, and no file written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .checks import check_choice

__all__ = ["OPTIONS", "main", "build_parser", "cmd_losses", "cmd_train", "cmd_sample", "cmd_eval", "cmd_export",
           "cmd_prewarm", "cmd_cache"]

OPTIONS = ("loss", "coupling", "coupling_reg", "steps", "batch_size", "lr", "warmup", "lr_schedule", "optimizer",
           "weight_decay", "ema_decay", "grad_clip", "seed", "log_every", "ckpt_every")  # in the namespace if given


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1 such as 1,2,4,8,100, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE parsed as JSON where it can be (numbers, true/false/null, lists), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. time_sampler=logit_normal), got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fmlab", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("losses", help="list the registered losses", description="Table of every registered loss: "
                       "name, family, setting, paper and the paper's time convention mapped onto ours.")
    p.add_argument("--family", default=None, help="only this family (e.g. 'flow matching')")

    p = sub.add_parser("train", help="train a run", description="Train a model on a 2D toy set; writes "
                       "OUT/config.json, OUT/metrics.jsonl and OUT/ckpt.pt (atomically).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from .train import TrainConfig  # its defaults are the CLI's defaults

    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    p.add_argument("--data", default=d["data"], help="2D data set (see fmlab.data.DATA_NAMES)")

    def option(flag: str, help: str = "", **kwargs: object) -> None:
        """A training option whose default is TrainConfig's, stated in the help. It stays out of the namespace
        unless given (argparse.SUPPRESS), so that an image --config keeps its own value for anything not given."""
        name = flag[2:].replace("-", "_")
        p.add_argument(flag, default=argparse.SUPPRESS, help=f"{help} (default: {d[name]})".lstrip(), **kwargs)

    option("--loss", "loss name (see `python -m fmlab losses`)")
    option("--coupling", "independent, ot, sinkhorn or sinkhorn_device (fmlab.couplings)")
    option("--coupling-reg", "Sinkhorn regularisation (relative to the mean cost)", type=float)
    p.add_argument("--prediction", default=d["prediction"], help="model head (None: the loss's own)")
    option("--steps", type=int)
    option("--batch-size", type=int)
    option("--lr", "peak learning rate", type=float)
    option("--warmup", "linear warmup steps", type=int)
    option("--lr-schedule", "after warmup: cosine (decay to 0) or constant")
    option("--optimizer", "adamw or adam")
    option("--weight-decay", type=float)
    option("--ema-decay", type=float)
    option("--grad-clip", "max gradient norm, 0 disables", type=float)
    p.add_argument("--hidden", type=int, default=d["hidden"], help="MLP width")
    p.add_argument("--depth", type=int, default=d["depth"], help="MLP hidden layers")
    option("--seed", type=int)
    p.add_argument("--device", default=d["device"], help="cpu, cuda, cuda:N, mps (None: the best available)")
    p.add_argument("--threads", type=int, default=d["threads"], help="CPU threads (None: max(1, min(4, cores // 2)) "
                   "for toy runs, every physical core for image runs)")
    p.add_argument("--coupling-workers", type=int, default=1, help="threads that solve the OT / Sinkhorn pairing of "
                   "the next batches while the model trains (fmlab.prefetch; never changes a result)")
    option("--log-every", type=int)
    option("--ckpt-every", "0: checkpoint only at the end", type=int)
    p.add_argument("--cond", action="store_true", help="train a class-conditional model on a labelled data set "
                   "(toy: moons, 8gaussians, spirals, circles, 8modes, 8modes_halves; images: an attribute, see "
                   "--attribute) with label dropout --p-uncond, for classifier-free guidance")
    p.add_argument("--p-uncond", type=float, default=d["p_uncond"], help="with --cond: probability of replacing a "
                   "training label by the null label (trains the unconditional field too)")
    p.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="a loss setting, repeatable (e.g. --set time_sampler=logit_normal)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its checkpoint, with its saved "
                   "settings (only --device, --threads, --coupling-workers and --no-progress apply)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, text in (("sample", "draw samples from a run's EMA model and save them as a NumPy array [n, d]"),
                       ("eval", "W1/W2/W3 of a run's samples against fresh data at each step count, "
                                "and the data-against-data noise floor at the same n")):
        p = sub.add_parser(name, help=text.split(" and ")[0], description=text + ".",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("run", help="run directory (or its ckpt.pt)")
        p.add_argument("--n", type=_positive_int, default=2000, help="number of samples")
        p.add_argument("--solver", default=None,
                       help="default: the sampler the run's loss trained for (Euler for velocity losses, flow-map "
                            "jumps, consistency sampling for CT/CD/FACM, one jump from the noise for PID/FreeFlow); "
                            "or an ODE solver of fmlab.solvers.SOLVERS (euler, midpoint, heun, rk4) where the "
                            "loss allows it (fmlab.sampling.methods_for)")
        p.add_argument("--seed", type=int, default=0, help="seed of the noise x0 (and of the data in eval)")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (None: the best available)")
        p.add_argument("--label", type=int, default=None, help="conditional runs: sample this class (default: "
                       "every class in turn" + (")" if name == "sample" else "; eval: classes drawn like the data)"))
        p.add_argument("--guidance", type=float, default=None, help="conditional runs: classifier-free guidance "
                       "scale w of v_u + w (v_c - v_u) (default 1: the conditional model; 0: the unconditional one)")
        if name == "sample":
            p.add_argument("--steps", type=_positive_int, default=100, help="solver steps")
            p.add_argument("--out", required=True, help="output .npy file")
        else:
            p.add_argument("--steps", type=_int_list, default="1,2,4,8,100", help="comma-separated step counts")
            p.add_argument("--floor-repeats", type=_positive_int, default=3,
                           help="independent data pairs averaged for the noise floor")
    p = sub.add_parser("prewarm", help="train every configuration the labs' controls can request",
                       description="Train, once, every configuration the named labs' controls can request (default: "
                       "every lab) into the disk cache, so that a fresh kernel answers every control at once. Full "
                       "mode unless --fast or FMLAB_FAST=1 (the two modes have separate entries).")
    p.add_argument("labs", nargs="*", metavar="LAB", help="lab numbers, e.g. 05 10 (see fmlab.prewarm.LABS)")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes, one configuration each (default: the physical CPU cores)")
    p.add_argument("--fast", action="store_true", help="the labs' fast-mode sizes (as FMLAB_FAST=1)")
    p = sub.add_parser("cache", help="show or clear the disk cache of the labs' trained results",
                       description="The labs' trained results live on disk (fmlab.diskcache): in $FMLAB_CACHE if "
                       "set (FMLAB_CACHE=off disables it), else the user cache directory.")
    p.add_argument("action", choices=["info", "clear"], help="info: where and how much; clear: delete every entry")
    from .cli_images import register_image_cli  # image runs: train --config celeba64, prepare, image sample/eval

    register_image_cli(sub)
    p = sub.add_parser("export", help="execute the labs and write a static HTML site (fmlab.export)",
                       description="Execute every lab (or those named) headless and write one HTML page per lab, "
                       "index.html and plotly.min.js into OUT: the labs with their figures, readable offline.")
    p.add_argument("labs", nargs="*", help="labs to export, e.g. 01_paths (default: all)")
    p.add_argument("--out", default="site", help="output folder")
    p.add_argument("--full", action="store_true", help="the full lessons (default: fast mode, FMLAB_FAST=1)")
    p.add_argument("--labs-dir", default="labs", help="the folder of the lab notebooks")
    p.add_argument("--jobs", type=int, default=1, help="labs executed at once, each in its own kernel (default 1)")
    return parser


# --- commands ---------------------------------------------------------------------------------------

def cmd_losses(args: argparse.Namespace) -> int:
    from .losses import list_losses

    rows = [(s.name, s.family, s.setting, s.paper, s.convention) for s in list_losses(args.family)]
    if not rows:
        raise ValueError(f"family {args.family!r} has no losses; families: {sorted({s.family for s in list_losses()})}")
    header = ("name", "family", "setting", "paper", "time convention")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, tuple("-" * len(h) for h in header), *rows]:
        print("  ".join([c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]).rstrip())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import CKPT_NAME, TrainConfig, Trainer

    out = Path(args.out)
    if args.resume:
        if not (out / CKPT_NAME).is_file():
            raise ValueError(f"--resume: no checkpoint {str(out / CKPT_NAME)!r} to continue from")
        trainer = Trainer.resume(out, device=args.device, threads=args.threads, coupling_workers=args.coupling_workers)
    else:
        if (out / CKPT_NAME).exists() and not args.overwrite:
            raise ValueError(f"--out {str(out)!r} already holds a run; pass --resume to continue it, "
                             f"--overwrite to replace it, or choose another --out")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a directory")
        settings = dict(args.settings)
        n_classes = 0
        if args.cond:
            from .data.labelled import labelled_data

            n_classes = labelled_data(args.data)[1]  # ValueError naming the labelled sets
        given = {name: getattr(args, name) for name in OPTIONS if hasattr(args, name)}  # the rest: TrainConfig's
        config = TrainConfig(
            data=args.data, prediction=args.prediction, hidden=args.hidden, depth=args.depth, device=args.device,
            threads=args.threads, out=str(out), loss_settings=settings, n_classes=n_classes, p_uncond=args.p_uncond,
            **given)
        trainer = Trainer(config, coupling_workers=args.coupling_workers)  # every check runs first
    log = trainer.fit(progress=not args.no_progress)
    last = log[-1] if log else {}
    print(f"trained {trainer.step} steps on {trainer.device} in {trainer.elapsed:.1f} s; "
          f"final loss {last.get('loss', float('nan')):.4f}; run saved in {out}")
    return 0


def _check_solver(name: str | None) -> None:
    from .sampling import sample_methods

    if name is not None:
        check_choice(name, "--solver", sample_methods())


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import atomic_write
    from .runs import sample_run

    _check_solver(args.solver)
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a file name such as samples.npy")
    x = sample_run(args.run, n=args.n, steps=args.steps, method=args.solver, seed=args.seed, device=args.device,
                   label=args.label, guidance=args.guidance)
    atomic_write(out, lambda f: np.save(f, x.numpy()))
    print(f"saved {tuple(x.shape)} samples ({args.steps} steps, {args.solver or 'the loss sampler'}) to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from .losses import get_loss
    from .metrics import wasserstein
    from .runs import load_run
    from .sampling import generate

    _check_solver(args.solver)
    model, config = load_run(args.run, args.device)
    data_fn, labels, guided = _eval_data(config, args)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(args.seed)
    data = data_fn(args.n, g)  # the reference sample x1 ~ data
    x0 = torch.randn(args.n, model.config["dim"], generator=g)  # one noise draw shared by every step count
    if labels is not None:
        labels = labels(args.n, g).to(device)
    ps = (1, 2, 3)
    solver = args.solver or get_loss(config.loss).sampler
    print(f"run {args.run}: {config.loss}/{config.coupling} on {config.data}, n={args.n}, solver={solver}" + guided)
    for steps in args.steps:
        guidance = None if labels is None else (1.0 if args.guidance is None else args.guidance)
        x = generate(model, config.loss, x0.to(device), steps, args.solver, generator=g, labels=labels,
                     guidance=guidance).cpu()
        values = "  ".join(f"W{p}={wasserstein(x, data, p):.4f}" for p in ps)
        print(f"steps={steps:<4d} {values}")
    floors = [[wasserstein(data_fn(args.n, g), data_fn(args.n, g), p) for p in ps] for _ in range(args.floor_repeats)]
    mean = torch.tensor(floors, dtype=torch.float64).mean(0).tolist()
    values = "  ".join(f"W{p}={m:.4f}" for p, m in zip(ps, mean, strict=True))
    print(f"floor      {values}  (data vs data, n={args.n}, mean of {args.floor_repeats})")
    return 0


def _eval_data(config, args: argparse.Namespace):
    """(data_fn(n, g) -> reference x1, labels_fn(n, g) -> labels to generate or None, a note for the header).

    Conditional runs: with --label c the reference is class c; without, the generated labels come from an
    independent draw of the data's labels, so both samples carry multinomial class counts like the floor's."""
    from .data import data_sampler

    if not config.n_classes:
        if args.label is not None or args.guidance is not None:
            raise ValueError(f"run {args.run!r} is unconditional (trained without --cond): --label and --guidance "
                             f"need a conditional run")
        return data_sampler(config.data), None, ""
    import torch

    from .data.labelled import class_data, labelled_data

    fn, _ = labelled_data(config.data)
    w = 1.0 if args.guidance is None else args.guidance
    if args.label is not None:
        c = args.label
        return (lambda n, g: class_data(config.data, n, c, g)), (lambda n, g: torch.full((n,), c)), \
            f", class {c}, guidance w={w:g}"
    return (lambda n, g: fn(n, g)[0]), (lambda n, g: fn(n, g)[1]), f", classes as in the data, guidance w={w:g}"


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_labs

    pages = export_labs(args.out, args.labs, fast=not args.full, labs_dir=Path(args.labs_dir), jobs=args.jobs)
    print(f"wrote {len(pages)} lab pages and index.html to {args.out} (open {Path(args.out) / 'index.html'})")
    return 0


def cmd_prewarm(args: argparse.Namespace) -> int:
    from .prewarm import format_report, prewarm

    report = prewarm(args.labs, jobs=args.jobs, fast=True if args.fast else None)
    print(format_report(report))
    return 1 if report["errors"] else 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .diskcache import clear_disk, disk_info

    if args.action == "clear":
        print(f"removed {clear_disk()} entries from {disk_info()['path']}")
        return 0
    info = disk_info()
    if not info["enabled"]:
        print("disk cache: off (FMLAB_CACHE=off); trained results live in each kernel's memory only")
    else:
        print(f"disk cache: {info['path']}\nentries: {info['entries']} ({info['bytes'] / 2**20:.1f} MiB)")
    return 0


COMMANDS = {"losses": cmd_losses, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "export": cmd_export,
            "prewarm": cmd_prewarm, "cache": cmd_cache}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input, with a message naming the parameter)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on malformed arguments
    try:
        code = args.image_dispatch(args) if hasattr(args, "image_dispatch") else None  # None: not an image run
        return code if code is not None else COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted (a train run continues from its last checkpoint "
              "with --resume)", file=sys.stderr)
        return 130
