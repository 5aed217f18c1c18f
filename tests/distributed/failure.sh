#!/usr/bin/env bash
# A rank that dies, throws or hangs mid-training must end the whole job, non-zero and
# with a message naming the rank, within a bounded time (never a hang). Runs
# test_distributed's --failure-worker under mpirun with 2 ranks; rank 1 fails at step 3.
# Usage: failure.sh <test_distributed> <mpirun>. The OMPI_* settings come from CTest.
set -uo pipefail
bin=$1
mpirun=${2:-mpirun}
limit=60  # seconds; the hang case waits VGRAD_DISTRIBUTED_TIMEOUT=5 for the watchdog
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0

drill() {
  local mode=$1 expected=$2
  local start=$SECONDS
  VGRAD_DISTRIBUTED_TIMEOUT=5 timeout $limit "$mpirun" -np 2 "$bin" --failure-worker "$mode" > "$log" 2>&1
  local rc=$? seconds=$((SECONDS - start))
  if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
    echo "FAIL ($mode): exit status $rc after $seconds s (0: the job went on; 124: it hung until timeout)"
    tail -20 "$log"; status=1; return
  fi
  if ! grep -Eq "$expected" "$log"; then
    echo "FAIL ($mode): exited $rc after $seconds s without a message matching /$expected/"
    tail -20 "$log"; status=1; return
  fi
  echo "ok ($mode): exit status $rc after $seconds s: $(grep -Eo "$expected" "$log" | head -1)"
}

drill kill "process rank 1 .* exited on signal 9"
drill throw "rank 1 of 2 \(mpi\): injected failure in the training loop; aborting all ranks"
drill hang "rank 0 of 2 \(mpi\): all_reduce \(sum\) of [0-9]+ float32 elements \[[0-9]+\] has not completed after [0-9]+ s"
exit $status
