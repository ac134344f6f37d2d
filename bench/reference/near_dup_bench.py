#!/usr/bin/env python3
"""Near-duplicate detection reference (datasketch MinHash + LSH) and its planted-pair evaluation,
to measure Wick's `datasets::clean::minhash` against.

  # plant 5% near-duplicate copies (exact shingle Jaccard in [0.85, 0.95]) into a JSONL file
  python3 bench/reference/near_dup_bench.py plant --data chat_200k.jsonl --out planted.jsonl \\
      --truth truth.json --frac 0.05 --jmin 0.85 --jmax 0.95 --ngram 5 --seed 0
  # the reference: datasketch, streaming in file order (optionally with Wick's LSH bands)
  python3 bench/reference/near_dup_bench.py datasketch --data planted.jsonl --threshold 0.8 \\
      --num-perm 128 --ngram 5 [--params 13 7] --removed removed_ds.json
  # recall / precision of any removed list ([[line, matched_line], ...], 1-based)
  python3 bench/reference/near_dup_bench.py evaluate --data planted.jsonl --truth truth.json \\
      --removed removed.json --threshold 0.8 --ngram 5

Every subcommand prints one JSON object. Needs datasketch and numpy (datasketch only for
`datasketch`).

Text and shingles, byte for byte as the Rust module and its bench harness do them:
 * a line's text: {"text": str} as is; {"messages": [...]} as role + ": " + content per message,
   joined with "\\n" (content a string; null -> ""; a list of parts -> the parts' "text" joined with
   "\\n"); "messages" wins when it is a list. Other lines have no text (and no signature).
 * units: text.lower(), then every CJK character (U+3040-30FF, U+3400-4DBF, U+4E00-9FFF,
   U+F900-FAFF, U+AC00-D7AF) is a unit of its own and every maximal run of other non-whitespace
   characters is a unit. Whitespace is Unicode White_Space, i.e. Rust's char::is_whitespace,
   spelled out below because Python's str.isspace()/str.split() also split at U+001C..U+001F.
 * shingles: word n-grams of units joined by one space; 1..n-1 units -> one shingle of all of
   them; no units -> no shingles.
"""
import argparse
import json
import os
import random
import re
import resource
import sys
import time

WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
UNIT_RE = re.compile(f"[{CJK}]|[^{WS}{CJK}]+")
# Word boundaries for the planting edits (a "word" is a whitespace-delimited token).
SPLIT_RE = re.compile(f"([{WS}]+)")


def render(obj):
    """A parsed JSONL line's text, or None."""
    if not isinstance(obj, dict):
        return None
    msgs = obj.get("messages")
    if isinstance(msgs, list):
        out = []
        for m in msgs:
            m = m if isinstance(m, dict) else {}
            role = m.get("role")
            out.append((role if isinstance(role, str) else "") + ": " + content_text(m.get("content")))
        return "\n".join(out)
    text = obj.get("text")
    return text if isinstance(text, str) else None


