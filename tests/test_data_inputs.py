"""Bad and unusual input files: encodings, byte-order marks, missing local files, column mapping, and
the CLI's one line + exit code 2 for each (nothing written)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftsweep.data import DataError, build_datasets
from ftsweep.model import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
NO_PRETRAIN = "model.tiny.pretrain_steps=0"
ROWS = [
    {"instruction": "Nommez une boisson.", "input": "", "output": "Un café au lait."},
    {"instruction": "Hi?", "input": "", "output": "Hello."},
]


@pytest.fixture
def build(compose):
    def _b(path, *overrides: str):
        cfg = compose(
            f"data.path={path}",
            "data.val_size=0",
            "objective.metric=train_loss",
            "data.shuffle=false",
            NO_PRETRAIN,
            *overrides,
        )
        tok = load_tokenizer(cfg)
        return build_datasets(cfg, tok), tok

    return _b


def answers(tok, ds) -> list[str]:
    return [tok.decode([t for t in r if t != -100], skip_special_tokens=True) for r in ds["labels"]]


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# -------------------------------------------------------------------------------------- encodings
def test_latin1_file_is_one_line_with_the_byte_offset(build, tmp_path):
    path = tmp_path / "latin1.jsonl"
    raw = jsonl(ROWS).encode("latin-1")
    path.write_bytes(raw)
    with pytest.raises(DataError) as err:
        build(path)
    offset = raw.index("é".encode("latin-1"))
    assert str(err.value) == (
        f"{path}: not valid utf-8 text at byte {offset} (line 1): invalid continuation byte (byte 0xe9); "
        "set data.encoding to the file's encoding, e.g. data.encoding=latin-1"
    )
    bundle, tok = build(path, "data.encoding=latin-1")
    assert answers(tok, bundle.train) == ["Un café au lait.", "Hello."]


def test_unknown_encoding_is_a_config_error(compose):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match=r"^data.encoding: unknown text encoding 'latin-9000'"):
        compose("data.encoding=latin-9000")


@pytest.mark.parametrize("kind", ["csv", "json", "jsonl"])
def test_utf8_bom_is_skipped(build, tmp_path, kind):
    path = tmp_path / f"bom.{kind}"
    if kind == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["instruction", "input", "output"])
        w.writeheader()
        w.writerows(ROWS)
        text = buf.getvalue()
    else:
        text = json.dumps(ROWS, ensure_ascii=False) if kind == "json" else jsonl(ROWS)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    bundle, tok = build(path)
    assert answers(tok, bundle.train) == ["Un café au lait.", "Hello."]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-be"])
@pytest.mark.parametrize("kind", ["csv", "jsonl", "tsv"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read_as_such(build, tmp_path, kind, encoding):
    """Excel's "Unicode Text" export is UTF-16 with a byte-order mark: the default utf-8 reads it by the mark."""
    sep = "\t" if kind == "tsv" else ","
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["instruction", "input", "output"], delimiter=sep)
    w.writeheader()
    w.writerows(ROWS)
    text = jsonl(ROWS) if kind == "jsonl" else buf.getvalue()
    bom = {"utf-16": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32": b"\xff\xfe\x00\x00", "utf-32-be": b"\x00\x00\xfe\xff"}
    path = tmp_path / f"unicode.{kind}"
    path.write_bytes(bom[encoding] + text.encode(encoding if encoding.endswith("-be") else encoding + "-le"))
    bundle, tok = build(path)
    assert answers(tok, bundle.train) == ["Un café au lait.", "Hello."]


def test_a_korean_legacy_encoding_is_named_in_the_error(build, tmp_path):
    rows = [{"instruction": "서울은 어느 나라의 수도입니까?", "input": "", "output": "대한민국입니다."},
            {"instruction": "안녕?", "input": "", "output": "안녕하세요."}]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["instruction", "input", "output"])
    w.writeheader()
    w.writerows(rows)
    path = tmp_path / "ko.csv"
    raw = buf.getvalue().encode("cp949")
    path.write_bytes(raw)
    with pytest.raises(DataError) as err:
        build(path)
    assert str(err.value).startswith(f"{path}: not valid utf-8 text at byte {raw.index('서'.encode('cp949'))} (line 2): ")
    assert str(err.value).endswith("; the bytes look like Korean text in cp949: set data.encoding=cp949")
    bundle, tok = build(path, "data.encoding=cp949")
    assert answers(tok, bundle.train) == ["대한민국입니다.", "안녕하세요."]


