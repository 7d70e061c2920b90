"""The study: create or resume it, guard its search space, count the budget, fail stale trials.

Budget rule: ``n_trials`` counts every trial of the study except failed trials that were re-run
(a trial whose sweep process died is failed as stale and re-enqueued with the original trial's parameters;
the re-run records ``retry_of`` = the original trial and ``ftsweep:replaces`` = the failed trial whose place
it takes in the count). WAITING (enqueued) trials count, so asking for one does not grow the study.

Retry rule: only failures the trial may have caused (the scheduler ended its job: time limit, memory,
node failure) spend its ``retry_stale`` budget. Losing its owner (the sweep process killed, stopped or gone
silent) is not the trial's fault: such a re-run is marked ``ftsweep:charged`` = False and is free, however
many times the sweep is killed. ``retry_stale=0`` still means no re-run at all.

Owner rule: every trial this sweeper starts carries ``ftsweep:owner`` (host, pid of the sweep process)
from the moment it exists (:func:`ask_with_owner`), so a trial left RUNNING by a dead process on this
host is failed at once; only trials of other hosts wait for the heartbeat grace period.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsweep.config.sweeper import PrunerConf, SamplerConf
from ftsweep.sweeper import attrs
from ftsweep.sweeper.grammar import SearchSpace, SweepInputError
from ftsweep.sweeper.samplers import build_pruner, build_sampler
from ftsweep.sweeper.storage import HEARTBEAT_ATTR, open_storage, redact
from ftsweep.tracking import scrub

# the attribute names (one module spells them): ftsweep.sweeper.attrs
SPACE_ATTR, SWEEP_DIR_ATTR, OWNER_ATTR = attrs.SEARCH_SPACE, attrs.SWEEP_DIR, attrs.OWNER
RETRY_OF, REPLACES_ATTR, ATTEMPT_ATTR = attrs.RETRY_OF, attrs.REPLACES, attrs.ATTEMPT
CHARGED_ATTR = attrs.CHARGED


def open_study(*, storage_url: str, study_name: str, directions: list[str], space: SearchSpace,
               sampler: SamplerConf, pruner: PrunerConf, metrics: list[str], fixed_overrides: list[str],
               sweep_dir: Path, enqueue: list[dict[str, Any]] | None = None) -> Any:
    """Load the study ``study_name`` (checking it has the same search space and directions) or create it.

    Raises :class:`SweepInputError` before touching an existing study whose space differs.
    """
    import optuna

    storage = open_storage(storage_url)
    existing = _load_existing(storage, study_name)
    if existing is not None:
        check_compatible(existing, study_name, storage_url, directions, space)
    study = optuna.create_study(storage=storage, pruner=build_pruner(pruner),
                                sampler=build_sampler(sampler, space.distributions, multi_objective=len(directions) > 1),
                                study_name=study_name, directions=directions, load_if_exists=True)
    if existing is None:
        study.set_user_attr(SPACE_ATTR, space.to_json())
        study.set_user_attr(attrs.METRICS, metrics)
        study.set_user_attr(attrs.FIXED_OVERRIDES, [scrub(o) for o in fixed_overrides])
        study.set_user_attr(SWEEP_DIR_ATTR, str(sweep_dir))
        study.set_user_attr(attrs.CREATED, time.strftime("%Y-%m-%d %H:%M:%S"))
        for params in enqueue or []:
            study.enqueue_trial(params, user_attrs={attrs.ENQUEUED: True}, skip_if_exists=True)
    return study


def _load_existing(storage: Any, study_name: str) -> Any:
    import optuna

    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return optuna.load_study(study_name=study_name, storage=storage)


# A sweep folder holds one study: another study_name alone is refused there, so the new study needs a new folder.
_ELSEWHERE = ("use a new folder (hydra.sweep.dir=<new>; with a storage shared by several folders, also another "
              "hydra.sweeper.study_name), or delete the study")


def check_compatible(study: Any, name: str, url: str, directions: list[str], space: SearchSpace) -> None:
    """Refuse (one line) to go on with ``study`` when it optimises other directions or has another search space."""
    have = [d.name.lower() for d in study.directions]
    if have != [d.lower() for d in directions]:
        raise SweepInputError(f"study {name!r} in {redact(url)} optimises {have}, not {directions}; {_ELSEWHERE}")
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is not None and json.loads(stored) != json.loads(space.to_json()):
        old, new = json.loads(stored), json.loads(space.to_json())
        diff = sorted(set(old["params"]) ^ set(new["params"])) or sorted(
            k for k in new["params"] if old["params"].get(k) != new["params"][k]) or ["derived/variables"]
        raise SweepInputError(f"study {name!r} in {redact(url)} has a different search space (differs in: "
                              f"{', '.join(diff)}); {_ELSEWHERE}")


# Settings that do not change a trial's value: a resumed study may differ in them without a word.
VALUE_NEUTRAL = ("logger", "cache_dir", "hydra.")


def changed_settings(study: Any, fixed_overrides: list[str]) -> list[str]:
    """The fixed overrides of this command that differ from those the study was started with (``key=new (was
    key=old)``, ``unset`` for a missing one), logger and hydra settings aside: a study resumed with another
    ``trainer.max_steps`` ranks values that do not compare."""
    stored = study.user_attrs.get(attrs.FIXED_OVERRIDES)
    if stored is None:
        return []

    def keyed(items: list[str]) -> dict[str, str]:
        return {o.split("=", 1)[0].lstrip("+~"): o for o in items}

    old, new = keyed(stored), keyed([scrub(o) for o in fixed_overrides])
    return [f"{new.get(k, k + ' unset')} (was {old.get(k, 'unset')})" for k in sorted(old.keys() | new.keys())
            if not k.startswith(VALUE_NEUTRAL) and old.get(k) != new.get(k)]


@dataclass
class Counts:
    """Trials of the study by state, after the budget rule (re-run failures excluded)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def total(self) -> int:
        return self.complete + self.pruned + self.failed + self.running + self.waiting

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


