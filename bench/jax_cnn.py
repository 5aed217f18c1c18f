"""jax_cnn.py: the JAX jit peer of examples/mnist_cnn at its defaults (issue 12), the same
workload as bench/torch_cnn.py and `conv_bench --epochs`: Fashion-MNIST in memory (float32,
one mean/std over all pixels), NCHW input (N, 1, 28, 28); conv3x3(1->16, padding 1) ->
BatchNorm2d -> ReLU -> max-pool 2, conv3x3(16->32) -> BatchNorm2d -> ReLU -> max-pool 2,
fc 1568->128 -> ReLU -> dropout 0.25 -> fc 10; cross-entropy; Adam (PyTorch's rule) lr 1e-3
with per-step cosine decay over the run. PyTorch's init (weights and biases uniform in
±1/sqrt(fan_in), BatchNorm weight 1, bias 0). Reshuffled each epoch, last partial batch kept.
BatchNorm trains on batch statistics and updates its running mean and (unbiased) variance
like torch.nn.BatchNorm2d. The whole step (gather, forward, backward, Adam) is one jitted
XLA program. Prints one JSON line (s/epoch, peak RSS) like the other peers.

    python bench/jax_cnn.py --epochs 3 --steps 300

--steps N times only the first N steps of each epoch and scales the time to the full epoch
(all peers scale the same way). XLA keeps its default threads (all cores). --layout nhwc keeps
the activations NHWC inside the step (the same model, weights and flattening order as PyTorch's;
XLA's CPU convolutions may run faster so)."""
import argparse, json, math, os, resource, statistics, sys, time

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=64)
p.add_argument("--epochs", type=int, default=3, help="timed epochs, after a warm-up of --warmup-steps steps")
p.add_argument("--steps", type=int, default=0, help="time only this many steps per epoch (0: the whole epoch)")
p.add_argument("--warmup-steps", type=int, default=50, help="untimed steps first (compiles the step)")
p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
p.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw",
               help="activation layout inside the step (the model is the same; XLA's CPU convolutions may prefer NHWC)")
args = p.parse_args()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion_mnist import load, normalize_scalar
import jax
import jax.numpy as jnp
from jax import lax

xtr, ytr = load(args.data, "train")
normalize_scalar(xtr)
x, y = jnp.asarray(xtr.reshape(-1, 1, 28, 28)), jnp.asarray(ytr.astype(np.int32))
del xtr
n = x.shape[0]
steps_per_epoch = math.ceil(n / args.batch)

# PyTorch's default init for Conv2d and Linear: weight and bias uniform in ±1/sqrt(fan_in).
rng = np.random.default_rng(0)


def uniform(shape, fan_in):
    bound = 1.0 / fan_in ** 0.5
    return jnp.asarray(rng.uniform(-bound, bound, shape).astype(np.float32))


params = {
    "conv1": (uniform((16, 1, 3, 3), 9), uniform((16,), 9)),
    "bn1": (jnp.ones(16), jnp.zeros(16)),
    "conv2": (uniform((32, 16, 3, 3), 144), uniform((32,), 144)),
    "bn2": (jnp.ones(32), jnp.zeros(32)),
    "fc1": (uniform((128, 1568), 1568), uniform((128,), 1568)),
    "fc2": (uniform((10, 128), 128), uniform((10,), 128)),
}
running = {"bn1": (jnp.zeros(16), jnp.ones(16)), "bn2": (jnp.zeros(32), jnp.ones(32))}
adam = (jax.tree_util.tree_map(jnp.zeros_like, params), jax.tree_util.tree_map(jnp.zeros_like, params))


NHWC = args.layout == "nhwc"
CH = 3 if NHWC else 1  # the channel axis of activations
SPATIAL = (0, 1, 2) if NHWC else (0, 2, 3)


def per_channel(v):
    return v[None, None, None, :] if NHWC else v[None, :, None, None]


def conv(h, wb):
    w, b = wb  # OIHW, as PyTorch's weight
    dims = ("NHWC", "OIHW", "NHWC") if NHWC else ("NCHW", "OIHW", "NCHW")
    out = lax.conv_general_dilated(h, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims)
    return out + per_channel(b)


