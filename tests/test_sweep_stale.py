"""Stale trials: re-run with the original parameters (free when the owner process was lost; at most
``retry_stale`` times for failures the trial may have caused); owner recorded at creation.

In-process on a SQLite study (fast): trials are made stale by giving them a dead owner process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution

from ftsweep.sweeper.study import (
    CHARGED_ATTR,
    OWNER_ATTR,
    ask_with_owner,
    count,
    counted_trials,
    fail_stale_trials,
    rerun,
)

DISTS = {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")


def _orphan(study, trial) -> None:
    """Make ``trial`` look like the trial of a sweep process on this host that was killed."""
    study._storage.set_trial_user_attr(trial._trial_id, OWNER_ATTR, {"host": socket.gethostname(), "pid": _dead_pid()})


def test_a_trial_whose_sweep_process_dies_again_and_again_is_rerun_each_time_for_free(study):
    """Losing the owner process is not the trial's fault: 5 kills in a row spend none of retry_stale=2."""
    first = ask_with_owner(study, DISTS)
    original = dict(first.params)
    notes = []
    trial = first
    for _ in range(5):  # the original and four re-runs all lose their sweep process
        _orphan(study, trial)
        failed = fail_stale_trials(study, grace_s=3600, mine=set(), retry=2)
        assert [f[0] for f in failed] == [trial.number] and failed[0][1].startswith("stale: sweep process")
        notes.append(failed[0][2])
        trial = ask_with_owner(study, DISTS)  # pops the enqueued re-run
        assert trial.params == original and trial.user_attrs["retry_of"] == first.number
        assert trial.user_attrs[CHARGED_ATTR] is False
    assert notes == [f"re-run {k} with trial 0's parameters (its sweep process was lost: no retry budget spent)"
                     for k in range(1, 6)]
    assert [t.state.name for t in study.trials] == ["FAIL"] * 5 + ["RUNNING"]
    # the budget counts the original trial once: the running re-run, none of the replaced failures
    assert [t.number for t in counted_trials(study)] == [5] and count(study).total == 1 and count(study).failed == 0


def test_failures_the_trial_may_have_caused_spend_the_budget_and_owner_losses_do_not(study):
    first = ask_with_owner(study, DISTS)
    notes = []
    trial = first
    # scheduler-ended job (charged), owner lost (free), scheduler again (charged), then the budget is used
    for charged in (True, False, True, True):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        notes.append(rerun(study, study.trials[trial.number], 2, charged=charged))
        if "not re-run" not in notes[-1]:
            trial = ask_with_owner(study, DISTS)
    assert notes == ["re-run 1 with trial 0's parameters (1 of 2 retries)",
                     "re-run 2 with trial 0's parameters (its sweep process was lost: no retry budget spent)",
                     "re-run 3 with trial 0's parameters (2 of 2 retries)",
                     "not re-run: retry budget used (2 of 2 re-runs of trial 0)"]
    assert [t.state.name for t in study.trials] == ["FAIL"] * 4
    assert [t.number for t in counted_trials(study)] == [3] and count(study).failed == 1  # the last one counts


def test_retry_stale_zero_never_reruns(study):
    trial = ask_with_owner(study, DISTS)
    _orphan(study, trial)
    failed = fail_stale_trials(study, grace_s=3600, mine=set(), retry=0)
    assert failed[0][2] == "not re-run: hydra.sweeper.retry_stale=0" and len(study.trials) == 1


def test_owner_is_recorded_with_the_trials_creation(tmp_path, study):
    # A sweep process killed right after asking for a trial (before anything else) ...
    code = ("import os, optuna\n"
            "from optuna.distributions import FloatDistribution\n"
            "from ftsweep.sweeper.study import ask_with_owner\n"
            f"s = optuna.load_study(study_name='t', storage='sqlite:///{tmp_path / 'study.db'}')\n"
            "ask_with_owner(s, {'optimizer.lr': FloatDistribution(1e-5, 1e-2, log=True)})\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    (trial,) = study.get_trials()
    assert trial.state.name == "RUNNING" and trial.user_attrs[OWNER_ATTR]["host"] == socket.gethostname()
    # ... leaves a trial that the owner rule fails at once (not after the heartbeat grace period of an hour)
    failed = fail_stale_trials(study, grace_s=3600, mine=set(), retry=2)
    assert len(failed) == 1 and "is gone" in failed[0][1]


def test_owner_is_in_the_first_write_of_a_new_trial(study, monkeypatch):
    # Even if sampling fails right after creation, the trial already carries its owner.
    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(study.sampler, "before_trial", boom)
    with pytest.raises(RuntimeError, match="killed"):
        ask_with_owner(study, DISTS)
    (trial,) = study.get_trials()
    assert json.dumps(trial.user_attrs[OWNER_ATTR]) == json.dumps({"host": socket.gethostname(), "pid": os.getpid()})


def test_a_sampler_that_cannot_propose_is_one_line_and_leaves_no_running_trial():
    """An option Optuna takes and only fails on when it samples (TPE's n_ei_candidates=0): one line naming the
    sampler setting, the trial it was proposing FAIL (not RUNNING, which a resume would take for a live one)."""
    from ftsweep.config.sweeper import SamplerConf
    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.samplers import build_sampler

    sampler = build_sampler(SamplerConf(name="tpe", seed=0, n_startup_trials=0, options={"n_ei_candidates": 0}), DISTS)
    study = optuna.create_study(sampler=sampler)
    with pytest.raises(SweepInputError) as err:
        ask_with_owner(study, DISTS)
    assert str(err.value) == ("hydra.sweeper.sampler: could not propose trial 0: ValueError: The size of `samples` "
                              "must be positive, but got 0.")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
