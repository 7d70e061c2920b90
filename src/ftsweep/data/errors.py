"""Bad-data errors and the policy that decides whether they stop the run or are skipped and counted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ftsweep.errors import DataError  # the class lives in the one error root

log = logging.getLogger(__name__)




class BadRows:
    """Applies ``data.bad_rows``: ``fail`` raises the first :class:`DataError`, ``skip`` counts it."""

    def __init__(self, policy: str):
        self.policy = policy
        self.skipped = 0
        self.examples: list[str] = []
        self.in_file_order: list[Any] = []

    def encoding(self, read: list[Any], used: list[Any]) -> None:
        """The records about to be encoded (``used``: shuffled, split) and the records as read (``read``: file
        order, the validation file's after the data file's). Rows are encoded in their shuffled order, but a user
        fixes a file from the top: under ``fail`` the error names the first bad row of ``used`` in file order."""
        ids = {id(r) for r in used}
        self.in_file_order = [r for r in read if id(r) in ids]

    def handle(self, err: DataError, rec: Any = None, check: Callable[[Any], Any] | None = None) -> None:
        """Raise under ``fail`` (``err``, or the error of an earlier row in file order that ``check`` rejects,
        when ``rec`` is the row ``err`` is about); under ``skip`` count it and log the first few."""
        if self.policy == "fail":
            raise self._first_bad(err, rec, check)
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(str(err))
            log.warning("skipping bad row: %s", err)

    def _first_bad(self, err: DataError, rec: Any, check: Callable[[Any], Any] | None) -> DataError:
        if rec is None or check is None:
            return err
        for earlier in self.in_file_order:
            if earlier is rec:
                break
            try:
                check(earlier)
            except DataError as first:
                return first
        return err
