"""Compose the config (Hydra), turn Hydra/OmegaConf errors into one line naming the key, and run the
Hydra entry point. Imports Hydra and OmegaConf only (fast)."""

from __future__ import annotations

import re
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftsweep.config import ConfigError, TrainConfig, register_configs, validate
from ftsweep.paths import conf_dir

CONFIG_NAME = "train"


class ConfigFailure(Exception):
    """Composition or validation failed; ``str()`` is one line naming the key."""


def _allowed_keys(path: str) -> list[str] | None:
    """Field names of the schema node at dotted ``path`` (e.g. 'lora' -> LoraConfig's fields)."""
    node: Any = TrainConfig
    for part in [p for p in path.split(".") if p]:
        hint = typing.get_type_hints(node).get(part)
        # unwrap Optional[...] / X | None to the dataclass inside
        candidates = [hint, *typing.get_args(hint)]
        node = next((c for c in candidates if is_dataclass(c)), None)
        if node is None:
            return None
    return [f.name for f in fields(node)]


def _group_options(group: str) -> list[str]:
    d = conf_dir() / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def explain(err: BaseException) -> str:
    """One line for a Hydra / OmegaConf composition error."""
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    if isinstance(err, ConfigError):
        return str(err)
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    text = str(err).strip()
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        msg = str(getattr(cause, "msg", "") or cause).splitlines()[0]
        if isinstance(cause, MissingMandatoryValue):
            return f"{key}: a value is required (set {key}=...)"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            allowed = _allowed_keys(parent)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            return f"{key}: unknown key{hint}"
        if isinstance(cause, ValidationError):
            return f"{key}: {msg}"
        return f"{key}: {msg}" if key else msg
    # Hydra's own messages, e.g. "In 'train': Could not find 'lora/r99'"
    m = re.search(r"Could not find '([\w/]+)/(\w+)'", text)
    if m:
        group, option = m.group(1), m.group(2)
        return f"{group}={option}: no such option; available: {', '.join(_group_options(group))}"
    m = re.search(r"Could not override '([\w.]+)'", text)
    if m:
        return f"{m.group(1)}: unknown key (to add a new key use +{m.group(1)}=...)"
    return " ".join(text.split())


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a multirun that are not sweeps (no ``a=1,2``, ``interval(...)``, ``choice(...)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keep = []
    for o in overrides:
        try:
            parsed = parser.parse_overrides([o])[0]
        except Exception:
            continue
        if not parsed.is_sweep_override():
            keep.append(o)
    return keep


def compose(overrides: list[str], *, check: bool = True, config_dirs: list[str] | None = None) -> DictConfig:
    """Compose ``conf/train.yaml`` with ``overrides`` and validate it; raise :class:`ConfigFailure`.

    ``config_dirs`` are extra config roots, like ``ftsweep train --config-dir DIR``.
    """
    if config_dirs:
        paths = ",".join(f"file://{Path(d).expanduser().resolve()}" for d in config_dirs)
        overrides = [f"hydra.searchpath=[{paths}]", *overrides]
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))
        if check:
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:
                raise ConfigError(missing[0], f"a value is required (set {missing[0]}=...)")
            validate(cfg)
    except (ConfigError, Exception) as err:
        raise ConfigFailure(explain(err)) from err
    finally:
        GlobalHydra.instance().clear()
    return cfg


def run_hydra(argv: list[str]) -> int:
    """Run the Hydra entry point (``ftsweep train``) with ``argv`` as its command line."""
    import hydra

    register_configs()

    @hydra.main(config_path=str(conf_dir()), config_name=CONFIG_NAME, version_base="1.3")
    def _train(cfg: DictConfig) -> float | None:
        from ftsweep.train import run_from_hydra

        return run_from_hydra(cfg)

    saved = sys.argv
    sys.argv = ["ftsweep train", *argv]
    try:
        _train()
    finally:
        sys.argv = saved
    return 0


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
