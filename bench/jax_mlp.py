"""jax_mlp.py: the JAX peer of vgrad's training benchmark (issue 16), the same workload as
bench/torch_mlp.py: Fashion-MNIST in memory (float32, one mean/std), MLP 784-256-128-10,
ReLU, cross-entropy, SGD lr 0.1 (optionally momentum, PyTorch's rule; --optimizer adam: Adam
lr 1e-3 with PyTorch's defaults and update rule), PyTorch's nn.Linear init scale, reshuffled
each epoch, last partial batch kept. The whole step (gather,
forward, backward, update) is one jitted XLA program. Prints one JSON line.
--threads 1 pins the process to one CPU and turns off XLA's intra-op thread pool before
jax loads; 0 keeps XLA's default (all cores). Run with the interpreter printed by
scripts/bench-venv.sh."""
import argparse, json, os, resource, statistics, time

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=64)
p.add_argument("--epochs", type=int, default=5, help="timed epochs, after 1 warm-up epoch")
p.add_argument("--momentum", type=float, default=0.0, help="SGD's momentum")
p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
               help="sgd (lr 0.1, --momentum) or adam (lr 1e-3, betas 0.9/0.999, eps 1e-8)")
p.add_argument("--threads", type=int, default=0, help="1: one core, no intra-op pool; 0: XLA's default")
p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
p.add_argument("--hidden", default="256,128", help="hidden layer widths")
args = p.parse_args()
if args.optimizer == "adam" and args.momentum != 0:
    p.error("--momentum is SGD's; --optimizer adam takes none")
if args.threads == 1:  # before jax loads: XLA reads its flags once
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
elif args.threads != 0:
    p.error("--threads is 1 (one core) or 0 (XLA's default)")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
from fashion_mnist import load, normalize_scalar
import jax
import jax.numpy as jnp


xtr, ytr = load(args.data, "train")
normalize_scalar(xtr)
x, y = jnp.asarray(xtr), jnp.asarray(ytr.astype(np.int32))
del xtr
n = x.shape[0]

# nn.Linear's default init: weight and bias uniform in ±1/sqrt(fan_in).
rng = np.random.default_rng(0)
params, width = [], 784
for out in [int(h) for h in args.hidden.split(",")] + [10]:
    bound = 1.0 / width ** 0.5
    params.append((jnp.asarray(rng.uniform(-bound, bound, (out, width)).astype(np.float32)),
                   jnp.asarray(rng.uniform(-bound, bound, (out,)).astype(np.float32))))
    width = out
tree_map = jax.tree_util.tree_map
# The optimizer's state: SGD's momentum buffers, or Adam's moments and step count.
if args.optimizer == "adam":
    state = (tree_map(jnp.zeros_like, params), tree_map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
else:
    state = tree_map(jnp.zeros_like, params)


def loss_fn(params, xb, yb):
    h = xb
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i + 1 < len(params):
            h = jax.nn.relu(h)
    logp = jax.nn.log_softmax(h)
    return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))


# PyTorch's SGD: buf = momentum·buf + g (buf = g on the first step, the same from zeros); p -= lr·buf.
def sgd(params, buffers, grads, lr=0.1):
    if args.momentum:
        buffers = tree_map(lambda b, g: args.momentum * b + g, buffers, grads)
        grads = buffers
    return tree_map(lambda p, g: p - lr * g, params, grads), buffers


# PyTorch's Adam (single-tensor form): m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
# p ← p − (lr / (1 − β1^t))·m / (√v / √(1 − β2^t) + ε). The corrections are float32 here
# (PyTorch: double on the host), which moves them in the last bits only: a speed peer.
def adam(params, state, grads, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m, v, t = state
    t = t + 1
    m = tree_map(lambda m, g: beta1 * m + (1 - beta1) * g, m, grads)
    v = tree_map(lambda v, g: beta2 * v + (1 - beta2) * g * g, v, grads)
    step_size, root_correction2 = lr / (1 - beta1 ** t), jnp.sqrt(1 - beta2 ** t)
    params = tree_map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / root_correction2 + eps), params, m, v)
    return params, (m, v, t)


def step(params, state, x, y, idx):
    xb, yb = x[idx], y[idx]
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    params, state = (adam if args.optimizer == "adam" else sgd)(params, state, grads)
    return params, state, loss * idx.shape[0]


step = jax.jit(step, donate_argnums=(0, 1))
shuffle = np.random.default_rng(0)


def train_epoch(batch):
    """One shuffled epoch; returns (seconds, mean training loss)."""
    global params, state
    t0 = time.perf_counter()
    perm = shuffle.permutation(n).astype(np.int32)
    total = jnp.zeros((), jnp.float32)
    for i in range(0, n, batch):
        params, state, loss_sum = step(params, state, x, y, perm[i:i + batch])
        total = total + loss_sum
    total = float(total)  # waits for the last step: one host read per epoch
    return time.perf_counter() - t0, total / n


train_epoch(args.batch)  # warm-up: compiles the full and the last partial batch's step
runs = [train_epoch(args.batch) for _ in range(args.epochs)]
times = [round(t, 4) for t, _ in runs]
med = statistics.median(times)
optimizer = {"optimizer": "adam", "lr": 1e-3} if args.optimizer == "adam" else {}  # SGD's line as before
print(json.dumps({"impl": "jax", "version": jax.__version__, "threads": args.threads or os.cpu_count(), **optimizer,
                  "hidden": args.hidden, "batch": args.batch, "momentum": args.momentum, "epoch_s": times,
                  "epoch_s_median": round(med, 4), "samples_per_s": round(n / med, 1),
                  "final_loss": round(runs[-1][1], 5),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
