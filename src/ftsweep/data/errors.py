"""Bad-data errors and the policy that decides whether they stop the run or are skipped and counted."""

from __future__ import annotations

import logging

from ftsweep.errors import DataError  # the class lives in the one error root

log = logging.getLogger(__name__)




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
