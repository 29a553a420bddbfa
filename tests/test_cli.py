import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fmlab.checkpoint import load_checkpoint
from fmlab.cli import main
from fmlab.losses import list_losses

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "150", "--hidden", "32", "--depth", "2", "--batch-size", "64", "--threads", "1",
        "--warmup", "10", "--lr", "3e-3", "--log-every", "50", "--ckpt-every", "100", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "moons-ot"
    assert main(["train", "--data", "moons", "--loss", "cfm", "--coupling", "ot", "--seed", "0", "--out", str(out),
                 *TINY]) == 0
    return out


def test_train_writes_a_run(run_dir):
    assert sorted(p.name for p in run_dir.iterdir()) == ["ckpt.pt", "config.json", "metrics.jsonl"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3  # steps 50, 100, 150


def test_sample_saves_numpy_array(run_dir, tmp_path, capsys):
    out = tmp_path / "samples.npy"
    assert main(["sample", str(run_dir), "--n", "123", "--steps", "5", "--solver", "heun", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (123, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    assert "(123, 2)" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["samples.npy"]


def test_eval_prints_each_step_count_and_the_floor(run_dir, capsys):
    assert main(["eval", str(run_dir), "--n", "200", "--steps", "1,4", "--floor-repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"steps=1", "steps=4", "floor"}
    values = {k: [float(t.split("=")[1]) for t in v.split() if t.startswith("W")] for k, v in rows.items()}
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in values.values())
    assert all(v[0] <= v[1] + 1e-9 <= v[2] + 2e-9 for v in values.values())  # W1 <= W2 <= W3
    assert "n=200" in rows["floor"]


def test_losses_table_lists_every_loss(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["name", "family", "setting", "paper"] and "time convention" in out[0]
    names = {line.split()[0] for line in out[2:]}
    assert names == {s.name for s in list_losses()}


def test_python_dash_m_entry_point():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "fmlab", "losses", "--family", "flow matching"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cfm" in proc.stdout


@pytest.mark.parametrize("command", ["losses", "train", "sample", "eval"])
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [
    (["--coupling", "greedy"], "coupling must be one of"),
    (["--loss", "nope"], "loss must be one of"),
    (["--data", "mnist"], "data must be one of"),
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--ema-decay", "1.5"], "ema_decay"),
    (["--device", "tpu"], "device"),
    (["--set", "bogus=1"], "bogus"),
    (["--loss", "reflow"], "teacher"),  # fails at the first step, still nothing on disk
    (["--coupling-workers", "0"], "coupling_workers must be an integer >= 1"),
])
def test_bad_train_input_exits_2_and_writes_nothing(tmp_path, capsys, args, match):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert re.search(match, err), err
    assert not out.exists()


def test_existing_run_needs_resume_or_overwrite(run_dir, capsys):
    before = (run_dir / "ckpt.pt").read_bytes()
    assert main(["train", "--out", str(run_dir), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run_dir / "ckpt.pt").read_bytes() == before
    assert main(["train", "--out", str(run_dir), "--resume", "--no-progress"]) == 0  # finished: nothing to do
    assert (run_dir / "ckpt.pt").read_bytes() == before


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("args, match", [
    (["--solver", "rk45"], "solver must be one of"),
    (["--steps", "0"], "steps: expected an integer >= 1"),
    (["--n", "-3"], "n: expected an integer >= 1"),
])
def test_bad_sample_input(run_dir, tmp_path, capsys, args, match):
    out = tmp_path / "s.npy"
    try:
        code = main(["sample", str(run_dir), "--out", str(out), *args])
    except SystemExit as exc:  # argparse's own type errors
        code = exc.code
    assert code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_bad_eval_and_missing_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path), "--steps", "1,x"])
    assert exc.value.code == 2 and "comma-separated integers" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "absent")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "s.npy")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_overwrite_replaces_the_run(tmp_path):
    out = tmp_path / "run"
    small = [*TINY, "--steps", "6", "--log-every", "3", "--ckpt-every", "0"]
    assert main(["train", "--out", str(out), *small]) == 0
    assert main(["train", "--out", str(out), *small, "--seed", "5", "--steps", "3", "--overwrite"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 5 and config["steps"] == 3
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [3]
    assert load_checkpoint(out / "ckpt.pt")["step"] == 3


def test_a_given_option_overrides_an_image_config_even_at_the_toy_default(monkeypatch, tmp_path):
    """`--ema-decay 0.999` equals TrainConfig's default, yet with `--config faces64` (ema_decay 0.9999) it must win:
    an option given on the command line always overrides, an option not given keeps the image config's value."""
    from fmlab import cli_images as images
    from fmlab.cli import OPTIONS, build_parser
    from fmlab.train import TrainConfig
    from fmlab.train_images import CONFIGS

    seen = {}

    class Stop(images.ImageTrainer):
        def __init__(self, config, dist=None):
            seen["config"] = config
            raise ZeroDivisionError

    monkeypatch.setattr(images, "ImageTrainer", Stop)
    monkeypatch.setattr(images, "cpu_warning", lambda config, threads: None)
    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(ZeroDivisionError):
        main(["train", "--config", "faces64", "--ema-decay", str(default["ema_decay"]), "--out", str(tmp_path / "r")])
    config = seen["config"]
    assert config.ema_decay == default["ema_decay"] != CONFIGS["faces64"]["ema_decay"]
    assert config.lr == CONFIGS["faces64"]["lr"] and config.steps == CONFIGS["faces64"]["steps"]  # not given: kept
    args = build_parser().parse_args(["train", "--out", "x"])
    assert not any(hasattr(args, name) for name in OPTIONS)  # absent until given
    assert "(default: 0.999)" in " ".join(a.help for a in build_parser()._subparsers._group_actions[0]
                                          .choices["train"]._actions if a.dest == "ema_decay")


def test_coupling_workers_change_nothing_but_speed(tmp_path):
    small = [*TINY, "--steps", "6", "--log-every", "3", "--ckpt-every", "0", "--coupling", "ot"]
    assert main(["train", "--out", str(tmp_path / "one"), *small]) == 0
    assert main(["train", "--out", str(tmp_path / "three"), *small, "--coupling-workers", "3"]) == 0
    one, three = (load_checkpoint(tmp_path / name / "ckpt.pt")["model"] for name in ("one", "three"))
    assert all(torch.equal(one[k], three[k]) for k in one)


def test_export_parser_takes_labs_and_jobs():
    from fmlab.cli import build_parser

    args = build_parser().parse_args(["export", "01_paths", "05_couplings", "--jobs", "2", "--full"])
    assert args.labs == ["01_paths", "05_couplings"] and args.jobs == 2 and args.full
    assert build_parser().parse_args(["export"]).jobs == 1
