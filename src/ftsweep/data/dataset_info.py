"""LLaMA-Factory's dataset registry: ``data.dataset=<name>`` reads the entry ``<name>`` of
``<data.dataset_dir>/dataset_info.json`` (LLaMA-Factory's ``dataset`` / ``dataset_dir``, default ``data``),
so a project set up for LLaMA-Factory trains here without rewriting its data description.

What an entry gives (it replaces ``data.path``, ``data.loader``, ``data.format`` and the columns it maps):

- ``file_name`` (a file or folder next to ``dataset_info.json``) or ``hf_hub_url`` (a Hub dataset, with
  ``subset``, ``split``, ``revision`` and ``folder``: the repository folder, passed as ``data_dir``);
- ``formatting``: ``alpaca`` (default), ``sharegpt`` or ``openai`` (ShareGPT turns under ``messages`` with
  ``role`` / ``content`` keys); an alpaca entry is rendered with the Alpaca templates
  (``data.template``), or with the model's chat template when ``data.format=chat`` is given (as LLaMA-Factory
  renders it: the way rows with ``system`` / ``history`` columns train), or as documents under ``data.format=text``
  (LLaMA-Factory's pre-training entries: ``columns.prompt`` names the text column); ``ranking: true`` marks preference
  pairs (``chosen`` / ``rejected``: train them with ``stage=dpo``);
- ``columns``: ``prompt`` / ``query`` / ``response`` / ``history`` (alpaca) or ``messages`` (sharegpt), and
  ``system``, ``tools``, ``chosen``, ``rejected``, ``kto_tag`` (KTO's label), as LLaMA-Factory reads them
  (the alpaca columns only for alpaca, ``messages`` only for sharegpt);
- ``tags`` (sharegpt): the turn keys ``from`` / ``value`` or ``role`` / ``content`` and role names this
  project reads (``human`` / ``user``, ``gpt`` / ``assistant``, ``observation`` / ``tool``, ``function_call``,
  ``system``);
- ``num_samples``: at most that many rows (the seeded ``data.max_rows`` selection; the smaller of the two).

``data.eval_dataset=<name>`` (LLaMA-Factory's ``eval_dataset``): another entry of the same file whose file is
``data.validation_path``, read with its own columns and rendered as the training rows (Alpaca validation rows of
a ShareGPT run become chat turns; a layout the training format cannot render is refused).

A list, ``data.dataset='identity,alpaca_en_demo'`` (LLaMA-Factory's ``dataset: a,b``, its default ``concat``
mix): one dataset of every entry's rows in the order listed, each entry read with its own file, columns and
``num_samples``; ``data.max_rows``, the shuffle and the validation split then apply to the whole list. Entries
read the same way stay so (two Alpaca entries: the Alpaca templates); Alpaca entries listed with ShareGPT ones
become chat turns, as LLaMA-Factory aligns them, and the list is rendered by the chat template. Preference pairs
are listed with preference pairs of the same formatting only; documents (``data.format=text``) with documents.
``data.eval_dataset`` may list entries too. (``choice(a,b)`` in a sweep searches entries instead.)

Refused in one line, naming the file and the entry: a missing file or entry (with the names it defines),
entries that cannot be trained together, ModelScope / script / cloud sources, image / video / audio columns,
other role names, unknown entry keys.
Reads JSON only (no torch): the CLI and the sweeper check it before anything is written.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from ftsweep.config.data import names_of
from ftsweep.data.chat import ROLE_ALIASES
from ftsweep.errors import ConfigError

INFO_FILE = "dataset_info.json"
# LLaMA-Factory's column name -> this project's canonical field, by formatting (then the common ones)
COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "history": "history"},
    "sharegpt": {"messages": "conversations"},
}
COMMON_COLUMNS = {"system": "system", "tools": "tools", "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"}
MEDIA_COLUMNS = ("images", "videos", "audios")
# tag -> the role it names (chat.ROLE_ALIASES: the names this project reads for that role)
ROLE_TAGS = {"user_tag": "user", "assistant_tag": "assistant", "observation_tag": "tool",
             "function_tag": "tool_call", "system_tag": "system"}
TURN_KEYS = (("from", "value"), ("role", "content"))
SOURCES = ("file_name", "hf_hub_url")
UNSUPPORTED_SOURCES = ("ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
ENTRY_KEYS = (*SOURCES, *UNSUPPORTED_SOURCES, "file_sha1", "formatting", "ranking", "subset", "split", "folder",
              "num_samples", "revision", "columns", "tags")
KEY = "data.dataset"
# the data path of several entries read as one dataset: "dataset_info:<registry file>#<name>,<name>"
MIX_PREFIX, MIX_SEP = "dataset_info:", "#"


def info_path(dataset_dir: str) -> Path:
    """``dataset_dir/dataset_info.json`` (``dataset_dir`` may name the file itself), relative to the working
    directory as in LLaMA-Factory."""
    p = Path(dataset_dir).expanduser()
    return p if p.suffix.lower() == ".json" else p / INFO_FILE


def read_entry(dataset: str, dataset_dir: str) -> tuple[Path, dict[str, Any]]:
    """(the registry file, the entry of ``dataset``), or one-line ConfigError."""
    file = info_path(dataset_dir)
    if not file.is_file():
        raise ConfigError(KEY, f"no {file} to define {dataset!r} (data.dataset_dir={dataset_dir}: the folder that "
                               f"holds LLaMA-Factory's {INFO_FILE}; relative to {Path.cwd()})")
    try:
        registry = json.loads(file.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ConfigError(KEY, f"{file}{where}: not valid JSON ({getattr(err, 'msg', err)})") from None
    if not isinstance(registry, dict):
        raise ConfigError(KEY, f"{file}: expected an object of dataset entries, got {type(registry).__name__}")
    if dataset not in registry:
        names = sorted(registry)
        near = difflib.get_close_matches(dataset, names, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise ConfigError(KEY, f"no dataset {dataset!r} in {file} (it defines: {shown or 'nothing'}){hint}")
    entry = registry[dataset]
    if not isinstance(entry, dict):
        raise ConfigError(KEY, f"{dataset!r} in {file}: expected an object, got {type(entry).__name__}")
    return file, entry


def entry_settings(dataset: str, dataset_dir: str) -> dict[str, Any]:
    """The data settings entry ``dataset`` gives: path, loader, format, columns (canonical field -> column),
    split, subset, revision, data_dir, num_samples, ranking. One-line ConfigError for what cannot be read."""
    file, entry = read_entry(dataset, dataset_dir)
    where = f"{dataset!r} in {file}"

    def bad(message: str) -> ConfigError:
        return ConfigError(KEY, f"{where}: {message}")

    for key in entry:
        if key not in ENTRY_KEYS:
            near = difflib.get_close_matches(key, ENTRY_KEYS, n=1)
            raise bad(f"unknown key {key!r}" + (f"; did you mean {near[0]!r}?" if near else
                                                f" (known: {', '.join(ENTRY_KEYS)})"))
    if "hf_hub_url" in entry:
        path, loader = entry["hf_hub_url"], "hub"
    elif "file_name" in entry:
        path, loader = str((file.parent / str(entry["file_name"])).resolve()), "auto"
    else:
        other = next((k for k in UNSUPPORTED_SOURCES if k in entry), None)
        if other:
            raise bad(f"{other} is not read here (local files: file_name; Hugging Face Hub datasets: hf_hub_url)")
        raise bad("needs file_name (a file or folder next to the json) or hf_hub_url")
    if not isinstance(path, str) or not path:
        raise bad("file_name / hf_hub_url must be a non-empty string")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in (*COLUMNS, "openai"):
        raise bad(f"formatting {formatting!r}: alpaca, sharegpt or openai")
    columns = entry.get("columns") or {}
    if not isinstance(columns, dict):
        raise bad("columns must be an object (LLaMA-Factory's name -> the file's column)")
    if formatting == "openai":  # LLaMA-Factory's OpenAI layout: ShareGPT turns under messages, role / content keys
        formatting, columns = "sharegpt", {"messages": "messages", **columns}
        entry = {**entry, "tags": {"role_tag": "role", "content_tag": "content", **(entry.get("tags") or {})}}
    media = [c for c in MEDIA_COLUMNS if c in columns]
    if media:
        raise bad(f"columns.{media[0]}: multimodal rows are not supported (text only)")
    names = {**COLUMNS[formatting], **COMMON_COLUMNS}  # as LLaMA-Factory: other formatting's columns are ignored
    known = {c for cols in COLUMNS.values() for c in cols} | set(COMMON_COLUMNS)
    for col, value in columns.items():
        if col not in known:
            raise bad(f"columns.{col}: unknown (known: {', '.join(sorted(known))})")
        if value is not None and not isinstance(value, str):
            raise bad(f"columns.{col} must be a column name (a string)")
    mapped = {names[c]: v for c, v in columns.items() if c in names and v is not None}
    _check_tags(entry.get("tags"), formatting, bad)
    num = entry.get("num_samples")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise bad(f"num_samples must be a whole number >= 1 (got {num!r})")
    return {"path": path, "loader": loader, "format": formatting, "columns": mapped,
            "split": entry.get("split", "train"), "subset": entry.get("subset"), "revision": entry.get("revision"),
            "data_dir": entry.get("folder"), "num_samples": num, "ranking": bool(entry.get("ranking", False))}


def _check_tags(tags: Any, formatting: str, bad: Any) -> None:
    """ShareGPT tags this project reads as they are (the turn keys and role names it knows), else refused."""
    if not tags or formatting != "sharegpt":
        return
    if not isinstance(tags, dict):
        raise bad("tags must be an object")
    keys = (tags.get("role_tag", "from"), tags.get("content_tag", "value"))
    if keys not in TURN_KEYS:
        raise bad(f"tags role_tag={keys[0]!r}, content_tag={keys[1]!r}: turns are read with from/value or role/content")
    for tag, role in ROLE_TAGS.items():
        name = tags.get(tag)
        if name is not None and ROLE_ALIASES.get(name) != role:
            readable = sorted(k for k, v in ROLE_ALIASES.items() if v == role)
            raise bad(f"tags.{tag}={name!r}: this role is read under the names {', '.join(readable)}")


def mix_path(file: Path, names: list[str]) -> str:
    """The data path that stands for several entries of ``file`` read one after the other (:func:`mix_parts`)."""
    return f"{MIX_PREFIX}{file}{MIX_SEP}{','.join(names)}"


def is_mix(path: str | None) -> bool:
    return bool(path) and str(path).startswith(MIX_PREFIX)


def mix_format(parts: list[tuple[str, dict[str, Any]]], user_format: str, key: str = KEY) -> str:
    """How a list of entries is rendered: their common format (as one entry of each would be read), or
    ``sharegpt`` when ShareGPT entries are listed with Alpaca ones (these become chat turns, as LLaMA-Factory
    aligns every dataset of a list); one-line ConfigError for entries that cannot be trained together."""
    ranking = {name: got["ranking"] for name, got in parts}
    if len(set(ranking.values())) > 1:
        pairs = next(n for n, r in ranking.items() if r)
        plain = next(n for n, r in ranking.items() if not r)
        raise ConfigError(key, f"{pairs!r} holds preference pairs (ranking: true) and {plain!r} does not: "
                               "list entries of one kind")
    formats = {name: entry_format(got, user_format) for name, got in parts}
    kinds = set(formats.values())
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {"alpaca", "chat", "sharegpt"} and not any(r for r in ranking.values()):
        return "sharegpt"
    first = next(iter(formats.items()))
    other = next((n, f) for n, f in formats.items() if f != first[1])
    why = ("preference pairs listed together need one formatting" if any(ranking.values()) else
           "entries listed together are trained as one dataset (Alpaca and ShareGPT entries mix, as chat turns)")
    raise ConfigError(key, f"{first[0]!r} is read as {first[1]} and {other[0]!r} as {other[1]}: {why}")


def entry_format(got: dict[str, Any], user_format: str) -> str:
    """How one entry is read: an alpaca entry is rendered with the Alpaca templates, with the chat template under
    ``data.format=chat`` (as LLaMA-Factory renders every layout: how rows with system / history columns train), or
    read as documents under ``data.format=text`` (LLaMA-Factory's pre-training entries: the text in the prompt
    column)."""
    return user_format if got["format"] == "alpaca" and user_format in ("chat", "text") else got["format"]


def _mix_entries(path: str) -> tuple[str, list[dict[str, Any]]]:
    """(the registry file, the settings of every entry) of a path made by :func:`mix_path`."""
    file, _, names = str(path)[len(MIX_PREFIX):].rpartition(MIX_SEP)
    return file, [entry_settings(name, file) for name in names.split(",")]


def mix_parts(path: str, d: Any) -> list[tuple[Any, str, int | None]]:
    """[(an entry's data options, its own format, its num_samples)] of a path made by :func:`mix_path`; ``d``: the
    run's data options (``d.format``: how the rows are rendered)."""
    return [(_with_entry(d, got, d.format, own_columns=True), entry_format(got, d.format), got["num_samples"])
            for got in _mix_entries(path)[1]]


def mix_files(path: str) -> list[tuple[str, str]]:
    """(name, loader) of the registry file and of every entry's file or Hub dataset in a path made by
    :func:`mix_path`: what the rows of the list are read from (the data cache hashes them)."""
    file, parts = _mix_entries(path)
    return [(file, "json"), *((got["path"], got["loader"]) for got in parts)]


Entries = list[tuple[str, dict[str, Any]]]  # (name, its settings) of every entry named, in order


def entries(dataset: str | None, eval_dataset: str | None, dataset_dir: str,
            user_format: str = "alpaca") -> tuple[Entries, Entries, str]:
    """(the training entries, the validation entries (none: []), how the training rows render); one-line
    ConfigError when the validation entry has no training entry, or when entries cannot be rendered together
    (each list as :func:`mix_format` reads it with ``data.format=user_format``, validation rows as the training
    rows)."""
    if not dataset:
        raise ConfigError("data.eval_dataset", "needs data.dataset (the training entry whose format and columns "
                                               "it is read with)")
    train = [(n, entry_settings(n, dataset_dir)) for n in names_of(dataset)]
    evals = [(n, entry_settings(n, dataset_dir)) for n in names_of(eval_dataset, "data.eval_dataset")] \
        if eval_dataset else []
    got, ev = train[0][1], evals[0][1] if evals else None
    fmt = mix_format(train, user_format)
    if evals:
        ev_fmt = mix_format(evals, user_format, "data.eval_dataset")
        if got["ranking"] != ev["ranking"]:
            raise ConfigError("data.eval_dataset", f"{eval_dataset!r} and {dataset!r}: one holds preference pairs "
                                                   "(ranking: true), the other does not")
        if ev_fmt != fmt and not (fmt == "sharegpt" and ev_fmt in ("alpaca", "chat") and not got["ranking"]):
            raise ConfigError("data.eval_dataset", f"{eval_dataset!r} is read as {ev_fmt} and {dataset!r} as {fmt}: "
                                                   "validation rows are rendered like the training rows")
    return train, evals, fmt


def _same_layout(got: dict[str, Any], ev: dict[str, Any] | None) -> bool:
    """The validation entry is read with the training entry's own options (format and columns)."""
    return ev is None or (ev["format"], ev["columns"]) == (got["format"], got["columns"])


def apply(d: Any) -> Any:
    """``d`` (a plain DataConfig) with its ``dataset`` / ``eval_dataset`` entries' settings in place (``d``
    itself when neither is set). A list of entries (or a validation entry read otherwise than the training
    one) is read through a :func:`mix_path`, each entry with its own file, columns and num_samples."""
    import dataclasses

    if not d.dataset and not d.eval_dataset:
        return d
    train, evals, fmt = entries(d.dataset, d.eval_dataset, d.dataset_dir, d.format)
    got, ev = train[0][1], evals[0][1] if evals else None
    file = info_path(d.dataset_dir).resolve()
    if len(train) == 1:
        out = _with_entry(d, got, d.format)
        limit = [n for n in (d.max_rows, got["num_samples"]) if n is not None]
        out = dataclasses.replace(out, max_rows=min(limit) if limit else None)
    else:  # data.max_rows, the shuffle and the split: over the whole list
        out = dataclasses.replace(d, path=mix_path(file, [n for n, _ in train]), loader="mix", format=fmt)
    if not evals:
        return out
    single = len(train) == 1 and len(evals) == 1 and _same_layout(got, ev)
    return dataclasses.replace(out, validation_path=ev["path"] if single and ev else
                               mix_path(file, [n for n, _ in evals]))


def _with_entry(d: Any, got: dict[str, Any], user_format: str, own_columns: bool = False) -> Any:
    """``d`` reading one entry: its file or Hub dataset, format and columns (``own_columns``: only the entry's, as
    each entry of a list is read; else over ``d``'s)."""
    import dataclasses

    mapped = dict(got["columns"])
    fmt = entry_format(got, user_format)
    if fmt == "text" and "instruction" in mapped:
        mapped["text"] = mapped.pop("instruction")
    # (data.columns.references, the validation answers, is no LLaMA-Factory column: every entry reads it)
    own = type(d.columns)(references=getattr(d.columns, "references", None))
    columns = dataclasses.replace(own if own_columns else d.columns, **mapped)
    extra = {**d.extra, **({"data_dir": got["data_dir"]} if got["data_dir"] else {})}
    return dataclasses.replace(d, path=got["path"], loader=got["loader"], format=fmt, columns=columns,
                               split=got["split"], subset=got["subset"], revision=got["revision"], extra=extra)


def dataset_problem(cfg: Any, dataset: str | None = None) -> str | None:
    """One line when ``data.dataset`` / ``data.eval_dataset`` name no readable entry, a local file is missing,
    or a preference dataset (``ranking: true``) would be trained as SFT; None when all is well or no dataset is
    named. Called by the CLI and the sweeper (``dataset``: one searched value) before anything is written."""
    from omegaconf import OmegaConf

    dataset = dataset if dataset is not None else OmegaConf.select(cfg, "data.dataset")
    eval_dataset = OmegaConf.select(cfg, "data.eval_dataset")
    if not dataset and not eval_dataset:
        return None
    try:
        train, evals, _ = entries(dataset, eval_dataset, str(OmegaConf.select(cfg, "data.dataset_dir")),
                                  str(OmegaConf.select(cfg, "data.format", default="alpaca")))
    except ConfigError as err:
        return str(err)
    for key, listed in ((KEY, train), ("data.eval_dataset", evals)):
        for name, settings in listed:
            if settings["loader"] != "hub" and not Path(settings["path"]).exists():
                return f"{key}: {name!r}: no such file {settings['path']} (file_name, next to the dataset_info.json)"
    got = train[0][1]
    if got["ranking"] and OmegaConf.select(cfg, "stage.name") in (None, "sft"):
        return (f"{KEY}: {dataset!r} is a preference dataset (ranking: true, chosen / rejected answers): "
                "train it with stage=dpo (or stage=kto)")
    return None
