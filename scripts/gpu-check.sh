#!/usr/bin/env bash
# gpu-check.sh: one command that checks the CUDA backend on a GPU machine: build vgrad with
# CUDA, run the whole test suite with VGRAD_REQUIRE_GPU=1 (no GPU = failure, not skip), run the
# GPU training benchmark beside PyTorch on the same GPU, and write logs, table and summary into
# $OUT. It runs every stage even when one fails, and exits with the worst status.
#
#   bash scripts/gpu-check.sh --prepare   # here (Debian packages installed): make the bundle .gpu/
#   bash scripts/gpu-check.sh --run       # on the bare GPU machine, from .gpu/ alone
#   bash scripts/gpu-check.sh             # on a machine with the Debian packages and a GPU
#   bash scripts/gpu-check.sh --selftest  # here, as root: --run with the Debian -dev files hidden
#   bash scripts/gpu-check.sh --table bench.jsonl  # anywhere: print bench.md's table from its JSON rows
#
# The remote command (the device tool's `run`, from the repository root, after --prepare):
#   command:   bash scripts/gpu-check.sh --run
#   carry:     [".gpu"]
#   timeout_s: 600
# The script keeps itself inside GPU_CHECK_BUDGET_S (default 540 s) so that its summary is
# written before the 600 s limit. What comes back from $OUT (8 files, each capped at 15 MiB):
#   summary.md     stage results, test counts, failed/skipped tests, table, environment
#   build.log      configure + build output (warnings counted in summary.md)
#   tests.log      ctest --output-on-failure, then the upload-pool reuse test with CUDA's lazy
#                  and eager module loading (its result in summary.md);  tests-full.log  every
#                  test's full output
#   examples.log   mnist_mlp on the GPU in float32, bf16 and fp16 (10 epochs, seeds 1 and 2)
#                  and mnist_cnn at its defaults (cuDNN); their last lines are in summary.md
#   bench.md       the table;  bench.jsonl  raw JSON rows;  bench.log  commands, stderr and
#                  vgrad's per-op profiles of one batch-64 epoch (unfused, then --fused-relu)
#
# The GPU machine has nvcc 13, CMake, ninja, the CUDA libraries and python3 with PyTorch, but
# none of vgrad's Debian -dev packages and no registry. The bundle (.gpu/, ignored by git) is:
#   deps.tar.xz  the files of the Debian -dev packages vgrad builds with (headers, CMake
#                configs, libgtest.a, libz.a, libspdlog/libfmt/libbenchmark .so) under a
#                relocated prefix, plus OpenBLAS (dlopen'ed) with libgfortran and libquadmath
#   data/        Fashion-MNIST, read by the benchmark
# so the GPU machine builds vgrad itself with its nvcc on 16 cores. CUDA's own libraries never
# travel. LD_LIBRARY_PATH (the OpenBLAS folder) is given to vgrad's programs only, never to
# python3: its PyTorch must load its own libraries.
#
# Knobs (environment): GPU_CHECK_BUDGET_S, GPU_CHECK_BUILD (build folder), GPU_CHECK_WORK
# (where the bundle unpacks), GPU_CHECK_JOBS, GPU_CHECK_DEVICE (cuda), GPU_CHECK_EPOCHS (5),
# GPU_CHECK_BENCH (batch:hidden[:mode] runs, mode off, bf16, fp16 (--amp), tf32 (--tf32), or
# one of these, vgrad only (PyTorch's column then comes from the off run, eager): fused
# (--fused-relu, Linear+ReLU as one cuBLASLt GEMM with its epilogue), hostsync / hostasync
# (the training set in host memory, fed by the DataLoader, --host-data sync|async: a host
# wait per batch vs the copy stream) and graph (--cuda-graph: each step one cuda::Graph
# replay). Every mode above trains with SGD lr 0.1; two train with Adam (lr 1e-3, PyTorch's
# defaults; the table's optimizer column says which): adam (--optimizer adam, vgrad and
# PyTorch eager, PyTorch's default foreach Adam) and graphadam (vgrad only: --cuda-graph
# --optimizer adam, a capturable Adam in the graph; PyTorch's column from the adam run);
# default "64:256,128 64:256,128:fused 64:256,128:hostsync 64:256,128:hostasync
# 64:256,128:graph 64:256,128:adam 64:256,128:graphadam 1024:4096,4096 1024:4096,4096:tf32
# 1024:4096,4096:bf16 1024:4096,4096:fp16"), CUDA_ARCHITECTURES (90), PYTHON (python3).
# For a short rerun: GPU_CHECK_STAGES (default "tests examples bench"; the build always runs,
# "tests" alone skips the examples and the benchmark), GPU_CHECK_TARGET (build one target, e.g.
# test_cuda), GPU_CHECK_TESTS (a ctest -R regex). With a short budget the build and the tests
# come first: what a stage keeps for the later ones (that run) is at most a fifth of the
# budget. GPU_CHECK_REV: the commit checked, for the summary (the device's .git can be stale).
set -uo pipefail  # no -e: every stage runs; each one's status is recorded
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
mode=${1:-all}
bundle=$root/.gpu
bundle_limit_mib=60  # the tool carries 64 MiB in all, the working tree included

