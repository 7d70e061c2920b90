"""Tool-calling and content-part chat rows: exact label masks, tool schema in the prompt, role order,
loss_weight, and templates without tool support refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftsweep.data import IGNORE_INDEX, DataError, build_datasets
from ftsweep.model import load_tokenizer

DATA = Path(__file__).parent / "data"
GLAIVE = DATA / "toolcall_sharegpt.json"  # LLaMA-Factory's glaive layout, rows written for these tests
PARTS = DATA / "content_parts_chat.jsonl"
NO_PRETRAIN = "model.tiny.pretrain_steps=0"
BOS = "<|begin_of_text|>"
EOT = "<|eot_id|>"
H = "<|start_header_id|>{}<|end_header_id|>\n\n"
TOOL_PREAMBLE = (
    "Environment: ipython\n\nYou have access to the following functions. To call a function, please respond "
    'with JSON for a function call. Respond in the format {"name": function name, "parameters": dictionary of '
    "argument name and its value}. Do not use variables.\n\n"
)


@pytest.fixture
def build(compose):
    """build(path, *overrides) -> (bundle, tokenizer): every row in file order, no eval split."""

    def _b(path: Path, *overrides: str):
        cfg = compose(
            f"data.path={path}",
            "data.val_size=0",
            "objective.metric=train_loss",
            "data.shuffle=false",
            "data.max_rows=null",
            "data.cutoff_len=1024",
            NO_PRETRAIN,
            *overrides,
        )
        tok = load_tokenizer(cfg)
        return build_datasets(cfg, tok), tok

    return _b


def enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def system_block(tools: list[dict]) -> str:
    wrapped = [{"type": "function", "function": t} for t in tools]
    return (
        H.format("system") + TOOL_PREAMBLE + "".join(json.dumps(t, indent=4) + "\n\n" for t in wrapped) + EOT
    )


def expected(tok, parts: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of consecutive (text, trained) parts, each tokenized on its own."""
    ids, labels = [], []
    for text, trained in parts:
        t = enc(tok, text)
        ids += t
        labels += t if trained else [IGNORE_INDEX] * len(t)
    return ids, labels


def glaive_rows() -> list[dict]:
    return json.loads(GLAIVE.read_text())


# ------------------------------------------------------------------------------------- tool calls
def test_glaive_file_keeps_every_row(build):
    bundle, _ = build(GLAIVE, "data.format=sharegpt")
    assert bundle.stats["n_train"] == 4 and bundle.stats["n_skipped_bad"] == 0


def test_tool_call_trained_observation_masked_exact(build):
    bundle, tok = build(GLAIVE, "data.format=sharegpt")
    tools = json.loads(glaive_rows()[0]["tools"])
    call = '{"name": "get_exchange_rate", "parameters": {"base": "USD", "target": "EUR"}}'
    ids, labels = expected(
        tok,
        [
            (
                BOS
                + system_block(tools)
                + H.format("user")
                + "How many euros is one dollar?"
                + EOT
                + H.format("assistant"),
                False,
            ),
            (call + EOT, True),
            (H.format("ipython") + '{"rate": 0.92}' + EOT + H.format("assistant"), False),
            ("One dollar is 0.92 euros." + EOT, True),
        ],
    )
    got = bundle.train[0]
    assert got["input_ids"] == ids
    assert got["labels"] == labels
    # The tool schema is in the (masked) prompt, exactly as apply_chat_template(tools=...) renders it.
    text = tok.decode(got["input_ids"])
    assert '"name": "get_exchange_rate"' in text and '"description": "currency code, e.g. USD"' in text


def test_multi_turn_tool_calls_and_mask_history(build):
    bundle, tok = build(GLAIVE, "data.format=sharegpt")
    runs = trained_runs(tok, bundle.train[2])
    assert runs == [
        '{"name": "rectangle_area", "parameters": {"width": 3, "height": 4}}' + EOT,
        "The area is 12." + EOT,
        '{"name": "rectangle_area", "parameters": {"width": 5, "height": 5}}' + EOT,
        "That one is 25." + EOT,
    ]
    masked, tok = build(GLAIVE, "data.format=sharegpt", "data.mask_history=true")
    assert trained_runs(tok, masked.train[2]) == ["That one is 25." + EOT]
    # Observations are input: never trained, with or without mask_history.
    for bundle_ in (bundle, masked):
        assert '{"area": 12}' not in "".join(trained_runs(tok, bundle_.train[2]))


def test_row_without_tools_renders_as_plain_chat(build):
    bundle, tok = build(GLAIVE, "data.format=sharegpt")
    assert tok.decode(bundle.train[3]["input_ids"]) == (
        BOS + H.format("user") + "Say hello." + EOT + H.format("assistant") + "Hello!" + EOT
    )


