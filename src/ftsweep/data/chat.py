"""Chat rows (``messages`` / ShareGPT ``conversations``) -> checked messages -> segments rendered by the
chat template.

Tool calling follows the chat template's own conventions (transformers' ``apply_chat_template``):
a tool call is an assistant message with ``tool_calls`` (trained like any assistant turn), a tool
result is a ``tool`` message (masked, it is input), and the row's tool schemas go to
``apply_chat_template(..., tools=...)``, so the prompt shows them exactly as inference will. ShareGPT
``function_call`` / ``observation`` turns (LLaMA-Factory's glaive layout) map onto the same messages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ftsweep.data.errors import DataError
from ftsweep.data.templates import ANSWER, HISTORY, PROMPT, Segment, _label, get_text, missing, number_text

# Role names found in the wild -> our role. "tool_call" is an assistant turn whose content is a call.
ROLE_ALIASES = {
    "system": "system",
    "developer": "system",  # OpenAI's name for the system turn of its newer models
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "function_call": "tool_call",
    "tool_call": "tool_call",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",  # OpenAI's legacy function result (role "function", with the function's name)
}
# After a turn of this role, which roles may come next (the first turn after an optional system is user).
NEXT = {
    "user": ("assistant", "tool_call"),
    "assistant": ("user",),
    "tool_call": ("tool",),
    "tool": ("tool", "assistant", "tool_call"),
}
TRAINABLE = ("assistant", "tool_call")

# A probe conversation: a template with tool support shows the schema, the call and the result.
PROBE_NAME, PROBE_CALL, PROBE_RESULT = "ftsweep_probe_tool", "ftsweep_probe_call", "ftsweep_probe_result"
PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": PROBE_NAME,
            "description": "probe",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
        },
    }
]
PROBE_MESSAGES = [
    {"role": "user", "content": "probe"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": PROBE_CALL, "arguments": {"x": "y"}}}],
    },
    {"role": "tool", "content": PROBE_RESULT},
    {"role": "assistant", "content": "done"},
]


class TemplateError(DataError):
    """The chat template cannot do what the data needs (not a bad row: never skipped)."""


@dataclass
class Conversation:
    """Checked messages in the template's format, whether each may be trained, and the row's tools."""

    messages: list[dict[str, Any]]
    roles: list[str]  # ours: system / user / assistant / tool_call / tool
    trained: list[bool]  # False for a message with loss_weight 0
    tools: list[dict[str, Any]] | None = None
    uses_tools: bool = field(default=False)


# ---------------------------------------------------------------------------------------- parsing
def parse_conversation(row: dict, where: str, d: Any) -> Conversation:
    """``messages`` (role/content), ShareGPT ``conversations`` (from/value, optional ``system`` and
    ``tools`` columns), TRL's conversational prompt-completion (``prompt`` messages, untrained, then
    ``completion`` messages), or under ``chat`` an Alpaca-layout row (:func:`alpaca_turns`) -> a
    :class:`Conversation` whose role order has been checked."""
    sharegpt = d.format == "sharegpt"
    if d.format == "prompt_completion":
        parts = [("prompt", False), ("completion", True)]
    else:
        parts = [("conversations" if sharegpt else "messages", True)]
    conv = Conversation([], [], [])
    names: list[str] = []  # each turn's role field as the row names it (prompt[0].role, msgs[3].from ...)
    if alpaca_as_chat(row, d.format):
        row = {**row, "messages": alpaca_turns(row, where, d)}  # LLaMA-Factory's alpaca layout, as chat
    for name, trainable in parts:
        turns = row.get(name)
        if turns is None:
            raise missing(row, name, where, d)
        if name == "completion" and isinstance(turns, str):  # a plain answer after a conversational prompt
            turns = [{"role": "assistant", "content": turns}]
        elif name in ("messages", "conversations") and isinstance(turns, str):
            # the turns as JSON text: a CSV / TSV cell, or a string column of a parquet file
            turns = _json(turns, where, _label(name, d), "a list of turns")
        if not isinstance(turns, list) or not turns:
            raise DataError(
                where, f"expected a non-empty list of turns, got {type(turns).__name__}", _label(name, d)
            )
        column = _column(name, d)  # errors name the turn as the file has it (data.columns / dataset_info)
        for i, turn in enumerate(turns):
            role_key = _parse_turn(conv, turn, f"{column}[{i}]", where, sharegpt)
            conv.trained[-1] = conv.trained[-1] and trainable  # a prompt's turns are never trained
            if conv.trained[-1] and conv.roles[-1] == "assistant" and not conv.messages[-1]["content"].strip():
                # as an empty Alpaca output: it would train the model to answer with nothing but end-of-turn
                text_key = "value" if role_key == "from" else "content"
                raise DataError(where, "empty (an answer that is trained needs text; loss_weight: 0 masks a turn)",
                                f"{column}[{i}].{text_key}")
            names.append(f"{column}[{i}].{role_key}")
    # A system column (LLaMA-Factory's dataset_info "system") is the system turn, unless the turns open with their
    # own: then that one is the system prompt and the column is not read, as LLaMA-Factory's converters do.
    if row.get("system") and conv.roles[:1] != ["system"]:
        conv.messages.insert(0, {"role": "system", "content": get_text(row, "system", where, d)})
        conv.roles.insert(0, "system")
        conv.trained.insert(0, True)
        names.insert(0, _label("system", d))
    # OpenAI's legacy fine-tuning rows list their schemas under "functions" (bare schemas, as glaive's)
    conv.tools = parse_tools(row["tools"] if row.get("tools") is not None else row.get("functions"), where, d)
    conv.uses_tools = conv.tools is not None or any(r in ("tool_call", "tool") for r in conv.roles)
    check_order(conv.roles, where, names)
    return conv


def alpaca_as_chat(row: dict, fmt: str) -> bool:
    """An Alpaca-layout row under ``data.format=chat``: read as chat turns (:func:`alpaca_turns`)."""
    return fmt == "chat" and row.get("messages") is None and row.get("instruction") is not None


def alpaca_turns(row: dict, where: str, d: Any) -> list[dict[str, str]]:
    """An Alpaca-layout row (``instruction``, ``input``, ``output``, LLaMA-Factory's ``history`` of
    ``[query, response]`` pairs) as chat turns, as LLaMA-Factory converts it: each history pair is a user and an
    assistant turn, then the user turn ``instruction`` + newline + ``input`` (when not empty) and the answer
    ``output``. (A ``system`` column is the system turn, as for every chat row.)"""
    history = row.get("history") or []
    if isinstance(history, str):  # the pairs as JSON text: a CSV / TSV cell
        history = _json(history, where, _label("history", d), "a list of [query, response] pairs")
    turns: list[dict[str, str]] = []
    if not isinstance(history, list):
        raise DataError(where, f"expected a list of [query, response] pairs, got {type(history).__name__}",
                        _label("history", d))
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise DataError(where, f"expected a [query, response] pair, got {pair!r}"[:200],
                            f"{_label('history', d)}[{i}]")
        for role, text in zip(("user", "assistant"), pair):
            turns.append({"role": role, "content": text})
    instruction = get_text(row, "instruction", where, d)
    inp = get_text(row, "input", where, d, required=False, nonempty=False)
    turns.append({"role": "user", "content": "\n".join(t for t in (instruction, inp) if t)})
    turns.append({"role": "assistant", "content": get_text(row, "output", where, d)})
    return turns


WEIGHT_KEYS = ("loss_weight", "weight")  # a message's trained flag: LLaMA-Factory's name, OpenAI fine-tuning's


def _add(conv: Conversation, role: str, message: dict[str, Any], trained: bool) -> None:
    conv.messages.append(message)
    conv.roles.append(role)
    conv.trained.append(trained)


def _column(name: str, d: Any) -> str:
    """The row's own column that holds the canonical field ``name`` (``data.columns.messages=msgs`` -> msgs)."""
    return getattr(getattr(d, "columns", None), name, None) or name


