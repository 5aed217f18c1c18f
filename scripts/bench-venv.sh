#!/usr/bin/env bash
# bench-venv.sh: create (idempotently) .venv-bench with the benchmark peers of
# bench/compare.py: PyTorch (bench/torch_mlp.py), JAX with jit on the CPU
# (bench/jax_mlp.py, pip `jax[cpu]`) and numpy, all from PyPI (torch's wheel pulls the
# CUDA libraries too, several GB; download.pytorch.org is not reachable here). Falls
# back to Debian's python3-torch (1.13, /usr/bin/python3, no JAX) if the pip install
# fails. Nothing is fetched at run time: the venv works offline once made. The last
# line printed is the python interpreter to use (VGRAD_BENCH_VENV overrides the place).
set -uo pipefail
VENV="${VGRAD_BENCH_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv-bench}"
PY="${PYTHON:-python3}"
check() { "$1" -c 'import torch, numpy, jax' >/dev/null 2>&1; }

if check "$VENV/bin/python"; then
  echo "$VENV/bin/python"; exit 0
fi
pip() { "$VENV/bin/python" -m pip install -q "$@"; }
if { [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"; } && pip --upgrade pip >&2 &&
   { "$VENV/bin/python" -c 'import torch' 2>/dev/null || pip torch >&2; } &&
   pip numpy 'jax[cpu]' >&2 && check "$VENV/bin/python"; then
  echo "$VENV/bin/python"; exit 0
fi
echo "bench-venv: pip install of torch/jax failed; falling back to Debian python3-torch (no JAX peer)" >&2
if ! /usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y python3-torch python3-numpy >&2 || {
    echo "bench-venv: no torch available" >&2; exit 1; }
fi
echo /usr/bin/python3
