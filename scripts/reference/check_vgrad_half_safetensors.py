#!/usr/bin/env python3
# The reverse of make_torch_half_safetensors.py: loads a file vgrad wrote (the C++ test
# Checkpoint.HalfTensorsForPyTorchRoundTripBitForBit keeps it where VGRAD_KEEP_HALF_SAFETENSORS says)
# with PyTorch's safetensors loader and checks every value and bit pattern. Run by hand:
#   VGRAD_KEEP_HALF_SAFETENSORS=/tmp/vgrad_half.safetensors build-cpu/tests/test_nn \
#       --gtest_filter='Checkpoint.HalfTensorsForPyTorch*'
#   /tmp/venv/bin/python scripts/reference/check_vgrad_half_safetensors.py /tmp/vgrad_half.safetensors
import math, sys
import torch
from safetensors.torch import load_file

tensors = load_file(sys.argv[1])
inf, nan = math.inf, math.nan
source = [0.0, -0.0, 1.0, -2.5, 3e38, -65504.0, 2**-126, 2**-24, 1 / 3, 65520.0, inf, -inf, nan, 1e-45]
failures = 0
for name, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
    got = tensors[name]
    want = torch.tensor(source, dtype=torch.float32).to(dtype)  # PyTorch's own rounding of the same float32
    if got.dtype != dtype or got.shape != want.shape:
        print(f"FAIL {name}: {got.dtype} {list(got.shape)}, expected {dtype} {list(want.shape)}"); failures += 1
        continue
    for i, (g, w) in enumerate(zip(got.view(torch.int16).tolist(), want.view(torch.int16).tolist())):
        same = g == w or (math.isnan(got[i].item()) and math.isnan(want[i].item()))
        if not same:
            print(f"FAIL {name}[{i}] from {source[i]!r}: vgrad bits {g & 0xFFFF:#06x}, PyTorch {w & 0xFFFF:#06x}")
            failures += 1
matrix = tensors["bf16_matrix"]
if matrix.dtype != torch.bfloat16 or matrix.float().tolist() != [[1, 2, 3], [-4, 5.5, -6]]:
    print("FAIL bf16_matrix:", matrix); failures += 1
print("ok: every value matches PyTorch's" if failures == 0 else f"{failures} failures")
sys.exit(1 if failures else 0)
