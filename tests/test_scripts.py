"""The README's first command, `bash scripts/lab.sh`, starts JupyterLab: as root and as a normal user.

Each test starts the script on a free port with a known token, waits until the server answers `/api/status`,
then stops it. As root (containers, CI) the script must add `--allow-root` itself; the normal-user case runs the
same script as `nobody` through `setpriv` when the test runs as root, or as the current user otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "fmlab-test-token"
START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _installed_venv() -> bool:
    """The script reuses .venv when its stamp matches; without one it would install (minutes, network)."""
    return (ROOT / ".venv" / ".fmlab-installed").exists() or Path(sys.prefix) == ROOT / ".venv"


def _start(prefix: list[str], home: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "VIRTUAL_ENV")}
    env.update(HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_DATA_DIR=str(home / "data"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    cmd = [*prefix, "bash", str(ROOT / "scripts" / "lab.sh"), f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={TOKEN}", "--ServerApp.port_retries=0"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for_server(proc: subprocess.Popen, port: int) -> dict:
    url = f"http://127.0.0.1:{port}/api/status?token={TOKEN}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"scripts/lab.sh exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer on port {port} within {START_TIMEOUT_S} s")


def _stop(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def _run_lab(prefix: list[str], home: Path) -> str:
    port = _free_port()
    proc = _start(prefix, home, port)
    try:
        status = _wait_for_server(proc, port)
    finally:
        out = _stop(proc)
    assert "started" in status, status
    return out


pytestmark = pytest.mark.skipif(not _installed_venv(), reason="needs the .venv that scripts/test.sh installs")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="run as root to check the root case")
def test_lab_script_starts_jupyterlab_as_root(tmp_path):
    out = _run_lab([], tmp_path)
    assert "--allow-root" in out and "no browser is opened" in out, out


def test_lab_script_starts_jupyterlab_as_a_normal_user(tmp_path):
    if os.name == "posix" and os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("setpriv (util-linux) is needed to drop root for this test")
        # uid nobody, so not root to JupyterLab; the ambient capability only lets it enter directories it could not
        # (containers often keep the venv's base interpreter under /root, mode 700)
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=+dac_read_search",
                  "--ambient-caps=+dac_read_search", "--"]
        if subprocess.run([*prefix, "bash", "-c", f"cd {ROOT} && .venv/bin/python -c 'import fmlab'"],
                          check=False, capture_output=True).returncode:
            pytest.skip("the user nobody cannot run this checkout's .venv")
        tmp_path.chmod(0o777)
    else:
        prefix = []
    out = _run_lab(prefix, tmp_path)
    assert "--allow-root" not in out, out


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    """scripts/gpu_check.py, the one GPU check, runs end to end at tiny sizes on the CPU (so it is known to work
    before a GPU is lent) and writes its JSON and Markdown table."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and {r["loss"] for r in result["images"]} == {"cfm", "meanflow"}
    assert all(r["images_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in result["images"])
    assert result["torchrun"]["returncode"] == 0 and result["torchrun"]["summary"].startswith("trained 2 steps")
    assert result["ot"]["ot_over_cfm"] > 0 and result["plan"]["kind"] == "fast" and result["plan"]["steps"] >= 1
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| tiny | meanflow | off | 2 |" in table and "lab 13's plan: fast" in table
    with pytest.raises(SystemExit):  # a full check needs CUDA
        gpu_check.main(["--out", str(tmp_path), "--device", "cpu"])


def _script(name):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "scripts"))


@pytest.mark.parametrize("loss", ["cfm", "x1_prediction", "anchored_consistency", "meanflow"])
def test_lab13_long_run_trains_the_labs_configuration_through_the_cli(loss, monkeypatch, tmp_path):
    """scripts/lab13_long_run.py trains through `python -m fmlab train`: the CLI must rebuild lab 13's config (the
    plan's preset, size, batch, lr, EMA, warmup, ...), except what the script changes on purpose (logging, grids)."""
    import dataclasses

    from fmlab import cli_images as images
    from fmlab.cli import main

    long_run = _script("lab13_long_run")
    from fmlab.images import LabPlan

    plan = LabPlan(kind="cpu", device="cpu", data="faces", data_root=None, preset="tiny", image_size=16,
                   batch_size=32, lr=2e-3, budget_s=30.0, images_per_s=100.0, steps=300, n_eval=64)
    seen = {}

    class Stop(images.ImageTrainer):
        def __init__(self, config, dist=None):
            seen["config"] = config
            raise KeyError("stop")

    monkeypatch.setattr(images, "ImageTrainer", Stop)
    monkeypatch.setattr(images, "cpu_warning", lambda config, threads: None)
    with pytest.raises(KeyError):
        main(long_run.train_argv(plan, loss, tmp_path / loss))
    want = plan.config(loss)
    differ = {f.name for f in dataclasses.fields(want) if getattr(seen["config"], f.name) != getattr(want, f.name)}
    assert differ == {"log_every", "sample_every", "sample_n", "out"}


