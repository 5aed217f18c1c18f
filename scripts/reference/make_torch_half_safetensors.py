#!/usr/bin/env python3
# Writes tests/reference/torch_half.safetensors with PyTorch and the safetensors package:
# bfloat16 and float16 tensors holding the awkward values (±0, ±max, smallest normal and
# subnormal, ±Inf, NaN, a rounded 1/3, a 2x3 matrix for row-major order), which
# tests/nn/test_checkpoint.cpp loads and checks value by value, so CI needs no PyTorch.
# Run: python3 -m venv --system-site-packages /tmp/venv && /tmp/venv/bin/pip install safetensors
#      /tmp/venv/bin/python scripts/reference/make_torch_half_safetensors.py   (Debian's python3-torch)
import math, sys
import torch
from safetensors.torch import save_file

inf, nan = math.inf, math.nan
# The same list, in this order, is kExpectedBFloat16 / kExpectedFloat16 in the C++ test.
bf16 = [0.0, -0.0, 1.0, -2.5, (2 - 2**-7) * 2**127, -(2 - 2**-7) * 2**127, 2**-126, 2**-133, 3 * 2**-133,
        inf, -inf, nan, 1 / 3, 1e-45]
f16 = [0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 2**-14, 2**-24, 3 * 2**-24, inf, -inf, nan, 1 / 3, 1e-8]
tensors = {
    # From float32, so PyTorch rounds 1/3 to nearest even and flushes the tiny last value to 0.
    "bf16": torch.tensor(bf16, dtype=torch.float32).to(torch.bfloat16),
    "f16": torch.tensor(f16, dtype=torch.float32).to(torch.float16),
    "bf16_matrix": torch.tensor([[1, 2, 3], [-4, 5.5, -6]], dtype=torch.bfloat16),
    "f16_matrix": torch.tensor([[1, 2, 3], [-4, 5.5, -6]], dtype=torch.float16),
}
path = sys.argv[1] if len(sys.argv) > 1 else "tests/reference/torch_half.safetensors"
save_file(tensors, path, metadata={"writer": "torch " + torch.__version__})
print("wrote", path, {k: (str(v.dtype), list(v.shape)) for k, v in tensors.items()})
