"""Generate the bundled proxy task (data/proxy_tasks.jsonl): short synthetic instructions with one exact
answer each, so a tiny model can learn part of it in tens of LoRA steps and the learning rate decides
how much (the demo sweep and bench/sweep_efficiency.py need trials that really differ).

    python bench/proxy_task.py                    # rewrites data/proxy_tasks.jsonl (deterministic)
    python bench/proxy_task.py --check            # exit 1 if the bundled file differs from a fresh build

Four kinds of row, all over a small closed vocabulary of short words:
    copy     "Repeat the words."              cat sun red        -> cat sun red
    reverse  "Reverse the order of the words." cat sun red        -> red sun cat
    last     "Give the last word."            cat sun red        -> red
    lookup   "Give the value of the key."     a=cat b=sun c=red; b -> sun
Every answer is a function of the input alone (no world knowledge), so the answer loss can fall far
below the base model's, but only as far as attention learns to copy: a good learning rate matters.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "proxy_tasks.jsonl"
WORDS = (
    "cat", "dog", "sun", "red", "blue", "tree", "fish", "bird", "moon", "star",
    "rain", "book", "door", "hand", "ship", "milk",
)
KEYS = ("a", "b", "c", "d", "e")
KINDS = ("copy", "reverse", "last", "lookup")
INSTRUCTIONS = {
    "copy": "Repeat the words.",
    "reverse": "Reverse the order of the words.",
    "last": "Give the last word.",
    "lookup": "Give the value of the key.",
}


def make_row(kind: str, rng: random.Random) -> dict[str, str]:
    """One row of ``kind``: {"instruction", "input", "output", "kind"} with an exact answer."""
    if kind == "lookup":
        n = rng.randint(2, 4)
        keys = rng.sample(KEYS, n)
        values = [rng.choice(WORDS) for _ in keys]
        asked = rng.randrange(n)
        text = " ".join(f"{k}={v}" for k, v in zip(keys, values)) + f"; {keys[asked]}"
        return {"instruction": INSTRUCTIONS[kind], "input": text, "output": values[asked], "kind": kind}
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
    answer = {"copy": words, "reverse": words[::-1], "last": words[-1:]}[kind]
    return {"instruction": INSTRUCTIONS[kind], "input": " ".join(words), "output": " ".join(answer), "kind": kind}


def generate(n_rows: int = 800, seed: int = 0) -> list[dict[str, str]]:
    """``n_rows`` rows, the kinds in equal shares and shuffled, fully determined by ``seed``."""
    rng = random.Random(seed)
    rows = [make_row(KINDS[i % len(KINDS)], rng) for i in range(n_rows)]
    rng.shuffle(rows)
    return rows


def to_jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = p.parse_args(argv)
    text = to_jsonl(generate(args.rows, args.seed))
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from a fresh build'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.rows} rows ({len(text.encode())} bytes) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
