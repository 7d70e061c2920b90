"""sweep=lr_after_baseline: reuse a finished run's overrides and search the learning rate around its value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsweep.sweeper.grammar import SweepInputError, format_value, override_key

# Overrides of the baseline that must not be copied into the trials (a resumed baseline: its trials would resume
# its checkpoint, whose optimizer keeps the saved lr; a resumed run equals the uninterrupted one, so they start afresh).
_DROP = ("sweep", "baseline", "optimizer.lr", "trainer.resume_from_checkpoint", "overwrite")


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
    """Everything the sweep needs from the baseline: fixed overrides, lr param, enqueued trial 0 (``sweep``: the
    name of the sweep overlay this sweep runs, see :func:`load_baseline`)."""
    overrides, lr = load_baseline(run_dir, sweep, factor)
    return {"fixed": overrides, "params": {"optimizer.lr": lr_bracket(lr, factor)},
            "enqueue": [{"optimizer.lr": lr}], "lr": lr}
