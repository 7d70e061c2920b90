"""``ftsweep dashboard``: optuna-dashboard on a sweep's study, read-only, on 127.0.0.1.

    ftsweep dashboard                                   # the sweep in this folder, else the newest under outputs/sweeps
    ftsweep dashboard outputs/sweeps/quickstart         # a sweep directory (study.db / study.journal)
    ftsweep dashboard postgresql://me@db/sweeps --study lora_search   # any storage; password from PGPASSWORD
    ftsweep dashboard SWEEP_DIR --port 8080             # a given port (default: 8080 when free, else any free one)
    ftsweep dashboard SWEEP_DIR --host 0.0.0.0          # other machines may connect: NO authentication

The study is opened read-only (SQLite ``mode=ro``, PostgreSQL read-only transactions, a journal backend that
refuses appends): watching a running sweep takes no lock beyond a read and writes nothing. Trial files
(metrics.json, learning curve, predictions) and the report's files are served from the sweep's Optuna
artifact store (``<sweep dir>/artifacts``), filled by the sweeper (:mod:`ftsweep.sweeper.watch`).
Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ftsweep.errors import UsageError
from ftsweep.sweepdir import SweepDir

DEFAULT_PORT = 8080
# Set by the sweeper (hydra.sweeper.dashboard=true) for its dashboard: stop when that process is gone, even
# if it was killed before it could stop us.
PARENT_ENV = "FTSWEEP_DASHBOARD_PARENT"
STUDY_FILES = (SweepDir.STUDY_DB, SweepDir.STUDY_JOURNAL)
INSTALL_HINT = "optuna-dashboard is not installed: pip install optuna-dashboard"


# ------------------------------------------------------------------------------------------ CLI
def main(argv: list[str]) -> int:
    """Entry point of ``ftsweep dashboard``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="ftsweep dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", help="a sweep directory or an Optuna storage URL (default: the sweep "
                                                  "in this folder, else the newest one under outputs/sweeps)")
    parser.add_argument("--study", help="open this study's page (default: the only study in the storage)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT} when free, else a free one)")
    args = parser.parse_args(argv)
    if args.port is not None and not 0 <= args.port < 65536:
        raise UsageError(f"--port: must be 1 to 65535, or 0 for a free port (got {args.port})")

    url, sweep_dir = resolve_target(args.target)
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError as err:
        raise UsageError(INSTALL_HINT) from err
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_readonly(url)
    study_id, name, n_trials = pick_study(storage, url, args.study)
    if sweep_dir is None and name is not None:
        sweep_dir = recorded_sweep_dir(storage, study_id)
    server = make_server(storage, args.host, args.port, artifact_dir(sweep_dir))
    host, port = args.host, server.server_port
    if not is_loopback(host):
        print(f"ftsweep dashboard: warning: --host {host} lets every machine that reaches port {port} read this "
              "study, its trials and their files: the dashboard has no authentication. Prefer an SSH tunnel "
              f"(ssh -N -L {port}:127.0.0.1:{port} <this machine>, README \"Watch a sweep\").", file=sys.stderr)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    page = f"http://{shown}:{port}/dashboard" + (f"/studies/{study_id}" if study_id is not None else "")
    what = f"study {name} ({n_trials} trial{'' if n_trials == 1 else 's'})" if name is not None else "its studies"
    print(f"ftsweep dashboard: {what} in {redacted(url)}", flush=True)
    print(f"ftsweep dashboard: {page}  (Ctrl-C stops it)", flush=True)
    serve(server)
    return 0


def redacted(url: str) -> str:
    from ftsweep.sweeper.storage import redact

    return redact(url)


# ------------------------------------------------------------------------------------------ target
def resolve_target(target: str | None) -> tuple[str, Path | None]:
    """(storage URL, sweep dir or None) for a sweep folder, a storage URL, or nothing (the default sweep)."""
    if target is None:
        found = default_sweep_dir()
        return study_url(found), found
    if "://" in target or target.startswith("journal:"):
        from ftsweep.sweeper.storage import password_of

        if password_of(target):
            raise UsageError("storage URL: a password in the URL would show in `ps` and the shell history; put it "
                             "in the environment instead (PGPASSWORD for PostgreSQL, or ~/.pgpass)")
        return target, None
    path = Path(target).expanduser()
    if not path.is_dir():
        raise UsageError(f"{target}: no such sweep directory (give a sweep folder or an Optuna storage URL)")
    return study_url(path), path.resolve()


def study_url(sweep_dir: Path) -> str:
    for name in STUDY_FILES:
        f = sweep_dir / name
        if f.is_file():
            return f"sqlite:///{f.resolve()}" if name.endswith(".db") else f"journal:{f.resolve()}"
    raise UsageError(f"{sweep_dir}: no study.db or study.journal here (not a sweep folder; for another storage "
                     "pass its URL, e.g. ftsweep dashboard postgresql://user@host/db)")


def default_sweep_dir() -> Path:
    """This folder when it holds a study, else the sweep under ./outputs/sweeps whose study changed last."""
    here = Path.cwd()
    if any((here / n).is_file() for n in STUDY_FILES):
        return here
    found = [(f.stat().st_mtime, d) for d in (here / "outputs" / "sweeps").glob("*") if d.is_dir()
             for n in STUDY_FILES if (f := d / n).is_file()]
    if not found:
        raise UsageError(f"no sweep found: no study.db / study.journal in {here} or in {here}/outputs/sweeps/*; "
                         "give SWEEP_DIR or a storage URL")
    return max(found)[1].resolve()


