"""A warm sweep worker's composed trial config, reused when only the sampled values change.

Hydra composes a trial's config from its overrides in about 0.13 s of CPU on a 2-core machine (reading and
merging the config files of the defaults list): on the quickstart sweep that was as much as a sixth of a
warm trial that is not training. Consecutive trials of one sweep differ in the values the sampler drew
(``optimizer.lr=0.0041`` vs ``0.0123``, ``hydra.sweep.subdir=trial_3`` vs ``trial_4``); when nothing else
differs the defaults list, and so every config file read, is the same. :class:`ComposeMemo` keeps one composed
config per combination of everything else (group choices such as ``lora=r8`` / ``lora=r16`` included; the 16
most recent) and builds the new config from a copy of the matching one: the changed values are applied as
Hydra applies a command-line value (``_apply_overrides_to_config``), and setting a plain scalar again where an
earlier plain scalar of the same type stood gives the node a fresh compose gives (the tests compare the whole
config, ``hydra`` node included, node by node). The override lists (``hydra.overrides``),
``hydra.job.override_dirname``, ``hydra.job.env_set`` (``env_copy``) and ``hydra.runtime.cwd`` are set again
exactly as Hydra sets them.

Composed anew (Hydra's own path) when no kept config matches: a new config group choice (``lora=r16``), an
override of another form (``+key``, ``~key``, ``++key``, a package, a dict or list or null value), a value of
another type, a key given twice, a new or removed override, or a config file of the search path (or a sweep
file) changed on disk since (size and mtime of the YAML files up to ``root/group/sub/``; hidden folders such
as a run's ``.hydra/`` skipped). Any error while reusing also composes anew, so a bad
value gets Hydra's own error.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

SCALARS = (bool, int, float, str)


class ComposeMemo:
    """The composed trial configs of one process, one per signature (see the module)."""

    KEEP = 16  # signatures kept (a sweep over group choices has one per combination; the oldest goes first)

    def __init__(self) -> None:
        self._kept: dict[tuple, tuple[list[Any], DictConfig, tuple]] = {}  # signature -> overrides, config, files
        self.reused = 0  # trials whose config was built from an earlier one
        self.hit = False  # the last load was one of them (the warm worker's log line says so)

    def load(self, loader: Any, overrides: list[str], compose: Callable[[Any, list[str]], DictConfig]) -> DictConfig:
        """The trial config of ``overrides``: built from a kept one when only sampled values differ, else
        ``compose(loader, overrides)`` (Hydra's ``load_configuration``), then kept."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.hit = False
        try:
            parsed = OverridesParser.create().parse_overrides(list(overrides))
            signature = _signature(loader.repository, parsed)
        except Exception:  # noqa: BLE001 -- Hydra's own compose below reports a bad override its way
            parsed, signature = [], None
        kept = self._kept.pop(signature, None) if signature is not None else None
        if kept is not None and config_files(kept[1]) == kept[2]:
            try:
                cfg = _with_values(kept[1], kept[0], parsed)
            except Exception:  # noqa: BLE001 -- composed anew: Hydra's own error for a bad value
                cfg = None
            if cfg is not None:
                self._kept[signature] = kept  # the most recently used last
                self.reused += 1
                self.hit = True
                return cfg
        cfg = compose(loader, overrides)
        if signature is not None:
            self._kept[signature] = (parsed, copy.deepcopy(cfg), config_files(cfg))
            while len(self._kept) > self.KEEP:
                del self._kept[next(iter(self._kept))]
        return cfg


def _signature(repo: Any, parsed: list[Any]) -> tuple | None:
    """What must be equal for two trials' configs to differ only in plain values: each override's form, key
    and, except for a plain scalar ``key=value`` that names no config group, its value (None: never reuse)."""
    from hydra.core.override_parser.types import OverrideType

    out, keys = [], set()
    for o in parsed:
        if o.is_sweep_override():
            return None
        value = o.value()
        plain = (o.type == OverrideType.CHANGE and o.package is None and type(value) in SCALARS
                 and not repo.group_exists(o.key_or_group))
        if plain:
            if o.key_or_group in keys:
                return None  # the later one wins in Hydra: keep it simple, compose
            keys.add(o.key_or_group)
        out.append((o.type.name, o.key_or_group, o.package, type(value).__name__,
                    None if plain else o.input_line))
    return tuple(out)


def _with_values(base: DictConfig, old: list[Any], new: list[Any]) -> DictConfig:
    """``base`` (composed from ``old``) with the changed plain values of ``new``, finished as Hydra does."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from ftsweep.config.compose import masked_overrides_dirname

    cfg = copy.deepcopy(base)
    changed = [n for o, n in zip(old, new, strict=True) if o.input_line != n.input_line]
    ConfigLoaderImpl._apply_overrides_to_config(changed, cfg)
    with open_dict(cfg.hydra):
        for kind, is_hydra in (("hydra", True), ("task", False)):
            lines = list(cfg.hydra.overrides[kind])
            mine = [n.input_line for n in new if n.is_hydra_override() == is_hydra]
            cfg.hydra.overrides[kind] = lines[:len(lines) - len(mine)] + mine  # Hydra appended them last
        for key in cfg.hydra.job.env_copy:
            cfg.hydra.job.env_set[key] = os.environ[key]
        cfg.hydra.runtime.cwd = os.getcwd()
        named = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = masked_overrides_dirname(
            overrides=[n for n in new if not n.is_hydra_override()], kv_sep=named.kv_sep, item_sep=named.item_sep,
            exclude_keys=named.exclude_keys)
    return cfg


DEPTH = 3  # folder levels read: the root, root/group, root/group/sub (root/group/sub/option.yaml)


def config_files(cfg: DictConfig) -> tuple:
    """(path, size, mtime) of every config file under the composed config's file sources (at most ``DEPTH``
    levels down, hidden folders skipped: a ``--config-dir .`` project's ``outputs/.../.hydra/*.yaml``, which
    grow with every trial, are no config), and the set of sweep files registered in the ConfigStore: what a
    change on disk would show in."""
    from ftsweep.config import compose

    found = []
    for source in cfg.hydra.runtime.config_sources:
        if source.schema != "file":
            continue
        top = Path(source.path)
        for root, dirs, names in os.walk(top):
            if len(Path(root).relative_to(top).parts) >= DEPTH:
                dirs[:] = []
                continue
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.endswith((".yaml", ".yml")):
                    st = (Path(root) / name).stat()
                    found.append((os.path.join(root, name), st.st_size, st.st_mtime_ns))
    return tuple(sorted(found)), compose._STORED_KEY[0]