def batch_norm(h, wb, stats, eps=1e-5, momentum=0.1):
    """Training-mode BatchNorm2d: batch statistics; returns (output, new running stats)."""
    mean = h.mean(axis=SPATIAL)
    var = h.var(axis=SPATIAL)
    count = h.size // h.shape[CH]
    out = (h - per_channel(mean)) * per_channel(lax.rsqrt(var + eps))
    out = out * per_channel(wb[0]) + per_channel(wb[1])
    run_mean, run_var = stats
    stats = ((1 - momentum) * run_mean + momentum * mean,
             (1 - momentum) * run_var + momentum * var * count / (count - 1))
    return out, lax.stop_gradient(stats)


def max_pool(h):
    window = (1, 2, 2, 1) if NHWC else (1, 1, 2, 2)
    return lax.reduce_window(h, -jnp.inf, lax.max, window, window, "VALID")


def loss_fn(params, running, xb, yb, key):
    if NHWC:
        xb = xb.reshape(xb.shape[0], 28, 28, 1)  # one channel: the same bytes
    h, s1 = batch_norm(conv(xb, params["conv1"]), params["bn1"], running["bn1"])
    h = max_pool(jax.nn.relu(h))
    h, s2 = batch_norm(conv(h, params["conv2"]), params["bn2"], running["bn2"])
    h = max_pool(jax.nn.relu(h))
    if NHWC:  # flatten in PyTorch's (C, H, W) order, so fc1's weight means the same
        h = h.transpose(0, 3, 1, 2)
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ params["fc1"][0].T + params["fc1"][1])
    keep = jax.random.bernoulli(key, 0.75, h.shape)
    h = jnp.where(keep, h / 0.75, 0.0)
    logits = h @ params["fc2"][0].T + params["fc2"][1]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1)), {"bn1": s1, "bn2": s2}


def step(params, running, adam, x, y, idx, t, lr, key, b1=0.9, b2=0.999, eps=1e-8):
    """One training step: gather, forward, backward, Adam (PyTorch's rule) at step t (from 1)."""
    xb, yb = x[idx], y[idx]
    (loss, running), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, running, xb, yb, key)
    m, v = adam
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    params = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, m, v)
    return params, running, (m, v), loss * idx.shape[0]


step = jax.jit(step, donate_argnums=(0, 1, 2))
shuffle = np.random.default_rng(0)
dropout_key = jax.random.PRNGKey(0)
timed_steps = min(args.steps or steps_per_epoch, steps_per_epoch)
total_steps = args.warmup_steps + args.epochs * timed_steps
t = 0


def train(num_steps):
    """num_steps steps of a freshly shuffled epoch; returns (seconds, mean training loss)."""
    global params, running, adam, t
    t0 = time.perf_counter()
    perm = shuffle.permutation(n).astype(np.int32)
    total, samples = jnp.zeros((), jnp.float32), 0
    for i in range(0, min(n, num_steps * args.batch), args.batch):
        t += 1
        lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * min(t, total_steps) / total_steps))
        idx = perm[i:i + args.batch]
        params, running, adam, loss_sum = step(params, running, adam, x, y, idx, jnp.float32(t), jnp.float32(lr),
                                               jax.random.fold_in(dropout_key, t))
        total, samples = total + loss_sum, samples + idx.shape[0]
    total = float(total)  # waits for the last step: one host read per epoch
    return time.perf_counter() - t0, total / samples


train(args.warmup_steps)
if timed_steps == steps_per_epoch and n % args.batch:  # compile the last partial batch's step too
    params, running, adam, _ = step(params, running, adam, x, y, np.arange(n % args.batch, dtype=np.int32),
                                    jnp.float32(1), jnp.float32(0), dropout_key)
runs = [train(timed_steps) for _ in range(args.epochs)]
times = [round(s * steps_per_epoch / timed_steps, 4) for s, _ in runs]
med = statistics.median(times)
print(json.dumps({"impl": "jax", "version": jax.__version__, "threads": os.cpu_count(),
                  "model": "cnn", "layout": args.layout, "batch": args.batch, "steps_timed": timed_steps, "epoch_s": times,
                  "epoch_s_median": round(med, 4), "samples_per_s": round(n / med, 1),
                  "final_loss": round(runs[-1][1], 5),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
