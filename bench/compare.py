#!/usr/bin/env python3
"""compare.py: vgrad's MLP training epoch beside its peers and bounds (issues 6, 16), each
measurement in its own process, interleaved config by config and repeated for --rounds
rounds, and written as Markdown into docs/benchmarks.md (between the compare.py markers;
the rest of the file is kept). Stdlib only.
Peers: vgrad (default threads, and pinned to one core), JAX with jit (bench/jax_mlp.py:
one core, and XLA's default), PyTorch eager (bench/torch_mlp.py, 1 and 2 threads),
torch.compile, the OpenBLAS GEMM floor (bench/gemm_floor) and the FMA-peak bound
(bench/fma_peak, once per round). A peer that fails is reported, not fatal.
Example: bench/compare.py --out docs/benchmarks.md (binaries default to build/bench/)
--adam-batches 64 adds Adam (lr 1e-3) rows: vgrad, JAX, PyTorch and torch.compile with --optimizer adam.

--model cnn runs issue 12's comparison instead: examples/mnist_cnn's CNN at batch 64 in vgrad
(bench/conv_bench --epochs, which also times the convolution GEMMs alone: the floor), JAX jit
(bench/jax_cnn.py) and PyTorch eager (bench/torch_cnn.py, 1 and 2 threads), interleaved over
--rounds, then vgrad's per-op profile once; its section goes between its own markers.
Example: bench/compare.py --model cnn --python /path/to/venv/bin/python --out docs/benchmarks.md"""
import argparse, ctypes, datetime, json, os, platform, shlex, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- compare.py: begin (generated) -->", "<!-- compare.py: end -->"
CNN_BEGIN, CNN_END = "<!-- compare.py cnn: begin (generated) -->", "<!-- compare.py cnn: end -->"
ALL_PEERS = "vgrad,vgrad1,jax,torch,compile,floor,fma"
CNN_PEERS = "vgrad,jax,jaxnhwc,torch"


def find_binary(name):
    for d in ("build/bench", "build-cpu/bench", "build"):
        if os.access(os.path.join(ROOT, d, name), os.X_OK):
            return os.path.join(ROOT, d, name)
    return os.path.join(ROOT, "build/bench", name)


p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--vgrad", help="vgrad_bench binary (default: build/bench/vgrad_bench)")
p.add_argument("--floor", help="gemm_floor binary (default: build/bench/gemm_floor)")
p.add_argument("--fma", help="fma_peak binary (default: build/bench/fma_peak)")
p.add_argument("--python", help="interpreter with torch and jax (default: from scripts/bench-venv.sh)")
p.add_argument("--rounds", type=int, default=3, help="every config and peer this many times, interleaved")
p.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="mlp: issue 16's MLP; cnn: issue 12's CNN")
p.add_argument("--epochs", type=int, help="timed epochs per run (after a warm-up; default 5, cnn: 3)")
p.add_argument("--steps", type=int, default=300, help="cnn: steps timed per epoch, scaled to the whole epoch "
               "(0: the whole epoch of 938)")
p.add_argument("--warmup-steps", type=int, default=50, help="cnn: untimed steps before the timed epochs")
p.add_argument("--cnn-peers", default=CNN_PEERS, help=f"cnn: which to run, of {CNN_PEERS} (jax: NCHW, jaxnhwc: NHWC activations)")
p.add_argument("--conv-bench", help="cnn: conv_bench binary (default: build/bench/conv_bench)")
p.add_argument("--profile-steps", type=int, default=200, help="cnn: steps of vgrad's per-op profile (0 skips it)")
p.add_argument("--batches", default="32,64,128,256", help="batch sizes run with plain SGD")
p.add_argument("--momentum-batches", default="64", help="batch sizes also run with --momentum ('' for none)")
p.add_argument("--momentum", type=float, default=0.9)
p.add_argument("--adam-batches", default="", help="batch sizes also run with Adam (lr 1e-3, PyTorch's defaults; every "
               "peer's --optimizer adam; default none)")
p.add_argument("--threads", default="1,2", help="PyTorch eager thread counts to try")
p.add_argument("--compile-threads", type=int, default=1, help="torch.compile's thread count (one: its compile "
               "costs ~40 s per run)")