def _parse_turn(conv: Conversation, turn: Any, name: str, where: str, sharegpt: bool) -> str:
    """Add ``turn`` to ``conv``; returns the key that holds its role (``from`` or ``role``)."""
    if not isinstance(turn, dict):
        raise DataError(where, f"expected an object, got {type(turn).__name__}", name)
    role_key, text_key = ("from", "value") if sharegpt and "from" in turn else ("role", "content")
    raw = turn.get(role_key)
    role = ROLE_ALIASES.get(raw) if isinstance(raw, str) else None
    if role is None:
        allowed = ", ".join(ROLE_ALIASES)
        raise DataError(where, f"unknown role {raw!r} (allowed: {allowed})", f"{name}.{role_key}")
    trained = _loss_weight(turn, role, where, name)
    content = turn.get(text_key)
    if role == "tool_call":
        calls = parse_calls(content, where, f"{name}.{text_key}")
        _add(conv, role, {"role": "assistant", "content": "", "tool_calls": calls}, trained)
        return role_key
    if role == "assistant" and not turn.get("tool_calls") and isinstance(turn.get("function_call"), dict):
        turn = {**turn, "tool_calls": [{"type": "function", "function": turn["function_call"]}]}  # OpenAI's legacy
    if role == "assistant" and turn.get("tool_calls"):  # OpenAI / transformers layout
        calls = parse_calls(turn["tool_calls"], where, f"{name}.tool_calls")
        text = "" if content is None else content_text(content, where, f"{name}.{text_key}")
        _add(conv, "tool_call", {"role": "assistant", "content": text, "tool_calls": calls}, trained)
        return role_key
    if role == "tool" and isinstance(content, (dict, list)) and not _is_parts(content):
        content = json.dumps(content, ensure_ascii=False)  # a structured tool result: shown as JSON
    _add(conv, role, {"role": role, "content": content_text(content, where, f"{name}.{text_key}")}, trained)
    return role_key


