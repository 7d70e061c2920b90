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

# Token kinds: what a token is, before the masking options decide whether it is trained.
# PROMPT: trained only with train_on_prompt. ANSWER: trained. HISTORY: an assistant turn that is never
# trained (an earlier turn under mask_history, or a message with loss_weight 0).
PROMPT, ANSWER, HISTORY = 0, 1, 2

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

# Llama 3 / 3.1 chat template as the tiny model ships it (Llama 3.1's layout, minus the date lines): no
# tools -> exactly Llama 3's rendering; with tools -> an "Environment: ipython" system block listing the
# tool schemas as JSON, a tool call rendered as {"name": ..., "parameters": ...} in an assistant turn, and
# tool results in an ``ipython`` turn. Like Llama 3.1, one tool call per assistant turn.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if tools %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n\n' }}"
    "{{- 'You have access to the following functions. To call a function, please respond with JSON for a "
    "function call. Respond in the format {\"name\": function name, \"parameters\": dictionary of argument "
    "name and its value}. Do not use variables.\n\n' }}"
    "{%- for t in tools %}{{- t | tojson(indent=4) + '\n\n' }}{%- endfor %}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] | trim }}{%- set messages = messages[1:] %}"
    "{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if 'tool_calls' in message and message['tool_calls'] %}"
    "{%- if message['tool_calls'] | length != 1 %}"
    "{{- raise_exception('This model only supports single tool-calls at once!') }}"
    "{%- endif %}"
    "{%- set call = message['tool_calls'][0]['function'] %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"' + call['name'] + '\", \"parameters\": '"
    " + call['arguments'] | tojson + '}<|eot_id|>' }}"
    "{%- elif message['role'] in ('tool', 'ipython') %}"
    "{{- '<|start_header_id|>ipython<|end_header_id|>\n\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}{{- message['content'] | tojson }}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- else %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
# ChatML without tool support (a tools dataset with it is refused, never rendered without its schema).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Chat templates a user may ask for by name (data.chat_template); the tokenizer's own is the default.
CHAT_TEMPLATES = {"llama3": LLAMA3_CHAT_TEMPLATE, "chatml": CHATML}


@dataclass
class Segment:
    """A piece of text of one kind; ``bos`` = tokenize with the tokenizer's special tokens (bos)."""

    text: str
    kind: int
    bos: bool = False
    # characters at the start of ``text`` that truncation keeps (a chat row's system / tool block)
    keep: int = 0


# ------------------------------------------------------------------------------------ field checks
def _label(field: str, d: Any) -> str:
    column = getattr(d.columns, field, None)
    return f"{field} (column {column!r})" if column and column != field else field


# The column that marks a row of each format: a row of another format than data.format names the format it has.
# (``prompt`` last: TRL's preference rows carry one beside chosen / rejected, and chat rows may too.)
FORMAT_COLUMNS = {"messages": "chat", "conversations": "sharegpt", "completion": "prompt_completion", "text": "text",
                  "instruction": "alpaca", "prompt": "prompt_completion"}


def detect_format(row: dict) -> str | None:
    """The ``data.format`` a row's columns (after ``data.columns`` mapping) are written in, as TRL's trainers tell
    a dataset's type by its columns; None when none fits. In order: ``messages`` -> chat, ``conversations`` ->
    sharegpt, ``instruction`` -> alpaca (before ``text``: Stanford Alpaca's Hub copy carries a rendered ``text``
    column too), ``prompt`` / ``completion`` / ``chosen`` / ``rejected`` -> prompt_completion (TRL's plain and
    conversational prompt-completion, prompt-only and KTO rows; pairs whose prompt or answers are lists of messages,
    or an implicit prompt of two whole conversations, -> chat), ``text`` -> text."""
    if "messages" in row:
        return "chat"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row:
        return "alpaca"
    if any(k in row for k in ("prompt", "completion", "chosen", "rejected")):
        pair = "chosen" in row or "rejected" in row
        turns = any(isinstance(row.get(k), list) for k in ("prompt", "chosen", "rejected"))
        return "chat" if pair and turns else "prompt_completion"
    if "text" in row:
        return "text"
    return None


