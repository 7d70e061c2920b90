"""The disk filling up (or the study's folder turning read-only) under a running sweep: one ``ftsweep:`` line that
says what could not be written and how to go on, exit 1, the trials recorded before it kept; the same command
resumes once there is room again."""

from __future__ import annotations

import sqlite3

from sweep_helpers import load, sweep_args
from test_sweep_errors import _in_process


def _disk_full() -> Exception:
    """What optuna's SQLite storage raises when a write finds the disk full."""
    import optuna
    import sqlalchemy.exc

    cause = sqlite3.OperationalError("database or disk is full")
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO trial_user_attributes ...", {}, cause)
    wrapped.__cause__ = cause
    err = optuna.exceptions.StorageInternalError("An exception is raised during the commit. This typically happens "
                                                 "due to invalid data in the commit, e.g. exceeding max length.")
    err.__cause__ = wrapped
    return err


def test_a_full_disk_under_a_sweep_is_one_line_and_the_study_resumes(tmp_path, monkeypatch, capsys):
    from ftsweep.sweeper import attrs

    sd = tmp_path / "sw"
    real = attrs.set_attrs

    def set_attrs(trial, **values):  # the disk fills while trial 1's outcome is recorded
        if trial.number == 1 and "status" in values:
            raise _disk_full()
        return real(trial, **values)

    monkeypatch.setattr(attrs, "set_attrs", set_attrs)
    r = _in_process(sweep_args(sd, n_trials=2), tmp_path, monkeypatch, capsys)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("ftsweep: "), r.stderr
    assert "database or disk is full" in lines[0] and str(sd / "study.db") in lines[0], lines[0]
    assert "run the same command again" in lines[0], lines[0]
    assert load(sd).trials[0].state.name == "COMPLETE"  # what was recorded before stays

    monkeypatch.setattr(attrs, "set_attrs", real)  # room again: the same command finishes the study
    # (this process, which held trial 1, is still alive: its heartbeat goes stale after grace_period_s)
    r = _in_process(sweep_args(sd, "hydra.sweeper.grace_period_s=1", n_trials=2), tmp_path, monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert study.trials[0].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
