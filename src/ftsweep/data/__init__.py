"""Data pipeline: read rows -> render prompt/answer -> tokenize -> labels -> truncation/packing -> datasets.

Public entry point for training: :func:`build_datasets`. (Minimal Alpaca-only first version; the full
pipeline of formats, caching and inspection is built on this interface.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ftsweep.paths import resolve_data_path

IGNORE_INDEX = -100

ALPACA_EN = {
    "prompt_with_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
}


@dataclass
class DataBundle:
    """What training needs: tokenized train / eval datasets (``input_ids`` + ``labels``) and statistics."""

    train: Any
    eval: Any
    stats: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


def build_datasets(cfg, tokenizer) -> DataBundle:
    """Tokenize ``cfg.data`` for ``tokenizer``: prompt tokens get label -100, answer + eos are trained."""
    import hashlib
    import random

    from datasets import Dataset

    d = cfg.data
    path = resolve_data_path(d.path)
    rows = json.loads(path.read_text(encoding="utf-8"))
    rng = random.Random(d.seed)
    if d.shuffle:
        rng.shuffle(rows)
    if d.max_rows:
        rows = rows[: d.max_rows]
    examples = []
    for row in rows:
        tpl = ALPACA_EN["prompt_with_input" if row.get("input") else "prompt_no_input"]
        prompt_ids = tokenizer(tpl.format(**row))["input_ids"]
        answer_ids = tokenizer(row["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + answer_ids)[: d.cutoff_len]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[: d.cutoff_len]
        if any(x != IGNORE_INDEX for x in labels):
            examples.append({"input_ids": ids, "labels": labels})
    n_val = int(d.val_size * len(examples)) if d.val_size < 1 else int(d.val_size)
    fp = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return DataBundle(
        train=Dataset.from_list(examples[n_val:]),
        eval=Dataset.from_list(examples[:n_val]),
        stats={"n_train": len(examples) - n_val, "n_eval": n_val},
        fingerprint=fp,
    )