def counted_trials(study: Any) -> list[Any]:
    """The study's trials that count towards ``n_trials`` (a re-run failure is replaced by its re-run)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    replaced = replaced_numbers(trials)
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in replaced)]


def replaced_numbers(trials: list[Any]) -> set[int]:
    """Numbers of failed trials that a re-run took the place of (studies before ``ftsweep:replaces``
    re-ran a trial only once, so there ``retry_of`` is the replaced trial)."""
    out = set()
    for t in trials:
        replaced = t.user_attrs.get(REPLACES_ATTR, t.user_attrs.get(RETRY_OF))
        if replaced is not None:
            out.add(int(replaced))
    return out


def count(study: Any) -> Counts:
    from optuna.trial import TrialState

    c = Counts()
    for t in counted_trials(study):
        if t.state == TrialState.COMPLETE:
            c.complete += 1
        elif t.state == TrialState.PRUNED:
            c.pruned += 1
        elif t.state == TrialState.FAIL:
            c.failed += 1
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.WAITING:
            c.waiting += 1
    return c


def best_trial(study: Any) -> Any:
    """The best COMPLETE trial in the study's own direction(s) (multi-objective: the first Pareto-optimal
    one); None when no trial completed. The one definition used by the sweep, the report and export.

    A repeat (a point the sampler proposed again, given the earlier trial's value without training:
    ``attrs.REPEAT_OF``) ties with the trial it repeats, and storage orders ties arbitrarily: the trained
    trial, whose folder holds the adapter, is the one returned."""
    if len(study.directions) > 1:
        return (pareto_front(study) or [None])[0]
    try:
        best = study.best_trial
    except ValueError:
        return None
    of = best.user_attrs.get(attrs.REPEAT_OF)
    return best if of is None else next((t for t in study.get_trials(deepcopy=False) if t.number == of), best)


def pareto_front(study: Any) -> list[Any]:
    """The COMPLETE trials no other COMPLETE trial dominates (as good on every metric, better on one), by
    number, repeats left out (their trial is there); [] for a single-objective study."""
    if len(study.directions) < 2:
        return []
    return sorted((t for t in study.best_trials if t.user_attrs.get(attrs.REPEAT_OF) is None), key=lambda t: t.number)


def tied_value(study: Any) -> float | None:
    """The one value every COMPLETE trial of a single-objective study scored, when there are two or more of
    them and they all tie (the objective told no trial apart, so the "best" is just the first); else None."""
    from optuna.trial import TrialState

    if len(study.directions) != 1:
        return None
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.user_attrs.get(attrs.REPEAT_OF) is None]  # a repeat ties with its trial by construction
    return values[0] if len(values) >= 2 and len(set(values)) == 1 else None


TIED_HINT = ("the objective told no trial apart, so the best trial is only the first: train longer "
             "(trainer.max_steps), widen the search space or pick another objective")


def owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def ask_with_owner(study: Any, distributions: dict[str, Any]) -> Any:
    """``study.ask(distributions)``, with this process recorded as the trial's owner as it is created.

    A new trial is created with the owner already among its user attributes (one storage call), so a
    sweep process killed right after creating it leaves a trial the owner rule recognises at once. An
    enqueued (WAITING) trial gets the owner just before this process claims it (Optuna's atomic
    WAITING -> RUNNING switch); if another process wins the claim, the winner writes its own owner.
    """
    import datetime

    import optuna
    from optuna.trial import FrozenTrial, TrialState

    me = owner()
    storage = study._storage
    study._thread_local.cached_all_trials = None  # as study.ask() does: the sampler must see the latest trials
    trial_id = None
    for waiting in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            storage.set_trial_user_attr(waiting._trial_id, OWNER_ATTR, me)
            if storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING):
                storage.set_trial_user_attr(waiting._trial_id, OWNER_ATTR, me)  # a losing claimant may have written
                trial_id = waiting._trial_id
                break
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    if trial_id is None:
        template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.datetime.now(),
                               datetime_complete=None, params={}, distributions={}, user_attrs={OWNER_ATTR: me},
                               system_attrs={}, intermediate_values={}, trial_id=-1)
        trial_id = storage.create_new_trial(study._study_id, template_trial=template)
    trial = optuna.Trial(study, trial_id)  # the sampler's before_trial / relative sampling, as in study.ask()
    try:
        for name, dist in distributions.items():
            trial._suggest(name, dist)
    except Exception as err:  # e.g. a sampler option Optuna takes and then cannot sample with (n_ei_candidates=0)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)  # no RUNNING trial left behind
        first = (str(err).strip().splitlines() or [""])[0]
        raise SweepInputError(f"hydra.sweeper.sampler: could not propose trial {trial.number}: "
                              f"{type(err).__name__}: {first}") from err
    return trial


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(trial: Any, grace_s: float, now: float | None = None) -> str | None:
    """Why a RUNNING trial is stale (its sweep process died), or None if it may still be alive."""
    now = time.time() if now is None else now
    own = trial.user_attrs.get(OWNER_ATTR) or {}
    if own.get("host") == socket.gethostname() and own.get("pid") and not pid_alive(int(own["pid"])):
        return f"stale: sweep process {own['pid']} on {own['host']} is gone"
    beats = [trial.system_attrs.get(HEARTBEAT_ATTR) or 0.0]
    if trial.datetime_start is not None:
        beats.append(trial.datetime_start.timestamp())
    silent = now - max(beats)
    if silent > grace_s:
        return f"stale: no heartbeat for {silent:.0f} s"
    return None


def fail_stale_trials(study: Any, *, grace_s: float, mine: set[int], retry: int) -> list[tuple[int, str, str]]:
    """Fail RUNNING trials whose process is gone and re-run each (see :func:`rerun`); returns
    (number, reason, what happened next) per failed trial."""
    from optuna.trial import TrialState

    storage = study._storage
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number in mine:
            continue
        reason = stale_reason(t, grace_s)
        if reason is None:
            continue
        try:
            attrs.set_attrs_in_storage(storage, t._trial_id, reason=reason, status="failed")
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except Exception:  # another sweep process finished or failed it first (its state is no longer RUNNING)
            continue
        failed.append((t.number, reason, rerun(study, t, retry, charged=False)))  # stale = owner lost
    return failed


def rerun(study: Any, trial: Any, limit: int, *, charged: bool = True) -> str:
    """Enqueue a re-run of a failed trial with its ORIGINAL trial's parameters; returns what happened, for the log.

    ``charged``: the failure may be the trial's own (the scheduler ended its job): at most ``limit`` such
    re-runs per original trial (a re-run of a re-run counts against the original). ``charged=False``: the
    trial lost its owner process (kill -9, Ctrl-C, a host gone silent); the re-run spends no budget.
    ``limit`` 0 re-runs nothing."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    root = int(trial.user_attrs.get(RETRY_OF, trial.number))
    reruns = [t for t in trials.values() if t.user_attrs.get(RETRY_OF) == root]
    spent = sum(1 for t in reruns if t.user_attrs.get(CHARGED_ATTR, True))  # older studies: every re-run
    if limit <= 0:
        return "not re-run: hydra.sweeper.retry_stale=0"
    if charged and spent >= limit:
        return f"not re-run: retry budget used ({spent} of {limit} re-runs of trial {root})"
    original = trials.get(root, trial)
    params = dict(original.params or trial.params)  # empty if it was killed inside ask(), before sampling
    study.enqueue_trial(params, user_attrs={RETRY_OF: root, REPLACES_ATTR: trial.number,
                                            ATTEMPT_ATTR: len(reruns) + 1, CHARGED_ATTR: charged})
    if not charged:
        return (f"re-run {len(reruns) + 1} with trial {root}'s parameters (its sweep process was lost: "
                f"no retry budget spent)")
    return f"re-run {len(reruns) + 1} with trial {root}'s parameters ({spent + 1} of {limit} retries)"


