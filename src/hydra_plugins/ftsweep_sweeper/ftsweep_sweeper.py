"""Hydra plugin: ``hydra/sweeper=ftsweep_optuna``.

Thin on purpose: Hydra imports every module under ``hydra_plugins`` at start-up, so this file imports
only Hydra and the config dataclasses; Optuna is imported when a sweep actually runs. Trials do
not go through Hydra's launcher: each one is its own ``ftsweep train`` process (see
:mod:`ftsweep.sweeper.runner`).
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ftsweep.sweeper.config import SweeperConf

ConfigStore.instance().store(group="hydra/sweeper", name="ftsweep_optuna", node=SweeperConf, provider="ftsweep")


class FtsweepOptunaSweeper(Sweeper):
    """Asks Optuna for trials and runs each as a subprocess; see ftsweep.sweeper.config.SweeperConf."""

    def __init__(self, **conf: Any) -> None:
        self.conf = conf
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config

    def sweep(self, arguments: list[str]) -> Any:
        from ftsweep.sweeper.sweep import run_sweep

        conf = OmegaConf.to_container(OmegaConf.create(_plain(self.conf)), resolve=True)
        return run_sweep(conf, self.config, list(arguments))


def _plain(conf: dict[str, Any]) -> dict[str, Any]:
    return {k: (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)
            for k, v in conf.items() if k != "_target_"}
