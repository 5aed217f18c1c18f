#!/usr/bin/env python3
"""Writes tests/reference/conv_reference.json: PyTorch's values and gradients for vgrad's
CNN ops (conv2d, conv1d, pooling, batch/layer/group norm, embedding), read by
tests/nn/test_torch_reference.cpp. CI needs no PyTorch: rerun this only to change cases.

    python3 tests/reference/make_conv_reference.py   # any torch >= 1.13, CPU is enough

Every case is float64. Gradients are of L = sum(out * R) with R stored, so every
entry of the Jacobian counts (a plain sum() would hide a wrong weighting)."""
import json
import os

import torch
import torch.nn.functional as F

from torch_cases import entry, run

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)


def rand(*shape):
    return torch.rand(*shape) * 2 - 1


cases = {}
conv_configs = [
    dict(n=2, c=3, h=7, w=6, f=4, k=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1),
    dict(n=2, c=3, h=7, w=6, f=4, k=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 1), groups=1),
    dict(n=1, c=2, h=8, w=8, f=2, k=(3, 3), stride=(1, 2), padding=(2, 2), dilation=(2, 1), groups=1),
    dict(n=3, c=4, h=5, w=5, f=6, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=2),
    dict(n=2, c=4, h=6, w=5, f=4, k=(2, 2), stride=(2, 2), padding=(1, 1), dilation=(1, 2), groups=4),
]
for i, c in enumerate(conv_configs):
    inputs = {"x": rand(c["n"], c["c"], c["h"], c["w"]), "weight": rand(c["f"], c["c"] // c["groups"], *c["k"]),
              "bias": rand(c["f"])}
    case = run(lambda x, weight, bias: F.conv2d(x, weight, bias, c["stride"], c["padding"], c["dilation"], c["groups"]),
               inputs, ["x", "weight", "bias"])
    case["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in c.items() if k in
                      ("stride", "padding", "dilation", "groups")}
    cases[f"conv2d_{i}"] = case

case = run(lambda x, weight, bias: F.conv1d(x, weight, bias, 2, 1, 2),
           {"x": rand(2, 3, 11), "weight": rand(4, 3, 3), "bias": rand(4)}, ["x", "weight", "bias"])
case["params"] = {"stride": 2, "padding": 1, "dilation": 2, "groups": 1}
cases["conv1d"] = case

x = rand(2, 3, 7, 6)
case = run(lambda x: F.max_pool2d(x, (3, 3), (2, 1), (1, 1), (1, 1)), {"x": x.clone()}, ["x"])
case["params"] = {"kernel": [3, 3], "stride": [2, 1], "padding": [1, 1], "dilation": [1, 1]}
cases["max_pool2d"] = case
case = run(lambda x: F.avg_pool2d(x, (3, 3), (2, 2), (1, 1)), {"x": x.clone()}, ["x"])
case["params"] = {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}
cases["avg_pool2d"] = case
case = run(lambda x: F.adaptive_avg_pool2d(x, (3, 4)), {"x": rand(2, 3, 5, 7)}, ["x"])
case["params"] = {"output_size": [3, 4]}
cases["adaptive_avg_pool2d"] = case

# BatchNorm2d: one training step (batch statistics, running stats updated), then eval.
bn = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5)
with torch.no_grad():
    bn.weight.copy_(torch.rand(3) + 0.5)
    bn.bias.copy_(rand(3))
x = rand(4, 3, 3, 3) * 2 + 0.5
case = run(lambda x, weight, bias: F.batch_norm(x, bn.running_mean, bn.running_var, weight, bias, True, 0.1, 1e-5),
           {"x": x, "weight": bn.weight.detach().clone(), "bias": bn.bias.detach().clone()}, ["x", "weight", "bias"])
case["running_mean"] = entry(bn.running_mean)
case["running_var"] = entry(bn.running_var)
bn.eval()
case["eval_output"] = entry(F.batch_norm(x.detach(), bn.running_mean, bn.running_var, bn.weight, bn.bias, False))
cases["batch_norm2d"] = case

cases["layer_norm"] = run(lambda x, weight, bias: F.layer_norm(x, (3, 4), weight, bias, 1e-5),
                          {"x": rand(2, 3, 4), "weight": torch.rand(3, 4) + 0.5, "bias": rand(3, 4)},
                          ["x", "weight", "bias"])
cases["group_norm"] = run(lambda x, weight, bias: F.group_norm(x, 2, weight, bias, 1e-5),
                          {"x": rand(2, 4, 3, 3), "weight": torch.rand(4) + 0.5, "bias": rand(4)},
                          ["x", "weight", "bias"])
case = run(lambda weight, idx: F.embedding(idx, weight, padding_idx=1),
           {"weight": rand(5, 3), "idx": torch.tensor([[2, 1, 2], [4, 0, 2]])}, ["weight"])
case["params"] = {"padding_idx": 1}
cases["embedding"] = case

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_reference.json")
with open(out, "w") as f:
    json.dump({"generator": f"torch {torch.__version__}", "cases": cases}, f)
print(f"wrote {os.path.normpath(out)} (torch {torch.__version__}, {len(cases)} cases)")