# ------------------------------------------------------------------------------------------ reading
def best_trial_dir(sweep_dir: str | Path) -> Path:
    """The folder of a sweep's best trial, as the study itself judges it (its direction(s); see
    :func:`best_trial`), read from the sweep's storage (``ftsweep export``, ``merge`` / ``generate`` SWEEP_DIR)."""
    study, _, _ = load_study(str(sweep_dir), None)
    best = best_trial(study)
    if best is None or not best.user_attrs.get(attrs.TRIAL_DIR):
        raise SweepInputError(f"{sweep_dir}: no complete trial in study {study.study_name!r}")
    _say_still_running(study, best)
    return Path(best.user_attrs[attrs.TRIAL_DIR])


LOST_AFTER_S = 60.0  # a running trial without a heartbeat this long (the sweeper's default grace_period_s) is lost


def _say_still_running(study: Any, best: Any) -> None:
    """One warning line when the sweep is still running (a trial of a live sweep process), or was stopped before its
    end (re-runs waiting, trials a killed sweep left running): its best trial is the best so far (an export of it is
    not the sweep's result)."""
    from optuna.trial import TrialState

    def n(k: int, what: str) -> str:
        return f"{k} trial{'' if k == 1 else 's'} {what}"

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    alive = [t for t in running if stale_reason(t, LOST_AFTER_S) is None]
    c = count(study)
    if alive:
        print(f"ftsweep: warning: sweep {study.study_name} is still running ({n(c.finished, 'finished')}, "
              f"{len(alive)} running): trial {best.number} is its best so far; a trial still to come may beat it",
              file=sys.stderr)
    elif running or c.waiting:  # Ctrl-C / kill: re-runs waiting, or trials its lost process left running
        left = ", ".join(x for x in (n(len(running), "left running by a lost sweep process") if running else "",
                                     n(c.waiting, "waiting to run") if c.waiting else "") if x)
        print(f"ftsweep: warning: sweep {study.study_name} was stopped before its end ({left}): trial {best.number} "
              "is its best so far; run the sweep's command again to finish it", file=sys.stderr)


