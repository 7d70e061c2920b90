"""Data pipeline: read rows -> render prompt/answer -> tokenize -> labels -> length policy / packing
-> cached ``datasets.Dataset`` with ``input_ids`` and ``labels`` (-100 = not trained).

Public entry point for training: :func:`build_datasets`. Bad data raises :class:`DataError` (one
line naming file, row and field) unless ``data.bad_rows=skip``. Rows are encoded in batches and
appended to Arrow tables as they go, so memory stays near the size of the tokens, not of Python
lists of every row.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ftsweep.console import say
from ftsweep.data import cache
from ftsweep.data.chat import ChatRenderer, TemplateError
from ftsweep.data.encode import (
    IGNORE_INDEX,
    PROMPT_CUTTING,
    LengthCounts,
    fit_length,
    make_labels,
    tokenize_segments,
)
from ftsweep.data.errors import BadRows, DataError
from ftsweep.data.options import data_options
from ftsweep.data.packing import padding_fraction, take_blocks
from ftsweep.data.sources import (
    Record,
    content_hash,
    file_order,
    filter_empty_input,
    load_records,
    no_training_rows,
    resolve_source,
    select,
    split_validation,
)
from ftsweep.data.templates import (
    REFERENCES,
    SPECIAL_TOKENS_NEEDED,
    Segment,
    alpaca_template,
    has_references,
    read_references,
    render_alpaca,
    render_prompt_completion,
    render_text,
    resolve_chat_template,
)
from ftsweep.notices import Ticker, notice

MAX_LISTED_DROPPED = 1000  # dropped rows named in the stats (the count is always exact)
BATCH_ROWS = 1000  # rows rendered and tokenized together: fast batched tokenizer calls, bounded memory


@dataclass
class DataBundle:
    """What training needs: tokenized train / eval datasets (``input_ids`` + ``labels``) and statistics."""

    train: Any
    eval: Any
    stats: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    # the splits as stored, with each kept row's source in a "where" column, and the renaming of a shared
    # cache entry's file names (read only on demand: see :meth:`where`)
    stored: dict[str, Any] = field(default_factory=dict)
    rename: Any = str

    def where(self, split: str) -> list[str] | None:
        """The source (file and row / line) of each row of ``split`` ("train" / "eval"), in order."""
        ds = self.stored.get(split)
        if ds is None or "where" not in ds.column_names:
            return None
        return [self.rename(w) for w in ds["where"]]

    def references(self, split: str) -> list[list[str] | None] | None:
        """Each row's acceptable answers (``data.columns.references``; None for a row without them), in order;
        None when ``split`` carries none (the key unset)."""
        ds = self.stored.get(split)
        if ds is None or REFERENCES not in ds.column_names:
            return None
        return list(ds[REFERENCES])


VALIDATION_KEY = "\0validation"  # the validation rows in build_datasets' ``loaded`` (data.validation_path may be data.path)


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
    d = data_options(cfg.data)
    start = time.perf_counter()
    _check_tokenizer(d, tokenizer)
    sources = [resolve_source(d.path, d.loader)]
    if d.validation_path:
        sources.append(resolve_source(d.validation_path, "auto" if d.loader == "hub" else d.loader))
    bad = BadRows(d.bad_rows)
    # Local files are hashed by bytes (no parsing on a cache hit); Hub rows are hashed after loading.
    loaded: dict[str, list[Record]] = {}
    hashes = []
    for s, key in zip(sources, (d.path, VALIDATION_KEY), strict=False):
        digest = content_hash(s)
        if digest is None:  # (data.validation_path reads a folder's validation split: another key if it is data.path)
            loaded[key], digest = load_records(s.name, d, bad, validation=key == VALIDATION_KEY)
        hashes.append(f"{s.loader}:{digest}")  # the same bytes read by another loader are other rows
    fp = cache.fingerprint(dataclasses.asdict(d), hashes, tokenizer)

    hit = cache.load(cfg.cache_dir, fp)
    if hit is not None and hit[1] is None and (d.validation_path or d.val_size > 0):
        hit = None  # saved without the validation rows asked for (an older ftsweep): read again, which says why
    if hit is not None:
        train, eval_, stats, lengths = hit
        rename = _renamer(stats, d)
        stats = _rename_rows(stats, d)
        say(f"data cache hit {fp}: tokenization skipped ({cache.entry_dir(cfg.cache_dir, fp)})")
    else:
        train, eval_, stats, lengths = _tokenize_all(d, tokenizer, loaded, bad, fp)
        path = cache.save(cfg.cache_dir, fp, train, eval_, stats, lengths)
        rename = str
        took = time.perf_counter() - start
        # a first tokenization can take a while: the sweep's console shows it too (ftsweep.notices)
        (notice if took > 2 else say)(f"data cache miss {fp}: tokenized in {took:.1f}s, saved to {path}")
    stats = {**stats, "cache_hit": hit is not None}
    # From the stored lengths: the batch size may differ between runs sharing one cache entry.
    bs = cfg.trainer.per_device_train_batch_size
    stats["padding_fraction"] = 0.0 if d.packing else round(padding_fraction(lengths, bs), 4)
    _log_counts(stats, d)
    # each row's source (and a validation row's acceptable answers, data.columns.references) is kept in the cache
    # but is no training column (bundle.where / bundle.references read them on demand)
    stored = {"train": train, "eval": eval_}
    train, eval_ = (_without_row_info(ds) for ds in (train, eval_))
    return DataBundle(train=train, eval=eval_, stats=stats, fingerprint=fp, stored=stored, rename=rename)


ROW_INFO = ("where", REFERENCES)  # stored beside input_ids / labels, never handed to the trainer


def _without_row_info(ds: Any) -> Any:
    extra = [c for c in ROW_INFO if ds is not None and c in ds.column_names]
    return ds.remove_columns(extra) if extra else ds


def _all_dropped(err: DataError, counts: LengthCounts) -> DataError:
    """``err`` carrying the rows the length policy dropped (``ftsweep inspect --dropped`` lists them)."""
    return with_dropped(err, counts.dropped_where)


def with_dropped(err: DataError, where: list[str]) -> DataError:
    """``err`` carrying ``where`` each dropped row was (the first MAX_LISTED_DROPPED), for ``inspect --dropped``."""
    err.dropped_where = list(where[:MAX_LISTED_DROPPED])  # type: ignore[attr-defined]
    return err


def _no_rows(path: str, bad: BadRows) -> DataError:
    """A data file that holds no row (``[]``, a CSV header alone, a parquet table of none; or only bad rows)."""
    return DataError(path, "the file has no rows" + (f" (its {bad.skipped} rows were bad and skipped)" if bad.skipped
                                                       else ""))


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
    _check_chat_markers(d, tokenizer)
    if tokenizer.eos_token_id is None and (d.add_eos or d.format == "text"):
        raise DataError("data.add_eos", "the tokenizer has no eos token; set data.eos_token")


# Turn markers a bundled chat template needs as single tokens: without them the end-of-turn marker is trained
# as several ordinary pieces and never acts as a stop token.
CHAT_TEMPLATE_MARKERS = {"chatml": ("<|im_start|>", "<|im_end|>"),
                         "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")}


def _check_chat_markers(d: Any, tokenizer: Any) -> None:
    markers = CHAT_TEMPLATE_MARKERS.get(d.chat_template or "", ())
    vocab = tokenizer.get_vocab()
    missing = [m for m in markers if m not in vocab]
    if d.format in ("chat", "sharegpt") and missing:
        listed = ",".join(f"'{m}'" for m in markers)
        raise DataError(
            "data.chat_template",
            f"{d.chat_template} needs {', '.join(missing)} as tokens, and this tokenizer has none: they would "
            f"be trained as ordinary text pieces with no stop token; add them (the embeddings are resized, and "
            f"trained) with \"data.special_tokens=[{listed}]\" \"data.eos_token='{markers[-1]}'\" "
            f"data.train_embeddings=true, or use the tokenizer's own "
            f"template (data.chat_template=null)",
        )


def _tokenize_all(d: Any, tokenizer: Any, loaded: dict[str, list[Record]], bad: BadRows, fp: str):
    records = loaded.get(d.path)
    if records is None:
        records, _ = load_records(d.path, d, bad)
    n_rows = len(records)
    if not n_rows:
        raise _no_rows(d.path, bad)
    read = file_order(records)
    n_filtered = 0
    if d.only_empty_input and d.format == "alpaca":
        records, n_filtered = filter_empty_input(records)
    records = select(records, shuffle=d.shuffle, seed=d.seed, max_rows=d.max_rows)
    if d.validation_path:
        val_records = loaded.get(VALIDATION_KEY)
        if val_records is None:
            val_records, _ = load_records(d.validation_path, d, bad, validation=True)
        if not val_records:
            raise _no_rows(d.validation_path, bad)
        read = [*read, *file_order(val_records)]
        if d.only_empty_input and d.format == "alpaca":
            val_records, _ = filter_empty_input(val_records)
        train_records = records
    else:
        train_records, val_records = split_validation(records, d.val_size, d.seed)
    del records, loaded
    bad.encoding(read, [*train_records, *val_records])
    if d.columns.references and val_records and not any(has_references(r.row, d) for r in val_records):
        val_ids = {id(r) for r in val_records}
        first = next(r for r in bad.in_file_order if id(r) in val_ids)  # the validation rows' first line
        have = ", ".join(str(k) for k in first.row) or "none"
        raise DataError(first.where, f"no validation row has it (this row has columns: {have}); the column or a "
                        "dotted path (answers.text) of each row's acceptable answers", f"data.columns.references="
                        f"{d.columns.references}")
    del read

    counts = LengthCounts()
    # a large file takes a while: a progress line every few seconds (none for a quick one; the end is said below)
    ticker, done = Ticker("data: tokenizing rows", len(train_records) + len(val_records), final_line=False), [0]

    def advance(n: int) -> None:
        done[0] += n
        ticker.step(done[0])

    train_keys: list[int] = []
    eval_keys: list[int] = []
    with frozen_heap():  # the rows read live through the encoding: the cyclic GC need not scan them again and again
        train, lengths, n_tokens, n_trained = _to_dataset(
            encode_batches(train_records, d, tokenizer, bad, counts, advance=advance), fp + "-train", train_keys
        )
        eval_, n_eval_tokens = None, 0
        train_answers_cut = len(counts.answer_cut_where)
        if val_records:
            eval_, _, n_eval_tokens, _ = _to_dataset(encode_batches(val_records, d, tokenizer, bad, counts,
                                                                     advance=advance,
                                                                     references=bool(d.columns.references)),
                                                      fp + "-eval", eval_keys)
    # a file that repeats rows, split at random: the copies in the validation split make its loss read low
    seen = set(train_keys)
    eval_copies = sum(k in seen for k in eval_keys)
    del seen, train_keys, eval_keys
    # validation rows whose answer truncation cut: a generation objective scores them against the cut answer
    eval_answers_cut = counts.answer_cut_where[train_answers_cut:]
    if eval_ is None and val_records:  # an eval objective would find nothing to measure, after the whole run
        raise _all_dropped(DataError(
            d.validation_path or "data.val_size", f"no validation rows left: all {len(val_records)} were dropped "
            f"(over-long under data.overlong={d.overlong} at data.cutoff_len={d.cutoff_len}, or an empty answer; "
            "ftsweep inspect --dropped lists them)"), counts)
    if train is None and not train_records and not d.validation_path:
        raise no_training_rows(d.val_size, len(val_records))
    if train is None:
        raise _all_dropped(DataError(d.path, "no training rows left after filtering, bad rows and the length policy"
                                             + ("; ftsweep inspect --dropped lists the dropped ones"
                                                if counts.dropped_where else "")), counts)
    stats = {
        "n_rows": n_rows,
        "n_filtered": n_filtered,
        "n_skipped_bad": bad.skipped,
        "n_truncated": counts.truncated,
        "n_answer_tokens_cut": counts.answer_tokens_cut,
        "n_eval_answers_cut": len(eval_answers_cut),
        "eval_answers_cut_where": eval_answers_cut[:MAX_LISTED_DROPPED],
        "n_history_cut": counts.history_cut,
        "n_prompt_lost": counts.prompt_lost,
        **{f"n_prompt_lost_if_{p}": counts.prompt_lost_if[p] for p in PROMPT_CUTTING},
        "n_dropped": counts.dropped_overlong + counts.dropped_empty,
        "n_dropped_overlong": counts.dropped_overlong,
        "n_dropped_empty_answer": counts.dropped_empty,
        "dropped_where": counts.dropped_where[:MAX_LISTED_DROPPED],  # ftsweep inspect --dropped
        "where_names": [d.path, d.validation_path],  # the names the rows above were listed under
        "n_call_text_dropped": counts.call_text_dropped,
        "call_text_dropped_where": counts.call_text_dropped_where,
        "n_train": len(train),
        "n_eval": len(eval_) if eval_ is not None else 0,
        "n_eval_copies_of_train": eval_copies,
        "n_train_tokens": n_tokens,
        "n_trained_tokens": n_trained,
        "n_eval_tokens": n_eval_tokens,
    }
    return train, eval_, stats, lengths


@contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive now (the rows read: a dict and a list or more per row) left out of the cyclic garbage
    collector's scans while the block runs (``gc.freeze``): each full collection traversed every one of them, a
    third of the CPU time of tokenizing 50,000 chat rows. Reference counting still frees them. Unfrozen after,
    unless objects were frozen before (a warm sweep worker's survivors: gc has no partial unfreeze)."""
    import gc

    frozen_before = gc.get_freeze_count()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


