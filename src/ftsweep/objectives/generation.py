"""Greedy answers to the validation prompts, batched, from the model being trained.

Template parity: the prompts are not re-rendered. Each validation row of the tokenized eval dataset (the
rows ``ftsweep inspect`` shows) is split at its last trained span: the tokens before it are the prompt,
exactly as trained (bos, template, earlier turns), and the span is the reference (the last assistant turn
of a chat, a tool call as the template renders it, or the answer of an Alpaca row; its eos / end-of-turn
dropped when decoding). Prompts are left-padded for generation only (training padding is untouched), the
KV cache is on, and each row stops at eos or the template's end-of-turn token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100
# End-of-turn tokens of the chat templates ftsweep ships or meets (Llama 3, ChatML, EXAONE, Gemma).
# end-of-turn tokens: Llama 3 (and its tool calls' <|eom_id|>), ChatML (Qwen), EXAONE, Gemma, Phi-3
STOP_TOKENS = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "[|endofturn|]", "<end_of_turn>", "<|end|>", "<|end_of_text|>")


@dataclass
class Example:
    """One validation row to answer: prompt ids as trained, reference ids (the last trained span)."""

    index: int
    prompt_ids: list[int]
    reference_ids: list[int]


def examples_from_dataset(dataset: Any) -> list[Example]:
    """Split every row of a tokenized eval dataset (``input_ids`` + ``labels``) at its last trained span.

    A row whose labels train from its first token on has no prompt and is skipped (cannot happen with
    ``data.train_on_prompt=false``, which the objective requires)."""
    out = []
    for i, (ids, labels) in enumerate(zip(dataset["input_ids"], dataset["labels"])):
        end = max((j for j, lab in enumerate(labels) if lab != IGNORE_INDEX), default=-1)
        if end < 0:
            continue
        start = end
        while start > 0 and labels[start - 1] != IGNORE_INDEX:
            start -= 1
        if start == 0:
            continue
        out.append(Example(i, list(ids[:start]), list(ids[start : end + 1])))
    return out


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Where generation stops: the tokenizer's eos, the model's own stop ids (``generation_config.eos_token_id``:
    a list on Gemma, Llama 3.x Instruct, Phi-3) and the end-of-turn tokens of the common chat templates."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    own = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [i for i in ([own] if isinstance(own, int) else list(own or [])) if i not in ids]
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in STOP_TOKENS if t in vocab and vocab[t] not in ids]
    return ids


def decode_reference(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def generate_answers(model: Any, tokenizer: Any, examples: list[Example], *, batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """Greedy answers (special tokens dropped) in the order of ``examples``.

    Rows are sorted by prompt length so a batch holds similar lengths (little padding), then put back in
    order. The model's train / eval mode is restored afterwards."""
    import torch

    stop = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda k: len(examples[k].prompt_ids))
    answers: list[str] = [""] * len(examples)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(order), batch_size):
                picked = order[b : b + batch_size]
                prompts = [examples[k].prompt_ids for k in picked]
                width = max(len(p) for p in prompts)
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
                out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                                     max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad,
                                     use_cache=True, temperature=None, top_p=None, top_k=None)
                for k, row in zip(picked, out[:, width:].tolist()):
                    answers[k] = tokenizer.decode(_until_stop(row, stop), skip_special_tokens=True)
    finally:
        if was_training:
            model.train()
    return answers


def _until_stop(ids: list[int], stop: list[int]) -> list[int]:
    for j, t in enumerate(ids):
        if t in stop:
            return ids[:j]
    return ids