def run_or_best_trial(path: str | Path) -> Path:
    """``path`` itself, or, when it is a sweep folder (a study file, no run config), its best trial (said on
    the console): ``ftsweep merge`` / ``generate`` take either."""
    from ftsweep.sweepdir import SweepDir

    path = Path(path)
    if (path / ".hydra" / "config.yaml").is_file() or SweepDir(path).existing_storage_url() is None:
        return path
    best = best_trial_dir(path)
    print(f"ftsweep: {path} is a sweep: its best trial {best}")
    return best


def studies_in(sweep_dir: Path) -> list[str]:
    """Names of the studies a sweep folder holds: its study.db / study.journal, or its last report's
    summary.json. Read-only (nothing is created or migrated)."""
    import contextlib
    import json
    import sqlite3

    from ftsweep.sweepdir import SweepDir

    names: list[str] = []
    folder = SweepDir(sweep_dir)
    db = folder.study_db
    if db.is_file():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                names += [r[0] for r in con.execute("SELECT study_name FROM studies")]
        except sqlite3.Error:
            pass
    journal = folder.study_journal
    if journal.is_file():
        for line in journal.read_text(errors="replace").splitlines():
            try:
                op = json.loads(line)
            except ValueError:
                continue
            if isinstance(op, dict) and op.get("op_code") == 0 and op.get("study_name"):
                names.append(str(op["study_name"]))
    summary = folder.read_summary() if not names else None
    if summary and summary.get("study_name"):
        names.append(str(summary["study_name"]))
    return names


