#!/usr/bin/env python3
"""Plants personal data into a chat JSONL file, for the PII-masking benchmark.

  python3 bench/reference/plant_pii.py --data chat.jsonl --out pii.jsonl --frac 0.02 --seed 0

A seeded `frac` of the lines get one item of personal data appended to a random message's
content, cycling through the kinds Wick masks (e-mail, phone in international and mainland-China
forms, IPv4, IPv6, a Luhn-valid card, an IBAN, a mainland-China resident id with its check
character, an AWS access key id); every item is written in a sentence. The generated chats carry
no personal data of their own, so the planted counts are the truth: `cargo bench --bench clean
-- pii pii.jsonl` should mask exactly them. Prints a JSON summary with the count per kind.
Stdlib only; the same seed gives the same file.
"""
import argparse
import json
import random

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--out", required=True)
p.add_argument("--frac", type=float, default=0.02)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
rng = random.Random(args.seed)


def luhn_complete(prefix, length):
    """A card number with `prefix`, random middle digits and a valid Luhn check digit."""
    digits = [int(c) for c in prefix] + [rng.randrange(10) for _ in range(length - len(prefix) - 1)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def cn_id():
    """An 18-character resident id: area 110105, a real birth date, sequence, ISO 7064 check."""
    body = "110105" + f"{rng.randrange(1950, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}" \
        + f"{rng.randrange(1000):03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights)) % 11]


def iban():
    """A German IBAN (22 characters) with a valid ISO 13616 check."""
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    check = 98 - int(bban + "131400") % 97  # D=13, E=14, then "00"
    return f"DE{check:02d}{bban}"


KINDS = [
    ("email", lambda: f"user{rng.randrange(10**6)}@example{rng.randrange(100)}.com"),
    ("phone", lambda: f"+1 (555) {rng.randrange(100, 1000)}-{rng.randrange(1000, 10000)}"),
    ("phone", lambda: f"138{rng.randrange(10**8):08d}"),
    ("ip_address", lambda: f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"),
    ("ip_address", lambda: f"2001:db8::{rng.randrange(1, 0xffff):x}:{rng.randrange(1, 0xffff):x}"),
    ("credit_card", lambda: luhn_complete("4", 16)),
    ("iban", iban),
    ("cn_resident_id", cn_id),
    ("secret", lambda: "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))),
]

planted = {}
lines = open(args.data, encoding="utf-8").read().splitlines()
chosen = set(rng.sample(range(len(lines)), round(args.frac * len(lines))))
with open(args.out, "w", encoding="utf-8") as out:
    for i, line in enumerate(lines):
        if i in chosen:
            row = json.loads(line)
            kind, make = KINDS[sum(planted.values()) % len(KINDS)]
            msg = rng.choice(row["messages"])
            msg["content"] = (msg.get("content") or "") + f" You can reach it at {make()} today."
            planted[kind] = planted.get(kind, 0) + 1
            line = json.dumps(row, ensure_ascii=False)
        out.write(line + "\n")
print(json.dumps(dict(out=args.out, lines=len(lines), planted_lines=len(chosen), planted=planted)))
