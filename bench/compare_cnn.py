"""compare_cnn.py: the CNN half of bench/compare.py (`--model cnn`, issue 12): vgrad
(bench/conv_bench --epochs), JAX jit (bench/jax_cnn.py) and PyTorch eager (bench/torch_cnn.py)
training examples/mnist_cnn's model at batch 64, each run in its own process, interleaved and
repeated for --rounds rounds; then vgrad's per-op profile once (conv_bench --profile-steps).
Writes its section between its own markers; compare.py owns the flags, the interpreter and
the OpenBLAS setting. Not run alone."""
import datetime, os, platform, shlex, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 64


def fmt(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


def median_of(values):
    ok = [v for v in values if v is not None]
    return statistics.median(ok) if ok else None


def spread(values):
    ok = [v for v in values if v]
    return max(ok) / min(ok) if len(ok) > 1 else None


def verdict(value, limit):
    if value is None:
        return "not measured"
    over = value / limit - 1
    return "met" if value <= limit else f"missed by {over:.0%}" if over >= 0.1 else f"missed by {over:.1%}"


def peer_commands(args, python):
    """name -> (command, extra environment) for one round."""
    peers = set(args.cnn_peers.split(","))
    timing = ["--epochs", str(args.epochs), "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)]
    runs = {}
    if "vgrad" in peers:
        runs["vgrad"] = ([args.conv_bench, "--batch", str(BATCH)] + timing, {})
    jax = [python, os.path.join(ROOT, "bench/jax_cnn.py"), "--batch", str(BATCH)] + timing
    if "jax" in peers:
        runs["JAX jit NCHW"] = (jax + ["--layout", "nchw"], {})
    if "jaxnhwc" in peers:  # the same model with NHWC activations inside the step: XLA's CPU convolutions may prefer it
        runs["JAX jit NHWC"] = (jax + ["--layout", "nhwc"], {})
    if "torch" in peers:
        # OMP_WAIT_POLICY=PASSIVE: OpenMP's spinning threads are 5-15x slower on a shared 2-core machine.
        for t in args.threads.split(","):
            runs[f"PyTorch eager {t} thr"] = ([python, os.path.join(ROOT, "bench/torch_cnn.py"), "--batch", str(BATCH)]
                                             + timing + ["--threads", t, "--no-eval"], {"OMP_WAIT_POLICY": "PASSIVE"})
    return runs


def profile(args):
    """vgrad's per-op profile of the model and one conv layer's pieces: (table text, layer JSON)."""
    import json
    cmd = [args.conv_bench, "--profile-steps", str(args.profile_steps), "--repeats", "20"]
    print("$ " + shlex.join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if r.returncode != 0:
        return f"failed: rc {r.returncode}: {r.stderr.strip()[-300:]}", {}
    layer = next((json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")), {})
    return r.stderr.strip(), layer


def group_profile(table):
    """Shares of the profiled step by family, from the profiler's table rows."""
    families = {"conv (im2col, GEMMs, col2im)": ("conv2d",), "batch norm": ("batch_norm",),
                "pooling": ("max_pool2d",), "linear": ("linear",), "Adam": ("Adam.step",)}
    totals, total = {name: 0.0 for name in families}, 0.0
    for line in table.splitlines():
        parts = line.split()
        if len(parts) < 7 or parts[0] in ("op", "total", "mnist_cnn"):
            continue
        try:
            ms = float(parts[-5])
        except ValueError:
            continue
        op = line[:28].strip()
        total += ms
        for name, prefixes in families.items():
            if op.split(" ")[0] in prefixes:
                totals[name] += ms
    totals["other (elementwise, composed backward rules, loss)"] = total - sum(totals.values())
    return totals, total


def main(args, python, versions, notes, run, load_average, write_section, round_cell, markers):
    known = {"vgrad", "jax", "jaxnhwc", "torch"}
    if set(args.cnn_peers.split(",")) - known:
        sys.exit(f"compare.py: --cnn-peers: unknown {sorted(set(args.cnn_peers.split(',')) - known)}; known: {sorted(known)}")
    groups = {"PyTorch eager best": tuple(f"PyTorch eager {t} thr" for t in args.threads.split(",")),
              "JAX jit best": ("JAX jit NCHW", "JAX jit NHWC")}
    load_start, started = load_average(), datetime.datetime.now()
    results, round_loads = [], []
    for rnd in range(args.rounds):
        round_loads.append(load_average())
        print(f"--- round {rnd + 1} of {args.rounds} (load {round_loads[-1]})", file=sys.stderr, flush=True)
        got = {name: run(cmd, None, env) for name, (cmd, env) in peer_commands(args, python).items()}
        for group, members in groups.items():
            ok = [m for m in members if "epoch_s_median" in got.get(m, {})]
            if ok:
                best = min(ok, key=lambda m: got[m]["epoch_s_median"])
                got[group] = {**got[best], "chosen": best}
        if "conv_gemm_floor_s" in got.get("vgrad", {}):
            got["conv GEMM floor"] = {"epoch_s_median": got["vgrad"]["conv_gemm_floor_s"]}
        results.append(got)
    load_end = load_average()
    table, layer = profile(args) if args.profile_steps > 0 else ("", {})

    rounds = len(results)
    def figures(peer):
        return [results[r].get(peer, {}).get("epoch_s_median") for r in range(rounds)]

    def ratios(a, b):
        return [x / y for x, y in zip(figures(a), figures(b)) if x and y]

    def peak(peer):
        return max((results[r][peer].get("peak_rss_mb") or 0 for r in range(rounds) if peer in results[r]),
                   default=0) or None

    ran = [p for p in ["vgrad", *groups["JAX jit best"], *groups["PyTorch eager best"]]
           if any(p in results[r] for r in range(rounds))]
    summary = ["vgrad", "JAX jit best", "PyTorch eager best", "conv GEMM floor"]
    torch_ratio, jax_ratio = median_of(ratios("vgrad", "PyTorch eager best")), median_of(ratios("vgrad", "JAX jit best"))
    floor_ratio = median_of(ratios("vgrad", "conv GEMM floor"))
    steps = "the whole epoch" if args.steps == 0 else f"the first {args.steps} steps of each epoch, scaled to its 938"
    md = [f"Median s/epoch over {rounds} round(s); each round's figure is that run's median over {args.epochs} "
          f"epochs. Ratios are medians of the per-round ratios.", "",
          "| batch | " + " | ".join(summary) + " | vgrad/PyTorch | vgrad/JAX | vgrad/floor |",
          "|---" + "|---:" * (len(summary) + 3) + "|",
          f"| {BATCH} | " + " | ".join(fmt(median_of(figures(p))) for p in summary) +
          f" | {fmt(torch_ratio, 2)} | {fmt(jax_ratio, 2)} | {fmt(floor_ratio, 2)} |", "",
          "Every round (s/epoch; spread = max/min over the rounds; peak MB = largest resident set of the runs):", "",
          "| peer | " + " | ".join(f"round {r + 1}" for r in range(rounds)) + " | median | spread | peak MB |",
          "|---" + "|---:" * (rounds + 3) + "|"]
    failures = []
    for peer in ran + [g for g in groups if any(g in results[r] for r in range(rounds))] + ["conv GEMM floor"]:
        cells = [round_cell(results[rnd].get(peer), f"{peer}, round {rnd + 1}", failures) for rnd in range(rounds)]
        md.append(f"| {peer} | " + " | ".join(cells) + f" | {fmt(median_of(figures(peer)))} | "
                  f"{fmt(spread(figures(peer)), 2)} | {fmt(peak(peer), 0)} |")

    vgrad_peak = peak("vgrad")
    torch_peak = min((peak(p) for p in groups["PyTorch eager best"] if peak(p)), default=None)
    reading = [f"- vgrad/PyTorch eager {fmt(torch_ratio, 2)} (target ≤ 1.0: {verdict(torch_ratio, 1.0)}); "
               f"vgrad/JAX jit {fmt(jax_ratio, 2)}; vgrad/conv GEMM floor {fmt(floor_ratio, 2)}.",
               f"- Peak memory: vgrad {fmt(vgrad_peak, 0)} MB, PyTorch eager {fmt(torch_peak, 0)} MB "
               f"(vgrad/PyTorch {fmt(vgrad_peak / torch_peak if vgrad_peak and torch_peak else None, 2)}), "
               f"JAX {fmt(peak('JAX jit NCHW') or peak('JAX jit NHWC'), 0)} MB. Resident sets include each "
               f"runtime's libraries (PyPI's torch loads its CUDA libraries' host code too)."]
    if table:
        totals, total = group_profile(table)
        share = ", ".join(f"{name} {100 * ms / total:.0f}%" for name, ms in totals.items() if total) if total else ""
        reading.append(f"- vgrad's step by family (profile below): {share}.")
    if layer:
        reading.append(
            f"- One conv layer alone (conv2's shape, {layer.get('shape')}), ms: im2col {layer.get('im2col_ms')}, "
            f"forward GEMM {layer.get('forward_gemm_ms')} ({layer.get('forward_gemm_gflops')} GFLOP/s), col2im "
            f"{layer.get('col2im_ms')}, forward+backward {layer.get('forward_backward_ms')} against its three GEMMs "
            f"{layer.get('gemm_floor_step_ms')}; max-pool 2x2 forward {layer.get('max_pool_ms')}, backward "
            f"{layer.get('max_pool_backward_ms')}.")
    v = median_of(figures("vgrad"))
    floor = median_of(figures("conv GEMM floor"))
    if v and floor:
        reading.append(f"- The convolution GEMMs alone (forward, weight and input gradients through Backend::gemm, "
                       f"no im2col) take {floor:.2f} s of vgrad's {v:.2f} s epoch: a {100 * floor / v:.0f}% GEMM share.")
    notes_now = list(notes) + ["failed: " + f for f in failures]
    if load_start > 0.5 or load_end > 0.5:
        notes_now.append(f"1-minute load average {load_start} at start, {load_end} at end (per round: "
                         f"{', '.join(map(str, round_loads))}): other work ran beside these timings.")
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.split(":", 1)[-1].strip()
    header = [f"- Date: {started.isoformat(timespec='seconds')} to {datetime.datetime.now().isoformat(timespec='seconds')}",
              f"- Command: `{shlex.join(['bench/compare.py'] + sys.argv[1:])}`",
              f"- CPU: {cpu or '?'}, {os.cpu_count()} vCPUs ({platform.platform()})",
              f"- OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
              f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')} as run",
              f"- vgrad `{os.path.relpath(args.conv_bench, ROOT)} --epochs`; JAX {versions['jax']}, PyTorch "
              f"{versions['torch']} (`{python}`)",
              "- Workload: examples/mnist_cnn's model at its defaults (conv3x3 16-BatchNorm-ReLU-maxpool2, conv3x3 "
              "32-BatchNorm-ReLU-maxpool2, fc 128-ReLU-dropout 0.25, fc 10; PyTorch's init), Adam lr 1e-3 with "
              f"cosine decay, batch {BATCH}, Fashion-MNIST (60k, one mean/std); {args.warmup_steps} untimed steps, "
              f"then {args.epochs} epochs timed over {steps}. vgrad batches through its DataLoader (prefetch "
              "thread), PyTorch and JAX index their in-memory tensors; JAX jits the whole step (gather, forward, "
              "backward, Adam) with XLA's default threads; PyTorch with OMP_WAIT_POLICY=PASSIVE; best-of rows take "
              "each round's faster setting."]
    section = "\n".join(["## CNN epoch: vgrad vs PyTorch eager and JAX jit (issue 12)", "", *header, "", *md, "",
                         "### Reading the table (issue 12's targets)", "", *reading,
                         *([""] + ["- " + n for n in notes_now] if notes_now else []),
                         *(["", f"vgrad's per-op profile (`conv_bench --profile-steps {args.profile_steps}`, random "
                            "batches, after the rounds; outermost ops, a backward rule under its op's name):", "",
                            "```", table, "```"] if table else [])])
    print(section)
    if args.out:
        write_section(args.out, *markers, section)
