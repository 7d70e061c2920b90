"""The life of a sweep as a user lives it: the same command run again on a study whose trials all failed.

Fast: a study built directly in SQLite (no trial processes); the end-to-end runs are in test_sweep_runner.py.
"""

from __future__ import annotations

import pytest

from ftsweep.errors import SweepAborted, exit_code
from ftsweep.sweeper.finished import StudyFinished, check_finished


def _study(tmp_path, states: list[str], reason: str = "timeout: trial exceeded 4 s"):
    import optuna
    from optuna.trial import TrialState

    from ftsweep.sweeper import attrs

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="t", storage=url)
    for state in states:
        trial = study.ask()
        if state == "FAIL":
            attrs.set_attrs(trial, reason=reason)
            study.tell(trial, state=TrialState.FAIL)
        else:
            attrs.set_attrs(trial, trial_dir=str(tmp_path / f"trial_{trial.number}"))
            study.tell(trial, 1.0)
    return url


def test_the_same_command_on_a_study_whose_every_trial_failed_is_no_result(tmp_path):
    """A sweep whose every trial failed ends with exit 1 ('no trial completed'); run again with the same
    n_trials it said '4 of n_trials=4 trials done; nothing to run' with exit 0, as for a finished sweep: a script
    chaining on the exit code took a sweep without a single result for success."""
    url = _study(tmp_path, ["FAIL"] * 4)
    with pytest.raises(SweepAborted) as err:
        check_finished(url, "t", 4, tmp_path)
    text = str(err.value)
    assert exit_code(err.value) == 1
    assert "no trial completed: all 4 failed" in text
    assert "(last reason: timeout: trial exceeded 4 s)" in text
    assert "nothing to run" not in text
    assert "raise hydra.sweeper.n_trials (e.g. hydra.sweeper.n_trials=8)" in text


def test_a_finished_study_with_one_complete_trial_is_done(tmp_path):
    url = _study(tmp_path, ["FAIL", "FAIL", "FAIL", "COMPLETE"])
    with pytest.raises(StudyFinished, match="4 of n_trials=4 trials done"):
        check_finished(url, "t", 4, tmp_path)


def _running(url: str, pid: int) -> None:
    """A RUNNING trial owned by the sweep process ``pid`` on this host, with a fresh heartbeat."""
    import socket
    import time

    import optuna

    from ftsweep.sweeper import attrs
    from ftsweep.sweeper.storage import HEARTBEAT_ATTR

    study = optuna.load_study(study_name="t", storage=url)
    trial = study.ask()
    trial.set_user_attr(attrs.OWNER, {"host": socket.gethostname(), "pid": pid})
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())


def test_export_of_a_sweep_still_running_says_its_best_is_the_best_so_far(tmp_path, capsys):
    """`ftsweep export` / `merge` / `generate` SWEEP_DIR while the sweep ran took its best trial so far without a
    word: the export (best_merged/) held trial 0, the sweep then found a better one, and `ftsweep export` again was
    refused as best_merged/ exists."""
    import os
    from pathlib import Path

    from ftsweep.sweeper.study import best_trial_dir

    url = _study(tmp_path, ["COMPLETE"])
    _running(url, os.getpid())
    assert best_trial_dir(tmp_path) == Path(tmp_path / "trial_0")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("ftsweep: warning: sweep t is still running (1 trial finished, 1 running): trial 0 is its best "
                    "so far; a trial still to come may beat it")], err


def test_a_trial_left_running_by_a_killed_sweep_is_a_sweep_stopped_not_still_running(tmp_path, capsys):
    import subprocess
    import sys

    from ftsweep.sweeper.study import best_trial_dir

    url = _study(tmp_path, ["COMPLETE"])
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    _running(url, int(gone.stdout))
    best_trial_dir(tmp_path)
    assert capsys.readouterr().err.strip().splitlines() == [
        ("ftsweep: warning: sweep t was stopped before its end (1 trial left running by a lost sweep process): trial 0 "
         "is its best so far; run the sweep's command again to finish it")]


def test_export_of_an_interrupted_sweep_says_it_stopped_before_its_end(tmp_path, capsys):
    """Ctrl-C: the interrupted trial is FAIL and its re-run WAITING; an export then took the best trial so far as the
    sweep's result without a word."""
    import optuna
    from optuna.trial import TrialState

    from ftsweep.sweeper.study import best_trial_dir, rerun

    url = _study(tmp_path, ["COMPLETE"])
    study = optuna.load_study(study_name="t", storage=url)
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    rerun(study, study.trials[trial.number], 2, charged=False)
    best_trial_dir(tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("ftsweep: warning: sweep t was stopped before its end (1 trial waiting to run): trial 0 is its "
                    "best so far; run the sweep's command again to finish it")], err


def test_a_smaller_n_trials_than_the_study_holds_is_told_a_number_that_runs_more(tmp_path):
    """The study holds 7 trials and the command says n_trials=3: the line advised 'hydra.sweeper.n_trials=7' (3 + 4),
    which runs nothing either."""
    url = _study(tmp_path, ["COMPLETE"] * 7)
    with pytest.raises(StudyFinished) as done:
        check_finished(url, "t", 3, tmp_path)
    assert "7 of n_trials=3 trials done" in str(done.value)
    assert "raise hydra.sweeper.n_trials (e.g. hydra.sweeper.n_trials=11)" in str(done.value), done.value
    (tmp_path / "failed").mkdir()
    url = _study(tmp_path / "failed", ["FAIL"] * 7)
    with pytest.raises(SweepAborted, match=r"raise hydra.sweeper.n_trials \(e.g. hydra.sweeper.n_trials=11\)"):
        check_finished(url, "t", 3, tmp_path / "failed")


def test_sigterm_while_the_report_is_written_finishes_it_then_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """SIGTERM (a cluster's time limit) after the last trial, while the report was written: the sweep process died
    by the signal without a word (exit 143, no report.md), as only the trials ran with SIGTERM as an interrupt."""
    import os
    import signal
    from types import SimpleNamespace

    import optuna

    from ftsweep.config.sweeper import SweeperConf
    from ftsweep.sweeper import runner
    from ftsweep.sweeper.sweep import SweepPlan, execute

    class Done:  # every trial already finished
        def __init__(self, *args, **kwargs):
            pass

        def run(self):
            return None

    monkeypatch.setattr(runner, "SweepRunner", Done)
    study = optuna.create_study(study_name="t")
    study.add_trial(optuna.trial.create_trial(value=1.0))
    settings = SimpleNamespace(conf=SweeperConf(), study_name="t", n_trials=1, storage_url="sqlite:///x.db",
                               sweep_dir=tmp_path, metrics=["eval_loss"])
    plan = SweepPlan(study=study, space=None, fixed=[], settings=settings, wandb_summary=False)
    written = []

    def report(plan):
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            raise AssertionError("SIGTERM here ends the sweep process without a word")
        os.kill(os.getpid(), signal.SIGTERM)
        written.append(True)  # the report goes on to its end

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as stop:
        execute(plan, on_end=report)
    assert written == [True]
    assert str(stop.value) == ("terminated (SIGTERM) while writing the sweep's report, which was finished first: "
                               "every trial had ended")
    assert "best trial 0: value=1" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) == before
