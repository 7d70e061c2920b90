"""Preference data for ``stage=dpo`` (pairs) and ``stage=kto`` (unpaired rows) -> token ids.

Layouts (``data.format`` says how the prompt is written; ``data.columns`` maps column names):

* ``alpaca``: LLaMA-Factory's Alpaca-style ranking rows, ``instruction`` / ``input`` + ``chosen`` /
  ``rejected`` strings; the prompt is rendered with the data group's Alpaca template, as in SFT.
* ``sharegpt``: LLaMA-Factory's ShareGPT ranking rows, ``conversations`` + ``chosen`` / ``rejected``
  messages (``{"from": "gpt", "value": ...}``).
* ``chat``: TRL's conversational preference format, ``prompt`` (messages) + ``chosen`` / ``rejected``
  (messages), or ``messages`` + ``chosen`` / ``rejected``, or the implicit prompt (``chosen`` and
  ``rejected`` are whole conversations; the prompt is their common leading messages); Alpaca-style ranking rows
  (with a ``system`` prompt or ``history``) rendered with the chat template, as for SFT.
* ``prompt_completion``: TRL's plain format, ``prompt`` / ``chosen`` / ``rejected`` strings (no template).

KTO rows are unpaired: ``prompt`` + ``completion`` + boolean ``label`` (plain or conversational), or
``messages`` (ShareGPT: ``conversations``) whose last assistant turn is the completion + ``label``; a paired file is unpaired (chosen
-> true, rejected -> false), as trl does. Chat layouts are rendered with the chat template through the
SFT renderer, so an answer ends exactly as inference ends it (``<|eot_id|>``); other layouts end with eos.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ftsweep.data.chat import TemplateError, alpaca_as_chat
from ftsweep.data.encode import tokenize_segments
from ftsweep.data.errors import BadRows, DataError
from ftsweep.data.options import data_options
from ftsweep.data.pipeline import MAX_LISTED_DROPPED, DataBundle, Renderer, _all_dropped, with_dropped
from ftsweep.data.sources import Record, column_map, load_records, no_training_rows, select, split_validation
from ftsweep.data.templates import ANSWER, _label, get_text, missing, number_text


@dataclass
class PairCounts:
    """What the pair builder dropped or cut (shown by ``ftsweep inspect`` and in metrics.json)."""

    rows: int = 0
    truncated: int = 0
    identical: int = 0
    empty_answer: int = 0
    prompt_too_long: int = 0
    dropped_where: list[str] = field(default_factory=list)


@dataclass
class Example:
    """One tokenized preference example: the prompt and its answers (chosen first; KTO: one answer)."""

    prompt_ids: list[int]
    answers: list[list[int]]
    label: bool | None = None
    where: str = ""


# ------------------------------------------------------------------------------------------- rows
def _answer_message(value: Any, sharegpt: bool) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {"from": "gpt", "value": value} if sharegpt else {"role": "assistant", "content": value}


def _as_messages(value: Any, sharegpt: bool) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [_answer_message(value, sharegpt)]


def _is_empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, dict):
        text = value.get("value", value.get("content"))
        return isinstance(text, str) and not text.strip()
    if isinstance(value, list):
        return not value or all(_is_empty(v) for v in value[-1:])
    return False


def sft_rows(row: dict, where: str, d: Any, answer_keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """One SFT-style row per answer (chosen, rejected / completion), in the layout of ``d.format``."""
    fmt = d.format
    for key in answer_keys:
        if key not in row:
            raise missing(row, key, where, d)
        if row[key] is None:  # the column is there, its value null (as get_text says it)
            raise DataError(where, "null (a text is needed here)", _label(key, d))
    if fmt == "alpaca" or alpaca_as_chat(row, fmt):  # under chat: the Alpaca row as chat turns, system included
        # checked against the row as read (its own columns, 'chosen' not 'output'), not the SFT rows built from it
        get_text(row, "instruction", where, d)
        return [{**row, "output": get_text(row, k, where, d, nonempty=False)} for k in answer_keys]
    if fmt == "prompt_completion":
        row = split_implicit(row, d)  # Anthropic HH's layout
        if "prompt" not in row:
            raise missing(row, "prompt", where, d)
        if isinstance(row["prompt"], list):  # TRL's conversational layout: messages, rendered by the chat template
            return [{**row, "completion": row[k]} for k in answer_keys]
        for k in answer_keys:
            if isinstance(row[k], list):
                raise DataError(where, "a list of messages after a plain-text prompt: read this layout with "
                                       "data.format=chat", _label(k, d))
        return [{"prompt": row["prompt"], "completion": get_text(row, k, where, d, nonempty=False)}
                for k in answer_keys]
    if fmt == "sharegpt":
        turns = row.get("conversations")
        if not isinstance(turns, list):
            raise missing(row, "conversations", where, d)
        return [{**row, "conversations": turns + [_answer_message(row[k], True)]} for k in answer_keys]
    # chat: prompt + answers, messages + answers, or the implicit prompt (whole conversations)
    prefix = row.get("prompt", row.get("messages"))
    if prefix is None:
        answers = [_as_messages(row[k], False) for k in answer_keys]
        if len(answers) == 2:
            _one_conversation(answers, answer_keys, where, d)
        return [{**row, "messages": a} for a in answers]
    if isinstance(prefix, str):
        prefix = [{"role": "user", "content": prefix}]
    answers = [_as_messages(row[k], False) for k in answer_keys]
    whole = [_repeats(a, prefix) for a in answers]
    if all(whole):  # whole conversations beside their prompt (UltraFeedback binarized)
        return [{**row, "messages": a} for a in answers]
    if any(whole):
        full, reply = (answer_keys[whole.index(True)], answer_keys[whole.index(False)])
        raise DataError(where, f"{full} is the whole conversation (it repeats the prompt's messages) but {reply} is "
                               "not: write both as whole conversations or both as the reply alone", _label(reply, d))
    return [{**row, "messages": list(prefix) + a} for a in answers]


ONE_PROMPT = "a pair of whole conversations shares every message before its last answer (the prompt)"


def _one_conversation(answers: list[list], keys: tuple[str, ...] | list[str], where: str, d: Any) -> None:
    """Two whole conversations (trl's implicit prompt) are two answers to one conversation: every message before
    their last one is the same (the prompt). One that differs earlier is named (it said only that the two rendered
    different prompts)."""
    first, second = answers
    earlier = min(len(first), len(second)) - 1
    for i in range(max(earlier, 0)):
        a, b = first[i], second[i]
        if not _same_message(a, b):
            def said(m: Any) -> str:
                return f"{m.get('role')} {str(m.get('content'))[:40]!r}" if isinstance(m, dict) else repr(m)[:40]

            raise DataError(where, f"message {i + 1} differs ({said(a)} vs {said(b)}): {ONE_PROMPT}", _label(keys[1], d))
    if len(first) != len(second):
        raise DataError(where, f"{len(first)} vs {len(second)} messages: {ONE_PROMPT}", _label(keys[1], d))


def _repeats(turns: list, prefix: list) -> bool:
    """True when ``turns`` start with the messages of ``prefix`` (same roles and contents) and go on."""
    if not isinstance(prefix, list) or len(turns) <= len(prefix):
        return False
    return all(_same_message(t, p) for t, p in zip(turns, prefix))


def _same_message(a: Any, b: Any) -> bool:
    """Two messages with the same role and content."""
    return isinstance(a, dict) and isinstance(b, dict) and a.get("role") == b.get("role") \
        and a.get("content") == b.get("content")


def split_implicit(row: dict, d: Any) -> dict:
    """A plain-text pair without a prompt column (Anthropic HH) with its prompt split off (:func:`implicit_prompt`);
    any other row as it is."""
    if d.format != "prompt_completion" or "prompt" in row or not all(
            isinstance(row.get(k), str) for k in ("chosen", "rejected")):
        return row
    return {**row, **implicit_prompt(row["chosen"], row["rejected"])}


def implicit_prompt(chosen: str, rejected: str) -> dict[str, str]:
    """A pair written as two whole texts (Anthropic HH: ``"\n\nHuman: ...\n\nAssistant: ..."``) -> prompt =
    their common beginning up to its last ``Assistant:``, answers = the rest. trl's ``extract_prompt`` cuts at
    the first differing character, which puts the answers' common first words into the prompt and can cut a
    word (``... Assistant: I can| help.`` / ``I can|not.``); without that marker the cut goes back to the start
    of the word where they differ. A space before the answer goes with the answer, as in trl."""
    if chosen == rejected:  # no answer to tell apart: empty answers, dropped as a pair and unpaired (kto)
        return {"prompt": chosen, "chosen": "", "rejected": ""}
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            break
    else:
        idx = min(len(chosen), len(rejected))
    turn = chosen.rfind("Assistant:", 0, idx)
    if turn >= 0:
        idx = turn + len("Assistant:")
    elif any(_word(text, idx) for text in (chosen, rejected)):
        while _word(chosen, idx - 1):
            idx -= 1
    if idx and chosen[idx - 1] == " ":
        idx -= 1
    return {"prompt": chosen[:idx], "chosen": chosen[idx:], "rejected": rejected[idx:]}


def _word(text: str, i: int) -> bool:
    """Whether ``text[i]`` is a letter or digit of a space-separated script (not CJK: no spaces to go back to)."""
    return 0 <= i < len(text) and text[i].isascii() and text[i].isalnum()


LABEL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _kto_label(row: dict, where: str, d: Any) -> bool:
    if "label" not in row:
        raise missing(row, "label", where, d)
    value = row["label"]
    # a CSV / TSV cell is text ("true", "False", "1"); a spreadsheet's or parquet file's column may hold 0 / 1
    if isinstance(value, str) and value.strip().lower() in LABEL_TEXT:
        return LABEL_TEXT[value.strip().lower()]
    if type(value) is int and value in (0, 1):
        return bool(value)
    if not isinstance(value, bool):
        raise DataError(where, f"must be true or false, got {value!r}", _label("label", d))
    return value


# --------------------------------------------------------------------------------------- encoding
class PairEncoder:
    """Rows -> :class:`Example` (prompt ids + answer ids), with the length policy applied."""

    def __init__(self, d: Any, tokenizer: Any, paired: bool, max_prompt_length: int | None):
        self.d = d
        self.tokenizer = tokenizer
        self.paired = paired
        self.renderer = Renderer(d, tokenizer)
        self.max_prompt = max_prompt_length if max_prompt_length is not None else d.cutoff_len - 1
        self.add_eos = d.add_eos

    def rows(self, rec: Record) -> list[tuple[dict, bool | None]]:
        """(SFT-style row, KTO label) per answer of the record."""
        row, d = rec.row, self.d
        if self.paired:
            return [(r, None) for r in sft_rows(row, rec.where, d, ("chosen", "rejected"))]
        if "chosen" in row and "rejected" in row and "completion" not in row:  # a pair, unpaired as trl does
            chosen, rejected = sft_rows(row, rec.where, d, ("chosen", "rejected"))
            return [(chosen, True), (rejected, False)]
        label = _kto_label(row, rec.where, d)
        if "completion" in row:
            return [(sft_rows(row, rec.where, d, ("completion",))[0], label)]
        turns = {"chat": "messages", "sharegpt": "conversations"}.get(d.format)
        if turns in row:  # the last assistant turn is the completion (LLaMA-Factory's kto_en_demo, as ShareGPT)
            return [(row, label)]
        raise missing(row, "completion", rec.where, d)

    def empty(self, rec: Record) -> bool:
        """An empty answer, as the answers are split (a whole-text pair's answers are what follows its prompt)."""
        keys = ("chosen", "rejected") if self.paired else ("completion", "chosen", "rejected")
        row = split_implicit(rec.row, self.d) if "completion" not in rec.row else rec.row
        return any(_is_empty(row.get(k)) for k in keys if k in row)

    def encode(self, rec: Record, counts: PairCounts) -> list[Example]:
        """The examples of one record ([] when the length policy or a duplicate drops it)."""
        counts.rows += 1
        if self.paired and split_implicit(rec.row, self.d) is not rec.row and rec.row["chosen"] == rec.row["rejected"]:
            counts.identical += 1  # two equal whole texts: nothing after their common prompt
            counts.dropped_where.append(f"{rec.where}: chosen identical to rejected")
            return []
        if self.empty(rec):
            counts.empty_answer += 1
            counts.dropped_where.append(f"{rec.where}: empty answer")
            return []
        parts = []
        for row, label in self.rows(rec):
            segments = self.renderer(Record(row, rec.where))
            if not segments or segments[-1].kind != ANSWER:
                raise DataError(rec.where, "the row has no answer to train", "chosen" if self.paired else "completion")
            enc = tokenize_segments([(segments[:-1], rec.where), (segments[-1:], rec.where)], self.tokenizer, False)
            # Chat templates close the turn themselves (<|eot_id|>); other layouts end the answer with eos (one: an
            # answer whose text ends with it already keeps that one, as SFT rows do).
            eos = (self.add_eos and not self.renderer.uses_chat(row)
                   and enc[1].ids[-1:] != [self.tokenizer.eos_token_id])
            answer = enc[1].ids + ([self.tokenizer.eos_token_id] if eos else [])
            parts.append((enc[0].ids, answer, label))
        prompt = parts[0][0]
        if any(p != prompt for p, _, _ in parts):
            raise DataError(rec.where, "chosen and rejected render different prompts with this template", "prompt")
        if len(prompt) > self.max_prompt:
            counts.prompt_too_long += 1
            counts.dropped_where.append(f"{rec.where}: prompt of {len(prompt)} tokens > {self.max_prompt}")
            return []
        if len(parts) == 2 and parts[0][1] == parts[1][1]:  # a pair, or one unpaired for KTO (true and false at once)
            counts.identical += 1
            counts.dropped_where.append(f"{rec.where}: chosen identical to rejected")
            return []
        budget = self.d.cutoff_len - len(prompt)
        answers = [a[:budget] for _, a, _ in parts]
        if any(len(a) > budget for _, a, _ in parts):
            counts.truncated += 1
        if self.paired:
            return [Example(prompt, answers, None, rec.where)]
        return [Example(prompt, [a], label, rec.where) for a, (_, _, label) in zip(answers, parts)]


def encode_examples(records: list[Record], encoder: PairEncoder, bad: BadRows, counts: PairCounts) -> list[Example]:
    out: list[Example] = []
    for rec in records:
        try:
            out += encoder.encode(rec, counts)
        except TemplateError:
            raise
        except DataError as err:
            bad.handle(err, rec, lambda r: encoder.encode(r, PairCounts()))
    return out


def to_dataset(examples: list[Example], paired: bool) -> Any:
    """Examples -> the pre-tokenized columns trl's DPO / KTO collators read."""
    from datasets import Dataset

    if not examples:
        return None
    if paired:
        return Dataset.from_dict({"prompt_ids": [e.prompt_ids for e in examples],
                                  "chosen_ids": [e.answers[0] for e in examples],
                                  "rejected_ids": [e.answers[1] for e in examples]})
    return Dataset.from_dict({"prompt_ids": [e.prompt_ids for e in examples],
                              "completion_ids": [e.answers[0] for e in examples],
                              "label": [bool(e.label) for e in examples]})


# ------------------------------------------------------------------------------------- entry point
def load_split(cfg: Any, bad: BadRows) -> tuple[list[Record], list[Record], int]:
    """(train records, validation records, rows read) as the SFT pipeline splits them."""
    d = data_options(cfg.data)
    read, _ = load_records(d.path, d, bad)
    n_rows = len(read)
    records = select(read, shuffle=d.shuffle, seed=d.seed, max_rows=d.max_rows)
    if d.validation_path:
        val, _ = load_records(d.validation_path, d, bad, validation=True)
        train, read = records, [*read, *val]
    else:
        train, val = split_validation(records, d.val_size, d.seed)
    bad.encoding(read, [*train, *val])
    return train, val, n_rows


def build_preference_datasets(cfg: Any, tokenizer: Any, *, paired: bool, max_prompt_length: int | None) -> DataBundle:
    """Tokenized train / eval preference datasets for ``cfg.data`` and their counts.

    Raises:
        DataError: a bad row (under ``data.bad_rows=fail``), a KTO label that is not boolean, chosen
            identical to rejected in every row, or nothing left to train on.
    """
    import hashlib
    import json

    d = data_options(cfg.data)
    bad = BadRows(d.bad_rows)
    train_rec, val_rec, n_rows = load_split(cfg, bad)
    encoder = PairEncoder(d, tokenizer, paired, max_prompt_length)
    counts = PairCounts()
    train = encode_examples(train_rec, encoder, bad, counts)
    evals = encode_examples(val_rec, encoder, bad, counts)
    if paired and counts.identical and counts.identical == counts.rows - counts.empty_answer - counts.prompt_too_long:
        raise DataError(d.path, f"chosen is identical to rejected in every row ({counts.identical}): nothing to prefer",
                        "rejected")
    if val_rec and not evals:  # an eval objective would find nothing to measure, after the whole run
        why = [f"a prompt longer than stage.max_prompt_length = {encoder.max_prompt} tokens",
               *(["chosen identical to rejected"] if paired else []), "an empty answer"]
        raise _all_dropped(DataError(
            d.validation_path or "data.val_size", f"no validation {'pairs' if paired else 'rows'} left: all "
            f"{len(val_rec)} were dropped ({', '.join(why)}, or a bad row; ftsweep inspect --dropped lists them)"),
            counts)
    if not train and not train_rec and not d.validation_path:
        raise no_training_rows(d.val_size, len(val_rec))
    if not train:
        raise DataError(d.path, "no training pairs left after bad rows, duplicates and the length policy")
    if not paired:
        # trl's KTO batches estimate the KL term from mismatched (prompt, completion) pairs in the batch:
        # a seeded shuffle keeps desirable and undesirable rows of one source row apart.
        random.Random(d.seed).shuffle(train)
    stats = {
        "n_rows": n_rows,
        "n_skipped_bad": bad.skipped,
        "n_truncated": counts.truncated,
        "n_dropped": counts.identical + counts.empty_answer + counts.prompt_too_long,
        "n_dropped_identical": counts.identical,
        "n_dropped_empty_answer": counts.empty_answer,
        "n_dropped_prompt_too_long": counts.prompt_too_long,
        "n_train": len(train),
        "n_eval": len(evals),
        "dropped_where": counts.dropped_where[:MAX_LISTED_DROPPED],  # ftsweep inspect --dropped
    }
    digest = hashlib.sha256(json.dumps([[e.prompt_ids, e.answers, e.label] for e in train + evals]).encode())
    return DataBundle(train=to_dataset(train, paired), eval=to_dataset(evals, paired), stats=stats,
                      fingerprint=digest.hexdigest()[:16])


# ------------------------------------------------------------------------------------- GRPO prompts
PLACEHOLDER = "x"  # the answer a prompt-only row is rendered with (only the prompt before it is kept)


def with_placeholder_answer(row: dict, fmt: str) -> dict | None:
    """A prompt-only row (trl's GRPO layout: ``prompt`` alone, an Alpaca row without ``output``, a conversation
    that ends with the user's turn) with a placeholder answer, so it renders as SFT renders its prompt; None
    for a row that has its answer."""
    if (fmt == "alpaca" or alpaca_as_chat(row, fmt)) and row.get("output") is None:
        return {**row, "output": PLACEHOLDER}
    if fmt == "prompt_completion" and row.get("completion") is None:
        return {**row, "completion": PLACEHOLDER}
    if fmt in ("chat", "sharegpt"):
        key = "conversations" if "conversations" in row else "messages"
        turns = row.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[-1], dict):
            last = turns[-1]
            if last.get("role", last.get("from")) in ("user", "human"):
                answer = {"from": "gpt", "value": PLACEHOLDER} if "from" in last else {"role": "assistant",
                                                                                       "content": PLACEHOLDER}
                return {**row, key: [*turns, answer]}
    return None


def prompt_and_answer(renderer: Renderer, tokenizer: Any, rec: Record) -> dict[str, str | None]:
    """A row of any SFT format -> {"prompt": the prompt text exactly as SFT renders it, "answer": its answer}.

    The prompt's leading bos text is left to the tokenizer (trl tokenizes the prompt with special tokens);
    the answer is the trained text without its end-of-turn / eos token (the reference for the rewards); for a
    prompt-only row its ``answer`` column (trl's and GSM8K's layout: ``messages`` + ``answer``), else None.
    """
    filled = with_placeholder_answer(rec.row, renderer.d.format)
    segments = renderer(Record(filled, rec.where) if filled is not None else rec)
    if not segments or segments[-1].kind != ANSWER:
        raise DataError(rec.where, "the row has no answer", "output")
    prompt = "".join(s.text for s in segments[:-1])
    bos = tokenizer.bos_token or ""
    if bos and prompt.startswith(bos):
        prompt = prompt[len(bos):]
    if filled is not None:
        answer = number_text(rec.row.get("answer"))
        return {"prompt": prompt, "answer": (answer.strip() or None) if isinstance(answer, str) else answer}
    ids = tokenizer(segments[-1].text, add_special_tokens=False)["input_ids"]
    return {"prompt": prompt, "answer": tokenizer.decode(ids, skip_special_tokens=True).strip()}


def _answer_field(d: Any, row: dict) -> str:
    if alpaca_as_chat(row, d.format):
        return "output"
    return {"alpaca": "output", "prompt_completion": "completion", "sharegpt": "conversations"}.get(d.format, "messages")


def _undesirable(label: Any) -> bool:
    """A KTO label that marks its completion undesirable (false, 0, the text "false" / "0")."""
    if isinstance(label, str):
        return LABEL_TEXT.get(label.strip().lower()) is False
    return label is False or type(label) is int and label == 0


# Columns trl's GRPOTrainer reads as images (a multimodal batch): not handed on from a text row.
NOT_FORWARDED = ("image", "images")


def _kind(value: Any) -> str:
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def _one_kind_per_column(row: dict[str, Any], where: str, kinds: dict[str, tuple[str, str]]) -> None:
    """A column handed to the rewards holds one kind of value in every row (a dataset column has one type)."""
    for key, value in row.items():
        if value is None:
            continue
        kind, first = kinds.setdefault(key, (_kind(value), where))
        if _kind(value) != kind:
            raise DataError(where, f"a {_kind(value)} where {first} has a {kind}: trl hands each column to the rewards "
                                   "as one list, so its values must have one type", key)


def build_prompt_datasets(cfg: Any, tokenizer: Any, needs_answer: tuple[str, ...] = ()) -> DataBundle:
    """Prompt / answer datasets for ``stage=grpo`` from any SFT format of ``cfg.data``; prompt-only rows
    (answer None) are refused while ``needs_answer`` names a reward that compares with the answer. The row's
    other columns (``solution``, ``difficulty``, ...) are kept: trl hands every column to the rewards."""
    from datasets import Dataset

    d = data_options(cfg.data)
    bad = BadRows(d.bad_rows)
    train_rec, val_rec, n_rows = load_split(cfg, bad)
    renderer = Renderer(d, tokenizer)
    # {field: the file's column} for the columns read under another name (not paths into a column: it stays whole)
    renamed = {} if d.loader == "mix" else {f: c for f, c in column_map(d).items() if f != "references" and "." not in c}

    def one(rec: Record) -> dict[str, Any]:
        pair = "chosen" in rec.row and "rejected" in rec.row
        if pair and not any(k in rec.row for k in ("prompt", "instruction", "messages", "conversations")):
            raise DataError(rec.where, "a preference pair of two whole texts or conversations (trl's implicit "
                                       "prompt) holds no prompt to generate from: stage=grpo reads prompts (a prompt "
                                       "column, or turns ending with the user's)", "prompt")
        if needs_answer and pair and not any(k in rec.row for k in ("completion", "output", "answer")):
            hint = ("read its chosen answer as the answer (data.columns.completion=chosen "
                    "data.format=prompt_completion) or " if "prompt" in rec.row else "")
            raise DataError(rec.where, f"a preference pair has no one answer: the {needs_answer[0]} reward compares "
                                       f"each completion with the row's answer; {hint}use rewards that need none "
                                       "(regex, length_penalty, function)", "chosen")
        row = prompt_and_answer(renderer, tokenizer, rec)
        if row["answer"] is None and needs_answer:
            raise DataError(rec.where, f"a prompt without an answer: the {needs_answer[0]} reward compares each "
                                       "completion with the row's answer (an 'answer' column beside the prompt is "
                                       "read as it; rewards that need none: regex, length_penalty, function)",
                            _answer_field(d, rec.row))
        if needs_answer and row["answer"] is not None and _undesirable(rec.row.get("label")):
            # a KTO row: its completion is what the answer should not be
            raise DataError(rec.where, f"false: this row's completion is an undesirable answer (a KTO row), no "
                                       f"reference for the {needs_answer[0]} reward to compare with: keep the rows "
                                       "labelled true for stage=grpo, or use rewards that need no answer (regex, "
                                       "length_penalty, function)", _label("label", d))
        # every column by the name the file gives it, as trl hands it (a {prompt, solution} file's `solution`,
        # read as the completion by data.format=auto or data.columns, reaches `def f(completions, solution, ...)`)
        columns = {k: v for k, v in rec.row.items() if k not in NOT_FORWARDED}
        for name, column in renamed.items():
            if name in columns and column not in rec.row:
                columns[column] = columns.pop(name)
        return {**columns, **row}

    dropped: list[str] = []

    def rows(records: list[Record]) -> list[dict[str, Any]]:
        out, kinds = [], {}
        for rec in records:
            try:
                item = one(rec)
            except TemplateError:
                raise
            except DataError as err:
                bad.handle(err, rec, one)
                continue
            # trl generates after the whole prompt (it cuts none): one past data.cutoff_len, which the memory
            # estimate and the other stages take as the longest, is dropped and counted as DPO / KTO drop theirs
            n = len(tokenizer(item["prompt"], verbose=False)["input_ids"])  # (its "longer than the model" is ours)
            if n > d.cutoff_len:
                dropped.append(f"{rec.where}: prompt of {n} tokens > data.cutoff_len = {d.cutoff_len}")
                continue
            out.append(item)
            _one_kind_per_column(item, rec.where, kinds)
        return out

    train, n_dropped_train = rows(train_rec), len(dropped)
    evals = rows(val_rec)
    if val_rec and not evals:  # the eval_reward objective would find nothing to measure, after the whole run
        why = (f"dropped (a prompt longer than data.cutoff_len = {d.cutoff_len} tokens; ftsweep inspect --dropped "
               "lists them) or skipped as bad rows" if len(dropped) > n_dropped_train else "skipped as bad rows")
        raise with_dropped(DataError(d.validation_path or "data.val_size", f"no validation prompts left: all "
                                 f"{len(val_rec)} were {why}"), dropped)
    if not train and not train_rec and not d.validation_path:
        raise no_training_rows(d.val_size, len(val_rec))
    if not train:
        raise with_dropped(DataError(d.path, "no prompts left after bad rows" + (
            f" and prompts longer than data.cutoff_len = {d.cutoff_len} tokens" if n_dropped_train else "")), dropped)
    stats = {"n_rows": n_rows, "n_skipped_bad": bad.skipped, "n_train": len(train), "n_eval": len(evals),
             "n_truncated": 0, "n_dropped": len(dropped), "n_dropped_prompt_too_long": len(dropped),
             "dropped_where": dropped[:MAX_LISTED_DROPPED]}

    def to_ds(items):
        return Dataset.from_list(items) if items else None

    return DataBundle(train=to_ds(train), eval=to_ds(evals), stats=stats, fingerprint="")
