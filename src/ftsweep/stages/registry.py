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


def common_eval_metrics(name: str) -> tuple[str, ...]:
    """The common ``eval_*`` metrics (eval_loss, eval_mean_token_accuracy, ...) a run of this stage writes."""
    return stage_module(name).COMMON_EVAL_METRICS


def sweep_problem(name: str, swept: set[str], metric: str) -> str | None:
    """One line when a sweep ranks trials on a metric whose scale a swept key changes (a DPO sweep of
    ``stage.beta`` on eval loss: a larger beta alone gives a lower loss), from the stage's ``SCALED_BY``."""
    module = stage_module(name)
    for key, metrics in getattr(module, "SCALED_BY", {}).items():
        if key in swept and metric in metrics:
            return (f"objective.metric: {metric} changes scale with {key} in a {name} run, so trials that search "
                    f"{key} are not comparable on it; rank them on {module.SCALE_FREE}")
    return None
