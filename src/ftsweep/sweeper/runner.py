"""Run a study: K trial processes at once, asynchronous ask/tell, failures isolated.

Each trial is its own process (``python -m ftsweep.sweeper.trial``, or a warm worker running that entry
point; GPU memory is released when a cold trial exits, each gets its own W&B run), started by a backend
(:mod:`ftsweep.sweeper.process`: a local subprocess, a warm worker or a submitit job). What a finished
trial left behind is read by :mod:`ftsweep.sweeper.outcome` (which also decides an OOM re-run).
A finished trial frees its slot at once; there is no batch barrier. The parent never imports torch: it
reads the trial's ``metrics.json`` / ``failure.json`` and tells Optuna.

``n_trials`` is the study's total over every process sharing the storage: :func:`ask_within_budget` counts
and asks under :class:`ftsweep.sweeper.storage.BudgetGuard` (a PostgreSQL advisory lock, a file lock next
to a SQLite/journal file), so processes asking at the same instant never create more than ``n_trials``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsweep import rundir
from ftsweep.config.sweeper import PrunerConf, SweeperConf
from ftsweep.errors import SweepAborted, SweepBadData
from ftsweep.notices import ENV as NOTICE_ENV
from ftsweep.numerics import intra_op_share
from ftsweep.sweepdir import SweepDir
from ftsweep.sweeper import attrs, watch
from ftsweep.sweeper.derived import derived_settings
from ftsweep.sweeper.grammar import SearchSpace, merge_overrides
from ftsweep.sweeper.launch import TrialLaunch
from ftsweep.sweeper.outcome import Outcome, oom_retry, read_outcome
from ftsweep.sweeper.placement import GpuPool
from ftsweep.sweeper.process import Exit, TrialProcess
from ftsweep.sweeper.progress import Progress
from ftsweep.sweeper.samplers import pruner_to_json, space_points
from ftsweep.sweeper.storage import BudgetGuard, record_heartbeat
from ftsweep.sweeper.study import (
    ATTEMPT_ATTR,
    RETRY_OF,
    Counts,
    ask_with_owner,
    best_trial,
    count,
    fail_stale_trials,
    moved_folder,
    rerun,
)
from ftsweep.sweeper.submitit_backend import make_backend
from ftsweep.tracking import scrub

# The trial command before its overrides (the trial's entry point, ftsweep.sweeper.trial); FTSWEEP_TRIAL_CMD
# (a JSON list) replaces it, e.g. to wrap trials in srun or, in tests, to run a fake trial.
DEFAULT_COMMAND = [sys.executable, "-m", "ftsweep.sweeper.trial"]
POLL_S = 0.2
# failure.json error types of bad data (ftsweep.data: a bad row, a chat template that cannot render the rows)
DATA_ERRORS = ("DataError", "TemplateError")
NOTICE_FILE = ".notices"  # a trial's one-time-step notices, printed on the sweep's console (ftsweep.notices)


def ask_within_budget(study: Any, space: SearchSpace, n_trials: int, guard: BudgetGuard) -> Any | None:
    """The one ask path: a new (or enqueued) trial of ``study``, or None when the study already holds
    ``n_trials`` counted trials. Count and ask run under ``guard``, the lock every process sharing the
    storage takes (on every machine), so two processes asking at the same instant cannot both see
    "one left". The owner is recorded before the lock is released, so a stale check in another process
    never sees an ownerless RUNNING trial."""
    with guard.hold():
        c = count(study)
        if c.total >= n_trials and not c.waiting:
            return None
        trial = ask_with_owner(study, dict(space.distributions))  # the owner is stored as the trial is created
    return trial


@dataclass
class RunSettings:
    """``hydra.sweeper`` (``conf``) plus what the sweep resolved from it for this run."""

    conf: SweeperConf
    sweep_dir: Path  # hydra.sweep.dir
    storage_url: str
    study_name: str
    n_trials: int  # conf.n_trials, capped at the grid size
    directions: list[str]
    metrics: list[str]
    pruner: PrunerConf  # conf.pruner ("none" for multi-objective studies)
    n_workers: int  # conf.n_workers, capped at the number of GPUs
    gpus: list[str] | None  # device ids; conf.gpus_per_trial / trials_per_gpu say how they are shared
    trial_timeout_s: float
    # hydra.sweep.subdir of trial <number> with these overrides (resolved as Hydra's launchers do)
    trial_subdir: Callable[[int, list[str]], str]
    command: list[str] = field(default_factory=lambda: list(DEFAULT_COMMAND))


@dataclass
class Job:
    trial: Any
    overrides: list[str]
    trial_dir: Path
    proc: TrialProcess
    started: float
    gpu: str | None
    oom_retried: bool = False


class SweepRunner:
    """Drives one study until ``n_trials`` trials exist and none is running."""

    def __init__(self, study: Any, space: SearchSpace, fixed_overrides: list[str], settings: RunSettings,
                 progress: Progress | None = None):
        self.study = study
        self.space = space
        self.fixed = fixed_overrides
        self.s = settings
        self.progress = progress or Progress(settings.study_name, settings.n_trials, mode="plain")
        self.jobs: dict[int, Job] = {}
        self.guard = BudgetGuard(settings.storage_url, settings.study_name, SweepDir(settings.sweep_dir).lock)
        self.backend = make_backend(settings.conf, settings.sweep_dir, settings.trial_timeout_s, settings.command)
        self.gpus = GpuPool(settings.gpus if self.backend.places_gpus else None,
                            settings.conf.gpus_per_trial, settings.conf.trials_per_gpu)
        self.aborted: str | None = None
        self._stopped: str | None = None  # why, in a few words, for the same command run again (attrs.STOPPED)
        self._failed_before = 0  # trials of the study that had failed when this run began (set by run())
        self.abort_error: type[SweepAborted] = SweepAborted  # SweepBadData: a bad row every trial would meet
        self._last_beat = 0.0
        self._last_stale_check = 0.0
        self._budget_full_until = 0.0
        self._discrete = space_points(space.distributions) is not None  # only such a space repeats points

    # ------------------------------------------------------------------ main loop
    def run(self) -> Counts:
        """Run trials until the study is complete; raise :class:`SweepAborted` on too many failures."""
        self.s.sweep_dir.mkdir(parents=True, exist_ok=True)
        self._check_stale(force=True)
        # max_failure_rate judges this run's trials: a resumed study's earlier failures (bad data since fixed, a
        # broken install) would otherwise stop it at its first finished trial
        self._failed_before = count(self.study).failed
        try:
            while True:
                self._reap()
                if self.aborted is None:
                    while len(self.jobs) < self.s.n_workers and self._launch_next():
                        pass
                self._heartbeat()
                self._check_stale()  # throttled; frees budget held by trials of dead processes
                if not self.jobs and self._study_done():
                    break
                self.backend.wait(POLL_S)
        except BaseException:
            self._interrupt_all()
            raise
        finally:
            self.backend.close()
            self.guard.close()
        counts = count(self.study)
        self.progress.update(counts, *self._best())
        # why this run stopped early, for the same command run again when no trial is left to run (finished.py)
        if self._stopped or self.study.user_attrs.get(attrs.STOPPED):
            self.study.set_user_attr(attrs.STOPPED, self._stopped)
        if self.aborted:
            raise self.abort_error(self.aborted)
        return counts

    def _study_done(self) -> bool:
        """No trial left to start and none running anywhere (other processes may share the study)."""
        if self.aborted is not None:
            return True
        self._check_stale()
        c = count(self.study)
        if c.total < self.s.n_trials or c.waiting:
            return False  # another process's failure freed budget, or a re-run is waiting
        return c.running == 0

    # ------------------------------------------------------------------ launching
    def _launch_next(self) -> bool:
        """Ask for a trial and start it; False when the budget is used up."""
        if time.monotonic() < self._budget_full_until:
            return False
        if self.gpus.enabled and not any(self.gpus.in_use[g] < self.gpus.trials_per_gpu for g in self.gpus.groups):
            return False
        trial = ask_within_budget(self.study, self.space, self.s.n_trials, self.guard)
        if trial is None:
            # Re-check only now and then: trials of other processes may fail and free budget.
            self._budget_full_until = time.monotonic() + 2.0
            return False
        overrides = merge_overrides(self.fixed, self.space.fixed, self.space.overrides(trial.params))
        if not self._repeat(trial, overrides):
            self._start(trial, overrides)
        return True

    def _repeat(self, trial: Any, overrides: list[str]) -> bool:
        """A sampler may propose a point of a discrete space again (TPE does, often: 1 to 4, median 2, of 10
        trials over 4 r x 3 lr, bench/sampler_repeats.py). Its run would repeat a COMPLETE trial's (same
        overrides, same seed), so it is not trained: the trial gets that trial's value(s) and attributes,
        ``repeat_of``, and a folder holding a copy of its metrics.json. It counts towards n_trials like any
        trial. Re-runs of lost trials always run; a space with an interval never repeats a point exactly."""
        from optuna.trial import TrialState

        if not self._discrete or trial.user_attrs.get(RETRY_OF) is not None:
            return False
        params = dict(trial.params)
        same = next((t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.params == params and t.number != trial.number), None)
        if same is None:
            return False
        trial_dir = self._new_trial_dir(self.s.trial_subdir(trial.number, overrides))
        original = attrs.TrialAttrs.of(same).trial_dir
        doc = rundir.read_metrics(original) if original is not None else None
        if doc is not None:
            rundir.write_metrics(trial_dir, {**doc, attrs.REPEAT_OF: same.number, rundir.REPEAT_DIR: str(original)})
        own = {attrs.OWNER, attrs.HEARTBEAT, attrs.RETRY_OF, attrs.REPLACES, attrs.ATTEMPT, attrs.CHARGED,
               attrs.ENQUEUED, attrs.TRIAL_DIR, attrs.RUNTIME_S, attrs.GPU}  # this trial's, not copied
        for key, value in same.user_attrs.items():
            if key not in own:
                trial.set_user_attr(key, value)
        attrs.set_attrs(trial, trial_dir=str(trial_dir), overrides=[scrub(o) for o in overrides],
                        runtime_s=0.0, repeat_of=same.number)
        self.study.tell(trial, same.values if len(same.values) > 1 else same.values[0])
        self.progress.repeated_trial(trial.number, same.number, params, same.values)
        self.progress.update(count(self.study), *self._best())
        return True

    def _new_trial_dir(self, subdir: str) -> Path:
        """The trial's folder (``hydra.sweep.subdir``), created empty."""
        trial_dir = self.s.sweep_dir / subdir
        if trial_dir.exists() and any(trial_dir.iterdir()):
            # A directory from an older study of the same name: keep it, never overwrite.
            trial_dir.rename(trial_dir.with_name(f"{trial_dir.name}.old-{int(time.time())}"))
        trial_dir.mkdir(parents=True, exist_ok=True)
        return trial_dir

    def _start(self, trial: Any, overrides: list[str], *, oom_retried: bool = False) -> None:
        subdir = self.s.trial_subdir(trial.number, overrides)
        trial_dir = self._new_trial_dir(subdir)
        gpu = self.gpus.acquire()
        attrs.set_attrs(trial, trial_dir=str(trial_dir), overrides=[scrub(o) for o in overrides])
        if gpu is not None:
            attrs.set_attrs(trial, gpu=gpu)
        resume, damaged = (None, None) if oom_retried else self._lost_checkpoints(trial)  # OOM: another batch
        cmd = TrialLaunch.argv(self._command(), overrides, str(self.s.sweep_dir), subdir)
        rundir.RunDir(trial_dir).trial_log.write_text("# " + scrub(" ".join(cmd)) + "\n")
        env = {**self._env(trial, gpu, resume), NOTICE_ENV: str(trial_dir / NOTICE_FILE)}  # relayed to the console
        proc = self.backend.start(cmd, env, trial_dir, trial.number)
        self.jobs[trial.number] = Job(trial, overrides, trial_dir, proc, time.monotonic(), gpu, oom_retried)
        note = " (OOM re-run: half micro-batch)" if oom_retried else ""
        if trial.user_attrs.get(RETRY_OF) is not None:
            note = (f" (re-run {trial.user_attrs.get(ATTEMPT_ATTR, 1)} of trial {trial.user_attrs[RETRY_OF]}, "
                    "same parameters" + (f", from its checkpoint at step {rundir.checkpoint_step(resume)}"
                                         if resume is not None else ", from step 0" if damaged else "")
                    + (f": {damaged}" if damaged else "") + ")")
        shown = derived_settings(overrides, self.space.derived)  # lora.alpha, accumulation, effective batch
        trial.set_user_attr(attrs.DERIVED, shown)
        self.progress.started_trial(trial.number, {**dict(trial.params), **shown}, note)

    def _lost_checkpoint(self, trial: Any) -> Path | None:
        """The checkpoint a re-run of lost trials goes on from (:meth:`_lost_checkpoints`)."""
        return SweepRunner._lost_checkpoints(self, trial)[0]

    def _lost_checkpoints(self, trial: Any) -> tuple[Path | None, str | None]:
        """For a re-run of lost trials: the latest intact checkpoint any of them saved (``trainer.save_steps``),
        which the re-run goes on from (the trial checks that it fits, else it starts afresh), and a note naming a
        later one passed over because a file of it is damaged (a kill or a full disk while it was saved: the one
        before it is used, as a single run's resume says); (None, None) otherwise. A sweep folder moved or copied
        since (``mv``, ``rsync``) is read where it is now, not where the study recorded it (gone, or another
        copy's checkpoints)."""
        if trial.user_attrs.get(RETRY_OF) is None:
            return None, None
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        recorded = self.study.user_attrs.get(attrs.SWEEP_DIR)
        found: list[Path] = []
        damaged: str | None = None
        number, seen = trial.user_attrs.get(attrs.REPLACES), set()
        while number is not None and int(number) in trials and int(number) not in seen:
            seen.add(int(number))
            lost = trials[int(number)]
            folder = lost.user_attrs.get(attrs.TRIAL_DIR)
            here = moved_folder(folder, recorded, self.s.sweep_dir)
            if here is not None and here.is_dir():
                folder = str(here)
            if folder:
                point, note = rundir.intact_resume_point(folder)
                if point is not None:
                    found.append(point)
                damaged = damaged or note  # (the latest lost trial's)
            number = lost.user_attrs.get(attrs.REPLACES)
        best = max(found, key=rundir.checkpoint_step, default=None)
        return best, damaged

    def _command(self) -> list[str]:
        """The trial command; k GPUs per trial = the same entry point under torchrun (one rank per GPU)."""
        k = self.s.conf.gpus_per_trial
        if k > 1 and self.s.command == DEFAULT_COMMAND and (self.s.gpus or self.s.conf.backend == "submitit"):
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={k}",
                    *DEFAULT_COMMAND[1:]]
        return list(self.s.command)

    def _env(self, trial: Any, gpu: str | None, resume: Path | None = None) -> dict[str, str]:
        """The trial's own variables (the backend adds them to the environment it runs in)."""
        # The trial exits when this process is gone (orphan check by pid): only meaningful on this host, so a
        # submitit job (maybe on another node) gets none and relies on the heartbeat/stale rules instead.
        same_host = self.s.conf.backend == "local"
        env = TrialLaunch(
            storage=self.s.storage_url, study_name=self.s.study_name, trial_id=trial._trial_id,
            trial_number=trial.number, param_keys=tuple(trial.params), pruner=pruner_to_json(self.s.pruner),
            objective_metric=self.s.metrics[0], multi_objective=len(self.s.directions) > 1,
            parent_pid=os.getpid() if same_host else 0, heartbeat_s=self.s.conf.heartbeat_interval_s,
            resume_from=str(resume) if resume is not None else None).env()
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        threads = intra_op_share(self.s.n_workers) if self.s.conf.backend == "local" else None
        if threads is not None:
            # K trials at once (K = 1 too): split the cores instead of oversubscribing them. The trial records
            # its count (manifest.json) and best.yaml pins it, so a re-run computes the same numbers.
            env["OMP_NUM_THREADS"] = threads
        return env

    # ------------------------------------------------------------------ finishing
    def _reap(self) -> None:
        for number in list(self.jobs):
            job = self.jobs[number]
            ended = job.proc.poll()
            self.progress.relay_notices(number, job.trial_dir / NOTICE_FILE)
            timeout = self.s.trial_timeout_s
            if ended is None and timeout and time.monotonic() - job.started > timeout:
                job.proc.kill()
                self._finish(job, Outcome("failed", reason=f"timeout: trial exceeded {timeout:g} s"))
            elif ended is not None:
                self._finish(job, self._outcome(job, ended))

    def _outcome(self, job: Job, ended: Exit) -> Outcome:
        """What the trial process left behind: metrics.json (complete/pruned) or failure.json."""
        return read_outcome(job.trial_dir, ended, self.s.metrics)

    def _finish(self, job: Job, out: Outcome) -> None:
        from optuna.trial import TrialState

        del self.jobs[job.trial.number]
        self.gpus.release(job.gpu)
        if out.state == "failed" and self._retry_oom(job, out):
            return
        trial = job.trial
        if out.doc.get("wandb_run_id"):
            attrs.set_attrs(trial, wandb_run_id=out.doc["wandb_run_id"])
        attrs.set_attrs(trial, status=out.state, runtime_s=round(time.monotonic() - job.started, 2))
        if out.doc.get("pruned_at_step") is not None:
            attrs.set_attrs(trial, pruned_at_step=out.doc["pruned_at_step"])
        if out.reason:
            attrs.set_attrs(trial, reason=scrub(out.reason)[:1000])  # shown by the dashboard: no secrets
        for key, value in watch.trial_attributes(out.doc, out.state, out.reason, job.oom_retried).items():
            trial.set_user_attr(key, value)
        watch.upload_trial_files(trial, job.trial_dir, out.doc, self.s.sweep_dir)
        if out.state in ("complete", "pruned"):
            self._check_same_data(trial, job.trial_dir)
        if out.state == "complete":
            self.study.tell(trial, out.values if len(out.values or []) > 1 else out.values[0])
        elif out.state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
            if out.retry:  # the scheduler ended the job: maybe the trial's doing, so it spends retry budget
                self.progress.log(f"trial {trial.number}: {rerun(self.study, trial, self.s.conf.retry_stale)}")
                self._budget_full_until = 0.0
        counts = count(self.study)
        value = (out.values[0] if len(out.values) == 1 else out.values) if out.values else None
        self.progress.finished_trial(trial.number, out.state.upper(), value, out.reason)
        self.progress.update(counts, *self._best())
        if out.state == "failed" and self.aborted is None and self._bad_data_for_all(out):
            # a single run refuses the same rows in one line before training: every trial would fail on them
            n = self.s.n_trials  # (the failed trial may have been the last one n_trials allows: the same command
            # would then refuse, 'none is left to run')
            go_on = ("fix the data and run the same command again: the study goes on" if counts.total < n else
                     f"fix the data, then raise hydra.sweeper.n_trials, e.g. hydra.sweeper.n_trials={n + max(4, n // 2)}"
                     f": failed trials count towards n_trials={n}")
            self.aborted = (f"trial {trial.number}: {out.reason}; every trial reads these rows, so no new trials "
                            f"started ({go_on})")
            self.abort_error = SweepBadData
            self._stopped = f"trial {trial.number}: {out.reason} (a data row every trial reads)"
            self.progress.log(self.aborted)
        rate = self.s.conf.max_failure_rate
        allowed = int(rate * self.s.n_trials)
        failed = counts.failed - self._failed_before
        if out.state == "failed" and failed > allowed and self.aborted is None:
            before = f" (and {self._failed_before} before this run)" if self._failed_before else ""
            self.aborted = (f"{failed} of {self.s.n_trials} trials failed{before} (max_failure_rate="
                            f"{rate:g} allows {allowed}); no new trials started. "
                            f"Last reason: {out.reason}")
            self._stopped = (f"{failed} of {self.s.n_trials} trials failed (max_failure_rate={rate:g} allows "
                             f"{allowed}; last reason: {out.reason})")
            self.progress.log(self.aborted)

    def _check_same_data(self, trial: Any, trial_dir: Path) -> None:
        """Every trial of a study that searches no ``data`` / ``model`` / ``stage`` setting reads the same tokenized
        rows (its manifest's ``data_fingerprint``). A data file edited, replaced or cut short between the sweep's start
        and a later cold trial (or a resumed sweep) gave that trial other training and validation rows: its value
        was compared with the others' without a word. Said once per trial; the first finished trial's is kept."""
        keys = [*self.space.distributions, *self.space.derived]
        if any(k.split(".")[0].lstrip("+~") in ("data", "model", "stage") for k in keys):
            return
        fp = (rundir.read_manifest(trial_dir) or {}).get("data_fingerprint")
        if not fp:
            return
        first = self.study.user_attrs.get(attrs.DATA_FINGERPRINT)
        if not isinstance(first, dict) or not first.get("fingerprint"):
            self.study.set_user_attr(attrs.DATA_FINGERPRINT, {"fingerprint": fp, "trial": trial.number})
        elif first["fingerprint"] != fp:
            note = (f"data changed: trial {trial.number} read other rows than trial {first.get('trial')} (data "
                    f"fingerprint {fp}, was {first['fingerprint']}: the data file was edited, replaced or cut short "
                    "during the study, or its tokenizer changed); its value does not compare with theirs")
            attrs.set_attrs(trial, data_changed=note)
            self.progress.log(f"warning: {note}")

    def _bad_data_for_all(self, out: Outcome) -> bool:
        """The trial failed on its data (a bad row, a template that cannot render it), and no trial reads other
        data: no ``data`` / ``model`` / ``stage`` setting (or one derived from the samples) is searched."""
        if (out.doc or {}).get("error_type") not in DATA_ERRORS:
            return False
        keys = [*self.space.distributions, *self.space.derived]
        return not any(k.split(".")[0].lstrip("+~") in ("data", "model", "stage") for k in keys)

    def _retry_oom(self, job: Job, out: Outcome) -> bool:
        """On OOM, run the trial again once with half the micro-batch (:func:`oom_retry`)."""
        if job.oom_retried or not self.s.conf.retry_oom:
            return False
        retry = oom_retry(job.trial_dir, job.overrides, out)
        if retry is None:
            return False
        overrides, first_attempt = retry
        attrs.set_attrs(job.trial, oom_first_attempt=first_attempt)
        attempt_dir = job.trial_dir.with_name(f"{job.trial_dir.name}.oom")
        shutil.rmtree(attempt_dir, ignore_errors=True)
        job.trial_dir.rename(attempt_dir)
        batch = first_attempt["per_device_train_batch_size"]
        self.progress.finished_trial(job.trial.number, "OOM", None, f"{out.reason}; re-running with micro-batch {batch // 2}")
        self._start(job.trial, overrides, oom_retried=True)
        return True

    def _best(self) -> tuple[Any, int | None]:
        if len(self.s.directions) > 1:
            return None, None
        best = best_trial(self.study)
        return (None, None) if best is None else (best.value, best.number)

    # ------------------------------------------------------------------ liveness
    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat < self.s.conf.heartbeat_interval_s:
            return
        self._last_beat = now
        for job in list(self.jobs.values()):
            try:
                record_heartbeat(self.study._storage, job.trial._trial_id)
            except Exception as err:  # a missed beat is harmless (the next one comes in heartbeat_interval_s)
                self.progress.log(f"trial {job.trial.number}: heartbeat not recorded ({type(err).__name__}: {err})")

    def _check_stale(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_stale_check < min(self.s.conf.heartbeat_interval_s, 5.0):
            return
        self._last_stale_check = now
        with self.guard.hold():  # one process, on any machine, fails and re-enqueues a stale trial
            failed = fail_stale_trials(self.study, grace_s=self.s.conf.grace_period_s, mine=set(self.jobs),
                                       retry=self.s.conf.retry_stale)
        for number, reason, next_step in failed:
            self.progress.log(f"trial {number} FAIL ({reason}); {next_step}")
        if failed:
            self._budget_full_until = 0.0

    def _interrupt_all(self) -> None:
        """Ctrl-C / error in the sweep process: stop the trials and record them for a re-run on resume."""
        from optuna.trial import TrialState

        for job in list(self.jobs.values()):
            job.proc.kill()
            try:
                attrs.set_attrs(job.trial, reason="interrupted: the sweep process was stopped", status="failed")
                self.study.tell(job.trial, state=TrialState.FAIL)
                rerun(self.study, job.trial, self.s.conf.retry_stale, charged=False)  # not its fault
            except Exception as err:  # storage gone while stopping: the stale check re-runs it on resume
                print(f"[sweep] trial {job.trial.number} not recorded as interrupted: {type(err).__name__}: {err}",
                      file=sys.stderr)
        self.jobs.clear()


# ---------------------------------------------------------------------- helpers
def default_command() -> list[str]:
    """The trial command prefix (FTSWEEP_TRIAL_CMD, a JSON list, replaces ``python -m ftsweep.sweeper.trial``)."""
    raw = os.environ.get("FTSWEEP_TRIAL_CMD")
    return list(json.loads(raw)) if raw else list(DEFAULT_COMMAND)


def detect_gpus(spec: Any) -> list[str] | None:
    """Devices to hand out, one per trial: "auto" = CUDA_VISIBLE_DEVICES or nvidia-smi's list, MIG slices
    included (ftsweep.device; no torch import); a list or "0,1" = those; null/[]/false = no assignment."""
    if spec is None or spec == [] or spec is False:
        return None
    if spec != "auto":
        return [str(g) for g in (spec if isinstance(spec, (list, tuple)) else str(spec).split(","))]
    from ftsweep.device import list_devices

    return list_devices() or None
