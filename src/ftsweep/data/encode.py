"""Segments -> token ids, token kinds, length policy, labels.

Every row becomes ``input_ids`` plus a parallel list of token kinds (prompt / answer / history
answer). Truncation works on the kinds, and labels are derived from them last, so the mask is
explicit: ``labels[i] == input_ids[i]`` where a token is trained and ``-100`` where it is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftsweep.data.templates import ANSWER, PROMPT, Segment

IGNORE_INDEX = -100
# Policies that cut the prompt, whose "rows left without any prompt token" are counted for comparison.
PROMPT_CUTTING = ("truncate_both", "truncate_prompt")


@dataclass
class Encoded:
    """One tokenized row: ids, the kind of each id, and where the row came from."""

    ids: list[int]
    kinds: list[int]
    where: str = ""


@dataclass
class LengthCounts:
    """What the length policy did: rows truncated, rows dropped as over-long or left without an answer,
    rows left without any prompt token, and how many would have lost their prompt under each policy."""

    truncated: int = 0
    dropped_overlong: int = 0
    dropped_empty: int = 0
    prompt_lost: int = 0
    prompt_lost_if: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROMPT_CUTTING, 0))
    dropped_where: list[str] = field(default_factory=list)
    # assistant turns whose text beside a tool call the chat template does not render (not trained)
    call_text_dropped: int = 0
    call_text_dropped_where: list[str] = field(default_factory=list)


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
                ids_per_segment[j] = ids
    out = [Encoded([], [], where) for _, where in rows]
    for (i, seg), ids in zip(flat, ids_per_segment):
        out[i].ids += ids
        out[i].kinds += [seg.kind] * len(ids)
    if add_eos:
        for e in out:
            e.ids.append(tokenizer.eos_token_id)
            e.kinds.append(ANSWER)
    return out


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's split of a length budget between prompt (source) and answer (target): a short
    answer is kept whole, a short prompt is kept whole, otherwise both shrink in proportion."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def _parts(e: Encoded, bos_id: int | None) -> tuple[int, int]:
    """(head, first_answer): head = 1 when the row starts with a prompt bos (always kept); the prompt
    to cut is ids[head:first_answer], the answer part is everything after it."""
    head = 1 if e.ids and e.ids[0] == bos_id and e.kinds[0] == PROMPT else 0
    first_answer = next((i for i, k in enumerate(e.kinds) if k != PROMPT), len(e.kinds))
    return head, max(first_answer, head)


def fit_length(
    e: Encoded, cutoff: int, policy: str, bos_id: int | None, counts: LengthCounts
) -> Encoded | None:
    """Apply ``data.overlong`` to a row longer than ``cutoff``; None when the row is dropped.

    ``truncate_both`` splits the budget with :func:`infer_seqlen`, cutting the prompt from the left
    (after bos; the end of the prompt is what leads into the answer) and the answer from the right;
    ``truncate_answer`` cuts the end; ``truncate_prompt`` removes prompt tokens from the left (after
    bos) and cuts the end only if that is not enough; ``drop`` drops the row. A row with no answer
    token left is dropped: it would train on zero target tokens.
    """
    if len(e.ids) > cutoff:
        head, first = _parts(e, bos_id)
        n_prompt, n_answer = first - head, len(e.ids) - first
        _count_prompt_lost_if(counts, n_prompt, n_answer, cutoff - head)
        if policy == "drop":
            counts.dropped_overlong += 1
            counts.dropped_where.append(f"{e.where}: over-long ({len(e.ids)} > {cutoff} tokens, data.overlong=drop)")
            return None
        counts.truncated += 1
        keep_prompt = n_prompt  # truncate_answer
        if policy == "truncate_prompt":
            keep_prompt = max(0, n_prompt - (len(e.ids) - cutoff))
        elif policy == "truncate_both":
            keep_prompt, _ = infer_seqlen(n_prompt, n_answer, cutoff - head)
        if n_prompt and not keep_prompt:
            counts.prompt_lost += 1
        cut = slice(first - keep_prompt, None)
        ids = e.ids[:head] + e.ids[cut]
        kinds = e.kinds[:head] + e.kinds[cut]
        e = Encoded(ids[:cutoff], kinds[:cutoff], e.where)
    if ANSWER not in e.kinds:
        counts.dropped_empty += 1
        counts.dropped_where.append(f"{e.where}: no answer token left within data.cutoff_len={cutoff}")
        return None
    return e


def _count_prompt_lost_if(counts: LengthCounts, n_prompt: int, n_answer: int, budget: int) -> None:
    if not n_prompt:
        return
    if n_answer >= budget:  # truncate_prompt removes at most the whole prompt
        counts.prompt_lost_if["truncate_prompt"] += 1
    if infer_seqlen(n_prompt, n_answer, budget)[0] == 0:
        counts.prompt_lost_if["truncate_both"] += 1


def make_labels(e: Encoded, train_on_prompt: bool) -> list[int]:
    """Labels: the id where trained, -100 elsewhere. Answers are trained, prompts only with
    ``train_on_prompt``; HISTORY turns (mask_history, loss_weight 0) never, as in LLaMA-Factory."""
    trained = (ANSWER, PROMPT) if train_on_prompt else (ANSWER,)
    return [t if k in trained else IGNORE_INDEX for t, k in zip(e.ids, e.kinds)]
