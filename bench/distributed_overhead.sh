#!/usr/bin/env bash
# The cost of data parallelism on one machine: mnist_mlp (--limit 20000, 2 epochs, global
# batch 64) in one process against `mpirun -np 2 --distributed` under several settings,
# interleaved ROUNDS times; prints each run's second-epoch time and what rank 0's
# SyncStats say (all-reduce share of the epoch, seconds the step waited for it), then the
# medians. On a machine with as many cores as ranks this measures overhead, not scaling.
# Usage: bench/distributed_overhead.sh <build dir> [rounds] [config ...]
set -uo pipefail
build=${1:-build-cpu}
rounds=${2:-3}
shift 2 2>/dev/null || shift $#
bin=$build/examples/mnist_mlp
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
args=(--limit 20000 --epochs 2 --batch-size 64)
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(single mpi mpi-spin mpi-spin-blas2 mpi-bind-none mpi-spin-bind-none)
out=$(mktemp -d)
run() {  # config -> the log of one run
  case $1 in
    single) OPENBLAS_NUM_THREADS=2 "$bin" "${args[@]}" ;;
    single-blas1) OPENBLAS_NUM_THREADS=1 "$bin" "${args[@]}" ;;
    # vgrad's defaults for ranks that fill the cores (distributed::share_cores): 1 OpenBLAS thread, MPI yields
    mpi) env -u OPENBLAS_NUM_THREADS -u OMPI_MCA_mpi_yield_when_idle mpirun -np 2 "$bin" --distributed "${args[@]}" ;;
    # as before them: one OpenBLAS thread each, Open MPI spinning while it waits
    mpi-spin) OPENBLAS_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=0 mpirun -np 2 "$bin" --distributed "${args[@]}" ;;
    mpi-spin-blas2) OPENBLAS_NUM_THREADS=2 OMPI_MCA_mpi_yield_when_idle=0 mpirun -np 2 "$bin" --distributed "${args[@]}" ;;
    mpi-bind-none) env -u OPENBLAS_NUM_THREADS -u OMPI_MCA_mpi_yield_when_idle mpirun -np 2 --bind-to none "$bin" --distributed "${args[@]}" ;;
    mpi-spin-bind-none) OPENBLAS_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=0 mpirun -np 2 --bind-to none "$bin" --distributed "${args[@]}" ;;
    *) echo "unknown config $1" >&2; return 2 ;;
  esac
}
for round in $(seq "$rounds"); do
  for c in "${configs[@]}"; do
    run "$c" > "$out/$c.$round" 2>&1
    epoch=$(grep -o "epoch  2 .* [0-9.]* s (" "$out/$c.$round" | grep -o "[0-9.]* s (" | grep -o "[0-9.]*")
    share=$(grep "all-reduce" "$out/$c.$round" | tail -1 | grep -o "all-reduce [0-9.]* s ([0-9.]*%" | grep -o "[0-9.]*%")
    waited=$(grep "all-reduce" "$out/$c.$round" | tail -1 | grep -o "waited [0-9.]* s" | grep -o "[0-9.]*")
    echo "round $round  $c  epoch2 ${epoch:-?} s  all-reduce ${share:--}  step waited ${waited:--} s"
    echo "$c ${epoch:-nan}" >> "$out/epochs"
  done
done
echo "medians of the second epoch:"
for c in "${configs[@]}"; do
  printf '  %-20s %s s\n' "$c" "$(grep "^$c " "$out/epochs" | awk '{print $2}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done
rm -rf "$out"