def _to_dataset(batches: Iterator[dict[str, list]], fingerprint: str,
                keys: list[int] | None = None) -> tuple[Any, list[int], int, int]:
    """Batches of rows -> (Dataset or None when empty, row lengths, tokens, trained tokens); ``keys`` gets a hash of
    each row's token ids (to find validation rows that copy a training row).

    The fingerprint is ours (the cache key): without it ``Dataset`` hashes the whole table by
    pickling it, which doubles the peak memory of a large build.
    """
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    ids_type = pa.list_(pa.int32())  # token ids and -100: half the memory and cache bytes of int64
    tables, lengths, n_trained = [], [], 0
    for b in batches:
        if not b["input_ids"]:
            continue
        lengths += [len(x) for x in b["input_ids"]]
        if keys is not None:
            keys += [hash(tuple(x)) for x in b["input_ids"]]
        n_trained += sum(len(x) - x.count(IGNORE_INDEX) for x in b["labels"])
        columns = {"input_ids": pa.array(b["input_ids"], ids_type), "labels": pa.array(b["labels"], ids_type)}
        if "where" in b:
            columns["where"] = pa.array(b["where"], pa.string())
        if REFERENCES in b:  # a validation row's acceptable answers (null: the row has none)
            columns[REFERENCES] = pa.array(b[REFERENCES], pa.list_(pa.string()))
        tables.append(pa.table(columns))
    if not tables:
        return None, [], 0, 0
    table = pa.concat_tables(tables)
    return Dataset(InMemoryTable(table), fingerprint=fingerprint), lengths, sum(lengths), n_trained


