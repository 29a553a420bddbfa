"""The binder configuration must stay in step with pyproject.toml."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]


def _names(requirements: list[str]) -> dict[str, str]:
    out = {}
    for line in requirements:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower()
        out[name] = line
    return out


def test_binder_requirements_match_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"])
    binder = _names((ROOT / "binder" / "requirements.txt").read_text().splitlines())
    assert binder == wanted, "binder/requirements.txt and pyproject.toml [project.dependencies] differ"


def test_binder_installs_fmlab_and_uses_cpu_torch():
    assert "pip install --no-deps -e ." in (ROOT / "binder" / "postBuild").read_text()
    assert "whl/cpu" in (ROOT / "binder" / "requirements.txt").read_text()
