"""Exact label masks: which tokens are trained, per format, template and length policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftsweep.data import IGNORE_INDEX, DataError, build_datasets
from ftsweep.data.templates import ALPACA_EN, ALPACA_KO
from ftsweep.model import load_tokenizer

# The tokenizer does not depend on the tiny model's pre-training: skip it (the build is much faster).
NO_PRETRAIN = "model.tiny.pretrain_steps=0"
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
H = "<|start_header_id|>{}<|end_header_id|>\n\n"  # Llama 3 turn header
EOT = "<|eot_id|>"


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


@pytest.fixture
def build(compose, tmp_path):
    """build(rows, *overrides, name=...) -> (bundle, tokenizer); all rows, in file order, no eval split."""

    def _b(rows: list[dict], *overrides: str, name: str = "rows.json"):
        path = write(tmp_path / name, rows)
        cfg = compose(
            f"data.path={path}",
            "data.val_size=0",
            "objective.metric=train_loss",  # no validation rows
            "data.shuffle=false",
            "data.max_rows=null",
            NO_PRETRAIN,
            *overrides,
        )
        tok = load_tokenizer(cfg)
        return build_datasets(cfg, tok), tok

    return _b


def enc(tok, text: str, bos: bool = False) -> list[int]:
    return tok(text, add_special_tokens=bos)["input_ids"]


def trained_runs(tok, row) -> list[str]:
    """Decoded runs of consecutive trained tokens."""
    runs, cur = [], []
    for t, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == t  # a trained label is always the token itself
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r, skip_special_tokens=False) for r in runs]


def masked_prefix(row) -> list[int]:
    n = next(i for i, lab in enumerate(row["labels"]) if lab != IGNORE_INDEX)
    return row["input_ids"][:n]


ROW_NO_INPUT = {"instruction": "Name a color.", "input": "", "output": "Blue is a color."}
ROW_INPUT = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5."}


def expected_pair(tok, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    p, a = enc(tok, prompt, bos=True), enc(tok, answer) + [tok.eos_token_id]
    return p + a, [IGNORE_INDEX] * len(p) + a


@pytest.mark.parametrize("row,key", [(ROW_NO_INPUT, "prompt_no_input"), (ROW_INPUT, "prompt_with_input")])
def test_alpaca_en_mask_exact(build, row, key):
    bundle, tok = build([row])
    got = bundle.train[0]
    prompt = ALPACA_EN[key].replace("{instruction}", row["instruction"]).replace("{input}", row["input"])
    ids, labels = expected_pair(tok, prompt, row["output"])
    assert got["input_ids"] == ids
    assert got["labels"] == labels
    assert tok.decode(masked_prefix(got)) == BOS + prompt
    # Decoding the trained tokens gives exactly output + eos.
    assert trained_runs(tok, got) == [row["output"] + EOS]


def test_alpaca_en_prompt_text_is_stanford_alpaca(build):
    bundle, tok = build([ROW_NO_INPUT])
    assert tok.decode(masked_prefix(bundle.train[0])) == (
        BOS
        + "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nName a color.\n\n### Response:\n"
    )


def test_alpaca_ko_template(build):
    bundle, tok = build([ROW_NO_INPUT, ROW_INPUT], "data.template=alpaca_ko")
    no_in, with_in = bundle.train[0], bundle.train[1]
    assert tok.decode(masked_prefix(no_in)) == (
        BOS
        + "아래는 문제를 설명하는 지시사항입니다. 이 요청에 대해 적절하게 답변해주세요.\n###지시사항:Name a color.\n###답변:"
    )
    assert tok.decode(masked_prefix(with_in)) == BOS + ALPACA_KO["prompt_with_input"].replace(
        "{instruction}", "Add the numbers."
    ).replace("{input}", "2 and 3")
    assert "###입력:2 and 3\n###지시사항:Add the numbers.\n###답변:" in tok.decode(with_in["input_ids"])
    ids, labels = expected_pair(
        tok, ALPACA_KO["prompt_no_input"].replace("{instruction}", "Name a color."), "Blue is a color."
    )
    assert (no_in["input_ids"], no_in["labels"]) == (ids, labels)


def test_custom_template(build):
    bundle, tok = build(
        [ROW_NO_INPUT, ROW_INPUT],
        "data.template=custom",
        "data.custom_template.prompt_no_input='Q: {instruction} A: '",
        "data.custom_template.prompt_with_input='Q: {instruction} ({input}) A: '",
    )
    assert tok.decode(masked_prefix(bundle.train[0])) == BOS + "Q: Name a color. A: "
    assert tok.decode(masked_prefix(bundle.train[1])) == BOS + "Q: Add the numbers. (2 and 3) A: "


def test_train_on_prompt_trains_everything(build):
    bundle, _ = build([ROW_NO_INPUT], "data.train_on_prompt=true")
    assert bundle.train[0]["labels"] == bundle.train[0]["input_ids"]


def test_special_token_template(compose, tmp_path):
    path = write(tmp_path / "rows.json", [ROW_NO_INPUT])
    cfg = compose(
        "data=special_tokens_demo",
        f"data.path={path}",
        "data.val_size=0",
        "objective.metric=train_loss",
        "data.max_rows=null",
        NO_PRETRAIN,
    )
    tok = load_tokenizer(cfg)
    assert tok.eos_token == "<|endofanswer|>"
    got = build_datasets(cfg, tok).train[0]
    prompt = "<|prompt|> Name a color. <|assistant|> "
    ids, labels = expected_pair(tok, prompt, "Blue is a color.")
    assert (got["input_ids"], got["labels"]) == (ids, labels)
    assert tok.decode(got["input_ids"]) == BOS + prompt + "Blue is a color.<|endofanswer|>"
    assert trained_runs(tok, got) == ["Blue is a color.<|endofanswer|>"]
    # The new tokens are single ids (added to the tokenizer), not spelled out in bytes.
    for t in ("<|prompt|>", "<|assistant|>", "<|endofanswer|>"):
        assert tok.convert_tokens_to_ids(t) in got["input_ids"]


def test_pad_equals_eos_final_eos_still_trained(build):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    bundle, tok = build([ROW_NO_INPUT, ROW_INPUT], "model.pad_policy=eos")
    assert tok.pad_token_id == tok.eos_token_id
    rows = [bundle.train[i] for i in range(2)]
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        assert batch["labels"][i, n - 1].item() == tok.eos_token_id  # the answer's eos is trained
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()  # padding (also eos ids) is not
        assert (batch["input_ids"][i, n:] == tok.eos_token_id).all()


# ------------------------------------------------------------------------------------------ chat
SINGLE = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}
MULTI = {
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one?"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "two?"},
        {"role": "assistant", "content": "2"},
    ]
}


def test_chat_single_turn_exact(build):
    bundle, tok = build([SINGLE], "data.format=chat", name="c.jsonl")
    got = bundle.train[0]
    prompt = BOS + H.format("user") + "hi" + EOT + H.format("assistant")
    answer = "hello there" + EOT
    p, a = enc(tok, prompt), enc(tok, answer)
    assert got["input_ids"] == p + a
    assert got["labels"] == [IGNORE_INDEX] * len(p) + a
    assert tok.decode(got["input_ids"]) == tok.apply_chat_template(SINGLE["messages"], tokenize=False)


def test_chat_multi_turn_all_assistant_turns(build):
    bundle, tok = build([MULTI], "data.format=chat", name="c.jsonl")
    got = bundle.train[0]
    assert trained_runs(tok, got) == ["1" + EOT, "2" + EOT]
    assert tok.decode(got["input_ids"]) == (
        BOS
        + H.format("system")
        + "be brief"
        + EOT
        + H.format("user")
        + "one?"
        + EOT
        + H.format("assistant")
        + "1"
        + EOT
        + H.format("user")
        + "two?"
        + EOT
        + H.format("assistant")
        + "2"
        + EOT
    )


def test_chat_mask_history_trains_last_turn_only(build):
    bundle, tok = build([MULTI], "data.format=chat", "data.mask_history=true", name="c.jsonl")
    got = bundle.train[0]
    assert trained_runs(tok, got) == ["2" + EOT]
    a = enc(tok, "2" + EOT)
    assert got["labels"] == [IGNORE_INDEX] * (len(got["input_ids"]) - len(a)) + a


def test_sharegpt_with_system(build):
    row = {
        "system": "be brief",
        "conversations": [{"from": "human", "value": "one?"}, {"from": "gpt", "value": "1"}],
    }
    bundle, tok = build([row], "data.format=sharegpt", name="s.jsonl")
    got = bundle.train[0]
    assert tok.decode(got["input_ids"]) == (
        BOS
        + H.format("system")
        + "be brief"
        + EOT
        + H.format("user")
        + "one?"
        + EOT
        + H.format("assistant")
        + "1"
        + EOT
    )
    assert trained_runs(tok, got) == ["1" + EOT]


def test_chat_template_override_by_name(build):
    bundle, tok = build([SINGLE], "data.format=chat", "data.chat_template=chatml", *CHATML_TOKENS, name="c.jsonl")
    got = bundle.train[0]
    assert (
        tok.decode(got["input_ids"])
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello there<|im_end|>\n"
    )
    assert trained_runs(tok, got) == ["hello there<|im_end|>\n"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert got["input_ids"].count(im_end) == 2 and tok.eos_token == "<|im_end|>"  # one token each, the stop token


CHATML_TOKENS = ("data.special_tokens=['<|im_start|>','<|im_end|>']", "data.eos_token='<|im_end|>'")


def test_chatml_on_a_tokenizer_without_its_markers_is_refused_in_one_line(build):
    with pytest.raises(DataError) as err:
        build([SINGLE], "data.format=chat", "data.chat_template=chatml", name="c.jsonl")
    assert str(err.value) == (
        "data.chat_template: chatml needs <|im_start|>, <|im_end|> as tokens, and this tokenizer has none: they "
        "would be trained as ordinary text pieces with no stop token; add them (the embeddings are resized, and "
        "trained) with \"data.special_tokens=['<|im_start|>','<|im_end|>']\" \"data.eos_token='<|im_end|>'\" "
        "data.train_embeddings=true, or use the tokenizer's own template (data.chat_template=null)")


# --------------------------------------------------------------------------------------- lengths
PC = {"prompt": "one two three four five six seven eight nine ten", "completion": "alpha beta gamma delta"}


def _pc_parts(tok):
    return enc(tok, PC["prompt"], bos=True), enc(tok, PC["completion"]) + [tok.eos_token_id]


def test_prompt_completion_exact(build):
    bundle, tok = build([PC], "data.format=prompt_completion")
    p, a = _pc_parts(tok)
    assert bundle.train[0]["labels"] == [IGNORE_INDEX] * len(p) + a


def test_conversational_prompt_completion_trains_the_completion_only(build):
    # TRL's conversational prompt-completion: prompt and completion are message lists, rendered by the chat
    # template exactly as the same conversation in messages; only the completion is trained (never the
    # prompt's assistant turns), and no eos is added after the template's own end of turn.
    msgs = MULTI["messages"]
    conv = {"prompt": msgs[:-1], "completion": msgs[-1:]}
    bundle, tok = build([conv], "data.format=prompt_completion", name="pc.jsonl")
    chat, _ = build([MULTI], "data.format=chat", "data.mask_history=true", name="c.jsonl")
    got = bundle.train[0]
    assert got["input_ids"] == chat.train[0]["input_ids"]
    assert got["labels"] == chat.train[0]["labels"]
    assert trained_runs(tok, got) == ["2" + EOT]
    # a plain-string completion after a conversational prompt is the assistant's answer
    plain, _ = build([{"prompt": msgs[:-1], "completion": "2"}], "data.format=prompt_completion", name="p2.jsonl")
    assert plain.train[0]["labels"] == got["labels"]
    # plain prompt_completion rows keep their own layout (no template, eos added); one kind to a file, as in TRL
    p, a = _pc_parts(tok)
    assert build([PC], "data.format=prompt_completion", name="plain.jsonl")[0].train[0]["labels"] == \
        [IGNORE_INDEX] * len(p) + a
    with pytest.raises(DataError, match=r"mixed.jsonl line 2: field 'prompt': messages where .*mixed.jsonl line 1 "
                                        r"has text: a file's prompts are all messages"):
        build([PC, conv], "data.format=prompt_completion", name="mixed.jsonl")
    bad = {"prompt": msgs[:2], "completion": [{"role": "user", "content": "again?"}]}
    with pytest.raises(DataError, match=r"bad.jsonl line 1: field 'completion\[0\].role': a 'user' turn must be "
                                        r"followed by 'assistant' or 'tool_call', got 'user'$"):
        build([bad], "data.format=prompt_completion", name="bad.jsonl")


def test_truncate_answer(build):
    _, tok = build([PC], "data.format=prompt_completion")
    p, a = _pc_parts(tok)
    cutoff = len(p) + 2
    bundle, _ = build(
        [PC], "data.format=prompt_completion", f"data.cutoff_len={cutoff}", "data.overlong=truncate_answer"
    )
    got = bundle.train[0]
    assert got["input_ids"] == p + a[:2]
    assert got["labels"] == [IGNORE_INDEX] * len(p) + a[:2]
    assert bundle.stats["n_truncated"] == 1 and bundle.stats["n_dropped"] == 0


def test_truncate_prompt_from_the_left_keeps_bos(build):
    _, tok = build([PC], "data.format=prompt_completion")
    p, a = _pc_parts(tok)
    over = 3
    cutoff = len(p) + len(a) - over
    bundle, _ = build(
        [PC], "data.format=prompt_completion", f"data.cutoff_len={cutoff}", "data.overlong=truncate_prompt"
    )
    got = bundle.train[0]
    assert got["input_ids"] == [tok.bos_token_id] + p[1 + over :] + a
    assert got["labels"] == [IGNORE_INDEX] * (len(p) - over) + a
    assert bundle.stats["n_truncated"] == 1


def test_drop_overlong(build):
    _, tok = build([PC, {"prompt": "x", "completion": "y"}], "data.format=prompt_completion")
    p, a = _pc_parts(tok)
    bundle, _ = build(
        [PC, {"prompt": "x", "completion": "y"}],
        "data.format=prompt_completion",
        f"data.cutoff_len={len(p) + len(a) - 1}",
        "data.overlong=drop",
    )
    assert len(bundle.train) == 1
    assert bundle.stats["n_dropped_overlong"] == 1 and bundle.stats["n_dropped"] == 1


def test_row_without_answer_after_truncation_is_dropped(build):
    _, tok = build([PC], "data.format=prompt_completion")
    p, _ = _pc_parts(tok)
    rows = [PC, {"prompt": "x", "completion": "y"}]
    bundle, _ = build(
        rows, "data.format=prompt_completion", f"data.cutoff_len={len(p)}", "data.overlong=truncate_answer"
    )
    assert len(bundle.train) == 1  # PC lost its whole answer: never trained with zero target tokens
    assert bundle.stats["n_dropped_empty_answer"] == 1
    assert all(any(lab != IGNORE_INDEX for lab in r["labels"]) for r in bundle.train)


def test_text_packing_blocks(build):
    docs = [{"text": "first document here"}, {"text": "second one"}, {"text": "and a third document"}]
    bundle, tok = build(docs, "data.format=text", "data.packing=true", "data.cutoff_len=8")
    stream = [t for d in docs for t in enc(tok, d["text"], bos=True) + [tok.eos_token_id]]
    n = len(stream) // 8
    assert bundle.train["input_ids"] == [stream[i * 8 : (i + 1) * 8] for i in range(n)]
    assert bundle.train["labels"] == bundle.train["input_ids"]  # pre-training: every token trained
    assert bundle.stats["padding_fraction"] == 0.0


def test_train_on_prompt_with_mask_history_keeps_history_answers_masked(build):
    # LLaMA-Factory: under mask_history earlier answers stay masked even when prompts are trained.
    bundle, tok = build([MULTI], "data.format=chat", "data.mask_history=true", "data.train_on_prompt=true", name="c.jsonl")
    got = bundle.train[0]
    first = enc(tok, "1" + EOT)
    text_before = BOS + H.format("system") + "be brief" + EOT + H.format("user") + "one?" + EOT + H.format("assistant")
    n = len(enc(tok, text_before))
    assert got["input_ids"][n : n + len(first)] == first
    assert got["labels"][n : n + len(first)] == [IGNORE_INDEX] * len(first)  # history answer masked
    assert got["labels"][:n] == got["input_ids"][:n]  # prompt trained
    assert got["labels"][n + len(first) :] == got["input_ids"][n + len(first) :]  # later prompt + last answer


# ------------------------------------------------------------------------------------ truncation
LONG = {
    "prompt": "one two three four five six seven eight nine ten eleven twelve",
    "completion": "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda",
}


def test_default_policy_never_loses_the_prompt(compose, build):
    assert compose().data.overlong == "truncate_both"
    bundle, _ = build([LONG], "data.format=prompt_completion", "data.cutoff_len=16")
    labels = bundle.train[0]["labels"]
    assert len(labels) == 16 and labels.count(-100) > 1  # bos and prompt tokens kept, the answer cut
    assert labels[-1] != -100


def test_truncate_both_splits_the_budget_in_proportion(build):
    _, tok = build([LONG], "data.format=prompt_completion")
    p, a = enc(tok, LONG["prompt"], bos=True), enc(tok, LONG["completion"]) + [tok.eos_token_id]
    n_p, n_a = len(p) - 1, len(a)
    cutoff = (n_p + n_a) * 3 // 4 + 1  # both parts are over half of the budget: proportional split
    budget = cutoff - 1
    assert 2 * n_p >= budget and 2 * n_a >= budget
    keep_a = int(budget * n_a / (n_p + n_a))
    keep_p = budget - keep_a
    assert 0 < keep_p < n_p and 0 < keep_a < n_a  # both cut
    bundle, _ = build([LONG], "data.format=prompt_completion", f"data.cutoff_len={cutoff}", "data.overlong=truncate_both")
    got = bundle.train[0]
    assert got["input_ids"] == [tok.bos_token_id] + p[len(p) - keep_p :] + a[:keep_a]
    assert got["labels"] == [IGNORE_INDEX] * (1 + keep_p) + a[:keep_a]
    assert bundle.stats["n_truncated"] == 1 and bundle.stats["n_prompt_lost"] == 0


def test_truncate_both_keeps_a_short_answer_whole(build):
    _, tok = build([PC], "data.format=prompt_completion")
    p, a = _pc_parts(tok)
    cutoff = len(p) + len(a) - 3  # answer under half the budget: only the prompt is cut, from the left
    bundle, _ = build([PC], "data.format=prompt_completion", f"data.cutoff_len={cutoff}", "data.overlong=truncate_both")
    got = bundle.train[0]
    assert got["input_ids"] == [tok.bos_token_id] + p[4:] + a
    assert got["labels"] == [IGNORE_INDEX] * (len(p) - 3) + a


def test_whole_prompt_lost_is_counted_per_policy(build):
    # The answer alone fills the budget: truncate_prompt keeps only bos as prompt, truncate_both keeps some.
    _, tok = build([LONG], "data.format=prompt_completion")
    n_a = len(enc(tok, LONG["completion"])) + 1
    cutoff = n_a + 1  # bos + answer
    rows = [LONG, {"prompt": "x", "completion": "y"}]
    results = {}
    for policy in ("truncate_prompt", "truncate_both", "truncate_answer"):
        bundle, _ = build(rows, "data.format=prompt_completion", f"data.cutoff_len={cutoff}", f"data.overlong={policy}")
        s = bundle.stats
        results[policy] = s["n_prompt_lost"]
        # The comparison counts do not depend on the policy in use.
        assert (s["n_prompt_lost_if_truncate_prompt"], s["n_prompt_lost_if_truncate_both"]) == (1, 0)
        assert s["n_truncated"] == 1
    assert results == {"truncate_prompt": 1, "truncate_both": 0, "truncate_answer": 0}
    bundle, _ = build(rows, "data.format=prompt_completion", f"data.cutoff_len={cutoff}", "data.overlong=truncate_prompt")
    assert masked_prefix(bundle.train[0]) == [tok.bos_token_id]  # the instruction is gone


# ---------------------------------------------------- LLaMA-Factory's system / history columns (issue 21 item 5)
def test_a_system_column_of_chat_rows_is_the_system_turn(build):
    """dataset_info.json's "system" column beside messages: rendered exactly as a system turn would be."""
    turns = [{"role": "user", "content": "one?"}, {"role": "assistant", "content": "1"}]
    col, _ = build([{"system": "be brief", "messages": turns}], "data.format=chat", name="col.jsonl")
    turn, _ = build([{"messages": [{"role": "system", "content": "be brief"}, *turns]}], "data.format=chat",
                    name="turn.jsonl")
    assert (col.train[0]["input_ids"], col.train[0]["labels"]) == (turn.train[0]["input_ids"], turn.train[0]["labels"])