p.add_argument("--peers", default=ALL_PEERS, help=f"which to run, of {ALL_PEERS}")
p.add_argument("--timeout", type=float, default=300, help="seconds before one run counts as failed")
p.add_argument("--target", type=float, default=0.0, help="also time to this test accuracy (0 skips)")
p.add_argument("--quick", action="store_true", help="try it: 1 round, 2 epochs")
p.add_argument("--out", help="write the section into this Markdown file (between the compare.py markers)")
args = p.parse_args()
args.vgrad = args.vgrad or find_binary("vgrad_bench")
args.floor = args.floor or find_binary("gemm_floor")
args.fma = args.fma or find_binary("fma_peak")
args.epochs = args.epochs or (3 if args.model == "cnn" else 5)
args.conv_bench = args.conv_bench or find_binary("conv_bench")
if args.quick:
    args.rounds, args.epochs = 1, 2
peers = set(args.peers.split(","))
if peers - set(ALL_PEERS.split(",")):
    p.error(f"--peers: unknown {sorted(peers - set(ALL_PEERS.split(',')))}; known: {ALL_PEERS}")
configs = [(int(b), 0.0, "sgd") for b in args.batches.split(",") if b]  # (batch, SGD's momentum, optimizer)
configs += [(int(b), args.momentum, "sgd") for b in args.momentum_batches.split(",") if b]
configs += [(int(b), 0.0, "adam") for b in args.adam_batches.split(",") if b]
threads = [int(t) for t in args.threads.split(",")]
notes = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def load_average():
    return float(open("/proc/loadavg").read().split()[0])


def first_cpu():
    return {sorted(os.sched_getaffinity(0))[0]}


def run(cmd, cpus=None, env=None):
    """Runs one measurement process; returns its last JSON line as a dict, or {"error": why}."""
    log("$ " + shlex.join(cmd) + (f"  (CPUs {sorted(cpus)})" if cpus else ""))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                           env={**os.environ, **(env or {})},
                           preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    except (OSError, subprocess.SubprocessError) as e:
        log(f"failed: {e}")
        return {"error": str(e)[-300:]}
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        why = f"rc {r.returncode}: " + (r.stderr.strip().splitlines() or ["no output"])[-1][-300:]
        log("failed: " + why)
        return {"error": why}
    log(lines[-1])
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        return {"error": f"bad JSON ({e}): {lines[-1][:200]}"}


# OpenBLAS 0.3.21 falls back to SSE3 "Prescott" kernels on CPUs it does not know (2-4x
# slower sgemm); every child that uses OpenBLAS (vgrad, gemm_floor, Debian's torch) gets
# OPENBLAS_CORETYPE for what the CPU supports, unless the caller set it.
if "OPENBLAS_CORETYPE" not in os.environ:
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "").split()
        core = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None
        if lib.openblas_get_corename() == b"Prescott" and core:
            os.environ["OPENBLAS_CORETYPE"] = core
            notes.append(f"OpenBLAS detected this CPU as Prescott: OPENBLAS_CORETYPE={core} set for all runs.")
    except OSError:
        pass

python = args.python
if not python and peers & {"jax", "torch", "compile"}:
    r = subprocess.run([os.path.join(ROOT, "scripts/bench-venv.sh")], capture_output=True, text=True)
    python = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else "/usr/bin/python3"


def version(module):
    if not python:
        return "not run"
    r = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"], capture_output=True, text=True)
    return r.stdout.strip() or "unavailable"


versions = {"torch": version("torch"), "jax": version("jax")}
torch_cmd = [python or "python3", os.path.join(ROOT, "bench/torch_mlp.py")]
jax_cmd = [python or "python3", os.path.join(ROOT, "bench/jax_mlp.py")]


def peer_commands(batch, momentum, optimizer):
    """The runs of one config: name -> (command, CPUs or None, extra environment)."""
    common = ["--batch", str(batch), "--epochs", str(args.epochs), "--momentum", str(momentum)]
    common += ["--optimizer", optimizer] if optimizer != "sgd" else []  # SGD's commands as before
    one_thread = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    runs = {}
    if "vgrad" in peers:
        runs["vgrad"] = ([args.vgrad] + common, None, {})
    if "vgrad1" in peers:
        runs["vgrad 1 core"] = ([args.vgrad] + common, first_cpu(), one_thread)
    if "jax" in peers:
        runs["JAX jit 1 core"] = (jax_cmd + common + ["--threads", "1"], None, {})
        runs["JAX jit default"] = (jax_cmd + common + ["--threads", "0"], None, {})
    # NOTE: OpenMP's default spin-wait makes PyTorch with 2 threads 5-15x slower on a shared
    # 2-core machine (its threads spin against the other work; one run took over 8 minutes).
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    if "torch" in peers:
        for t in threads:
            runs[f"PyTorch eager {t} thr"] = (torch_cmd + common + ["--threads", str(t)], None, passive)
    if "compile" in peers:
        runs["torch.compile"] = (torch_cmd + common + ["--compile", "--threads", str(args.compile_threads)], None, passive)
    if "floor" in peers and momentum == 0 and optimizer == "sgd":  # the GEMMs do not depend on the optimizer
        runs["GEMM floor"] = ([args.floor, "--batch", str(batch)], None, {})
    return runs


