#!/usr/bin/env bash
# One command to check the CUDA backend on a GPU machine: the CUDA parity tests,
# the GPU training benchmark against PyTorch on the same GPU, and a short table.
#
#   bash scripts/gpu-check.sh            # where the Debian packages are installed: build, then run
#   bash scripts/gpu-check.sh --prepare  # build here into .gpu/ (binaries, shared libraries, data)
#   bash scripts/gpu-check.sh --run      # on a bare GPU machine, from what --prepare left in .gpu/
# The lent GPU machines have nvcc and PyTorch but none of vgrad's Debian packages,
# hence the split: prepare on the build machine, carry .gpu/, run there.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
out=.gpu

prepare() {
  [ -x /usr/local/cuda/bin/nvcc ] && export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DVGRAD_CUDA=ON -DVGRAD_NATIVE=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90}" >/dev/null
  cmake --build build-gpu -j"$(nproc)" --target test_cuda vgrad_bench
  rm -rf "$out" && mkdir -p "$out/lib" "$out/data"
  cp build-gpu/tests/test_cuda build-gpu/bench/vgrad_bench bench/torch_mlp.py "$out/"
  # Shared libraries the binaries need that a bare machine lacks (not libc, not the CUDA driver).
  for bin in "$out/test_cuda" "$out/vgrad_bench"; do
    ldd "$bin" | awk '/=> \//{print $3}' | grep -v -E 'libc\.so|libm\.so|libpthread|libdl\.so|ld-linux|libcuda\.so|librt\.so' \
      | xargs -r -I{} cp -L {} "$out/lib/"
  done
  cp -L /usr/lib/x86_64-linux-gnu/libopenblas.so.0 "$out/lib/" 2>/dev/null || true  # dlopen'ed, not in ldd
  cp /usr/share/datasets/fashion-mnist/*.gz "$out/data/"
  du -sh "$out"
}

run() {
  export LD_LIBRARY_PATH="$PWD/$out/lib:${LD_LIBRARY_PATH:-}"
  nvidia-smi -L || { echo "gpu-check: no GPU here"; exit 1; }
  echo "== CUDA tests"
  "$out/test_cuda" --gtest_brief=1 2>&1 | tee /tmp/gpu-tests.log | tail -n 30
  echo "== GPU benchmark (data resident on the GPU)"
  python=${PYTHON:-python3}
  rows=()
  for cfg in "64 256,128" "1024 4096,4096"; do
    set -- $cfg
    v=$("$out/vgrad_bench" --device cuda --batch "$1" --hidden "$2" --epochs 5 --data "$out/data")
    t=$("$python" "$out/torch_mlp.py" --device cuda --batch "$1" --hidden "$2" --epochs 5 --data "$out/data")
    rows+=("$1|$2|$v|$t")
  done
  printf '%s\n' "${rows[@]}" | "$python" -c '
import json, sys
print("| batch | hidden | vgrad s/epoch | PyTorch s/epoch | vgrad/PyTorch |")
print("| --- | --- | --- | --- | --- |")
for line in sys.stdin:
    b, h, v, t = line.rstrip("\n").split("|", 3)
    v, t = json.loads(v), json.loads(t)
    print(f"| {b} | {h} | {v[\"epoch_s_median\"]:.4f} | {t[\"epoch_s_median\"]:.4f} | {v[\"epoch_s_median\"]/t[\"epoch_s_median\"]:.2f} |")'
  grep -E "PASSED|FAILED|SKIPPED" /tmp/gpu-tests.log | tail -n 5
}

case "$mode" in
  --prepare) prepare ;;
  --run) run ;;
  all) prepare && run ;;
  *) echo "usage: gpu-check.sh [--prepare|--run]"; exit 2 ;;
esac
