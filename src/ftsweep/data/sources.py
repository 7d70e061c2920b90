"""Read rows from files (json, jsonl, csv, parquet) or the Hub, map columns, filter, shuffle, split.

Each row travels with its location (``data/x.jsonl line 7``) so that later stages can name it in a
:class:`~ftsweep.data.errors.DataError`. Rows are plain dicts: the datasets we fine-tune on are small
enough that a list is simpler and faster than ``datasets.map`` for the checks done here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsweep.data.errors import BadRows, DataError
from ftsweep.paths import resolve_data_path

FILE_LOADERS = ("json", "jsonl", "csv", "parquet")
SUFFIX_LOADERS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Record:
    """One source row and where it came from (for error messages)."""

    row: dict[str, Any]
    where: str


@dataclass
class Source:
    """A resolved data source: a local file (``file`` set) or a Hub dataset name."""

    name: str  # as written in config, used in messages
    loader: str  # json | jsonl | csv | parquet | hub
    file: Path | None


def resolve_source(name: str, loader: str) -> Source:
    """Decide how to read ``name``: ``auto`` picks by file extension, and a non-file is a Hub dataset."""
    file = resolve_data_path(name)
    if loader == "auto":
        if file is None or file.is_dir():
            return Source(name, "hub", None)
        kind = SUFFIX_LOADERS.get(file.suffix.lower())
        if kind is None:
            raise DataError(
                name, f"cannot tell the format from the extension {file.suffix!r}; set data.loader"
            )
        return Source(name, kind, file)
    if loader == "hub":
        return Source(name, "hub", None)
    if file is None or not file.is_file():
        raise DataError(name, "file not found")
    return Source(name, loader, file)


def content_hash(source: Source) -> str | None:
    """sha256 of a local file's bytes (None for Hub datasets, which are hashed after loading)."""
    if source.file is None:
        return None
    h = hashlib.sha256()
    with source.file.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- readers
def read_records(source: Source, d: Any) -> Iterator[Record | DataError]:
    """Yield the source's rows in file order; unreadable rows are yielded as errors (policy decides)."""
    readers = {
        "json": _read_json,
        "jsonl": _read_jsonl,
        "csv": _read_csv,
        "parquet": _read_parquet,
        "hub": _read_hub,
    }
    yield from readers[source.loader](source, d)


def _check_object(row: Any, where: str) -> Record | DataError:
    if not isinstance(row, dict):
        return DataError(where, f"expected a JSON object, got {type(row).__name__}")
    return Record(row, where)


def _read_json(source: Source, d: Any) -> Iterator[Record | DataError]:
    text = source.file.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a .json file that is really JSON lines (common in the wild)
            yield from _read_jsonl(source, d)
            return
        raise DataError(
            f"{source.name} line {err.lineno}", f"invalid JSON ({err.msg}, column {err.colno})"
        ) from None
    if not isinstance(data, list):
        raise DataError(source.name, f"expected a JSON list of objects, got {type(data).__name__}")
    for i, row in enumerate(data, start=1):
        yield _check_object(row, f"{source.name} row {i}")


def _read_jsonl(source: Source, d: Any) -> Iterator[Record | DataError]:
    with source.file.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{source.name} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield DataError(where, f"invalid JSON ({err.msg}, column {err.colno})")
                continue
            yield _check_object(row, where)


def _read_csv(source: Source, d: Any) -> Iterator[Record | DataError]:
    # csv cells are strings already; keep empty cells as "" (pandas would turn them into NaN floats).
    with source.file.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield Record(dict(row), f"{source.name} line {reader.line_num}")


def _read_parquet(source: Source, d: Any) -> Iterator[Record | DataError]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(source.file).to_pylist(), start=1):
        yield Record(row, f"{source.name} row {i}")


def _read_hub(source: Source, d: Any) -> Iterator[Record | DataError]:
    from datasets import load_dataset

    try:
        ds = load_dataset(source.name, d.subset, split=d.split, revision=d.revision, **dict(d.extra))
    except Exception as err:
        raise DataError(
            source.name, f"cannot load the Hub dataset ({type(err).__name__}: {err})".splitlines()[0]
        ) from None
    for i, row in enumerate(ds, start=1):
        yield Record(dict(row), f"{source.name} row {i}")


def rows_hash(records: list[Record]) -> str:
    """Content hash of rows loaded from the Hub (their files are not ours to hash)."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps(rec.row, sort_keys=True, default=str, ensure_ascii=False).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------- row preparation
def map_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Rename source columns to canonical fields (``columns`` is canonical -> source column)."""
    if not columns:
        return row
    out = dict(row)
    for canonical, column in columns.items():
        if column in row:
            out[canonical] = row[column]
    return out


def apply_replacements(value: Any, replacements: dict[str, str]) -> Any:
    """Literal replacements in every string, including strings nested in lists / dicts (messages)."""
    if not replacements:
        return value
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [apply_replacements(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: apply_replacements(v, replacements) for k, v in value.items()}
    return value


def load_records(name: str, d: Any, bad: BadRows) -> tuple[list[Record], str]:
    """Read one source into records (columns mapped, replacements applied) and its content hash."""
    source = resolve_source(name, d.loader)
    records: list[Record] = []
    for item in read_records(source, d):
        if isinstance(item, DataError):
            bad.handle(item)
            continue
        row = apply_replacements(map_columns(item.row, dict(d.columns)), dict(d.replacements))
        records.append(Record(row, item.where))
    digest = content_hash(source) or rows_hash(records)
    return records, digest


def filter_empty_input(records: list[Record]) -> tuple[list[Record], int]:
    """Keep rows whose ``input`` is missing or blank (seeds 000/002); returns (kept, number removed)."""
    kept = [r for r in records if not (isinstance(r.row.get("input"), str) and r.row["input"].strip())]
    return kept, len(records) - len(kept)


def select(records: list[Record], *, shuffle: bool, seed: int, max_rows: int | None) -> list[Record]:
    """Seeded shuffle, then the first ``max_rows`` rows."""
    records = list(records)
    if shuffle:
        random.Random(seed).shuffle(records)
    return records[:max_rows] if max_rows else records


def split_validation(records: list[Record], val_size: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Seeded train/validation split: ``val_size`` < 1 is a fraction, >= 1 a number of rows."""
    n_val = round(val_size * len(records)) if val_size < 1 else int(val_size)
    if n_val == 0:
        return records, []
    if n_val >= len(records):
        raise DataError("data.val_size", f"{val_size} leaves no training rows out of {len(records)}")
    order = list(range(len(records)))
    random.Random(seed + 1).shuffle(order)  # independent of the shuffle so max_rows does not bias the split
    val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val
