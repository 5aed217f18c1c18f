#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for vgrad: installs the system packages (only
# when missing), then configures and builds a Release build in build/.
# The CUDA backend is built when nvcc is found (/usr/local/cuda), skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make pkg-config xtensor-dev libxsimd-dev libopenblas-dev
  libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev zlib1g-dev
  nlohmann-json3-dev dataset-fashion-mnist gnuplot-nox libopenmpi-dev openmpi-bin python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
build_dir=${VGRAD_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${VGRAD_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
echo "setup: built vgrad in $build_dir"
