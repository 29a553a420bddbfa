#!/usr/bin/env bash
# Install fmlab with its test extras into .venv and run everything: lint, unit tests, the labs under
# nbval (FMLAB_FAST=1) and the browser tests (JupyterLab in headless Chromium). Arguments select tests
# (`bash scripts/test.sh tests/test_paths.py`); without them everything runs.
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
# One intra-op thread per process (pytest workers, lab kernels, JupyterLab's kernel): the test processes already use
# every core between them, and torch's OpenMP threads competing for the same cores slow small ops several-fold.
# A student's kernel, alone, keeps torch's default.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# The labs' disk cache of trained results (fmlab.diskcache) goes to a fresh temporary directory, removed at exit: a
# test run never reads or writes the user's cache, and no run is sped up (or hidden) by an earlier one.
FMLAB_CACHE="$(mktemp -d -t fmlab_cache.XXXXXX)"
# ... shared by every pytest process of this run (tests/conftest.py would otherwise give each its own empty one), so
# that the second phase below loads what the first trained.
export FMLAB_CACHE FMLAB_TEST_SHARED_CACHE=1
trap 'rm -rf "$FMLAB_CACHE"' EXIT
if [ "$#" -gt 0 ]; then  # a selection of tests: run just that
  python -m pytest -q "$@"
  exit
fi
# Everything but the browser tests and the site export on every core (pytest-xdist; one worker per test file, at
# most 4 workers); it fills the disk cache. Then the export of every lab (their figures, from the warm cache; one
# kernel, in the background) beside the browser tests, which share one JupyterLab server and Chromium.
python -m pytest -q -m "not browser and not site" -n auto --maxprocesses 4 --dist loadfile --durations 15
site_log="$(mktemp -t fmlab_site.XXXXXX)"
FMLAB_EXPORT_JOBS=1 python -m pytest -q -m site -p no:cacheprovider --durations 1 > "$site_log" 2>&1 &
site_pid=$!
# One timed move per control keeps CI short; the recorded latency table uses FMLAB_LATENCY_MOVES=5 (labs/README.md).
# Screenshots only of a failed check (a lab's before/after pictures: run the browser suite alone, the default).
browser_rc=0
FMLAB_LATENCY_MOVES="${FMLAB_LATENCY_MOVES:-1}" FMLAB_BROWSER_SCREENSHOTS="${FMLAB_BROWSER_SCREENSHOTS:-failures}" \
  python -m pytest -q -m browser --durations 5 || browser_rc=$?
site_rc=0
wait "$site_pid" || site_rc=$?
echo "=== site export (tests/labs/test_export_site.py, run beside the browser tests) ==="
cat "$site_log"
rm -f "$site_log"
[ "$browser_rc" = 0 ] && [ "$site_rc" = 0 ]
