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
