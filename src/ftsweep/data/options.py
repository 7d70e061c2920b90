"""The ``data`` config as a plain :class:`~ftsweep.config.data.DataConfig` object.

The pipeline reads a handful of options for every row; reading them from an OmegaConf node costs
microseconds per access, so the node is converted once per build. A config saved by an older run
(``.hydra/config.yaml``, read back by ``ftsweep generate``) is merged onto the schema first, so
options it lacks take their defaults. ``data.dataset`` (LLaMA-Factory's ``dataset_info.json``) is applied
here, so every reader of the data config sees the entry's path, format and columns, and so is
``data.format=auto``: the format the training file's first row is written in (:func:`detected_format`).
"""

from __future__ import annotations

from typing import Any

from ftsweep.config.data import DataConfig

AUTO = "auto"
FORMATS = "alpaca, chat, sharegpt, prompt_completion or text"
_DETECTED: dict[tuple, str] = {}  # what this process found, by source (path, its size and mtime, loader, columns)


def data_options(d: Any) -> DataConfig:
    """``d`` (a DataConfig, a structured or plain OmegaConf node) as a plain DataConfig, its format resolved."""
    import dataclasses

    if isinstance(d, DataConfig):
        return dataclasses.replace(d, format=detected_format(d)) if d.format == AUTO else d
    from omegaconf import OmegaConf

    from ftsweep.data.dataset_info import apply

    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), d)
    if merged.dataset or merged.eval_dataset:  # LLaMA-Factory's dataset_info.json entry gives the path
        merged.path = ""
    out = apply(OmegaConf.to_object(merged))  # type: ignore[arg-type]
    return dataclasses.replace(out, format=detected_format(out)) if out.format == AUTO else out


def detected_format(d: DataConfig) -> str:
    """``data.format=auto``: the format of the training source's first readable row, its columns mapped by
    ``data.columns`` (:func:`ftsweep.data.templates.detect_format`); a ``.txt`` file is text. Said once per
    process and source; a row no format fits is a one-line DataError naming the file, line and columns. A file
    without a readable row is left to the reading of its rows (the schema's default format) to report."""
    import os

    from ftsweep.console import say
    from ftsweep.data.errors import DataError
    from ftsweep.data.sources import column_map, first_records, map_columns, resolve_source
    from ftsweep.data.templates import detect_format

    source = resolve_source(d.path, d.loader)
    columns = column_map(d)
    stat = os.stat(source.file) if source.file is not None and source.file.is_file() else None
    key = (d.path, d.loader, stat and (stat.st_size, stat.st_mtime_ns), repr(sorted(columns.items())),
           d.split, d.subset, d.revision, d.encoding, repr(sorted(dict(d.extra).items(), key=str)))
    if key in _DETECTED:
        return _DETECTED[key]
    if source.loader == "text":
        fmt, why = "text", "a .txt file: one document per line"
    else:
        for item in first_records(source, d):
            if isinstance(item, DataError):  # an unreadable row: data.bad_rows decides when the rows are read
                continue
            row = map_columns(item.row, columns)
            fmt = detect_format(row)
            have = ", ".join(map(str, row)) or "none"
            if fmt is None:
                raise DataError(item.where, f"data.format=auto cannot tell the format from the columns ({have}): "
                                            f"set data.format ({FORMATS}) and map the columns, e.g. "
                                            "data.columns.instruction=<column>")
            why = f"columns {have}"
            break
        else:  # no readable row: reading the rows says what is wrong (a bad row, no rows left)
            return DataConfig.format
    say(f"data.format=auto: {d.path} reads as {fmt} ({why})")
    _DETECTED[key] = fmt
    return fmt


def resolve_format(cfg: Any) -> bool:
    """``data.format=auto`` in a run's config -> the format its training data is read in, in place, so that every
    reader of ``cfg.data.format`` (validation, the trainer's packing, the manifest) sees the format read; True
    when it was auto."""
    if cfg.data.format != AUTO:
        return False
    cfg.data.format = data_options(cfg.data).format
    return True


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