@pytest.mark.parametrize(("row", "extra", "message"), [
    ({"system": "be brief"}, (), "rows.json row 1: field 'system': a system prompt: the alpaca templates have no place for it"),
    ({"history": [["hi", "hello"]]}, (), "rows.json row 1: field 'history': earlier turns: the alpaca templates have no place"),
    ({"sys": "be brief"}, ("data.columns.system=sys",), "field \"system (column 'sys')\": a system prompt"),
])
def test_alpaca_system_or_history_columns_are_refused_not_dropped(build, row, extra, message):
    with pytest.raises(DataError) as err:
        build([{"instruction": "one?", "input": "", "output": "1", **row}], *extra)
    assert message in str(err.value) and "data.format=chat" in str(err.value) and "\n" not in str(err.value)


def test_alpaca_rows_under_the_chat_format_are_the_conversation_llama_factory_makes_of_them(build):
    """instruction / input / output + system + history [[q, a], ...] under data.format=chat: exactly the tokens
    and labels of the same conversation written as messages (history answers trained, input after a newline)."""
    alpaca = {"system": "be brief", "history": [["one?", "1"], ["two?", "2"]], "instruction": "Add them.",
              "input": "1 + 2", "output": "3"}
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one?"},
                {"role": "assistant", "content": "1"}, {"role": "user", "content": "two?"},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "Add them.\n1 + 2"},
                {"role": "assistant", "content": "3"}]
    a, _ = build([alpaca], "data.format=chat", name="alpaca.jsonl")
    m, _ = build([{"messages": messages}], "data.format=chat", name="messages.jsonl")
    assert (a.train[0]["input_ids"], a.train[0]["labels"]) == (m.train[0]["input_ids"], m.train[0]["labels"])
    # no history, empty input: one user turn holding the instruction alone; mask_history as for messages
    plain, _ = build([{"instruction": "one?", "input": "", "output": "1"}], "data.format=chat", name="plain.jsonl")
    same, _ = build([{"messages": messages[1:3]}], "data.format=chat", name="same.jsonl")
    assert plain.train[0]["labels"] == same.train[0]["labels"]
    a, _ = build([alpaca], "data.format=chat", "data.mask_history=true", name="alpaca.jsonl")
    m, _ = build([{"messages": messages}], "data.format=chat", "data.mask_history=true", name="messages.jsonl")
    assert a.train[0]["labels"] == m.train[0]["labels"]


