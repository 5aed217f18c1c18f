#!/usr/bin/env bash
# mnist_mlp end to end, on a 2000-example slice of Fashion-MNIST (seconds): --epochs 4
# straight and 2 epochs then --epochs 4 --resume write byte-identical checkpoints,
# with momentum SGD (plus accumulation), with Adam, under each --lr-schedule (the
# scheduler's step count travels in the checkpoint) and with --amp fp16 (the loss scale
# does); --checkpoint into a missing directory fails before any training;
# --detect-anomaly names the op that made a NaN.
# Usage: mnist_resume.sh <mnist_mlp binary> [data dir]. Exits 77 (CTest: skipped) without data.
set -euo pipefail
bin=$1
data=${2:-}
source "$(dirname "$0")/mnist_data.sh"
common=(--data-dir "$data" --limit 2000 --hidden 32 --batch-size 50 --seed 3)

# The first half stops as an interrupted run would (--stop-after 2 of --epochs 4: a
# schedule spans all 4); `extend` instead finishes a 2-epoch run, then asks for 4, which
# equals 4 straight only at a constant lr.
check_resume() {
  local name=$1 how=$2; shift 2
  local first=(--epochs 4 --stop-after 2)
  [[ $how == extend ]] && first=(--epochs 2)
  "$bin" "${common[@]}" "$@" --epochs 4 --checkpoint "$dir/$name-straight.safetensors" > "$dir/log" 2>&1
  "$bin" "${common[@]}" "$@" "${first[@]}" --checkpoint "$dir/$name-resumed.safetensors" > "$dir/log" 2>&1
  if grep -q "epoch  3 " "$dir/log"; then echo "FAIL ($name): the first half trained epoch 3"; exit 1; fi
  "$bin" "${common[@]}" "$@" --epochs 4 --resume "$dir/$name-resumed.safetensors" \
    --checkpoint "$dir/$name-resumed.safetensors" > "$dir/log" 2>&1
  grep -q "resumed .* after epoch 2" "$dir/log" || { echo "FAIL ($name): the third run did not resume"; cat "$dir/log"; exit 1; }
  if grep -q "epoch  1 " "$dir/log"; then echo "FAIL ($name): the resumed run trained epoch 1 again"; exit 1; fi
  if cmp "$dir/$name-straight.safetensors" "$dir/$name-resumed.safetensors"; then
    echo "ok ($name): 4 epochs straight and 2 + resume 2 are byte-identical ($(stat -c %s "$dir/$name-straight.safetensors") bytes)"
  else
    echo "FAIL ($name): resumed checkpoint differs from the uninterrupted one"
    exit 1
  fi
}
check_resume sgd interrupt --optimizer sgd --lr 0.05 --momentum 0.9 --accumulate 3  # the default cosine schedule
check_resume adam extend --optimizer adam --lr 0.001 --lr-schedule none
check_resume cosine interrupt --optimizer sgd --lr 0.1 --lr-schedule cosine --accumulate 3
check_resume step interrupt --optimizer sgd --lr 0.1 --momentum 0.9 --lr-schedule step
# Float16 loss scaling: at this lr the scale backs off (4096 after 4 epochs), so a resume that
# started again from 2^16 would skip other steps; the checkpoint carries the GradScaler's state.
check_resume amp interrupt --optimizer sgd --lr 1 --lr-schedule none --amp fp16
if ! grep -aq '"scaler.scale":"' "$dir/amp-straight.safetensors" || grep -aq '"scaler.scale":"65536"' "$dir/amp-straight.safetensors"; then
  echo "FAIL (amp): no loss scale in the checkpoint, or one that never moved: the resume above proves nothing"; exit 1
fi
if "$bin" "${common[@]}" --optimizer adam --lr 0.001 --lr-schedule none --amp fp16 --epochs 5 \
  --resume "$dir/adam-straight.safetensors" > "$dir/log" 2>&1; then
  echo "FAIL: a float32 run's checkpoint resumed with --amp fp16 and no loss scale"; exit 1
fi
grep -q "holds no GradScaler state" "$dir/log" || { echo "FAIL: unclear error"; cat "$dir/log"; exit 1; }
echo "ok: a float32 checkpoint is refused by a float16 run, naming the missing loss scale"
# A schedule changes the run: the cosine checkpoint is not the constant-lr one.
"$bin" "${common[@]}" --optimizer sgd --lr 0.1 --lr-schedule none --accumulate 3 --epochs 4 --checkpoint "$dir/constant.safetensors" > "$dir/log" 2>&1
if cmp -s "$dir/constant.safetensors" "$dir/cosine-straight.safetensors"; then
  echo "FAIL: --lr-schedule cosine trained the same weights as a constant lr"; exit 1
fi
if "$bin" "${common[@]}" --epochs 1 --lr-schedule linear > "$dir/log" 2>&1; then
  echo "FAIL: --lr-schedule linear was accepted"; exit 1
fi
grep -q "lr-schedule" "$dir/log" || { echo "FAIL: the bad --lr-schedule is not named"; cat "$dir/log"; exit 1; }
echo "ok: --lr-schedule changes the run and refuses an unknown schedule"

# The checkpoint's directory is checked before the first epoch, not after it.
if "$bin" "${common[@]}" --epochs 1 --checkpoint "$dir/missing/ckpt.safetensors" > "$dir/log" 2>&1; then
  echo "FAIL: --checkpoint into a missing directory succeeded"; exit 1
fi
grep -q "directory $dir/missing does not exist" "$dir/log" || { echo "FAIL: unclear error"; cat "$dir/log"; exit 1; }
if grep -q "epoch  1 " "$dir/log"; then echo "FAIL: trained an epoch before checking --checkpoint"; exit 1; fi
echo "ok: --checkpoint into a missing directory is refused before training"

# An absurd learning rate overflows to Inf/NaN; anomaly mode stops at the first op that made one.
if "$bin" "${common[@]}" --epochs 1 --lr 1e20 --detect-anomaly > "$dir/log" 2>&1; then
  echo "FAIL: --detect-anomaly let a NaN run through"; exit 1
fi
grep -q "anomaly: .* produced \(NaN\|Inf\)" "$dir/log" || { echo "FAIL: no anomaly named"; cat "$dir/log"; exit 1; }
echo "ok: --detect-anomaly names the op: $(grep -o 'anomaly: .*' "$dir/log")"
