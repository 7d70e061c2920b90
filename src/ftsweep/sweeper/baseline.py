"""sweep=lr_after_baseline: reuse a finished run's overrides and search the learning rate around its value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsweep.sweeper.grammar import SweepInputError, format_value, override_key

# Overrides of the baseline that must not be copied into the trials (a resumed baseline: its trials would resume
# its checkpoint, whose optimizer keeps the saved lr; a resumed run equals the uninterrupted one, so they start afresh).
_DROP = ("sweep", "baseline", "optimizer.lr", "trainer.resume_from_checkpoint", "overwrite")


def best_trial_of(folder: Path) -> Path | None:
    """The run a sweep folder given as ``baseline=`` stands for: its best trial's folder (summary.json's
    ``best_trial_dir``, the run best.yaml names), read where the sweep folder is now (moved or copied since: the
    trial folder of that name in it); None when ``folder`` is a run folder or no sweep folder. Refused in one
    line: a sweep folder with no report yet, or with no single best trial (multi-objective, none complete)."""
    from ftsweep.sweepdir import SweepDir

    if (folder / ".hydra" / "config.yaml").is_file():
        return None
    sweep = SweepDir(folder)
    summary = sweep.read_summary()
    if summary is None:
        if sweep.existing_storage_url() is None:
            return None
        raise SweepInputError(f"baseline={folder}: a sweep folder with no report yet (summary.json names its best "
                              f"trial): write it with `ftsweep report {folder}`, or give one trial's folder")
    best = summary.get("best_trial_dir")
    if not best:
        why = "a multi-objective sweep" if summary.get("pareto_trials") else "no trial completed"
        raise SweepInputError(f"baseline={folder}: a sweep folder with no single best trial ({why}): give one "
                              "trial's folder")
    recorded = Path(str(best))
    here = folder / recorded.name
    return here if here.is_dir() else recorded


def load_baseline(run_dir: str, sweep: str | None = None, factor: float = 4.0) -> tuple[list[str], float]:
    """(the baseline's task overrides minus sweep/baseline/lr, its learning rate) from ``run_dir/.hydra``.

    Refused in one line: a run that did not complete (failed, killed, pruned: its lr is no result to search
    around), and a trial of another sweep than ``sweep`` (its ``sweep=<name>`` overlay set data, steps, ...
    that this sweep's overlay replaces: the trials would silently train another config)."""
    from omegaconf import OmegaConf

    from ftsweep import rundir
    from ftsweep.config.errors import UsageError

    d = Path(run_dir).expanduser()
    try:
        cfg = rundir.load_config(d)
    except UsageError as err:
        raise SweepInputError(f"baseline={err}") from err
    problem = rundir.not_complete(d)
    if problem is not None:
        raise SweepInputError(f"baseline={run_dir}: {problem}: give a run that completed")
    given = rundir.load_overrides(d)
    overrides = [o for o in given if override_key(o) not in _DROP]
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise SweepInputError(f"baseline={run_dir}: no positive optimizer.lr in .hydra/config.yaml")
    other = [o.split("=", 1)[1] for o in given if override_key(o) == "sweep"]
    if other and sweep and other[-1] != sweep:
        command = " ".join(["ftsweep train -m", f"sweep={other[-1]}", *overrides,
                            f"'optimizer.lr={lr_bracket(float(lr), factor)}'", "hydra.sweep.dir=<a new folder>"])
        raise SweepInputError(f"baseline={run_dir}: a trial of sweep={other[-1]}, whose settings (data, steps, ...) "
                              f"sweep={sweep} would not keep; search its lr in that sweep instead: {command}")
    return overrides, float(lr)


def lr_bracket(lr: float, factor: float) -> str:
    """The log interval [lr / factor, lr * factor] in sweep grammar (``factor`` > 1: checked with the sweeper's
    other limits)."""
    return f"tag(log, interval({format_value(lr / factor)}, {format_value(lr * factor)}))"


def baseline_params(run_dir: str, factor: float, sweep: str | None = None) -> dict[str, Any]:
    """Everything the sweep needs from the baseline: fixed overrides, lr param, enqueued trial 0, the run folder
    (a sweep folder's best trial, :func:`best_trial_of`) and the note that says so (``sweep``: the name of the sweep
    overlay this sweep runs, see :func:`load_baseline`)."""
    best = best_trial_of(Path(run_dir).expanduser())
    run = str(best) if best is not None else run_dir
    try:
        overrides, lr = load_baseline(run, sweep, factor)
    except SweepInputError as err:
        if best is None:
            raise
        said = str(err).removeprefix(f"baseline={run}: ")
        raise SweepInputError(f"baseline={run_dir} (its best trial {run}): {said}") from err
    note = f"baseline={run_dir}: a sweep folder, so its best trial {run}" if best is not None else None
    return {"fixed": overrides, "params": {"optimizer.lr": lr_bracket(lr, factor)},
            "enqueue": [{"optimizer.lr": lr}], "lr": lr, "dir": run, "note": note}
