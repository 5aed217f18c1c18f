"""torch_mlp.py: the PyTorch peer of vgrad's training benchmark (issue 6).
Fashion-MNIST in memory (float32, normalized), MLP 784-256-128-10, ReLU, cross-entropy,
SGD lr 0.1, shuffled each epoch, last partial batch kept. Prints one JSON line.
--optimizer adam: torch.optim.Adam with lr 1e-3 and its other defaults (betas 0.9/0.999,
eps 1e-8, no weight decay, its default implementation: foreach on CUDA), as vgrad_bench.
Run with the interpreter printed by scripts/bench-venv.sh."""
import argparse, json, os, resource, statistics, time

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=64)
p.add_argument("--epochs", type=int, default=5, help="timed epochs, after 1 warm-up epoch")
p.add_argument("--momentum", type=float, default=0.0, help="SGD's momentum")
p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
               help="sgd (lr 0.1, --momentum) or adam (lr 1e-3, PyTorch's defaults otherwise)")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--to-accuracy", type=float, default=None, metavar="TARGET")
p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
p.add_argument("--device", default="cpu", help="cpu or cuda (data stays resident on it)")
p.add_argument("--hidden", default="256,128", help="hidden layer widths")
p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off",
               help="torch.autocast for forward and loss (fp16 with torch.amp.GradScaler)")
p.add_argument("--tf32", action="store_true",
               help="allow TF32 for float32 matmul and cuDNN (both off otherwise, vgrad's default)")
p.add_argument("--compile", action="store_true", help="torch.compile the model (compiled in the warm-up epoch)")
args = p.parse_args()
if args.optimizer == "adam" and args.momentum != 0:
    p.error("--momentum is SGD's; --optimizer adam takes none")
# Size every pool before torch loads (Debian's 1.13 sends sgemm to OpenBLAS, whose
# pool set_num_threads does not size); inter-op pool at 1 to avoid oversubscription.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)

from fashion_mnist import load, normalize_scalar
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = args.tf32
torch.backends.cudnn.allow_tf32 = args.tf32


xtr, ytr = load(args.data, "train")
mean, std = normalize_scalar(xtr)
dev = torch.device(args.device)
x, y = torch.from_numpy(xtr).to(dev), torch.from_numpy(ytr).to(dev)
n = x.shape[0]

layers, width = [], 784
for h in (int(v) for v in args.hidden.split(",")):
    layers += [nn.Linear(width, h), nn.ReLU()]
    width = h
model = nn.Sequential(*layers, nn.Linear(width, 10)).to(dev)
if args.compile:
    model = torch.compile(model)
gen = torch.Generator().manual_seed(0)
low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
scaler = torch.amp.GradScaler(dev.type, enabled=args.amp == "fp16")  # bfloat16 needs no loss scaling


def make_optimizer(momentum):
    if args.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)


def train_epoch(opt, batch):
    """One shuffled epoch; returns (seconds, mean training loss)."""
    t0, total = time.perf_counter(), torch.zeros((), device=dev)
    perm = torch.randperm(n, generator=gen).to(dev)
    for i in range(0, n, batch):
        idx = perm[i:i + batch]
        with torch.autocast(dev.type, dtype=low, enabled=low is not None):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        total += loss.detach() * idx.numel()  # summed on the device: one host read per epoch
    total = total.item()
    return time.perf_counter() - t0, total / n


out = {"impl": "torch.compile" if args.compile else "pytorch", "version": torch.__version__, "threads": args.threads, "device": args.device,
       "hidden": args.hidden, "amp": args.amp, "tf32": args.tf32}
if args.optimizer == "adam":  # SGD's lines are as they were before --optimizer
    out.update(optimizer="adam", lr=1e-3)
if args.to_accuracy is not None:  # the example's defaults: batch 64, lr 0.1, plain SGD (or Adam)
    xte, yte = load(args.data, "t10k")
    xte, yte = torch.from_numpy((xte - mean) / std).to(dev), torch.from_numpy(yte).to(dev)
    opt = make_optimizer(0.0)
    seconds, acc = 0.0, []
    for _ in range(10):
        seconds += train_epoch(opt, 64)[0]
        with torch.no_grad():
            acc.append(round((model(xte).argmax(1) == yte).float().mean().item(), 4))
        if acc[-1] >= args.to_accuracy:
            break
    out.update(mode="to_accuracy", target=args.to_accuracy, reached=acc[-1] >= args.to_accuracy,
               seconds=round(seconds, 4), epochs=len(acc), accuracy=acc)
else:
    opt = make_optimizer(args.momentum)
    train_epoch(opt, args.batch)  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = [train_epoch(opt, args.batch) for _ in range(args.epochs)]
    times = [round(t, 4) for t, _ in runs]
    med = statistics.median(times)
    out.update(batch=args.batch, momentum=args.momentum, epoch_s=times, epoch_s_median=round(med, 4),
               samples_per_s=round(n / med, 1), final_loss=round(runs[-1][1], 5))
if dev.type == "cuda" and args.to_accuracy is None:
    out["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 1048576, 1)
out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(out))
