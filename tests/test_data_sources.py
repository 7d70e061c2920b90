"""Sources, selection, cache and bad data: build_datasets end to end on small files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from ftsweep.data import DataError, build_datasets
from ftsweep.model import load_tokenizer

NO_PRETRAIN = "model.tiny.pretrain_steps=0"  # the tokenizer does not depend on the tiny model's weights
ROWS = [
    {"instruction": f"Question {i}?", "input": "" if i % 2 else f"ctx {i}", "output": f"Answer {i}."}
    for i in range(20)
]


@pytest.fixture
def tok(compose):
    return load_tokenizer(compose(NO_PRETRAIN))


@pytest.fixture
def cfg_for(compose):
    def _c(path: Path, *overrides: str):
        # train_loss: several builds here have no validation rows (an eval_ objective would refuse them)
        return compose(f"data.path={path}", "data.max_rows=null", "objective.metric=train_loss", NO_PRETRAIN, *overrides)

    return _c


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def outputs(tok, ds) -> list[str]:
    return [tok.decode([t for t in r if t != -100], skip_special_tokens=True) for r in ds["labels"]]


# ---------------------------------------------------------------------------------------- sources
@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "tsv", "parquet", "arrow", "arrow_ipc_file", "save_to_disk",
                                  "save_to_disk_dict"])
def test_file_formats_give_the_same_rows(tmp_path, cfg_for, tok, kind):
    path = tmp_path / f"rows.{kind}"
    if kind.startswith("arrow"):  # before: "cannot tell the format from the extension '.arrow'"
        import pyarrow as pa

        path = tmp_path / "rows.arrow"
        if kind == "arrow":  # the stream format datasets writes (its cache and save_to_disk files)
            from datasets import Dataset

            Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
            path.write_bytes(next((tmp_path / "saved").glob("*.arrow")).read_bytes())
        else:
            with pa.ipc.new_file(path, pa.Table.from_pylist(ROWS).schema) as w:
                w.write_table(pa.Table.from_pylist(ROWS))
        bundle = build_datasets(cfg_for(path, "data.val_size=0", "data.shuffle=false"), tok)
        assert outputs(tok, bundle.train) == [r["output"] for r in ROWS]
        (tmp_path / "folder").mkdir()
        with pytest.raises(DataError, match=r"folder: a folder, not a file: data.loader=arrow reads one file "
                                            r"\(data.loader=auto reads a folder"):  # before: "file not found"
            build_datasets(cfg_for(tmp_path / "folder", "data.loader=arrow"), tok)
        (tmp_path / "bad.arrow").write_bytes(b"not arrow at all")
        with pytest.raises(DataError, match=r"bad.arrow: not an Arrow stream or file, or a truncated one \("):
            build_datasets(cfg_for(tmp_path / "bad.arrow"), tok)
        return
    if kind.startswith("save_to_disk"):  # a folder of datasets' own save_to_disk (a Dataset or a DatasetDict's split)
        from datasets import Dataset, DatasetDict

        ds = Dataset.from_list(ROWS)
        (DatasetDict(train=Dataset.from_list(ROWS[:2]), mine=ds) if kind.endswith("dict") else ds).save_to_disk(path)
        split = ["data.split=mine"] if kind.endswith("dict") else []
        bundle = build_datasets(cfg_for(path, "data.val_size=0", "data.shuffle=false", *split), tok)
        assert outputs(tok, bundle.train) == [r["output"] for r in ROWS]
        if split:
            with pytest.raises(DataError, match=r"rows.save_to_disk_dict: saved dataset has no split 'test' "
                                                r"\(data.split; its splits: train, mine\)$"):
                build_datasets(cfg_for(path, "data.split=test"), tok)
        return
    if kind == "json":
        write_json(path, ROWS)
    elif kind == "jsonl":
        write_jsonl(path, ROWS)
    elif kind in ("csv", "tsv"):  # a tsv cell may hold commas: "Answer 1, then 2."
        rows = [{**r, "output": r["output"].replace(".", ", then 2.")} for r in ROWS] if kind == "tsv" else ROWS
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["instruction", "input", "output"], delimiter="," if kind == "csv" else "\t")
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    bundle = build_datasets(cfg_for(path, "data.val_size=0", "data.shuffle=false"), tok)
    want = [r["output"].replace(".", ", then 2.") if kind == "tsv" else r["output"] for r in ROWS]
    assert outputs(tok, bundle.train) == want


def test_a_saved_dataset_dicts_other_splits_are_named_with_the_folder_to_validate_on(tmp_path, cfg_for, tok, capsys):
    # before: a DatasetDict saved with train and validation splits trained on train and dropped validation silently
    # (a folder of train / validation files said so)
    from datasets import Dataset, DatasetDict

    path = tmp_path / "saved"
    DatasetDict(train=Dataset.from_list(ROWS), validation=Dataset.from_list(ROWS[:2])).save_to_disk(path)
    build_datasets(cfg_for(path, "data.val_size=0", "data.shuffle=false"), tok)
    err = capsys.readouterr().err
    assert (f"ftsweep: data: {path}: the saved dataset's split validation is not trained on (data.split=train); "
            f"to validate on validation: data.validation_path={path / 'validation'}\n") in err
    bundle = build_datasets(cfg_for(path, f"data.validation_path={path / 'validation'}", "data.shuffle=false"), tok)
    assert outputs(tok, bundle.eval) == [r["output"] for r in ROWS[:2]]  # the line's setting reads that split
    assert outputs(tok, bundle.train) == [r["output"] for r in ROWS]
    assert "not trained on" not in capsys.readouterr().err  # said once per folder


@pytest.mark.parametrize("name", ["rows.jsonl.gz", "rows.json.bz2", "rows.csv.xz", "rows.JSONL.GZ"])
def test_compressed_files_are_read_through(tmp_path, cfg_for, tok, name):
    import bz2
    import gzip
    import lzma

    if ".csv" in name:
        text = "instruction,input,output\n" + "".join(f"{r['instruction']},{r['input']},{r['output']}\n" for r in ROWS)
    elif ".jsonl" in name.lower():
        text = "".join(json.dumps(r) + "\n" for r in ROWS)
    else:
        text = json.dumps(ROWS)
    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[Path(name).suffix.lower()]
    path = tmp_path / name
    path.write_bytes(compress(text.encode()))
    bundle = build_datasets(cfg_for(path, "data.val_size=0", "data.shuffle=false"), tok)
    assert outputs(tok, bundle.train) == [r["output"] for r in ROWS]
    path.write_bytes(text.encode())  # named compressed, but it is not: one line naming the file
    with pytest.raises(DataError, match=rf"{re.escape(name)}: not a valid (gzip|bzip2|xz) file \("):
        build_datasets(cfg_for(path, "data.val_size=0"), tok)


def test_json_rows_under_a_key_are_read_with_data_extra_field(tmp_path, cfg_for, tok):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"version": "1", "data": ROWS}))  # SQuAD-style: the rows under one key
    with pytest.raises(DataError, match=r"wrapped.json: expected a JSON list of objects, got dict; the rows may be "
                                        r"under 'data': \+data.extra.field=data$"):
        build_datasets(cfg_for(path), tok)
    bundle = build_datasets(cfg_for(path, "+data.extra.field=data", "data.val_size=0", "data.shuffle=false"), tok)
    assert outputs(tok, bundle.train) == [r["output"] for r in ROWS]
    with pytest.raises(DataError, match=r"wrapped.json: data.extra.field: no key 'rows' at the top of the file "
                                        r"\(it has: version, data\)$"):
        build_datasets(cfg_for(path, "+data.extra.field=rows"), tok)



def test_json_rows_under_a_key_may_be_a_table_by_column(tmp_path, cfg_for, tok):
    # {"data": {"instruction": [...], ...}}: datasets' json loader reads field=data as the table it holds
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"version": "1", "data": {k: [r.get(k) for r in ROWS] for k in ROWS[0]}}))
    with pytest.raises(DataError, match=r"wrapped.json: expected a JSON list of objects, got dict; the rows may be "
                                        r"under 'data': \+data.extra.field=data$"):
        build_datasets(cfg_for(path), tok)
    bundle = build_datasets(cfg_for(path, "+data.extra.field=data", "data.val_size=0", "data.shuffle=false"), tok)
    assert outputs(tok, bundle.train) == [r["output"] for r in ROWS]

def test_a_txt_file_is_a_row_per_line_for_continual_pretraining(tmp_path, cfg_for, tok):
    path = tmp_path / "docs.txt"
    path.write_text("first document line\r\n\n  \nsecond document line\n")  # blank lines skipped, CRLF ok
    bundle = build_datasets(cfg_for(path, "data.format=text", "data.val_size=0", "data.shuffle=false",
                                    "data.packing=false"), tok)
    text = [tok.decode(ids, skip_special_tokens=True) for ids in bundle.train["input_ids"]]
    assert text == ["first document line", "second document line"]
    assert bundle.stats["n_rows"] == 2
    with pytest.raises(DataError, match=r"docs.txt line 1: field 'instruction': missing \(the row has columns: text; "
                                        r"they look like data.format=text\)$"):
        build_datasets(cfg_for(path, "data.val_size=0"), tok)


def test_column_mapping_replacements_and_empty_input_filter(tmp_path, cfg_for, tok):
    rows = [{"q": f"Q{i} NAME", "ctx": "" if i < 3 else "x", "a": f"I am NAME {i}"} for i in range(5)]
    path = write_json(tmp_path / "mapped.json", rows)
    cfg = cfg_for(
        path,
        "data.val_size=0",
        "data.shuffle=false",
        "data.only_empty_input=true",
        "+data.columns={instruction: q, input: ctx, output: a}",
        "+data.replacements={NAME: ftsweep}",
    )
    bundle = build_datasets(cfg, tok)
    assert outputs(tok, bundle.train) == ["I am ftsweep 0", "I am ftsweep 1", "I am ftsweep 2"]
    assert bundle.stats["n_filtered"] == 2


def test_seeded_shuffle_max_rows_and_split(tmp_path, cfg_for, tok):
    path = write_json(tmp_path / "rows.json", ROWS)
    a = build_datasets(cfg_for(path, "data.val_size=0.25", "data.max_rows=12", "data.seed=7"), tok)
    b = build_datasets(cfg_for(path, "data.val_size=0.25", "data.max_rows=12", "data.seed=7"), tok)
    c = build_datasets(cfg_for(path, "data.val_size=0.25", "data.max_rows=12", "data.seed=8"), tok)
    assert (len(a.train), len(a.eval)) == (9, 3)
    assert outputs(tok, a.train) == outputs(tok, b.train) and outputs(tok, a.eval) == outputs(tok, b.eval)
    assert outputs(tok, a.train) != outputs(tok, c.train)
    assert not set(outputs(tok, a.train)) & set(outputs(tok, a.eval))
    assert outputs(tok, a.train) != [r["output"] for r in ROWS[:9]]  # shuffled


def test_separate_validation_file_and_no_eval(tmp_path, cfg_for, tok):
    train = write_json(tmp_path / "train.json", ROWS[:5])
    val = write_json(tmp_path / "val.json", ROWS[5:7])
    bundle = build_datasets(cfg_for(train, f"data.validation_path={val}", "data.shuffle=false"), tok)
    assert outputs(tok, bundle.eval) == ["Answer 5.", "Answer 6."] and len(bundle.train) == 5
    assert build_datasets(cfg_for(train, "data.val_size=0"), tok).eval is None


def test_a_positive_fraction_keeps_one_validation_row_on_a_small_file(tmp_path, cfg_for, tok):
    # 0.1 of 4 rows rounds to 0: the run would train without any validation and an eval objective would
    # find no eval_loss only after the whole run; at least one row is held out instead
    small = build_datasets(cfg_for(write_json(tmp_path / "four.json", ROWS[:4]), "data.val_size=0.1"), tok)
    assert (len(small.train), len(small.eval), small.stats["n_eval"]) == (3, 1, 1)
    one_row = r"^data.val_size: 0.1 leaves no training rows out of 1 \(data.val_size=0 trains on every row, "
    with pytest.raises(DataError, match=one_row + r"without validation\)$"):
        build_datasets(cfg_for(write_json(tmp_path / "one.json", ROWS[:1]), "data.val_size=0.1"), tok)
    # the row is checked first: a bad row is the error named, not the split
    bad_row = write_json(tmp_path / "bad.json", [{"instruction": "Q", "output": True}])
    with pytest.raises(DataError, match=r"bad.json row 1: field 'output'"):
        build_datasets(cfg_for(bad_row, "data.val_size=0.1"), tok)

def test_stats_are_numbers(tmp_path, cfg_for, tok):
    bundle = build_datasets(cfg_for(write_json(tmp_path / "rows.json", ROWS)), tok)
    # the rows behind three counts (inspect; the generation objective's cut references)
    listed = {"dropped_where", "call_text_dropped_where", "eval_answers_cut_where", "where_names"}
    assert all(isinstance(v, (int, float, bool)) for k, v in bundle.stats.items() if k not in listed)
    assert bundle.stats["dropped_where"] == [] and bundle.stats["call_text_dropped_where"] == []
    for key in (
        "n_train",
        "n_eval",
        "n_truncated",
        "n_dropped",
        "n_skipped_bad",
        "padding_fraction",
        "cache_hit",
    ):
        assert key in bundle.stats
    assert 0 < bundle.stats["padding_fraction"] < 1


# ------------------------------------------------------------------------------------------ cache
def test_cache_hit_on_second_run(tmp_path, cfg_for, tok, capsys, monkeypatch):
    path = write_json(tmp_path / "cached.json", ROWS)
    fresh = f"cache_dir={tmp_path / 'cache'}"  # the session cache may already hold this entry
    first = build_datasets(cfg_for(path, "data.cutoff_len=500", fresh), tok)
    assert "cache miss" in capsys.readouterr().err
    import ftsweep.data.pipeline as data_mod

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized on a cache hit")

    monkeypatch.setattr(data_mod, "_tokenize_all", no_tokenizing)
    second = build_datasets(cfg_for(path, "data.cutoff_len=500", fresh), tok)
    assert "cache hit" in capsys.readouterr().err
    assert second.stats["cache_hit"] is True and first.stats["cache_hit"] is False
    assert second.fingerprint == first.fingerprint
    assert (
        second.train["input_ids"] == first.train["input_ids"]
        and second.train["labels"] == first.train["labels"]
    )
    # token ids and labels are stored as 4-byte integers (half the cache's bytes of int64), read back as ints
    for column in ("input_ids", "labels"):
        assert second.train.features[column].feature.dtype == "int32"
    assert isinstance(second.train[0]["labels"][0], int) and -100 in second.train["labels"][0]
    # Anything that changes the tokens changes the fingerprint: content, options, tokenizer.
    monkeypatch.undo()
    assert build_datasets(cfg_for(path, "data.cutoff_len=501", fresh), tok).fingerprint != first.fingerprint
    write_json(path, ROWS[:-1])
    assert build_datasets(cfg_for(path, "data.cutoff_len=500", fresh), tok).fingerprint != first.fingerprint


@pytest.mark.parametrize(("name", "text", "hint"), [
    ("semi.csv", "instruction;input;output\nhi;;yo\n", r"""separated by ';', not ',' \(read it with "\+data.extra.sep=';'"\)"""),
    ("tabs.csv", "instruction\tinput\toutput\nhi\t\tyo\n", r"separated by '\\t', not ',' \(data.loader=tsv\)"),
    ("commas.tsv", "instruction,input,output\nhi,,yo\n", r"separated by ',', not '\\t' \(data.loader=csv\)"),
])
def test_a_csv_with_another_separator_is_named_at_its_header(tmp_path, cfg_for, tok, name, text, hint):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{name} line 1: the header is one column .*: the file is {hint}$"):
        build_datasets(cfg_for(path), tok)


def test_a_spreadsheets_semicolon_export_reads_with_data_extra_sep(tmp_path, cfg_for, tok):
    """``+data.extra.sep=';'`` (pandas' / datasets' name; ``delimiter`` too): the rows of the comma-separated file."""
    semi = tmp_path / "semi.csv"
    semi.write_text("instruction;input;output\r\nSay hi;;Hi, there.\r\nSay yo;;Yo\r\n")
    commas = tmp_path / "commas.csv"
    commas.write_text('instruction,input,output\nSay hi,,"Hi, there."\nSay yo,,Yo\n')
    opts = ("data.val_size=0", "data.shuffle=false")
    a = build_datasets(cfg_for(semi, *opts, "+data.extra.sep=';'"), tok)
    b = build_datasets(cfg_for(commas, *opts), tok)
    assert outputs(tok, a.train) == outputs(tok, b.train) == ["Hi, there.", "Yo"]
    assert outputs(tok, build_datasets(cfg_for(semi, *opts, "+data.extra.delimiter=';'"), tok).train) == ["Hi, there.", "Yo"]
    with pytest.raises(DataError, match=r"data.extra.sep: one character that separates the cells \(got ';;'\)"):
        build_datasets(cfg_for(semi, *opts, "+data.extra.sep=';;'"), tok)


def test_the_same_bytes_read_by_another_loader_are_not_a_cache_hit(tmp_path, cfg_for, tok):
    # rows.jsonl and a copy named rows.txt: the jsonl rows' text vs each whole JSON line as text
    docs = [{"text": f"document number {i}"} for i in range(6)]
    jsonl = write_jsonl(tmp_path / "rows.jsonl", docs)
    txt = tmp_path / "rows.txt"
    txt.write_bytes(jsonl.read_bytes())
    opts = ("data.format=text", "data.packing=false", "data.val_size=0", "data.shuffle=false", f"cache_dir={tmp_path / 'c'}")
    a = build_datasets(cfg_for(jsonl, *opts), tok)
    b = build_datasets(cfg_for(txt, *opts), tok)
    assert b.stats["cache_hit"] is False and b.fingerprint != a.fingerprint
    assert tok.decode(a.train[0]["input_ids"], skip_special_tokens=True) == "document number 0"
    assert tok.decode(b.train[0]["input_ids"], skip_special_tokens=True) == json.dumps(docs[0])


# --------------------------------------------------------------------------------------- bad data
BAD_CASES = {
    "missing column": (
        [{"instruction": "x", "input": ""}],
        ("row 1: field 'output': missing (the row has columns: instruction, input); if one of them is the output, "
         "map it: data.columns.output=<column>"),
    ),
    "non-string": (
        [{"instruction": "x", "input": "", "output": True}],
        "row 1: field 'output': expected a string, got bool",
    ),
    "empty instruction": (
        [{"instruction": " ", "input": "", "output": "y"}],
        "row 1: field 'instruction': empty",
    ),
    "empty output": ([{"instruction": "x", "input": "", "output": ""}], "row 1: field 'output': empty"),
    # the column is there with a JSON null (not "missing": the row does have it)
    "null output": ([{"instruction": "x", "input": None, "output": None}], "row 1: field 'output': null (a text is needed here)"),
    "not an object": ([["x", "y"]], "row 1: expected a JSON object, got list"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_alpaca_rows_fail_with_one_line(tmp_path, cfg_for, tok, case):
    rows, message = BAD_CASES[case]
    path = write_json(tmp_path / "bad.json", [ROWS[0], *rows])
    with pytest.raises(DataError) as err:
        build_datasets(cfg_for(path, "data.val_size=0", "data.shuffle=false"), tok)
    assert str(err.value) == f"{path} {message.replace('row 1', 'row 2')}"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", ["alpaca", "grpo"])
def test_the_first_bad_row_of_the_file_is_named_whatever_order_rows_are_encoded_in(tmp_path, cfg_for, tok, fmt):
    # rows are shuffled and split before they are encoded; a user fixes the file from the top
    bad = {4, 7, 10, 13, 16, 19, 22, 25, 28}
    rows = [{"instruction": f"q{n}", "input": "", "output": True if n in bad else f"a{n}"} for n in range(30)]
    path = write_json(tmp_path / "bad.json", rows)
    stage = ["stage=grpo"] if fmt == "grpo" else []
    cfg = cfg_for(path, "data.val_size=0.2", *stage)
    with pytest.raises(DataError, match=r"bad.json row 5: field 'output': expected a string, got bool$"):
        if fmt == "grpo":
            from ftsweep.data.preference import build_prompt_datasets

            build_prompt_datasets(cfg, tok)
        else:
            build_datasets(cfg, tok)
    # only rows the run uses count: with max_rows the first bad row among the selected ones is named
    cfg = cfg_for(path, "data.val_size=0.2", "data.max_rows=10", *stage)
    from ftsweep.data.sources import select

    picked = sorted(int(r["instruction"][1:]) for r in select(rows, shuffle=True, seed=cfg.data.seed, max_rows=10))
    first = min(n for n in picked if n in bad)
    assert first != 4
    with pytest.raises(DataError, match=rf"bad.json row {first + 1}: field 'output'"):
        build_datasets(cfg, tok)
    assert build_datasets(cfg_for(path, "data.val_size=0.2", "data.bad_rows=skip"), tok).stats["n_skipped_bad"] == len(bad)


def test_mapped_column_is_named(tmp_path, cfg_for, tok):
    path = write_json(tmp_path / "bad.json", [{"instruction": "x", "answer": False}])
    with pytest.raises(
        DataError, match=r"row 1: field \"output \(column 'answer'\)\": expected a string, got bool"
    ):
        build_datasets(cfg_for(path, "data.val_size=0", "+data.columns={output: answer}"), tok)


def test_invalid_json_line(tmp_path, cfg_for, tok):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], '{"instruction": "x", oops}', ROWS[1]])
    with pytest.raises(DataError) as err:
        build_datasets(cfg_for(path, "data.val_size=0"), tok)
    assert str(err.value).startswith(f"{path} line 2: invalid JSON (Expecting property name")


CHAT_BAD = {
    "unknown role": (
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]},
        (
            "line 2: field 'messages[1].role': unknown role 'bot' (allowed: system, developer, user, human, assistant, gpt, "
            "function_call, tool_call, observation, tool, function)"
        ),
    ),
    "non-string content": (
        {"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "yo"}]},
        "line 2: field 'messages[0].content[0]': content part of type 'str' is not supported (text parts only)",
    ),
    "missing messages": (
        {"text": "x"}, "line 2: field 'messages': missing (the row has columns: text; they look like data.format=text)"),
    "another format": ({"prompt": "p", "completion": "c"}, (
        "line 2: field 'messages': missing (the row has columns: prompt, completion; they look like "
        "data.format=prompt_completion)")),
}
GOOD_CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("case", list(CHAT_BAD))
def test_bad_chat_rows(tmp_path, cfg_for, tok, case):
    row, message = CHAT_BAD[case]
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_CHAT, row])
    with pytest.raises(DataError) as err:
        build_datasets(cfg_for(path, "data.format=chat", "data.val_size=0", "data.shuffle=false"), tok)
    assert str(err.value) == f"{path} {message}"


def test_chat_template_that_cannot_render(tmp_path, cfg_for, tok):
    tok.chat_template = (
        "{% if messages|length > 2 %}{{ raise_exception('only one exchange allowed') }}{% endif %}x"
    )
    long = {"messages": GOOD_CHAT["messages"] * 2}
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_CHAT, long])
    with pytest.raises(DataError) as err:
        build_datasets(cfg_for(path, "data.format=chat", "data.val_size=0", "data.shuffle=false"), tok)
    assert str(err.value) == (
        f"{path} line 2: field 'messages': the chat template cannot render this conversation: only one exchange allowed"
    )


def test_skip_policy_counts_bad_rows(tmp_path, cfg_for, tok):
    rows = [ROWS[0], '{"broken', json.dumps({"instruction": "x", "output": True}), ROWS[1]]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    bundle = build_datasets(cfg_for(path, "data.val_size=0", "data.shuffle=false", "data.bad_rows=skip"), tok)
    assert outputs(tok, bundle.train) == ["Answer 0.", "Answer 1."]
    assert bundle.stats["n_skipped_bad"] == 2


def test_failure_leaves_nothing_in_the_cache(tmp_path, compose, tok):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"instruction": "x", "output": True}])
    cache = tmp_path / "cache"
    cfg = compose(f"data.path={path}", f"cache_dir={cache}", "data.val_size=0", "objective.metric=train_loss", NO_PRETRAIN)
    with pytest.raises(DataError):
        build_datasets(cfg, tok)
    datasets_dir = cache / "datasets"
    assert not datasets_dir.exists() or list(datasets_dir.iterdir()) == []


def test_missing_file_and_unknown_extension(tmp_path, cfg_for, tok):
    with pytest.raises(DataError, match=r"nope\.json: file not found"):
        build_datasets(cfg_for(tmp_path / "nope.json", "data.loader=json"), tok)
    with pytest.raises(DataError, match=r"file not found .*; a pattern is not expanded: for several files give "
                                        f"their folder, data.path={re.escape(str(tmp_path / 'shards'))}$"):
        build_datasets(cfg_for(tmp_path / "shards" / "*.jsonl"), tok)
    odd = tmp_path / "rows.xml"
    odd.write_text("x")
    with pytest.raises(DataError, match=r"cannot tell the format from the extension '\.xml'"):
        build_datasets(cfg_for(odd), tok)
    odd = tmp_path / "rows.parquet.gz"  # parquet compresses inside; a compressed parquet file is not read
    odd.write_bytes(b"x")
    with pytest.raises(DataError, match=r"rows\.parquet\.gz: a compressed parquet file \(\.gz\): parquet compresses "
                                        r"inside the file; decompress it first$"):
        build_datasets(cfg_for(odd), tok)
    with pytest.raises(DataError, match=r"rows\.parquet\.gz: a compressed parquet file"):  # read as parquet anyway
        build_datasets(cfg_for(odd, "data.loader=parquet"), tok)
    odd = tmp_path / "rows.jsonl.zst"
    odd.write_bytes(b"x")
    with pytest.raises(DataError, match=r"rows\.jsonl\.zst: '\.zst' compression is not read \(gzip, bzip2 and xz are\)"):
        build_datasets(cfg_for(odd), tok)
    bad = tmp_path / "rows.parquet"  # not parquet inside (or truncated): one line, not pyarrow's traceback
    bad.write_text('{"instruction": "q", "output": "a"}\n')
    for overrides in ([], ["data.format=alpaca"]):
        with pytest.raises(DataError, match=r"rows\.parquet: not a parquet file, or a truncated one \(ArrowInvalid: "):
            build_datasets(cfg_for(bad, *overrides), tok)


def test_cache_hit_padding_from_stored_lengths(tmp_path, cfg_for, tok, monkeypatch):
    from ftsweep.data.packing import padding_fraction

    path = write_json(tmp_path / "pad.json", ROWS)
    fresh = f"cache_dir={tmp_path / 'cache'}"
    cold = build_datasets(cfg_for(path, fresh, "trainer.per_device_train_batch_size=4"), tok)
    lengths = [len(x) for x in cold.train["input_ids"]]
    assert cold.stats["padding_fraction"] == round(padding_fraction(lengths, 4), 4)

    # A hit with another batch size computes the padding from lengths.json, never from the rows.
    import datasets

    def no_row_reads(self, key):
        raise AssertionError(f"rows read on a cache hit ({key!r})")

    monkeypatch.setattr(datasets.Dataset, "__getitem__", no_row_reads)
    hit = build_datasets(cfg_for(path, fresh, "trainer.per_device_train_batch_size=2"), tok)
    monkeypatch.undo()
    assert hit.stats["cache_hit"] is True
    assert hit.stats["padding_fraction"] == round(padding_fraction(lengths, 2), 4)
    assert hit.stats["padding_fraction"] != cold.stats["padding_fraction"]


def test_a_name_neither_local_nor_on_the_hub_says_no_local_file_or_folder_has_it(tmp_path, cfg_for, tok, monkeypatch):
    # data.path=my_rows (a folder named without ./, a typo): read as a Hub name; offline, the error must not read as
    # a network problem alone
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'my_rows' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        build_datasets(cfg_for("my_rows"), tok)
    assert str(err.value) == (f"my_rows: no local file or folder of that name (relative paths are read from {tmp_path}),"
                              " and cannot load the Hub dataset (ConnectionError: Couldn't reach 'my_rows' on the Hub "
                              "(LocalEntryNotFoundError))")


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_a_file_of_text_and_message_prompts_is_refused_naming_a_row_of_each(tmp_path, cfg_for, tok, stage):
    """A prompt_completion file whose prompts were text in some rows and messages in others trained the first
    through no template and the others through the chat template, without a word (TRL's loaders refuse such a
    column); bad_rows=skip does not choose a kind for the file either."""
    from ftsweep.data.preference import build_prompt_datasets

    rows = [{"prompt": f"What is {i}+{i}?", "completion": str(2 * i)} for i in range(6)]
    rows.insert(3, {"question": [{"role": "user", "content": "What is 9+9?"}], "completion": "18"})
    rows = [{"question": r.pop("prompt"), **r} if "prompt" in r else r for r in rows]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    build = build_prompt_datasets if stage == "grpo" else build_datasets
    for policy in ("fail", "skip"):
        cfg = cfg_for(path, "data.format=prompt_completion", "+data.columns={prompt: question}", "data.val_size=0",
                      f"data.bad_rows={policy}")
        with pytest.raises(DataError) as err:
            build(cfg, tok)
        assert str(err.value) == (f"{path} line 4: field \"prompt (column 'question')\": messages where {path} line 1 "
                                  "has text: a file's prompts are all messages (rendered by the chat template) or all "
                                  "text (used as written), as in TRL")
    del rows[3]
    assert len(build(cfg_for(write_jsonl(tmp_path / "text.jsonl", rows), "data.format=prompt_completion",
                             "+data.columns={prompt: question}", "data.val_size=0"), tok).train) == 6


def test_a_data_folders_rows_are_named_by_its_own_files_also_on_a_cache_hit(tmp_path, cfg_for, tok):
    # before: a copy of a shard folder (same rows) hit the first folder's cache entry and named its rows by the
    # first folder's files (inspect --dump, dropped rows, predictions.jsonl), a folder the run never read
    import shutil

    fresh = f"cache_dir={tmp_path / 'cache'}"
    (tmp_path / "a").mkdir()
    write_jsonl(tmp_path / "a" / "part-00.jsonl", ROWS[:10])
    write_jsonl(tmp_path / "a" / "part-01.jsonl", ROWS[10:])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    opts = ("data.val_size=0", "data.shuffle=false", fresh)
    first = build_datasets(cfg_for(tmp_path / "a", *opts), tok)
    assert first.where("train")[11] == f"{tmp_path / 'a' / 'part-01.jsonl'} line 2"
    second = build_datasets(cfg_for(tmp_path / "b", *opts), tok)
    assert second.stats["cache_hit"] and second.fingerprint == first.fingerprint  # the same rows: tokens reused
    assert second.where("train")[11] == f"{tmp_path / 'b' / 'part-01.jsonl'} line 2"
    (tmp_path / "b" / "part-01.jsonl").rename(tmp_path / "b" / "part-02.jsonl")  # the same rows in other files
    assert build_datasets(cfg_for(tmp_path / "b", *opts), tok).where("train")[11] == \
        f"{tmp_path / 'b' / 'part-02.jsonl'} line 2"


@pytest.mark.parametrize("kind", ["folder", "save_to_disk_dict"])
def test_a_validation_folder_is_read_at_its_validation_split_not_the_training_one(tmp_path, cfg_for, tok, kind):
    # before: data.validation_path=<a folder of train.jsonl + validation.jsonl, or a saved DatasetDict> read its
    # data.split=train rows as the validation rows (and said that its validation split was "not trained on"); the
    # same folder as data.path and data.validation_path validated on the training rows
    from datasets import Dataset, DatasetDict

    path = tmp_path / "d"
    if kind == "folder":
        path.mkdir()
        write_jsonl(path / "train.jsonl", ROWS[:15])
        write_jsonl(path / "validation.jsonl", ROWS[15:])
    else:
        DatasetDict(train=Dataset.from_list(ROWS[:15]), test=Dataset.from_list(ROWS[15:])).save_to_disk(path)
    fresh = f"cache_dir={tmp_path / 'cache'}"
    want = [r["output"] for r in ROWS[15:]]
    other = write_jsonl(tmp_path / "other.jsonl", ROWS[:15])
    bundle = build_datasets(cfg_for(other, f"data.validation_path={path}", "data.shuffle=false", fresh), tok)
    assert outputs(tok, bundle.eval) == want
    bundle = build_datasets(cfg_for(path, f"data.validation_path={path}", "data.shuffle=false", fresh), tok)
    assert outputs(tok, bundle.train) == [r["output"] for r in ROWS[:15]]
    assert outputs(tok, bundle.eval) == want
    only_train = tmp_path / "t"
    DatasetDict(train=Dataset.from_list(ROWS), unsupervised=Dataset.from_list(ROWS)).save_to_disk(only_train)
    with pytest.raises(DataError, match=rf"^{re.escape(str(only_train))}: the saved dataset has no validation split "
                                        r"\(validation, valid, val, dev, eval or test; its splits: train, "
                                        r"unsupervised\)$"):
        build_datasets(cfg_for(other, f"data.validation_path={only_train}", fresh), tok)


def test_a_shell_variable_left_in_a_data_path_says_how_to_read_the_environment(tmp_path, cfg_for, tok):
    # before: "$HOME/rows.jsonl: file not found (looked for it relative to ...)", as if the variable were expanded
    # (a data.path in a YAML file or a quoted override keeps its $VAR: neither Hydra nor ftsweep expands it)
    with pytest.raises(DataError, match=r"^\$DATA_DIR/rows\.jsonl: file not found \(looked for it relative to .*\); "
                                        r"\$DATA_DIR is not expanded: write \$\{oc\.env:DATA_DIR\}$"):
        build_datasets(cfg_for("'$DATA_DIR/rows.jsonl'"), tok)


@pytest.mark.parametrize("name", ["empty.json", "empty.jsonl", "empty.csv", "empty.jsonl.gz"])
def test_a_file_of_only_a_byte_order_mark_is_an_empty_file(tmp_path, cfg_for, tok, name):
    # before: an empty file saved by Notepad as "UTF-8 with BOM" (3 bytes) was "empty.json line 1: invalid JSON
    # (Expecting value, column 1)" rather than the empty file it is
    import gzip

    data = b"\xef\xbb\xbf\r\n"
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / name))}: the file is empty \(no rows\)$"):
        build_datasets(cfg_for(tmp_path / name), tok)