def test_a_txt_file_with_a_tab_separated_header_says_to_read_it_as_tsv(build, tmp_path):
    path = tmp_path / "export.txt"
    path.write_text("instruction\tinput\toutput\n" + "".join(f"{r['instruction']}\t\t{r['output']}\n" for r in ROWS),
                    encoding="utf-16")
    with pytest.raises(DataError) as err:
        build(path)
    assert str(err.value) == (f"{path} line 1: a .txt file is one text row per line (data.format=text), but its "
                              "first line looks like a header of tab-separated columns (instruction, input, output): "
                              "read it with data.loader=tsv")
    bundle, tok = build(path, "data.loader=tsv")
    assert answers(tok, bundle.train) == ["Un café au lait.", "Hello."]
    prose = tmp_path / "prose.txt"  # commas in plain text lines are no header
    prose.write_text("Hello, world\nAnother line, here\n")
    with pytest.raises(DataError, match="field 'instruction': missing"):
        build(prose)


@pytest.mark.parametrize("name, text, message", [
    ("rows.csv", 'instruction,output\nQ1,A1\nName two fruits,apples, pears\n',
     '3 cells for 2 columns: a value holding a comma must be quoted ("apples, pears")'),
    ("rows.tsv", "instruction\toutput\nQ1\tA1\nQ2\tA\tB\n", "3 cells for 2 columns: a value holding a tab must be quoted"),
])
def test_a_row_with_more_cells_than_columns_is_refused_not_cut(build, tmp_path, name, text, message):
    # csv.DictReader files the extra cells under None: "apples, pears" would have trained as "apples"
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as err:
        build(path)
    assert str(err.value) == f"{path} line 3: {message}"
    bundle, tok = build(path, "data.bad_rows=skip")
    assert answers(tok, bundle.train) == ["A1"] and bundle.stats["n_skipped_bad"] == 1


def test_a_spreadsheet_csv_with_spaced_header_names_and_empty_trailing_lines(build, tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_text("instruction , output\nQ1,A1\nQ2,A2\n,\n , \n")
    bundle, tok = build(path)
    assert answers(tok, bundle.train) == ["A1", "A2"]


@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_array_named_jsonl_is_read_as_json(build, tmp_path, indent):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROWS, indent=indent, ensure_ascii=False), encoding="utf-8")
    bundle, tok = build(path)
    assert answers(tok, bundle.train) == ["Un café au lait.", "Hello."]
    lists = tmp_path / "lists.jsonl"  # JSON lines that are arrays: still a row each, refused as not an object
    lists.write_text('["a", "b"]\n["c", "d"]\n')
    with pytest.raises(DataError, match=r"lists.jsonl line 1: expected a JSON object, got list$"):
        build(lists)


# ------------------------------------------------------------------------------- tables by column
@pytest.mark.parametrize("layout", ["lists", "pandas_columns", "pandas_index", "pandas_split"])
def test_a_json_table_by_column_is_read_as_its_rows(build, tmp_path, layout):
    rows = [*ROWS, {"instruction": "Bye?", "input": "", "output": "Goodbye."}]
    cols = list(rows[0])
    data = {
        "lists": {c: [r[c] for r in rows] for c in cols},  # Dataset.to_dict(), df.to_dict("list")
        "pandas_columns": {c: {str(i): r[c] for i, r in enumerate(rows)} for c in cols},  # df.to_json()
        "pandas_index": {str(i): r for i, r in enumerate(rows)},  # df.to_json(orient="index")
        "pandas_split": {"columns": cols, "index": list(range(len(rows))),  # df.to_json(orient="split")
                         "data": [[r[c] for c in cols] for r in rows]},
    }[layout]
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data))
    bundle, tok = build(path)
    assert answers(tok, bundle.train) == ["Un café au lait.", "Hello.", "Goodbye."]


