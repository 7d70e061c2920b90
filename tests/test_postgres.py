"""Sweeps on a real PostgreSQL server (started here on 127.0.0.1, see tests/pg_server.py), and the
storage errors a user sees. Trials are fake (tests/fake_trial.py): these tests are about the study.

Without PostgreSQL binaries the server tests skip with the reason; under CI (``CI`` set) they fail instead,
because CI installs pgserver through ``pip install -e .[dev]``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pg_server  # noqa: E402
from sweep_helpers import env, load, run, sweep_args  # noqa: E402

# one worker runs this module: its module-scoped fixtures are built once (scripts/test.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("postgres")

pytest.importorskip("psycopg", reason="psycopg (ftsweep[postgres]) is not installed")


@pytest.fixture(scope="module")
def pg():
    server = pg_server.start_or_skip()
    yield server
    server.stop()


_dbs = iter(range(1000))


@pytest.fixture
def db(pg) -> str:
    return pg.createdb(f"t{next(_dbs)}")


def no_password_anywhere(*roots: Path, texts: tuple[str, ...] = ()) -> None:
    for text in texts:
        assert pg_server.PASSWORD not in text
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file():
                assert pg_server.PASSWORD.encode() not in f.read_bytes(), f"password written to {f}"


def trial_numbers(study) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False)]


@pytest.mark.slow  # 30-40 s on the shared 2-core machine
def test_two_processes_share_one_study_then_report(tmp_path, db):
    sd = tmp_path / "s"
    args = sweep_args(sd, f"hydra.sweeper.storage={db}", "hydra.sweeper.pruner.name=none", n_trials=6)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.3"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = load(sd, storage=db)
    assert sorted(trial_numbers(study)) == list(range(6))  # exactly n_trials, all distinct
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    owners = {t.user_attrs["ftsweep:owner"]["pid"] for t in study.trials}
    assert owners == {p.pid for p in procs}  # both processes ran trials of the one study

    r = subprocess.run([sys.executable, "-m", "ftsweep", "report", db, "--out", str(tmp_path / "rep")],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "6 trials (6 complete" in r.stdout
    assert (tmp_path / "rep" / "report.md").is_file()
    summary = (tmp_path / "rep" / "summary.json").read_text()
    assert ":***@127.0.0.1" in summary
    no_password_anywhere(sd, tmp_path / "rep", texts=(r.stdout, r.stderr, *outs[0], *outs[1]))


@pytest.mark.slow  # 30-40 s on the shared 2-core machine
def test_kill_9_mid_trial_then_rerun(tmp_path, db):
    sd = tmp_path / "s"
    args = sweep_args(sd, f"hydra.sweeper.storage={db}", "hydra.sweeper.pruner.name=none",
                      "hydra.sweeper.grace_period_s=5", n_trials=5, workers=2)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.5"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (len(list(sd.glob("trial_*/metrics.json"))) >= 1
                                          and len(list(sd.glob("trial_*/trial.log"))) >= 3):
        time.sleep(0.2)
    time.sleep(1.0)  # the new trials are mid-way (each takes ~2 s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = load(sd, storage=db)
    before = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    running = [t.number for t in study.trials if t.state.name == "RUNNING"]
    assert before and running, "kill -9 should leave completed and running trials"

    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(sd, storage=db)
    from ftsweep.sweeper.study import count

    c = count(study)
    assert c.total == 5 and c.complete == 5 and c.running == 0
    assert {n: study.trials[n].value for n in before} == before  # finished trials untouched
    for n in running:  # failed as stale (the process is gone) and re-run once with the same parameters
        t = study.trials[n]
        assert t.state.name == "FAIL" and t.user_attrs["reason"].startswith("stale:")
        reruns = [u for u in study.trials if u.user_attrs.get("retry_of") == n]
        assert len(reruns) == 1 and reruns[0].state.name == "COMPLETE"
        if t.params:  # (empty if it was killed inside ask(), before sampling: the re-run samples anew)
            assert reruns[0].params == t.params
    assert "RUNNING" not in {t.state.name for t in study.trials}


def _exact_totals(tmp_path: Path, storage: str | None) -> None:
    """4 processes x 2 workers, started together, on one study of 10 trials."""
    sd = tmp_path / "s"
    extra = [f"hydra.sweeper.storage={storage}"] if storage else []
    args = sweep_args(sd, *extra, "hydra.sweeper.pruner.name=none", n_trials=10, workers=2)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1][-2000:] for o in outs]
    study = load(sd, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(10))  # exactly n_trials, all distinct, no extra
    assert [t.state.name for t in trials] == ["COMPLETE"] * 10  # none left RUNNING, none failed
    assert len({t.user_attrs["trial_dir"] for t in trials}) == 10


@pytest.mark.slow
def test_exact_totals_4_processes_x_2_workers_postgres(tmp_path, db):
    _exact_totals(tmp_path, db)


@pytest.mark.slow
def test_exact_totals_4_processes_x_2_workers_sqlite(tmp_path):
    _exact_totals(tmp_path, None)


def test_concurrent_asks_never_exceed_the_budget(tmp_path, db):
    """The guard itself, without processes' start-up noise: 8 threads ask at once, 4 fit."""
    _concurrent_asks(tmp_path, db)


