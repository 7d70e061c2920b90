"""``stage.name`` -> the stage's module. Importing a stage module is cheap (torch / trl are imported inside
its functions), so config validation can read a stage's default objective and metric names."""

from __future__ import annotations

import importlib
from types import ModuleType

STAGES = ("sft", "dpo", "kto", "grpo")


def stage_module(name: str) -> ModuleType:
    """The module of stage ``name`` (``ftsweep.stages.<name>``); KeyError for an unknown stage."""
    if name not in STAGES:
        raise KeyError(name)
    return importlib.import_module(f"ftsweep.stages.{name}")


def default_objective(name: str) -> tuple[str, str]:
    """(metric, direction) the stage declares as its default objective."""
    return stage_module(name).OBJECTIVE


def stage_metrics(name: str) -> tuple[str, ...]:
    """Metric names a run of this stage writes besides the common ones (usable as objective.metric)."""
    return stage_module(name).METRICS
