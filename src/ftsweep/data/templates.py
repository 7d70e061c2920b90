"""Prompt formats: turn a canonical row into segments of text, each marked prompt or answer.

A segment is tokenized on its own (see :mod:`ftsweep.data.encode`), so the prompt/answer boundary is
a boundary between token-id lists, never a string search on decoded text. The prompt is tokenized
exactly as inference will tokenize it (alone, with the tokenizer's bos), which keeps training and
inference in parity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftsweep.data.errors import DataError
from ftsweep.tiny import LLAMA3_CHAT_TEMPLATE

# Token kinds: what a token is, before the masking options decide whether it is trained.
PROMPT, ANSWER, HISTORY = 0, 1, 2  # HISTORY = an earlier assistant turn (masked under mask_history)

# Stanford Alpaca (seeds 000 / 002).
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
# Korean template of seed 004, verbatim (no space after ###답변: -- the post insists on it).
ALPACA_KO = {
    "prompt_with_input": (
        "아래는 문제를 설명하는 지시사항과, 구체적인 답변을 방식을 요구하는 입력이 함께 있는 문장입니다. "
        "이 요청에 대해 적절하게 답변해주세요.\n###입력:{input}\n###지시사항:{instruction}\n###답변:"
    ),
    "prompt_no_input": "아래는 문제를 설명하는 지시사항입니다. 이 요청에 대해 적절하게 답변해주세요.\n###지시사항:{instruction}\n###답변:",
}
# Seed 003: "<|prompt|> {instruction} <|assistant|> {output} <|endofanswer|>", where <|endofanswer|> is
# the (new) eos appended to the answer. The prompt ends with "<|assistant|> " as the post's inference does.
SPECIAL_TOKENS = {
    "prompt_with_input": "<|prompt|> {instruction}\n{input} <|assistant|> ",
    "prompt_no_input": "<|prompt|> {instruction} <|assistant|> ",
}
SPECIAL_TOKENS_NEEDED = ("<|prompt|>", "<|assistant|>")
ALPACA_TEMPLATES = {"alpaca_en": ALPACA_EN, "alpaca_ko": ALPACA_KO, "special_tokens": SPECIAL_TOKENS}

# Chat templates a user may ask for by name (data.chat_template); the tokenizer's own is the default.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_TEMPLATES = {"llama3": LLAMA3_CHAT_TEMPLATE, "chatml": CHATML}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass
class Segment:
    """A piece of text of one kind; ``bos`` = tokenize with the tokenizer's special tokens (bos)."""

    text: str
    kind: int
    bos: bool = False


# ------------------------------------------------------------------------------------ field checks
def _label(field: str, d: Any) -> str:
    column = dict(d.columns).get(field)
    return f"{field} (column {column!r})" if column and column != field else field


def get_text(
    row: dict, field: str, where: str, d: Any, *, required: bool = True, nonempty: bool = True
) -> str:
    """A string field of ``row``, or a :class:`DataError` naming it (missing, not a string, empty)."""
    if field not in row or row[field] is None:
        if not required:
            return ""
        raise DataError(where, "missing", _label(field, d))
    value = row[field]
    if not isinstance(value, str):
        raise DataError(where, f"expected a string, got {type(value).__name__}", _label(field, d))
    if nonempty and not value.strip():
        raise DataError(where, "empty", _label(field, d))
    return value


def alpaca_template(d: Any) -> dict[str, str]:
    """The with-input / no-input pair named by ``data.template`` (``custom`` reads ``data.custom_template``)."""
    if d.template == "custom":
        return {
            "prompt_with_input": d.custom_template.prompt_with_input,
            "prompt_no_input": d.custom_template.prompt_no_input,
        }
    return ALPACA_TEMPLATES[d.template]


def fill(template: str, **fields: str) -> str:
    """Substitute ``{name}`` placeholders literally (user templates may contain other braces)."""
    for key, value in fields.items():
        template = template.replace("{" + key + "}", value)
    return template


