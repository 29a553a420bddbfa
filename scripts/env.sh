# Sourced by scripts/lab.sh and scripts/test.sh: make .venv and install fmlab with the given extras.
# torch: an already-installed torch is kept (install the build you want first, e.g. a CUDA or ROCm wheel);
# otherwise FMLAB_TORCH (default torch==2.13.0) is installed: the CUDA build on Linux x86-64, the MPS-capable
# build on macOS, or a local CPU wheel where pip is configured with find-links.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || python -m pip install -q "${FMLAB_TORCH:-torch==2.13.0}"
python -m pip install -q -e ".${FMLAB_EXTRAS:-}"
