"""A sweep whose study already holds ``n_trials`` finished trials: say so in one line, before any set-up
(no trial config composed, no report rewritten, no W&B run)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ftsweep.errors import SweepAborted
from ftsweep.sweepdir import SweepDir
from ftsweep.sweeper.attrs import STOPPED


class StudyFinished(Exception):
    """Nothing left to run; the message is the line to print."""


def _existing_storage(url: str) -> bool:
    """False for a SQLite / journal file that does not exist yet (opening it would create it)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        return path not in ("", ":memory:") and Path(path).is_file()
    if url.startswith("journal:"):
        return Path(url[len("journal:"):].removeprefix("//")).is_file()
    return True


def check_finished(storage_url: str, study_name: str, n_trials: int, sweep_dir: Path,
                   directions: list[str] | None = None, space: Any = None) -> None:
    """Raise :class:`StudyFinished` when the study exists, holds ``n_trials`` counted trials, and none is
    running or waiting (a re-run or another process's trial would still need this sweep). A finished study with
    other directions or another search space (``space``) is refused as resuming it would be, before that line
    (which would advise raising n_trials, only to have that refused next)."""
    if not _existing_storage(storage_url):
        return
    import optuna

    from ftsweep.sweeper.storage import open_storage
    from ftsweep.sweeper.study import best_trial, check_compatible, count

    try:
        study: Any = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    except Exception:  # no such study in it, or the storage cannot be read: the normal path says why
        return
    c = count(study)
    if c.total < n_trials or c.running or c.waiting:
        return
    if directions is not None and space is not None:
        check_compatible(study, study_name, storage_url, directions, space)
    held = max(n_trials, c.total)  # (a smaller n_trials than the study holds: a number that runs more trials)
    more = held + max(4, held // 2)
    stopped = study.user_attrs.get(STOPPED)
    if stopped:  # its last run stopped early on failures, which used up the budget: not "done"
        raise SweepAborted(
            f"sweep {study_name}: its last run stopped early: {stopped}; failed trials count towards "
            f"n_trials={n_trials}, so none is left to run: fix the cause, then raise hydra.sweeper.n_trials "
            f"(e.g. hydra.sweeper.n_trials={more}) to go on")
    if c.failed and c.complete == 0 and c.pruned == 0:  # no result: exit 1, as the run that ended so (sweep.py)
        from ftsweep.sweeper.attrs import REASON

        last = next((t.user_attrs.get(REASON) for t in reversed(study.trials) if t.user_attrs.get(REASON)), None)
        raise SweepAborted(
            f"sweep {study_name}: no trial completed: all {c.failed} failed"
            + (f" (last reason: {last})" if last else "")
            + f"; failed trials count towards n_trials={n_trials}, so none is left to run: fix the cause (each "
            f"trial's failure.json says why), then raise hydra.sweeper.n_trials "
            f"(e.g. hydra.sweeper.n_trials={more}) to go on")
    best = best_trial(study) if len(study.directions) == 1 else None
    best_text = f" (best trial {best.number}: value={best.value:.6g})" if best is not None else ""
    report = SweepDir(sweep_dir).report
    # no report: the sweep was killed after its last trial, before writing it (or ran with report=false)
    where = f"; report: {report}" if report.is_file() else f"; no report yet: ftsweep report {shlex.quote(str(sweep_dir))}"
    raise StudyFinished(
        f"sweep {study_name}: {c.finished} of n_trials={n_trials} trials done{best_text}; nothing to run. To continue "
        f"the study, raise hydra.sweeper.n_trials (e.g. hydra.sweeper.n_trials={more}){where}")