# ------------------------------------------------------------------------------------- rendering
class Renderer:
    """Renders rows of one dataset: the template is resolved once, not per row."""

    def __init__(self, d: Any, tokenizer: Any, chat_template: str | None = None):
        self.d = d = data_options(d)
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.alpaca = alpaca_template(d) if d.format == "alpaca" else None
        self.chat: ChatRenderer | None = None
        if d.format in ("chat", "sharegpt"):
            self.chat_renderer()

    def chat_renderer(self) -> ChatRenderer:
        """The chat template's renderer, resolved when first needed (a plain prompt_completion file needs none)."""
        if self.chat is None:
            template = self.chat_template if self.chat_template is not None else resolve_chat_template(self.d, self.tokenizer)
            self.chat = ChatRenderer(self.d, self.tokenizer, template)
        return self.chat

    def uses_chat(self, row: dict) -> bool:
        """Rendered by the chat template: chat / sharegpt rows, and TRL's conversational prompt-completion
        (``prompt`` a list of messages). The template closes each turn itself (e.g. ``<|eot_id|>``)."""
        fmt = self.d.format
        return fmt in ("chat", "sharegpt") or (fmt == "prompt_completion" and isinstance(row.get("prompt"), list))

    def __call__(self, record: Record) -> list[Segment]:
        d, row, where = self.d, record.row, record.where
        if self.uses_chat(row):
            return self.chat_renderer().segments(row, where)
        if d.format == "alpaca":
            return render_alpaca(row, where, d, self.alpaca)
        if d.format == "prompt_completion":
            return render_prompt_completion(row, where, d)
        return render_text(row, where, d)


