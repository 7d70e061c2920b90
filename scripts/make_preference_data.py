"""Write the bundled preference demo data from the proxy task (data/proxy_tasks.jsonl):

* data/proxy_pairs.jsonl: Alpaca-style ranking rows {instruction, input, chosen, rejected, kind}; chosen is
  the exact answer, rejected a plausible wrong one (copy -> the words reversed, reverse -> the words
  unchanged, last word -> the first word, key lookup -> the value of another key).
* data/proxy_kto.jsonl: the same rows unpaired {instruction, input, completion, label, kind}.

Run: python scripts/make_preference_data.py  (deterministic: no randomness)
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"


def wrong_answer(row: dict) -> str:
    words = row["input"].split()
    kind, answer = row["kind"], row["output"]
    if kind == "copy":
        wrong = " ".join(reversed(words))
    elif kind == "reverse":
        wrong = row["input"]
    elif kind == "last":
        wrong = next((w for w in words if w != answer), answer + "s")
    else:  # lookup: "c=book e=bird; d" -> another key's value
        pairs, _, _ = row["input"].partition(";")
        values = [p.split("=", 1)[1] for p in pairs.split()]
        wrong = next((v for v in values if v != answer), answer + "s")
    if wrong == answer:  # a palindromic word order: drop the last word instead
        wrong = " ".join(words[:-1]) or answer + "s"
    return wrong


def main() -> None:
    rows = [json.loads(line) for line in (DATA / "proxy_tasks.jsonl").read_text().splitlines() if line.strip()]
    with open(DATA / "proxy_pairs.jsonl", "w") as pairs, open(DATA / "proxy_kto.jsonl", "w") as kto:
        for i, row in enumerate(rows):
            base = {"instruction": row["instruction"], "input": row["input"]}
            rejected = wrong_answer(row)
            pairs.write(json.dumps({**base, "chosen": row["output"], "rejected": rejected, "kind": row["kind"]}) + "\n")
            # Unpaired: alternate so each prompt appears once, half desirable, half not.
            good = i % 2 == 0
            kto.write(json.dumps({**base, "completion": row["output"] if good else rejected, "label": good,
                                  "kind": row["kind"]}) + "\n")


if __name__ == "__main__":
    main()
