"""Read rows from files (json, jsonl, csv, tsv, parquet, arrow, txt; all but parquet and arrow also gzip, bzip2 or xz
compressed) or the Hub, map columns, filter, shuffle, split.

Each row travels with its location (``data/x.jsonl line 7``) so that later stages can name it in a
:class:`~ftsweep.data.errors.DataError`. Rows are plain dicts: the datasets we fine-tune on are small
enough that a list is simpler and faster than ``datasets.map`` for the checks done here.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import json
import lzma
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsweep.data.errors import BadRows, DataError
from ftsweep.paths import DATA_FILE_SUFFIXES, resolve_data_path

SUFFIX_LOADERS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
                  ".arrow": "arrow", ".txt": "text"}
BINARY_LOADERS = ("parquet", "arrow")  # formats that compress inside the file (never read through gzip & co)
DECOMPRESS = {".gz": (gzip.decompress, "gzip"), ".bz2": (bz2.decompress, "bzip2"), ".xz": (lzma.decompress, "xz")}


@dataclass
class Record:
    """One source row and where it came from (for error messages)."""

    row: dict[str, Any]
    where: str
    # (entry, row) of a dataset_info.json list, whose entries' rows are shuffled before they are mixed; () otherwise
    order: tuple[int, ...] = ()


@dataclass
class Source:
    """A resolved data source: a local file (``file`` set) or a Hub dataset name."""

    name: str  # as written in config, used in messages
    loader: str  # json | jsonl | csv | tsv | parquet | text | hub
    file: Path | None
    data: bytes | None = field(default=None, repr=False)  # the file's bytes, decompressed, once read
    validation: bool = False  # read as data.validation_path: a folder's (or saved DatasetDict's) validation split


def resolve_source(name: str, loader: str) -> Source:
    """Decide how to read ``name``: ``auto`` picks by file extension, and a non-file is a Hub dataset; several
    entries of LLaMA-Factory's dataset_info.json (``data.dataset=a,b``) are read one after the other."""
    from ftsweep.data.dataset_info import is_mix

    if is_mix(name):
        return Source(name, "mix", None)
    file = resolve_data_path(name)
    if file is None and loader != "hub" and looks_like_local_path(name):
        hint = ("; a pattern is not expanded: for several files give their folder, "
                f"data.path={Path(name).parent}" if any(c in name for c in "*?[") else "")
        if variable := re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", name):  # a shell's $HOME left in a YAML value
            hint += f"; {variable.group(0)} is not expanded: write ${{oc.env:{variable.group(1)}}}"
        from ftsweep.paths import launch_dir

        raise DataError(name, f"file not found (looked for it relative to {launch_dir()}){hint}")
    if loader == "auto":
        if file is None or file.is_dir():
            return Source(name, "hub", None)
        suffixes = [x.lower() for x in file.suffixes]
        inner = suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in DECOMPRESS else suffixes[-1] if suffixes else ""
        kind = SUFFIX_LOADERS.get(inner)
        if inner in SPREADSHEETS:  # no loader reads a workbook: its sheet is one CSV away
            raise DataError(name, f"a spreadsheet workbook ({inner!r}) is not read: save the sheet as CSV (UTF-8) "
                                  "and give that file")
        if kind in BINARY_LOADERS and inner != suffixes[-1]:
            raise DataError(name, f"a compressed {kind} file ({suffixes[-1]}): {kind} compresses inside the file; "
                                  "decompress it first")
        if kind is None and len(suffixes) > 1 and SUFFIX_LOADERS.get(suffixes[-2]):  # .zst, .zip, .7z, ...
            raise DataError(name, f"{suffixes[-1]!r} compression is not read (gzip, bzip2 and xz are): decompress "
                                  "the file, or recompress it as .gz")
        if kind is None:
            raise DataError(
                name, f"cannot tell the format from the extension {''.join(file.suffixes[-2:])!r}; set data.loader "
                      f"({', '.join(sorted(set(SUFFIX_LOADERS.values())))})"
            )
        return Source(name, kind, file)
    if loader == "hub":
        return Source(name, "hub", None)
    if file is not None and file.is_dir():
        raise DataError(name, f"a folder, not a file: data.loader={loader} reads one file (data.loader=auto reads a "
                              "folder of data files, or one written by save_to_disk)")
    if file is None or not file.is_file():
        raise DataError(name, "file not found")
    return Source(name, loader, file)


SPREADSHEETS = (".xlsx", ".xls", ".xlsm", ".ods", ".numbers")


def looks_like_local_path(name: str) -> bool:
    """True when ``name`` can only mean a local file: a data-file extension, an absolute or ./ ~ path,
    a backslash, more parts than a Hub "owner/name", or a parent folder that exists here."""
    p = Path(name).expanduser()
    if name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or p.is_absolute():
        return True
    if p.suffix.lower() in DATA_FILE_SUFFIXES or len(p.parts) > 2:
        return True
    return len(p.parts) == 2 and p.parent.is_dir()


