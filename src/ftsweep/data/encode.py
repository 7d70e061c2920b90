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
# Policies that cut the prompt, whose "rows left without any prompt token" are counted for comparison.
PROMPT_CUTTING = ("truncate_both", "truncate_prompt")


@dataclass
class Encoded:
    """One tokenized row: ids, the kind of each id, and where the row came from."""

    ids: list[int]
    kinds: list[int]
    where: str = ""
    # leading tokens truncation keeps: a chat row's system / tool block (with its bos)
    protect: int = 0


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
    # over-long rows whose untrained history turns (mask_history, loss_weight 0) were removed to fit
    history_cut: int = 0
    # assistant turns whose text beside a tool call the chat template does not render (not trained)
    call_text_dropped: int = 0
    call_text_dropped_where: list[str] = field(default_factory=list)
    # answer (trained) tokens that truncation cut off (a text document longer than cutoff_len: all but its start)
    answer_tokens_cut: int = 0
    # the rows that lost answer tokens (a generation objective's reference is then the cut answer)
    answer_cut_where: list[str] = field(default_factory=list)


def tokenize_segments(
    rows: list[tuple[list[Segment], str]], tokenizer: Any, add_eos: bool | list[bool]
) -> list[Encoded]:
    """Tokenize every segment on its own (batched for speed) and join them per row.

    Args:
        rows: (segments, where) per row.
        tokenizer: the prepared tokenizer; segments marked ``bos`` get its special tokens (bos).
        add_eos: append ``tokenizer.eos_token_id`` to the row as an answer token (trained), unless its answer ends
            with it already; one flag, or one per row.
    """
    flat = [(i, s) for i, (segs, _) in enumerate(rows) for s in segs]
    # a row's protected block (Segment.keep) is tokenized alone too: its tokens are the common prefix
    kept = [(i, Segment(s.text[: s.keep], s.kind, s.bos)) for i, (segs, _) in enumerate(rows) for s in segs[:1] if s.keep]
    ids_per_segment: list[list[int]] = [[] for _ in flat + kept]
    for with_bos in (True, False):
        picked = [j for j, (_, s) in enumerate(flat + kept) if s.bos == with_bos]
        if picked:
            texts = [(flat + kept)[j][1].text for j in picked]
            if with_bos:  # a template that writes the bos itself ("<s>[INST] ..."): the tokenizer adds it already
                prepends = prepends_bos(tokenizer)
                texts = [without_written_bos(t, tokenizer, prepends) for t in texts]
            enc = tokenizer(texts, add_special_tokens=with_bos, verbose=False)["input_ids"]
            suffix = appended_specials(tokenizer) if with_bos else []
            for j, ids in zip(picked, enc):
                ids_per_segment[j] = without_suffix(ids, suffix)
    out = [Encoded([], [], where) for _, where in rows]
    for (i, seg), ids in zip(flat, ids_per_segment):
        out[i].ids += ids
        out[i].kinds += [seg.kind] * len(ids)
    for (i, _), ids in zip(kept, ids_per_segment[len(flat) :]):
        out[i].protect = next((n for n, (a, b) in enumerate(zip(ids, out[i].ids)) if a != b), min(len(ids), len(out[i].ids)))
    for e, eos in zip(out, add_eos if isinstance(add_eos, list) else [add_eos] * len(out)):
        # an answer whose text already ends with the eos ("Paris.</s>", as some exports write it) keeps that one:
        # a second would be trained after it (TRL's SFTTrainer adds eos only where the text lacks it)
        if eos and not (e.ids[-1:] == [tokenizer.eos_token_id] and e.kinds[-1] == ANSWER):
            e.ids.append(tokenizer.eos_token_id)
            e.kinds.append(ANSWER)
    return out