# --------------------------------------------------------------------------------------- renderers
def render_alpaca(row: dict, where: str, d: Any, template: dict[str, str]) -> list[Segment]:
    instruction = get_text(row, "instruction", where, d)
    inp = get_text(row, "input", where, d, required=False, nonempty=False)
    output = get_text(row, "output", where, d)
    key = "prompt_with_input" if inp.strip() else "prompt_no_input"
    prompt = fill(template[key], instruction=instruction, input=inp)
    return [Segment(prompt, PROMPT, bos=True), Segment(output, ANSWER)]


def render_prompt_completion(row: dict, where: str, d: Any) -> list[Segment]:
    prompt = get_text(row, "prompt", where, d)
    completion = get_text(row, "completion", where, d)
    return [Segment(prompt, PROMPT, bos=True), Segment(completion, ANSWER)]


def render_text(row: dict, where: str, d: Any) -> list[Segment]:
    return [Segment(get_text(row, "text", where, d), ANSWER, bos=True)]


def conversation(row: dict, where: str, d: Any) -> list[dict[str, str]]:
    """``messages`` (role/content) or ShareGPT ``conversations`` (from/value, optional ``system``) ->
    checked role/content messages."""
    sharegpt = d.format == "sharegpt"
    field = "conversations" if sharegpt else "messages"
    turns = row.get(field)
    if turns is None:
        raise DataError(where, "missing", _label(field, d))
    if not isinstance(turns, list) or not turns:
        raise DataError(
            where, f"expected a non-empty list of turns, got {type(turns).__name__}", _label(field, d)
        )
    role_key, text_key = ("from", "value") if sharegpt else ("role", "content")
    messages = []
    if sharegpt and row.get("system"):
        messages.append({"role": "system", "content": get_text(row, "system", where, d)})
    for i, turn in enumerate(turns):
        name = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(where, f"expected an object, got {type(turn).__name__}", name)
        role = turn.get(role_key)
        allowed = SHAREGPT_ROLES if sharegpt else ROLES
        if role not in allowed:
            raise DataError(
                where, f"unknown role {role!r} (allowed: {', '.join(allowed)})", f"{name}.{role_key}"
            )
        content = turn.get(text_key)
        if not isinstance(content, str):
            raise DataError(where, f"expected a string, got {type(content).__name__}", f"{name}.{text_key}")
        messages.append({"role": SHAREGPT_ROLES[role] if sharegpt else role, "content": content})
    if messages[-1]["role"] != "assistant":
        raise DataError(where, "the last turn must be the assistant's (nothing to train after it)", field)
    return messages


def render_chat(row: dict, where: str, d: Any, tokenizer: Any, chat_template: str | None) -> list[Segment]:
    """Render with the chat template, one segment per step of the conversation.

    The prompt before assistant turn k is ``render(messages[:k], add_generation_prompt=True)`` and the
    answer is what ``render(messages[:k+1])`` adds to it: exactly the text inference sends and gets.
    A template that does not render conversations incrementally (each render a prefix of the next)
    cannot be split into trained / masked parts and is reported, never rewritten.
    """
    messages = conversation(row, where, d)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    segments: list[Segment] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:k], True, chat_template, where)
        full = _render(tokenizer, messages[: k + 1], False, chat_template, where)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise DataError(
                where,
                "the chat template cannot render this conversation turn by turn "
                "(a later render does not extend the earlier one)",
                "messages",
            )
        kind = HISTORY if (d.mask_history and k != last) else ANSWER
        segments += [Segment(prompt[len(done) :], PROMPT), Segment(full[len(prompt) :], kind)]
        done = full
    return [s for s in segments if s.text]


def _render(
    tokenizer: Any, messages: list[dict], generation: bool, chat_template: str | None, where: str
) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation, chat_template=chat_template
        )
    except Exception as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            where, f"the chat template cannot render this conversation: {msg}", "messages"
        ) from None


def resolve_chat_template(d: Any, tokenizer: Any) -> str:
    """The tokenizer's own chat template, or the bundled one the user named in ``data.chat_template``."""
    if d.chat_template:
        return CHAT_TEMPLATES[d.chat_template]
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "data.chat_template",
            f"the tokenizer has no chat template; name one of {', '.join(CHAT_TEMPLATES)} (it will be used as is)",
        )
    return tokenizer.chat_template
