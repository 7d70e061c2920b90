"""``module.path:name`` -> the callable it names, for the user's own code in config (``objective.function``,
a GRPO ``function`` reward): one import rule for both, the working directory included (the user's module next
to their data, as ``data.path`` is read from there)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from ftsweep.config.errors import ConfigError


def import_callable(spec: str | None, key: str) -> Callable[..., Any]:
    """The callable ``spec`` names; a :class:`ConfigError` naming ``key`` when it cannot be imported."""
    module_name, sep, attr = str(spec or "").partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(key, f"must be 'module.path:function' (got {spec!r})")
    from ftsweep.paths import launch_dir

    here = str(launch_dir())  # (the working directory, or where ftsweep was run under hydra.job.chdir=true)
    if here not in sys.path:
        sys.path.append(here)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 -- any import failure is the user's module
        raise ConfigError(key, f"cannot import {module_name!r}: {type(err).__name__}: {err}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(key, f"{module_name!r} has no callable {attr!r}")
    return fn