def _is_parts(content: Any) -> bool:
    return isinstance(content, list) and all(isinstance(p, dict) and "type" in p for p in content)


def _loss_weight(turn: dict, role: str, where: str, name: str) -> bool:
    """``loss_weight`` (LLaMA-Factory) or ``weight`` (OpenAI's fine-tuning format) 0 masks an assistant turn;
    labels can only say trained or not, so 0 or 1."""
    given = [k for k in WEIGHT_KEYS if turn.get(k) is not None]
    if not given:
        return True
    key, w = given[0], turn[given[0]]
    if len(given) == 2 and turn["weight"] != w:
        raise DataError(where, f"{w!r} but weight is {turn['weight']!r} (give one of them)", f"{name}.{key}")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w not in (0, 1):
        raise DataError(where, f"must be 0 (masked) or 1 (trained), got {w!r}", f"{name}.{key}")
    if w == 1 and role not in TRAINABLE:
        raise DataError(
            where, f"only assistant turns can be trained (this turn is {role!r})", f"{name}.{key}"
        )
    return w == 1


def content_text(content: Any, where: str, name: str) -> str:
    """A string (a number as its text), or a list of content parts whose text parts are joined (as chat
    templates join them).

    A text part holds its text in ``text`` (OpenAI / transformers) or ``value`` (LLaMA-Factory v1)."""
    content = number_text(content)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text":
                raise DataError(
                    where, f"content part of type {kind!r} is not supported (text parts only)", f"{name}[{j}]"
                )
            text = part.get("text", part.get("value"))
            if not isinstance(text, str):
                raise DataError(where, f"a text part needs its text as a string in 'text' or 'value' "
                                       f"(got keys {sorted(part)})", f"{name}[{j}]")
            texts.append(text)
        return "".join(texts)
    raise DataError(where, f"expected a string or a list of text parts, got {type(content).__name__}", name)


