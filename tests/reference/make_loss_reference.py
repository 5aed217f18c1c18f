#!/usr/bin/env python3
"""Writes tests/reference/loss_reference.json: PyTorch's values and gradients for vgrad's
losses (cross_entropy and nll_loss with class weights, ignore_index and label smoothing;
l1, smooth_l1, huber, binary_cross_entropy, kl_div), read by tests/nn/test_torch_reference.cpp.
CI needs no PyTorch: rerun this only to change cases.

    python3 tests/reference/make_loss_reference.py   # torch >= 2.0, CPU is enough

Every case is float64, built as make_conv_reference.py builds its cases (gradients of
L = sum(out * R) with R stored). The non-finite cases (-inf logits) are inline in
tests/nn/test_functional.cpp, since JSON has no infinity."""
import json
import os

import torch
import torch.nn.functional as F

from torch_cases import run

torch.manual_seed(1)
torch.set_default_dtype(torch.float64)


def rand(*shape):
    return torch.rand(*shape) * 4 - 2


cases = {}
weight = torch.tensor([0.5, 2.0, 1.0, 0.25, 3.0])
target = torch.tensor([1, -100, 4, 0, 1, 3, -100])  # rows 1 and 6 ignored (the default ignore_index)
logits = rand(7, 5)
for reduction in ("mean", "sum", "none"):
    for smoothing in (0.0, 0.2):
        name = f"ce_weight_ignore_{reduction}_s{int(smoothing * 10)}"
        cases[name] = run(lambda x, w, t: F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=smoothing),
                          {"x": logits.clone(), "w": weight.clone(), "t": target.clone()}, ["x"])
        name = f"ce_ignore_{reduction}_s{int(smoothing * 10)}"  # no weight: the fused kernel, masked
        cases[name] = run(lambda x, t: F.cross_entropy(x, t, reduction=reduction, label_smoothing=smoothing),
                          {"x": logits.clone(), "t": target.clone()}, ["x"])
    cases[f"nll_weight_ignore_{reduction}"] = run(
        lambda x, w, t: F.nll_loss(F.log_softmax(x, 1), t, w, reduction=reduction),
        {"x": logits.clone(), "w": weight.clone(), "t": target.clone()}, ["x"])
# An ignore_index inside [0, C): class 2's rows are ignored.
target_in_range = torch.tensor([2, 0, 2, 4, 1, 3, 2])
cases["ce_ignore_class2_mean"] = run(lambda x, t: F.cross_entropy(x, t, ignore_index=2),
                                     {"x": logits.clone(), "t": target_in_range.clone()}, ["x"])
cases["ce_weight_ignore_class2_mean_s1"] = run(
    lambda x, w, t: F.cross_entropy(x, t, w, ignore_index=2, label_smoothing=0.1),
    {"x": logits.clone(), "w": weight.clone(), "t": target_in_range.clone()}, ["x"])

a, b = rand(3, 4), rand(3, 4)
b[0, 0] = a[0, 0]  # equal: l1's subgradient 0
for reduction in ("mean", "sum", "none"):
    cases[f"l1_{reduction}"] = run(lambda x, y: F.l1_loss(x, y, reduction=reduction),
                                   {"x": a.clone(), "y": b.clone()}, ["x", "y"])
    cases[f"smooth_l1_{reduction}"] = run(lambda x, y: F.smooth_l1_loss(x, y, reduction=reduction, beta=0.7),
                                          {"x": a.clone(), "y": b.clone()}, ["x", "y"])
    cases[f"huber_{reduction}"] = run(lambda x, y: F.huber_loss(x, y, reduction=reduction, delta=0.7),
                                      {"x": a.clone(), "y": b.clone()}, ["x", "y"])
cases["smooth_l1_beta0_mean"] = run(lambda x, y: F.smooth_l1_loss(x, y, beta=0.0),
                                    {"x": a.clone(), "y": b.clone()}, ["x", "y"])

p = torch.rand(3, 4) * 0.9 + 0.05
y = torch.rand(3, 4)
for reduction in ("mean", "sum", "none"):
    cases[f"bce_{reduction}"] = run(lambda x, t: F.binary_cross_entropy(x, t, reduction=reduction),
                                    {"x": p.clone(), "t": y.clone()}, ["x", "t"])

log_q = F.log_softmax(rand(3, 4), 1)
prob = F.softmax(rand(3, 4), 1)
prob_with_zeros = prob.clone()
prob_with_zeros[0, 1] = 0.0
prob_with_zeros[2, 3] = 0.0
for reduction in ("mean", "sum", "none", "batchmean"):
    cases[f"kl_{reduction}"] = run(lambda x, t: F.kl_div(x, t, reduction=reduction),
                                   {"x": log_q.clone(), "t": prob_with_zeros.clone()}, ["x"])
cases["kl_target_grad_batchmean"] = run(lambda x, t: F.kl_div(x, t, reduction="batchmean"),
                                        {"x": log_q.clone(), "t": prob.clone()}, ["x", "t"])
cases["kl_log_target_batchmean"] = run(lambda x, t: F.kl_div(x, t, reduction="batchmean", log_target=True),
                                       {"x": log_q.clone(), "t": torch.log(prob)}, ["x", "t"])

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loss_reference.json")
with open(out, "w") as f:
    json.dump({"generator": f"torch {torch.__version__}", "cases": cases}, f)
print(f"wrote {os.path.normpath(out)} (torch {torch.__version__}, {len(cases)} cases)")
