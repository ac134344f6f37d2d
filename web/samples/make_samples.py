#!/usr/bin/env python3
"""Generate Wick's small sample datasets, deterministically (same bytes on every run).

    python3 web/samples/make_samples.py

tiny-corpus.jsonl  ~200 KB of simple English prose, one {"text": ...} document per line (pretrain)
tiny-chat.jsonl    200 chat examples in OpenAI's format with a strict answer format (fine-tune)
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

NAMES = ["Ada", "Ben", "Cora", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kim", "Leo", "Mia", "Ned", "Ola", "Pia"]
ANIMALS = ["cat", "dog", "fox", "owl", "hen", "goat", "horse", "duck", "mouse", "rabbit", "bear", "frog"]
PLACES = ["the garden", "the river", "the old mill", "the market", "the forest", "the hill", "the village", "the barn", "the lake", "the school"]
OBJECTS = ["a red ball", "a small box", "an old key", "a blue cup", "a loaf of bread", "a long rope", "a lamp", "a map", "a basket of apples", "a wooden boat"]
WEATHER = ["It was a sunny morning.", "Rain fell all day.", "The wind was cold.", "The sky was grey and calm.", "Snow covered the ground.", "It was a warm evening."]
FEEL = ["happy", "tired", "curious", "afraid", "proud", "hungry", "calm", "surprised"]
VERBS = ["found", "lost", "carried", "painted", "shared", "hid", "cleaned", "mended"]
ENDINGS = [
    "In the end, everyone went home and slept well.",
    "That night, {n} smiled and told the story again.",
    "From that day on, {n} always walked to {p} with a friend.",
    "The {a} never forgot that day.",
    "And so the day ended, quiet and kind.",
]


def story(rng):
    n, m = rng.sample(NAMES, 2)
    a = rng.choice(ANIMALS)
    p, q = rng.sample(PLACES, 2)
    o = rng.choice(OBJECTS)
    s = [rng.choice(WEATHER)]
    s.append(f"{n} went to {p} with a {a}.")
    s.append(f"There, {n} {rng.choice(VERBS)} {o}.")
    s.append(f"{n} felt {rng.choice(FEEL)}, so {n} called {m}.")
    if rng.random() < 0.6:
        s.append(f"{m} came from {q} and said, \"Let us look at it together.\"")
    if rng.random() < 0.5:
        s.append(f"The {a} ran around {p} and made them laugh.")
    if rng.random() < 0.4:
        s.append(f"They counted {rng.randint(2, 9)} birds on the way back.")
    s.append(rng.choice(ENDINGS).format(n=n, p=p, a=a))
    return " ".join(s)


def corpus(rng, target_bytes=200_000):
    out, size = [], 0
    while size < target_bytes:
        doc = " ".join(story(rng) for _ in range(rng.randint(1, 3)))
        line = json.dumps({"text": doc}, ensure_ascii=False)
        out.append(line)
        size += len(line) + 1
    return out


SYSTEM = "You are a calculator. Reply with exactly one line: 'Answer: <integer>'."


def chat(rng, n=200):
    out, seen = [], set()
    while len(out) < n:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice(["+", "-", "*"])
        if (a, op, b) in seen:
            continue
        seen.add((a, op, b))
        val = a + b if op == "+" else a - b if op == "-" else a * b
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        q = rng.choice([f"What is {a} {op} {b}?", f"Compute {a} {word} {b}.", f"{a} {op} {b} = ?"])
        ex = {"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": q},
            {"role": "assistant", "content": f"Answer: {val}"},
        ]}
        out.append(json.dumps(ex, ensure_ascii=False))
    return out


def write(name, lines):
    with open(os.path.join(HERE, name), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    write("tiny-corpus.jsonl", corpus(random.Random(1234)))
    write("tiny-chat.jsonl", chat(random.Random(5678)))