# The names well-known datasets give the alpaca fields, which ``data.format=auto`` maps when a row has no column of
# the field's own name: GSM8K (question / answer), MetaMathQA (query / response), MATH (problem / solution), Dolly
# (instruction / context / response), OpenOrca (system_prompt / question / response), plain input / output rows.
# In order of preference; ``input`` is the instruction only when no other column is.
# A nested answer is read through a path (see :func:`column_value`): SQuAD's answers {"text": [...], ...} (its first
# answer), TriviaQA's answer {"value": ..., "aliases": [...]}.
ALPACA_ALIASES = {
    "instruction": ("question", "query", "problem", "input"),
    "input": ("context",),
    "output": ("answer.value", "answer", "response", "solution", "answers.text.0"),
    "system": ("system_prompt",),
}
# A prompt's answer under another name ({"prompt", "response"} rows, GRPO sets' {"prompt", "solution"}): the completion.
COMPLETION_ALIASES = ("response", "answer", "output", "solution")
_PAIR_COLUMNS = ("chosen", "rejected", "label")


def column_value(row: dict, column: str) -> tuple[bool, Any]:
    """(found, value) of ``column`` in ``row``: the column itself, else a dotted path into nested objects and lists
    (``answers.text.0``: the first of SQuAD's answers; ``data.columns.output=answers.text.0``)."""
    if column in row:
        return True, row[column]
    if "." not in column:
        return False, None
    value: Any = row
    for part in column.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _has(row: dict, column: str) -> bool:
    """``column`` is a column of ``row``, or a path in it that ends at a string (an answer's text)."""
    found, value = column_value(row, column)
    return found and (column in row or isinstance(value, str))


def detect_columns(row: dict) -> tuple[str | None, dict[str, str]]:
    """``data.format=auto`` for a row (its columns mapped by ``data.columns`` first): the format
    (:func:`detect_format`) and the columns to read under another name, {field: the row's column}. Beyond the
    formats' own columns: the alpaca fields under well-known datasets' names (:data:`ALPACA_ALIASES`; both an
    instruction and an answer must be there; a system prompt or earlier turns column -> chat, which renders
    alpaca rows with the model's chat template; preference pairs without a prompt but with an instruction under
    such a name are LLaMA-Factory's Alpaca ranking rows), a prompt's answer as ``response`` / ``answer`` /
    ``output`` / ``solution``, a ``messages`` column of ShareGPT turns (``from`` / ``value``) as sharegpt,
    LMSYS-Chat-1M's / WildChat's ``conversation`` as the messages (or ShareGPT turns) it holds, and documents under
    ``content`` as text. (None, {}) when nothing fits."""
    fmt = detect_format(row)
    if fmt == "chat" and _sharegpt_turns(row.get("messages")):
        return "sharegpt", {"conversations": "messages"}
    if fmt is None and isinstance(row.get("conversation"), list):  # LMSYS-Chat-1M's, WildChat's turns
        if _sharegpt_turns(row["conversation"]):
            return "sharegpt", {"conversations": "conversation"}
        return "chat", {"messages": "conversation"}
    if fmt is None and isinstance(row.get("content"), str) and not any(c in row for names in ALPACA_ALIASES.values()
                                                                        for c in names):
        return "text", {"text": "content"}  # a corpus of documents under 'content' (The Stack's source files)
    pair = any(k in row for k in ("chosen", "rejected"))
    if fmt == "prompt_completion" and "prompt" in row:
        if "completion" in row or any(k in row for k in _PAIR_COLUMNS):
            return fmt, {}
        answer = next((c for c in COMPLETION_ALIASES if c in row), None)
        return fmt, ({"completion": answer} if answer else {})
    if fmt not in (None, "alpaca", "text") and not (fmt == "prompt_completion" and pair):
        return fmt, {}
    # An alpaca row, one no format fits, a pair without a prompt (OpenOrca's DPO pairs: system, question, chosen,
    # rejected; without an instruction under any name, the pair is Anthropic HH's implicit prompt), or a question and
    # answer beside a rendered `text` (as Stanford Alpaca's instruction beside its text: the fields win)
    mapped: dict[str, str] = {}
    for field, names in ALPACA_ALIASES.items():
        if field in row and field not in mapped.values() or field == "output" and pair:  # own column / the pair's
            continue
        column = next((c for c in names if _has(row, c) and c not in mapped.values()), None)
        if column is not None:
            mapped[field] = column
    if "instruction" not in row and "instruction" not in mapped or not (pair or "output" in row or "output" in mapped):
        return fmt, {}  # nothing fits / an alpaca row without an answer (its reading says so) / HH's pairs / text
    if any(row.get(mapped.get(f, f)) is not None for f in ("system", "history")):
        # the alpaca templates have no place for these (a later row's, when the first row's is empty): the model's
        # chat template renders them, as LLaMA-Factory does
        return "chat", mapped
    return "alpaca", mapped


def _sharegpt_turns(turns: Any) -> bool:
    """``turns`` is a list of ShareGPT turns ({"from", "value"}), not chat messages ({"role", "content"})."""
    first = turns[0] if isinstance(turns, list) and turns else None
    return isinstance(first, dict) and "from" in first and "role" not in first


