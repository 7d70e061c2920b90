"""sweep=lr_after_baseline: reuse a finished run's overrides and search the learning rate around its value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsweep.sweeper.grammar import SweepInputError, format_value, override_key

# Overrides of the baseline that must not be copied into the trials.
_DROP = ("sweep", "baseline", "optimizer.lr")


def load_baseline(run_dir: str) -> tuple[list[str], float]:
    """(the baseline's task overrides minus sweep/baseline/lr, its learning rate) from ``run_dir/.hydra``."""
    from omegaconf import OmegaConf

    from ftsweep import rundir
    from ftsweep.config.errors import UsageError

    d = Path(run_dir).expanduser()
    try:
        cfg = rundir.load_config(d)
    except UsageError as err:
        raise SweepInputError(f"baseline={err}") from err
    overrides = [o for o in rundir.load_overrides(d) if override_key(o) not in _DROP]
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise SweepInputError(f"baseline={run_dir}: no positive optimizer.lr in .hydra/config.yaml")
    return overrides, float(lr)


def lr_bracket(lr: float, factor: float) -> str:
    """The log interval [lr / factor, lr * factor] in sweep grammar (``factor`` > 1: checked with the sweeper's
    other limits)."""
    return f"tag(log, interval({format_value(lr / factor)}, {format_value(lr * factor)}))"


def baseline_params(run_dir: str, factor: float) -> dict[str, Any]:
    """Everything the sweep needs from the baseline: fixed overrides, lr param, enqueued trial 0."""
    overrides, lr = load_baseline(run_dir)
    return {"fixed": overrides, "params": {"optimizer.lr": lr_bracket(lr, factor)},
            "enqueue": [{"optimizer.lr": lr}], "lr": lr}
