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
    path = _big_jsonl(tmp_path / "big.jsonl")
    size = path.stat().st_size
    d = DataConfig(path=str(path))
    first = _peak(lambda: next(iter(first_records(resolve_source(str(path), "auto"), d))))
    assert first < 2.5 * size, f"telling the format from the first row took {first / size:.1f}x the file's size"


def test_a_jsonl_file_keeps_its_rows_and_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": "1"}\r\n\n  \n{"a": "2\\u2028x"}\n{"a": "3"}')  # CRLF, blank lines, no last newline
    records, _ = load_records(str(path), DataConfig(path=str(path)), BadRows("fail"))
    assert [(r.row["a"], r.where) for r in records] == [
        ("1", f"{path} line 1"), ("2\u2028x", f"{path} line 4"), ("3", f"{path} line 5")]
