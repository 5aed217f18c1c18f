#!/usr/bin/env python3
"""PyTorch's side of bench/conv_bench.cpp: one Conv2d layer forward and forward+backward
(medians), same shapes and flags. Prints one JSON line."""
import argparse
import json
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=64)
p.add_argument("--in", dest="c", type=int, default=16)
p.add_argument("--out", type=int, default=32)
p.add_argument("--size", type=int, default=14)
p.add_argument("--kernel", type=int, default=3)
p.add_argument("--padding", type=int, default=1)
p.add_argument("--repeats", type=int, default=30)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
x = torch.randn(a.batch, a.c, a.size, a.size)
w = torch.randn(a.out, a.c, a.kernel, a.kernel, requires_grad=True)
b = torch.randn(a.out, requires_grad=True)


def median(fn):
    for _ in range(2):
        fn()
    times = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def forward():
    with torch.no_grad():
        F.conv2d(x, w, b, padding=a.padding)


def step(input_grad):
    x.requires_grad_(input_grad)
    w.grad = b.grad = x.grad = None
    F.conv2d(x, w, b, padding=a.padding).sum().backward()


print(json.dumps({"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                  "mkldnn": torch.backends.mkldnn.is_available(),
                  "forward_ms": 1e3 * median(forward), "forward_backward_ms": 1e3 * median(lambda: step(True)),
                  "forward_backward_no_input_grad_ms": 1e3 * median(lambda: step(False))}))