die() { echo "gpu-check: $*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# ---------------------------------------------------------------- --prepare (here)
# Files of a Debian package under /usr, copied to $2 with /usr replaced by the prefix.
# Skipped: docs, sources, pkg-config, and symbolic links to absolute paths (libz.so ->
# /lib/...: the prefix keeps libz.a, so the GPU machine needs no libz development link).
copy_package() {
  local pkg=$1 prefix=$2 path target
  dpkg -L "$pkg" >/dev/null 2>&1 || die "Debian package $pkg is not installed (see BUILD-NOTES.md)"
  while IFS= read -r path; do
    case $path in
      /usr/include/* | /usr/lib/* | /usr/share/cmake/*) ;;
      *) continue ;;
    esac
    case $path in */pkgconfig/* | */doc/*) continue ;; esac
    target=$prefix/${path#/usr/}
    if [ -L "$path" ]; then
      case $(readlink "$path") in /*) continue ;; esac
      mkdir -p "$(dirname "$target")" && cp -P "$path" "$target"
    elif [ -f "$path" ]; then
      mkdir -p "$(dirname "$target")" && cp -p "$path" "$target"
    fi
  done < <(dpkg -L "$pkg")
}

prepare() {
  local stage=$bundle/stage prefix pkg f size tree total
  command -v xz >/dev/null || die "xz is needed to compress the bundle"
  rm -rf "$bundle" && mkdir -p "$stage/prefix/lib" "$bundle/data" || die "cannot write $bundle"
  prefix=$stage/prefix
  for pkg in libxtensor-dev xtl-dev libxsimd-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 \
             nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev \
             libbenchmark1debian zlib1g-dev; do
    copy_package "$pkg" "$prefix"
  done
  # zlib is static (no runtime library to carry) and flat in lib/, where FindZLIB looks
  # whatever the GPU machine's compiler says its library architecture is.
  mv "$prefix"/lib/x86_64-linux-gnu/libz.a "$prefix/lib/" || die "libz.a missing"
  # OpenBLAS: the headers vgrad compiles against, and the library it dlopens with what that
  # needs beside it (libgfortran, libquadmath); the 58 MB static archive stays here.
  mkdir -p "$prefix/include/x86_64-linux-gnu/openblas-pthread"
  cp -p /usr/include/x86_64-linux-gnu/openblas-pthread/*.h "$prefix/include/x86_64-linux-gnu/openblas-pthread/" \
    || die "OpenBLAS headers missing (libopenblas-dev)"
  for f in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    cp -L "/usr/lib/x86_64-linux-gnu/$f" "$prefix/lib/$f" || die "$f missing"
  done
  ln -s libopenblas.so.0 "$prefix/lib/libopenblas.so"  # for bench/'s gemm_floor link
  dpkg-query -W -f '${Package} ${Version}\n' libxtensor-dev xtl-dev libxsimd-dev libspdlog-dev \
    libfmt-dev nlohmann-json3-dev libcli11-dev libgtest-dev libbenchmark-dev zlib1g-dev \
    libopenblas0-pthread libgfortran5 dataset-fashion-mnist >"$prefix/PACKAGES.txt"
  echo "prepared from vgrad $(git rev-parse --short HEAD 2>/dev/null) on $(date -u +%F)" >>"$prefix/PACKAGES.txt"
  echo "compressing the dependencies (xz -9, ~30 s)..."
  tar -C "$stage" -cf - prefix | xz -9 -T2 >"$bundle/deps.tar.xz" || die "tar/xz failed"
  rm -rf "$stage"
  cp -p /usr/share/datasets/fashion-mnist/*-ubyte.gz "$bundle/data/" || die "Fashion-MNIST missing"
  [ "$(ls "$bundle"/data/*.gz | wc -l)" = 4 ] || die "expected 4 Fashion-MNIST files"

  size=$(du -sb "$bundle" | cut -f1)
  # The rest of what travels: tracked and untracked-not-ignored files.
  tree=$( (git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null || echo 0) | tail -1 | cut -f1)
  total=$((size + tree))
  ls -l "$bundle/deps.tar.xz" "$bundle"/data/
  echo "bundle .gpu/: $(mib "$size") MiB (limit $bundle_limit_mib MiB); with the working tree ($(mib "$tree") MiB): $(mib "$total") MiB of the 64 MiB that travel"
  if [ "$size" -gt $((bundle_limit_mib * 1048576)) ] || [ "$total" -gt $((64 * 1048576)) ]; then
    die "the bundle is too large to travel"
  fi
  echo "remote command: bash scripts/gpu-check.sh --run   carry: [\".gpu\"]   timeout_s: 600"
}

# ---------------------------------------------------------------- the check (GPU machine)
out=${OUT:-$root/out/gpu-check}
budget=${GPU_CHECK_BUDGET_S:-540}
jobs=${GPU_CHECK_JOBS:-$(nproc)}
device=${GPU_CHECK_DEVICE:-cuda}
epochs=${GPU_CHECK_EPOCHS:-5}
configs=${GPU_CHECK_BENCH:-64:256,128 64:256,128:fused 64:256,128:hostsync 64:256,128:hostasync 64:256,128:graph 64:256,128:adam 64:256,128:graphadam 1024:4096,4096 1024:4096,4096:tf32 1024:4096,4096:bf16 1024:4096,4096:fp16}
python=${PYTHON:-python3}
worst=0
stages=()
examples_summary=()

# Seconds left before the budget, less what later stages keep for themselves. What a stage
# keeps for later ones is at most a fifth of the budget (reserve), so that with a short
# budget the build and the tests come first, then the examples, then the benchmark.
left() { local n=$((budget - SECONDS - ${1:-0})); [ $n -lt 10 ] && n=10; echo $n; }
wanted=" ${GPU_CHECK_STAGES:-tests examples bench} "
runs() { case $wanted in *" $1 "*) return 0 ;; esac; return 1; }
# What to keep for the later stages $2...: $1 seconds if any of them runs, at most budget/5.
reserve() {
  local want=$1 most=$((budget / 5)) stage later=0
  shift
  for stage in "$@"; do runs "$stage" && later=1; done
  [ $later = 0 ] && want=0
  [ "$want" -lt $most ] && echo "$want" || echo $most
}
cap() { local want=$1 have; have=$(left "${2:-0}"); [ "$want" -lt "$have" ] && echo "$want" || echo "$have"; }
record() {  # stage, status, note
  stages+=("| $1 | $2 | ${3//|//} |")
  [ "$2" -gt "$worst" ] && worst=$2
  echo "== $1: status $2 ${3:+($3)}"
}
# "${vgrad_env[@]}" prefixes the programs vgrad built (and ctest): OpenBLAS's folder on
# LD_LIBRARY_PATH. python3 never gets that variable.
vgrad_env=(env)
py() { env -u LD_LIBRARY_PATH "$python" "$@"; }

unpack() {  # the bundle into $work; sets prefix, libdir, data
  work=${GPU_CHECK_WORK:-/tmp/vgrad-gpu-check}
  [ -f "$bundle/deps.tar.xz" ] || { record unpack 1 "no $bundle/deps.tar.xz: run --prepare here and carry .gpu"; return 1; }
  rm -rf "$work" && mkdir -p "$work" || { record unpack 1 "cannot write $work"; return 1; }
  if command -v xz >/dev/null; then
    tar -C "$work" -xJf "$bundle/deps.tar.xz"
  else  # Python's lzma needs no xz binary
    py -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle/deps.tar.xz" "$work"
  fi
  local rc=$?
  record unpack $rc "$work/prefix"
  prefix=$work/prefix
  libdir=$prefix/lib
  vgrad_env=(env "LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  data=$bundle/data
  return $rc
}

environment() {
  {
    echo '```'
    echo "host: $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "nvidia-smi: no GPU answered"
    echo "nvcc: $(nvcc --version 2>&1 | grep -m1 release || echo missing)"
    echo "cmake: $(cmake --version | head -1); ninja: $(ninja --version 2>/dev/null || echo none)"
    echo "c++: $(c++ --version 2>&1 | head -1)"
    echo "libstdc++ newest: $( (ldconfig -p | awk '/libstdc\+\+\.so\.6 /{print $NF; exit}' | xargs -r strings | grep -o 'GLIBCXX_3\.4\.[0-9]*' | sort -t. -k3 -n | tail -1) 2>/dev/null)"
    echo "python: $(py -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"
    # The device's copy of .git can be stale: the caller may name the commit (GPU_CHECK_REV).
    echo "vgrad: ${GPU_CHECK_REV:-$(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | grep -q . && echo '(uncommitted changes)')}"
    [ -n "${prefix:-}" ] && tail -1 "$prefix/PACKAGES.txt" 2>/dev/null
    echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset}"
    echo '```'
  } >"$out/env.part" 2>&1
}

build() {
  local gen=() extra=() dir rc t
  build_dir=${GPU_CHECK_BUILD:-$root/build-gpu}
  command -v ninja >/dev/null && gen=(-G Ninja)
  if [ -n "${prefix:-}" ]; then
    # Every package config of the prefix by name (Debian puts them under lib/<arch>/, which
    # CMake searches only when the compiler reports that architecture).
    while IFS= read -r dir; do
      extra+=("-D$(basename "$dir")_DIR=$dir")
    done < <(find "$prefix/lib" "$prefix/share" -name '*onfig.cmake' -printf '%h\n' 2>/dev/null | sort -u)
    extra+=("-DCMAKE_PREFIX_PATH=$prefix" "-DZLIB_ROOT=$prefix")
  fi
  t=$(left "$(reserve 200 tests examples bench)")  # configure + build: what the later stages leave
  # cuDNN (conv2d): the toolkit's when it has one; else the one PyTorch's wheel brought
  # (nvidia/cudnn: include/ and lib/libcudnn.so.9), found by CMake through CUDNN_ROOT;
  # else none, and conv2d runs on im2col + cuBLAS (the summary says which).
  local nvcc_dir cudnn_root=''
  nvcc_dir=$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")
  if ! ls "$nvcc_dir"/../include/cudnn.h "$nvcc_dir"/../targets/*/include/cudnn.h >/dev/null 2>&1; then
    cudnn_root=$(py -c 'import nvidia.cudnn as c; print(list(c.__path__)[0])' 2>/dev/null)
    if [ -n "$cudnn_root" ] && [ -f "$cudnn_root/include/cudnn.h" ]; then
      export CUDNN_ROOT=$cudnn_root
      vgrad_env+=("LD_LIBRARY_PATH=$cudnn_root/lib${libdir:+:$libdir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    fi
  fi
  {
    echo "+ cmake ${gen[*]} -DVGRAD_CUDA=ON ${extra[*]}"
    timeout -k 10 "$t" bash -c '
      cmake -S "$1" -B "$2" "${@:5}" -DCMAKE_BUILD_TYPE=Release -DVGRAD_CUDA=ON \
        -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
        -DCMAKE_CUDA_ARCHITECTURES="$3" -DVGRAD_WERROR=OFF -DVGRAD_BUILD_EXAMPLES=ON || exit $?
      # Keep going past a failing file: the tests that did build still run.
      target=(${GPU_CHECK_TARGET:+--target "$GPU_CHECK_TARGET"})
      if [ -f "$2/build.ninja" ]; then cmake --build "$2" -j"$4" "${target[@]}" -- -k 0; else cmake --build "$2" -j"$4" "${target[@]}" -- -k; fi
    ' _ "$root" "$build_dir" "${CUDA_ARCHITECTURES:-90}" "$jobs" "${gen[@]}" "${extra[@]}"
  } >"$out/build.log" 2>&1
  rc=$?
  record build $rc "$(grep -c 'error:' "$out/build.log") lines with 'error:', $(grep -c 'warning:' "$out/build.log") with 'warning:'; limit ${t}s; $(grep -m1 -o 'vgrad cuDNN: .*' "$out/build.log" || echo 'vgrad cuDNN: not configured')"
  if [ -n "${prefix:-}" ]; then  # show where each dependency came from
    grep -E '^(xtl|xsimd|xtensor|spdlog|fmt|nlohmann_json|GTest|CLI11|benchmark)_DIR|^ZLIB_(INCLUDE_DIR|LIBRARY_RELEASE)|^OPENBLAS_(INCLUDE_DIR|LIBRARY)' \
      "$build_dir/CMakeCache.txt" >"$out/deps.part" 2>/dev/null
  fi
}

run_tests() {
  local t rc line
  t=$(cap 240 "$(reserve 200 examples bench)")  # what the examples and the benchmark keep
  # Each test's own limit fits in the stage's, so a test that hangs is reported as a
  # timeout and the others' results and the failure list are still written.
  local per_test=$((t >= 240 ? 120 : t / 2))
  [ $per_test -lt 30 ] && per_test=30
  # The two real-data tests read Debian's dataset folder: on the bare GPU machine, point it
  # at the bundle's copy (a throwaway machine; only when the folder is absent).
  if [ -n "${data:-}" ] && [ ! -e /usr/share/datasets/fashion-mnist ] && mkdir -p /usr/share/datasets 2>/dev/null; then
    ln -s "$data" /usr/share/datasets/fashion-mnist && echo "linked /usr/share/datasets/fashion-mnist -> $data"
  fi
  VGRAD_REQUIRE_GPU=1 timeout -k 10 "$t" "${vgrad_env[@]}" \
    ctest --test-dir "$build_dir" -j"$jobs" --timeout "$per_test" --output-on-failure ${GPU_CHECK_TESTS:+-R "$GPU_CHECK_TESTS"} \
    >"$out/tests.log" 2>&1
  rc=$?
  cp "$build_dir/Testing/Temporary/LastTest.log" "$out/tests-full.log" 2>/dev/null
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$out/tests.log" | tail -1)
  [ $rc = 124 ] && line="timed out after ${t}s; ${line:-no ctest summary}"
  record tests $rc "VGRAD_REQUIRE_GPU=1: ${line:-no ctest summary (see tests.log)}"
  module_loading
}

# Runs 4 and 5's open question (docs/gpu.md): the upload pool's reuse test skips when the GPU
# finished its queued work before the host asked again; is CUDA's lazy module loading (a
# kernel's first launch may wait for the device) the cause? The same test with modules loaded
# lazily (CUDA's default) and eagerly, appended to tests.log. A diagnostic: status 0 always.
module_loading() {
  local test=CudaAllocator.TheUploadPoolReusesABlockOnlyAfterTheComputeStreamIsDoneWithIt loading result note=''
  [ -x "$build_dir/tests/test_cuda" ] || return 0
  for loading in LAZY EAGER; do
    {
      echo "+ CUDA_MODULE_LOADING=$loading test_cuda --gtest_filter=$test"
      CUDA_MODULE_LOADING=$loading VGRAD_REQUIRE_GPU=1 timeout -k 5 "$(cap 60 "$(reserve 100 examples bench)")" "${vgrad_env[@]}" \
        "$build_dir/tests/test_cuda" --gtest_filter="$test"
    } >"$out/loading.tmp" 2>&1
    cat "$out/loading.tmp" >>"$out/tests.log"
    result=$(grep -m1 -oE '\[ +(OK|SKIPPED|FAILED) +\]' "$out/loading.tmp" | tr -d '[] ')
    note+="$loading: ${result:-no result}$(grep -q 'had finished the queued work' "$out/loading.tmp" && echo ' (the GPU was done)'); "
  done
  rm -f "$out/loading.tmp"
  record loading 0 "the upload-pool reuse test: ${note%; }"
}

# The examples a user runs first, on the GPU: mixed precision against float32 (the same
# seeds), and the CNN through cuDNN. Each run's step-memory line and last two lines go to
# the summary.
examples() {
  local args rc t status=0
  : >"$out/examples.log"
  [ -n "${data:-}" ] || data=/usr/share/datasets/fashion-mnist
  for args in "mnist_mlp --amp off --seed 1" "mnist_mlp --amp bf16 --seed 1" "mnist_mlp --amp fp16 --seed 1" \
              "mnist_mlp --amp off --seed 2" "mnist_mlp --amp bf16 --seed 2" "mnist_mlp --amp fp16 --seed 2" \
              "mnist_cnn"; do
    t=$(cap 90 "$(reserve 100 bench)")  # what the benchmark keeps
    echo "+ $args --device $device --data-dir $data (limit ${t}s)" >>"$out/examples.log"
    # shellcheck disable=SC2086  # args holds the program and its flags
    timeout -k 5 "$t" "${vgrad_env[@]}" "$build_dir/examples/"$args --device "$device" --data-dir "$data" \
      >"$out/example.tmp" 2>&1
    rc=$?
    cat "$out/example.tmp" >>"$out/examples.log"
    [ $rc -gt $status ] && status=$rc
    examples_summary+=("$args: $( [ $rc = 0 ] || echo "status $rc; ")$( { grep -m1 'one step at batch' "$out/example.tmp"; grep -E 'epoch +[0-9]+ +train|done:|rror' "$out/example.tmp" | tail -2; } | sed -E 's/^\[[^]]*\] \[[a-z]*\] //' | tr '\n' ' ')")
  done
  rm -f "$out/example.tmp"
  record examples $status "mnist_mlp x6, mnist_cnn on $device; see examples.log"
}

bench() {
  local cfg batch hidden amp rest t rc impl impls note flags
  : >"$out/bench.jsonl"
  : >"$out/bench.log"
  [ -n "${data:-}" ] || data=/usr/share/datasets/fashion-mnist
  for cfg in $configs; do
    batch=${cfg%%:*}
    rest=${cfg#*:}
    hidden=${rest%%:*}
    amp=off
    [ "$rest" != "$hidden" ] && amp=${rest#*:}
    flags=(--amp "$amp")
    [ "$amp" = tf32 ] && flags=(--amp off --tf32)
    impls="vgrad torch"
    case $amp in  # vgrad only: torch_mlp.py has no peer for these (its eager off/adam run is the reference)
      hostsync) flags=(--amp off --host-data sync); impls=vgrad ;;
      hostasync) flags=(--amp off --host-data async); impls=vgrad ;;
      fused) flags=(--amp off --fused-relu); impls=vgrad ;;
      graph) flags=(--amp off --cuda-graph); impls=vgrad ;;
      adam) flags=(--amp off --optimizer adam) ;;
      graphadam) flags=(--amp off --cuda-graph --optimizer adam); impls=vgrad ;;
    esac
    for impl in $impls; do
      t=$(cap 150 15)
      echo "+ $impl --device $device --batch $batch --hidden $hidden ${flags[*]} --epochs $epochs (limit ${t}s)" >>"$out/bench.log"
      if [ $impl = vgrad ]; then
        timeout -k 5 "$t" "${vgrad_env[@]}" "$build_dir/bench/vgrad_bench" --device "$device" --batch "$batch" --hidden "$hidden" \
          "${flags[@]}" --epochs "$epochs" --data "$data" >"$out/row.tmp" 2>>"$out/bench.log"
      else
        timeout -k 5 "$t" env -u LD_LIBRARY_PATH "$python" bench/torch_mlp.py --device "$device" --batch "$batch" \
          --hidden "$hidden" "${flags[@]}" --epochs "$epochs" --data "$data" >"$out/row.tmp" 2>>"$out/bench.log"
      fi
      rc=$?
      cat "$out/row.tmp" >>"$out/bench.log"
      # One row per run: {"run": ..., "rc": ..., "result": <the program's JSON line or null>}
      printf '{"impl":"%s","batch":%s,"hidden":"%s","amp":"%s","rc":%s,"result":%s}\n' "$impl" "$batch" "$hidden" "$amp" "$rc" \
        "$(grep -m1 '^{' "$out/row.tmp" || echo null)" >>"$out/bench.jsonl"
      if [ $rc = 0 ]; then note="$(grep -o '"epoch_s_median": *[0-9.]*' "$out/row.tmp")"
      elif [ $rc = 124 ]; then note="timed out after ${t}s"
      elif [ $impl = vgrad ] && [ ! -x "$build_dir/bench/vgrad_bench" ]; then note="vgrad_bench was not built"
      else note="$(tail -1 "$out/bench.log" | cut -c1-150)"; fi
      record "bench $impl b$batch h$hidden $amp" $rc "$note"
    done
  done
  rm -f "$out/row.tmp"
  # Where a launch-bound step goes: vgrad's profiler over one batch-64 epoch (into bench.log).
  echo "+ vgrad_bench --device $device --batch 64 --epochs 1 --profile" >>"$out/bench.log"
  timeout -k 5 "$(cap 60 10)" "${vgrad_env[@]}" "$build_dir/bench/vgrad_bench" --device "$device" --batch 64 --epochs 1 \
    --profile --data "$data" >>"$out/bench.log" 2>&1
  echo "+ vgrad_bench --device $device --batch 64 --epochs 1 --profile --fused-relu" >>"$out/bench.log"
  timeout -k 5 "$(cap 60 10)" "${vgrad_env[@]}" "$build_dir/bench/vgrad_bench" --device "$device" --batch 64 --epochs 1 \
    --profile --fused-relu --data "$data" >>"$out/bench.log" 2>&1
  table "$out/bench.jsonl" >"$out/bench.md" 2>>"$out/bench.log" || echo "(table failed: see bench.log)" >"$out/bench.md"
}

