#!/usr/bin/env bash
# Install fmlab with its test extras into .venv and run everything: lint, unit tests, the labs under
# nbval (FMLAB_FAST=1) and the browser tests (JupyterLab in headless Chromium).
FMLAB_EXTRAS="[test]" source "$(dirname "$0")/env.sh"
ruff check fmlab tests benchmarks labs scripts
# The browser tests (tests/browser) drive Debian's chromium through Playwright (no browser downloads): install it
# with apt-get when it is missing and we may (root, apt-get present); otherwise those tests skip and say what to install.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${FMLAB_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      >/dev/null; } || echo "apt-get install chromium failed: the browser tests will be skipped" >&2
  else
    echo "chromium not found: the browser tests will be skipped (apt-get install chromium, or set FMLAB_CHROMIUM)" >&2
  fi
fi
export FMLAB_FAST=1 MPLBACKEND=Agg
python -m pytest -q "$@"
