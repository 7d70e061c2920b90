"""The config errors (defined in :mod:`ftsweep.errors`, the one error root; kept importable here)."""

from __future__ import annotations

from ftsweep.errors import ConfigError, UsageError

__all__ = ["ConfigError", "UsageError"]
