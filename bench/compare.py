#!/usr/bin/env python3
"""compare.py: runs vgrad's training benchmark, the PyTorch peer (bench/torch_mlp.py,
threads 1 and 2, best kept) and the OpenBLAS GEMM floor side by side, each measurement
in its own process, and prints a Markdown table (issue 6). Stdlib only.
Example: bench/compare.py --out docs/benchmarks.md (binaries default to build/bench/)"""
import argparse, ctypes, datetime, json, os, platform, shlex, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--vgrad", default=os.path.join(ROOT, "build/bench/vgrad_bench"), help="vgrad benchmark binary")
p.add_argument("--floor", help="gemm_floor binary (default: build/bench/gemm_floor or build/gemm_floor)")
p.add_argument("--python", help="interpreter with torch (default: from scripts/bench-venv.sh)")
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--batches", default="32,64,128,256")
p.add_argument("--momenta", default="0,0.9")
p.add_argument("--threads", default="1,2", help="PyTorch thread counts to try")
p.add_argument("--target", type=float, default=0.88, help="time-to-accuracy target (0 skips)")
p.add_argument("--quick", action="store_true", help="smoke run: epochs 2, batch 64 only")
p.add_argument("--out", help="also write the tables as Markdown to this file")
args = p.parse_args()
if not args.floor:
    args.floor = next((f for f in ("build/bench/gemm_floor", "build/gemm_floor")
                       if os.access(os.path.join(ROOT, f), os.X_OK)), "build/bench/gemm_floor")
    args.floor = os.path.join(ROOT, args.floor)
if args.quick:
    args.epochs, args.batches = 2, "64"
batches = [int(b) for b in args.batches.split(",")]
momenta = [float(m) for m in args.momenta.split(",")]
threads = [int(t) for t in args.threads.split(",")]
notes = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd):
    """Runs one measurement process; returns its last JSON line as a dict, or None."""
    log("$ " + shlex.join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        notes.append(f"failed (rc {r.returncode}): `{shlex.join(cmd)}`: {r.stderr.strip()[-300:]}")
        log(notes[-1])
        return None
    log(lines[-1])
    return json.loads(lines[-1])


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
if not python:
    r = subprocess.run([os.path.join(ROOT, "scripts/bench-venv.sh")], capture_output=True, text=True)
    python = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else "/usr/bin/python3"
torch_cmd = [python, os.path.join(ROOT, "bench/torch_mlp.py")]
torch_version = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                               capture_output=True, text=True).stdout.strip() or "unavailable"
have_vgrad = os.access(args.vgrad, os.X_OK)
have_floor = os.access(args.floor, os.X_OK)
if not have_vgrad:
    notes.append(f"vgrad binary `{args.vgrad}` not found: vgrad skipped.")
if not have_floor:
    notes.append(f"GEMM floor `{args.floor}` not found (build it: see bench/gemm_floor.cpp): skipped.")
load0 = open("/proc/loadavg").read().split()[0]
if float(load0) > 0.5:
    notes.append(f"1-min load average {load0} at start: other work is running, timings will be noisy.")
for n in notes:
    log(n)

rows = []
for b in batches:
    floor = run([args.floor, "--batch", str(b)]) if have_floor else None
    for m in momenta:
        common = ["--batch", str(b), "--epochs", str(args.epochs), "--momentum", str(m)]
        vg = run([args.vgrad] + common) if have_vgrad else None
        pts = [r for t in threads if (r := run(torch_cmd + common + ["--threads", str(t)]))]
        pt = min(pts, key=lambda r: r["epoch_s_median"]) if pts else None
        rows.append((b, m, vg, pt, floor))

acc = {}
if args.target > 0:
    pts = [r for t in threads if (r := run(torch_cmd + ["--to-accuracy", str(args.target), "--threads", str(t)]))]
    acc["PyTorch"] = min(pts, key=lambda r: r["seconds"]) if pts else None
    if have_vgrad:
        acc["vgrad"] = run([args.vgrad, "--to-accuracy", str(args.target)])


def f(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


def ratio(a, b, key="epoch_s_median"):
    return f"{a[key] / b[key]:.2f}" if a and b and b.get(key) else "–"


def spread(r):
    return "–" if not r else f"{r['epoch_s_median']:.3f} ({min(r['epoch_s']):.3f}–{max(r['epoch_s']):.3f})"


md = ["| batch | momentum | vgrad s/epoch (median, min–max) | PyTorch best s/epoch (threads) | vgrad/PyTorch "
      "| GEMM floor s/epoch | vgrad/floor | peak MB vgrad | peak MB PyTorch |",
      "|---:|---:|---|---|---:|---|---:|---:|---:|"]
for b, m, vg, pt, fl in rows:
    ptcol = f"{spread(pt)}, {pt['threads']} thr" if pt else "–"
    md.append(f"| {b} | {m:g} | {spread(vg)} | {ptcol} | {ratio(vg, pt)} | {spread(fl)} | {ratio(vg, fl)} "
              f"| {f(vg and vg.get('peak_rss_mb'), 0)} | {f(pt and pt.get('peak_rss_mb'), 0)} |")
if acc:
    md += ["", f"Time to {args.target:.0%} test accuracy (batch 64, lr 0.1, plain SGD; training seconds):", "",
           "| impl | seconds | epochs | threads | test accuracy per epoch |", "|---|---:|---:|---:|---|"]
    for name, r in acc.items():
        if r:
            hit = "" if r.get("reached", r["accuracy"][-1] >= args.target) else " (target not reached)"
            md.append(f"| {name} | {r['seconds']:.2f}{hit} | {r['epochs']} | {r.get('threads', '–')} | {', '.join(map(str, r['accuracy']))} |")
    if "PyTorch" in acc and "vgrad" in acc and acc["PyTorch"] and acc["vgrad"]:
        md.append(f"\nvgrad/PyTorch: {acc['vgrad']['seconds'] / acc['PyTorch']['seconds']:.2f}")
table = "\n".join(md)
print(table)
if notes:
    print("\n" + "\n".join("- " + n for n in notes))

if args.out:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    with open(args.out, "w") as fh:
        fh.write(f"# vgrad vs PyTorch vs GEMM floor\n\n"
                 f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}\n"
                 f"- Command: `{shlex.join([sys.argv[0]] + sys.argv[1:])}`\n"
                 f"- PyTorch {torch_version} (`{python}`), {args.epochs} timed epochs after 1 warm-up\n"
                 f"- OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}\n"
                 f"- Machine: {cpu}, {os.cpu_count()} cores, {platform.platform()}; load average "
                 f"{load0} at start, {open('/proc/loadavg').read().split()[0]} at end\n\n{table}\n")
        if notes:
            fh.write("\n" + "\n".join("- " + n for n in notes) + "\n")