def content_hash(source: Source) -> str | None:
    """sha256 of a local file's bytes (None for Hub datasets, which are hashed after loading); for a list of
    dataset_info.json entries, of the registry's bytes and every entry's file (None when one is a Hub dataset)."""
    if source.loader == "mix":
        from ftsweep.data.dataset_info import mix_files

        files = mix_files(source.name)
        digests = [content_hash(resolve_source(*f)) for f in files]
        if any(x is None for x in digests):
            return None
        return hashlib.sha256("\n".join(x for x in digests if x).encode()).hexdigest()
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
        "tsv": _read_csv,
        "parquet": _read_parquet,
        "arrow": _read_arrow,
        "text": _read_lines,
        "hub": _read_hub,
        "mix": _read_mix,
    }
    if source.file is not None and source.file.is_file() and _blank(file_bytes(source)):
        raise DataError(source.name, "the file is empty (no rows)")
    yield from readers[source.loader](source, d)


def _blank(data: bytes) -> bool:
    """``not data.strip()``, without the copy of a large file that ``strip`` makes; a UTF-8 byte-order mark alone (an
    empty file saved by Notepad as "UTF-8 with BOM") is blank too."""
    return _BLANK.match(data) is not None


_BLANK = re.compile(rb"(?:\xef\xbb\xbf)?\s*\Z")


def _skip_space(text: str, start: int = 0) -> int:
    """The index of the first character of ``text`` from ``start`` that ``str.strip`` keeps (``text.lstrip()``
    copies the whole text to find it)."""
    while start < len(text) and text[start].isspace():
        start += 1
    return start


def first_records(source: Source, d: Any) -> Iterator[Record | DataError]:
    """The source's rows from its start, as :func:`read_records` yields them, reading no more than needed where the
    format allows: a parquet file's first batch, a JSON array's first object (the rest unparsed). For telling the
    format by the first row (``data.format=auto``) without a second full parse of a large file."""
    if source.loader == "parquet" and source.file is not None:
        rows = next(_parquet_file(source).iter_batches(batch_size=64), None)
        if rows is not None and rows.num_rows:
            for i, row in enumerate(rows.to_pylist(), start=1):
                yield Record(row, f"{source.name} row {i}")
            return
    elif source.loader in ("json", "jsonl") and source.file is not None and "field" not in dict(d.extra):
        text = read_text(source, d)
        start = _skip_space(text)
        if text.startswith("[", start):
            try:
                row, _ = json.JSONDecoder().raw_decode(text, _skip_space(text, start + 1))
            except ValueError:  # not what it seemed: the full reading says what is wrong
                row = None
            if isinstance(row, dict):
                yield Record(row, f"{source.name} row 1")
                return
        elif source.loader == "jsonl" and not _blank(file_bytes(source)):  # lines parsed as needed: no second text
            yield from _jsonl_rows(source, text)
            return
        del text
    yield from read_records(source, d)


ALPACA_LAYOUT = ("instruction", "input", "output", "history")  # what chat.alpaca_turns reads


def _read_mix(source: Source, d: Any) -> Iterator[Record | DataError]:
    """The rows of several dataset_info.json entries in the order listed, each read with its own file, columns and
    ``num_samples`` (a seeded selection, as ``data.max_rows``); Alpaca rows listed with ShareGPT ones become chat
    turns (:func:`ftsweep.data.chat.alpaca_turns`), as LLaMA-Factory aligns every dataset of a list."""
    from ftsweep.data.chat import alpaca_turns
    from ftsweep.data.dataset_info import mix_parts

    parts: list[list[Record]] = []
    for k, (part, part_format, num_samples) in enumerate(mix_parts(source.name, d)):
        columns, records = column_map(part), []
        for i, item in enumerate(read_records(resolve_source(part.path, part.loader), part)):
            if isinstance(item, DataError):
                yield item
                continue
            row = map_columns(item.row, columns)
            if d.format == "sharegpt" and part_format != "sharegpt":  # the rows are rendered as ShareGPT turns
                try:
                    turns = alpaca_turns(row, item.where, part)
                except DataError as err:
                    yield err
                    continue
                # the Alpaca layout's fields become the turns; the others stay (system, tools, KTO's label)
                row = {"conversations": turns, **{k: v for k, v in row.items() if k not in ALPACA_LAYOUT}}
            records.append(Record(row, item.where, (k, i)))
        parts.append(select(records, shuffle=d.shuffle, seed=d.seed, max_rows=num_samples))
    # the training list is mixed as data.mix_strategy says; a validation list keeps every row once
    training = source.name == str(d.path)
    yield from mix(parts, d.mix_strategy if training else "concat", d.interleave_probs, d.seed)


def mix(parts: list[list[Record]], strategy: str, probs: list[float] | None, seed: int) -> list[Record]:
    """The rows of several entries as LLaMA-Factory's ``mix_strategy`` mixes them, with datasets'
    ``interleave_datasets`` as it does: ``concat`` (every row, entry after entry), ``interleave_under`` (a row of
    each entry in turn, or of an entry drawn with ``probs``, until the first entry runs out) or ``interleave_over``
    (until every entry has run out once: shorter entries start again)."""
    if strategy == "concat" or len(parts) < 2:
        return [r for rows in parts for r in rows]
    from datasets import Dataset, interleave_datasets

    if not all(parts):  # an empty entry ends interleave_under at once, and interleave_over never
        raise DataError("data.mix_strategy", f"{strategy} needs rows in every entry of the list; entry "
                                             f"{[len(p) for p in parts].index(0) + 1} has none (concat keeps the others)")
    index = [Dataset.from_dict({"part": [k] * len(rows), "row": list(range(len(rows)))}) for k, rows in enumerate(parts)]
    total = sum(probs) if probs else 1.0
    mixed = interleave_datasets(index, probabilities=[p / total for p in probs] if probs else None, seed=seed,
                                stopping_strategy="first_exhausted" if strategy == "interleave_under" else "all_exhausted")
    return [parts[k][i] for k, i in zip(mixed["part"], mixed["row"], strict=True)]