def test_concurrent_asks_never_exceed_the_budget_sqlite(tmp_path):
    _concurrent_asks(tmp_path, f"sqlite:///{tmp_path / 'study.db'}")


def _concurrent_asks(tmp_path: Path, db: str) -> None:
    import threading

    import optuna

    from ftsweep.sweeper.grammar import parse_space
    from ftsweep.sweeper.runner import ask_within_budget
    from ftsweep.sweeper.storage import BudgetGuard, open_storage

    space = parse_space({"optimizer.lr": "interval(0.1, 1.0)"}, None, None)
    optuna.create_study(study_name="g", storage=open_storage(db))
    got: list = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        study = optuna.load_study(study_name="g", storage=open_storage(db))
        guard = BudgetGuard(db, "g", tmp_path / "unused.lock")
        barrier.wait()
        got.append(ask_within_budget(study, space, 4, guard))
        guard.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(t is not None for t in got) == 4 and len(got) == 8
    study = optuna.load_study(study_name="g", storage=open_storage(db))
    assert sorted(trial_numbers(study)) == [0, 1, 2, 3]


def test_processes_starting_together_on_a_fresh_database(db):
    """Optuna creates its tables on first use; several sweep processes starting at once on an empty
    database must not race in CREATE TYPE / CREATE TABLE."""
    import threading

    from ftsweep.sweeper.storage import open_storage

    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def opener() -> None:
        barrier.wait()
        try:
            open_storage(db)
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


# ---------------------------------------------------------------------- one-line storage errors
def _sweep_error(tmp_path: Path, url: str) -> str:
    r = run(sweep_args(tmp_path / "s", f"hydra.sweeper.storage={url}", n_trials=2), tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ftsweep: error: hydra.sweeper.storage: cannot open ")
    assert pg_server.PASSWORD not in r.stderr + r.stdout
    assert not list((tmp_path / "s").glob("trial_*"))
    return lines[0]


def test_missing_driver_is_one_line(tmp_path):
    line = _sweep_error(tmp_path, f"postgresql+pg8000://ftsweep:{pg_server.PASSWORD}@127.0.0.1:5/x")
    assert "driver 'pg8000' is not installed" in line and "ftsweep:***@127.0.0.1" in line


def test_server_down_is_one_line(tmp_path):
    port = pg_server.free_port()  # nothing listens there
    line = _sweep_error(tmp_path, f"postgresql://ftsweep:{pg_server.PASSWORD}@127.0.0.1:{port}/x")
    assert f"port {port} failed" in line and "Connection refused" in line


def test_wrong_password_is_one_line(tmp_path, pg):
    line = _sweep_error(tmp_path, pg.url(password="wrong-" + pg_server.PASSWORD))
    assert "password authentication failed" in line and ":***@" in line
    r = subprocess.run([sys.executable, "-m", "ftsweep", "report", pg.url(password="nope" + pg_server.PASSWORD)],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # the URL was this command's argument, not the sweeper's setting: named as given (password masked)
    assert r.stderr.startswith("ftsweep: error: cannot open postgresql://ftsweep:***@") and pg_server.PASSWORD not in r.stderr


def test_psycopg2_url_keeps_working(pg):
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (postgresql+psycopg2:// needs it)")
    from ftsweep.sweeper.storage import open_storage

    storage = open_storage(pg.url(scheme="postgresql+psycopg2"))
    assert storage.get_all_studies() is not None


@pytest.mark.slow
def test_submitit_backend_on_postgres_writes_no_password(tmp_path, db):
    """One job per trial (submitit's local executor) on the PostgreSQL study; submitit pickles the job's
    arguments into .submitit/: the password must not be in them."""
    pytest.importorskip("submitit")
    sd = tmp_path / "s"
    r = run(sweep_args(sd, f"hydra.sweeper.storage={db}", "hydra.sweeper.backend=submitit",
                       "hydra.sweeper.submitit.cluster=local", "hydra.sweeper.pruner.name=none", n_trials=2, workers=2),
            tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    study = load(sd, storage=db)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert list((sd / ".submitit").rglob("*.pkl"))
    no_password_anywhere(sd, texts=(r.stdout, r.stderr))