def test_a_bad_history_under_the_chat_format_names_the_pair(build):
    with pytest.raises(DataError) as err:
        build([{"instruction": "x", "output": "y", "history": [["only one"]]}], "data.format=chat")
    assert "field 'history[0]': expected a [query, response] pair, got ['only one']" in str(err.value)


# ------------------------------------ over-long chat rows: history cut first, system / tool block kept (issue 21 items 2, 3)
WEATHER_TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
SYSTEM = "You are a helpful assistant."
OLD_Q = "Tell me a long story about " + "a very long road and " * 5 + "the end."
OLD_A = "Once upon a time " + "there was a very long road and " * 4 + "that was all."
ASK = "Please tell me, in a few words, what the weather is like in Paris today and whether I need an umbrella."
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}
# LLaMA-Factory's ShareGPT layout (its glaive_toolcall demo): system and tools columns, function_call turns.
GLAIVE = {
    "conversations": [
        {"from": "human", "value": OLD_Q},
        {"from": "gpt", "value": OLD_A},
        {"from": "human", "value": ASK},
        {"from": "function_call", "value": json.dumps(CALL)},
    ],
    "system": SYSTEM,
    "tools": json.dumps(WEATHER_TOOLS),
}


def _chat_parts(tok, messages, tools, k):
    """Token ids of the chat row's system / tool block, of the prompt before message k after what
    precedes it (message k-1), and of message k's answer: each tokenized alone, as the pipeline does."""
    kw = {"tools": tools, "tokenize": False}
    pre = tok.apply_chat_template(messages[:1], **kw)
    before = tok.apply_chat_template(messages[:k - 1], **kw) if k > 1 else pre
    prompt = tok.apply_chat_template(messages[:k], add_generation_prompt=True, **kw)
    full = tok.apply_chat_template(messages[: k + 1], **kw)
    return enc(tok, pre), enc(tok, prompt[len(before):]), enc(tok, full[len(prompt):]), full


