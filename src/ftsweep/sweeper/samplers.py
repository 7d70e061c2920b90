"""Sampler and pruner from the sweeper config (name -> factory; YAML holds no import paths).

Both are built from the typed ``hydra.sweeper.sampler`` / ``pruner`` configs (their defaults live only in
:mod:`ftsweep.config.sweeper`). The pruner also travels to each trial process as JSON, because Optuna
does not store it: a trial loading the study without it would silently get Optuna's default
MedianPruner.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ftsweep.config.sweeper import PrunerConf, SamplerConf
from ftsweep.sweeper.grammar import SweepInputError

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "qmc")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")


def build_sampler(conf: SamplerConf, distributions: Mapping[str, Any], *, n_existing: int = 0,
                  multi_objective: bool = False) -> Any:
    """An Optuna sampler for ``hydra.sweeper.sampler`` over ``distributions``."""
    import optuna

    name = conf.name.lower()
    seed = None if conf.seed is None else conf.seed + n_existing  # a resumed study must not replay its start-up
    options = dict(conf.options)
    startup = conf.n_startup_trials
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=conf.multivariate,
                                          group=conf.group, constant_liar=conf.constant_liar, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **options)
    if name == "grid":
        grid = {}
        for key, dist in distributions.items():
            if not hasattr(dist, "choices") and getattr(dist, "step", None) is None:
                raise SweepInputError(f"{key}: the grid sampler needs choice(...) or range(...), not an interval")
            grid[key] = list(dist.choices) if hasattr(dist, "choices") else _grid_points(dist)
        return optuna.samplers.GridSampler(grid, seed=seed, **options)
    if name == "cmaes":
        if multi_objective:
            raise SweepInputError("hydra.sweeper.sampler.name: cmaes is single-objective; use tpe or random")
        if importlib.util.find_spec("cmaes") is None:
            raise SweepInputError("hydra.sweeper.sampler.name: cmaes needs the 'cmaes' package (pip install cmaes)")
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, **options)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, **options)
    if name == "qmc":
        return optuna.samplers.QMCSampler(qmc_type=conf.qmc_type, seed=seed, **options)
    raise SweepInputError(f"hydra.sweeper.sampler.name: got {conf.name!r}; allowed: {', '.join(SAMPLERS)}")


def _grid_points(dist: Any) -> list[Any]:
    n = round((dist.high - dist.low) / dist.step) + 1
    return [dist.low + i * dist.step if isinstance(dist.step, int) else round(dist.low + i * dist.step, 12)
            for i in range(n)]


def grid_size(sampler: Any) -> int | None:
    """Number of grid points of a GridSampler (None for other samplers)."""
    space = getattr(sampler, "_search_space", None)
    if space is None or type(sampler).__name__ != "GridSampler":
        return None
    size = 1
    for values in space.values():
        size *= len(values)
    return size


def check_pruner(conf: PrunerConf) -> None:
    """Fail early (one line) for an unknown pruner name or bad settings."""
    if conf.name.lower() not in PRUNERS:
        raise SweepInputError(f"hydra.sweeper.pruner.name: got {conf.name!r}; allowed: {', '.join(PRUNERS)}")
    try:
        build_pruner(conf)
    except SweepInputError:
        raise
    except Exception as err:
        raise SweepInputError(f"hydra.sweeper.pruner: {str(err).splitlines()[0]}") from err


def pruner_to_json(conf: PrunerConf) -> str:
    """The pruner for a trial process (Optuna does not store pruners): ``hydra.sweeper.pruner`` as JSON."""
    return json.dumps(asdict(conf), default=str)


def pruner_from_json(text: str) -> PrunerConf:
    return PrunerConf(**json.loads(text))


def build_pruner(conf: PrunerConf) -> Any:
    """An Optuna pruner from ``hydra.sweeper.pruner`` (name none -> NopPruner)."""
    import optuna

    name = conf.name.lower()
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=conf.n_startup_trials, n_warmup_steps=conf.n_warmup_steps,
                                           interval_steps=conf.interval_steps, n_min_trials=conf.n_min_trials)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(conf.percentile, n_startup_trials=conf.n_startup_trials,
                                               n_warmup_steps=conf.n_warmup_steps, interval_steps=conf.interval_steps,
                                               n_min_trials=conf.n_min_trials)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=_resource(conf.min_resource), reduction_factor=conf.reduction_factor,
            min_early_stopping_rate=conf.min_early_stopping_rate, bootstrap_count=conf.bootstrap_count)
    if name == "hyperband":
        min_resource = _resource(conf.min_resource)
        return optuna.pruners.HyperbandPruner(
            min_resource=1 if min_resource == "auto" else min_resource, max_resource=_resource(conf.max_resource),
            reduction_factor=conf.reduction_factor, bootstrap_count=conf.bootstrap_count)
    raise SweepInputError(f"hydra.sweeper.pruner.name: got {conf.name!r}; allowed: {', '.join(PRUNERS)}")


def _resource(value: Any) -> Any:
    return "auto" if value is None or str(value) == "auto" else int(value)
