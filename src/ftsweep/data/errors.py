"""Bad-data errors and the policy that decides whether they stop the run or are skipped and counted."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A bad row or file, as one line naming where and what.

    ``str(err)`` reads like ``data/x.jsonl line 7: field 'output': expected a string, got int`` so
    training and ``ftsweep inspect`` can print it as ``ftsweep: error: ...``.
    """

    def __init__(self, where: str, message: str, field: str | None = None):
        self.where = where
        self.field = field
        self.message = message
        text = f"{where}: field {field!r}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


class BadRows:
    """Applies ``data.bad_rows``: ``fail`` raises the first :class:`DataError`, ``skip`` counts it."""

    def __init__(self, policy: str):
        self.policy = policy
        self.skipped = 0
        self.examples: list[str] = []

    def handle(self, err: DataError) -> None:
        """Raise ``err`` under ``fail``; under ``skip`` count it and log the first few."""
        if self.policy == "fail":
            raise err
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(str(err))
            log.warning("skipping bad row: %s", err)
