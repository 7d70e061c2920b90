"""The errors a user can fix: printed by the CLI as one line (``ftsweep: error: ...``), exit code 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input on the command line, in config or in a file: one line, exit code 2, nothing written."""


class ConfigError(UsageError, ValueError):
    """A bad config value: ``key`` is the dotted path, the message says what is allowed."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")