def missing(row: dict, field: str, where: str, d: Any) -> DataError:
    """'missing' naming the columns the row does have (a mapping or header problem shows at once), and the
    data.format its columns look like when that is not the one set."""
    have = ", ".join(str(k) for k in row) or "none"
    looks = next((f for col, f in FORMAT_COLUMNS.items() if col in row and f != getattr(d, "format", f)), None)
    if field not in (*FORMAT_COLUMNS, "prompt", "output"):  # a pair's or a KTO row's own column: no format guess
        looks = None
    hint = f"; they look like data.format={looks}" if looks else ""
    columns = getattr(d, "columns", None)
    mapping = ""
    if not looks and row and columns is not None and hasattr(columns, field) and not getattr(columns, field):
        # the field under another name (Dolly's 'response' for 'output'): the mapping that reads it
        mapping = f"; if one of them is the {field}, map it: data.columns.{field}=<column>"
    return DataError(where, f"missing (the row has columns: {have}{hint}){mapping}", _label(field, d))


def number_text(value: Any) -> Any:
    """A number in a text field as the text it stands for (``"output": 42`` in a math set's JSON, an integer
    column of a parquet file: a CSV gives the same answer as the string "42"); anything else unchanged.
    Booleans and NaN / infinity stay as they are (refused as not text)."""
    import math

    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return value


def get_text(
    row: dict, field: str, where: str, d: Any, *, required: bool = True, nonempty: bool = True
) -> str:
    """A string field of ``row``, or a :class:`DataError` naming it (missing, not a string, empty)."""
    if field not in row or row[field] is None:
        if not required:
            return ""
        if field in row:  # the column is there, its value null (a JSON null, an empty parquet cell)
            raise DataError(where, "null (a text is needed here)", _label(field, d))
        raise missing(row, field, where, d)
    value = number_text(row[field])
    if not isinstance(value, str):
        raise DataError(where, f"expected a string, got {type(value).__name__}", _label(field, d))
    if nonempty and not value.strip():
        raise DataError(where, "empty", _label(field, d))
    return value


REFERENCES = "references"  # data.columns.references: a validation row's acceptable answers


def list_in_text(value: Any) -> list | None:
    """The list a string holds as JSON text (``["Paris", "paris, France"]``; a CSV / TSV cell or a parquet string
    cannot hold a list), else None (any other value, other text, text in brackets that is no JSON list)."""
    if not isinstance(value, str) or not value.lstrip().startswith("[") or not value.rstrip().endswith("]"):
        return None
    import json

    try:
        items = json.loads(value)
    except ValueError:
        return None
    return items if isinstance(items, list) else None


def read_references(row: dict, where: str, d: Any) -> list[str] | None:
    """The acceptable answers of a row (``data.columns.references``): a list of strings, or one string; None when
    the key is unset or the row has no such column (or it is null). Numbers are taken as their text, as in any text
    field; blank answers are left out. A string that is a JSON list (``["Paris", "paris, France"]``: a CSV cell
    cannot hold a list) is that list. Anything else is a :class:`DataError` naming the row and the column."""
    if not getattr(getattr(d, "columns", None), REFERENCES, None) or row.get(REFERENCES) is None:
        return None
    value = number_text(row[REFERENCES])
    items = [value] if isinstance(value, str) else value
    listed = list_in_text(value)  # else an answer in brackets, e.g. "[citation needed]": one answer
    if listed is not None:
        items = listed
    if not isinstance(items, list):
        raise DataError(where, f"expected a list of answers (strings) or one string, got {type(value).__name__}",
                        _label(REFERENCES, d))
    out = []
    for i, item in enumerate(items):
        item = number_text(item)
        if not isinstance(item, str):
            raise DataError(where, f"item {i} is {type(item).__name__} {item!r:.40}, expected a string (an answer)",
                            _label(REFERENCES, d))
        if item.strip() and item not in out:
            out.append(item)
    return out


def has_references(row: dict, d: Any) -> bool:
    """The row holds ``data.columns.references`` (after column mapping)."""
    return row.get(REFERENCES) is not None


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
    # LLaMA-Factory's alpaca rows may carry a system prompt and earlier turns: the alpaca templates have no
    # place for them, and dropping them would change the data without a word.
    for column, what in (("system", "a system prompt"), ("history", "earlier turns")):
        if row.get(column):
            raise DataError(where, f"{what}: the alpaca templates have no place for it; read these rows with "
                                   f"data.format=chat (the model's chat template renders the system prompt and "
                                   f"the earlier turns, as LLaMA-Factory does)", _label(column, d))
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
