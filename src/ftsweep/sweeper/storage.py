"""Open an Optuna storage from a URL, with one-line errors. Shared by the sweep and trial processes.

URLs: any SQLAlchemy URL Optuna accepts (``sqlite:///outputs/sweeps/x/study.db``,
``postgresql://user@host/db`` through psycopg 3, ``postgresql+psycopg2://...``, ``mysql+pymysql://...``),
or ``journal:<file>`` for an Optuna journal file (works on file systems where SQLite locking does not,
e.g. NFS). Keep passwords out of URLs: libpq reads ``PGPASSWORD`` (or ~/.pgpass) from the environment.

:func:`budget_guard` is the lock that makes "count the study's trials, then ask for one" atomic across
every process sharing the storage (see :func:`ftsweep.sweeper.runner.ask_within_budget`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftsweep.sweeper import attrs
from ftsweep.sweeper.grammar import SweepInputError

HEARTBEAT_ATTR = attrs.HEARTBEAT
FIELD = "hydra.sweeper.storage"
# Drivers a URL scheme needs, and the pip name to suggest when it is missing.
_DRIVER_HINTS = {"psycopg": "pip install 'ftsweep[postgres]'", "psycopg2": "pip install psycopg2-binary",
                 "pymysql": "pip install pymysql", "mysqldb": "pip install mysqlclient"}


def open_storage(url: str) -> Any:
    """An Optuna storage object for ``url``; raises :class:`SweepInputError` (one line, naming
    ``hydra.sweeper.storage``, password masked) if it cannot be opened."""
    import optuna

    _register_password(url)
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
        elif "://" in url:
            # A dropped connection (server restart, idle timeout on a cluster) is re-opened, not an error.
            engine_kwargs["pool_pre_ping"] = True
            if url.split("://", 1)[0].split("+")[0] == "postgresql":
                engine_kwargs["connect_args"] = {"connect_timeout": 10}
        with _schema_lock(url, engine_kwargs):
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except SweepInputError:
        raise
    except Exception as err:
        raise SweepInputError(storage_error(url, err)) from err


@contextlib.contextmanager
def _schema_lock(url: str, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """On PostgreSQL, one process at a time creates Optuna's tables: two sweep processes started together on
    a fresh database otherwise race in CREATE TYPE (duplicate key "pg_type_typname_nsp_index")."""
    if url.split("://", 1)[0].split("+")[0] not in ("postgresql", "postgres"):
        yield
        return
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool, connect_args=engine_kwargs.get("connect_args", {}))
    try:
        with engine.connect() as conn:
            key = {"k": lock_key("optuna-schema")}
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), key)
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), key)
    finally:
        engine.dispose()


def storage_error(url: str, err: BaseException) -> str:
    """One line: ``hydra.sweeper.storage: cannot open <url, password masked>: <first line of the cause>``."""
    cause: BaseException = err
    while cause.__cause__ is not None and not isinstance(cause, ModuleNotFoundError):
        cause = cause.__cause__  # SQLAlchemy wraps the driver's error; the driver's says what went wrong
    if isinstance(cause, ModuleNotFoundError) or isinstance(err, ModuleNotFoundError):
        mod = (getattr(cause, "name", None) or str(cause)).split(".")[0]
        text = f"the database driver {mod!r} is not installed ({_DRIVER_HINTS.get(mod.lower(), f'pip install {mod}')})"
    else:
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip() and "sqlalche.me" not in ln]
        text = " ".join(lines)[:300] or type(cause).__name__
        if "://" not in url and not url.startswith("journal:"):  # a file path given for a URL
            text += f"; a database URL names its driver (sqlite:///{url}), a journal file journal:{url}"
    return f"{FIELD}: cannot open {redact(url)}: {mask_password(text, url)}"


def redact(url: str) -> str:
    """``url`` without a password (storage URLs are printed and written to reports)."""
    from ftsweep.tracking import mask_url_passwords

    masked, pw = mask_url_passwords(url), password_of(url)
    return masked.replace(f":{pw}@", ":***@", 1) if pw else masked


def _register_password(url: str) -> None:
    """A password the masks of free text cannot find (one holding a space or a quote, unencoded) is masked by
    value in every message and file of this process (W&B's arguments, .hydra/, the report)."""
    from ftsweep.tracking import add_secret, mask_url_passwords

    pw = password_of(url)
    if pw and f":{pw}@" in mask_url_passwords(url):
        add_secret(pw)


def password_of(url: str) -> str | None:
    """The password in ``url`` as written (``user:pw@``, also one holding "/" or an unencoded "@", or a
    ``?password=`` query parameter, which SQLAlchemy hands to the driver); None when it holds none."""
    from ftsweep.tracking import QUERY_PASSWORD

    # the whole URL is known here: the password may hold anything up to the "@" before an "@"-free host
    m = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:(.*?)@(?=[^@/?#]*(?:[/?#]|$))", url, re.DOTALL)
    if m and m.group(1):
        return m.group(1)
    q = QUERY_PASSWORD.search(url)
    if q is None:
        return None
    return q.group(0)[len(q.group(1)):] or None


def mask_password(text: str, url: str) -> str:
    """``text`` with the URL's password (if any) replaced by ***, wherever a driver echoed it: as written,
    URL-decoded, and the part after an unencoded "@" (which the driver took for the host name)."""
    from urllib.parse import unquote

    pw = password_of(url)
    text = text.replace(url, redact(url))
    if not pw:
        return text
    pieces = {form.split("@", i)[i] for form in (pw, unquote(pw)) for i in range(form.count("@") + 1)}
    for piece in sorted((p for p in pieces if p == pw or len(p) >= 3), key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


def record_heartbeat(storage: Any, trial_id: int) -> None:
    """Mark a RUNNING trial as alive (our own attribute works for every storage, the journal included)."""
    import time

    storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())


# ---------------------------------------------------------------------- the budget guard
def lock_key(study_name: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory locks, the same in every process for one study."""
    return int.from_bytes(hashlib.sha256(f"ftsweep:{study_name}".encode()).digest()[:8], "big", signed=True)


class BudgetGuard:
    """An exclusive lock per (storage, study) held by one sweep process at a time, on every machine.

    - PostgreSQL: ``pg_advisory_lock`` on a connection of its own (server-side; released by the server if
      the process dies, so a kill -9 never leaves it held).
    - MySQL/MariaDB: ``GET_LOCK`` (the same semantics).
    - SQLite and journal files: an ``flock`` on ``<file>.ftsweep-lock`` next to the database file; these
      storages live on one machine's file system, so every process that can open them can see the lock.
    - anything else: ``fallback`` (a lock file in the sweep directory; exact only on one machine).
    """

    def __init__(self, url: str, study_name: str, fallback: Path):
        self.url = url
        self.study_name = study_name
        self.kind, self.path = _guard_kind(url, fallback)
        self._engine: Any = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.kind in ("postgresql", "mysql"):
            with self._db_lock():
                yield
        else:
            with flock(self.path):
                yield

    @contextlib.contextmanager
    def _db_lock(self) -> Iterator[None]:
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=1, max_overflow=0)
        if self.kind == "postgresql":
            key = lock_key(self.study_name)
            take, give = sa.text("SELECT pg_advisory_lock(:k)"), sa.text("SELECT pg_advisory_unlock(:k)")
            params: dict[str, Any] = {"k": key}
        else:
            name = f"ftsweep:{self.study_name}"[:64]
            take, give = sa.text("SELECT GET_LOCK(:k, -1)"), sa.text("SELECT RELEASE_LOCK(:k)")
            params = {"k": name}
        with self._engine.connect() as conn:
            conn.execute(take, params)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(give, params)
                conn.commit()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _guard_kind(url: str, fallback: Path) -> tuple[str, Path]:
    scheme = url.split(":", 1)[0].split("+")[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql", fallback
    if scheme in ("mysql", "mariadb"):
        return "mysql", fallback
    if scheme == "sqlite":
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            return "file", Path(db + ".ftsweep-lock")
    if scheme == "journal":
        return "file", Path(url[len("journal:"):].removeprefix("//") + ".ftsweep-lock")
    return "file", fallback


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