# ------------------------------------------------------------------------------------------ storage
class _ReadOnlyJournal:
    """Wraps a journal file backend: reads pass through, appends are refused (the sweep alone writes)."""

    def __init__(self, backend: Any):
        self._backend = backend

    def read_logs(self, log_number_from: int) -> Any:
        return self._backend.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise PermissionError("ftsweep dashboard opens the study read-only")


def open_readonly(url: str) -> Any:
    """An Optuna storage for ``url`` that cannot write; one-line :class:`UsageError` when it cannot be read."""
    import optuna

    from ftsweep.sweeper.storage import storage_error

    given = url
    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):].removeprefix("//"))
            _check_readable(path)
            from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

            class ReadOnly(_ReadOnlyJournal, BaseJournalBackend):
                pass

            return optuna.storages.JournalStorage(ReadOnly(JournalFileBackend(str(path))))
        engine_kwargs: dict[str, Any] = {}
        scheme = url.split("://", 1)[0].split("+")[0].lower()
        if scheme == "sqlite":
            path = Path(url.split(":///", 1)[-1])
            _check_readable(path)
            # mode=ro: SQLite itself refuses writes; a read waits (up to 5 s) for a writer's commit.
            url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
            engine_kwargs["connect_args"] = {"timeout": 5}
        else:
            engine_kwargs["pool_pre_ping"] = True
            if scheme in ("postgresql", "postgres"):
                engine_kwargs["connect_args"] = {"connect_timeout": 10,
                                                 "options": "-c default_transaction_read_only=on"}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)
    except UsageError:
        raise
    except Exception as err:
        raise UsageError(storage_error(given, err).split(": ", 1)[1]) from err


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise UsageError(f"cannot read the study file {path}: {err.strerror or err}") from err


def pick_study(storage: Any, url: str, name: str | None) -> tuple[int | None, str | None, int]:
    """(study id, name, number of trials) of ``name``, or of the only study; (None, None, 0) for several."""
    from ftsweep.sweeper.storage import storage_error

    try:
        studies = storage.get_all_studies()
    except Exception as err:
        raise UsageError(storage_error(url, err).split(": ", 1)[1]) from err
    names = [s.study_name for s in studies]
    if name is not None and name not in names:
        raise UsageError(f"--study: no study {name!r} in {redacted(url)}; studies there: {', '.join(names) or 'none'}")
    if not names:
        raise UsageError(f"{redacted(url)} holds no study yet (has the sweep started?)")
    if name is None and len(names) > 1:
        return None, None, 0
    chosen = next(s for s in studies if s.study_name == (name or names[0]))
    n = len(storage.get_all_trials(chosen._study_id, deepcopy=False))
    return chosen._study_id, chosen.study_name, n


def recorded_sweep_dir(storage: Any, study_id: int) -> Path | None:
    from ftsweep.sweeper.study import SWEEP_DIR_ATTR

    recorded = storage.get_study_user_attrs(study_id).get(SWEEP_DIR_ATTR)
    return Path(recorded) if recorded else None


def artifact_dir(sweep_dir: Path | None) -> Path | None:
    from ftsweep.sweeper.watch import ARTIFACT_DIR

    d = None if sweep_dir is None else sweep_dir / ARTIFACT_DIR
    return d if d is not None and d.is_dir() else None


# ------------------------------------------------------------------------------------------ server
def is_loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, ValueError):
        return False


def make_server(storage: Any, host: str, port: int | None, artifacts: Path | None) -> Any:
    """A threaded WSGI server of optuna-dashboard, bound (one-line error when the port is taken)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_server

    import optuna_dashboard

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        # SO_REUSEADDR: a restart on the same port is not blocked by closed connections (TIME_WAIT); a port
        # another program listens on still fails (Linux refuses two listeners).
        allow_reuse_address = True

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no access log (paths only; kept quiet)
            pass

    store = None
    if artifacts is not None:
        from optuna.artifacts import FileSystemArtifactStore

        store = FileSystemArtifactStore(str(artifacts))
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    ports = [port] if port is not None else [DEFAULT_PORT, 0]
    for i, p in enumerate(ports):
        try:
            return wsgi_server(host, p, app, server_class=Server, handler_class=Handler)
        except OSError as err:
            if port is None and i == 0:
                continue  # the default port is taken: any free one
            raise UsageError(f"--port: cannot listen on {host}:{p}: {err.strerror or err} "
                             "(another program uses it? choose another --port, or leave it out for a free one)") from err
    raise AssertionError("unreachable")


def _stop_without(pid: int) -> None:
    from ftsweep.sweeper.study import pid_alive

    while pid_alive(pid):
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def serve(server: Any) -> None:
    """Serve until Ctrl-C or SIGTERM (the sweeper stops its dashboard with SIGTERM), then close the port."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    # Ctrl-C stops it even when the parent started it with SIGINT ignored or blocked (both are inherited across
    # exec: a background job of a non-interactive shell ignores SIGINT; a test runner's worker may block it).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    parent = int(os.environ.get(PARENT_ENV) or 0)
    try:
        if parent:  # inside the try: a parent already gone stops it at once, cleanly
            threading.Thread(target=_stop_without, args=(parent,), daemon=True).start()
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("ftsweep dashboard: stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        server.server_close()
