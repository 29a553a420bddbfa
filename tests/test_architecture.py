"""The rules ARCHITECTURE.md states, checked on the source tree: citations resolve, `__all__` is complete and true,
no private names cross modules, labs use public names only, the engine does not import the lab-support layer, and
modules stay a readable size."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fmlab"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))
LABS = sorted((ROOT / "labs").glob("[0-9][0-9]_*.py"))
MAX_LINES = 520  # "about 500"
LAB_SUPPORT = ("fmlab.viz", "fmlab.exercises", "fmlab.experiments", "fmlab.labkit", "fmlab.diskcache",
               "fmlab.prewarm")
# fmlab.images builds the CelebA lab's cached runs, fmlab.cli's `cache` and `prewarm` commands manage the labs' cache
# (both import lazily)
ENGINE_MAY_IMPORT_LAB_SUPPORT = {"fmlab.images", "fmlab.cli"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def _public_definitions(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            names.append(node.name)
    return names


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _sections() -> set[str]:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    return {m.group(1).strip() for m in re.finditer(r"^##+ (.+)$", text, flags=re.M)}


def test_every_architecture_citation_names_a_section():
    sections = _sections()
    cited = []
    for path in MODULES + LABS + [ROOT / "README.md"]:
        for match in re.finditer(r'ARCHITECTURE\.md, "([^"]+)"', path.read_text(encoding="utf-8")):
            cited.append((path.name, match.group(1)))
            assert match.group(1) in sections, f"{path.name} cites ARCHITECTURE.md section {match.group(1)!r}"
    assert len(cited) >= 10
    for path in MODULES + LABS + sorted((ROOT / "tests").rglob("*.py")) + [ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert "DESIGN" + ".md" not in text, f"{path} cites a design document the repository does not have"


def test_the_readme_module_table_lists_every_top_level_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8") + (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        assert f"`fmlab.{path.stem}`" in readme, f"fmlab.{path.stem} is missing from the module map"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_all_is_declared_complete_and_true(path):
    tree = _tree(path)
    declared = _declared_all(tree)
    assert declared is not None, f"{path.name} declares no __all__"
    missing = [n for n in _public_definitions(tree) if n not in declared]
    assert not missing, f"{path.name}: public definitions missing from __all__: {missing}"
    module = importlib.import_module(_module_name(path))
    absent = [n for n in declared if not hasattr(module, n)]
    assert not absent, f"{path.name}: __all__ names what the module lacks: {absent}"


@pytest.mark.parametrize("path", MODULES + LABS, ids=lambda p: p.stem)
def test_no_private_name_crosses_a_module(path):
    module = _module_name(path) if path.is_relative_to(PACKAGE) else "labs." + path.stem
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.startswith("fmlab"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {source}"


def test_the_engine_does_not_import_the_lab_support_layer():
    for path in MODULES:
        module = _module_name(path)
        if module.startswith(LAB_SUPPORT) or module in ENGINE_MAY_IMPORT_LAB_SUPPORT:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                assert not source.startswith(LAB_SUPPORT), f"{module} (engine) imports {source} (lab support)"


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.stem)
def test_every_name_a_lab_uses_is_public(path):
    tree = _tree(path)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fmlab"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                try:
                    importlib.import_module(target)
                    aliases[alias.asname or alias.name] = target  # a module imported by name
                except ModuleNotFoundError:
                    public = getattr(importlib.import_module(node.module), "__all__", None)
                    assert public is not None and alias.name in public, (
                        f"{path.name} imports {alias.name} from {node.module}, which does not export it")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fmlab") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = importlib.import_module(aliases[node.value.id])
            public = getattr(module, "__all__", [])
            assert node.attr in public, f"{path.name} uses {aliases[node.value.id]}.{node.attr}, not in its __all__"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_modules_stay_a_readable_size(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines (about 500 at most: split it by role)"


def test_the_package_reads_no_file_outside_itself():
    """Data the package reads ships inside it (package data), so a wheel install works: no `parents[...]` walks."""
    for path in MODULES:
        assert "parents[" not in path.read_text(encoding="utf-8"), f"{path.name} reads a path outside the package"


def test_every_data_file_in_the_package_is_declared_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    patterns = declared["package-data"]
    data = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix == ".json"]
    assert data, "the labs' benchmark results are package data (fmlab/viz/results)"
    for path in data:
        owners = [pkg for pkg in patterns if path.is_relative_to(ROOT.joinpath(*pkg.split(".")))]
        assert any(path.relative_to(ROOT.joinpath(*pkg.split("."))).match(glob)
                   for pkg in owners for glob in patterns[pkg]), f"{path} is not declared as package data"


# public functions and classes that nothing in the repository calls by name, kept on purpose
DOCUMENTED_UNREFERENCED = {
    "x1_from_eps": "completes paths' six head conversions; lab 06's text names it for students to use",
}


def _names_used(path: Path) -> set[str]:
    """Every name a file uses in code: variables, attributes, imported names (a package's re-export is no use)."""
    used = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and path.name != "__init__.py":
            used.update(alias.name for alias in node.names)
    return used


def test_every_public_function_and_class_is_used_somewhere():
    """A public top-level function or class of fmlab that no module, test, lab, script or benchmark uses by name is
    dead code (the `fmlab` console script's `main` is used by name in fmlab/__main__.py)."""
    users = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py")) + LABS + sorted(
        (ROOT / "scripts").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    used = set().union(*(_names_used(p) for p in users))
    unused = [f"{_module_name(path)}.{name}" for path in MODULES for name in _public_definitions(_tree(path))
              if name not in used and name not in DOCUMENTED_UNREFERENCED]
    assert not unused, f"public but used nowhere (delete, or list in DOCUMENTED_UNREFERENCED with a reason): {unused}"
    for name in DOCUMENTED_UNREFERENCED:
        assert name not in used, f"{name} is used now: take it off DOCUMENTED_UNREFERENCED"


TESTS = ROOT / "tests"
NON_PACKAGE_TEST_FOLDERS = {"labs": "the notebooks and their tooling", "browser": "JupyterLab in headless Chromium"}


def test_tests_mirror_the_package():
    """tests/<sub>/ for every subpackage fmlab/<sub>/ (and only for those, besides labs/ and browser/); a test file
    named after a subpackage (test_viz_*, test_losses_*, ...) lives in that subpackage's folder."""
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert subpackages <= folders, f"subpackages without a tests folder: {sorted(subpackages - folders)}"
    stray = folders - subpackages - set(NON_PACKAGE_TEST_FOLDERS)
    assert not stray, f"tests folders that mirror no subpackage of fmlab: {sorted(stray)}"
    misplaced = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py")
                 for sub in subpackages if p.name.startswith(f"test_{sub}_") and p.parent.name != sub]
    assert not misplaced, f"test files outside their subpackage's folder: {misplaced}"
