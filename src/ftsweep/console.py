"""User-facing one-line messages (stderr, so piped stdout such as ``ftsweep inspect --plain`` stays clean), and
:func:`copied_to`, which keeps a single run's console output in its log file as well."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


def is_main_process() -> bool:
    """False on the ranks after the first of a distributed launch (torchrun / accelerate set ``RANK``): they
    start no W&B run and print nothing of their own, so that a run under DDP says everything once."""
    return os.environ.get("RANK", "0") in ("0", "")


def say(message: str) -> None:
    """Print ``ftsweep: <message>`` on stderr (once: not also logged, which Hydra would echo again; only on the
    first rank under DDP)."""
    if not is_main_process():
        return
    print(f"ftsweep: {message}", file=sys.stderr, flush=True)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _LogFile:
    """Complete lines go to the file: a progress bar's redraws (``\\r``) leave only its last state, colour codes go."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8", errors="replace")
        self.lock = threading.Lock()

    def feed(self, pending: list[str], text: str) -> None:
        with self.lock:
            *lines, pending[0] = (pending[0] + text).split("\n")
            for line in lines:
                self.file.write(_ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1]) + "\n")
            if lines:
                self.file.flush()

    def close(self, pendings: list[list[str]]) -> None:
        for pending in pendings:
            if pending[0].strip("\r"):
                self.feed(pending, "\n")
        self.file.close()


class _Tee:
    """A console stream that also feeds the log file; everything else (isatty, fileno, encoding) is the stream's,
    so progress bars and colours behave as they would without it."""

    def __init__(self, stream: TextIO | None, log: _LogFile) -> None:
        self._stream, self._log, self._pending = stream, log, [""]

    def write(self, text: str) -> int:
        written = self._stream.write(text) if self._stream is not None else len(text)
        try:
            self._log.feed(self._pending, text)
        except (OSError, ValueError):
            pass  # the log file went (its folder removed): the console still has it
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        """Not the tee's to close: the console stream stays open (a library closing what it took for stderr,
        as absl's log handler does, must not close the console), the log file is closed by :func:`copied_to`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def copied_to(path: Path) -> Iterator[TextIO]:
    """Everything printed on stdout and stderr while inside (ftsweep's lines, warnings, progress bars, third-party
    loggers writing to the console) is appended to ``path`` too: Hydra's job log (``train.log``) then holds the
    run's output, as a sweep trial's ``trial.log`` does. Hydra's own log records already go to that file, so the
    root logger's handlers are left alone. Yields a stream that writes to the file only (for lines that the
    console gets later, such as the error that ends the run)."""
    log = _LogFile(path)
    out, err, file_only = _Tee(sys.stdout, log), _Tee(sys.stderr, log), _Tee(None, log)
    originals = {id(sys.stdout): out, id(sys.stderr): err}
    moved = []
    for logger in list(logging.root.manager.loggerDict.values()):
        for handler in getattr(logger, "handlers", []):  # (placeholders have none)
            if type(handler) is logging.StreamHandler and id(handler.stream) in originals:
                moved.append((handler, handler.setStream(originals[id(handler.stream)])))
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield file_only  # type: ignore[misc]
    finally:
        sys.stdout, sys.stderr = saved
        for handler, stream in moved:
            handler.setStream(stream)
        try:
            log.close([out._pending, err._pending, file_only._pending])
        except (OSError, ValueError):
            pass
