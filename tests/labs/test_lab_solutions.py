"""Every write-your-own exercise's collapsed solution, pasted into its stub cell, passes its checker, and the lab then
runs top to bottom on the student's functions (no fallback note). With the stubs empty the labs are run by nbval
(`pytest --nbval-lax labs/`); this runs them with the solutions in, in fast mode, with nbclient."""

import os
import re
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
LABS = ["01_paths", "02_vector_fields", "03_training", "04_solvers", "05_couplings", "06_parametrisation",
        "11_flow_maps", "09_guidance", "07_score_sde", "08_likelihood", "13_celeba64"]
STUB = "raise NotImplementedError"
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def paste_solutions(nb: nbformat.NotebookNode) -> int:
    """Replace each stub cell (a code cell that raises NotImplementedError) by the first ```python block of the next
    "Solution" cell; return how many stubs were filled. Raises if a stub has no solution defining its functions."""
    filled = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or STUB not in cell.source:
            continue
        solution = next(c for c in nb.cells[i + 1:] if c.cell_type == "markdown" and "<b>Solution</b>" in c.source)
        code = CODE_BLOCK.search(solution.source).group(1)
        for name in re.findall(r"^def (\w+)\(", cell.source, re.M):
            assert f"def {name}(" in code, f"the solution after stub cell {i} does not define {name}"
        cell.source = code
        filled += 1
    return filled


def test_paste_solutions_finds_the_solution_of_each_stub():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def f(x):\n    raise NotImplementedError\n"),
        nbformat.v4.new_code_cell("check(f)"),
        nbformat.v4.new_markdown_cell("<details><summary><b>Solution</b></summary>\n\n```python\ndef f(x):\n"
                                      "    return x\n```\n</details>"),
    ])
    assert paste_solutions(nb) == 1
    assert nb.cells[0].source == "def f(x):\n    return x\n"
    nb.cells[0].source = "def g(x):\n    raise NotImplementedError\n"
    with pytest.raises(AssertionError, match="does not define g"):
        paste_solutions(nb)


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_lab_runs_with_the_solutions_pasted_in(lab, monkeypatch):
    nb = nbformat.read(ROOT / "labs" / f"{lab}.ipynb", as_version=4)
    assert paste_solutions(nb) >= 1
    monkeypatch.setenv("FMLAB_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "labs")}}).execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "using fmlab's" not in text, "a pasted solution did not pass its checker"
    if any("exercise_report" in cell.source for cell in nb.cells):  # labs that list the open exercises
        assert "all done: later cells use your functions" in text
