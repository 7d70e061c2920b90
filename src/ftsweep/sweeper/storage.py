"""Open an Optuna storage from a URL, with one-line errors. Shared by the sweep and trial processes.

URLs: any SQLAlchemy URL Optuna accepts (``sqlite:///outputs/sweeps/x/study.db``,
``postgresql://user@host/db``), or ``journal:<file>`` for an Optuna journal file (works on file
systems where SQLite locking does not, e.g. NFS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsweep.sweeper.grammar import SweepInputError

HEARTBEAT_ATTR = "ftsweep:heartbeat"


def open_storage(url: str) -> Any:
    """An Optuna storage object for ``url``; raises :class:`SweepInputError` if it cannot be opened."""
    import optuna

    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):].removeprefix("//"))
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:"):
            # Several trial processes report to one file at once: wait for the lock instead of failing.
            engine_kwargs["connect_args"] = {"timeout": 120}
            db = url.split(":///", 1)[-1]
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except SweepInputError:
        raise
    except Exception as err:
        text = " ".join(str(err).split())[:300] or type(err).__name__
        raise SweepInputError(f"cannot open storage {redact(url)}: {text}") from err


def redact(url: str) -> str:
    """``url`` without a password (storage URLs are printed and written to reports)."""
    from ftsweep.tracking import mask_url_passwords

    return mask_url_passwords(url)


def record_heartbeat(storage: Any, trial_id: int) -> None:
    """Mark a RUNNING trial as alive (our own attribute works for every storage, the journal included)."""
    import time

    storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