def test_rows_under_one_key_are_not_taken_for_a_column(build, tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": ROWS}))
    with pytest.raises(DataError, match=r"expected a JSON list of objects, got dict; the rows may be under 'data': "
                                        r"\+data.extra.field=data$"):
        build(path)
    splits = tmp_path / "splits.json"  # rows under split keys, as many in each: not columns either
    splits.write_text(json.dumps({"train": ROWS, "test": ROWS}))
    with pytest.raises(DataError, match=r"the rows may be under 'train' \(or 'test'\): \+data.extra.field=train$"):
        build(splits)
    uneven = tmp_path / "uneven.json"
    uneven.write_text(json.dumps({"instruction": ["a", "b"], "output": ["c"]}))
    with pytest.raises(DataError, match=r"expected a JSON list of objects, got dict"):
        build(uneven)


@pytest.mark.parametrize("column, turns", [
    ("messages", [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]),
    ("conversations", [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]),
])
def test_turns_stored_as_json_text_in_a_csv_cell_are_read(build, tmp_path, column, turns):
    path = tmp_path / "chat.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[column], [json.dumps(turns)], ["not json"]])
    fmt = "chat" if column == "messages" else "sharegpt"
    with pytest.raises(DataError) as err:
        build(path, f"data.format={fmt}")
    assert str(err.value) == (f"{path} line 3: field '{column}': a list of turns is not valid JSON "
                              "(Expecting value, column 1)")
    bundle, tok = build(path, f"data.format={fmt}", "data.bad_rows=skip")
    assert answers(tok, bundle.train) == ["Hello."]


# --------------------------------------------------------------------------------- numbers as text
def test_numbers_where_text_is_read_are_their_text_as_in_the_same_file_saved_as_csv(build, tmp_path):
    # a math set's JSON with numeric answers, and the same rows as CSV (where everything is text)
    rows = [{"instruction": "2 + 40?", "input": 7, "output": 42}, {"instruction": "Half of 1?", "output": 0.5}]
    as_json = tmp_path / "math.jsonl"
    as_json.write_text(jsonl(rows))
    as_csv = tmp_path / "math.csv"
    as_csv.write_text("instruction,input,output\n2 + 40?,7,42\nHalf of 1?,,0.5\n")
    from_json, tok = build(as_json)
    from_csv, _ = build(as_csv)
    assert answers(tok, from_json.train) == ["42", "0.5"]
    assert from_json.train["input_ids"] == from_csv.train["input_ids"]
    assert from_json.train["labels"] == from_csv.train["labels"]
    # a parquet integer column, and a chat message whose content is a number
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instruction": "2 + 40?", "input": "7", "output": 42}]), tmp_path / "m.parquet")
    assert build(tmp_path / "m.parquet")[0].train["labels"] == from_csv.train["labels"][:1]
    chat = tmp_path / "chat.jsonl"
    chat.write_text(jsonl([{"messages": [{"role": "user", "content": "2 + 40?"}, {"role": "assistant", "content": 42}]}]))
    assert answers(tok, build(chat, "data.format=chat")[0].train) == ["42"]


@pytest.mark.parametrize("value, kind", [(True, "bool"), (float("nan"), "float"), (float("inf"), "float")])
def test_booleans_and_non_finite_numbers_are_still_refused(build, tmp_path, value, kind):
    path = tmp_path / "bad.jsonl"
    path.write_text(jsonl([{"instruction": "x", "output": value}]))  # json writes NaN / Infinity, Python reads them
    with pytest.raises(DataError, match=rf"bad.jsonl line 1: field 'output': expected a string, got {kind}$"):
        build(path)


@pytest.mark.parametrize("fmt, turns", [
    ("chat", [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": " "}]),
    ("sharegpt", [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": ""}]),
])
def test_an_empty_trained_answer_is_refused_as_an_empty_alpaca_output_is(build, tmp_path, fmt, turns):
    column, text = ("messages", "content") if fmt == "chat" else ("conversations", "value")
    good = {column: [dict(turns[0]), {**turns[1], text: "Hello."}]}
    path = tmp_path / "rows.jsonl"
    path.write_text(jsonl([good, {column: turns}]))
    with pytest.raises(DataError) as err:
        build(path, f"data.format={fmt}")
    assert str(err.value) == (f"{path} line 2: field '{column}[1].{text}': empty (an answer that is trained needs "
                              "text; loss_weight: 0 masks a turn)")
    bundle, tok = build(path, f"data.format={fmt}", "data.bad_rows=skip")
    assert answers(tok, bundle.train) == ["Hello."] and bundle.stats["n_skipped_bad"] == 1
    # masked, it is only context: kept
    masked = {column: [*good[column], dict(turns[0]), {**turns[1], "loss_weight": 0}]}
    path.write_text(jsonl([masked]))
    assert answers(tok, build(path, f"data.format={fmt}")[0].train) == ["Hello."]


def test_a_developer_turn_is_the_system_turn(build, tmp_path):
    def conversation(role):
        return {"messages": [{"role": role, "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                             {"role": "assistant", "content": "Hello."}]}

    (tmp_path / "dev.jsonl").write_text(jsonl([conversation("developer")]))
    (tmp_path / "sys.jsonl").write_text(jsonl([conversation("system")]))
    dev, tok = build(tmp_path / "dev.jsonl", "data.format=chat")
    sys_, _ = build(tmp_path / "sys.jsonl", "data.format=chat")
    assert dev.train["input_ids"] == sys_.train["input_ids"] and dev.train["labels"] == sys_.train["labels"]
    assert "Be brief." in tok.decode(dev.train["input_ids"][0])


# ---------------------------------------------------------------------------------- local vs Hub
@pytest.mark.parametrize(
    "name", ["nope.json", "data/nope.jsonl", "{tmp}/nope", "./nope", "{tmp}/sub/dir/file"]
)
def test_missing_local_file_is_file_not_found(build, tmp_path, name):
    name = name.format(tmp=tmp_path)
    with pytest.raises(DataError) as err:
        build(name)
    assert str(err.value).startswith(f"{name}: file not found (looked for it relative to ")


def test_hub_name_is_still_a_hub_dataset(build):
    with pytest.raises(DataError) as err:
        build("someone-unknown/some_dataset")
    assert str(err.value).startswith("someone-unknown/some_dataset: cannot load the Hub dataset")


# ------------------------------------------------------------------------------------- columns
def test_columns_syntax_from_the_readme_and_the_plus_form(compose, build, tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"question": "Why?", "answer": "Because."}]))
    for override in (
        "data.columns={instruction: question, output: answer}",
        "+data.columns.instruction=question",
    ):
        extra = [] if "output" in override else ["+data.columns.output=answer"]
        bundle, tok = build(path, override, *extra)
        assert answers(tok, bundle.train) == ["Because."]
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(
        ConfigFailure, match=r"^data.columns.instrution: unknown key; allowed keys: instruction, input"
    ):
        compose("data.columns={instrution: question}")


def test_mapping_error_lists_the_columns_the_file_has(build, tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("question,reply\nWhy?,Because.\n")
    with pytest.raises(DataError) as err:
        build(path, "data.columns={instruction: prompt_text}")
    assert str(err.value) == (
        f"{path} line 2: field \"instruction (column 'prompt_text')\": missing (the row has columns: question, reply)"
    )


# ---------------------------------------------------------------------------------- eval objective
def test_eval_objective_without_validation_data_fails_at_config_time(compose):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure) as err:
        compose("data.val_size=0")
    assert str(err.value).startswith("data.val_size: 0 and no data.validation_path leaves no validation data")
    compose("data.val_size=0", "objective.metric=train_loss")  # fine without an eval objective
    compose("data.val_size=0", "data.validation_path=data/identity.json")


# --------------------------------------------------------------------------------------------- CLI
def cli(*args: str, cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTSWEEP_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "ftsweep", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def test_cli_bad_inputs_one_line_exit_2(cache_dir, tmp_path, monkeypatch, capsys):
    """Each bad input is one ``ftsweep: error:`` line, exit 2, no traceback, nothing written. The first case goes
    through the real ``ftsweep`` process; the others through the same ``ftsweep.cli.main`` in this process (a
    process each only paid the imports again)."""
    from ftsweep.cli import main

    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(jsonl(ROWS).encode("latin-1"))
    glaive = ROOT / "tests" / "data" / "toolcall_sharegpt.json"
    cases = {
        f"data.path={latin}": f"{latin}: not valid utf-8 text at byte",
        "data.path=missing/rows.json": "missing/rows.json: file not found",
        f"data.path={glaive} data.format=sharegpt data.chat_template=chatml "
        "data.special_tokens=['<|im_start|>','<|im_end|>']": (
            "data.chat_template: the chat template 'chatml' has no tool support"
        ),
    }
    monkeypatch.chdir(tmp_path)
    for i, (overrides, start) in enumerate(cases.items()):
        argv = ["inspect", *overrides.split(), NO_PRETRAIN, "--plain"]
        if i == 0:
            out = cli(*argv, cwd=tmp_path, cache_dir=cache_dir)
            code, stderr = out.returncode, out.stderr
        else:
            capsys.readouterr()
            code, stderr = main(argv), capsys.readouterr().err
        lines = stderr.strip().splitlines()
        assert code == 2, stderr
        assert lines[-1].startswith(f"ftsweep: error: {start}"), stderr
        assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.jsonl"]  # nothing written


def test_cli_inspect_shows_the_tool_schema_in_the_prompt(cache_dir, tmp_path, monkeypatch, capsys):
    """``ftsweep inspect`` through ``ftsweep.cli.main`` in this process (as tests/test_inspect.py runs it; the real
    process is test_cli_bad_inputs_one_line_exit_2's first case)."""
    from ftsweep.cli import main

    glaive = ROOT / "tests" / "data" / "toolcall_sharegpt.json"
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main([
        "inspect",
        f"data.path={glaive}",
        "data.format=sharegpt",
        "data.val_size=0",
        "objective.metric=train_loss",
        "data.shuffle=false",
        "data.cutoff_len=1024",
        NO_PRETRAIN,
        "--rows",
        "1",
        "--plain",
    ])
    out = capsys.readouterr()
    assert code == 0, out.err
    row = out.out.split("--- train row 0")[1].split("--- train row 1")[0]
    prompt, trained = row.split("[[", 1)
    assert '"name": "get_exchange_rate"' in prompt and "Environment: ipython" in prompt  # masked, shown
    assert trained.startswith(
        '{"name": "get_exchange_rate", "parameters": {"base": "USD", "target": "EUR"}}<|eot_id|>]]'
    )