def _json(value: Any, where: str, name: str, what: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise DataError(where, f"{what} is not valid JSON ({err.msg}, column {err.colno})", name) from None


def parse_calls(value: Any, where: str, name: str) -> list[dict[str, Any]]:
    """A call or a list of calls ({"name", "arguments"}, JSON text or objects, optionally wrapped as
    {"type": "function", "function": {...}}) -> transformers' ``tool_calls`` with dict arguments."""
    value = _json(value, where, name, "the tool call")
    calls = value if isinstance(value, list) else [value]
    out = []
    for call in calls:
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise DataError(where, 'expected a tool call {"name": ..., "arguments": {...}}', name)
        args = fn.get("arguments", fn.get("parameters", {}))
        args = _json(args, where, name, "the call's arguments")
        if not isinstance(args, dict):
            raise DataError(where, f"the call's arguments must be an object, got {type(args).__name__}", name)
        out.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    if not out:
        raise DataError(where, "empty tool call", name)
    return out


def parse_tools(value: Any, where: str, d: Any) -> list[dict[str, Any]] | None:
    """The ``tools`` column (JSON text or a list) as transformers-style schemas; None when empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    name = _label("tools", d)
    value = _json(value, where, name, "the tools column")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise DataError(where, f"expected a list of tool schemas, got {type(value).__name__}", name)
    tools = []
    for tool in value:
        if (
            isinstance(tool, dict)
            and tool.get("type") == "function"
            and isinstance(tool.get("function"), dict)
        ):
            tools.append(tool)
        elif isinstance(tool, dict) and isinstance(tool.get("name"), str):  # a bare schema (glaive layout)
            tools.append({"type": "function", "function": tool})
        else:
            raise DataError(where, "each tool must be a schema with a name", name)
    return tools or None


def check_order(roles: list[str], where: str, names: list[str]) -> None:
    """system?, then user / assistant alternating; a tool call is followed by its result(s); the
    conversation ends with an assistant turn (a reply or a call). ``names``: where each turn's role is
    (``msgs[3].role``, ``prompt[0].role``; a system column's name)."""
    prev = None
    for i, role in enumerate(roles):
        at = names[i]
        if role == "system":
            if i == 0:
                continue
            raise DataError(where, "a system turn is allowed only first", at)
        if prev is None and role != "user":
            raise DataError(
                where,
                f"the conversation must start with a user turn (after an optional system turn), got {role!r}",
                at,
            )
        if prev is not None and role not in NEXT[prev]:
            raise DataError(
                where,
                f"a {prev!r} turn must be followed by {' or '.join(map(repr, NEXT[prev]))}, got {role!r}",
                at,
            )
        prev = role
    if prev not in TRAINABLE:
        raise DataError(where, "the last turn must be the assistant's (nothing to train after it)",
                        names[-1].split("[")[0] if names else "messages")


# -------------------------------------------------------------------------------------- rendering
class ChatRenderer:
    """Renders conversations with one chat template; checks tool support once, when first needed."""

    def __init__(self, d: Any, tokenizer: Any, chat_template: str | None):
        self.d = d
        self.tokenizer = tokenizer
        self.template = chat_template
        self.tools_ok: bool | None = None
        # rows (where) whose assistant text beside a tool call the template does not render (Llama 3's
        # template renders only the call): counted and reported, since that text is not trained
        self.call_text_dropped: list[str] = []
        self._preambles: dict[str, str] = {}  # template_preamble per tool list

    @property
    def template_name(self) -> str:
        if self.d.chat_template:
            return repr(self.d.chat_template)
        return f"of the tokenizer ({getattr(self.tokenizer, 'name_or_path', '') or 'its own'})"

    def segments(self, row: dict, where: str) -> list[Segment]:
        """One prompt and one answer segment per assistant turn.

        The prompt before turn k is ``render(messages[:k], add_generation_prompt=True)`` and the answer
        is what ``render(messages[:k+1])`` adds to it: exactly the text inference sends and gets. A
        template that does not render conversations incrementally (each render a prefix of the next)
        cannot be split into trained / masked parts and is reported, never rewritten.
        """
        conv = parse_conversation(row, where, self.d)
        if conv.uses_tools:
            self.check_tool_support()
        msgs = conv.messages
        last = max(i for i, r in enumerate(conv.roles) if r in TRAINABLE)
        segments: list[Segment] = []
        done = ""
        for k, role in enumerate(conv.roles):
            if role not in TRAINABLE:
                continue
            prompt = self.render(msgs[:k], True, conv.tools, where)
            full = self.render(msgs[: k + 1], False, conv.tools, where)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise DataError(
                    where,
                    "the chat template cannot render this conversation turn by turn "
                    "(a later render does not extend the earlier one)",
                    "messages",
                )
            text = str(msgs[k].get("content") or "").strip()
            if role == "tool_call" and text and text not in full[len(prompt):]:
                self.call_text_dropped.append(where)
            masked = not conv.trained[k] or (self.d.mask_history and k != last)
            segments += [
                Segment(prompt[len(done) :], PROMPT),
                Segment(full[len(prompt) :], HISTORY if masked else ANSWER),
            ]
            done = full
        segments = [s for s in segments if s.text]
        if segments:
            segments[0].keep = self.preamble_chars(conv, segments[0].text, where)
        return segments

    def preamble_chars(self, conv: Conversation, first_prompt: str, where: str) -> int:
        """Length of the system / tool block at the start of the first prompt (what the template renders
        for the system turn and the tools alone, or without a system turn :meth:`template_preamble`), 0 when
        that render is not a prefix of the prompt."""
        if conv.roles[0] == "system":
            try:
                pre = self.render(conv.messages[:1], False, conv.tools, where)
            except DataError:
                return 0
        else:
            pre = self.template_preamble(conv.tools, where)
        return len(pre) if pre and first_prompt.startswith(pre) else 0

    def template_preamble(self, tools: list | None, where: str) -> str:
        """What the template writes before the first user turn of a conversation without a system turn: bos, the
        tool block, a default system block (Qwen2.5's "You are Qwen...", Llama 3.1's date lines); "" when it cannot
        be told. transformers 5 renders no empty conversation, so it is the common start of two one-turn renders
        less the user header a later user turn is rendered with. Once per tool list."""
        key = json.dumps(tools, sort_keys=True) if tools else ""
        if key not in self._preambles:
            a, b, x = ({"role": "user", "content": "Alpha probe"}, {"role": "user", "content": "Bravo probe"},
                       {"role": "assistant", "content": "Charlie probe"})
            try:
                one_a, one_b = self.render([a], False, tools, where), self.render([b], False, tools, where)
                two, three = self.render([a, x], False, tools, where), self.render([a, x, b], False, tools, where)
            except DataError:
                self._preambles[key] = ""
                return ""
            common = os.path.commonprefix([one_a, one_b])
            later = three[len(two):]
            header = later[: later.find(b["content"])] if three.startswith(two) and b["content"] in later else None
            ok = header is not None and common.endswith(header)
            self._preambles[key] = common[: len(common) - len(header)] if ok else ""
        return self._preambles[key]

    def render(self, messages: list[dict], generation: bool, tools: list | None, where: str) -> str:
        kwargs = {"tools": tools} if tools else {}
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=generation,
                chat_template=self.template,
                **kwargs,
            )
        except Exception as err:  # noqa: BLE001 -- a template may raise anything (jinja, raise_exception)
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(
                where, f"the chat template cannot render this conversation: {msg}", "messages"
            ) from None

    def check_tool_support(self) -> None:
        """A template without tool support would silently drop the schemas and calls: refuse it."""
        if self.tools_ok is None:
            try:
                text = self.tokenizer.apply_chat_template(
                    PROBE_MESSAGES, tokenize=False, chat_template=self.template, tools=PROBE_TOOLS
                )
                self.tools_ok = all(s in text for s in (PROBE_NAME, PROBE_CALL, PROBE_RESULT))
            except Exception:  # noqa: BLE001 -- failing on the probe is "no tool support"
                self.tools_ok = False
        if not self.tools_ok:
            raise TemplateError(
                "data.chat_template",
                f"the chat template {self.template_name} has no tool support (a conversation rendered with "
                "tools does not show the tool schema, call and result), but the data has tool turns or a "
                "tools column; use a template with tool support (e.g. data.chat_template=llama3)",
            )
