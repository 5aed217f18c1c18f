#!/usr/bin/env bash
# Builds (if needed) and runs every vgrad test through CTest. GPU tests report
# SKIPPED where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${VGRAD_BUILD_DIR:-build}
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  bash scripts/setup.sh
fi
cmake --build "$build_dir" -j"$(nproc)"
ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)" --timeout 300