def content_text(c):
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "\n".join(p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def units(text):
    return UNIT_RE.findall(text.lower())


def shingles(u, n):
    if not u:
        return []
    if len(u) < n:
        return [" ".join(u)]
    return [" ".join(u[i:i + n]) for i in range(len(u) - n + 1)]


def jaccard(a, b):
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def line_text(line):
    """The text of a raw JSONL line (str or UTF-8 bytes), or None."""
    try:
        return render(json.loads(line))
    except ValueError:
        return None


def read_lines(path):
    """The file's lines, split at b"\\n" only (as the Rust harness does: text-mode files would also
    split at a bare "\\r"), decoded."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [l.decode("utf-8") for l in lines]


# ---- plant ---------------------------------------------------------------------------------


class Editable:
    """The editable strings of a parsed line (message contents, their text parts, or "text"),
    each as a list of tokens alternating word / whitespace, edited in place."""

    def __init__(self, obj):
        self.obj = obj
        self.slots = []  # (container, key) whose value is an editable string
        msgs = obj.get("messages")
        if isinstance(msgs, list):
            for m in msgs:
                if not isinstance(m, dict):
                    continue
                c = m.get("content")
                if isinstance(c, str):
                    self.slots.append((m, "content"))
                elif isinstance(c, list):
                    self.slots += [(p, "text") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
        elif isinstance(obj.get("text"), str):
            self.slots.append((obj, "text"))
        self.tokens = [SPLIT_RE.split(cont[key]) for cont, key in self.slots]

    def words(self):
        """(slot, token index) of every word."""
        return [(s, i) for s, toks in enumerate(self.tokens) for i in range(0, len(toks), 2) if toks[i]]

    def commit(self):
        for (cont, key), toks in zip(self.slots, self.tokens):
            cont[key] = "".join(toks)


def plant(args):
    rng = random.Random(args.seed)
    lines = read_lines(args.data)
    texts = [line_text(l) for l in lines]
    eligible = [i for i, t in enumerate(texts) if t is not None and len(units(t)) >= 40]
    # Replacement words: whitespace-delimited words of the file's first 2000 texts.
    vocab = sorted({w for t in texts[:2000] if t for w in SPLIT_RE.split(t)[::2] if w and ":" not in w})
    k = round(args.frac * len(eligible))
    chosen = sorted(rng.sample(eligible, k))
    copies = []  # (original index, gap, copy line, exact J)
    skipped = 0
    for i in chosen:
        orig = set(shingles(units(texts[i]), args.ngram))
        target = rng.uniform(args.jmin, args.jmax)
        ed = Editable(json.loads(lines[i]))
        j, last, tries = 1.0, None, 0
        while j > target and tries < 3000:
            tries += 1
            words = ed.words()
            if not words:
                break
            # Half of the edits next to the previous one: they change fewer new shingles, which
            # lets short texts reach targets close to 1.
            if last is not None and rng.random() < 0.5:
                near = [w for w in words if w[0] == last[0] and abs(w[1] - last[1]) <= 2]
                pos = rng.choice(near) if near else rng.choice(words)
            else:
                pos = rng.choice(words)
            s, t = pos
            saved = list(ed.tokens[s])
            op = rng.random()
            toks = ed.tokens[s]
            if op < 1 / 3:
                toks[t] = rng.choice(vocab)
            elif op < 2 / 3:
                toks[t:t] = [rng.choice(vocab), " "]
            elif len(words) > 10:
                # Drop the word and the whitespace after it (before it, if last).
                if t + 1 < len(toks):
                    del toks[t:t + 2]
                elif t > 0:
                    del toks[t - 1:t + 1]
                else:
                    del toks[t]
            else:
                toks[t] = rng.choice(vocab)
            ed.commit()
            nj = jaccard(orig, set(shingles(units(render(ed.obj)), args.ngram)))
            # Land close below the target (an edit changes up to n shingles at once, so without
            # this floor most copies would overshoot to near jmin); relaxed to jmin after 1500
            # tries for texts too short to land that close.
            if nj >= (args.jmin if tries > 1500 else max(args.jmin, target - 0.02)):
                j, last = nj, pos
            else:
                ed.tokens[s] = saved
                ed.commit()
        if not (args.jmin <= j <= args.jmax):
            skipped += 1
            continue
        gap = rng.randint(i + 1, len(lines))  # the copy goes just before input line `gap`
        copies.append((i, gap, json.dumps(ed.obj, ensure_ascii=False), j))

    at_gap = {}
    for c in copies:
        at_gap.setdefault(c[1], []).append(c)
    out, out_no, truth = [], {}, []
    pending = []  # (copy, its output line number)
    for g in range(len(lines) + 1):
        group = at_gap.get(g, [])
        rng.shuffle(group)
        for c in group:
            out.append(c[2])
            pending.append((c, len(out)))
        if g < len(lines):
            out.append(lines[g])
            out_no[g] = len(out)
    truth = sorted([line, out_no[c[0]], round(c[3], 6)] for c, line in pending)
    data = ("\n".join(out) + "\n").encode("utf-8")
    with open(args.out, "wb") as f:
        f.write(data)
    with open(args.truth, "w") as f:
        json.dump(truth, f)
    js = [t[2] for t in truth]
    print(json.dumps(dict(data=args.data, out=args.out, lines_in=len(lines), eligible=len(eligible),
                          chosen=len(chosen), planted=len(truth), skipped=skipped, lines_out=len(out),
                          bytes=len(data), mb=round(len(data) / 1e6, 1),
                          jaccard_min=min(js), jaccard_mean=round(sum(js) / len(js), 4), jaccard_max=max(js))))


# ---- datasketch ----------------------------------------------------------------------------


def run_datasketch(args):
    from datasketch import MinHash, MinHashLSH

    # One permutation array, shared by every MinHash (datasketch 2.x shares a canonical array
    # instead of drawing it per sketch): the documented fast path, next to update_batch.
    perms = MinHash(num_perm=args.num_perm, seed=1).permutations
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm,
                     params=tuple(args.params) if args.params else None)
    removed, n, docs, nbytes = [], 0, 0, os.path.getsize(args.data)
    t0 = time.perf_counter()
    with open(args.data, "rb") as f:  # binary: lines end at b"\n" only, as in the Rust harness
        for n, line in enumerate(f, 1):
            text = line_text(line)
            if text is None:
                continue
            sh = shingles(units(text), args.ngram)
            if not sh:
                continue
            docs += 1
            m = MinHash(num_perm=args.num_perm, permutations=perms, scheme="affine32")
            m.update_batch([s.encode("utf-8") for s in sh])
            found = lsh.query(m)
            if found:
                removed.append([n, found[0]])
            lsh.insert(n, m)
    wall = time.perf_counter() - t0
    with open(args.removed, "w") as f:
        json.dump(removed, f)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux
    print(json.dumps(dict(impl="datasketch", data=args.data, threshold=args.threshold,
                          num_perm=args.num_perm, ngram=args.ngram, bands=lsh.b, rows=lsh.r,
                          params="given" if args.params else "datasketch default",
                          lines=n, docs=docs, removed=len(removed), wall_s=round(wall, 2),
                          mb=round(nbytes / 1e6, 1), mb_s=round(nbytes / 1e6 / wall, 2),
                          lines_s=round(n / wall), peak_rss_mb=round(rss_mb, 1))))


# ---- evaluate ------------------------------------------------------------------------------


def evaluate(args):
    lines = read_lines(args.data)
    with open(args.truth) as f:
        truth = json.load(f)
    with open(args.removed) as f:
        removed = json.load(f)
    cache = {}

    def sh(line_no):
        if line_no not in cache:
            t = line_text(lines[line_no - 1])
            cache[line_no] = set(shingles(units(t), args.ngram)) if t is not None else set()
        return cache[line_no]

    def exact(a, b):
        return 1.0 if lines[a - 1] == lines[b - 1] else jaccard(sh(a), sh(b))

    matched = dict((a, b) for a, b in removed)
    planted = {c: o for c, o, _ in truth}
    found = [c for c in planted if c in matched]
    ok = [a for a, b in removed if exact(a, b) >= args.threshold]
    # Where the removed lines come from: planted copies, exact repeats of an earlier line, other.
    first_seen, exact_repeat = {}, set()
    for i, l in enumerate(lines, 1):
        if l in first_seen:
            exact_repeat.add(i)
        else:
            first_seen[l] = i
    kinds = {"planted": 0, "exact_repeat": 0, "other": 0}
    wrong = {"planted": 0, "exact_repeat": 0, "other": 0}
    okset = set(ok)
    for a, _ in removed:
        k = "planted" if a in planted else "exact_repeat" if a in exact_repeat else "other"
        kinds[k] += 1
        wrong[k] += a not in okset
    # Recall by planted Jaccard band.
    bands = {}
    for c, o, j in truth:
        key = f"{int(j * 40) / 40:.3f}"  # 0.025 wide
        hit, tot = bands.get(key, (0, 0))
        bands[key] = (hit + (c in matched), tot + 1)
    print(json.dumps(dict(
        data=args.data, removed_file=args.removed, threshold=args.threshold,
        planted=len(planted), planted_found=len(found),
        recall=round(len(found) / max(len(planted), 1), 4),
        removed=len(removed), removed_correct=len(ok),
        precision=round(len(ok) / max(len(removed), 1), 4),
        removed_by_kind=kinds, incorrect_by_kind=wrong,
        exact_repeats_in_file=len(exact_repeat),
        exact_repeat_recall=round(sum(1 for i in exact_repeat if i in matched) / max(len(exact_repeat), 1), 4),
        recall_by_planted_jaccard={k: round(h / t, 3) for k, (h, t) in sorted(bands.items())},
    )))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("plant")
    a.add_argument("--data", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--truth", required=True)
    a.add_argument("--frac", type=float, default=0.05)
    a.add_argument("--jmin", type=float, default=0.85)
    a.add_argument("--jmax", type=float, default=0.95)
    a.add_argument("--ngram", type=int, default=5)
    a.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("datasketch")
    d.add_argument("--data", required=True)
    d.add_argument("--threshold", type=float, default=0.8)
    d.add_argument("--num-perm", type=int, default=128)
    d.add_argument("--ngram", type=int, default=5)
    d.add_argument("--params", type=int, nargs=2, metavar=("B", "R"))
    d.add_argument("--removed", required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("--data", required=True)
    e.add_argument("--truth", required=True)
    e.add_argument("--removed", required=True)
    e.add_argument("--threshold", type=float, default=0.8)
    e.add_argument("--ngram", type=int, default=5)
    args = p.parse_args()
    {"plant": plant, "datasketch": run_datasketch, "evaluate": evaluate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
