"""Where a bad setting was written: the user's config or sweep file, and its line.

A key that fails composition or validation (``lora.dropuot: unknown key``, ``lora.r: Value 'eight' ...``) is named by
its dotted path; when it was written in one of the user's own files (``conf/lora/my_lora.yaml``,
``conf/experiment/x.yaml``, ``sweep/my_search.yaml``) rather than on the command line, the error also names that file
and line, so a user with a dozen option files need not search them. Only the user's roots (``--config-dir``,
``./conf``, the project's ``sweep/``) are named: a shipped file is never the mistake. Imports Hydra, OmegaConf and
PyYAML only (error path; fast).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ftsweep import paths


def _override_keys(overrides: list[str]) -> set[str]:
    return {o.partition("=")[0].lstrip("+~") for o in overrides if "=" in o}


def set_on_command_line(key: str, overrides: list[str], groups: set[str] = frozenset()) -> bool:
    """Whether an override sets ``key`` or a node above it (``lora.target_modules=[...]`` for
    ``lora.target_modules[2]``); an option choice (``lora=my_lora``, a key in ``groups``) sets no key."""
    parts = _parts(key)
    for k in _override_keys(overrides) - set(groups):
        kp = k.split(".")
        if parts[:len(kp)] == kp:
            return True
    return False


def _parts(key: str) -> list[str]:
    """``lora.target_modules[2]`` -> ``["lora", "target_modules"]`` (a list item: the list's line)."""
    return [p for p in re.sub(r"\[[^\]]*\]", "", key).split(".") if p]


def user_file(config_path: str, config_dirs: list[str] | tuple[str, ...] = ()) -> Path | None:
    """The user's file Hydra reads for ``config_path`` (``lora/my_lora``, ``sweep/my_search``), or None when it
    is a shipped one (or a schema)."""
    roots = paths.user_config_dirs(config_dirs)
    for root in roots:
        file = Path(root) / f"{config_path}.yaml"
        if file.is_file():
            return file
    if config_path.startswith("sweep/"):
        for folder in paths.user_sweep_dirs(roots):
            file = folder / f"{config_path.removeprefix('sweep/')}.yaml"
            if file.is_file():
                return file
    return None


def key_line(file: Path, parts: list[str]) -> int | None:
    """The 1-based line of the mapping key at ``parts`` in a YAML file (``defaults`` aside), or None. A key
    written with dots (``optimizer.lr:`` under ``hydra.sweeper.params``) matches several parts at once."""
    import yaml

    try:
        node = yaml.compose(file.read_text(encoding="utf-8-sig"), Loader=yaml.SafeLoader)
    except Exception:  # noqa: BLE001 -- unreadable YAML is reported by its own error
        return None
    return _find(node, parts)


def _find(node: Any, parts: list[str]) -> int | None:
    import yaml

    if not parts or not isinstance(node, yaml.MappingNode):
        return None
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and str(k.value) == name:
                if end == len(parts):
                    return k.start_mark.line + 1
                deeper = _find(v, parts[end:])
                if deeper is not None:
                    return deeper
    return None


def shown(file: Path) -> str:
    """The file as a message names it: relative to the working directory when under it."""
    try:
        return file.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(file)


def locate(key: str, overrides: list[str], items: list[Any],
           config_dirs: list[str] | tuple[str, ...] = ()) -> tuple[Path, int] | None:
    """The user's file and line that set ``key`` (a full dotted path) in the config these overrides compose: the
    last of the files Hydra merges (the one that wins) that writes it; None when the command line sets it or no
    user file does. ``items``: Hydra's defaults list of that compose (``ResultDefault``: which option files it
    reads, in merge order)."""
    if not key:
        return None
    groups = {str(i.config_path).rpartition("/")[0] for i in items if "/" in str(getattr(i, "config_path", "") or "")}
    if set_on_command_line(key, overrides, groups):
        return None
    parts = _parts(key)
    found = None
    for item in items:
        path = getattr(item, "config_path", None)
        if not path or getattr(item, "is_self", False) and path == "train":
            continue
        file = user_file(path, config_dirs)
        if file is None:
            continue
        package = [p for p in (getattr(item, "package", "") or "").split(".") if p]
        if parts[:len(package)] != package:
            continue
        line = key_line(file, parts[len(package):])
        if line is not None:
            found = (file, line)
    return found


def where(key: str, overrides: list[str], items: list[Any], config_dirs: list[str] | tuple[str, ...] = ()) -> str:
    """`` (conf/lora/my_lora.yaml line 4)`` for :func:`locate`, or ""."""
    found = locate(key, overrides, items, config_dirs)
    if not found:
        return ""
    file, line = found
    group = file.parent.name
    note = ""
    if "." not in key and group not in ("experiment", "sweep", "by_objective") and _global_header(file):
        # an option file marked global: its keys land at the top (lora's r as r), so nothing is where it belongs
        note = f"; its '# @package _global_' line puts its keys at the top level, not under {group}: remove it"
    return f" ({shown(file)} line {line}{note})"


def _global_header(file: Path) -> bool:
    """Whether the file's header comments (before its first YAML line) say ``# @package _global_``."""
    for text in file.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        if text.strip() and not text.lstrip().startswith("#"):
            return False
        if re.match(r"#\s*@package\s+_global_\s*$", text.strip()):
            return True
    return False


def sweep_param_where(name: str, sweep: str | None, overrides: list[str],
                      config_dirs: list[str] | tuple[str, ...] = ()) -> str:
    """`` (sweep/my_search.yaml line 17)``: where the user's sweep file ``sweep=<sweep>`` defines the search
    space of ``name`` (``hydra.sweeper.params.<name>``, or a variable / derived key); "" when the command line
    gives it or the file is not the user's."""
    if not sweep or name in _override_keys(overrides):
        return ""
    file = user_file(f"sweep/{sweep}", config_dirs)
    if file is None:
        return ""
    for section in ("params", "variables", "derived"):
        line = key_line(file, ["hydra", "sweeper", section, *name.split(".")])
        if line is not None:
            return f" ({shown(file)} line {line})"
    line = key_line(file, _parts(name))  # a sweeper setting (hydra.sweeper.n_trials) or a fixed key
    return f" ({shown(file)} line {line})" if line is not None else ""


def defaults_entry(group: str, option: str, config_dirs: list[str] | tuple[str, ...] = ()) -> str:
    """`` (conf/experiment/x.yaml line 5)``: the user's file whose defaults list names ``group: option`` (an
    ``override /lora: my_lorra`` Hydra reports as the primary config's), or ""."""
    roots = paths.user_config_dirs(config_dirs)
    pattern = re.compile(rf"^\s*-?\s*(override\s+)?/?{re.escape(group)}(@[\w.]+)?\s*:\s*{re.escape(option)}\s*(#.*)?$")
    for folder in [*roots, *paths.user_sweep_dirs(roots)]:
        for file in sorted(Path(folder).rglob("*.yaml")):
            try:
                lines = file.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for n, text in enumerate(lines, 1):
                if pattern.match(text):
                    return f" ({shown(file)} line {n})"
    return ""


def defaults_list_error(text: str, config_dirs: list[str] | tuple[str, ...] = ()) -> str | None:
    """One line for Hydra's error about the defaults list of one of the user's files (``In 'experiment/x': Could
    not override 'data@experiment.data'`` -- a file without ``# @package _global_``; ``Could not override 'lorra'``
    -- no such group; ``Could not load 'optimizer/lora_schema'``), naming the file and, where it can, the line;
    None when the file Hydra names is not the user's."""
    m = re.match(r"In '?([\w/.@-]+?)'?: (.*)", text, re.DOTALL)
    if not m or m.group(1) == "train":
        return None
    file = user_file(m.group(1), config_dirs)
    if file is None:
        return None
    place, rest = shown(file), " ".join(m.group(2).split())
    lines = file.read_text(encoding="utf-8-sig", errors="replace").splitlines()

    def line_of(pattern: str) -> str:
        n = next((i for i, t in enumerate(lines, 1) if re.search(pattern, t)), None)
        return f" line {n}" if n else ""

    o = re.match(r"Could not override '([\w/]+)@[\w.]+'", rest)
    if o:  # the override's group is read relative to the file's own package: it is not a global file
        group = o.group(1)
        at = line_of(r"override\s+/?" + re.escape(group) + r"\s*:")
        return (f"{place}{at}: override /{group}: only a global file "
                f"can override another group's option: make '# @package _global_' its first line (as "
                "conf/experiment/*.yaml and sweep files have it)")
    o = re.match(r"Could not override '([\w/.]+)'", rest)
    if o:
        group = o.group(1)
        at = line_of(r"override\s+/?" + re.escape(group) + r"\s*:")
        groups = ", ".join(sorted(p.name for p in paths.shipped_conf_dir().iterdir()
                                  if p.is_dir() and p.name != "experiment" and not p.name.startswith(("_", "."))))
        return f"{place}{at}: override /{group}: no such config group in the defaults list (groups: {groups})"
    o = re.match(r"Could not load '([\w/.-]+)'", rest)
    if o:
        name = o.group(1).rpartition("/")[2]
        at = line_of(r"\b" + re.escape(name) + r"\b")
        return (f"{place}{at}: its defaults list names {name!r}, which is no config "
                f"here ({o.group(1)} not found)" + (
                    f"; the schema of group {m.group(1).split('/')[0]} is {m.group(1).split('/')[0]}_schema"
                    if name.endswith("_schema") else ""))
    return f"{place}: {rest.split(' Config search path:')[0].split(' Available options')[0]}"
