"""Hydra plugin: ``hydra/sweeper=ftsweep_optuna``.

Thin on purpose: Hydra imports every module under ``hydra_plugins`` at start-up, so this file imports
only Hydra and the config dataclasses; Optuna is imported when a sweep actually runs. Trials do not go
through Hydra's launcher: each one is its own process (see :mod:`ftsweep.sweeper.runner`), which runs
as job ``hydra.job.num = <trial number>`` of this multirun in ``hydra.sweep.dir/hydra.sweep.subdir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ftsweep.config.sweeper import register_sweeper_schema

register_sweeper_schema()


class FtsweepOptunaSweeper(Sweeper):
    """Asks Optuna for trials and runs each as a subprocess; see ftsweep.config.sweeper.SweeperConf."""

    def __init__(self, **conf: Any) -> None:
        self.conf = conf
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        from ftsweep.report import sweep_end
        from ftsweep.sweeper.sweep import run_sweep, typed_conf

        assert self.config is not None
        return run_sweep(typed_conf(self.conf), self.config, list(arguments), self.trial_subdir, on_end=sweep_end)

    def trial_subdir(self, number: int, overrides: list[str]) -> str:
        """``hydra.sweep.subdir`` of job ``number`` with these task overrides, resolved as Hydra's launchers
        do (``load_sweep_config`` + the job number), so ``${hydra.job.num}`` and ``${hydra.job.override_dirname}``
        mean what they mean in any Hydra multirun."""
        assert self.hydra_context is not None and self.config is not None
        fast = _job_number_only(self.config, overrides, number)
        if fast is not None:
            return fast
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with _writable(cfg):
            cfg.hydra.job.num = number
            cfg.hydra.job.id = str(number)
        from hydra.core.hydra_config import HydraConfig

        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(cfg)  # ${hydra:...} interpolations read it
        try:
            return str(Path(str(OmegaConf.select(cfg, "hydra.sweep.subdir"))))
        finally:
            if previous is not None:
                HydraConfig.instance().cfg = previous


def _job_number_only(config: DictConfig, overrides: list[str], number: int) -> str | None:
    """The subdir without composing the job's config (0.3 s a trial) when it can only depend on the job
    number: no override sets it (or ``hydra.job.*``) and the pattern's only interpolations are ``${hydra.job.num}``
    / ``${hydra.job.id}`` (the default ``trial_${hydra.job.num}``); else None."""
    import re

    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if not isinstance(raw, str) or any(o.lstrip("+~").startswith(("hydra.sweep.subdir", "hydra.job.")) for o in overrides):
        return None
    if "$" in re.sub(r"\$\{hydra\.job\.(?:num|id)\}", "", raw):
        return None
    return str(Path(re.sub(r"\$\{hydra\.job\.(?:num|id)\}", str(number), raw)))


def _writable(cfg: DictConfig) -> Any:
    from contextlib import ExitStack

    from omegaconf import open_dict, read_write

    stack = ExitStack()
    stack.enter_context(read_write(cfg.hydra))
    stack.enter_context(open_dict(cfg.hydra))
    return stack
