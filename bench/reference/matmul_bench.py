#!/usr/bin/env python3
"""Peak float32 (and bf16) GEMM throughput on this CPU, torch and numpy.

Usage: python3 bench/reference/matmul_bench.py [--threads 2] [--reps 7]
Prints one JSON line per (lib, dtype, n) and a final summary line.
"""
import argparse, json, os, statistics, time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--reps", type=int, default=7)
p.add_argument("--sizes", default="1024,2048,4096")
p.add_argument("--wait-idle", type=float, default=0)
args = p.parse_args()

# numpy's BLAS (OpenBLAS in the numpy wheel) reads these at import time
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

import sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostload
import numpy as np
import torch

torch.set_num_threads(args.threads)
waited = hostload.wait_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
meter = hostload.Meter()
sizes = [int(s) for s in args.sizes.split(",")]
results = []


def bench(fn, n, reps):
    fn()  # warm-up
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    med = statistics.median(ts)
    return med, 2.0 * n ** 3 / med / 1e9, 2.0 * n ** 3 / min(ts) / 1e9


for n in sizes:
    reps = args.reps if n <= 2048 else max(3, args.reps // 2)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    med, gf, gf_best = bench(lambda: torch.matmul(a, b, out=out), n, reps)
    results.append(dict(lib="torch", dtype="float32", n=n, median_s=round(med, 5),
                        gflops_median=round(gf, 1), gflops_best=round(gf_best, 1)))
    print(json.dumps(results[-1]), flush=True)

    ab, bb = a.bfloat16(), b.bfloat16()
    med, gf, gf_best = bench(lambda: torch.matmul(ab, bb), n, reps)
    results.append(dict(lib="torch", dtype="bfloat16", n=n, median_s=round(med, 5),
                        gflops_median=round(gf, 1), gflops_best=round(gf_best, 1)))
    print(json.dumps(results[-1]), flush=True)

    an, bn = a.numpy(), b.numpy()
    outn = np.empty((n, n), dtype=np.float32)
    med, gf, gf_best = bench(lambda: np.matmul(an, bn, out=outn), n, reps)
    results.append(dict(lib="numpy", dtype="float32", n=n, median_s=round(med, 5),
                        gflops_median=round(gf, 1), gflops_best=round(gf_best, 1)))
    print(json.dumps(results[-1]), flush=True)

cfg = {}
try:
    cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
except Exception:
    pass
print(json.dumps(dict(summary=True, threads=args.threads, torch=torch.__version__,
                      numpy=np.__version__, numpy_blas=cfg.get("name"),
                      torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                      peak_f32_torch_gflops=max(r["gflops_median"] for r in results
                                                if r["lib"] == "torch" and r["dtype"] == "float32"),
                      waited_idle_s=waited, **meter.report())))
