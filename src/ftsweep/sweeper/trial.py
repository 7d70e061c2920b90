"""The trial side of a sweep: the entry point of each trial process the sweeper starts.

    python -m ftsweep.sweeper.trial <overrides> hydra.sweep.dir=DIR hydra.sweep.subdir=SUBDIR

runs the training recipe as job ``hydra.job.num = <trial number>`` of the sweep's Hydra multirun (its
``.hydra/`` records ``mode: MULTIRUN`` and the job number), with the trial's own TrainerCallbacks (pruning
report, heartbeat) and W&B naming (group = study, name = ``trial-<n>``).

The sweep process tells the trial who it is through environment variables, encoded and decoded by
:class:`ftsweep.sweeper.launch.TrialLaunch`.

Optuna and transformers are imported only inside a trial.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from ftsweep.sweeper.launch import TrialLaunch
from ftsweep.sweeper.study import pid_alive

log = logging.getLogger(__name__)

# The storages this process opened, by URL: a warm worker's later trials reuse the first one's (opening an
# RDBStorage checks its schema, tens of milliseconds on SQLite; a journal storage re-reads its whole log).
_STORAGES: dict[str, Any] = {}


def trial_context() -> TrialLaunch | None:
    """The sweep trial this process runs, or None outside a sweep."""
    return TrialLaunch.from_env()


class TrialReporter:
    """Reports intermediate objective values of one trial to its study; asks the pruner."""

    def __init__(self, ctx: TrialLaunch):
        self.ctx = ctx
        self.heartbeat_s = ctx.heartbeat_s
        self.parent_pid = ctx.parent_pid
        self._last_beat = 0.0
        self._trial: Any = None
        self._storage: Any = None
        self._pruner: Any = None  # the study's hydra.sweeper.pruner settings (PrunerConf)

    def _connect(self) -> Any:
        # Lazy: optuna costs ~1.7 s of imports, paid once per trial process.
        if self._trial is None:
            import optuna

            from ftsweep.sweeper.samplers import build_pruner, pruner_from_json
            from ftsweep.sweeper.storage import open_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            if self.ctx.storage not in _STORAGES:
                _STORAGES[self.ctx.storage] = open_storage(self.ctx.storage)
            self._storage = _STORAGES[self.ctx.storage]
            self._pruner = pruner_from_json(self.ctx.pruner)
            study = optuna.load_study(study_name=self.ctx.study_name, storage=self._storage,
                                      pruner=build_pruner(self._pruner))
            self._trial = optuna.trial.Trial(study, self.ctx.trial_id)
        return self._trial

    def report(self, value: float, step: int, judge: bool = True) -> bool:
        """Report ``value`` at ``step``; True when the pruner says this trial should stop now (not asked with
        ``judge=False``)."""
        trial = self._connect()
        self.heartbeat()  # throttled like every step's: a beat within heartbeat_interval_s is fresh enough
        if self.ctx.multi_objective or value is None or not math.isfinite(float(value)):
            return False  # Optuna cannot prune multi-objective studies; NaN fails the run elsewhere
        trial.report(float(value), int(step))
        from ftsweep.sweeper.samplers import may_prune_at

        # not asked where its answer is surely no (pruner none, before the warm-up): each question reads the study
        return judge and may_prune_at(self._pruner, int(step)) and bool(trial.should_prune())

    def heartbeat(self, force: bool = False) -> None:
        """Record that this trial is alive (throttled); exit at once if the sweep process is gone."""
        if self.parent_pid and not pid_alive(self.parent_pid):
            # Orphaned (the sweep was killed): nobody would record the result; the trial is re-run on resume.
            # The sweep process need not be the parent: torchrun / srun may sit in between.
            os._exit(3)
        now = time.monotonic()
        if not force and now - self._last_beat < self.heartbeat_s:
            return
        self._last_beat = now
        try:
            from ftsweep.sweeper.storage import record_heartbeat

            self._connect()
            record_heartbeat(self._storage, self.ctx.trial_id)
        except Exception as err:  # a missed beat is harmless: training goes on, the next beat retries
            log.debug("heartbeat not recorded: %s: %s", type(err).__name__, err)


def trial_callbacks(ctx: TrialLaunch) -> list[Any]:
    """TrainerCallbacks for a sweep trial: pruning report + heartbeat."""
    return [_make_pruning_callback(TrialReporter(ctx), ctx.objective_metric)]


def run_info(ctx: TrialLaunch, argv: list[str]) -> Any:
    """How the trial's W&B run is named: group = study, name = trial-<n>, trial number and params in its config
    (the params read back from the trial's overrides ``argv``)."""
    from ftsweep.tracking import RunInfo

    return RunInfo(group=ctx.study_name, name=f"trial-{ctx.trial_number}",
                   config={"trial_number": ctx.trial_number, "trial_params": ctx.params(argv),
                           "study_name": ctx.study_name})


def main(argv: list[str] | None = None, parts: Any = None) -> int:
    """Run one trial (its overrides on the command line, its identity in FTSWEEP_* variables).

    ``parts``: where the run gets its tokenizer, data and model (a warm worker passes
    :class:`ftsweep.sweeper.warm.WarmComponents`; default: built anew)."""
    import sys

    from ftsweep.config.compose import run_as_multirun_job
    from ftsweep.errors import UsageError, quiet_log_write_errors, report
    from hydra_plugins.ftsweep_sweeper.ftsweep_searchpath import register

    register()  # the user's config roots, handed down in FTSWEEP_CONFIG_DIRS (editable installs too)

    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_log_write_errors()  # a trial's train.log on a disk that filled up: one line, not a traceback a record
    ctx = trial_context()
    if ctx is None:
        return report(UsageError("ftsweep.sweeper.trial runs only inside a sweep (FTSWEEP_TRIAL_ID is not set)"))

    def task(cfg: Any) -> float | None:
        from hydra.core.hydra_config import HydraConfig

        from ftsweep import rundir
        from ftsweep.train import execute
        from ftsweep.verbosity import quiet_warnings

        quiet_warnings()  # before the pruning callback imports transformers (and bitsandbytes, which warns on CPU)
        run_dir = HydraConfig.get().runtime.output_dir
        rundir.mask_hydra_files(run_dir)  # a URL password given as an override stays out of .hydra/
        if ctx.resume_from:  # a re-run of a lost trial: on from its last checkpoint (not in .hydra/: same config)
            resume_lost_trial(cfg, ctx.resume_from)
        metrics = execute(cfg, run_dir, trial_callbacks(ctx), run_info(ctx, argv), parts)
        return metrics.get("objective")

    try:
        run_as_multirun_job(argv, ctx.trial_number, task, memo=getattr(parts, "configs", None))
    except Exception as err:  # noqa: BLE001 -- the trial's entry point: every error becomes its line(s) and exit code here
        return report(err)
    return 0



def resume_lost_trial(cfg: Any, checkpoint: str) -> None:
    """Set ``trainer.resume_from_checkpoint`` to the lost trial's ``checkpoint`` when this run can go on from it
    (same parameters, so the same config, unless the trial's config files changed since); else say why not and
    start afresh."""
    from pathlib import Path

    from ftsweep import rundir
    from ftsweep.console import say

    problem = rundir.resume_problem(cfg, Path(checkpoint))
    if problem:
        say(f"not resuming the lost trial ({problem}): starting afresh")
        return
    cfg.trainer.resume_from_checkpoint = checkpoint


def _make_pruning_callback(reporter: TrialReporter, metric: str) -> Any:
    from transformers import TrainerCallback

    class OptunaPruningCallback(TrainerCallback):
        """Reports ``metric`` at every evaluation (step = global_step) and stops a pruned trial at once.

        After training, ``pruned`` / ``pruned_at_step`` tell the training code to write
        ``metrics.json`` with status "pruned" (partial metrics kept).
        """

        def __init__(self) -> None:
            self.reporter = reporter
            self.metric = metric
            self.pruned = False
            self.pruned_at_step: int | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(self.metric)
            if value is None:
                return control
            # the last step's value is reported, not judged: a trial that ran every step is complete (pruning it
            # there would save nothing and drop its adapter and final value). Before training max_steps is 0.
            last = bool(state.max_steps) and state.global_step >= state.max_steps
            if self.reporter.report(float(value), int(state.global_step), judge=not last):
                self.pruned = True
                self.pruned_at_step = int(state.global_step)
                control.should_training_stop = True
            return control

        def on_step_end(self, args, state, control, **kwargs):
            self.reporter.heartbeat()
            if self.pruned:
                control.should_training_stop = True
            return control

    return OptunaPruningCallback()


if __name__ == "__main__":
    raise SystemExit(main())