def test_lab13_long_run_artefacts_load_and_render(tmp_path):
    from fmlab.image_grid import make_grid, save_png
    from fmlab.viz import images as V

    long_run = _script("lab13_long_run")
    assert V.load_long_run(tmp_path) is None
    runs = {"field (cfm)": {"loss": "cfm", "steps": 5, "minutes": 1.5}}
    meta = {"command": "python scripts/lab13_long_run.py --minutes 1", "date": "2026-12-03", "device": "cpu",
            "plan": {"eval_steps": [1, 50]}, "runs": runs}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "scores.json").write_text(json.dumps([{"model": "field (cfm)", "steps": 1, "name": "SWD-pixels",
                                                        "value": 0.3, "n": 8, "note": ""}]))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    (tmp_path / "loss_curves.json").write_text(json.dumps({"field (cfm)": long_run.loss_curve(run)}))
    grid = make_grid(np.full((4, 8, 8, 3), 200, np.uint8), 2)
    for k in (1, 50):
        save_png(tmp_path / f"grid_cfm_{k}.png", grid)
    artefacts = V.load_long_run(tmp_path)
    assert artefacts["curves"] == {"field (cfm)": [[1, 2.0], [2, 1.5]]}
    np.testing.assert_array_equal(artefacts["grids"]["field (cfm)"][50][0], grid)
    fig = V.render_long_run(artefacts)
    assert "--minutes 1" in fig.layout.title.text and "2 min in all" in fig.layout.title.text and len(fig.data) == 2


def test_lab13_long_run_no_train_samples_the_runs_again_to_the_same_artefacts(monkeypatch, tmp_path):
    """`--no-train` re-samples and re-scores the runs in --runs without training: the same artefacts (fixed seeds),
    and meta.json keeps the command, date and minutes of the run that trained."""
    from fmlab.cli import main as cli_main
    from fmlab.images import LabPlan

    long_run = _script("lab13_long_run")
    plan = LabPlan(kind="cpu", device="cpu", data="faces", data_root=None, preset="tiny", image_size=8,
                   batch_size=4, lr=1e-3, budget_s=30.0, images_per_s=100.0, steps=2, n_eval=6, eval_steps=(1, 2))
    monkeypatch.setattr(long_run, "plan_lab", lambda **kw: plan)
    trained = []

    def train(argv, gpus):  # the CLI in this process (no subprocess): a tiny run of the lab's configuration
        trained.append(argv[argv.index("--loss") + 1])
        assert cli_main(argv) == 0
        return 0.5

    monkeypatch.setattr(long_run, "train", train)
    runs, out = tmp_path / "runs", tmp_path / "out"
    common = ["--steps", "2", "--n", "6", "--device", "cpu", "--runs", str(runs), "--out", str(out)]
    assert long_run.main(common) == 0 and sorted(trained) == sorted(long_run.LAB_RUNS.values())
    first = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    monkeypatch.setattr(long_run, "train", lambda argv, gpus: pytest.fail("--no-train trained"))
    assert long_run.main([*common, "--no-train"]) == 0
    again = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert again.keys() == first.keys() and any(name.startswith("grid_") for name in again)
    assert all(again[name] == first[name] for name in again if name != "meta.json")
    meta, before = json.loads(again["meta.json"]), json.loads(first["meta.json"])
    assert meta["command"] == before["command"] and "--no-train" not in meta["command"]
    assert all(run["minutes"] == 0.5 for run in meta["runs"].values())


def _load(script: str):
    """A script of this repository (a path from its root) imported as a module, without running its main."""
    path = ROOT / script
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_benchmark_measures_each_cpu_cell_in_a_process_of_its_own(capsys):
    """benchmarks/images.py: on a CPU a cell's peak memory is the resident set, which keeps what earlier cells freed,
    so every cell runs in a fresh process (the options it passes on drop the lists it was given)."""
    bench = _load("benchmarks/images.py")
    assert bench._without(["--presets", "tiny", "mini", "--steps", "1", "--batch-size=8", "--threads", "1"],
                          ("--presets", "--batch-size")) == ["--steps", "1", "--threads", "1"]
    argv = ["--presets", "tiny", "--losses", "cfm", "--batch-size", "2", "--image-size", "16", "--steps", "1",
            "--warmup", "0", "--threads", "1", "--device", "cpu"]
    assert bench.main(argv) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| tiny | 0.30M | cfm | 2 | fp32 |") and row.endswith(" MB |") and " nan MB" not in row


def test_publish_badges_puts_colab_and_binder_on_every_lab_and_a_setup_cell_first(tmp_path):
    import jupytext

    publish = _load("scripts/publish_badges.py")
    (tmp_path / "labs").mkdir()
    for source in sorted((ROOT / "labs").glob("[0-9][0-9]_*.py")):
        shutil.copy(source, tmp_path / "labs" / source.name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    publish.main(["--repo", "other/fork", "--branch", "dev", "--root", str(tmp_path)])
    publish.main(["--repo", "someone/fmlab", "--root", str(tmp_path)])  # a second run replaces the first
    once = {p.name: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    publish.main(["--repo", "someone/fmlab", "--root", str(tmp_path)])
    assert {p.name: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == once  # idempotent
    labs = sorted((tmp_path / "labs").glob("*.py"))
    assert len(labs) == len(list((ROOT / "labs").glob("[0-9][0-9]_*.py"))) >= 14
    for path in labs:
        nb = jupytext.read(path)
        notebook = f"labs/{path.stem}.ipynb"
        title = nb.cells[0].source
        assert f"colab.research.google.com/github/someone/fmlab/blob/main/{notebook}" in title
        assert f"mybinder.org/v2/gh/someone/fmlab/main?labpath={notebook.replace('/', '%2F')}" in title
        assert "other/fork" not in path.read_text() and path.read_text().count(publish.MARK) == 1
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert publish.SETUP_MARK in code[0] and sum(publish.SETUP_MARK in c for c in code) == 1
        assert "git+https://github.com/someone/fmlab@main" in code[0]
        exec(compile(code[0], str(path), "exec"), {})  # here fmlab is installed and this is not Colab: a no-op
    readme = (tmp_path / "README.md").read_text()
    assert readme.count(publish.MARK) == 1 and "labpath=labs%2F00_welcome.ipynb" in readme
    with pytest.raises(SystemExit):
        publish.main(["--repo", "https://github.com/someone/fmlab", "--root", str(tmp_path)])