def write_section(path, begin, end, section):
    """Puts section between the markers begin and end in the Markdown file at path, keeping
    the rest; the first time, right after the file's title line."""
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"{begin}\n{section}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:  # first time: after the title, before the rest
        head, _, rest = old.partition("\n")
        new = f"{head}\n\n{block}\n\n{rest.lstrip()}"
    with open(path, "w") as fh:
        fh.write(new)


def round_cell(r, label, failures):
    """One run's cell in an every-round table: s/epoch (with the setting a best-of row
    chose), "–" when not run, "failed" (its error appended to failures under label)."""
    if r is None:
        return "–"
    if "error" in r:
        failures.append(f"{label}: {r['error']}")
        return "failed"
    chosen = f" ({r['chosen'].split(' ', 2)[-1]})" if "chosen" in r else ""  # "1 core", "2 thr", "NHWC"
    return f"{r['epoch_s_median']:.3f}{chosen}"


# Best-of groups: a peer's best thread setting, chosen per round.
GROUPS = {"JAX jit best": ("JAX jit 1 core", "JAX jit default"),
          "PyTorch eager best": tuple(f"PyTorch eager {t} thr" for t in threads)}

def report(acc, final):
    """Writes the section for the rounds done so far (after each round, so a run cut
    short still leaves its table) and, when final, prints it."""
    rounds, load_end, notes_now = len(results), load_average(), list(notes)
    def figure(rnd, config, peer):
        r = results[rnd][config].get(peer)
        return r.get("epoch_s_median") if r else None


    def figures(config, peer):
        return [figure(rnd, config, peer) for rnd in range(rounds)]


    def median_of(values):
        ok = [v for v in values if v is not None]
        return statistics.median(ok) if ok else None


    def ratios(config, a, b):
        """Per-round ratios a/b (both from the same round)."""
        return [x / y for x, y in zip(figures(config, a), figures(config, b)) if x and y]


    def spread(values):
        ok = [v for v in values if v]
        return max(ok) / min(ok) if len(ok) > 1 else None


    def fmt(x, d=3):
        return "–" if x is None else f"{x:.{d}f}"


    def config_name(config):
        b, m, optimizer = config
        return f"{b}" + (f", momentum {m:g}" if m else "") + (", Adam lr 1e-3" if optimizer == "adam" else "")


    SUMMARY = ["vgrad", "vgrad 1 core", "JAX jit best", "PyTorch eager best", "torch.compile", "GEMM floor", "FMA bound"]
    DETAIL = ["vgrad", "vgrad 1 core", "JAX jit 1 core", "JAX jit default", *GROUPS["PyTorch eager best"],
              "torch.compile", "GEMM floor", "FMA bound"]
    ran = [peer for peer in DETAIL if any(peer in results[r][c] for r in range(rounds) for c in configs)]
    summary = [peer for peer in SUMMARY if peer in ran or (peer in GROUPS and any(m in ran for m in GROUPS[peer]))]

    md = [f"Median s/epoch over {rounds} round(s); each round's figure is that run's median over "
          f"{args.epochs} epochs. Ratios are medians of the per-round ratios (same round, minutes apart).", "",
          "| batch | " + " | ".join(summary) + " | vgrad/JAX | vgrad/PyTorch | vgrad/FMA bound |",
          "|---" + "|---:" * (len(summary) + 3) + "|"]
    def summary_cell(config, peer):
        value = median_of(figures(config, peer))
        failed = any("error" in results[r][config].get(peer, {}) for r in range(rounds))
        return "failed" if value is None and failed else fmt(value)


    for config in configs:
        cells = [summary_cell(config, peer) for peer in summary]
        md.append(f"| {config_name(config)} | " + " | ".join(cells) +
                  f" | {fmt(median_of(ratios(config, 'vgrad', 'JAX jit best')), 2)}"
                  f" | {fmt(median_of(ratios(config, 'vgrad', 'PyTorch eager best')), 2)}"
                  f" | {fmt(median_of(ratios(config, 'vgrad', 'FMA bound')), 2)} |")

    md += ["", "Every round (s/epoch; spread = max/min over the rounds; peak MB = largest resident set of the runs):", "",
           "| batch | peer | " + " | ".join(f"round {r + 1}" for r in range(rounds)) + " | median | spread | peak MB |",
           "|---|---" + "|---:" * (rounds + 3) + "|"]
    failures = []
    for config in configs:
        for peer in ran + list(GROUPS):
            if not any(peer in results[r][config] for r in range(rounds)):
                continue
            cells = []
            for rnd in range(rounds):
                cells.append(round_cell(results[rnd][config].get(peer), f"{peer}, batch {config_name(config)}, "
                                        f"round {rnd + 1}", failures))
            peaks = [results[r][config][peer].get("peak_rss_mb") for r in range(rounds) if peer in results[r][config]]
            peak = max((x for x in peaks if x), default=None)
            md.append(f"| {config_name(config)} | {peer} | " + " | ".join(cells) +
                      f" | {fmt(median_of(figures(config, peer)))} | {fmt(spread(figures(config, peer)), 2)} | {fmt(peak, 0)} |")
    if any(f for f in fma if f and "ghz" in f):
        md += ["", "FMA peak per round: " + "; ".join(
            f"{f['isa']}, {f['fma_per_cycle_per_core']} FMA/cycle/core at {f['ghz']} GHz on {f['cores']} cores, "
            f"{f['gflops']} GFLOP/s: {f['epoch_madds']:.3g} multiply-adds in {f['epoch_s_median']} s"
            for f in fma if f and "ghz" in f)]
    if acc:
        md += ["", f"Time to {args.target:.0%} test accuracy (batch 64, lr 0.1, plain SGD; training seconds):", "",
               "| impl | seconds | epochs | test accuracy per epoch |", "|---|---:|---:|---|"]
        for name, r in acc.items():
            if r and "seconds" in r:
                md.append(f"| {name} | {r['seconds']:.2f} | {r['epochs']} | {', '.join(map(str, r['accuracy']))} |")


    def verdict(value, limit, lower_is_better=True):
        if value is None:
            return "not measured"
        ok = value <= limit if lower_is_better else value >= limit
        over = abs(value / limit - 1)
        return "met" if ok else f"missed by {over:.0%}" if over >= 0.1 else f"missed by {over:.1%}"


    reading = []
    for config in configs:
        jr, pr = median_of(ratios(config, "vgrad", "JAX jit best")), median_of(ratios(config, "vgrad", "PyTorch eager best"))
        reading.append(f"- Batch {config_name(config)}: vgrad/JAX {fmt(jr, 2)} (target ≤ 0.7: {verdict(jr, 0.7)}); "
                       f"vgrad/PyTorch eager {fmt(pr, 2)} (target ≤ 0.5: {verdict(pr, 0.5)}).")
    fr = median_of(ratios((64, 0.0, "sgd"), "vgrad", "FMA bound"))
    reading.append(f"- Batch 64: vgrad/FMA bound {fmt(fr, 2)} (target ≤ 1.5: {verdict(fr, 1.5)}; mark beyond ≤ 1.3: "
                   f"{verdict(fr, 1.3)}).")
    for config in configs:
        vs, js = spread(figures(config, "vgrad")), spread(figures(config, "JAX jit best"))
        v1, v2 = median_of(figures(config, "vgrad 1 core")), median_of(figures(config, "vgrad"))
        reading.append(f"- Steady, batch {config_name(config)}: spread vgrad {fmt(vs, 2)} vs JAX {fmt(js, 2)} "
                       f"({verdict(vs, js) if vs and js else 'not measured'}); vgrad default {fmt(v2)} s vs one core "
                       f"{fmt(v1)} s ({verdict(v2, v1) if v1 and v2 else 'not measured'}).")
    plain = {b: median_of(figures((b, 0.0, "sgd"), "vgrad")) for b, m, optimizer in configs
             if m == 0 and optimizer == "sgd" and b >= 64}
    if len(plain) > 1 and all(plain.values()):
        sizes = sorted(plain)
        worst = max(plain[b] / plain[a] for a, b in zip(sizes, sizes[1:]))
        reading.append(f"- Epoch time from batch {sizes[0]} to {sizes[-1]}: " + ", ".join(f"{plain[b]:.3f}" for b in sizes) +
                       f" s (target: never grows; {verdict(worst, 1.0)})")
    peak = max((results[r][c]["vgrad"].get("peak_rss_mb") or 0 for r in range(rounds) for c in configs
                if "vgrad" in results[r][c]), default=0) or None
    reading.append(f"- Peak memory of vgrad {fmt(peak, 0)} MB (target ≤ 230 MB: {verdict(peak, 230)}).")
    if failures:
        notes_now += ["failed: " + f for f in failures]
    if load_start > 0.5 or load_end > 0.5:
        notes_now.append(f"1-minute load average {load_start} at start, {load_end} at end (per round: "
                     f"{', '.join(map(str, round_loads))}): other work ran beside these timings.")

    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.split(":", 1)[-1].strip()
    cpu = cpu or next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    header = [f"- Date: {started.isoformat(timespec='seconds')} to {datetime.datetime.now().isoformat(timespec='seconds')}"
              + ("" if final else f" (partial: {rounds} of {args.rounds} rounds done, the run goes on)"),
              f"- Command: `{shlex.join(['bench/compare.py'] + sys.argv[1:])}`",
              f"- CPU: {cpu}, {os.cpu_count()} vCPUs ({platform.platform()})",
              f"- OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
              f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')} as run",
              f"- 1-minute load average: {load_start} at start, {load_end} at end",
              f"- vgrad `{os.path.relpath(args.vgrad, ROOT)}`; JAX {versions['jax']}, PyTorch {versions['torch']} "
              f"(`{python}`); {args.epochs} timed epochs per run after 1 warm-up; torch.compile with "
              f"{args.compile_threads} thread(s); PyTorch with OMP_WAIT_POLICY=PASSIVE; vgrad 1 core: pinned to one CPU with OPENBLAS_NUM_THREADS=1; "
              f"JAX jit 1 core: pinned, XLA intra-op pool off"]
    section = "\n".join(["## MLP epoch: vgrad vs JAX jit, PyTorch, the GEMM floor and the FMA bound (issue 16)", "",
                         *header, "", *md, "", "### Reading the table (issue 16's targets)", "", *reading,
                         *([""] + ["- " + n for n in notes_now] if notes_now else [])])
    if final:
        print(section)

    if args.out:
        write_section(args.out, BEGIN, END, section)




