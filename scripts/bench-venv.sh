#!/usr/bin/env bash
# bench-venv.sh: create (idempotently) .venv-bench with the current PyTorch from
# PyPI plus numpy, for the benchmark peer bench/torch_mlp.py. Falls back to
# Debian's python3-torch (1.13, /usr/bin/python3) if the pip install fails.
# The last line printed is the python interpreter to use.
set -uo pipefail
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv-bench"
PY="${PYTHON:-python3}"
check() { "$1" -c 'import torch, numpy' >/dev/null 2>&1; }

if check "$VENV/bin/python"; then
  echo "$VENV/bin/python"; exit 0
fi
if { [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"; } &&
   "$VENV/bin/python" -m pip install -q --upgrade pip &&
   "$VENV/bin/python" -m pip install -q torch numpy &&
   check "$VENV/bin/python"; then
  echo "$VENV/bin/python"; exit 0
fi
echo "bench-venv: pip install of torch failed; falling back to Debian python3-torch" >&2
if ! check /usr/bin/python3; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y python3-torch python3-numpy >&2 || {
    echo "bench-venv: no torch available" >&2; exit 1; }
fi
echo /usr/bin/python3