def _check_object(row: Any, where: str) -> Record | DataError:
    if not isinstance(row, dict):
        return DataError(where, f"expected a JSON object, got {type(row).__name__}")
    return Record(row, where)


def file_bytes(source: Source) -> bytes:
    """The file's bytes, decompressed when its extension says gzip, bzip2 or xz (a damaged file is one line);
    read once per source (the empty-file check and the reader share them)."""
    if source.data is None:
        raw = source.file.read_bytes()
        if source.loader not in BINARY_LOADERS and source.file.suffix.lower() in DECOMPRESS:
            decompress, what = DECOMPRESS[source.file.suffix.lower()]
            try:
                raw = decompress(raw)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as err:
                raise DataError(source.name, f"not a valid {what} file ({err})") from None
        source.data = raw
    return source.data


def read_text(source: Source, d: Any) -> str:
    """The file's text in ``data.encoding``. Under the default UTF-8, a byte-order mark is honoured: UTF-8's
    is skipped, and a UTF-16 or UTF-32 one (Excel's "Unicode Text" export) reads the file in that encoding. A
    decoding error is one line with the byte offset (and line) where it happened and the encoding the bytes
    look like (charset-normalizer's guess), as the override to set."""
    raw = file_bytes(source)
    packed = next((what for magic, what in COMPRESSED_MAGIC if raw.startswith(magic)), None)
    if packed == "zip":
        raise DataError(source.name, "the file is a zip archive (an .xlsx workbook is one: save the sheet as CSV), "
                                     "not text: unzip it and give the data file")
    if packed:  # compressed bytes under a plain name: no encoding reads them
        how = (f"name it {Path(source.name).name}{dict(COMPRESSED_SUFFIX)[packed]} (read by its extension), or "
               if packed in ("gzip", "bzip2", "xz") else "")
        raise DataError(source.name, f"the file is {packed}-compressed but its name does not say so: {how}"
                                     "decompress it")
    encoding = d.encoding
    if codecs.lookup(d.encoding).name == "utf-8":
        encoding = next((name for bom, name in UNICODE_BOMS if raw.startswith(bom)), "utf-8-sig")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            source.name,
            f"not valid {encoding.removesuffix('-sig')} text at byte {err.start} (line {line}): {err.reason} "
            f"(byte 0x{raw[err.start]:02x}); {_encoding_hint(raw)}",
        ) from None


# the first bytes of a compressed file (file_bytes decompresses .gz / .bz2 / .xz by name) -> what compressed it
COMPRESSED_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
                    (b"PK\x03\x04", "zip"))
COMPRESSED_SUFFIX = (("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz"))


# (byte-order mark, codec that reads it): UTF-32's before UTF-16's, whose little-endian mark it starts with
UNICODE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


# Multi-byte East Asian encodings: charset-normalizer tells them apart reliably (a single-byte code page is a
# guess between look-alikes: latin-1, cp1250 and cp1252 decode the same bytes to different letters).
EAST_ASIAN = frozenset(codecs.lookup(n).name for n in (
    "cp949", "euc_kr", "johab", "iso2022_kr", "cp932", "shift_jis", "euc_jp", "iso2022_jp", "gb18030", "gbk",
    "gb2312", "hz", "big5", "big5hkscs", "cp950"))


def _encoding_hint(raw: bytes) -> str:
    """What to set: for a Korean, Japanese or Chinese legacy encoding (e.g. cp949 from a Korean spreadsheet) the
    one the bytes are in (charset-normalizer's guess), else an example."""
    try:
        from charset_normalizer import from_bytes

        guess = from_bytes(raw[:200_000]).best()
    except Exception:  # noqa: BLE001 -- only a hint
        guess = None
    if guess is None or codecs.lookup(guess.encoding).name not in EAST_ASIAN:
        return "set data.encoding to the file's encoding, e.g. data.encoding=latin-1"
    language = f"{guess.language} text in " if guess.language and guess.language != "Unknown" else ""
    return f"the bytes look like {language}{guess.encoding}: set data.encoding={guess.encoding}"


def _read_json(source: Source, d: Any) -> Iterator[Record | DataError]:
    yield from _json_rows(source, d, read_text(source, d))


