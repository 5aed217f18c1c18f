"""fashion_mnist.py: Fashion-MNIST from its IDX files for the Python peers of vgrad's
benchmark (bench/torch_mlp.py, bench/jax_mlp.py), as numpy arrays, so every peer trains
on the same bytes: images (N, 784) float32 in [0, 1], labels (N) int64."""
import gzip

import numpy as np


def load(directory, split):
    with gzip.open(f"{directory}/{split}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(f"{directory}/{split}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = x.astype(np.float32)
    x /= 255.0  # in place: no extra copies inflate the peak memory
    return x, y.astype(np.int64)


def normalize_scalar(x):
    """x -= mean; x /= std over all elements, in place (vgrad's Normalizer::fit_scalar);
    returns (mean, std). The std is summed row by row: no full-size temporary."""
    mean = float(x.mean(dtype=np.float64))
    std = (sum(float(np.dot(r, r)) for r in x) / x.size - mean * mean) ** 0.5
    x -= mean
    x /= std
    return mean, std
