"""Browser harness: JupyterLab on 127.0.0.1 driven by Playwright in Debian's headless Chromium.

What a student sees is tested, not only that cells execute: for one notebook the harness (`LabHarness.check`)
opens it in JupyterLab, runs all cells (command `notebook:run-all-cells`), waits on the kernel (the frontend's
promise for the run, the kernel's status messages and the server's REST API), then asserts

- no cell shows an error (error outputs, tracebacks on stderr, "could not redraw" status lines);
- every widget view rendered ("Loading widget..." gone, no "Error displaying widget");
- every plotly figure has traces with data and an svg, every output image loaded;
- moving each control (slider: arrow key on its handle, dropdown: another option, checkbox / toggle: click)
  changes the data or title of a plotly figure, or the src of an image (matplotlib in an Output widget),
  without an error from the kernel.

Every control is moved FMLAB_LATENCY_MOVES times (default 3; back and forth, so an odd number of moves leaves it
one step from where it started) and the time from the student's input (the key press, click or change event, in
the page's clock) to the first moment the changed figure is fully drawn is recorded, with whether the control
trained (a new progress bar appeared, or fmlab.labkit.computed_count() grew in the kernel). The table (median and
95th percentile per control) goes to artifacts/browser/latency.json and latency.md and into pytest's terminal
summary; labs/README.md keeps a recorded copy. With FMLAB_BROWSER_WARM=1 (after `python -m fmlab prewarm`) a
control that trains, or that takes over WARM_LIMIT_MS, fails the check. The labs run in fast mode (FMLAB_FAST=1)
unless FMLAB_BROWSER_FULL=1, which runs the full lessons (the pre-warm's full-mode entries, with FMLAB_CACHE).

Screenshots of the whole notebook before and after the interaction go to artifacts/browser/<name>-before.png
and -after.png; their paths are printed in pytest's terminal summary so that a CI log names them. With
FMLAB_BROWSER_SCREENSHOTS=failures (scripts/test.sh, to keep CI short) only a failed check is photographed.

One JupyterLab server (fixture `jupyter_lab`) and one Chromium (fixture `chromium_context`) serve the whole
session. The server runs in the repository root (so labs/ keeps its real working directory) with a random token,
a free port, temporary config / settings / workspace / runtime directories, FMLAB_FAST=1 (see FULL), autosave off, and a
pre-save hook that refuses every save: the harness never writes a notebook.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
CHROMIUM_CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
INSTALL_HINT = ("browser tests need Debian's chromium and the playwright python package: run `apt-get install -y "
                "chromium` (bash scripts/test.sh does it when run as root) and `pip install -e .[test]`, or point "
                "FMLAB_CHROMIUM at a Chrome/Chromium binary")

# One notebook's "Run All" (FMLAB_BROWSER_RUN_TIMEOUT overrides it, e.g. on a loaded machine); a lab slower than
# SLOW_LAB_S in FAST mode is named in the terminal summary.
RUN_TIMEOUT_S = float(os.environ.get("FMLAB_BROWSER_RUN_TIMEOUT", "300"))
SLOW_LAB_S = 60.0
CONTROL_TIMEOUT_S = 60.0  # kernel work after moving one control
REDRAW_TIMEOUT_S = 10.0  # browser work after the kernel went idle
# A slider handle's readout text (ipywidgets' value label, else aria-valuenow) and its position, in one evaluation.
SLIDER_STATE = """(e) => {
  const box = e.closest('[class*="widget-slider"]');
  const readout = box && box.querySelector('[class*="widget-readout"]');
  const num = (name, dflt) => parseFloat(e.getAttribute(name) ?? dflt);
  return {text: readout ? readout.innerText : e.getAttribute('aria-valuenow'), now: num('aria-valuenow', 0),
          min: num('aria-valuemin', 0), max: num('aria-valuemax', 1)};
}"""
VIEWPORT = {"width": 1280, "height": 900}
MAX_SCREENSHOT_HEIGHT = 16000  # Chromium's limit for one capture is 16384 px
LATENCY_MOVES = int(os.environ.get("FMLAB_LATENCY_MOVES", "3"))
WARM = os.environ.get("FMLAB_BROWSER_WARM", "") not in ("", "0")
FULL = os.environ.get("FMLAB_BROWSER_FULL", "") not in ("", "0")  # the labs' full mode instead of FMLAB_FAST=1
MODE = "full mode" if FULL else "FMLAB_FAST=1"
SCREENSHOTS = os.environ.get("FMLAB_BROWSER_SCREENSHOTS", "all")  # "all", or "failures": only a failed check's
if SCREENSHOTS not in ("all", "failures"):
    raise ValueError(f"FMLAB_BROWSER_SCREENSHOTS must be 'all' or 'failures', got {SCREENSHOTS!r}")
WARM_LIMIT_MS = 1000.0

collect_ignore_glob = ["fixtures/*"]  # the harness's own fixture notebooks are not tests (nor nbval items)

_SCREENSHOTS: list[Path] = []
_TIMINGS: dict[str, float] = {}
_CONSOLE: dict[str, list[str]] = {}
_LATENCY: list[dict[str, Any]] = []  # one row per control: lab, control, latencies (ms), trained


# --- JupyterLab server ----------------------------------------------------------------------------------------

SERVER_CONFIG = '''
from tornado.web import HTTPError


def refuse_to_save(model, path, contents_manager, **kwargs):
    """The browser tests never save a notebook: a save is a bug in the harness."""
    raise HTTPError(403, f"fmlab browser tests never save files (refused: {path})")


c.ContentsManager.pre_save_hook = refuse_to_save
'''

LAB_SETTINGS = {
    # never write a notebook back
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # every cell stays in the DOM, so figures below the fold render and the full-notebook screenshot shows them;
    # no blank space after the last cell (it would grow with the window)
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "scrollPastEnd": False},
    # no news or update checks (no network; no toast over the notebook)
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterLabServer:
    """A running JupyterLab: base `url`, `token`, `root` (its root_dir) and the REST helper `api`."""

    url: str
    token: str
    root: Path
    proc: subprocess.Popen
    log: Path

    def api(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def session_for(self, rel: str) -> dict | None:
        return next((s for s in self.api("sessions") if s.get("path") == rel), None)

    def kernel_state(self, rel: str) -> str | None:
        """execution_state of the kernel of notebook `rel` (root-relative path) as the server sees it."""
        session = self.session_for(rel)
        return None if session is None else self.api(f"kernels/{session['kernel']['id']}")["execution_state"]

    def shutdown_session(self, rel: str) -> None:
        session = self.session_for(rel)
        if session is not None:
            self.api(f"sessions/{session['id']}", method="DELETE")


def _start_server(tmp: Path) -> JupyterLabServer:
    dirs = {name: tmp / name for name in ("config", "data", "settings", "workspaces", "runtime", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["config"] / "jupyter_server_config.py").write_text(SERVER_CONFIG)
    for plugin, values in LAB_SETTINGS.items():
        pkg, name = plugin.rsplit("/", 1)
        target = dirs["settings"] / pkg / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = {**os.environ, "FMLAB_FAST": "0" if FULL else "1", "JUPYTER_CONFIG_DIR": str(dirs["config"]),
           "JUPYTER_DATA_DIR": str(dirs["data"]), "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
           "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]), "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
           "IPYTHONDIR": str(dirs["ipython"]), "JUPYTER_PLATFORM_DIRS": "1",
           # what a student gets in JupyterLab (test.sh exports Agg for nbval, which would hide plt.show())
           "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "PYTHONUNBUFFERED": "1"}
    port, token = _free_port(), secrets.token_hex(24)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={REPO}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = tmp / "jupyterlab.log"
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
    server = JupyterLabServer(f"http://127.0.0.1:{port}", token, REPO, proc, log)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("status")
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                proc.terminate()
                raise RuntimeError(f"JupyterLab did not answer within 90 s:\n{server.log_tail()}") from None
            time.sleep(0.2)  # polling the server's readiness, not waiting for the page


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Path of a Chromium binary (FMLAB_CHROMIUM or Debian's), or skip naming what to install."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip(INSTALL_HINT)
    candidates = [os.environ.get("FMLAB_CHROMIUM", "")] + CHROMIUM_CANDIDATES + [shutil.which("chromium") or ""]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None:
        pytest.skip(INSTALL_HINT)
    return found


@pytest.fixture(scope="session")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory, chromium_executable: str) -> Iterator[JupyterLabServer]:
    """One JupyterLab server for the whole session (loopback, random token, temporary settings)."""
    server = _start_server(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()


@pytest.fixture(scope="session")
def chromium_context(tmp_path_factory: pytest.TempPathFactory, chromium_executable: str) -> Iterator[Any]:
    """One headless Chromium (fresh user-data dir) for the session; labs run one after another in it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium_executable, headless=True,
            args=CHROMIUM_ARGS, viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(60_000)  # clicks and key presses on a loaded machine
        context.set_default_navigation_timeout(90_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def lab_harness(jupyter_lab: JupyterLabServer, chromium_context: Any) -> LabHarness:
    return LabHarness(jupyter_lab, chromium_context, ARTIFACTS)


# --- the harness ----------------------------------------------------------------------------------------------

# Injected into the page: helpers that read JupyterLab's own state (window.jupyterapp, exposed by
# --LabApp.expose_app_in_browser) and the DOM of one notebook panel.
PAGE_HELPERS = r"""
(() => {
  if (window.__fmlab) return;
  const hash = (s) => {  // FNV-1a: enough to tell two renders apart
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
    return h.toString(16) + ':' + s.length;
  };
  const plain = (k, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v);
  const DATA_KEYS = ['x', 'y', 'z', 'values', 'source', 'lat', 'r', 'a', 'b', 'u', 'v'];
  const nonEmpty = (v) => (Array.isArray(v) || ArrayBuffer.isView(v)) ? v.length > 0
    : (typeof v === 'string' ? v.length > 0 : !!(v && typeof v === 'object' && v.bdata));
  document.addEventListener('plotlywidget-after-render', () => { F.rendered++; });
  const F = window.__fmlab = {
    path: null, errors: [], sent: 0, pending: new Set(), hooked: null, runDone: false, runResult: null, rendered: 0,
    panel() {
      for (const w of window.jupyterapp.shell.widgets('main')) {
        if (w.context && w.context.path === F.path) return w;
      }
      return null;
    },
    node() { return F.panel().node; },
    kernel() {
      const p = F.panel();
      return p && p.sessionContext.session ? p.sessionContext.session.kernel : null;
    },
    ready() {
      const p = F.panel(), k = F.kernel();
      return !!(p && p.context.isReady && k && k.connectionStatus === 'connected' && k.status === 'idle' && F.hook());
    },
    hook() {  // count the comm messages the page sends and their replies; keep every error the kernel reports
      const kernel = F.kernel();
      if (!kernel || F.hooked === kernel) return !!kernel;
      F.hooked = kernel;
      kernel.anyMessage.connect((_, {msg, direction}) => {
        const type = msg.header.msg_type;
        if (direction === 'send' && type === 'comm_msg') { F.sent++; F.pending.add(msg.header.msg_id); }
        if (direction !== 'recv' || msg.channel !== 'iopub') return;
        const parent = msg.parent_header && msg.parent_header.msg_id;
        if (type === 'status' && msg.content.execution_state === 'idle') F.pending.delete(parent);
        if (type === 'error') {
          const where = (msg.parent_header && msg.parent_header.msg_type) || '?';
          const tb = (msg.content.traceback || []).join('\n').replace(/\x1b\[[0-9;]*m/g, '');
          F.errors.push(`${msg.content.ename}: ${msg.content.evalue} (in reply to ${where})\n${tb.slice(-3000)}`);
        }
        if (type === 'stream' && msg.content.name === 'stderr' && msg.content.text.includes('Traceback')) {
          F.errors.push(msg.content.text.slice(-2000));
        }
      });
      return true;
    },
    runAll() {
      F.runDone = false;
      window.jupyterapp.commands.execute('notebook:run-all-cells').then(
        (r) => { F.runResult = r; F.runDone = true; },
        (e) => { F.runResult = String(e); F.runDone = true; });
    },
    prompts() {
      return [...F.node().querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map((n) => n.textContent.trim());
    },
    settled() {  // no cell queued or running, every sent message answered, the kernel idle as the page sees it
      const k = F.kernel();
      return !!k && k.status === 'idle' && F.pending.size === 0 && !F.prompts().some((p) => p.includes('*'));
    },
    unexecuted() {
      const bad = [];
      F.prompts().forEach((p, i) => { if (!/^\[\d+\]:?$/.test(p)) bad.push(`code cell ${i} shows ${p}`); });
      return bad;
    },
    cellProblems() {  // errors in the notebook's model and in what the page shows
      const problems = [];
      const cells = F.panel().content.model.cells;
      for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type !== 'code') continue;
        for (const out of cell.toJSON().outputs || []) {
          const text = Array.isArray(out.text) ? out.text.join('') : (out.text || '');
          if (out.output_type === 'error') problems.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
          else if (out.name === 'stderr' && text.includes('Traceback')) {
            problems.push(`cell ${i}: ${text.slice(-1500)}`);
          }
        }
      }
      const stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
      for (const n of F.node().querySelectorAll(stderr)) {
        if (n.textContent.includes('Traceback')) problems.push('stderr output: ' + n.textContent.slice(-1500));
      }
      const text = F.node().innerText;
      for (const bad of ['Error displaying widget', 'could not redraw', 'Model not found']) {
        const at = text.indexOf(bad);
        if (at >= 0) problems.push(`page shows "${bad}": ` + text.slice(at, at + 300));
      }
      return problems;
    },
    widgetsLoading() { return F.node().innerText.includes('Loading widget...'); },
    plots() { return [...F.node().querySelectorAll('.js-plotly-plot')]; },
    images() {  // output images (matplotlib, PIL); plotly's own <img> placeholders do not count
      return [...F.node().querySelectorAll('.jp-OutputArea-output img')].filter((i) => !i.closest('.js-plotly-plot'));
    },
    drawn() {  // a FigureWidget first draws an empty plot, then its traces: wait for the traces
      const plotted = F.plots().every((gd) => gd._fullLayout && gd.querySelector('svg.main-svg') && gd.data
                                              && gd.data.length > 0);
      return plotted && F.images().every((img) => img.complete) && !F.widgetsLoading();
    },
    figureProblems() {
      const problems = [];
      F.plots().forEach((gd, i) => {
        const data = gd.data || [];
        const box = gd.getBoundingClientRect();
        const filled = (trace) => (trace.type === 'table'
          ? !!(trace.cells && trace.cells.values && trace.cells.values.some(nonEmpty))
          : Object.entries(trace).some(([k, v]) => DATA_KEYS.includes(k) && nonEmpty(v)));
        if (!gd.querySelector('svg.main-svg')) problems.push(`plotly figure ${i} has no svg`);
        else if (!data.length) {
          const title = gd.layout && gd.layout.title ? JSON.stringify(gd.layout.title).slice(0, 80) : 'none';
          problems.push(`plotly figure ${i} has no traces (blank axes; layout title ${title}; ` +
                        `${F.rendered} FigureWidget views finished rendering)`);
        }
        else if (!data.some(filled)) problems.push(`plotly figure ${i}: every trace is empty`);
        if (box.width < 50 || box.height < 50) problems.push(`plotly figure ${i} is ${box.width}x${box.height} px`);
      });
      F.images().forEach((img, i) => {
        if (!img.complete || img.naturalWidth === 0) problems.push(`image ${i} did not load`);
      });
      return problems;
    },
    counts() {
      return {plotly: F.plots().length, images: F.images().length,
              widgets: F.node().querySelectorAll('.jp-OutputArea-output > .jupyter-widgets').length};
    },
    snapshot() {  // what is drawn: plotly data, title, annotations, shapes, layout images; image sources
      const figs = F.plots().map((gd) => {
        const l = gd.layout || {};
        return hash(JSON.stringify([gd.data, l.title, l.annotations, l.shapes, l.images], plain));
      });
      return {figs, imgs: F.images().map((img) => hash(img.src))};
    },
    watch(before) {  // time the next input until the figures differ from `before` and are drawn
      F.watchBefore = JSON.stringify(before);
      F.t0 = null; F.tChanged = null; F.sawProgress = false; F.watching = true;
      F.progressBefore = F.node().querySelectorAll('.widget-progress').length;
      if (!F.observer) {
        F.observer = new MutationObserver(() => F.checkChange());
        F.observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
        for (const type of ['keydown', 'change', 'click']) {
          document.addEventListener(type, () => { if (F.watching && F.t0 === null) F.t0 = performance.now(); }, true);
        }
      }
    },
    checkChange() {
      if (!F.watching || F.t0 === null) return;
      if (F.node().querySelectorAll('.widget-progress').length > F.progressBefore) F.sawProgress = true;
      if (F.tChanged !== null) return;
      if (JSON.stringify(F.snapshot()) !== F.watchBefore && F.drawn()) F.tChanged = performance.now();
    },
    async computed() {  // fmlab.labkit.computed_count() in the kernel (a silent request; -1 without fmlab)
      const expr = "__import__('fmlab.labkit').labkit.computed_count()";
      const reply = await F.kernel().requestExecute({code: '', silent: true, store_history: false,
                                                     user_expressions: {n: expr}}).done;
      const out = reply.content.user_expressions.n;
      return out && out.status === 'ok' ? parseInt(out.data['text/plain'], 10) : -1;
    },
    latency() {  // [ms from input to drawn change or null, whether a new progress bar appeared]
      F.checkChange();
      F.watching = false;
      return [F.tChanged === null || F.t0 === null ? null : F.tChanged - F.t0, F.sawProgress];
    },
    overflow() {  // outputs (figures, widgets, images) whose right edge passes the notebook cell's right edge
      const bad = [];
      for (const out of F.node().querySelectorAll('.jp-OutputArea-output')) {
        const cell = out.closest('.jp-Cell');
        if (!cell) continue;
        const right = cell.getBoundingClientRect().right;
        for (const el of [out, ...out.querySelectorAll('.js-plotly-plot, img, .jupyter-widgets')]) {
          const box = el.getBoundingClientRect();
          if (box.width > 0 && box.right > right + 1) {
            const what = String(el.className || el.tagName).slice(0, 60);
            bad.push(`${what} ends at ${Math.round(box.right)} px, past the cell's ${Math.round(right)} px`);
          }
        }
      }
      return bad;
    },
    fullHeight() {  // window height that shows the whole notebook without scrolling; scrolls to the top
      const node = F.panel().content.node;
      const outer = node.querySelector('.jp-WindowedPanel-outer') || node;
      outer.scrollTop = 0;
      return window.innerHeight - outer.clientHeight + outer.scrollHeight;
    },
  };
})();
"""

# Controls a student moves, with how the harness moves them. Buttons are left alone (they may start training).
CONTROL_SELECTORS = {
    "slider": ".widget-slider .noUi-handle",
    "dropdown": ".widget-dropdown select",
    "checkbox": ".widget-checkbox input[type=checkbox]",
    "toggle": "button.widget-toggle-button",
    "toggles": ".widget-toggle-buttons",
    "radio": ".widget-radio-box",
}


@dataclass
class LabReport:
    """What one check saw: run time, counts of figures / images / widgets, controls moved, screenshot paths."""

    name: str
    run_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    controls: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    overflow: list[str] = field(default_factory=list)  # outputs wider than the notebook's cells


class LabHarness:
    """Checks one notebook at a time in the session's JupyterLab and Chromium; `check` raises AssertionError."""

    def __init__(self, server: JupyterLabServer, context: Any, artifacts: Path):
        self.server, self.context, self.artifacts = server, context, artifacts

    def check(self, notebook: Path, name: str | None = None, require_controls: bool = True, setup: str = "",
              move: bool = True) -> LabReport:
        """Open `notebook`, run it, check what is drawn, move every control (unless not `move`), screenshot before
        and after. `setup`: code the kernel runs before the notebook's cells (e.g. presentation mode)."""
        notebook = Path(notebook).resolve()
        rel = notebook.relative_to(self.server.root).as_posix()
        report = LabReport(name or notebook.stem)
        page = self.context.new_page()
        page.on("pageerror", lambda err: report.console_errors.append(f"page error: {err}"))
        page.on("console", lambda msg: msg.type == "error" and report.console_errors.append(msg.text[:500]))
        try:
            self._open(page, rel)
            if setup:
                page.evaluate("(code) => __fmlab.kernel().requestExecute({code}).done.then(() => true)", setup)
            self._run_all(page, report, rel)
            self._check_drawn(page, report)
            report.overflow = page.evaluate("__fmlab.overflow()")
            if SCREENSHOTS == "all":
                report.screenshots.append(self._screenshot(page, f"{report.name}-before.png"))
            if move:
                self._move_controls(page, report, rel, require_controls)
                if SCREENSHOTS == "all":
                    report.screenshots.append(self._screenshot(page, f"{report.name}-after.png"))
            problems = page.evaluate("__fmlab.cellProblems()")
            assert not problems, f"{report.name}: errors after moving the controls:\n" + "\n".join(problems)
        except AssertionError:
            try:  # what the page showed when the check failed
                self._screenshot(page, f"{report.name}-failed.png", wait=False)
            except Exception:  # noqa: S110 - the assertion above is what matters
                pass
            raise
        finally:
            page.close()
            try:
                self.server.shutdown_session(rel)
            except (urllib.error.URLError, OSError):
                pass
        # JupyterLab never tried to write the notebook (the server's pre-save hook refuses and logs every attempt)
        assert f"refused: {rel})" not in self.server.log.read_text(errors="replace"), f"JupyterLab tried to save {rel}"
        if report.console_errors:
            _CONSOLE[report.name] = report.console_errors
        return report

    # --- steps ---------------------------------------------------------------------------------------------

    def _open(self, page: Any, rel: str) -> None:
        workspace = "fmlab-" + secrets.token_hex(4)  # a fresh workspace: only this notebook is open
        page.goto(f"{self.server.url}/lab/workspaces/{workspace}/tree/{rel}?reset&token={self.server.token}")
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
        page.evaluate(PAGE_HELPERS)
        page.evaluate(f"__fmlab.path = {json.dumps(rel)}")
        try:  # the notebook loaded and its kernel is connected and idle, or JupyterLab asks something
            page.wait_for_function("() => __fmlab.ready() || !!document.querySelector('.jp-Dialog')", timeout=90_000)
        except Exception as err:
            raise AssertionError(f"{rel}: notebook or kernel not ready after 90 s:\n{self.server.log_tail()}") from err
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            raise AssertionError(f"{rel}: JupyterLab opened a dialog: {dialog.first.inner_text()[:500]}")
        page.evaluate("() => { jupyterapp.shell.collapseLeft(); jupyterapp.shell.collapseRight(); }")

    def _run_all(self, page: Any, report: LabReport, rel: str) -> None:
        start = time.monotonic()
        page.evaluate("__fmlab.runAll()")
        try:
            page.wait_for_function("() => __fmlab.runDone && __fmlab.settled()", timeout=RUN_TIMEOUT_S * 1000)
        except Exception as err:
            raise AssertionError(f"{report.name}: Run All did not finish within {RUN_TIMEOUT_S:.0f} s "
                                 f"(prompts: {page.evaluate('__fmlab.prompts()')})") from err
        self._wait_server_idle(report.name, rel)
        report.run_s = _TIMINGS[report.name] = time.monotonic() - start
        problems = page.evaluate("__fmlab.cellProblems()") + page.evaluate("__fmlab.errors")
        assert not problems, f"{report.name}: cells failed:\n" + "\n".join(problems)
        unexecuted = page.evaluate("__fmlab.unexecuted()")
        assert not unexecuted, f"{report.name}: cells not executed after Run All: {unexecuted}"

    def _check_drawn(self, page: Any, report: LabReport) -> None:
        try:
            page.wait_for_function("() => __fmlab.drawn()", timeout=30_000)
        except Exception as err:
            problems = page.evaluate("__fmlab.figureProblems()")
            loading = "widgets still show 'Loading widget...'; " if page.evaluate("__fmlab.widgetsLoading()") else ""
            raise AssertionError(f"{report.name}: not drawn after 30 s: {loading}" + "; ".join(problems)) from err
        report.counts = page.evaluate("__fmlab.counts()")
        problems = page.evaluate("__fmlab.cellProblems()") + page.evaluate("__fmlab.figureProblems()")
        assert not problems, f"{report.name}: figures not drawn:\n" + "\n".join(problems)

    def _move_controls(self, page: Any, report: LabReport, rel: str, require_controls: bool) -> None:
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first
        found = []
        for kind, selector in CONTROL_SELECTORS.items():
            for el in panel.locator(selector).all():
                if el.is_visible() and el.is_enabled():
                    found.append((kind, el))
        if require_controls:
            assert found, f"{report.name}: no slider, dropdown, checkbox or toggle to move"
        unchanged = []
        for kind, el in found:
            label = _label(el)
            if not el.is_enabled():  # an earlier control made this one inapplicable (the lab greys it out)
                report.controls.append(f"{kind} {label!r}: disabled by an earlier control, left alone")
                continue
            times, trained = [], False
            for move in range(max(1, LATENCY_MOVES)):
                moved, changed, ms, progress = self._move_once(page, report, rel, kind, el, label, back=move % 2 == 1)
                if move == 0:
                    report.controls.append(f"{kind} {label!r}: {moved}")
                    if not changed:
                        unchanged.append(f"{kind} {label!r} ({moved})")
                        break
                trained |= progress
                if ms is not None:
                    times.append(round(ms, 1))
            _LATENCY.append({"lab": report.name, "control": f"{kind} {label!r}", "ms": times, "trained": trained})
            if WARM:
                slow = [t for t in times if t > WARM_LIMIT_MS]
                assert not trained and not slow, (f"{report.name}: with the cache warm, {kind} {label!r} "
                                                  f"{'trained' if trained else f'took {slow} ms'}")
        assert not unchanged, (f"{report.name}: moving these controls changed no figure (plotly data/title or "
                               f"image): {unchanged}")

    def _move_once(self, page: Any, report: LabReport, rel: str, kind: str, el: Any, label: str, back: bool
                   ) -> tuple[str, bool, float | None, bool]:
        """Move `el` once and wait for the kernel and the redraw: (what was done, whether a figure changed, ms
        from the input to the drawn change, whether the kernel trained)."""
        computed = page.evaluate("__fmlab.computed()")
        before = page.evaluate("__fmlab.snapshot()")
        sent = page.evaluate("__fmlab.sent")
        page.evaluate("(b) => __fmlab.watch(b)", before)
        moved = self._move(page, kind, el, back)
        try:  # the page sent the new value; wait for the kernel to answer every message it sent
            page.wait_for_function(f"() => __fmlab.sent > {sent} && __fmlab.settled()",
                                   timeout=CONTROL_TIMEOUT_S * 1000)
        except Exception as err:
            raise AssertionError(f"{report.name}: after moving {kind} {label!r} ({moved}) the kernel did not "
                                 f"get the new value or stayed busy for {CONTROL_TIMEOUT_S:.0f} s") from err
        self._wait_server_idle(report.name, rel)
        errors = page.evaluate("__fmlab.errors")
        assert not errors, f"{report.name}: moving {kind} {label!r} raised in the kernel:\n" + "\n".join(errors)
        try:
            page.wait_for_function(
                "(b) => JSON.stringify(__fmlab.snapshot()) !== JSON.stringify(b) && __fmlab.drawn()", arg=before,
                timeout=REDRAW_TIMEOUT_S * 1000)
            changed = True
        except Exception:
            changed = False
        ms, progress = page.evaluate("__fmlab.latency()")
        trained = progress or page.evaluate("__fmlab.computed()") > computed >= 0  # fmlab.labkit.computed_count
        return moved, changed, ms, trained

    def _move(self, page: Any, kind: str, el: Any, back: bool = False) -> str:
        """Move one control like a student would; return what was done. `back`: a slider steps the other way."""
        if kind == "slider":  # one step up with the keyboard, or down at the maximum; `back` reverses it
            old = el.evaluate(SLIDER_STATE)  # one round trip: the readout's text and the slider's position
            at_max, at_min = old["now"] >= old["max"], old["now"] <= old["min"]
            el.focus()
            el.press(("ArrowRight" if at_min else "ArrowLeft") if back else ("ArrowLeft" if at_max else "ArrowRight"))
            return f"{old['text']} -> {el.evaluate(SLIDER_STATE)['text']}"
        if kind == "dropdown":
            options = el.locator("option").all()
            values = [o.get_attribute("value") for o in options]
            current = el.input_value()
            step = -1 if back else 1  # back and forth: after an odd number of moves, one step from the start
            target = values[(values.index(current) + step) % len(values)] if current in values else values[0]
            el.select_option(target)
            return f"{current!r} -> {target!r}"
        if kind in ("checkbox", "toggle"):
            el.click()
            return "clicked"
        buttons = el.locator("button, input[type=radio]").all()  # toggle buttons / radio: pick an unselected one
        choice = next((b for b in buttons if not (b.is_checked() if b.get_attribute("type") == "radio"
                                                  else "mod-active" in (b.get_attribute("class") or ""))), None)
        if choice is None:
            return "nothing to choose"
        choice.click()
        return "chose another option"

    def _wait_server_idle(self, name: str, rel: str) -> None:
        """The server's view of the kernel agrees with the frontend's: execution_state is idle."""
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        while self.server.kernel_state(rel) != "idle":
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: server reports the kernel busy for {CONTROL_TIMEOUT_S:.0f} s")
            time.sleep(0.1)  # REST polling interval (the frontend already reported idle)

    def _screenshot(self, page: Any, filename: str, wait: bool = True) -> Path:
        """The whole notebook in one image: the viewport is stretched to the notebook's height first."""
        height = page.evaluate("__fmlab.fullHeight()") + 40
        page.set_viewport_size({"width": VIEWPORT["width"], "height": min(height, MAX_SCREENSHOT_HEIGHT)})
        if wait:
            page.wait_for_function("() => __fmlab.drawn()", timeout=10_000)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / filename
        page.screenshot(path=str(path))
        _SCREENSHOTS.append(path)
        return path


def _label(el: Any) -> str:
    """The description label of the ipywidget that contains `el`."""
    return el.evaluate("""(n) => {
        const box = n.closest('.widget-inline-hbox, .widget-inline-vbox, .widget-checkbox') || n.parentElement;
        const labels = box ? Array.from(box.querySelectorAll('.widget-label, label')) : [];
        const text = labels.map((l) => l.textContent.replace(/\u200b/g, '').trim()).find((t) => t);
        return text || '';
    }""")


def latency_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per control, the median and 95th percentile of its input-to-figure times and whether it trained."""
    lines = ["| lab | control | moves | median ms | p95 ms | trains |", "|---|---|---:|---:|---:|---|"]
    for row in rows:
        ms = sorted(row["ms"])
        if ms:
            median = ms[len(ms) // 2] if len(ms) % 2 else (ms[len(ms) // 2 - 1] + ms[len(ms) // 2]) / 2
            p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
            cells = f"{len(ms)} | {median:.0f} | {p95:.0f}"
        else:
            cells = "0 | - | -"
        control = row["control"].replace("|", "\\|")
        lines.append(f"| {row['lab']} | {control} | {cells} | {'yes' if row['trained'] else 'no'} |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the screenshots (CI keeps them from its log), the time each notebook took to run and the latency of
    every control (also written to artifacts/browser/latency.json and latency.md)."""
    if _LATENCY:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "latency.json").write_text(json.dumps(_LATENCY, indent=1) + "\n", encoding="utf-8")
        table = latency_table(_LATENCY)
        (ARTIFACTS / "latency.md").write_text(table, encoding="utf-8")
        terminalreporter.section(f"browser: input -> figure drawn, per control ({LATENCY_MOVES} moves; {MODE})")
        for line in table.splitlines():
            terminalreporter.write_line(line)
    if _TIMINGS:
        terminalreporter.section(f"browser: Run All time per notebook ({MODE})")
        for name, seconds in _TIMINGS.items():
            slow = f"  (slower than {SLOW_LAB_S:.0f} s)" if seconds > SLOW_LAB_S else ""
            terminalreporter.write_line(f"{name}: {seconds:.1f} s{slow}")
    if _CONSOLE:
        terminalreporter.section("browser: errors in the page's console (reported, not failed)")
        for name, errors in _CONSOLE.items():
            for line in errors[:5]:
                terminalreporter.write_line(f"{name}: {line}")
    if _SCREENSHOTS:
        terminalreporter.section("browser screenshots")
        for path in _SCREENSHOTS:
            terminalreporter.write_line(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path))