def _json_rows(source: Source, d: Any, text: str) -> Iterator[Record | DataError]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a .json file that is really JSON lines (common in the wild)
            yield from _jsonl_rows(source, text)
            return
        raise DataError(
            f"{source.name} line {err.lineno}", f"invalid JSON ({err.msg}, column {err.colno})"
        ) from None
    field = dict(d.extra).get("field")  # the key holding the rows ({"data": [...]}), as datasets' json loader
    if field is not None:
        if not isinstance(data, dict) or field not in data:
            keys = ", ".join(map(str, data)) if isinstance(data, dict) else f"a {type(data).__name__}"
            raise DataError(source.name, f"data.extra.field: no key {field!r} at the top of the file (it has: {keys})")
        data = data[field]
    # a table by column, at the top or under data.extra.field ({"data": {"instruction": [...]}}, as datasets reads it)
    if isinstance(data, dict) and (rows := _columnar_rows(data)) is not None:
        data = rows
    if not isinstance(data, list):
        lists = [k for k, v in data.items() if isinstance(v, list) and all(isinstance(x, dict) for x in v)
                 or isinstance(v, dict) and _columnar_rows(v) is not None] if isinstance(data, dict) else []
        also = f" (or {', '.join(map(repr, lists[1:]))})" if len(lists) > 1 else ""
        hint = f"; the rows may be under {lists[0]!r}{also}: +data.extra.field={lists[0]}" if lists else ""
        raise DataError(source.name, f"expected a JSON list of objects, got {type(data).__name__}{hint}")
    for i, row in enumerate(data, start=1):
        yield _check_object(row, f"{source.name} row {i}")


def _columnar_rows(data: dict) -> list[dict] | None:
    """Rows of a JSON object that holds a table by column, or None: ``{"instruction": [...], "output": [...]}``
    (``Dataset.to_dict()``, ``df.to_dict("list")``), pandas' default ``df.to_json()`` (``{"instruction": {"0":
    ...}, "output": {"0": ...}}``), its ``orient="index"`` (``{"0": {"instruction": ...}, "1": ...}``) and
    ``orient="split"`` (``{"columns": [...], "index": [...], "data": [[...], ...]}``).
    Keys holding lists of objects are rows under keys (``{"data": [...]}``, ``{"train": [...], "test": [...]}``), not
    columns."""
    values = list(data.values())
    if not values:
        return None
    split = data.get("columns"), data.get("data")  # pandas' orient="split": {"columns", "index", "data": [[...]]}
    if set(data) <= {"columns", "index", "data"} and isinstance(split[0], list) and isinstance(split[1], list) \
            and all(isinstance(r, list) and len(r) == len(split[0]) for r in split[1]):
        return [dict(zip(split[0], r)) for r in split[1]]
    if all(isinstance(v, list) for v in values):
        n = len(values[0])
        if any(len(v) != n for v in values) or all(isinstance(x, dict) for v in values for x in v):
            return None  # lists of objects are rows under keys ({"train": [...], "test": [...]}), not columns
        return [{k: data[k][i] for k in data} for i in range(n)]
    if not all(isinstance(v, dict) for v in values):
        return None
    if all(str(k).isdigit() for k in data):  # orient="index": the rows, by index label
        return [data[k] for k in sorted(data, key=int)]
    index = list(values[0])
    if any(list(v) != index for v in values):
        return None
    return [{k: data[k][i] for k in data} for i in index]


def _read_jsonl(source: Source, d: Any) -> Iterator[Record | DataError]:
    text = read_text(source, d)
    if text.startswith("[", _skip_space(text)):  # a JSON array under a .jsonl name (common in the wild), as datasets reads it
        yield from _json_rows(source, d, text)
        return
    yield from _jsonl_rows(source, text)


def text_lines(text: str, newline: str | None = "\n") -> Iterator[str]:
    """The lines of ``text``, each with its line end, as iterating ``io.StringIO(text, newline=newline)`` gives them
    (``"\\n"``: split at ``\\n`` only; ``""``: at ``\\r\\n``, ``\\r`` or ``\\n``, as csv reads a file), without StringIO's
    copy of the whole text in a buffer of 4 bytes a character (300 MB more for a 76 MB file)."""
    if newline == "":
        start = 0
        for end in _LINE_ENDS.finditer(text):
            yield text[start:end.end()]
            start = end.end()
        if start < len(text):
            yield text[start:]
        return
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        stop = end if stop < 0 else stop + 1
        yield text[start:stop]
        start = stop


_LINE_ENDS = re.compile(r"\r\n|\r|\n")


def _jsonl_rows(source: Source, text: str) -> Iterator[Record | DataError]:
    for lineno, line in enumerate(text_lines(text), start=1):
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
    sep = _separator(source, d)
    text = read_text(source, d)
    if text.count('"') % 2:  # a quote that never closes takes every later line into one value
        opened = _unclosed_quote_line(text, sep)
        if opened is not None:
            raise DataError(f"{source.name} line {opened}", 'a quoted value opens on this line and never closes: every '
                                                            'later line would be read into it (close the quote; a quote '
                                                            'inside a quoted value is written "")')
    reader = csv.DictReader(text_lines(text, newline=""), delimiter=sep)
    header = reader.fieldnames or []
    reader.fieldnames = header = [c.strip() for c in header]  # "instruction, output": the column is 'output'
    other = next((c for c in ";\t|," if c != sep and len(header) == 1 and c in header[0]), None)
    if other:  # e.g. a spreadsheet's ';'-separated export: every row would be "missing" its columns
        fix = ("data.loader=tsv" if other == "\t" else "data.loader=csv" if other == ","
               else f"read it with \"+data.extra.sep='{other}'\"")
        raise DataError(f"{source.name} line 1", f"the header is one column {header[0]!r}: the file is separated by "
                                                 f"{other!r}, not {sep!r} ({fix})")
    duplicated = sorted({c for c in header if header.count(c) > 1 and c})
    if duplicated:  # csv would keep the last one's cells, silently
        raise DataError(f"{source.name} line 1", f"the header names {', '.join(map(repr, duplicated))} more than once: "
                                                 "rename the columns so each name is once")
    start = reader.line_num + 1
    for row in reader:
        where = f"{source.name} line {start}"  # where the row starts (a quoted value may span lines)
        start = reader.line_num + 1
        if None in row:  # more cells than the header has columns: an unquoted separator inside a value
            cells = len(header) + len(row[None])
            what = 'a comma must be quoted ("apples, pears")' if sep == "," else "a tab must be quoted"
            yield DataError(where, f"{cells} cells for {len(header)} columns: a value holding {what}")
            continue
        if not any(v and v.strip() for v in row.values()):  # ",,," lines a spreadsheet leaves at the end: blank
            continue
        yield Record(dict(row), where)


