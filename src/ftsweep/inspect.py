"""``ftsweep inspect [overrides]``: show rows exactly as they will be trained.

Each row is decoded span by span: trained tokens (label == input id) and masked tokens (label -100)
look different -- colours on a terminal, ``[[...]]`` around trained spans when piped or ``--plain`` --
and special tokens are shown as written (``<|eot_id|>``). Then a length histogram and the data
statistics (truncated / dropped / skipped rows, padding, cache). ``--dump FILE.jsonl`` writes every
row of the split with its ``input_ids``, ``labels`` and decoded text for tooling and review.

Heavy libraries are imported inside functions so ``ftsweep --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100
OPEN, CLOSE = "[[", "]]"  # trained-span markers in plain output


@dataclass
class Span:
    """Consecutive tokens that are all trained or all masked, decoded together."""

    text: str
    trained: bool
    special: bool
    n_tokens: int


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ftsweep inspect", description="Show rows exactly as trained (trained spans vs masked)."
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=alpaca_demo data.cutoff_len=128")
    p.add_argument("--rows", type=int, default=3, help="rows to render (default 3)")
    p.add_argument("--split", choices=("train", "eval"), default="train")
    p.add_argument(
        "--dump", type=Path, help="write every row of the split as JSON lines (source file and row, input_ids, labels, text)"
    )
    p.add_argument(
        "--plain", action="store_true", help="no colours: trained spans as [[...]] (default when piped)"
    )
    p.add_argument("--bins", type=int, default=10, help="length histogram bins")
    p.add_argument("--dropped", action="store_true",
                   help="list the rows the length policy dropped (file, line or row, and why)")
    p.add_argument("--config-dir", "-cd", action="append", default=[], help="an extra config root (like ftsweep train)")
    return p.parse_intermixed_args(argv)  # options before, between or after the overrides


def main(argv: list[str]) -> int:
    """Entry point of ``ftsweep inspect``; bad config or data raise ``UsageError`` (exit 2)."""
    from ftsweep.config.errors import UsageError

    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad flag (2, message already printed)
        return int(exc.code or 0)
    for flag, value in (("--rows", args.rows), ("--bins", args.bins)):
        if value < (0 if flag == "--rows" else 1):
            raise UsageError(f"{flag}: must be >= {0 if flag == '--rows' else 1} (got {value})")
    if args.dump is not None and (args.dump.exists() or args.dump.is_symlink()):  # it was replaced (a run's metrics.json)
        what = "is a folder" if args.dump.is_dir() else "exists (nothing is overwritten)"
        raise UsageError(f"--dump {args.dump}: {what}; give a new file, e.g. --dump rows.jsonl")
    try:
        bundle, tokenizer, cfg = _build(args.overrides, UsageError, args.config_dir)
    except UsageError as err:  # every row dropped: --dropped still says which and why
        if args.dropped and getattr(err, "dropped_where", None):
            print(f"dropped rows ({len(err.dropped_where)} listed, train and eval):")
            for where in err.dropped_where:
                print(f"  {where}")
        raise
    ds = bundle.train if args.split == "train" else bundle.eval
    if ds is None:
        raise UsageError("there is no eval split (data.val_size=0 and no data.validation_path)")
    plain = args.plain or not sys.stdout.isatty()
    out = _printer(plain)
    if "prompt_ids" in ds.column_names:  # a preference stage: show each pair / unpaired row
        return _main_preference(args, ds, tokenizer, cfg, bundle, out, plain)
    if "input_ids" not in ds.column_names:  # stage=grpo: prompts (text) and the answers the rewards compare with
        return _main_prompts(args, ds, tokenizer, cfg, bundle, out)
    # validation rows' acceptable answers (data.columns.references)
    refs = bundle.references(args.split) if hasattr(bundle, "references") else None
    for i in range(min(args.rows, len(ds))):
        row = ds[i]
        out(_header(i, args.split, row), None)
        _print_row(out, row_spans(tokenizer, row["input_ids"], row["labels"]), plain)
        if refs is not None:
            out(f"references: {json.dumps(refs[i], ensure_ascii=False)}", None)
    out(histogram([len(x) for x in ds["input_ids"]], cfg.data.cutoff_len, args.bins), None)
    out(stats_line(bundle.stats, bundle.fingerprint), None)
    if args.dropped:
        _print_dropped(bundle.stats, out)
    if args.dump:
        n = dump_rows(args.dump, tokenizer, ds, bundle.where(args.split) if hasattr(bundle, "where") else None, refs)
        out(f"wrote {n} rows to {args.dump}", None)
    return 0


def _build(overrides: list[str], usage_error: type[Exception], config_dirs: list[str] = ()):
    from ftsweep.config import ConfigError
    from ftsweep.config.compose import ConfigFailure, compose
    from ftsweep.data import DataError
    from ftsweep.model import load_tokenizer
    from ftsweep.stages.registry import stage_module

    try:
        cfg = compose(overrides, config_dirs=config_dirs)  # ConfigFailure is a UsageError: one line, exit 2
    except ConfigFailure as err:
        cause = err.__cause__
        if not (isinstance(cause, ConfigError) and cause.key == "data.val_size" and "objective.metric" in str(cause)):
            raise
        # val_size=0 without a validation file only matters to an eval_* objective: inspect trains nothing
        cfg = compose([*overrides, "objective.metric=train_loss"], config_dirs=config_dirs)
    try:
        tokenizer = load_tokenizer(cfg)
        return stage_module(cfg.stage.name).datasets(cfg, tokenizer), tokenizer, cfg
    except (DataError, ConfigError) as err:
        failure = usage_error(str(err))
        failure.dropped_where = getattr(err, "dropped_where", None)  # every row dropped: which (--dropped)
        raise failure from None


# ------------------------------------------------------------------------------------------- spans
def row_spans(tokenizer: Any, input_ids: list[int], labels: list[int]) -> list[Span]:
    """Split a row into runs of (trained?, special token?) and decode each run with special tokens kept."""
    special_ids = set(tokenizer.all_special_ids)
    spans: list[Span] = []
    start = 0
    key: tuple[bool, bool] | None = None
    for i, (tok, lab) in enumerate(zip(input_ids, labels)):
        k = (lab != IGNORE_INDEX, tok in special_ids)
        if key is not None and k != key:
            spans.append(_span(tokenizer, input_ids, start, i, key))
            start = i
        key = k
    if key is not None:
        spans.append(_span(tokenizer, input_ids, start, len(labels), key))
    return spans


SPAN_CONTEXT = 8  # tokens before a span decoded with it, so that the span reads as it does within its row


def _span(tokenizer: Any, ids: list[int], start: int, end: int, key: tuple[bool, bool]) -> Span:
    """ids[start:end] as it reads within the row: decoded after a few tokens of context, which are then removed. A
    SentencePiece decoder (Llama 2, Mistral) strips the leading space of what it decodes, so a span decoded alone
    would hide the space token ("▁Hello") an answer starts with; decoded alone only when the context's text is not
    a prefix (a character split across the seam)."""
    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    text = decode(ids[start:end])
    if start:
        context = ids[max(0, start - SPAN_CONTEXT) : start]
        before, both = decode(context), decode(context + ids[start:end])
        if both.startswith(before):
            text = both[len(before) :]
    return Span(text, trained=key[0], special=key[1], n_tokens=end - start)


def plain_text(spans: list[Span]) -> str:
    """The row as text with ``[[...]]`` around each trained run (special tokens inside a run included)."""
    parts: list[str] = []
    trained = False
    for s in spans:
        if s.trained != trained:
            parts.append(OPEN if s.trained else CLOSE)
            trained = s.trained
        parts.append(s.text)
    if trained:
        parts.append(CLOSE)
    return "".join(parts)


def _print_row(out, spans: list[Span], plain: bool) -> None:
    if plain:
        out(plain_text(spans), None)
        return
    from rich.text import Text

    text = Text()
    for s in spans:
        style = "bold green" if s.trained else "grey50"
        text.append(s.text, style=f"{style} reverse" if s.special else style)
    out(text, None)


def _header(i: int, split: str, row: dict) -> str:
    n = len(row["input_ids"])
    trained = sum(1 for t in row["labels"] if t != IGNORE_INDEX)
    return f"--- {split} row {i}: {n} tokens, {trained} trained, {n - trained} masked ---"


def _printer(plain: bool):
    if plain:
        return lambda obj, _style: print(obj)
    from rich.console import Console

    console = Console(highlight=False)
    legend = "[bold green]trained[/] [grey50]masked[/] [reverse]special[/]"
    console.print(legend)
    return lambda obj, _style: console.print(obj)


# ------------------------------------------------------------------------------------ preference
def preference_views(row: dict) -> list[tuple[str, list[int], list[int]]]:
    """(name, input_ids, labels) per answer of a pair (chosen, rejected) or an unpaired KTO row."""
    prompt = row["prompt_ids"]
    if "chosen_ids" in row:
        answers = [("chosen", row["chosen_ids"]), ("rejected", row["rejected_ids"])]
    else:
        answers = [("desirable" if row["label"] else "undesirable", row["completion_ids"])]
    return [(name, prompt + ids, [IGNORE_INDEX] * len(prompt) + ids) for name, ids in answers]


def _print_dropped(stats: dict, out) -> None:
    """``--dropped``: the rows the length policy (or a pair's own check) dropped, and why."""
    listed = stats.get("dropped_where") or []
    out(f"dropped rows ({stats['n_dropped']}, train and eval):", None)
    for where in listed:
        out(f"  {where}", None)
    if stats["n_dropped"] > len(listed):
        out(f"  ... and {stats['n_dropped'] - len(listed)} more", None)


def _main_preference(args, ds, tokenizer, cfg, bundle, out, plain: bool) -> int:
    for i in range(min(args.rows, len(ds))):
        for name, ids, labels in preference_views(ds[i]):
            out(f"--- {args.split} row {i} {name}: {len(ids)} tokens, {len(ids) - labels.count(IGNORE_INDEX)} trained ---",
                None)
            _print_row(out, row_spans(tokenizer, ids, labels), plain)
    lengths = [len(v[1]) for row in ds for v in preference_views(row)]
    out(histogram(lengths, cfg.data.cutoff_len, args.bins), None)
    out(pair_stats_line(bundle.stats), None)
    if args.dropped:
        _print_dropped(bundle.stats, out)
    if args.dump:
        args.dump.parent.mkdir(parents=True, exist_ok=True)
        with args.dump.open("w", encoding="utf-8") as f:
            for i, row in enumerate(ds):
                views = {name: tokenizer.decode(ids[len(row["prompt_ids"]):]) for name, ids, _ in preference_views(row)}
                f.write(json.dumps({"index": i, **row, "prompt": tokenizer.decode(row["prompt_ids"]), **views},
                                   ensure_ascii=False) + "\n")
        out(f"wrote {len(ds)} rows to {args.dump}", None)
    return 0


def _main_prompts(args, ds, tokenizer, cfg, bundle, out) -> int:
    """stage=grpo trains on the policy's own completions, not on the data's tokens: each prompt as the policy
    reads it (tokenized with special tokens, as trl does) and the answer the rewards compare with."""
    for i in range(min(args.rows, len(ds))):
        row = ds[i]
        ids = tokenizer(row["prompt"])["input_ids"]
        out(f"--- {args.split} row {i}: prompt of {len(ids)} tokens (the policy writes the answer) ---", None)
        out(tokenizer.decode(ids), None)
        answer = row.get("answer")
        out(f"answer (the rewards' reference): {answer!r}" if answer is not None else "answer: none (a prompt-only row)",
            None)
    out(histogram([len(tokenizer(p)["input_ids"]) for p in ds["prompt"]], cfg.data.cutoff_len, args.bins), None)
    out("data: {n_train} train / {n_eval} eval prompts, {n_dropped} dropped (prompt longer than data.cutoff_len), "
        "{n_skipped_bad} bad rows skipped".format(**bundle.stats), None)
    if args.dropped:
        _print_dropped(bundle.stats, out)
    if args.dump:
        args.dump.parent.mkdir(parents=True, exist_ok=True)
        with args.dump.open("w", encoding="utf-8") as f:
            for i, row in enumerate(ds):
                f.write(json.dumps({"index": i, **row}, ensure_ascii=False) + "\n")
        out(f"wrote {len(ds)} rows to {args.dump}", None)
    return 0


def pair_stats_line(stats: dict[str, Any]) -> str:
    return ("data: {n_train} train / {n_eval} eval examples; {n_truncated} truncated, {n_dropped} dropped "
            "({n_dropped_identical} chosen identical to rejected, {n_dropped_empty_answer} empty answer, "
            "{n_dropped_prompt_too_long} prompt too long), {n_skipped_bad} bad rows skipped".format(**stats))


# ----------------------------------------------------------------------------------- summary, dump
def histogram(lengths: list[int], cutoff: int, bins: int = 10) -> str:
    """A text histogram of row lengths in ``bins`` equal bins over [0, cutoff]."""
    if not lengths:
        return "length histogram: no rows"
    width = max(1, -(-cutoff // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min((n - 1) // width if n else 0, bins - 1)] += 1
    top = max(counts) or 1
    lines = [
        f"length histogram ({len(lengths)} rows, min {min(lengths)}, max {max(lengths)}, cutoff {cutoff}):"
    ]
    for b, c in enumerate(counts):
        lo, hi = b * width + 1, min((b + 1) * width, cutoff) if b < bins - 1 else max(cutoff, max(lengths))
        lines.append(f"  {lo:>6}-{hi:<6} {c:>6} {'#' * round(40 * c / top)}")
    return "\n".join(lines)


def stats_line(stats: dict[str, Any], fingerprint: str) -> str:
    from ftsweep.data.pipeline import call_text_warning

    return (
        "data: {n_train} train / {n_eval} eval rows; {n_truncated} truncated, {n_dropped} dropped "
        "({n_dropped_overlong} over-long, {n_dropped_empty_answer} empty answer), {n_skipped_bad} bad rows skipped, "
        "{n_filtered} filtered out; padding {padding_fraction:.1%}; ".format(**stats)
        + f"cache {'hit' if stats.get('cache_hit') else 'miss'} ({fingerprint})"
        + (f"\n{warning}" if (warning := call_text_warning(stats)) else "")
    )


def dump_rows(path: Path, tokenizer: Any, ds: Any, where: list[str] | None = None,
              references: list[list[str] | None] | None = None) -> int:
    """Write each row as JSON: its source (file and row / line), input_ids, labels, decoded text,
    decoded trained text and spans; with ``references`` (validation rows, data.columns.references) each row's
    acceptable answers (null for a row without them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, row in enumerate(ds):
            spans = row_spans(tokenizer, row["input_ids"], row["labels"])
            record = {
                "index": i,
                "source": where[i] if where else None,
                "input_ids": row["input_ids"],
                "labels": row["labels"],
                "text": "".join(s.text for s in spans),
                "trained_text": "".join(s.text for s in spans if s.trained),
                "spans": [{"text": s.text, "trained": s.trained} for s in spans],
                **({"references": references[i]} if references is not None else {}),
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(ds)
