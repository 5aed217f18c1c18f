#!/usr/bin/env python3
"""PyTorch eager peer of examples/mnist_cnn at its defaults: the same CNN (conv16-bn-relu-pool,
conv32-bn-relu-pool, fc128-relu-dropout0.25, fc10), Adam lr 1e-3 with per-step cosine decay,
batch 64, Fashion-MNIST normalised with the training set's mean and std. Prints per-epoch
time and test accuracy, then one JSON line (epoch_s_median, peak_rss_mb: the keys
bench/compare.py reads, as bench/jax_cnn.py and `conv_bench --epochs`).

    python3 bench/torch_cnn.py --epochs 1 --threads 2
    python3 bench/torch_cnn.py --epochs 3 --steps 300 --warmup-steps 50 --no-eval   # as compare.py --model cnn"""
import argparse
import gzip
import json
import math
import os
import resource
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(directory, split):
    prefix = "train" if split == "train" else "t10k"
    find = lambda name: next(os.path.join(directory, n) for n in (name, name + ".gz")
                             if os.path.exists(os.path.join(directory, n)))
    x = idx(find(f"{prefix}-images-idx3-ubyte")).astype(np.float32).reshape(-1, 1, 28, 28)
    y = idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.fc1, self.drop, self.fc2 = nn.Linear(32 * 7 * 7, 128), nn.Dropout(0.25), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(self.drop(F.relu(self.fc1(x.flatten(1)))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", "--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=0, help="time only this many steps per epoch (extrapolated to the epoch)")
    p.add_argument("--warmup-steps", type=int, default=0, help="untimed training steps before the first epoch")
    p.add_argument("--no-eval", action="store_true", help="skip the test accuracy after each epoch")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    xtr, ytr = load(a.data_dir, "train")
    mean, std = xtr.mean().item(), xtr.std().item()
    xtr.sub_(mean).div_(std)  # in place: no second copy of the training set in the peak memory
    if not a.no_eval:
        xte, yte = load(a.data_dir, "test")
        xte.sub_(mean).div_(std)
    model = Cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = a.epochs * math.ceil(len(xtr) / a.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    times, accs = [], []

    def train_step(xb):
        loss = F.cross_entropy(model(xtr[xb]), ytr[xb])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    model.train()
    for xb in torch.randperm(len(xtr)).split(a.batch_size)[:a.warmup_steps]:
        train_step(xb)
    for epoch in range(1, a.epochs + 1):
        model.train()
        start = time.perf_counter()
        batches = torch.randperm(len(xtr)).split(a.batch_size)
        if a.steps:
            batches = batches[:a.steps]
        for xb in batches:
            train_step(xb)
        times.append((time.perf_counter() - start) * math.ceil(len(xtr) / a.batch_size) / len(batches))
        if a.no_eval:
            print(f"epoch {epoch}  {times[-1]:.2f} s", flush=True)
            continue
        model.eval()
        with torch.no_grad():
            accs.append(sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
                            for i in range(0, len(xte), 1000)) / len(xte))
        print(f"epoch {epoch}  test accuracy {100 * accs[-1]:.2f}%  {times[-1]:.2f} s"
              f"{f' (extrapolated from {len(batches)} steps)' if a.steps else ''}", flush=True)
    median = sorted(times)[len(times) // 2]
    print(json.dumps({"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                      "epoch_seconds": times, "median_epoch_s": median, "epoch_s_median": round(median, 4),
                      "test_accuracy": accs,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