def test_mask_history_keeps_the_trained_last_turn_and_cuts_history_first(build):
    tools = [{"type": "function", "function": t} for t in WEATHER_TOOLS]
    call_msg = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": CALL}]}
    kept = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}, call_msg]
    p, u, a, text = _chat_parts(tok := build([GLAIVE], "data.format=sharegpt", name="g.jsonl")[1], kept, tools, 2)
    whole, _ = build([GLAIVE], "data.format=sharegpt", "data.mask_history=true", "data.cutoff_len=1024", name="g.jsonl")
    n_whole = len(whole.train[0]["input_ids"])
    assert len(p + u + a) + 100 < n_whole < 1024  # the history is long, the row fits the model
    # One token over: the whole first exchange goes (not the end of the row, which holds the only trained
    # turn: that row used to be dropped as "empty answer"); the system / tool block stays.
    for cutoff in (n_whole - 1, len(p + u + a)):
        bundle, _ = build([GLAIVE], "data.format=sharegpt", "data.mask_history=true", f"data.cutoff_len={cutoff}",
                          name="g.jsonl")
        got = bundle.train[0]
        assert got["input_ids"] == p + u + a
        assert got["labels"] == [IGNORE_INDEX] * len(p + u) + a
        assert tok.decode(got["input_ids"]) == text  # exactly the conversation without its first exchange
        assert trained_runs(tok, got) == ['{"name": "get_weather", "parameters": {"city": "Paris"}}' + EOT]
        s = bundle.stats
        assert (s["n_truncated"], s["n_history_cut"], s["n_dropped"]) == (1, 1, 0)
    # Still two tokens over once the history is gone: the prompt after the system / tool block is cut
    # (from the left, truncate_both), the schema and the trained call are kept whole.
    cutoff = len(p + u + a) - 2
    assert 2 * len(a) < cutoff - len(p)  # a short answer is kept whole
    bundle, _ = build([GLAIVE], "data.format=sharegpt", "data.mask_history=true", f"data.cutoff_len={cutoff}",
                      name="g.jsonl")
    got = bundle.train[0]
    assert got["input_ids"] == p + u[2:] + a
    assert got["labels"] == [IGNORE_INDEX] * (len(p + u) - 2) + a
    assert tok.decode(p).endswith(SYSTEM + EOT) and '"get_weather"' in tok.decode(p)  # the whole block


