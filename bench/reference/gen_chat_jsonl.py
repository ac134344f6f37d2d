#!/usr/bin/env python3
"""Deterministic synthetic chat JSONL for dedup benchmarks.

  python3 bench/reference/gen_chat_jsonl.py --rows 200000 --dup-frac 0.10 --seed 0 \
      --out $WICK_REF/chat_200k.jsonl

Each line: {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], "source": str}
 * ~70% of rows start with a system message; 1-4 user/assistant turns (50/30/15/5%);
 * ~5% of messages contain non-ASCII text (accents, CJK, emoji) to exercise ensure_ascii=False;
 * exactly round(dup_frac * rows) lines are byte-exact copies of earlier-generated unique rows,
   then all lines are shuffled (so a copy may come before its original in the file);
 * same seed -> byte-identical file. About 100 MB for 200k rows.
Prints a JSON summary (rows, unique, duplicates, bytes, sha256).
"""
import argparse, hashlib, json, random
import os
REF = os.environ.get("WICK_REF", os.path.expanduser("~/.cache/wick-ref"))
os.makedirs(REF, exist_ok=True)

p = argparse.ArgumentParser()
p.add_argument("--rows", type=int, default=200_000)
p.add_argument("--dup-frac", type=float, default=0.10)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default=os.path.join(REF, "chat_200k.jsonl"))
args = p.parse_args()

rng = random.Random(args.seed)
letters = "etaoinshrdlcumwfgypbvkjxqz"
weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0,
           1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]
vocab = ["".join(rng.choices(letters, weights, k=rng.choice([1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10])))
         for _ in range(8000)]
exotic = ["café", "naïve", "Müller", "señor", "日本語", "中文", "données", "Ωmega", "😀", "🚀", "ß", "ção"]
punct = [".", ",", "?", "!", ":", ";"]
sources = ["synthetic-a", "synthetic-b", "synthetic-c", "forum", "docs"]


def text(lo, hi):
    n = rng.randint(lo, hi)
    words = rng.choices(vocab, k=n)
    if rng.random() < 0.05:
        words[rng.randrange(n)] = rng.choice(exotic)
    out = []
    for i, w in enumerate(words):
        out.append(w)
        if rng.random() < 0.08:
            out[-1] += rng.choice(punct)
    if rng.random() < 0.03:
        out.append("\n\n```\ncode()\n```\n\"quoted\"\ttab")  # escapes in JSON
    return " ".join(out)


def row():
    msgs = []
    if rng.random() < 0.7:
        msgs.append({"role": "system", "content": text(3, 10)})
    turns = rng.choices([1, 2, 3, 4], [50, 30, 15, 5])[0]
    for _ in range(turns):
        msgs.append({"role": "user", "content": text(3, 17)})
        msgs.append({"role": "assistant", "content": text(5, 34)})
    return json.dumps({"messages": msgs, "source": rng.choice(sources)}, ensure_ascii=False)


n_dup = round(args.dup_frac * args.rows)
uniq = [row() for _ in range(args.rows - n_dup)]
lines = uniq + [uniq[rng.randrange(len(uniq))] for _ in range(n_dup)]
rng.shuffle(lines)
data = ("\n".join(lines) + "\n").encode("utf-8")
with open(args.out, "wb") as f:
    f.write(data)
print(json.dumps(dict(out=args.out, rows=len(lines), unique_generated=len(uniq),
                      distinct_lines=len(set(lines)), duplicates=n_dup, bytes=len(data),
                      mb=round(len(data) / 1e6, 1), sha256=hashlib.sha256(data).hexdigest())))
