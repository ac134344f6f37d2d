#!/usr/bin/env python3
"""Groups a `perf` profile of Wick's training-step benchmark into the categories that
docs/benchmarks.md compares with PyTorch's profile (profile_llama_cpu.py).

  RAYON_NUM_THREADS=2 perf record -F 499 -g -o /tmp/wick.data target/release/deps/train_step-* A
  python3 bench/reference/perf_profile.py /tmp/wick.data

Reads `perf report --no-children --sort symbol` (self time per symbol) and prints one JSON line
with each category's share of the samples and its top symbols.
"""
import collections, json, re, subprocess, sys

CATEGORIES = [
    ("matmul (gemm kernels and packing)", ("gemm",)),
    ("page faults (kernel zeroing fresh pages)", ("clear_page", "page_fault", "folio", "handle_mm")),
    ("exp", ("expf", "exp@", "__ieee754_exp", "__exp", "fast_exp")),
    ("Wick fused ops", ("wick::model::", "wick::train::")),
    ("candle elementwise, reductions and copies", ("binary_map", "unary_map", "copy_strided",
                                                    "cpu_backend", "affine", "reduce", "index_")),
    ("memset / memcpy", ("memset", "memmove", "memcpy")),
    ("allocator", ("mi_", "_mi_", "malloc", "free")),
    # rayon's iterator plumbing is where the bodies of parallel loops (candle's and Wick's) are
    # inlined: work, not waiting.
    ("parallel loop bodies (inlined into rayon)", ("consume_iter", "fold_with", "for_each")),
    ("thread pool waits (spinning, yielding, scheduling)", ("rayon", "BarrierGuard", "backtrace",
                                                             "sched", "futex", "schedule", "yield",
                                                             "task_switch", "spin", "syscall")),
]


def category(sym):
    for cat, keys in CATEGORIES:
        if any(k in sym for k in keys):
            return cat
    return "other"


def main():
    data = sys.argv[1]
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio",
         "--percent-limit", "0"],
        capture_output=True, text=True, check=True).stdout
    shares = collections.Counter()
    tops = collections.defaultdict(list)
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+\[[.k]\]\s+(.*?)\s*$", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2)
        cat = category(sym)
        shares[cat] += pct
        if len(tops[cat]) < 3:
            tops[cat].append(f"{sym[:70]} {pct:.1f}%")
    print(json.dumps({cat: dict(share_pct=round(p, 1), top=tops[cat])
                      for cat, p in shares.most_common()}))


if __name__ == "__main__":
    main()