def test_truncation_keeps_the_system_and_tool_block_openai_layout(build):
    """OpenAI layout (messages with a system turn, tool_calls, a tool turn, a tools column): the first
    prompt is cut after the system / tool block, never from the row's start."""
    tools = [{"type": "function", "function": t} for t in WEATHER_TOOLS]
    msgs = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": OLD_Q},
        {"role": "assistant", "content": "Sunny."},
    ]
    row = {"messages": msgs, "tools": tools}
    bundle, tok = build([row], "data.format=chat", "data.cutoff_len=1024", name="o.jsonl")
    p, u, a, _ = _chat_parts(tok, msgs, tools, 2)
    assert bundle.train[0]["input_ids"] == p + u + a
    cutoff = len(p + u + a) - 10
    bundle, _ = build([row], "data.format=chat", f"data.cutoff_len={cutoff}", name="o.jsonl")
    got = bundle.train[0]
    assert got["input_ids"] == p + u[10:] + a  # before: bos + (p + u)[11:] + a, the schema cut first
    assert got["labels"] == [IGNORE_INDEX] * (len(p + u) - 10) + a
    assert '"name": "get_weather"' in tok.decode(got["input_ids"]) and SYSTEM in tok.decode(got["input_ids"])
    assert (bundle.stats["n_truncated"], bundle.stats["n_history_cut"], bundle.stats["n_dropped"]) == (1, 0, 0)


