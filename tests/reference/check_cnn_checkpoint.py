#!/usr/bin/env python3
"""Loads an examples/mnist_cnn checkpoint into the equivalent torch.nn model (bench/torch_cnn.py's
Cnn) with load_state_dict(strict=True) and prints its Fashion-MNIST test accuracy, to compare
with the accuracy mnist_cnn printed for the same epoch. The safetensors file is read with
numpy alone (8-byte header length, JSON header, raw little-endian data).

    build/examples/mnist_cnn --epochs 1 --checkpoint /tmp/cnn.safetensors
    python3 tests/reference/check_cnn_checkpoint.py /tmp/cnn.safetensors"""
import importlib.util
import json
import os
import struct
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("torch_cnn", os.path.join(here, "..", "..", "bench", "torch_cnn.py"))


def read_safetensors(path):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtypes[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors, header.get("__metadata__", {})


def main(path, data_dir="/usr/share/datasets/fashion-mnist"):
    torch_cnn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(torch_cnn)
    tensors, meta = read_safetensors(path)
    model = torch_cnn.Cnn()
    model.load_state_dict({k: tensors[k] for k in model.state_dict()}, strict=True)
    model.eval()
    x, y = torch_cnn.load(data_dir, "test")
    x = (x / 255 - float(meta["input.mean"])) / float(meta["input.std"])  # mnist_cnn scales pixels to [0, 1] first
    with torch.no_grad():
        correct = sum((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item() for i in range(0, len(x), 1000))
    print(f"torch.nn model with {path}: test accuracy {100 * correct / len(x):.2f}%")


if __name__ == "__main__":
    main(*sys.argv[1:])