def _unclosed_quote_line(text: str, sep: str) -> int | None:
    """The line where a row with a quoted value that never closes starts (None when the file parses: an odd number
    of quotes can also be a stray quote inside an unquoted value, which csv reads as it is)."""
    reader = csv.reader(text_lines(text, newline=""), delimiter=sep, strict=True)
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as err:
        return start if "end of data" in str(err) else None
    return None


def _separator(source: Source, d: Any) -> str:
    """The cell separator: ``data.extra.sep`` (or ``delimiter``, as pandas / datasets' csv loader name it: a
    spreadsheet's ';' export), else tab for tsv and comma for csv."""
    given = d.extra.get("sep", d.extra.get("delimiter")) if isinstance(d.extra, dict) else None
    if given is None:
        return "\t" if source.loader == "tsv" else ","
    if not isinstance(given, str) or len(given) != 1 or given in "\"\r\n":
        raise DataError(source.name, f"data.extra.sep: one character that separates the cells (got {given!r})")
    return given


def _read_lines(source: Source, d: Any) -> Iterator[Record | DataError]:
    """Plain text (``.txt``), as ``datasets``' text loader reads it: one row ``{"text": line}`` per line (for
    ``data.format=text``: continual pre-training); blank lines are skipped."""
    header_checked = getattr(d, "format", "text") == "text"
    for lineno, line in enumerate(text_lines(read_text(source, d)), start=1):
        if not line.strip():
            continue
        if not header_checked:  # a header of separated columns (Excel's "Unicode Text": tabs) is not text
            header_checked = True
            sep = next((c for c in "\t," if _is_header(line.split(c), d)), None)
            if sep:
                cells = ", ".join(c.strip() for c in line.split(sep))[:120]
                kind, loader = ("tab", "tsv") if sep == "\t" else ("comma", "csv")
                raise DataError(f"{source.name} line {lineno}", f"a .txt file is one text row per line (data.format="
                                f"text), but its first line looks like a header of {kind}-separated columns ({cells}): "
                                f"read it with data.loader={loader}")
        yield Record({"text": line.rstrip("\r\n")}, f"{source.name} line {lineno}")


def _is_header(cells: list[str], d: Any) -> bool:
    """Separated cells that name a column the data group reads (``instruction``, a mapped ``data.columns``)."""
    import dataclasses

    from ftsweep.config.data import Columns
    from ftsweep.data.templates import FORMAT_COLUMNS

    columns = getattr(d, "columns", None)
    mapped = (getattr(columns, f.name, None) for f in dataclasses.fields(Columns))
    known = {*FORMAT_COLUMNS, *(f.name for f in dataclasses.fields(Columns)), *(c for c in mapped if isinstance(c, str))}
    return len(cells) > 1 and any(c.strip() in known for c in cells)


def _read_parquet(source: Source, d: Any) -> Iterator[Record | DataError]:
    parquet = _parquet_file(source)
    try:
        table = parquet.read()
    except Exception as err:  # noqa: BLE001 -- pyarrow's errors (ArrowInvalid, OSError, ...): one line naming the file
        raise DataError(source.name, f"cannot read the parquet file ({type(err).__name__}: {err})".splitlines()[0]) from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield Record(row, f"{source.name} row {i}")


def _read_arrow(source: Source, d: Any) -> Iterator[Record | DataError]:
    """An Arrow file: the stream format ``datasets`` writes (``data-00000-of-00001.arrow``, a cache file), or the IPC
    file format (``pyarrow.ipc.new_file``, Feather v2), as ``load_dataset("arrow", ...)`` reads them."""
    import pyarrow as pa

    table = None
    for open_ in (pa.ipc.open_stream, pa.ipc.open_file):
        try:
            table = open_(pa.BufferReader(file_bytes(source))).read_all()
            break
        except Exception as err:  # noqa: BLE001 -- ArrowInvalid and friends: try the other format, then one line
            why = f"{type(err).__name__}: {err}"
    if table is None:
        raise DataError(source.name, f"not an Arrow stream or file, or a truncated one ({why})".splitlines()[0])
    for i, row in enumerate(table.to_pylist(), start=1):
        yield Record(row, f"{source.name} row {i}")


