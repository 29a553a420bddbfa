"""Headless execution (nbclient: nbconvert --execute, papermill, scripts/strip_notebooks.py) of fmlab's widget cells.

The bug this guards against: a cell that displayed into an ipywidgets.Output (`with output: display(fig)`) made
nbclient's stand-in for the Output send the new outputs back to the kernel on the shell channel, while nbclient
waited on that same channel for the cell's execute_reply. jupyter_client sends through a blocking shadow of the
asyncio socket, and that send can swallow the socket's wake-up for a reply that has already arrived: the cell then
sat idle until its timeout ran out (forever with nbconvert's default of no timeout), and then carried on as if
nothing had happened. fmlab must therefore never make the client send anything but execute requests while a cell
runs; that check is deterministic, and the per-cell times catch the stall itself.
"""

import os
import time
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
RUNS = 2  # kernels started, each running the view cells once (the zoo cell only in the first: it imports torch)
VIEW_CELLS = 6
CELL_TIMEOUT = 20  # s per view cell: each takes well under 1 s; a stalled one returns only at its timeout
SLOW_TIMEOUT = 180  # s for the import cell and the zoo cell (imports torch's optimizers) on a loaded CI machine

SETUP = """
import plotly.graph_objects as go
from fmlab.viz.widgets import interactive_view, t_slider

def render(t):
    return go.Figure(go.Scatter(x=[0.0, t], y=[0.0, t]))

render(0.0)._repr_mimebundle_()  # plotly's lazy imports happen here, not in the first timed view cell
"""
VIEW = "interactive_view(render, {'t': t_slider(0.5)})"
# trains 3 steps with a tqdm bar (a widget) and shows the first figure in a View
ZOO = """
from fmlab.viz.loss_zoo import zoo_widget

zoo_widget(losses=['cfm'], loss='cfm', train_steps=3, n=40, max_steps=2)
"""


def _notebook(zoo: bool) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [SETUP] + [VIEW] * VIEW_CELLS + [ZOO] * zoo]
    return nb


def _execute_checking_each_cell(nb: nbformat.NotebookNode, run: int) -> None:
    """Execute every cell with nbclient. After each cell: the client sent nothing on the shell channel but execute
    requests, and a view cell returned before its timeout (a stalled one returns exactly at it)."""
    timeout = {VIEW: CELL_TIMEOUT}
    client = nbclient.NotebookClient(nb, kernel_name="python3", startup_timeout=SLOW_TIMEOUT,
                                     timeout_func=lambda cell: timeout.get(cell.source, SLOW_TIMEOUT),
                                     resources={"metadata": {"path": str(ROOT)}})
    with client.setup_kernel():
        sent: list[str] = []
        send = client.kc.shell_channel.send

        def spy(msg):
            sent.append(msg["header"]["msg_type"])
            return send(msg)

        client.kc.shell_channel.send = spy
        for index, cell in enumerate(nb.cells):
            start = time.perf_counter()
            client.execute_cell(cell, index)
            seconds = time.perf_counter() - start
            assert set(sent) == {"execute_request"}, f"run {run}, cell {index}: the client sent {sent}"
            assert cell.source != VIEW or seconds < CELL_TIMEOUT, \
                f"run {run}, cell {index} stalled until its {CELL_TIMEOUT} s timeout ({seconds:.1f} s)"
        client.set_widgets_metadata()


def _output_contents(nb: nbformat.NotebookNode) -> list[dict]:
    """What every Output widget holds, from the widget state saved in the executed notebook."""
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [out for model in state.values() if model["model_name"] == "OutputModel"
            for out in model["state"].get("outputs", [])]


@pytest.mark.slow
def test_widget_cells_never_stall_nbclient(monkeypatch):
    monkeypatch.setenv("FMLAB_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    for run in range(RUNS):
        nb = _notebook(zoo=run == 0)
        _execute_checking_each_cell(nb, run)
        shown = _output_contents(nb)  # every View still shows its figure (the zoo's progress Output stays empty)
        assert len(shown) == VIEW_CELLS + (run == 0), len(shown)
        assert all(out["output_type"] == "display_data" and "application/vnd.plotly.v1+json" in out["data"]
                   for out in shown)