def test_prompt_cut_keep_start_is_llamafactorys_rule(build):
    """data.prompt_cut=keep_start: the prompt loses its end (LLaMA-Factory's source_ids[:source_len]), so its
    start is kept, for a plain prompt (truncate_both's split unchanged) and for a chat row with a tool block."""
    _, tok = build([LONG], "data.format=prompt_completion")
    p, a = enc(tok, LONG["prompt"], bos=True), enc(tok, LONG["completion"]) + [tok.eos_token_id]
    n_p, n_a = len(p) - 1, len(a)
    cutoff = (n_p + n_a) * 3 // 4 + 1
    keep_a = int((cutoff - 1) * n_a / (n_p + n_a))
    keep_p = cutoff - 1 - keep_a
    bundle, _ = build([LONG], "data.format=prompt_completion", f"data.cutoff_len={cutoff}",
                      "data.prompt_cut=keep_start")
    got = bundle.train[0]
    assert got["input_ids"] == p[: 1 + keep_p] + a[:keep_a]
    assert got["labels"] == [IGNORE_INDEX] * (1 + keep_p) + a[:keep_a]
    tools = [{"type": "function", "function": t} for t in WEATHER_TOOLS]
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": OLD_Q},
            {"role": "assistant", "content": "Sunny."}]
    row = {"messages": msgs, "tools": tools}
    _, tok = build([row], "data.format=chat", "data.cutoff_len=1024", name="o.jsonl")
    p, u, a, _ = _chat_parts(tok, msgs, tools, 2)
    cutoff = len(p + u + a) - 10
    bundle, _ = build([row], "data.format=chat", f"data.cutoff_len={cutoff}", "data.overlong=truncate_prompt",
                      "data.prompt_cut=keep_start", name="o.jsonl")
    got = bundle.train[0]
    assert got["input_ids"] == p + u[:-10] + a  # the user turn's end (its assistant header too) is cut
    assert got["labels"] == [IGNORE_INDEX] * (len(p + u) - 10) + a


