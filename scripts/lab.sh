#!/usr/bin/env bash
# Install fmlab into .venv and open the labs in JupyterLab. Extra arguments go to `jupyter lab`.
#
#   bash scripts/lab.sh                        # your laptop: opens a browser tab
#   bash scripts/lab.sh --no-browser           # a headless server: open the printed URL (it carries the token)
#   bash scripts/lab.sh --ip 0.0.0.0 --port 8888 --no-browser
#                                              # a class on a shared server: students open http://<host>:8888/lab
#                                              # and type the token printed at start, or set a password first
#                                              # with `.venv/bin/jupyter lab password`
#
# As root (containers, cloud VMs, classroom servers) JupyterLab refuses to start unless told, so this script adds
# --allow-root and says so. With no display (no $DISPLAY or $WAYLAND_DISPLAY on Linux) it adds --no-browser.
FMLAB_EXTRAS="" source "$(dirname "$0")/env.sh"
args=()
if [ "$(id -u)" = 0 ]; then
  echo "fmlab: running as root, so JupyterLab starts with --allow-root (use a normal user where you can)" >&2
  args+=(--allow-root)
fi
if [ "$(uname -s)" = Linux ] && [ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  echo "fmlab: no display here, so no browser is opened: open the http://...?token=... URL printed below" >&2
  args+=(--no-browser)
fi
exec jupyter lab "${args[@]}" labs/00_welcome.ipynb "$@"