# bench.md's table from bench.jsonl's rows ($1), on stdout (--table runs it alone, to check it
# anywhere). Python 3.11-safe: no quotes nested inside f-string expressions.
table() {
  py - "$1" <<'EOF'
import json, sys

runs = {}
for line in open(sys.argv[1]):
    try:
        row = json.loads(line)
    except ValueError:  # a run whose output was cut off
        continue
    result = row["result"]
    ok = row["rc"] == 0 and isinstance(result, dict) and "epoch_s_median" in result
    runs[(row["batch"], row["hidden"], row.get("amp", "off"), row["impl"])] = result if ok else None


# vgrad-only modes -> the mode whose PyTorch run (eager, the same model and optimizer) is
# their reference.
REFERENCE = {"fused": "off", "hostsync": "off", "hostasync": "off", "graph": "off", "graphadam": "adam"}
ADAM_MODES = ("adam", "graphadam")  # every other mode trains with SGD


def optimizer(result):
    """What a run trained with, from its own JSON line (SGD's lines have no "optimizer")."""
    if result.get("optimizer", "sgd") == "adam":
        return "Adam lr %g" % result.get("lr", 1e-3)
    momentum = result.get("momentum", 0)
    return "SGD lr 0.1" + (", momentum %g" % momentum if momentum else "")


def optimizer_label(mode, results):
    """The row's optimizer: what its runs say they ran; both must agree, so no SGD figure
    is set beside an Adam one unmarked. Without a result, what the mode asks for."""
    said = sorted({optimizer(r) for r in results if isinstance(r, dict)})
    if not said:
        return "Adam lr 0.001" if mode in ADAM_MODES else "SGD lr 0.1"
    return said[0] if len(said) == 1 else "MISMATCH: " + " vs ".join(said)


def cell(result):
    if result == "not run":
        return "-"
    if result is None:
        return "failed"
    if result.get("host_data", "off") != "off":  # the loader's before/after: its host waits too
        return "%.4f (%.0f host waits/epoch)" % (result["epoch_s_median"], result.get("host_waits_per_epoch", -1))
    return "%.4f" % result["epoch_s_median"]


def peak(result):
    if result is None or result == "not run" or "peak_allocated_mib" not in result:
        return "-"
    return "%.0f" % result["peak_allocated_mib"]


def loss(result):  # the last epoch's mean training loss: that the run trained (ln 10 = 2.30 untrained)
    if not isinstance(result, dict) or "final_loss" not in result:
        return "-"
    return "%.3f" % result["final_loss"]


def order(config):  # per model: SGD's rows, then Adam's; each led by its eager row
    batch, hidden, mode = config
    return (batch, hidden, mode in ADAM_MODES, mode not in ("off", "adam"), mode)


print("| batch | hidden | mode | optimizer | vgrad s/epoch | PyTorch s/epoch | vgrad/PyTorch | peak MiB vgrad / PyTorch | final loss vgrad / PyTorch |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for config in sorted({k[:3] for k in runs}, key=order):
    v, t = runs.get(config + ("vgrad",), "not run"), runs.get(config + ("torch",), "not run")
    reference = ""
    if t == "not run" and config[2] in REFERENCE:  # PyTorch's eager run of the same model and optimizer
        base = REFERENCE[config[2]]
        t, reference = runs.get(config[:2] + (base, "torch"), "not run"), " (eager, the %s run)" % base
    ratio = "%.2f" % (v["epoch_s_median"] / t["epoch_s_median"]) if isinstance(v, dict) and isinstance(t, dict) else "-"
    print("| %s | %s | %s | %s | %s | %s%s | %s | %s / %s | %s / %s |" % (config + (optimizer_label(config[2], (v, t)), cell(v), cell(t),
                                                                         reference, ratio, peak(v), peak(t), loss(v), loss(t))))
EOF
}

summarize() {
  local f
  {
    echo "# gpu-check: $( [ $worst = 0 ] && echo PASS || echo "FAIL (worst status $worst)") — $(date -u '+%F %T UTC'), ${SECONDS}s of ${budget}s"
    echo
    echo "| stage | status | note |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${stages[@]}"
    if [ -f "$out/tests.log" ]; then
      echo
      echo "## Tests that failed or did not run (first 60)"
      echo '```'
      sed -n '/The following tests FAILED:/,$p; /The following tests did not run:/,/^$/p' "$out/tests.log" | head -60
      echo '```'
    fi
    if [ ${#examples_summary[@]} -gt 0 ]; then
      echo
      echo "## Examples on $device (one step's peak memory, last epoch, best accuracy)"
      printf -- '- %s\n' "${examples_summary[@]}"
    fi
    if [ -f "$out/bench.md" ]; then
      echo
      echo "## Benchmark ($device, $epochs timed epochs after one warm-up; median s/epoch)"
      cat "$out/bench.md"
    fi
    echo
    echo "## Environment"
    cat "$out/env.part" 2>/dev/null
    if [ -s "$out/deps.part" ]; then
      echo
      echo "Dependencies as CMake found them:"
      echo '```'
      cat "$out/deps.part"
      echo '```'
    fi
  } >"$out/summary.md"
  rm -f "$out/env.part" "$out/deps.part"
  for f in "$out"/*; do  # the tool brings back files of at most 16 MiB
    if [ "$(stat -c %s "$f")" -gt $((15 * 1048576)) ]; then
      { head -c $((5 * 1048576)) "$f"; printf '\n[... cut by gpu-check ...]\n'; tail -c $((9 * 1048576)) "$f"; } >"$f.cut" && mv "$f.cut" "$f"
    fi
  done
  cat "$out/summary.md"
}

check() {  # $1: bundle (GPU machine) or system (Debian packages installed)
  prefix='' libdir='' data='' vgrad_env=(env)
  mkdir -p "$out" || die "cannot write $out"
  rm -f "$out"/*.log "$out"/*.md "$out"/*.jsonl
  if [ "$1" = bundle ]; then unpack; fi
  environment
  if ! command -v nvidia-smi >/dev/null; then record gpu 1 "no nvidia-smi here"
  elif nvidia-smi -L >/dev/null 2>&1; then record gpu 0 "$(nvidia-smi -L | head -1)"
  else record gpu 1 "nvidia-smi: $(nvidia-smi -L 2>&1 | head -1)"; fi
  build
  run_tests
  runs examples && examples
  runs bench && bench
  summarize
  echo "gpu-check: logs in $out; exit status $worst"
  exit "$worst"
}

# ---------------------------------------------------------------- --selftest (here, as root)
# --run in a private mount namespace where Debian's -dev files and the dataset are hidden
# (bound over by empty ones), so everything must come from the bundle (the dataset folder
# is then absent, as on the GPU machine, and --run links it to the bundle's copy). There is no GPU here:
# the CPU tests pass, the GPU tests fail (VGRAD_REQUIRE_GPU=1), and the exit status is non-zero.
selftest() {
  [ -f "$bundle/deps.tar.xz" ] || die "run --prepare first"
  command -v unshare >/dev/null || die "needs unshare (util-linux) and root"
  export GPU_CHECK_BUILD=${GPU_CHECK_BUILD:-$root/build-gpu-selftest} GPU_CHECK_WORK=${GPU_CHECK_WORK:-/tmp/vgrad-gpu-selftest}
  export OUT=${OUT:-$root/out/gpu-selftest}
  unshare -m bash -c '
    set -u
    empty_dir=$(mktemp -d) empty_file=$(mktemp)
    lib=/usr/lib/x86_64-linux-gnu
    for p in /usr/include/{xtensor,xtl,xsimd,spdlog,fmt,nlohmann,CLI,gtest,gmock,benchmark} \
             /usr/include/x86_64-linux-gnu/openblas-pthread $lib/openblas-pthread $lib/cmake /usr/share/cmake \
             /usr/src/googletest /usr/share/datasets; do
      [ -d "$p" ] && mount --bind "$empty_dir" "$p"
    done
    for p in /usr/include/zlib.h /usr/include/zconf.h $lib/libz.a $lib/libgtest.a $lib/libgtest_main.a \
             $lib/libgmock.a $lib/libspdlog.so.1.10.0 $lib/libfmt.so.9.1.0 $lib/libbenchmark.so.1.7.1 \
             $lib/libgfortran.so.5.0.0 $lib/libquadmath.so.0.0.0; do
      [ -e "$p" ] && mount --bind "$empty_file" "$p"
    done
    echo "selftest: Debian -dev files hidden: $(ls /usr/include/xtensor | wc -l) xtensor headers visible, zlib.h $(stat -c %s /usr/include/zlib.h) bytes"
    exec bash "$0" --run
  ' "$root/scripts/gpu-check.sh"
}

case "$mode" in
  --prepare) prepare ;;
  --run) check bundle ;;
  all) check system ;;
  --selftest) selftest ;;
  --table) [ -f "${2:-}" ] || die "--table needs bench.jsonl (one JSON row per run)"; table "$2" ;;
  *) echo "usage: gpu-check.sh [--prepare | --run | --selftest | --table bench.jsonl]  (no argument: build with the Debian packages, then check)"; exit 2 ;;
esac
