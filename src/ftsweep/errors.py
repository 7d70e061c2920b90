"""ftsweep's errors, and the one place that turns them into an exit code and a printed line.

Library code only raises. The entry points (``ftsweep.cli.main``, the Hydra task of ``ftsweep train``, the
trial entry :mod:`ftsweep.sweeper.trial` and the warm worker) call :func:`report`, which prints one line
with secrets masked and returns the exit code:

    UsageError        2   bad input (config, data, command line, sweep file): one line, nothing written
      ConfigError         a bad config value (``key``: the dotted path)
      ConfigFailure       composition or validation failed
      DataError           a bad row or file (``where``, ``field``)
      SweepInputError     bad sweep input (grammar, search space, storage, sweeper settings)
      MemoryInfeasible 1  the estimate exceeds free memory: the run fails (reason ``oom: ...``) unloaded
    Failure           1   a run that failed (RunFailed, with the cause's traceback) or a sweep that stopped
    KeyboardInterrupt 130

Nothing heavy is imported here.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


class UsageError(Exception):
    """Bad input on the command line, in config or in a file: one line, exit code 2, nothing written."""

    exit_code = 2


class ConfigError(UsageError, ValueError):
    """A bad config value: ``key`` is the dotted path, the message says what is allowed."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


class ConfigFailure(UsageError):
    """Composition or validation failed; ``str()`` is one line naming the key."""


class DataError(UsageError, ValueError):
    """A bad row or file, as one line naming where and what.

    ``str(err)`` reads like ``data/x.jsonl line 7: field 'output': expected a string, got int``.
    """

    def __init__(self, where: str, message: str, field: str | None = None):
        self.where = where
        self.field = field
        self.message = message
        text = f"{where}: field {field!r}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


class SweepInputError(UsageError, ValueError):
    """Bad sweep input (grammar, search space, storage, sweeper settings); ``str()`` is one line."""


class MemoryInfeasible(UsageError, RuntimeError):
    """The estimate of a run exceeds the free memory of its device: the trial fails without loading.

    The settings asked for it, but within a sweep it is one trial's outcome (reason ``oom: ...``, which
    the sweeper classifies and may retry smaller), so the run fails with exit code 1 like any other."""

    exit_code = 1


class Failure(Exception):
    """Not bad input: a run that failed, a sweep that stopped. Exit code 1."""

    exit_code = 1
    prefix = "error"


class RunFailed(Failure):
    """A run failed; its ``failure.json`` is written. ``__cause__`` is the original error (traceback shown)."""

    prefix = "run failed"


class SweepAborted(Failure, RuntimeError):
    """The sweep stopped early (too many failed trials in a row, or a trial bad-input error)."""


class SweepBadData(SweepAborted):
    """The sweep stopped at a trial's bad data row, which every trial reads: bad input, exit code 2."""

    exit_code = 2


def exit_code(err: BaseException) -> int:
    """The process exit code for ``err``: 2 bad input, 130 interrupted, 1 anything else."""
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else 1
    return int(getattr(err, "exit_code", 1))


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name when it has none)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def one_line(message: object) -> str:
    """``message`` as one line with URL passwords and secret environment values masked."""
    from ftsweep.tracking import scrub

    return scrub(" ".join(str(message).split()))


# errno values that say the machine, not the input, stopped a write: a full disk or quota, a file grown past
# ``ulimit -f``, a folder that went read-only, a failing disk
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
SQLITE_WRITE_ERRORS = ("database or disk is full", "attempt to write a readonly database", "disk i/o error")


def write_trouble(err: BaseException) -> str | None:
    """``<file>: <why>`` (or ``<why>``) when ``err`` or an error it came from (``__cause__`` / ``__context__``) is a
    write that the machine refused (:data:`WRITE_ERRNOS`, SQLite's "database or disk is full" under Optuna's
    StorageInternalError); None for anything else."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            why = e.strerror or str(e)
            return f"{e.filename}: {why}" if e.filename else why
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is not None and isinstance(e, sqlite3.OperationalError) and any(
                s in str(e).lower() for s in SQLITE_WRITE_ERRORS):
            return first_line(e)
        todo += [e.__cause__, e.__context__]
    return None


def quiet_log_write_errors() -> None:
    """A log file the machine stops taking (train.log, W&B's debug.log on a disk that filled up): one
    ``ftsweep: warning:`` line per file, then its records are dropped. By default :mod:`logging` printed a
    ``--- Logging error ---`` traceback on stderr for every record (hundreds in a run that went on to fail on the
    full disk, which its own line then says). Other logging errors (a bad format string) are shown as before.
    Idempotent: patches :meth:`logging.Handler.handleError` once per process."""
    import logging

    original = logging.Handler.handleError
    if getattr(original, "_ftsweep", False):
        return
    warned: set[str] = set()

    def handle_error(self: logging.Handler, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        why = write_trouble(err) if err is not None else None
        if why is None:
            original(self, record)
            return
        name = str(getattr(self, "baseFilename", "") or type(self).__name__)
        if name in warned:
            return
        warned.add(name)  # (before printing: a console capture that logs its own errors comes back here)
        why = why.removeprefix(f"{name}: ")
        try:
            print(f"ftsweep: warning: cannot write the log {name}: {why}; its lines are lost", file=sys.stderr)
        except Exception:  # noqa: BLE001,S110 -- stderr itself gone: nothing left to tell
            pass

    handle_error._ftsweep = True  # type: ignore[attr-defined]
    logging.Handler.handleError = handle_error  # type: ignore[method-assign]


def report(err: BaseException, stream: IO[str] | None = None) -> int:
    """Print ``err`` the way ftsweep prints errors and return its exit code.

    Bad input is one line ``ftsweep: error: ...``; a failed run first shows the traceback of what failed (not
    for a write the machine refused, :func:`write_trouble`), then ``ftsweep: run failed: ...``; any other exception
    (a bug) its traceback and a last line."""
    stream = stream or sys.stderr
    code = exit_code(err)
    if isinstance(err, SystemExit):
        return code
    if isinstance(err, KeyboardInterrupt):
        print(f"ftsweep: error: {one_line(str(err)) if str(err) else 'interrupted'}", file=stream)
        return code
    shown = err.__cause__ if isinstance(err, RunFailed) and err.__cause__ is not None else err
    # (a run stopped by a full disk or a read-only folder: its one line says what the traceback would)
    if (shown is not err or not isinstance(err, (UsageError, Failure))) and write_trouble(shown) is None:
        from ftsweep.tracking import scrub  # (an error's message may quote a storage URL or a token's value)

        stream.write(scrub("".join(traceback.format_exception(type(shown), shown, shown.__traceback__))))
    prefix = getattr(err, "prefix", "error")
    text = str(err) if isinstance(err, (UsageError, Failure)) else f"{type(err).__name__}: {err}"
    print(f"ftsweep: {prefix}: {one_line(text)}", file=stream)
    return code


@contextmanager
def sigterm_as_interrupt(enabled: bool = True) -> Iterator[None]:
    """While inside (in the main thread), SIGTERM (``kill``, a cluster's time limit) raises KeyboardInterrupt
    ("terminated (SIGTERM)"), so a run or a sweep stops as on Ctrl-C and its line says how to go on, instead of the
    process dying without a word."""
    import signal
    import threading

    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