def render(record: Record, d: Any, tokenizer: Any, chat_template: str | None) -> list[Segment]:
    """Segments of one record in ``d.format`` (raises :class:`DataError` for bad fields)."""
    return Renderer(d, tokenizer, chat_template)(record)


def encode_batches(
    records: list[Record],
    d: Any,
    tokenizer: Any,
    bad: BadRows,
    counts: LengthCounts,
    batch_rows: int = BATCH_ROWS,
    advance: Callable[[int], None] | None = None,
    references: bool = False,
) -> Iterator[dict[str, list]]:
    """Records -> {"input_ids": [...], "labels": [...]} per batch, after the length policy (or packing
    for text: documents joined with eos and cut into cutoff_len blocks, carried across batches).
    ``advance(n)`` is called after each batch of ``n`` records (progress). ``references``: each kept row's
    acceptable answers (``data.columns.references``) too, under "references" (validation rows)."""
    d = data_options(d)
    render_row = Renderer(d, tokenizer)
    pack = d.format == "text" and d.packing
    stream: list[int] = []

    # the rows whose references are read: these (bad.handle checks earlier rows in file order, training rows too)
    with_references = {id(r) for r in records} if references else set()

    def check(rec: Record) -> Any:  # what makes a row bad: its rendering, its references
        segments = render_row(rec)
        return segments, (read_references(rec.row, rec.where, d) if id(rec) in with_references else None)

    for i in range(0, len(records), batch_rows):
        rendered, add_eos, refs = [], [], []
        for rec in records[i : i + batch_rows]:
            try:
                segments, row_refs = check(rec)
                rendered.append((segments, rec.where))
                refs.append(row_refs)
                # Chat templates close each assistant turn themselves (e.g. <|eot_id|>): the rendered text is
                # trained exactly as inference will see it, so no extra eos is added there.
                add_eos.append(d.add_eos and not render_row.uses_chat(rec.row))
            except TemplateError:
                raise
            except DataError as err:
                bad.handle(err, rec, check)
        if render_row.chat is not None and render_row.chat.call_text_dropped:
            counts.call_text_dropped += len(render_row.chat.call_text_dropped)
            counts.call_text_dropped_where += render_row.chat.call_text_dropped[: max(0, 5 - len(counts.call_text_dropped_where))]
            render_row.chat.call_text_dropped = []
        encoded = tokenize_segments(rendered, tokenizer, add_eos)
        if advance is not None:
            advance(len(records[i : i + batch_rows]))
        if pack:
            for e in encoded:
                stream += e.ids
            blocks = take_blocks(stream, d.cutoff_len)
            yield {"input_ids": blocks, "labels": [list(b) for b in blocks]}
            continue
        kept = [
            (f, r)
            for e, r in zip(encoded, refs)
            if (f := fit_length(e, d.cutoff_len, d.overlong, tokenizer.bos_token_id, counts,
                                keep_start=d.prompt_cut == "keep_start"))
        ]
        yield {
            "input_ids": [e.ids for e, _ in kept],
            "labels": [make_labels(e, d.train_on_prompt) for e, _ in kept],
            "where": [e.where for e, _ in kept],
            **({REFERENCES: [r for _, r in kept]} if references else {}),
        }