def _parquet_file(source: Source) -> Any:
    """pyarrow's ParquetFile of ``source``; a file that is not parquet (or a truncated one) is one line naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(source.file)
    except Exception as err:  # noqa: BLE001 -- ArrowInvalid (no parquet footer), OSError: one line naming the file
        compressed = next((c for c in (*DECOMPRESS, ".zst") if str(source.file).lower().endswith(c)), None)
        why = (f"a compressed parquet file ({compressed}): parquet compresses inside the file; decompress it first"
               if compressed else f"not a parquet file, or a truncated one ({type(err).__name__}: {err})")
        raise DataError(source.name, why.splitlines()[0]) from None


def _read_hub(source: Source, d: Any) -> Iterator[Record | DataError]:
    import datasets
    from datasets import load_dataset

    from ftsweep.paths import launch_dir
    from ftsweep.verbosity import verbose

    if not verbose():  # "Generating train split" bars of a local folder (ftsweep says what it read)
        datasets.disable_progress_bars()

    # a local folder is read from where ftsweep ran (hydra.job.chdir=true runs in the run folder), as a file is
    folder = resolve_data_path(source.name) or Path(source.name).expanduser()
    if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
        ds = _from_disk(source.name, folder, d, source.validation)
    else:
        if folder.is_dir():
            _check_has_data_files(source.name, folder)
            if not source.validation:
                _check_data_folder(source.name, folder, d)
            files = _folder_files(folder, d, source.validation)
            if files is not None:  # each file read as data.path would read it: a bad row is named by file and line
                read = False
                for file in files:  # one shard's bytes in memory at a time
                    shard = resolve_source(str(file), "auto")
                    # named under the folder as given (shards/part-00.jsonl line 7): a cache entry made from another
                    # folder of the same rows renames its rows by that prefix (ftsweep.data.pipeline._renamer)
                    shard.name = os.path.join(source.name, os.path.relpath(file, folder))
                    if shard.loader not in BINARY_LOADERS and _blank(file_bytes(shard)):
                        continue  # an empty shard (a sharding script's last part) has no rows, as datasets reads it
                    read = True
                    yield from read_records(shard, d)
                if not read:
                    names = ", ".join(os.path.relpath(f, folder) for f in files[:5]) + (" ..." if len(files) > 5 else "")
                    raise DataError(source.name, f"every data file of the folder is empty (no rows): {names}")
                return
        try:
            ds = load_dataset(str(folder) if folder.is_dir() else source.name, d.subset, split=d.split,
                              revision=d.revision, **dict(d.extra))
        except Exception as err:  # noqa: BLE001 -- any loader failure is one line naming the dataset
            what = "the local folder as a dataset" if folder.is_dir() else "the Hub dataset"
            # a local folder named without ./ (or mistyped) reads as a Hub name: say that no local file or folder has
            # it, or the error reads as a network problem (an org/name is plainly a Hub name)
            local = "" if folder.exists() or "/" in source.name else (
                f"no local file or folder of that name (relative paths are read from {launch_dir()}), and ")
            raise DataError(
                source.name, f"{local}cannot load {what} ({type(err).__name__}: {err})".splitlines()[0]
            ) from None
    for i, row in enumerate(ds, start=1):
        yield Record(dict(row), f"{source.name} row {i}")


def _check_has_data_files(name: str, folder: Path) -> None:
    """A folder that is not a saved dataset needs a data file (datasets' own error names files it looks for)."""
    files = [p.relative_to(folder) for p in sorted(folder.rglob("*")) if p.is_file()]
    files = [p for p in files if not any(part.startswith(".") for part in p.parts)]
    if any(_inner_suffix(p) in SUFFIX_LOADERS for p in files):
        return
    holds = f"it holds {', '.join(map(str, files[:5]))}{' ...' if len(files) > 5 else ''}" if files else "it is empty"
    raise DataError(name, "the folder holds no data file (.json, .jsonl, .csv, .tsv, .parquet, .arrow or .txt, or one "
                          f"written by save_to_disk; {holds})")


def _folder_files(folder: Path, d: Any, validation: bool = False) -> list[Path] | None:
    """The files of ``data.split`` that ``datasets``' folder loader would read, in its order (its split patterns:
    ``train.jsonl``, ``data/train-*.parquet``, every file when none is named by split); None when only
    ``load_dataset`` can say (a subset, a sliced split such as ``train[:10%]``, loader options besides ``field`` and
    ``sep``)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    if d.subset or set(dict(d.extra)) - {"field", "sep", "delimiter"}:
        return None
    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(folder)), str(folder))
    except Exception:  # noqa: BLE001 -- no data files, a pattern datasets cannot resolve: load_dataset says why
        return None
    split = _validation_split(list(files), d.split) if validation else d.split
    if split not in files:
        return None
    # only the data files, as datasets reads them (it keeps the files of the format it infers): a LICENSE, notes.md or
    # sizes.yaml beside the shards is no data file
    return [Path(f) for f in files[split] if _inner_suffix(Path(f)) in SUFFIX_LOADERS] or None


def _inner_suffix(path: Path) -> str:
    """The suffix that says a file's format, under a compression suffix (``rows.jsonl.gz``: ``.jsonl``), lower case."""
    suffixes = [x.lower() for x in path.suffixes]
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in DECOMPRESS else (suffixes[-1] if suffixes else "")


# the split names datasets' folder loader gives files by name (train.jsonl, validation.jsonl, data/test-*.parquet)
SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev", "eval"),
               "test": ("test", "testing")}


