# Sourced by scripts/lab.sh and scripts/test.sh: make .venv and install fmlab with the given extras.
# torch: an already-installed torch is kept (install the build you want first, e.g. a CUDA or ROCm wheel);
# otherwise FMLAB_TORCH (default torch==2.13.0) is installed: the CUDA build on Linux x86-64, the MPS-capable
# build on macOS, or a local CPU wheel where pip is configured with find-links.
# The install is skipped when .venv already holds this checkout's fmlab with these extras and pyproject.toml has
# not changed since (a stamp file in .venv records it), so a second start is quick and works without write access.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
.venv/bin/python -c "" 2>/dev/null || "$PY" -m venv .venv  # (a venv whose python runs)
. .venv/bin/activate
stamp=".venv/.fmlab-installed${FMLAB_EXTRAS:-}"
want="$(cksum < pyproject.toml) $(pwd)"
stamps=("$stamp")
[ -n "${FMLAB_EXTRAS:-}" ] || stamps+=(.venv/.fmlab-installed*)  # no extras wanted: an install with extras will do
installed=false
for f in "${stamps[@]}"; do [ "$(cat "$f" 2>/dev/null)" = "$want" ] && installed=true; done
if ! $installed; then
  python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  python -c "import torch" 2>/dev/null || python -m pip install -q "${FMLAB_TORCH:-torch==2.13.0}"
  python -m pip install -q -e ".${FMLAB_EXTRAS:-}"
  echo "$want" > "$stamp"
fi