def encode_records(
    records: list[Record], d: Any, tokenizer: Any, bad: BadRows, counts: LengthCounts
) -> dict[str, list]:
    """All of :func:`encode_batches` as one {"input_ids": [...], "labels": [...]}."""
    out: dict[str, list] = {"input_ids": [], "labels": []}
    for b in encode_batches(records, d, tokenizer, bad, counts):
        out["input_ids"] += b["input_ids"]
        out["labels"] += b["labels"]
    return out


def _rename_rows(stats: dict[str, Any], d: Any) -> dict[str, Any]:
    """A cache entry is shared by files of the same bytes under other names: list its rows under this
    run's names (``data.path`` / ``data.validation_path``)."""
    rename = _renamer(stats, d)
    listed = ("dropped_where", "call_text_dropped_where", "eval_answers_cut_where")
    return {**stats, **{k: [rename(w) for w in stats.get(k) or []] for k in listed if k in stats},
            "where_names": [d.path, d.validation_path]}


def _renamer(stats: dict[str, Any], d: Any):
    """where (under the names the cache entry was made with) -> where under this run's names."""
    old_names = stats.get("where_names") or []
    pairs = [(o, n) for o, n in zip(old_names, [d.path, d.validation_path]) if o and n and o != n]

    def rename(where: str) -> str:
        for o, n in pairs:
            if where.startswith(f"{o} "):
                return n + where[len(o):]
            if where.startswith(os.path.join(o, "")):  # a folder's file: shards/part-00.jsonl line 7
                return os.path.join(n, where[len(os.path.join(o, "")):])
        if not old_names and not d.validation_path:  # an entry from before where_names: one source
            for sep in (" line ", " row "):
                name, found, rest = where.partition(sep)
                if found and name != d.path:
                    return f"{d.path}{sep}{rest}"
        return where

    return rename