def load_study(target: str, study_name: str | None) -> tuple[Any, Path, str]:
    """(study, sweep dir, storage URL) for a sweep directory or a storage URL, read-only: the public way
    to read a sweep (``ftsweep report``, ``ftsweep merge`` / ``export``). Raises :class:`SweepInputError`."""
    import optuna

    from ftsweep.rundir import is_finished
    from ftsweep.sweepdir import SweepDir

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(target).expanduser()
    if "://" not in target and not target.startswith("journal:"):
        if path.is_file():  # study.db, trials.md, ... of a sweep
            inside = SweepDir(path.parent).existing_storage_url() is not None
            raise SweepInputError(f"{target}: a file, not a sweep directory"
                                  + (f"; give the sweep's folder: {path.parent}" if inside else ""))
        if not path.is_dir():
            raise SweepInputError(f"{target}: no such sweep directory (or give a storage URL)")
        url = SweepDir(path).existing_storage_url()
        if url is None:
            parent = SweepDir(path.resolve().parent).existing_storage_url() is not None  # a trial's folder
            if not parent and is_finished(path):
                raise SweepInputError(f"{target}: a single run's folder, not a sweep (its result is its "
                                      "metrics.json); give a sweep folder or a storage URL")
            raise SweepInputError(f"{target}: no study.db or study.journal here; "
                                  + (f"a trial of the sweep in {path.resolve().parent}: give that folder" if parent
                                     else "pass the storage URL and --study"))
    else:
        url = target
    problem = _not_a_study_file(url)
    if problem:  # (opening it would write Optuna's tables into it, or create it)
        raise SweepInputError(problem)
    try:
        storage = open_storage(url)
    except SweepInputError as err:  # a folder or URL given to this command, not the sweeper's setting: as given
        raise SweepInputError(str(err).removeprefix("hydra.sweeper.storage: ")) from err
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if not names:  # (--study would not help)
        raise SweepInputError(f"{redact(url)} holds no study yet (has the sweep started?)")
    if study_name is None:
        if len(names) != 1:
            raise SweepInputError(f"{redact(url)} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                                  "choose one with --study")
        study_name = names[0]
    elif study_name not in names:
        raise SweepInputError(f"no study {study_name!r} in {redact(url)}; studies: {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    if path.is_dir():
        return relocated(study, path.resolve()), path.resolve(), url
    return study, _recorded_sweep_dir(study), url


def _not_a_study_file(url: str) -> str | None:
    """One line when ``url`` names a SQLite file that holds no Optuna study: missing, empty (0 bytes), not a
    SQLite database, or one without Optuna's tables. Read-only: opening such a file as storage would create it or
    write Optuna's tables into it. None otherwise (other storages: the normal path says what is wrong)."""
    import contextlib
    import sqlite3

    if not url.startswith("sqlite:///"):
        return None
    db = url[len("sqlite:///"):]
    if db in ("", ":memory:") or db.startswith("file:"):
        return None
    path = Path(db)
    if not path.is_file():
        return f"{path}: no such study file"
    empty = f"{redact(url)} holds no study yet (has the sweep started?)"
    if path.stat().st_size == 0:  # (a sweep stopped before its study was created)
        return empty
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        return f"{path}: not a SQLite study database ({err})"
    return empty if "studies" not in tables else None


def relocated(study: Any, sweep_dir: Path) -> Any:
    """``study`` as read from a sweep folder that was moved or copied (``mv``, ``rsync`` from a cluster): its
    trials' recorded folders (absolute, under the folder the sweep ran in) become the same folders under
    ``sweep_dir`` where those exist, in a read-only in-memory copy of the study; the study itself as it is when
    nothing moved. Without this the report, ``merge`` / ``export`` / ``generate`` read the old place (gone, or
    another copy's trials)."""
    import copy

    import optuna

    recorded = study.user_attrs.get(SWEEP_DIR_ATTR)
    if not recorded or Path(recorded) == sweep_dir:
        return study
    trials = study.get_trials(deepcopy=False)
    moved: dict[int, str] = {}
    for t in trials:
        here = moved_folder(t.user_attrs.get(attrs.TRIAL_DIR), recorded, sweep_dir)
        if here is not None and here.exists():
            moved[t.number] = str(here)
    if not moved:
        return study
    out = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name=study.study_name,
                              directions=study.directions)
    for key, value in study.user_attrs.items():
        out.set_user_attr(key, value)
    out.set_user_attr(SWEEP_DIR_ATTR, str(sweep_dir))
    for t in trials:
        t = copy.deepcopy(t)
        if t.number in moved:
            t.user_attrs = {**t.user_attrs, attrs.TRIAL_DIR: moved[t.number]}
        out.add_trial(t)
    return out


def moved_folder(folder: str | Path | None, recorded: str | Path | None, sweep_dir: Path) -> Path | None:
    """``folder`` (a trial's recorded folder, under the sweep folder ``recorded`` it ran in) at the same place
    under ``sweep_dir``, where the sweep folder is now; None when there is nothing to map (no folder, nothing
    recorded, or a folder outside ``recorded``)."""
    if not folder or not recorded:
        return None
    try:
        return sweep_dir / Path(folder).relative_to(recorded)
    except ValueError:  # a folder outside the sweep folder: left as recorded
        return None


def _recorded_sweep_dir(study: Any) -> Path:
    """The sweep directory recorded on the study when it was created (its ``hydra.sweep.dir``)."""
    recorded = study.user_attrs.get(SWEEP_DIR_ATTR)
    if recorded:
        return Path(recorded)
    trial_dirs = [t.user_attrs.get(attrs.TRIAL_DIR) for t in study.get_trials(deepcopy=False)]
    return next((Path(d).parent for d in trial_dirs if d), Path.cwd() / study.study_name)
