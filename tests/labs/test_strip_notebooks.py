"""scripts/strip_notebooks.py: what stays in committed notebooks, --check for CI, --execute under FMLAB_FAST=1."""

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "strip_notebooks.py"
spec = importlib.util.spec_from_file_location("strip_notebooks", SCRIPT)
S = importlib.util.module_from_spec(spec)
sys.modules["strip_notebooks"] = S
spec.loader.exec_module(S)


def _executed_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)\n2", execution_count=7)
    checked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n"),
                       nbformat.v4.new_output("execute_result", data={"text/plain": "2", "text/html": "<b>2</b>"},
                                              execution_count=7),
                       nbformat.v4.new_output("display_data", data={"image/png": "AAAA"})]
    plain = nbformat.v4.new_code_cell("print('noise')", execution_count=8)
    plain.outputs = [nbformat.v4.new_output("stream", name="stdout", text="noise\n")]
    plain.metadata["ExecuteTime"] = {"x": 1}
    plain.metadata["tags"] = ["keep"]
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), checked, plain]
    nb.metadata["widgets"] = {"state": "big"}
    return nb


def test_strip_keeps_only_text_outputs_of_checked_cells():
    out = S.strip(_executed_notebook())
    checked, plain = out.cells[1], out.cells[2]
    assert [o["output_type"] for o in checked.outputs] == ["stream", "execute_result"]
    assert checked.outputs[1]["data"] == {"text/plain": "2"}
    assert checked.execution_count == 1 and checked.outputs[1]["execution_count"] == 1  # nbval needs a count
    assert plain.outputs == [] and plain.execution_count is None
    assert plain.metadata == {"tags": ["keep"]}
    assert "widgets" not in out.metadata and out.metadata["kernelspec"]["name"] == "python3"
    assert S.dumps(S.strip(out)) == S.dumps(out)  # idempotent


def test_check_mode_reports_and_does_not_write(tmp_path, capsys):
    path = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), path)
    before = path.read_text()
    assert S.main(["--check", str(path)]) == 1
    assert path.read_text() == before and "would change" in capsys.readouterr().out
    assert S.main([str(path)]) == 0
    assert S.main(["--check", str(path)]) == 0


@pytest.mark.slow
def test_execute_runs_in_fast_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("FMLAB_FAST", raising=False)
    path = tmp_path / "run.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nimport os\nprint(os.environ['FMLAB_FAST'])")]
    nbformat.write(nb, path)
    assert S.main(["--execute", str(path)]) == 0
    assert nbformat.read(path, as_version=4).cells[0].outputs[0]["text"] == "1\n"