def test_history_is_cut_oldest_first_and_only_as_far_as_needed_openai_layout(build):
    """OpenAI layout, multi-turn with a system turn and tools, mask_history: one token over removes only
    the oldest exchange; the newer history turn stays (masked) and the trained call is whole."""
    tools = [{"type": "function", "function": t} for t in WEATHER_TOOLS]
    call_msg = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": CALL}]}
    msgs = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": OLD_Q},
        {"role": "assistant", "content": OLD_A},
        {"role": "user", "content": "And briefly?"},
        {"role": "assistant", "content": "A road."},
        {"role": "user", "content": ASK},
        call_msg,
    ]
    row = {"messages": msgs, "tools": tools}
    whole, tok = build([row], "data.format=chat", "data.mask_history=true", "data.cutoff_len=1024", name="m.jsonl")
    n_whole = len(whole.train[0]["input_ids"])
    kept = msgs[:1] + msgs[3:]
    p, u1, h1, _ = _chat_parts(tok, kept, tools, 2)
    _, u2, a, text = _chat_parts(tok, kept, tools, 4)
    bundle, _ = build([row], "data.format=chat", "data.mask_history=true", f"data.cutoff_len={n_whole - 1}",
                      name="m.jsonl")
    got = bundle.train[0]
    assert got["input_ids"] == p + u1 + h1 + u2 + a
    assert got["labels"] == [IGNORE_INDEX] * len(p + u1 + h1 + u2) + a  # "A road." stays masked history
    assert tok.decode(got["input_ids"]) == text
    assert (bundle.stats["n_history_cut"], bundle.stats["n_dropped"]) == (1, 0)


def test_a_tokenizer_that_appends_eos_gets_one_eos_at_the_end_of_the_answer_only(compose, tmp_path):
    # before: Llama-2's add_eos_token=True (a "$A </s>" post-processor) put an eos at the end of every prompt and
    # two after every document
    from tokenizers import processors

    from ftsweep.data import build_datasets
    from ftsweep.data.encode import appended_specials
    from ftsweep.model import load_tokenizer

    rows = [{"instruction": f"Name colour {i}.", "input": "x" if i % 2 else "", "output": f"Colour {i}."} for i in range(6)]
    path = write(tmp_path / "r.jsonl", rows)
    cfg = compose(f"data.path={path}", "data.format=alpaca", "data.val_size=0", "objective.metric=train_loss")
    plain = load_tokenizer(cfg)
    eos_after = load_tokenizer(cfg)
    bos, eos = eos_after.bos_token, eos_after.eos_token
    eos_after._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B", special_tokens=[(bos, eos_after.bos_token_id),
                                                                         (eos, eos_after.eos_token_id)])
    assert eos_after("a")["input_ids"][-1] == eos_after.eos_token_id and appended_specials(eos_after) == \
        [eos_after.eos_token_id] and appended_specials(plain) == []
    want = build_datasets(cfg, plain).train
    got = build_datasets(cfg, eos_after).train
    assert [r["input_ids"] for r in got] == [r["input_ids"] for r in want]
    assert [r["labels"] for r in got] == [r["labels"] for r in want]
    assert all(plain.eos_token_id not in r["input_ids"][:-1] for r in got)  # none inside a row (its end: one)


def test_a_custom_template_that_writes_the_bos_gets_one_bos(compose):
    # before: "<s>[INST] ..." from a model card trained two bos tokens (the tokenizer adds its own)
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    common = ("data.max_rows=8", "data.val_size=0", "objective.metric=train_loss", "data.template=custom")
    written = compose(*common, "data.custom_template.prompt_no_input='<|begin_of_text|>Q: {instruction}\\nA: '",
                      "data.custom_template.prompt_with_input='<|begin_of_text|>Q: {instruction} {input}\\nA: '")
    plain = compose(*common, "data.custom_template.prompt_no_input='Q: {instruction}\\nA: '",
                    "data.custom_template.prompt_with_input='Q: {instruction} {input}\\nA: '")
    tok = load_tokenizer(plain)
    got, want = build_datasets(written, tok).train, build_datasets(plain, tok).train
    assert [r["input_ids"] for r in got] == [r["input_ids"] for r in want]
    assert all(r["input_ids"][:2] != [tok.bos_token_id] * 2 for r in got)