def test_openai_layout_in_messages_gives_the_same_tokens(build, tmp_path):
    row = glaive_rows()[0]
    tools = json.loads(row["tools"])
    messages = {
        "messages": [
            {"role": "user", "content": "How many euros is one dollar?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {
                            "name": "get_exchange_rate",
                            "arguments": '{"base": "USD", "target": "EUR"}',
                        },
                    }
                ],
            },
            {"role": "tool", "content": '{"rate": 0.92}'},
            {"role": "assistant", "content": "One dollar is 0.92 euros."},
        ],
        "tools": tools,  # a list column, not JSON text
    }
    path = tmp_path / "openai.jsonl"
    path.write_text(json.dumps(messages) + "\n")
    chat, _ = build(path, "data.format=chat")
    glaive, _ = build(GLAIVE, "data.format=sharegpt", "data.max_rows=1")
    assert chat.train[0]["input_ids"] == glaive.train[0]["input_ids"]
    assert chat.train[0]["labels"] == glaive.train[0]["labels"]


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_template_without_tool_support_is_refused(build, policy):
    with pytest.raises(DataError) as err:
        build(GLAIVE, "data.format=sharegpt", "data.chat_template=chatml", f"data.bad_rows={policy}",
              "data.special_tokens=['<|im_start|>','<|im_end|>']")  # chatml's markers: its tools are the issue
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("data.chat_template: the chat template 'chatml' has no tool support")


def test_tokenizer_template_without_tool_support_is_named(build, compose):
    # The tiny tokenizer with a plain ChatML template of its own: its path is named.
    cfg = compose(
        f"data.path={GLAIVE}",
        "data.format=sharegpt",
        "data.val_size=0",
        "objective.metric=train_loss",
        NO_PRETRAIN,
    )
    tok = load_tokenizer(cfg)
    from ftsweep.data.templates import CHATML

    tok.chat_template = CHATML
    with pytest.raises(DataError, match=r"the chat template of the tokenizer \(.+\) has no tool support"):
        build_datasets(cfg, tok)


# ----------------------------------------------------------------------------- content parts, weights
def test_content_parts_and_loss_weight(build):
    bundle, tok = build(PARTS, "data.format=chat")
    first, second = bundle.train[0], bundle.train[1]
    assert tok.decode(first["input_ids"]) == (
        BOS
        + H.format("system")
        + "Answer briefly."
        + EOT
        + H.format("user")
        + "Name a primary color."
        + EOT
        + H.format("assistant")
        + "Red."
        + EOT
    )
    assert trained_runs(tok, first) == ["Red." + EOT]
    # loss_weight 0 masks the first answer; loss_weight 1 trains the second.
    ids, labels = expected(
        tok,
        [
            (BOS + H.format("user") + "What is 2 + 2?" + EOT + H.format("assistant"), False),
            ("4" + EOT, False),
            (H.format("user") + "And 3 + 3?" + EOT + H.format("assistant"), False),
            ("6" + EOT, True),
        ],
    )
    assert (second["input_ids"], second["labels"]) == (ids, labels)


def test_openai_weight_is_loss_weight(build, tmp_path):
    """OpenAI's fine-tuning format marks an assistant message untrained with "weight": 0: the same labels as
    loss_weight (it was trained before: the key was not read)."""
    oai = tmp_path / "openai_weight.jsonl"
    oai.write_text(PARTS.read_text().replace('"loss_weight"', '"weight"'))
    assert oai.read_text().count('"weight"') == 2 and '"loss_weight"' not in oai.read_text()
    theirs, mine = build(oai, "data.format=chat")[0].train, build(PARTS, "data.format=chat")[0].train
    assert theirs["labels"] == mine["labels"] and theirs["input_ids"] == mine["input_ids"]
    assert theirs["labels"][1] != theirs["input_ids"][1]  # the first answer of row 2 is masked


def test_llamafactory_v1_content_parts_with_value_read_as_text_parts(build, tmp_path):
    """LLaMA-Factory v1 writes a text part as {"type": "text", "value": ...}: the same rows, the same tokens."""
    v1 = tmp_path / "content_parts_v1.jsonl"
    v1.write_text(PARTS.read_text().replace('"text": "', '"value": "'))
    assert v1.read_text().count('"value": "') == 6 and '"text": "' not in v1.read_text()
    (a, _), (b, _) = build(PARTS, "data.format=chat"), build(v1, "data.format=chat")
    assert [(r["input_ids"], r["labels"]) for r in a.train] == [(r["input_ids"], r["labels"]) for r in b.train]


def test_assistant_text_beside_a_tool_call_that_the_template_drops_is_counted_and_shown(build, capsys):
    """Llama 3's template renders only the call of an assistant turn with text and tool_calls: warn, with the
    count and the rows (the second row has no such text)."""
    path = DATA / "toolcall_text_openai.jsonl"
    bundle, tok = build(path, "data.format=chat")
    assert "Sure, sending it now." not in tok.decode(bundle.train[0]["input_ids"])  # what the template does
    assert bundle.stats["n_call_text_dropped"] == 1
    assert bundle.stats["call_text_dropped_where"] == [f"{path} line 1"]
    from ftsweep.inspect import stats_line

    line = stats_line(bundle.stats, "fp").splitlines()[-1]
    assert line.startswith("data: warning: 1 assistant turn(s) have text beside their tool call that the chat "
                           "template does not render") and f"{path} line 1" in line


