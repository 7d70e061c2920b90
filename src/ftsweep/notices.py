"""One-time steps that take a while (building the tiny model, a first tokenization) tell the user so.

:func:`notice` prints ``ftsweep: <message>`` on stderr, which is the console of a one-off run but only the
trial's ``trial.log`` inside a sweep. A sweep trial therefore also appends the line to the file named by
``FTSWEEP_NOTICE_FILE`` (set per trial by the sweeper), whose new lines the sweep prints on its own console
(:class:`ftsweep.sweeper.progress.NoticeRelay`). Nothing heavy imported.
"""

from __future__ import annotations

import os
import time

from ftsweep.console import is_main_process, say

ENV = "FTSWEEP_NOTICE_FILE"


def notice(message: str) -> None:
    """``ftsweep: <message>`` on stderr, and on the sweep's console when this runs inside a sweep trial."""
    say(message)
    path = os.environ.get(ENV)
    if path and is_main_process():  # a trial under torchrun: rank 0's line only
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(" ".join(message.split()) + "\n")
        except OSError:
            pass  # the sweep folder went away: the trial log still has the line


class Ticker:
    """Progress of a loop of ``total`` steps as a notice every ``every_s`` seconds, and at the end unless
    ``final_line`` is False (when the caller says how it went)."""

    def __init__(self, what: str, total: int, every_s: float = 5.0, final_line: bool = True):
        self.what, self.total, self.every_s, self.final_line = what, total, every_s, final_line
        self.start = self._last = time.monotonic()

    def step(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self._last < self.every_s:
            return
        self._last = now
        took = now - self.start
        if done >= self.total:
            if self.final_line:
                notice(f"{self.what}: {done}/{self.total} done in {took:.0f} s")
        else:
            left = took / max(done, 1) * (self.total - done)
            notice(f"{self.what}: {done}/{self.total} ({took:.0f} s, about {left:.0f} s left)")
