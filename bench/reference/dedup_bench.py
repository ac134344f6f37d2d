#!/usr/bin/env python3
"""Time the reference HF-datasets dedup (verbatim below) on a chat JSONL file.

  python3 bench/reference/dedup_bench.py --data $WICK_REF/chat_200k.jsonl [--baseline]

Each run uses a fresh datasets cache dir under $WICK_REF (deleted afterwards), so load_dataset
really parses the JSON and map/filter really run (no cache hits). Prints one JSON line:
rows in/out, wall seconds per phase, rows/s and MB/s (file MB / wall) for dedup-only and
load+dedup, peak RSS. --baseline adds a plain-Python streaming version (json.loads + same md5
string + set) as a lower bound for what the md5 hashing itself costs in CPython.

Notes for re-implementers (byte-exact md5):
 * with load_dataset("json") every row has every column, so the `"messages" not in ex` branch
   is never taken when the file has a messages column; rows lacking it get messages=None and
   hash json.dumps(None) = "null" (all such rows are then duplicates of each other);
 * ex["messages"] is the Arrow-normalised list of structs: keys in the inferred schema's field
   order (first-seen order), fields absent from a message appear as null, and json.dumps uses
   the default separators (", ", ": ") and ensure_ascii=False;
 * the first occurrence in file order is kept (filter is sequential, num_proc=None).
"""
import argparse, json, os, resource, shutil, sys, tempfile, time
import os
REF = os.environ.get("WICK_REF", os.path.expanduser("~/.cache/wick-ref"))
os.makedirs(REF, exist_ok=True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# ---- reference function, exactly as given ------------------------------------------------
import hashlib, json
from datasets import load_dataset, Dataset
def dedup(ds: Dataset) -> Dataset:
    def _hash(ex):
        if "messages" not in ex:
            s = json.dumps(ex, ensure_ascii=False, sort_keys=True)
        else:
            s = json.dumps(ex["messages"], ensure_ascii=False)
        return {"_h": hashlib.md5(s.encode("utf-8")).hexdigest()}
    ds = ds.map(_hash, num_proc=1)
    seen_hashes = set()
    def _filter_duplicates(ex):
        h = ex["_h"]
        if h in seen_hashes:
            return False
        seen_hashes.add(h)
        return True
    ds = ds.filter(_filter_duplicates)
    return ds.remove_columns(["_h"])
# -----------------------------------------------------------------------------------------


def baseline(path):
    t0 = time.perf_counter()
    seen, kept, n = set(), 0, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            s = json.dumps(ex["messages"], ensure_ascii=False) if "messages" in ex else \
                json.dumps(ex, ensure_ascii=False, sort_keys=True)
            h = hashlib.md5(s.encode("utf-8")).hexdigest()
            n += 1
            if h not in seen:
                seen.add(h)
                kept += 1
    return dict(rows=n, kept=kept, wall_s=round(time.perf_counter() - t0, 2))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.path.join(REF, "chat_200k.jsonl"))
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--keep-cache", action="store_true")
    p.add_argument("--wait-idle", type=float, default=0)
    args = p.parse_args()

    import datasets, hostload
    from datasets.utils.logging import disable_progress_bar
    disable_progress_bar()
    waited = hostload.wait_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
    meter = hostload.Meter()
    mb = os.path.getsize(args.data) / 1e6
    cache = tempfile.mkdtemp(prefix="hfcache_", dir=REF)
    try:
        # time map() and filter() inside dedup() without touching it: wrap the outermost calls
        phase = {}
        depth = [0]
        def timed(name, fn):
            def w(self, *a, **k):
                depth[0] += 1
                t = time.perf_counter()
                try:
                    return fn(self, *a, **k)
                finally:
                    depth[0] -= 1
                    if depth[0] == 0:
                        phase[name] = phase.get(name, 0.0) + time.perf_counter() - t
            return w
        Dataset.map = timed("map_s", Dataset.map)
        Dataset.filter = timed("filter_s", Dataset.filter)
        t0 = time.perf_counter()
        ds = load_dataset("json", data_files=args.data, split="train", cache_dir=cache)
        t1 = time.perf_counter()
        # the three phases of dedup(), timed separately via the same code path
        out = dedup(ds)
        t2 = time.perf_counter()
        n_in, n_out = len(ds), len(out)
        # sanity: first kept row equals the first row of the file
        assert out[0]["messages"] == ds[0]["messages"]
    finally:
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
    load_s, dedup_s = t1 - t0, t2 - t1
    res = dict(data=args.data, mb=round(mb, 1), rows_in=n_in, rows_out=n_out, removed=n_in - n_out,
               load_s=round(load_s, 2), dedup_s=round(dedup_s, 2),
               **{k: round(v, 2) for k, v in phase.items()}, total_s=round(load_s + dedup_s, 2),
               dedup_rows_per_s=round(n_in / dedup_s), dedup_mb_per_s=round(mb / dedup_s, 2),
               total_rows_per_s=round(n_in / (load_s + dedup_s)), total_mb_per_s=round(mb / (load_s + dedup_s), 2),
               max_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               datasets=datasets.__version__, waited_idle_s=waited, **meter.report())
    if args.baseline:
        b = baseline(args.data)
        b["rows_per_s"] = round(b["rows"] / b["wall_s"])
        b["mb_per_s"] = round(mb / b["wall_s"], 2)
        res["python_stream_baseline"] = b
    print(json.dumps(res))


if __name__ == "__main__":
    main()
