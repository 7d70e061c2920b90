"""Tokenized datasets cached on disk under a fingerprint of everything that changes the tokens.

Layout: ``<cache_dir>/datasets/<fingerprint>/{train,eval}/`` (``datasets.save_to_disk``) and
``stats.json`` (the build's counts) and ``lengths.json`` (train row lengths, so a cache hit computes
the padding for any batch size without reading the rows). An entry is written to a temporary directory beside it and renamed into place, so a
failed build leaves nothing behind and parallel sweep trials racing for the same entry never read
half of one (the loser of the rename just discards its copy).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ftsweep.config.reuse import data_cache_fields

CACHE_VERSION = 19  # bump when the encoding (or what its stats record) changes, so old entries are not reused
# 13: the stats list the validation rows whose answer truncation cut (eval_answers_cut_where)
# 14: the validation split may carry each row's acceptable answers (a "references" column, data.columns.references)
# 15: the stats count the validation rows that copy a training row (n_eval_copies_of_train)
# 16: the stats count the validation rows' tokens (n_eval_tokens: the evaluation-cost warning of ftsweep.train)
# 17: a references cell that is a JSON list is that list (a CSV column); token ids and labels stored as int32
# 18: a CSV / TSV / parquet cell of prompt / completion / chosen / rejected that is JSON text of turns is those turns

# DataConfig fields that change the tokens: all but an explicit exclude list (where the rows come
# from, which is hashed by content instead), so a new data key is part of the fingerprint by default.
TOKEN_FIELDS = data_cache_fields()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of the tokenizer: vocab/merges/added tokens/post-processor, specials and chat template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # slow tokenizers: the vocabulary is what we can see
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    extra = {
        "class": type(tokenizer).__name__,
        "specials": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "chat_template": getattr(tokenizer, "chat_template", None),
        "len": len(tokenizer),
    }
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def fingerprint(data_cfg: dict[str, Any], content_hashes: list[str], tokenizer: Any) -> str:
    """Fingerprint of (data contents, token-changing data options, tokenizer)."""
    blob = {
        "v": CACHE_VERSION,
        "data": {k: data_cfg.get(k) for k in TOKEN_FIELDS},
        "content": content_hashes,
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


def entry_dir(cache_dir: str | Path, fp: str) -> Path:
    return Path(cache_dir).expanduser() / "datasets" / fp


def load(cache_dir: str | Path, fp: str) -> tuple[Any, Any, dict[str, Any], list[int]] | None:
    """(train, eval or None, stats, train row lengths) from the cache, or None on a miss."""
    path = entry_dir(cache_dir, fp)
    if not (path / "stats.json").is_file():
        return None
    from datasets import load_from_disk

    train = load_from_disk(str(path / "train"))
    eval_ = load_from_disk(str(path / "eval")) if (path / "eval").is_dir() else None
    lengths = json.loads((path / "lengths.json").read_text())
    return train, eval_, json.loads((path / "stats.json").read_text()), lengths


def save(
    cache_dir: str | Path, fp: str, train: Any, eval_: Any, stats: dict[str, Any], lengths: list[int]
) -> Path:
    """Write an entry atomically (temp dir + rename); stats.json last marks it complete."""
    target = entry_dir(cache_dir, fp)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fp}-", dir=target.parent))
    from datasets.utils import logging as hf_tqdm

    quiet = not hf_tqdm.is_progress_bar_enabled()
    hf_tqdm.disable_progress_bar()  # one "saved to" line instead of progress bars per split
    try:
        train.save_to_disk(str(tmp / "train"))
        if eval_ is not None:
            eval_.save_to_disk(str(tmp / "eval"))
        (tmp / "lengths.json").write_text(json.dumps(lengths))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "stats.json").is_file():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not quiet:
            hf_tqdm.enable_progress_bar()
    return target