def _check_data_folder(name: str, folder: Path, d: Any) -> None:
    """A folder of data files, as ``datasets`` reads it: one format only (it would read the most common and skip the
    others, silently) and files of other splits than ``data.split`` named, since they are not trained on."""
    from ftsweep.console import say

    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    kinds: dict[str, list[str]] = {}
    for p in files:
        inner = _inner_suffix(p)
        if inner in SUFFIX_LOADERS:
            kinds.setdefault(SUFFIX_LOADERS[inner].replace("jsonl", "json"), []).append(str(p.relative_to(folder)))
    if len(kinds) > 1:
        listed = "; ".join(f"{k}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}" for k, v in sorted(kinds.items()))
        raise DataError(name, f"the folder holds data files of several formats ({listed}), of which only one would be "
                              "read: keep one format in it, or give each file as data.path / a dataset_info.json list")
    others = [f for fs in kinds.values() for f in fs if _split_of(f) not in (None, d.split)]
    if others and any(_split_of(f) == d.split for fs in kinds.values() for f in fs) and name not in _FOLDERS_SAID:
        _FOLDERS_SAID.add(name)
        say(f"data: {name}: {', '.join(others[:3])}{' ...' if len(others) > 3 else ''} is another split than "
            f"data.split={d.split}, not trained on" + ("" if d.validation_path else
                                                       f"; to validate on it: data.validation_path="
                                                       f"{Path(name).expanduser() / others[0]}"))


_FOLDERS_SAID: set[str] = set()  # folders whose other splits were named (once: telling the format reads them too)


def _split_of(path: str) -> str | None:
    """The split ``datasets`` gives a file by its name (``validation.jsonl``, ``test-00000-of-00001.parquet``)."""
    words = [w for w in re.split(r"[^a-z]+", Path(path).stem.lower()) if w]
    return next((split for split, names in SPLIT_WORDS.items() if any(w in names for w in words)), None)


def _validation_split(splits: list[str], split: str) -> str | None:
    """The split a ``data.validation_path`` folder is validated on: one named for validation (``validation``,
    ``dev``, ...), else ``test``, else ``split`` when it is the only one (a folder of unnamed files); None otherwise."""
    splits = [str(s) for s in splits]  # (datasets' NamedSplit keys)
    for kind in ("validation", "test"):
        found = next((s for s in splits if _split_of(s) == kind), None)
        if found is not None:
            return found
    return split if splits == [split] else None


def _from_disk(name: str, folder: Path, d: Any, validation: bool = False) -> Any:
    """A folder written by ``Dataset.save_to_disk`` (``state.json``), or a ``DatasetDict``'s (``dataset_dict.json``:
    its ``data.split``; its other splits are named once, as a folder's other files are, with the folder of one to
    validate on: each split of a saved ``DatasetDict`` is a saved ``Dataset`` of its own), as
    ``datasets.load_from_disk`` reads it."""
    from datasets import DatasetDict, load_from_disk

    from ftsweep.console import say

    split = d.split

    try:
        ds = load_from_disk(str(folder))
    except Exception as err:  # noqa: BLE001 -- a damaged folder is one line naming it
        raise DataError(name, f"cannot load the saved dataset ({type(err).__name__}: {err})".splitlines()[0]) from None
    if isinstance(ds, DatasetDict) and validation:
        held_out = _validation_split(list(ds), split)
        if held_out is None:
            raise DataError(name, f"the saved dataset has no validation split ({', '.join(SPLIT_WORDS['validation'])} "
                                  f"or test; its splits: {', '.join(ds)})")
        return ds[held_out]
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataError(name, f"saved dataset has no split {split!r} (data.split; its splits: {', '.join(ds)})")
        others = [s for s in ds if s != split]
        if others and name not in _FOLDERS_SAID:
            _FOLDERS_SAID.add(name)
            held_out = next((s for s in others if _split_of(s) == "validation"), others[0])
            say(f"data: {name}: the saved dataset's split{'s' if len(others) > 1 else ''} {', '.join(others)} "
                f"{'are' if len(others) > 1 else 'is'} not trained on (data.split={split})" + (
                    "" if d.validation_path else
                    f"; to validate on {held_out}: data.validation_path={Path(name).expanduser() / held_out}"))
        ds = ds[split]
    return ds