def truncation_warning(stats: dict[str, Any], d: Any) -> str | None:
    """The line that says how much of the answers (a text document: all of it) truncation left untrained, when
    it is more than a little: 5% of the answer tokens."""
    cut = stats.get("n_answer_tokens_cut") or 0
    share = cut / max(1, cut + (stats.get("n_trained_tokens") or 0))
    if share < 0.05:
        return None
    fix = ("data.packing=true cuts the documents into data.cutoff_len blocks instead (nothing lost)"
           if d.format == "text" and not d.packing else "raise data.cutoff_len or set data.overlong=drop")
    return (f"data: warning: truncation to data.cutoff_len={d.cutoff_len} cut {cut:,} of the answer tokens "
            f"({share:.0%}) from {stats['n_truncated']} rows: they are not trained; {fix}")


def call_text_warning(stats: dict[str, Any]) -> str | None:
    """The line that says how many assistant texts beside a tool call the chat template dropped."""
    n = stats.get("n_call_text_dropped") or 0
    if not n:
        return None
    where = ", ".join(stats.get("call_text_dropped_where") or [])
    return (f"data: warning: {n} assistant turn(s) have text beside their tool call that the chat template does "
            f"not render: that text is not trained (e.g. {where}); put it in a turn of its own to train it")


def copies_warning(stats: dict[str, Any]) -> str | None:
    """The line that says how many validation rows are copies of training rows (the same tokens)."""
    n = stats.get("n_eval_copies_of_train") or 0
    if not n:
        return None
    return (f"data: warning: {n} of {stats['n_eval']} validation rows are copies of training rows (the same tokens: "
            "the data repeats rows): their eval loss is measured on trained rows and reads low; remove the "
            "duplicates from the data")


def _log_counts(stats: dict[str, Any], d: Any) -> None:
    for warning in (call_text_warning(stats), truncation_warning(stats, d)):
        if warning:
            notice(warning)
    copies = copies_warning(stats)
    if copies:  # in every run's own log; on a sweep's console once, from the trial that tokenized the data
        (say if stats.get("cache_hit") else notice)(copies)
    why = (" ({n_dropped_overlong} over-long, {n_dropped_empty_answer} with no answer token left within "
           "data.cutoff_len={cutoff})".format(**stats, cutoff=d.cutoff_len) if stats["n_dropped"] else "")
    say(
        "data: {n_train} train / {n_eval} eval rows, {n_truncated} truncated ({n_prompt_lost} lost their whole "
        "prompt), {n_dropped} dropped{why}, {n_skipped_bad} bad rows skipped, padding {padding_fraction:.1%}".format(
            **stats, why=why
        )
    )
    if (stats["n_truncated"] or stats["n_dropped_overlong"]) and d.format != "text":  # a document has no prompt
        say(
            "data: over-long rows that would lose their whole prompt: {n_prompt_lost_if_truncate_prompt} with "
            "truncate_prompt, {n_prompt_lost_if_truncate_both} with truncate_both (data.overlong)".format(
                **stats
            )
        )
