"""A throw-away PostgreSQL server on 127.0.0.1 for tests (never the user's own server).

Binaries: $FTSWEEP_PG_BIN, else the ``pgserver`` package's (``pip install -e .[dev]`` installs it),
else Debian's /usr/lib/postgresql/*/bin, else ``initdb`` on PATH. PostgreSQL refuses to run as root,
so under root the server runs as an unprivileged system user (``nobody``) in a data directory it owns.
Password authentication (scram-sha-256) on TCP, so a wrong password really is refused.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "ftsweep"
PASSWORD = "s3cret-pw"


class NoServer(RuntimeError):
    """No PostgreSQL server could be started here (the reason is the message)."""


def find_bindir() -> Path:
    candidates = [os.environ.get("FTSWEEP_PG_BIN", "")]
    spec = importlib.util.find_spec("pgserver")  # located, not imported (its import touches XDG dirs)
    if spec and spec.origin:
        candidates.append(str(Path(spec.origin).parent / "pginstall" / "bin"))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise NoServer("no PostgreSQL binaries (pip install pgserver, or apt-get install postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    run_as: tuple[int, int] | None

    def url(self, password: str = PASSWORD, db: str = "ftsweep", scheme: str = "postgresql") -> str:
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kw = {}
        if self.run_as:
            kw = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, env={**os.environ, "PGPASSWORD": PASSWORD}, **kw)

    def createdb(self, name: str) -> str:
        r = self._run(self.bindir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        if r.returncode:
            raise NoServer(f"createdb failed: {r.stderr.strip()}")
        return self.url(db=name)

    def stop(self) -> None:
        self._run(self.bindir / "pg_ctl", "-D", self.root / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def is_up(self) -> bool:
        r = self._run(self.bindir / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port))
        return r.returncode == 0


def _runs(server: PgServer, exe: Path) -> bool:
    try:
        return server._run(exe, "--version").returncode == 0
    except OSError:
        return False


def start() -> PgServer:
    """initdb + pg_ctl start on a free port; raises :class:`NoServer` with the reason."""
    bindir = find_bindir()
    root = Path(tempfile.mkdtemp(prefix="ftsweep-pg-"))
    run_as = None
    if os.geteuid() == 0:
        who = pwd.getpwnam("nobody")
        run_as = (who.pw_uid, who.pw_gid)
        os.chmod(root, 0o755)
        os.chown(root, *run_as)
    server = PgServer(bindir, root, free_port(), run_as)
    if run_as and not _runs(server, bindir / "postgres"):
        # The binaries sit under a directory the unprivileged user cannot enter (e.g. a venv in /root):
        # run a copy (pgserver's install is relocatable, ~35 MB).
        if not (bindir.parent / "share").is_dir():
            shutil.rmtree(root, ignore_errors=True)
            raise NoServer(f"user nobody cannot run {bindir}/postgres")
        # same layout: the binaries find their libraries through RPATH $ORIGIN/../../../pgserver.libs
        copy = root / "pgcopy" / "pgserver" / "pginstall"
        for part in ("bin", "lib", "share"):
            shutil.copytree(bindir.parent / part, copy / part, symlinks=True)
        libs = bindir.parent.parent.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, root / "pgcopy" / "pgserver.libs", symlinks=True)
        subprocess.run(["chmod", "-R", "a+rX", str(root / "pgcopy")], check=True)
        bindir = server.bindir = copy / "bin"
    (root / "pw").write_text(PASSWORD + "\n")
    if run_as:
        os.chown(root / "pw", *run_as)
    r = server._run(bindir / "initdb", "-D", root / "data", "-U", USER, "--pwfile", root / "pw",
                    "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8")
    if r.returncode:
        shutil.rmtree(root, ignore_errors=True)
        raise NoServer(f"initdb failed: {(r.stderr or r.stdout).strip()[-300:]}")
    opts = f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200"
    r = server._run(bindir / "pg_ctl", "-D", root / "data", "-l", root / "log", "-o", opts, "-w", "-t", "60", "start")
    if r.returncode:
        log = (root / "log").read_text(errors="replace")[-300:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise NoServer(f"pg_ctl start failed: {(r.stderr or r.stdout).strip()[-200:]} {log}")
    deadline = time.monotonic() + 30
    while not server.is_up:
        if time.monotonic() > deadline:
            server.stop()
            raise NoServer("the server did not accept connections within 30 s")
        time.sleep(0.2)
    return server


def start_or_skip() -> PgServer:
    """start() for a test: skip when no server can be started here, but fail in CI (which must run them)."""
    import pytest

    try:
        return start()
    except NoServer as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {err}")
        pytest.skip(f"no PostgreSQL server could be started: {err}")
