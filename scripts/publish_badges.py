#!/usr/bin/env python
"""Put "Open in Colab" and "Launch Binder" badges on every lab and in the README, once the repository is public.

    python scripts/publish_badges.py --repo OWNER/NAME [--branch main]   # then: python scripts/build_labs.py

The badges and Colab's install step need the repository's public address, which fmlab cannot know before it is
published, so they are written by this script rather than committed with a guessed URL. For each lab source
`labs/NN_name.py` it writes, right under the lab's title,

    [Open in Colab](https://colab.research.google.com/github/OWNER/NAME/blob/BRANCH/labs/NN_name.ipynb)
    [Launch Binder](https://mybinder.org/v2/gh/OWNER/NAME/BRANCH?labpath=labs%2FNN_name.ipynb)

(as the two services' badge images) and, as the lab's first code cell, a setup cell that does nothing where fmlab
is installed and on Colab installs it from the repository (`pip install git+https://github.com/OWNER/NAME@BRANCH`;
Colab already has torch, for its CPU and GPU runtimes alike) and turns on Colab's widget manager, which ipywidgets
and plotly's figure widgets need there. Binder builds from `binder/` (CPU torch; fmlab installed by `postBuild`).
The README gets both badges under its title, pointing at the lab index. Running it again replaces what it wrote, so
a move to another address is one more run.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- fmlab:badges -->"
SETUP_MARK = "# fmlab:setup (written by scripts/publish_badges.py)"
COLAB_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
BINDER_SVG = "https://mybinder.org/badge_logo.svg"
REPO_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def badges(repo: str, branch: str, notebook: str) -> str:
    """The two badges (markdown) for `notebook`, a path inside the repository."""
    colab = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{notebook}"
    binder = f"https://mybinder.org/v2/gh/{repo}/{branch}?labpath={notebook.replace('/', '%2F')}"
    return f"{MARK} [![Open in Colab]({COLAB_SVG})]({colab}) [![Launch Binder]({BINDER_SVG})]({binder})"


def setup_cell(repo: str, branch: str) -> str:
    """The lab's first code cell (jupytext percent format): install fmlab on Colab when it is missing."""
    return f'''# %%
{SETUP_MARK}: on Colab, install fmlab when it is missing; elsewhere this does nothing.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("fmlab") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/{repo}@{branch}"])
    importlib.invalidate_caches()  # so that this kernel finds the package just installed
if "google.colab" in sys.modules:
    from google.colab import output

    output.enable_custom_widget_manager()  # ipywidgets and plotly figure widgets
'''


def _without_badges(text: str, blank: str) -> list[str]:
    """The lines of `text` without a badge line written before, nor the `blank` line written above it."""
    lines: list[str] = []
    for line in text.splitlines():
        if MARK in line:
            if lines and lines[-1] == blank:
                lines.pop()
            continue
        lines.append(line)
    return lines


def publish_lab(source: str, repo: str, branch: str, notebook: str) -> str:
    """`source` (a lab in percent format) with its badge line and setup cell written or replaced."""
    lines = _without_badges(source, "#")
    title = next((i for i, line in enumerate(lines) if line.startswith("# # ")), None)
    if title is None:
        raise ValueError(f"{notebook}: no title line ('# # Lab ...') to put the badges under")
    lines[title + 1:title + 1] = ["#", f"# {badges(repo, branch, notebook)}"]
    text = re.sub(rf"# %%\n{re.escape(SETUP_MARK)}.*?(?=\n# %%)\n", "", "\n".join(lines) + "\n", flags=re.S)
    first_code = re.search(r"^# %%(?! \[markdown\]).*$", text, flags=re.M)
    if first_code is None:
        raise ValueError(f"{notebook}: no code cell to put the setup cell before")
    return text[:first_code.start()] + setup_cell(repo, branch) + "\n" + text[first_code.start():]


def publish_readme(text: str, repo: str, branch: str) -> str:
    """The README with the badges (to the lab index, labs/00_welcome.ipynb) under its title."""
    lines = _without_badges(text, "")
    title = next(i for i, line in enumerate(lines) if line.startswith("# "))
    lines[title + 1:title + 1] = ["", badges(repo, branch, "labs/00_welcome.ipynb")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="the public GitHub repository, OWNER/NAME")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to write into (default: this one)")
    args = parser.parse_args(argv)
    if not REPO_PATTERN.fullmatch(args.repo):
        parser.error(f"--repo must be OWNER/NAME (e.g. someone/fmlab), got {args.repo!r}")
    written = []
    for path in sorted((args.root / "labs").glob("[0-9][0-9]_*.py")):
        notebook = f"labs/{path.with_suffix('.ipynb').name}"
        path.write_text(publish_lab(path.read_text(), args.repo, args.branch, notebook))
        written.append(path)
    readme = args.root / "README.md"
    readme.write_text(publish_readme(readme.read_text(), args.repo, args.branch))
    print(f"badges for {args.repo}@{args.branch} in {len(written)} labs and README.md; now run "
          "`python scripts/build_labs.py` to rebuild the notebooks")
    return [*written, readme]


if __name__ == "__main__":
    main()
