"""Segments -> token ids, token kinds, length policy, labels.

Every row becomes ``input_ids`` plus a parallel list of token kinds (prompt / answer / history
answer). Truncation works on the kinds, and labels are derived from them last, so the mask is
explicit: ``labels[i] == input_ids[i]`` where a token is trained and ``-100`` where it is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftsweep.data.templates import ANSWER, HISTORY, PROMPT, Segment

IGNORE_INDEX = -100


@dataclass
class Encoded:
    """One tokenized row: ids, the kind of each id, and where the row came from."""

    ids: list[int]
    kinds: list[int]
    where: str = ""


@dataclass
class LengthCounts:
    """What the length policy did: rows truncated, rows dropped as over-long or left without an answer."""

    truncated: int = 0
    dropped_overlong: int = 0
    dropped_empty: int = 0
    dropped_where: list[str] = field(default_factory=list)


def tokenize_segments(rows: list[tuple[list[Segment], str]], tokenizer: Any, add_eos: bool) -> list[Encoded]:
    """Tokenize every segment on its own (batched for speed) and join them per row.

    Args:
        rows: (segments, where) per row.
        tokenizer: the prepared tokenizer; segments marked ``bos`` get its special tokens (bos).
        add_eos: append ``tokenizer.eos_token_id`` to the row as an answer token (trained).
    """
    flat = [(i, s) for i, (segs, _) in enumerate(rows) for s in segs]
    ids_per_segment: list[list[int]] = [[] for _ in flat]
    for with_bos in (True, False):
        picked = [j for j, (_, s) in enumerate(flat) if s.bos == with_bos]
        if picked:
            enc = tokenizer([flat[j][1].text for j in picked], add_special_tokens=with_bos, verbose=False)[
                "input_ids"
            ]
            for j, ids in zip(picked, enc):
                ids_per_segment[j] = list(ids)
    out = [Encoded([], [], where) for _, where in rows]
    for (i, seg), ids in zip(flat, ids_per_segment):
        out[i].ids += ids
        out[i].kinds += [seg.kind] * len(ids)
    if add_eos:
        for e in out:
            e.ids.append(tokenizer.eos_token_id)
            e.kinds.append(ANSWER)
    return out


def fit_length(
    e: Encoded, cutoff: int, policy: str, bos_id: int | None, counts: LengthCounts
) -> Encoded | None:
    """Apply ``data.overlong`` to a row longer than ``cutoff``; None when the row is dropped.

    ``truncate_answer`` cuts the end; ``truncate_prompt`` removes prompt tokens from the left (after
    bos) before the first answer and cuts the end only if that is not enough; ``drop`` drops the row.
    A row with no answer token left is dropped: it would train on zero target tokens.
    """
    if len(e.ids) > cutoff:
        if policy == "drop":
            counts.dropped_overlong += 1
            counts.dropped_where.append(e.where)
            return None
        counts.truncated += 1
        ids, kinds = e.ids, e.kinds
        if policy == "truncate_prompt":
            ids, kinds = _cut_prompt_left(ids, kinds, len(ids) - cutoff, bos_id)
        e = Encoded(ids[:cutoff], kinds[:cutoff], e.where)
    if ANSWER not in e.kinds:
        counts.dropped_empty += 1
        counts.dropped_where.append(e.where)
        return None
    return e


def _cut_prompt_left(
    ids: list[int], kinds: list[int], over: int, bos_id: int | None
) -> tuple[list[int], list[int]]:
    start = 1 if ids and ids[0] == bos_id else 0  # keep bos: the model always saw it first
    first_answer = next((i for i, k in enumerate(kinds) if k != PROMPT), len(kinds))
    n = max(0, min(over, first_answer - start))
    return ids[:start] + ids[start + n :], kinds[:start] + kinds[start + n :]


def make_labels(e: Encoded, train_on_prompt: bool) -> list[int]:
    """Labels: the id where trained, -100 elsewhere. Answers are trained; prompts and (under
    mask_history) earlier assistant turns are masked unless ``train_on_prompt``."""
    if train_on_prompt:
        return list(e.ids)
    return [t if k == ANSWER else IGNORE_INDEX for t, k in zip(e.ids, e.kinds)]


def count_kinds(e: Encoded) -> dict[int, int]:
    return {k: e.kinds.count(k) for k in (PROMPT, ANSWER, HISTORY)}
