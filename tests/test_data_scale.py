"""A big data file: what reading it costs in memory and time, beside its size."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from ftsweep.config.data import DataConfig
from ftsweep.data.errors import BadRows
from ftsweep.data.sources import first_records, load_records, resolve_source


def _big_jsonl(path: Path, rows: int = 20_000) -> Path:
    line = {"instruction": "Say the number {i} in words, please.", "input": "", "output": "It is number {i}. " * 8}
    path.write_text("".join(json.dumps({k: v.format(i=i) for k, v in line.items()}) + "\n" for i in range(rows)))
    return path


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_jsonl_file_is_split_into_lines_without_a_copy_of_its_text(tmp_path):
    # io.StringIO(text) copied the whole decoded file into a buffer of 4 bytes a character: a 76 MB file took
    # 300 MB more than its bytes and text, on every cache hit too (the format is told from its first row)
    _first_row_costs_little(_big_jsonl(tmp_path / "big.jsonl"), first_records)


def _first_row_costs_little(path, read) -> None:
    """Reading the first row of ``path`` with ``read(source, data_cfg)`` traces less than 2.5x the file's bytes."""
    size = path.stat().st_size
    first = _peak(lambda: next(iter(read(resolve_source(str(path), "auto"), DataConfig(path=str(path))))))
    assert first < 2.5 * size, f"reading the first row took {first / size:.1f}x the file's size"


def test_a_jsonl_file_keeps_its_rows_and_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": "1"}\r\n\n  \n{"a": "2\\u2028x"}\n{"a": "3"}')  # CRLF, blank lines, no last newline
    records, _ = load_records(str(path), DataConfig(path=str(path)), BadRows("fail"))
    assert [(r.row["a"], r.where) for r in records] == [
        ("1", f"{path} line 1"), ("2\u2028x", f"{path} line 4"), ("3", f"{path} line 5")]


def test_the_rows_read_are_kept_out_of_the_gc_scans_while_they_are_tokenized(tmp_path, compose, monkeypatch):
    # every full collection traversed every row read (dicts and lists of each conversation) again: 13 s of the
    # 41 s CPU that tokenizing 50,000 chat rows took, more than linearly more on 200,000
    import gc

    from ftsweep.data import build_datasets, encode
    from ftsweep.model import load_tokenizer

    rows = [{"messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": f"a {i}"}]}
            for i in range(300)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(f"data.path={path}", "data.format=chat", "data.max_rows=null", "model.tiny.pretrain_steps=0")
    tok = load_tokenizer(cfg)
    seen, tokenize = [], encode.tokenize_segments

    def spy(*args, **kwargs):
        seen.append(gc.get_freeze_count())
        return tokenize(*args, **kwargs)

    monkeypatch.setattr("ftsweep.data.pipeline.tokenize_segments", spy)
    before = gc.get_freeze_count()
    assert before == 0
    build_datasets(cfg, tok)
    assert seen and min(seen) > 3 * len(rows), seen  # each row's dict, its list of turns and its Record
    assert gc.get_freeze_count() == 0  # as it was: the rows read are scanned again (and freed) as before


def test_objects_frozen_before_the_data_is_read_stay_frozen(tmp_path, compose):
    # a warm sweep worker freezes its survivors between trials: reading a trial's data does not undo that
    import gc

    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"q {i}", "output": f"a {i}"}) + "\n" for i in range(20)))
    cfg = compose(f"data.path={path}", "data.max_rows=null", "model.tiny.pretrain_steps=0")
    tok = load_tokenizer(cfg)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        build_datasets(cfg, tok)
        assert gc.get_freeze_count() > frozen // 2  # not unfrozen (a few of them may have been freed)
    finally:
        gc.unfreeze()


def test_a_csv_file_is_split_into_lines_without_a_copy_of_its_text(tmp_path):
    # csv read io.StringIO(text, newline=""): a copy of the whole text at 4 bytes a character (a 65 MB file: 548 MiB)
    from ftsweep.data.sources import read_records

    path = tmp_path / "big.csv"
    path.write_text("instruction,output\n" + "".join(f'"Say {i}, please.",It is number {i}. And more words.\n'
                                                       for i in range(60_000)))
    _first_row_costs_little(path, read_records)


def test_csv_rows_keep_their_line_ends_and_lines(tmp_path):
    # the lines as csv expects them (newline=""): \r\n, \r and \n end a line; a quoted value keeps its own
    path = tmp_path / "rows.csv"
    path.write_bytes(b'instruction,output\r\n"a\r\nb",1\r\nc,2\rd,3\n"e\nf",4')
    records, _ = load_records(str(path), DataConfig(path=str(path)), BadRows("fail"))
    assert [(r.row["instruction"], r.row["output"], r.where) for r in records] == [
        ("a\r\nb", "1", f"{path} line 2"), ("c", "2", f"{path} line 4"), ("d", "3", f"{path} line 5"),
        ("e\nf", "4", f"{path} line 6")]


def test_validation_rows_that_copy_training_rows_are_counted_and_said(tmp_path, compose, capsys, monkeypatch):
    # a file that repeats its rows, split at random: 184 of 200 validation rows were training rows too, silently
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer
    from ftsweep.notices import ENV

    console = tmp_path / ".notices"  # a sweep's console: once, from the trial that tokenizes (not every trial's hit)
    monkeypatch.setenv(ENV, str(console))

    rows = [{"instruction": f"Q {i}", "input": "", "output": f"A {i}"} for i in range(100)]
    path = tmp_path / "twice.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:50]))  # the first 50 rows twice
    cfg = compose(f"data.path={path}", "data.max_rows=null", "data.val_size=30", "model.tiny.pretrain_steps=0",
                  f"cache_dir={tmp_path / 'cache'}")
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    train = {tuple(x) for x in bundle.train["input_ids"]}
    copies = sum(tuple(x) in train for x in bundle.eval["input_ids"])
    assert 0 < copies < 30
    assert bundle.stats["n_eval_copies_of_train"] == copies
    err = capsys.readouterr().err
    assert f"data: warning: {copies} of 30 validation rows are copies of training rows" in err, err
    again = build_datasets(cfg, tok)  # a cache hit says it too
    assert again.stats["cache_hit"] and again.stats["n_eval_copies_of_train"] == copies
    assert f"{copies} of 30 validation rows are copies" in capsys.readouterr().err
    assert console.read_text().count("validation rows are copies of training rows") == 1


def test_no_copies_no_word(tmp_path, compose, capsys):
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    path = tmp_path / "once.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Q {i}", "output": f"A {i}"}) + "\n" for i in range(40)))
    cfg = compose(f"data.path={path}", "data.max_rows=null", "data.val_size=10", "model.tiny.pretrain_steps=0")
    bundle = build_datasets(cfg, load_tokenizer(cfg))
    assert bundle.stats["n_eval_copies_of_train"] == 0 and "copies of training rows" not in capsys.readouterr().err