def test_an_answer_that_already_ends_with_eos_gets_no_second_one(build):
    # before: data exported with the eos written at the end of each answer ("Paris.<|end_of_text|>") trained two eos
    # tokens per row (TRL's SFTTrainer adds eos only where the text does not end with it)
    rows = [{"instruction": "Name a city.", "input": "", "output": "Paris." + EOS},
            {"instruction": "Name a colour.", "input": "", "output": "Blue."}]
    bundle, tok = build(rows)
    eos = tok.eos_token_id
    for got, out in zip(bundle.train, ("Paris.", "Blue.")):
        answer = enc(tok, out) + [eos]
        assert got["input_ids"][-len(answer):] == answer and got["input_ids"].count(eos) == 1
        assert got["labels"] == [IGNORE_INDEX] * (len(got["input_ids"]) - len(answer)) + answer
    pc, _ = build([{"prompt": "Capital of France?", "completion": " Paris." + EOS}], "data.format=prompt_completion",
                  name="pc.jsonl")
    answer = enc(tok, " Paris.") + [eos]
    assert pc.train[0]["labels"] == [IGNORE_INDEX] * len(enc(tok, "Capital of France?", bos=True)) + answer
    docs, _ = build([{"text": "A document." + EOS}, {"text": "Another one."}], "data.format=text", name="t.jsonl")
    assert [r["input_ids"] for r in docs.train] == [enc(tok, "A document.", bos=True) + [eos],
                                                   enc(tok, "Another one.", bos=True) + [eos]]


def test_truncation_keeps_the_tool_block_of_a_row_without_a_system_turn(build):
    # before: the tool block was found by rendering the conversation's system turn alone with the tools, and with no
    # system turn that is an empty conversation, which transformers 5 refuses: nothing was kept, the schema was cut
    tools = [{"type": "function", "function": t} for t in WEATHER_TOOLS]
    msgs = [{"role": "user", "content": OLD_Q}, {"role": "assistant", "content": "Sunny."}]
    row = {"messages": msgs, "tools": tools}
    bundle, tok = build([row], "data.format=chat", "data.cutoff_len=1024", name="t.jsonl")
    kw = {"tools": tools, "tokenize": False}
    prompt = tok.apply_chat_template(msgs[:1], add_generation_prompt=True, **kw)
    full = tok.apply_chat_template(msgs, **kw)
    block = prompt[: prompt.index("<|eot_id|>") + len("<|eot_id|>")]  # bos + the ipython system block with the schema
    assert '"get_weather"' in block and not block.endswith(OLD_Q)
    p, u, a = enc(tok, block), enc(tok, prompt[len(block):]), enc(tok, full[len(prompt):])
    assert bundle.train[0]["input_ids"] == p + u + a
    cutoff = len(p + u + a) - 10
    got = build([row], "data.format=chat", f"data.cutoff_len={cutoff}", name="t.jsonl")[0].train[0]
    assert got["input_ids"] == p + u[10:] + a  # before: bos + (p + u)[11:] + a, the schema's start cut
    assert got["labels"] == [IGNORE_INDEX] * (len(p + u) - 10) + a


# Qwen2.5's layout: a default system block when the conversation has no system turn (the tiny model's markers)
DEFAULT_SYSTEM_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' + messages[0]['content'] + '<|eot_id|>' }}"
    "{%- else %}{{- '<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for m in messages %}{%- if not (m['role'] == 'system' and loop.first) %}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)


def test_truncation_keeps_the_system_block_a_template_writes_without_a_system_turn(compose, tmp_path):
    # before: only a row's own system turn was kept: a default block (Qwen2.5's "You are Qwen...", Llama 3.1's date
    # lines) was cut from the left like any prompt text, and the row started in the middle of it
    msgs = [{"role": "user", "content": OLD_Q}, {"role": "assistant", "content": "Sunny."}]
    path = write(tmp_path / "q.jsonl", [{"messages": msgs}])
    common = (f"data.path={path}", "data.format=chat", "data.val_size=0", "objective.metric=train_loss", NO_PRETRAIN)
    tok = load_tokenizer(compose(*common))
    tok.chat_template = DEFAULT_SYSTEM_TEMPLATE
    block = "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert prompt.startswith(block)
    p, u, a = enc(tok, block), enc(tok, prompt[len(block):]), enc(tok, full[len(prompt):])
    assert build_datasets(compose(*common, "data.cutoff_len=1024"), tok).train[0]["input_ids"] == p + u + a
    cutoff = len(p + u + a) - 10
    got = build_datasets(compose(*common, f"data.cutoff_len={cutoff}"), tok).train[0]
    assert got["input_ids"] == p + u[10:] + a  # before: (p + u)[10:] + a
    assert got["labels"] == [IGNORE_INDEX] * (len(p + u) - 10) + a