if args.model == "cnn":
    import compare_cnn  # bench/compare_cnn.py: the CNN's rounds and its section
    compare_cnn.main(args, python, versions, notes, run, load_average, write_section, round_cell, (CNN_BEGIN, CNN_END))
    sys.exit(0)

load_start = load_average()
started = datetime.datetime.now()
results = []  # results[round][config][peer] = dict
fma = []  # per round
round_loads = []
for rnd in range(args.rounds):
    round_loads.append(load_average())
    log(f"--- round {rnd + 1} of {args.rounds} (load {round_loads[-1]})")
    fma.append(run([args.fma]) if "fma" in peers else None)
    per_config = {}
    for config in configs:
        per_config[config] = {name: run(cmd, cpus, env) for name, (cmd, cpus, env) in peer_commands(*config).items()}
        for group, members in GROUPS.items():
            ok = [per_config[config][m] for m in members if "epoch_s_median" in per_config[config].get(m, {})]
            if ok:
                best = min(ok, key=lambda r: r["epoch_s_median"])
                per_config[config][group] = {**best, "chosen": next(m for m in members if per_config[config].get(m) is best)}
    results.append(per_config)
    if fma[-1] is not None:
        for config in configs:
            results[-1][config]["FMA bound"] = fma[-1]
    if rnd + 1 < args.rounds:
        report({}, final=False)
load_end = load_average()
acc = {}
if args.target > 0:
    pts = [r for t in threads if "seconds" in (r := run(torch_cmd + ["--to-accuracy", str(args.target), "--threads", str(t)]))]
    acc["PyTorch"] = min(pts, key=lambda r: r["seconds"]) if pts else None
    acc["vgrad"] = run([args.vgrad, "--to-accuracy", str(args.target)])


report(acc, final=True)