def appended_specials(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer appends after a text (an eos from ``add_eos_token=True`` or a post-processor
    such as ``$A </s>``): dropped from the segments that get the bos, or a prompt would end with eos and a document
    with two (``add_eos`` appends the row's one eos)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next((k for k in range(len(full) - len(plain) + 1) if full[k:k + len(plain)] == plain), None)
    if start is None:
        return []
    suffix = full[start + len(plain):]
    return suffix if suffix and set(suffix) <= set(getattr(tokenizer, "all_special_ids", [])) else []


def prepends_bos(tokenizer: Any) -> bool:
    """The tokenizer puts its bos before a text (with special tokens)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def without_written_bos(text: str, tokenizer: Any, prepends: bool) -> str:
    """``text`` without a leading bos token written as text when the tokenizer prepends its bos anyway
    (``prepends``: :func:`prepends_bos`; a custom template copied from a model card, ``<s>[INST] {instruction}
    [/INST]``, would train two)."""
    bos = getattr(tokenizer, "bos_token", None)
    return text[len(bos):] if prepends and bos and text.startswith(bos) else text


def without_suffix(ids: list[int], suffix: list[int]) -> list[int]:
    """``ids`` without ``suffix`` at their end (:func:`appended_specials`)."""
    return ids[: len(ids) - len(suffix)] if suffix and ids[-len(suffix):] == suffix else ids


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


def _head(e: Encoded, bos_id: int | None, cutoff: int) -> int:
    """Leading tokens always kept: the chat row's system / tool block when it leaves room for more
    (``Encoded.protect``), else a prompt bos."""
    if 0 < e.protect < cutoff - 1 and all(k == PROMPT for k in e.kinds[: e.protect]):
        return e.protect
    return 1 if e.ids and e.ids[0] == bos_id and e.kinds[0] == PROMPT else 0


def _parts(e: Encoded, bos_id: int | None, cutoff: int) -> tuple[int, int]:
    """(head, first_answer): head = the leading tokens always kept (:func:`_head`); the prompt
    to cut is ids[head:first_answer], the answer part is everything after it."""
    head = _head(e, bos_id, cutoff)
    first_answer = next((i for i, k in enumerate(e.kinds) if k != PROMPT), len(e.kinds))
    return head, max(first_answer, head)


def fit_length(
    e: Encoded, cutoff: int, policy: str, bos_id: int | None, counts: LengthCounts, keep_start: bool = False
) -> Encoded | None:
    """Apply ``data.overlong`` to a row longer than ``cutoff``; None when the row is dropped.

    First, an over-long row with untrained history turns (``mask_history``, ``loss_weight`` 0) loses whole
    history turns, oldest first, until it fits (:func:`cut_history`): the trained turn is kept, as
    LLaMA-Factory's ``mask_history`` keeps the last turn. Cuts never touch a chat row's system / tool
    block (kept whole when it leaves room for more). Then, if still over-long,
    ``truncate_both`` splits the budget with :func:`infer_seqlen`, cutting the prompt from the left
    (after bos; the end of the prompt is what leads into the answer) and the answer from the right;
    ``truncate_answer`` cuts the end; ``truncate_prompt`` removes prompt tokens from the left (after
    bos) and cuts the end only if that is not enough; ``drop`` drops the row. With ``keep_start``
    (``data.prompt_cut=keep_start``, LLaMA-Factory's rule) the prompt loses its end instead of its start.
    A row with no answer token left is dropped: it would train on zero target tokens.
    """
    if len(e.ids) > cutoff and policy != "drop":
        e = cut_history(e, cutoff, bos_id, counts)
        if len(e.ids) <= cutoff:  # fits once history is cut: truncated, nothing trained lost
            counts.truncated += 1
    if len(e.ids) > cutoff:
        head, first = _parts(e, bos_id, cutoff)
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
        kept = range(head, head + keep_prompt) if keep_start else range(first - keep_prompt, first)
        keep = [*range(head), *kept, *range(first, len(e.ids))]
        ids = [e.ids[i] for i in keep]
        kinds = [e.kinds[i] for i in keep]
        cut = e.kinds.count(ANSWER) - kinds[:cutoff].count(ANSWER)
        counts.answer_tokens_cut += cut
        if cut:
            counts.answer_cut_where.append(e.where)
        e = Encoded(ids[:cutoff], kinds[:cutoff], e.where)
    if ANSWER not in e.kinds:
        counts.dropped_empty += 1
        counts.dropped_where.append(f"{e.where}: no answer token left within data.cutoff_len={cutoff}")
        return None
    return e


def cut_history(e: Encoded, cutoff: int, bos_id: int | None, counts: LengthCounts) -> Encoded:
    """Remove whole untrained turns (a prompt and the HISTORY answer after it), oldest first, until the
    row fits; turns with a trained answer token are never removed here."""
    head = _head(e, bos_id, cutoff)
    turns: list[tuple[int, int]] = []  # (start, end) of prompt + answer runs after the head
    for i in range(head, len(e.kinds)):
        if i == head or (e.kinds[i] == PROMPT and e.kinds[i - 1] != PROMPT):
            turns.append((i, len(e.kinds)))
            if len(turns) > 1:
                turns[-2] = (turns[-2][0], i)
    drop: set[int] = set()
    length = len(e.ids)
    for t, (a, b) in enumerate(turns):
        if length <= cutoff:
            break
        if HISTORY in e.kinds[a:b] and ANSWER not in e.kinds[a:b]:
            drop.add(t)
            length -= b - a
    if not drop:
        return e
    counts.history_cut += 1
    keep = list(range(head)) + [i for t, (a, b) in enumerate(turns) if t not in drop for i in range(a, b)]
    return Encoded([e.ids[i] for i in keep], [e.kinds[i] for i in keep], e.where, head if head == e.protect else 0)


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
