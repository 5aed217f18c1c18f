#!/usr/bin/env bash
# mnist_mlp under mpirun with 2 ranks, on a 2000-example slice of Fashion-MNIST (seconds):
#  - exact resume: --epochs 4 straight and --epochs 4 --stop-after 2 (an interrupted run: the default cosine
#    schedule spans all 4) then --resume to 4 write byte-identical
#    checkpoints (rank 0 writes them; momentum SGD with accumulation, and Adam);
#  - --accumulate 3 with batches of 50 per micro-batch reaches the test accuracy of one process
#    with batches of 150 (the same samples per step) at every epoch (to the printed 0.01%);
#  - a checkpoint rank 0 cannot write ends every rank, non-zero and with the reason, never a hang.
# Usage: mnist_distributed.sh <mnist_mlp> <mpirun> [data dir]. The OMPI_* settings come from CTest.
# Exits 77 (CTest: skipped) without the data.
set -uo pipefail
bin=$1
mpirun=$2
data=${3:-}
source "$(dirname "$0")/../examples/mnist_data.sh"
common=(--data-dir "$data" --limit 2000 --hidden 32 --seed 3)
status=0

two_ranks() { timeout 120 "$mpirun" -np 2 "$bin" --distributed "${common[@]}" "$@"; }

check_resume() {
  local name=$1; shift
  two_ranks "$@" --epochs 4 --checkpoint "$dir/$name-straight.safetensors" > "$dir/log" 2>&1 &&
    two_ranks "$@" --epochs 4 --stop-after 2 --checkpoint "$dir/$name-resumed.safetensors" > "$dir/log" 2>&1 &&
    two_ranks "$@" --epochs 4 --resume "$dir/$name-resumed.safetensors" \
      --checkpoint "$dir/$name-resumed.safetensors" > "$dir/log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ] || ! grep -q "resumed .* after epoch 2" "$dir/log"; then
    echo "FAIL ($name): a run failed (exit $rc) or the third did not resume"; tail -20 "$dir/log"; status=1; return
  fi
  if grep -q "epoch  1 " "$dir/log"; then echo "FAIL ($name): the resumed run trained epoch 1 again"; status=1; return; fi
  if cmp "$dir/$name-straight.safetensors" "$dir/$name-resumed.safetensors"; then
    echo "ok ($name): 2 ranks, 4 epochs straight and 2 + resume 2 are byte-identical ($(stat -c %s "$dir/$name-straight.safetensors") bytes)"
  else
    echo "FAIL ($name): the resumed 2-rank checkpoint differs from the uninterrupted one"; status=1
  fi
}
check_resume sgd --batch-size 50 --optimizer sgd --lr 0.05 --momentum 0.9 --accumulate 3
check_resume adam --batch-size 50 --optimizer adam --lr 0.001

# Accumulation across ranks against one process with the whole group as its batch.
accuracies() { grep -o "epoch  *[0-9]*  train loss [0-9.]*  test accuracy [0-9.]*%" "$1" | sed 's/train loss [0-9.]*  //'; }
two_ranks --epochs 3 --batch-size 50 --accumulate 3 --lr 0.1 --momentum 0.9 > "$dir/accumulated" 2>&1 ||
  { echo "FAIL: 2 ranks with --accumulate 3 failed"; tail -20 "$dir/accumulated"; status=1; }
timeout 120 "$bin" "${common[@]}" --epochs 3 --batch-size 150 --lr 0.1 --momentum 0.9 > "$dir/single" 2>&1 ||
  { echo "FAIL: the single-process run failed"; tail -20 "$dir/single"; status=1; }
if [ "$(accuracies "$dir/accumulated" | wc -l)" -eq 3 ] && [ "$(accuracies "$dir/accumulated")" = "$(accuracies "$dir/single")" ]; then
  echo "ok: 2 ranks x --accumulate 3 x 50 = 1 process x 150: $(accuracies "$dir/single" | tr '\n' ' ')"
else
  echo "FAIL: accumulation across ranks differs from the single-process large batch"
  diff <(accuracies "$dir/accumulated") <(accuracies "$dir/single"); status=1
fi

# Rank 0 cannot write the checkpoint: every rank ends, naming the directory, within the timeout.
start=$SECONDS
two_ranks --epochs 1 --batch-size 50 --checkpoint "$dir/missing/state.safetensors" > "$dir/log" 2>&1
rc=$?
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
  echo "FAIL: an unwritable checkpoint gave exit status $rc (0: ignored; 124: hung)"; tail -20 "$dir/log"; status=1
elif ! grep -q "rank [01] of 2 (mpi): .*directory $dir/missing does not exist" "$dir/log"; then
  echo "FAIL: no error naming the missing directory"; tail -20 "$dir/log"; status=1
else
  echo "ok: rank 0's unwritable checkpoint ended both ranks (exit $rc, $((SECONDS - start)) s): $(grep -o "rank [01] of 2 (mpi): .*" "$dir/log" | head -1)"
fi
exit $status
