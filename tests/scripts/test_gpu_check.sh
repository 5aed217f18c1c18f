#!/usr/bin/env bash
# scripts/gpu-check.sh's benchmark table (bench.md) from hand-written bench.jsonl rows in the
# format its bench stage writes: the optimizer column, each vgrad-only row's PyTorch reference
# (graph: the SGD off run; graphadam: the Adam run), the final losses, failed and cut-off
# runs, and a row whose runs disagree on the optimizer. The GPU runs that make such rows need
# a GPU; this needs none.
set -uo pipefail
script=$(cd "$(dirname "$0")/../.." && pwd)/scripts/gpu-check.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
status=0

vgrad() {  # batch hidden mode rc epoch_s_median peak_mib final_loss [extra result fields]
  printf '{"impl":"vgrad","batch":%s,"hidden":"%s","amp":"%s","rc":%s,"result":{"impl":"vgrad",%s"device":"cuda:0","batch":%s,"momentum":0,"epoch_s_median":%s,"final_loss":%s,"peak_allocated_mib":%s,"host_waits_per_epoch":2.0}}\n' \
    "$1" "$2" "$3" "$4" "${8:-}" "$1" "$5" "$7" "$6"
}
torch() {  # batch hidden mode rc epoch_s_median peak_mib final_loss [extra result fields]
  printf '{"impl":"torch","batch":%s,"hidden":"%s","amp":"%s","rc":%s,"result":{"impl":"pytorch",%s"device":"cuda","batch":%s,"momentum":0.0,"epoch_s_median":%s,"final_loss":%s,"peak_allocated_mib":%s}}\n' \
    "$1" "$2" "$3" "$4" "${8:-}" "$1" "$5" "$7" "$6"
}
adam='"optimizer":"adam","lr":0.001,'
{
  vgrad 64 256,128 off 0 0.1630 199 0.26112
  torch 64 256,128 off 0 0.8642 248 0.26377
  vgrad 64 256,128 graph 0 0.0903 199 0.26098
  vgrad 64 256,128 adam 0 0.2000 201 0.22450 "$adam"
  torch 64 256,128 adam 0 1.0000 250 0.22391 "$adam"
  vgrad 64 256,128 graphadam 0 0.1250 203 0.22463 "$adam"
  vgrad 1024 4096,4096 off 0 0.1516 421 0.31
  printf '{"impl":"torch","batch":1024,"hidden":"4096,4096","amp":"off","rc":124,"result":null}\n'
  vgrad 1024 4096,4096 adam 0 0.2000 430 0.2  # an Adam row whose vgrad run trained with SGD
  torch 1024 4096,4096 adam 0 0.1600 480 0.19 "$adam"
  printf '{"impl":"vgrad","batch":1024,"hidden":"4096,4096","amp":"graphadam","rc":1,"res\n'  # cut off
} >"$dir/bench.jsonl"

cat >"$dir/expected.md" <<'TABLE'
| batch | hidden | mode | optimizer | vgrad s/epoch | PyTorch s/epoch | vgrad/PyTorch | peak MiB vgrad / PyTorch | final loss vgrad / PyTorch |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| 64 | 256,128 | off | SGD lr 0.1 | 0.1630 | 0.8642 | 0.19 | 199 / 248 | 0.261 / 0.264 |
| 64 | 256,128 | graph | SGD lr 0.1 | 0.0903 | 0.8642 (eager, the off run) | 0.10 | 199 / 248 | 0.261 / 0.264 |
| 64 | 256,128 | adam | Adam lr 0.001 | 0.2000 | 1.0000 | 0.20 | 201 / 250 | 0.225 / 0.224 |
| 64 | 256,128 | graphadam | Adam lr 0.001 | 0.1250 | 1.0000 (eager, the adam run) | 0.12 | 203 / 250 | 0.225 / 0.224 |
| 1024 | 4096,4096 | off | SGD lr 0.1 | 0.1516 | failed | - | 421 / - | 0.310 / - |
| 1024 | 4096,4096 | adam | MISMATCH: Adam lr 0.001 vs SGD lr 0.1 | 0.2000 | 0.1600 | 1.25 | 430 / 480 | 0.200 / 0.190 |
TABLE

if ! bash "$script" --table "$dir/bench.jsonl" >"$dir/table.md" 2>"$dir/stderr"; then
  echo "FAIL: --table exited non-zero:"; cat "$dir/stderr"; status=1
fi
if ! diff -u "$dir/expected.md" "$dir/table.md"; then
  echo "FAIL: the table differs from the expected one (diff above: - expected, + got)"; status=1
fi

# A missing file is refused by name, not turned into an empty table.
if bash "$script" --table "$dir/none.jsonl" >"$dir/out" 2>&1; then
  echo "FAIL: --table of a missing file succeeded"; status=1
elif ! grep -q -- "--table needs bench.jsonl" "$dir/out"; then
  echo "FAIL: --table of a missing file said: $(cat "$dir/out")"; status=1
fi

[ $status = 0 ] && echo "PASS: gpu-check.sh --table"
exit $status
