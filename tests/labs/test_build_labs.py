"""scripts/build_labs.py: notebooks built from percent-format sources, stable ids, recorded outputs kept, --check."""

import importlib.util
import sys
from pathlib import Path

import nbformat

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


B = _load("build_labs")

SOURCE = '''# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Demo
#
# Some $x_t$.

# %%
# NBVAL_CHECK_OUTPUT
print(3)

# %% jupyter={"source_hidden": true}
hidden = 1
'''


def test_build_gives_stable_ids_metadata_pairing_and_keeps_recorded_outputs(tmp_path):
    source = tmp_path / "01_demo.py"
    source.write_text(SOURCE)
    assert B.main([str(source)]) == 0
    target = source.with_suffix(".ipynb")
    nb = nbformat.read(target, as_version=4)
    assert [c.id for c in nb.cells] == ["01-demo-00", "01-demo-01", "01-demo-02"]
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[0].source == "# Demo\n\nSome $x_t$."
    assert nb.cells[2].metadata == {"jupyter": {"source_hidden": True}}
    assert nb.metadata["jupytext"] == {"formats": "ipynb,py:percent"}
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="3\n")]
    nb.cells[1].execution_count = 1
    nbformat.write(nb, target)
    target.write_text(target.read_text() + "\n")
    assert B.main([str(source)]) == 0  # rebuilt: the recorded output of the unchanged checked cell stays
    assert nbformat.read(target, as_version=4).cells[1].outputs[0]["text"] == "3\n"
    assert B.main(["--check", str(source)]) == 0


def test_check_fails_when_the_notebook_lags_its_source(tmp_path, capsys):
    source = tmp_path / "02_demo.py"
    source.write_text(SOURCE)
    B.main([str(source)])
    source.write_text(SOURCE.replace("print(3)", "print(4)"))
    assert B.main(["--check", str(source)]) == 1
    assert "out of date" in capsys.readouterr().out


def test_every_committed_lab_matches_its_source():
    """CI: a lab edited in its .py but not rebuilt (or edited in the .ipynb only) fails here."""
    sources = B.lab_sources()
    assert len(sources) >= 11
    assert all(s.with_suffix(".ipynb").exists() for s in sources)
    notebooks = sorted(B.LABS.glob("[0-9][0-9]_*.ipynb"))
    assert [n.with_suffix(".py") for n in notebooks] == sources, "every lab notebook has a percent-format source"
    assert B.main(["--check"]) == 0


def test_jupyterlab_sees_every_lab_and_its_source_as_one_paired_notebook():
    """JupyterLab's jupytext refuses to open a paired notebook whose .ipynb is newer than its .py (as a git checkout
    may leave them) when the two differ in anything, the header's pairing included: they must not differ."""
    import jupytext
    from jupytext.compare import compare_notebooks

    for source in B.lab_sources():
        text = source.read_text()
        assert "#     formats: ipynb,py:percent" in text, f"{source.name}: header lacks the pairing"
        notebook = source.with_suffix(".ipynb")
        compare_notebooks(jupytext.read(source), jupytext.read(notebook), fmt="py:percent")
        written = jupytext.writes(jupytext.read(notebook), fmt="py:percent")  # what `jupytext --diff` compares
        assert B._same_source(written, text), f"{source.name} is not the text jupytext writes for its notebook"


def test_build_writes_the_pairing_into_the_source_header(tmp_path):
    source = tmp_path / "03_demo.py"
    source.write_text(SOURCE)
    assert B.main(["--check", str(source)]) == 1
    assert B.main([str(source)]) == 0
    assert "#     formats: ipynb,py:percent\n" in source.read_text()
    assert B.main(["--check", str(source)]) == 0
