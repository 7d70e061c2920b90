"""Data pipeline: read rows -> render prompt/answer -> tokenize -> labels -> length policy / packing
-> cached ``datasets.Dataset`` with ``input_ids`` and ``labels`` (-100 = not trained).

Public entry point for training: :func:`build_datasets`. Bad data raises :class:`DataError` (one
line naming file, row and field) unless ``data.bad_rows=skip``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ftsweep.console import say
from ftsweep.data import cache
from ftsweep.data.encode import (
    IGNORE_INDEX,
    Encoded,
    LengthCounts,
    fit_length,
    make_labels,
    tokenize_segments,
)
from ftsweep.data.errors import BadRows, DataError
from ftsweep.data.packing import pack_blocks, padding_fraction
from ftsweep.data.sources import (
    Record,
    content_hash,
    filter_empty_input,
    load_records,
    resolve_source,
    select,
    split_validation,
)
from ftsweep.data.templates import (
    SPECIAL_TOKENS_NEEDED,
    Segment,
    alpaca_template,
    render_alpaca,
    render_chat,
    render_prompt_completion,
    render_text,
    resolve_chat_template,
)

__all__ = ["IGNORE_INDEX", "DataBundle", "DataError", "build_datasets"]



@dataclass
class DataBundle:
    """What training needs: tokenized train / eval datasets (``input_ids`` + ``labels``) and statistics."""

    train: Any
    eval: Any
    stats: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""


def build_datasets(cfg: Any, tokenizer: Any) -> DataBundle:
    """Build (or load from the cache) the tokenized train / eval datasets for ``cfg.data``.

    Args:
        cfg: the composed config (``cfg.data``, ``cfg.cache_dir``, ``cfg.trainer`` are read).
        tokenizer: the tokenizer prepared by :func:`ftsweep.model.load_tokenizer` (pad policy,
            special tokens, eos already applied).

    Returns:
        A :class:`DataBundle`; ``eval`` is None when ``val_size`` is 0 and there is no validation file.

    Raises:
        DataError: bad data under ``bad_rows=fail``, or nothing left to train on.
    """
    from omegaconf import OmegaConf

    d = cfg.data
    start = time.perf_counter()
    _check_tokenizer(d, tokenizer)
    sources = [resolve_source(d.path, d.loader)]
    if d.validation_path:
        sources.append(resolve_source(d.validation_path, "auto" if d.loader == "hub" else d.loader))
    bad = BadRows(d.bad_rows)
    # Local files are hashed by bytes (no parsing on a cache hit); Hub rows are hashed after loading.
    loaded: dict[str, list[Record]] = {}
    hashes = []
    for s in sources:
        digest = content_hash(s)
        if digest is None:
            loaded[s.name], digest = load_records(s.name, d, bad)
        hashes.append(digest)
    fp = cache.fingerprint(OmegaConf.to_container(d, resolve=True), hashes, tokenizer)

    hit = cache.load(cfg.cache_dir, fp)
    if hit is not None:
        train, eval_, stats = hit
        say(f"data cache hit {fp}: tokenization skipped ({cache.entry_dir(cfg.cache_dir, fp)})")
    else:
        train, eval_, stats = _tokenize_all(d, tokenizer, loaded, bad)
        path = cache.save(cfg.cache_dir, fp, train, eval_, stats)
        say(f"data cache miss {fp}: tokenized in {time.perf_counter() - start:.1f}s, saved to {path}")
    stats = {**stats, "cache_hit": hit is not None}
    stats["padding_fraction"] = _padding(d, train, cfg.trainer.per_device_train_batch_size)
    _log_counts(stats)
    return DataBundle(train=train, eval=eval_, stats=stats, fingerprint=fp)


# ------------------------------------------------------------------------------------------ stages
def _check_tokenizer(d: Any, tokenizer: Any) -> None:
    if d.format in ("alpaca",) and d.template == "special_tokens":
        vocab = tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS_NEEDED if t not in vocab]
        if missing:
            raise DataError(
                "data.template",
                f"special_tokens needs {missing} in the tokenizer; add them to data.special_tokens",
            )
    if tokenizer.eos_token_id is None and (d.add_eos or d.format == "text"):
        raise DataError("data.add_eos", "the tokenizer has no eos token; set data.eos_token")


def _tokenize_all(d: Any, tokenizer: Any, loaded: dict[str, list[Record]], bad: BadRows):
    from datasets import Dataset

    records = loaded.get(d.path)
    if records is None:
        records, _ = load_records(d.path, d, bad)
    n_rows = len(records)
    n_filtered = 0
    if d.only_empty_input and d.format == "alpaca":
        records, n_filtered = filter_empty_input(records)
    records = select(records, shuffle=d.shuffle, seed=d.seed, max_rows=d.max_rows)
    if d.validation_path:
        val_records = loaded.get(d.validation_path)
        if val_records is None:
            val_records, _ = load_records(d.validation_path, d, bad)
        if d.only_empty_input and d.format == "alpaca":
            val_records, _ = filter_empty_input(val_records)
        train_records = records
    else:
        train_records, val_records = split_validation(records, d.val_size, d.seed)

    counts = LengthCounts()
    train_rows = encode_records(train_records, d, tokenizer, bad, counts)
    eval_rows = encode_records(val_records, d, tokenizer, bad, counts) if val_records else None
    if not train_rows["input_ids"]:
        raise DataError(d.path, "no training rows left after filtering, bad rows and the length policy")
    train = Dataset.from_dict(train_rows)
    eval_ = Dataset.from_dict(eval_rows) if eval_rows and eval_rows["input_ids"] else None
    stats = {
        "n_rows": n_rows,
        "n_filtered": n_filtered,
        "n_skipped_bad": bad.skipped,
        "n_truncated": counts.truncated,
        "n_dropped": counts.dropped_overlong + counts.dropped_empty,
        "n_dropped_overlong": counts.dropped_overlong,
        "n_dropped_empty_answer": counts.dropped_empty,
        "n_train": len(train),
        "n_eval": len(eval_) if eval_ is not None else 0,
        "n_train_tokens": sum(len(x) for x in train_rows["input_ids"]),
        "n_trained_tokens": sum(sum(1 for t in x if t != IGNORE_INDEX) for x in train_rows["labels"]),
    }
    return train, eval_, stats


def render(record: Record, d: Any, tokenizer: Any, chat_template: str | None) -> list[Segment]:
    """Segments of one record in ``d.format`` (raises :class:`DataError` for bad fields)."""
    if d.format == "alpaca":
        return render_alpaca(record.row, record.where, d, alpaca_template(d))
    if d.format == "prompt_completion":
        return render_prompt_completion(record.row, record.where, d)
    if d.format == "text":
        return render_text(record.row, record.where, d)
    return render_chat(record.row, record.where, d, tokenizer, chat_template)


def encode_records(
    records: list[Record], d: Any, tokenizer: Any, bad: BadRows, counts: LengthCounts
) -> dict[str, list]:
    """Records -> {"input_ids": [...], "labels": [...]} after the length policy (or packing for text)."""
    chat_template = resolve_chat_template(d, tokenizer) if d.format in ("chat", "sharegpt") else None
    rendered = []
    for rec in records:
        try:
            rendered.append((render(rec, d, tokenizer, chat_template), rec.where))
        except DataError as err:
            bad.handle(err)
    # Chat templates close each assistant turn themselves (e.g. <|eot_id|>): the rendered text is
    # trained exactly as inference will see it, so no extra eos is added there.
    add_eos = d.add_eos and d.format not in ("chat", "sharegpt")
    encoded = tokenize_segments(rendered, tokenizer, add_eos)
    if d.format == "text" and d.packing:
        blocks, _ = pack_blocks([e.ids for e in encoded], d.cutoff_len)
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}
    kept: list[Encoded] = []
    for e in encoded:
        fitted = fit_length(e, d.cutoff_len, d.overlong, tokenizer.bos_token_id, counts)
        if fitted is not None:
            kept.append(fitted)
    return {"input_ids": [e.ids for e in kept], "labels": [make_labels(e, d.train_on_prompt) for e in kept]}


def _padding(d: Any, train: Any, batch_size: int) -> float:
    if d.packing:  # text: equal blocks; SFT: trl's padding-free bfd packing
        return 0.0
    return round(padding_fraction([len(x) for x in train["input_ids"]], batch_size), 4)




def _log_counts(stats: dict[str, Any]) -> None:
    say(
        "data: {n_train} train / {n_eval} eval rows, {n_truncated} truncated, {n_dropped} dropped, "
        "{n_skipped_bad} bad rows skipped, padding {padding_fraction:.1%}".format(**stats)
    )
