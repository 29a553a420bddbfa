#!/usr/bin/env bash
# Install fmlab into .venv and open the labs in JupyterLab.
FMLAB_EXTRAS="" source "$(dirname "$0")/env.sh"
exec jupyter lab labs/00_welcome.ipynb "$@"