def rows_hash(records: list[Record], name: str = "") -> str:
    """Content hash of rows loaded from the Hub or a folder (their files are not ours to hash), with where each row
    is under ``name`` (a folder's file and line): a cache entry names its rows, and another source's entry is reused
    only where renaming its ``name`` gives this one's (the same rows in other files are not)."""
    h = hashlib.sha256()
    for rec in records:
        where = rec.where[len(name):] if name and rec.where.startswith(name) else rec.where
        h.update(json.dumps([where, rec.row], sort_keys=True, default=str, ensure_ascii=False).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------- row preparation
def column_map(d: Any) -> dict[str, str]:
    """``data.columns`` as {canonical field: source column}, unset fields left out."""
    cols = d.columns
    items = vars(cols).items() if hasattr(cols, "__dataclass_fields__") else dict(cols).items()
    return {k: v for k, v in items if v and v != k}


def map_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Rename source columns to canonical fields (``columns`` is canonical -> source column, or a dotted path into
    a nested column: ``answers.text.0``)."""
    if not columns:
        return row
    from ftsweep.data.templates import column_value

    # (the validation answers, data.columns.references, are read beside the row: their column stays for the fields
    # and the format detection that read it, SQuAD's answers.text.0)
    sources = {c for f, c in columns.items() if f != "references"}
    # renamed, so errors list what is there; a field mapped to another column never falls back to its own name's
    # column (a mistyped data.columns.instruction=questoin is "missing", not the row's own instruction)
    out = {k: v for k, v in row.items() if k not in sources and k not in columns}
    for canonical, column in columns.items():
        found, value = column_value(row, column)  # a column, or a path into one (answers.text.0)
        if found:
            out[canonical] = value
    return out


# Loaders whose cells are text (a parquet / arrow string column too): TRL's conversational columns stored there are
# JSON text, read as the turns they hold (messages / conversations are, where they are rendered: ftsweep.data.chat).
TEXT_CELL_LOADERS = ("csv", "tsv", "parquet", "arrow")
TURN_COLUMNS = ("prompt", "completion", "chosen", "rejected")


def turn_cells(row: dict[str, Any], loader: str) -> dict[str, Any]:
    """A CSV / TSV cell (or parquet string) of ``prompt`` / ``completion`` / ``chosen`` / ``rejected`` that is JSON
    text of a list of turns (``[{"role": "user", "content": ...}]``, ShareGPT's ``from`` / ``value``) -> that list,
    so TRL's conversational preference, KTO and prompt-only rows exported to CSV read as turns (they were trained as
    the literal JSON text); any other cell unchanged."""
    if loader not in TEXT_CELL_LOADERS:
        return row
    from ftsweep.data.templates import list_in_text

    out = row
    for key in TURN_COLUMNS:
        turns = list_in_text(row.get(key))
        if turns and all(
                isinstance(t, dict) and ({"role", "content"} <= t.keys() or {"from", "value"} <= t.keys()) for t in turns):
            out = {**out, key: turns}
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


def load_records(name: str, d: Any, bad: BadRows, validation: bool = False) -> tuple[list[Record], str]:
    """Read one source into records (columns mapped, replacements applied) and its content hash; ``validation``: the
    source is ``data.validation_path``, whose folder is read at its validation split."""
    source = resolve_source(name, d.loader)
    source.validation = validation
    records: list[Record] = []
    # several dataset_info.json entries: each maps its own columns
    columns, replacements = {} if source.loader == "mix" else column_map(d), dict(d.replacements)
    for item in read_records(source, d):
        if isinstance(item, DataError):
            bad.handle(item)
            continue
        row = apply_replacements(turn_cells(map_columns(item.row, columns), source.loader), replacements)
        records.append(Record(row, item.where, item.order))
    if d.format == "prompt_completion" and source.loader != "mix":  # (a mix's entries map their own columns)
        one_prompt_kind(records, d)
    digest = content_hash(source) or rows_hash(records, name)
    return records, digest


def one_prompt_kind(records: list[Record], d: Any) -> None:
    """TRL's prompt-completion rows are conversational (``prompt`` messages, rendered by the chat template) or plain
    (text, used as written), one kind to a dataset (a dataset column has one type). A file that mixes them is
    refused as a whole (not a bad row to skip: which kind is meant is the file's choice), naming the first row of
    each kind, rather than some rows rendered one way and some the other without a word."""
    from ftsweep.data.templates import _label

    first: tuple[str, str] | None = None
    for rec in records:
        prompt = rec.row.get("prompt")
        if prompt is None:
            continue
        kind = "messages" if isinstance(prompt, list) else "text"
        if first is None:
            first = (kind, rec.where)
        elif kind != first[0]:
            raise DataError(rec.where, f"{kind} where {first[1]} has {first[0]}: a file's prompts are all messages "
                                       "(rendered by the chat template) or all text (used as written), as in TRL",
                            _label("prompt", d))


def file_order(records: list[Record]) -> list[Record]:
    """``records`` as their files hold them (a dataset_info.json list's rows come mixed: entry by entry, in order)."""
    return sorted(records, key=lambda r: r.order) if records and records[0].order else records


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


def no_training_rows(val_size: float, n_rows: int) -> DataError:
    """The error for a split that left nothing to train on (see ``split_validation``)."""
    return DataError("data.val_size", f"{val_size} leaves no training rows out of {n_rows} "
                                       f"(data.val_size=0 trains on every row, without validation)")


def split_validation(records: list[Record], val_size: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Seeded train/validation split: ``val_size`` < 1 is a fraction, >= 1 a number of rows.

    A positive fraction keeps at least one validation row: on a small file (or ``max_rows``) 0.1 must not round
    to no validation at all, which would leave an eval objective nothing to measure after the whole run.
    A ``val_size`` that leaves no training rows returns every row as validation: the caller checks the rows
    first (a bad row is the error to name) and then raises ``no_training_rows``."""
    n_val = max(1, round(val_size * len(records))) if 0 < val_size < 1 else int(val_size)
    if n_val == 0:
        return records, []
    if n_val >= len(records):
        return [], records
    order = list(range(len(records)))
    random.Random(seed + 1).shuffle(order)  # independent of the shuffle so max_rows does not bias the split
    val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val
