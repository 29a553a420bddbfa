#!/usr/bin/env bash
# Install fmlab with its test extras into .venv and run everything: lint, unit tests, the labs under
# nbval (FMLAB_FAST=1) and the browser tests (JupyterLab in headless Chromium).
FMLAB_EXTRAS="[test]" source "$(dirname "$0")/env.sh"
ruff check fmlab tests benchmarks
export FMLAB_FAST=1 MPLBACKEND=Agg
python -m pytest -q "$@"