BAD_TURNS = {
    "image part": (
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            },
            {"role": "assistant", "content": "a cat"},
        ],
        "field 'messages[0].content[1]': content part of type 'image_url' is not supported (text parts only)",
    ),
    "two user turns": (
        [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
        ],
        "field 'messages[1].role': a 'user' turn must be followed by 'assistant' or 'tool_call', got 'user'",
    ),
    "assistant first": (
        [
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
        ],
        "field 'messages[0].role': the conversation must start with a user turn (after an optional system turn), got 'assistant'",
    ),
    "observation without a call": (
        [
            {"role": "user", "content": "a"},
            {"role": "observation", "content": "{}"},
            {"role": "assistant", "content": "c"},
        ],
        "field 'messages[1].role': a 'user' turn must be followed by 'assistant' or 'tool_call', got 'tool'",
    ),
    "call without its result": (
        [
            {"role": "user", "content": "a"},
            {"role": "function_call", "content": '{"name": "f", "arguments": {}}'},
            {"role": "assistant", "content": "c"},
        ],
        "field 'messages[2].role': a 'tool_call' turn must be followed by 'tool', got 'assistant'",
    ),
    "late system": (
        [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "s"},
            {"role": "assistant", "content": "c"},
        ],
        "field 'messages[1].role': a system turn is allowed only first",
    ),
    "loss weight": (
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c", "loss_weight": 0.5}],
        "field 'messages[1].loss_weight': must be 0 (masked) or 1 (trained), got 0.5",
    ),
    "weight": (
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c", "weight": 2}],
        "field 'messages[1].weight': must be 0 (masked) or 1 (trained), got 2",
    ),
    "weights disagree": (
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c", "loss_weight": 1, "weight": 0}],
        "field 'messages[1].loss_weight': 1 but weight is 0 (give one of them)",
    ),
    "bad call JSON": (
        [{"role": "user", "content": "a"}, {"role": "function_call", "content": "{oops"}],
        "field 'messages[1].content': the tool call is not valid JSON (Expecting property name enclosed in double quotes, column 2)",
    ),
}
GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("case", list(BAD_TURNS))
def test_bad_turns_one_line_naming_file_row_field(build, tmp_path, case):
    turns, message = BAD_TURNS[case]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"messages": turns}) + "\n")
    with pytest.raises(DataError) as err:
        build(path, "data.format=chat")
    assert str(err.value) == f"{path} line 2: {message}"


def test_bad_role_order_is_counted_under_skip(build, tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        GOOD,
        {"messages": BAD_TURNS["two user turns"][0]},
        {"messages": BAD_TURNS["assistant first"][0]},
        GOOD,
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bundle, _ = build(path, "data.format=chat", "data.bad_rows=skip")
    assert bundle.stats["n_train"] == 2 and bundle.stats["n_skipped_bad"] == 2


def test_sharegpt_field_names_in_errors(build, tmp_path):
    row = {"system": "s", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps([row]))
    with pytest.raises(DataError) as err:
        build(path, "data.format=sharegpt")
    assert str(err.value) == (
        f"{path} row 1: field 'conversations[1].from': a 'user' turn must be followed by 'assistant' or 'tool_call', got 'user'"
    )



@pytest.mark.parametrize("fmt", ["chat", "sharegpt"])
def test_turn_errors_name_the_files_own_column_and_role_key(build, tmp_path, fmt):
    # data.columns maps the file's 'dialog' column; its turns use role / content: the error names what the file has
    key = "messages" if fmt == "chat" else "conversations"
    rows = [{"dialog": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"dialog": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            {"dialog": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        build(path, f"data.format={fmt}", f"+data.columns.{key}=dialog")
    assert str(err.value) == (
        f"{path} line 2: field 'dialog[1].role': a 'user' turn must be followed by 'assistant' or 'tool_call', got 'user'"
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[::2]))
    with pytest.raises(DataError) as err:
        build(path, f"data.format={fmt}", f"+data.columns.{key}=dialog")
    assert str(err.value).startswith(f"{path} line 2: field 'dialog[1].content': empty")

# ------------------------------------------------------------------------------------------- helpers
def trained_runs(tok, row) -> list[str]:
    runs, cur = [], []
    for t, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def test_openai_legacy_function_call_rows_read_as_their_tool_call_layout(build, tmp_path):
    """OpenAI's legacy fine-tuning layout (``function_call`` on the assistant, role ``function`` for the result,
    schemas under ``functions``) gives the same tokens and labels as its tools / tool_calls / tool layout."""
    schema = {"name": "get_weather", "description": "Get weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    legacy = {"functions": [schema], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"role": "function", "name": "get_weather", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "21 degrees."}]}
    current = {"tools": [{"type": "function", "function": schema}], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "21 degrees."}]}
    rows = {}
    for name, row in (("legacy", legacy), ("current", current)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        rows[name] = build(path, "data.format=chat")[0].train[0]
    assert rows["legacy"]["input_ids"] == rows["current"]["input_ids"]
    assert rows["legacy"]["labels"] == rows["current"]["labels"]
