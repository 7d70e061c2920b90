"""The ``data`` config as a plain :class:`~ftsweep.config.data.DataConfig` object.

The pipeline reads a handful of options for every row; reading them from an OmegaConf node costs
microseconds per access, so the node is converted once per build. A config saved by an older run
(``.hydra/config.yaml``, read back by ``ftsweep generate``) is merged onto the schema first, so
options it lacks take their defaults. ``data.dataset`` (LLaMA-Factory's ``dataset_info.json``) is applied
here, so every reader of the data config sees the entry's path, format and columns, and so is
``data.format=auto``: the format the training file's first row is written in, and the fields it holds under
well-known datasets' column names (:func:`detected`).
"""

from __future__ import annotations

from typing import Any

from ftsweep.config.data import DataConfig

AUTO = "auto"
FORMATS = "alpaca, chat, sharegpt, prompt_completion or text"
# what this process found (the format, the columns it maps), by source (path, its size and mtime, loader, columns)
_DETECTED: dict[tuple, tuple[str, dict[str, str]]] = {}


def data_options(d: Any) -> DataConfig:
    """``d`` (a DataConfig, a structured or plain OmegaConf node) as a plain DataConfig, its format resolved (and
    with ``data.format=auto`` the fields read under well-known column names mapped)."""
    out = d if isinstance(d, DataConfig) else _plain(d)
    return _resolved(out) if out.format == AUTO else out


def _plain(d: Any) -> DataConfig:
    """An OmegaConf ``data`` node as a DataConfig, ``data.dataset`` applied, its format as given."""
    from omegaconf import OmegaConf

    from ftsweep.data.dataset_info import apply

    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), d)
    if merged.dataset or merged.eval_dataset:  # LLaMA-Factory's dataset_info.json entry gives the path
        merged.path = ""
    return apply(OmegaConf.to_object(merged))  # type: ignore[arg-type]


def _resolved(d: DataConfig) -> DataConfig:
    """``data.format=auto`` resolved: the format found, the columns it maps added to ``data.columns``."""
    import dataclasses

    fmt, guessed = detected(d)
    return dataclasses.replace(d, format=fmt, columns=dataclasses.replace(d.columns, **guessed))


def detected(d: DataConfig) -> tuple[str, dict[str, str]]:
    """``data.format=auto``: the format of the training source's first readable row, its columns mapped by
    ``data.columns``, and the fields it holds under well-known datasets' names ({field: column}, never one that
    ``data.columns`` maps) (:func:`ftsweep.data.templates.detect_columns`); a ``.txt`` file is text. Said once
    per process and source; a row no format fits is a one-line DataError naming the file, line and columns. A
    file without a readable row is left to the reading of its rows (the schema's default format) to report."""
    import os

    from ftsweep.console import say
    from ftsweep.data.errors import DataError
    from ftsweep.data.sources import column_map, first_records, map_columns, resolve_source, turn_cells
    from ftsweep.data.templates import detect_columns

    source = resolve_source(d.path, d.loader)
    columns = column_map(d)
    stat = os.stat(source.file) if source.file is not None and source.file.is_file() else None
    key = (d.path, d.loader, stat and (stat.st_size, stat.st_mtime_ns), repr(sorted(columns.items())),
           d.split, d.subset, d.revision, d.encoding, repr(sorted(dict(d.extra).items(), key=str)))
    if key in _DETECTED:
        fmt, guessed = _DETECTED[key]
        return fmt, dict(guessed)
    guessed: dict[str, str] = {}
    if source.loader == "text":
        next(iter(first_records(source, d)), None)  # a first line of tab / comma separated columns is refused here
        fmt, why = "text", "a .txt file: one document per line"
    else:
        for item in first_records(source, d):
            if isinstance(item, DataError):  # an unreadable row: data.bad_rows decides when the rows are read
                continue
            row = turn_cells(map_columns(item.row, columns), source.loader)
            found, guessed = detect_columns(row)
            guessed = {k: v for k, v in guessed.items() if k not in columns}  # data.columns is never overridden
            have = ", ".join(map(str, row)) or "none"
            if found is None:
                raise DataError(item.where, f"data.format=auto cannot tell the format from the columns ({have}): "
                                            f"set data.format ({FORMATS}) and map the columns, e.g. "
                                            "data.columns.instruction=<column>")
            fmt = found
            why = "columns " + ", ".join(_read_as(str(c), guessed) for c in row)
            break
        else:  # no readable row: reading the rows says what is wrong (a bad row, no rows left)
            return DataConfig.format, {}
    say(f"data.format=auto: {d.path} reads as {fmt} ({why})")
    _DETECTED[key] = fmt, guessed
    return fmt, dict(guessed)


def resolve_format(cfg: Any) -> bool:
    """``data.format=auto`` in a run's config -> the format its training data is read in, in place, so that every
    reader of ``cfg.data.format`` (validation, the trainer's packing, the manifest) sees the format read; True
    when it was auto."""
    if cfg.data.format != AUTO:
        return False
    d = _plain(cfg.data)
    fmt, guessed = detected(d) if d.format == AUTO else (d.format, {})
    cfg.data.format = fmt
    for field, column in guessed.items():  # the fields it read under well-known datasets' column names
        cfg.data.columns[field] = column
    return True


def _read_as(column: str, guessed: dict[str, str]) -> str:
    """``column`` as the detection line shows it: ``question as instruction``, ``answers.text.0 as output`` (a path
    into it), or its name alone."""
    return ", ".join(f"{source} as {field}" for field, source in guessed.items()
                     if source == column or source.startswith(column + ".")) or column


def format_problem(cfg: Any, path: str | None = None) -> str | None:
    """``data.format=auto``: None when the training file's format can be told and the config allows it (a stage
    that needs answers is refused 'text'); else the one line that says why not. ``path``: a searched file instead
    of ``data.path``. The CLI and the sweeper call it before anything is written; other formats: None at once."""
    import copy

    from omegaconf import OmegaConf

    from ftsweep.config.validate import validate
    from ftsweep.errors import UsageError

    if OmegaConf.select(cfg, "data.format") != AUTO:
        return None
    resolved = copy.deepcopy(cfg)
    if path is not None:
        resolved.data.path = path
    try:
        resolve_format(resolved)
        validate(resolved)
    except UsageError as err:  # a DataError (the file, its line, its columns), a ConfigError, a dataset_info entry's
        message = str(err)
        if path is not None and path not in message:  # which of the searched files
            message += f" (the searched data.path={path} reads as {resolved.data.format})"
        return message
    return None
