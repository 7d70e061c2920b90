"""Sampler and pruner from the sweeper config (name -> factory; YAML holds no import paths).

The pruner is built from a JSON-able spec because Optuna does not store it: the trial process
rebuilds the very same pruner from ``FTSWEEP_PRUNER`` (a trial loading the study without it would
silently get Optuna's default MedianPruner).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from ftsweep.sweeper.grammar import SweepInputError

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "qmc")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")


def build_sampler(spec: Mapping[str, Any], distributions: Mapping[str, Any], *, n_existing: int = 0,
                  multi_objective: bool = False) -> Any:
    """An Optuna sampler for ``spec`` (``SamplerConf`` as a dict) over ``distributions``."""
    import optuna

    name = str(spec.get("name", "tpe")).lower()
    seed = spec.get("seed")
    if seed is not None:
        seed = int(seed) + n_existing  # a resumed study must not replay its start-up points
    options = dict(spec.get("options") or {})
    startup = int(spec.get("n_startup_trials", 10))
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=bool(spec.get("multivariate", True)),
            group=bool(spec.get("group", False)), constant_liar=bool(spec.get("constant_liar", True)), **options)
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
        return optuna.samplers.QMCSampler(qmc_type=str(spec.get("qmc_type", "sobol")), seed=seed, **options)
    raise SweepInputError(f"hydra.sweeper.sampler.name: got {name!r}; allowed: {', '.join(SAMPLERS)}")


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


def check_pruner_spec(spec: Mapping[str, Any]) -> None:
    """Fail early (one line) for an unknown pruner name or bad settings."""
    name = str(spec.get("name", "median")).lower()
    if name not in PRUNERS:
        raise SweepInputError(f"hydra.sweeper.pruner.name: got {name!r}; allowed: {', '.join(PRUNERS)}")
    try:
        build_pruner(spec)
    except SweepInputError:
        raise
    except Exception as err:
        raise SweepInputError(f"hydra.sweeper.pruner: {str(err).splitlines()[0]}") from err


def build_pruner(spec: Mapping[str, Any] | None) -> Any:
    """An Optuna pruner from a spec (``PrunerConf`` as a dict); None or name none -> NopPruner."""
    import optuna

    spec = dict(spec or {})
    name = str(spec.get("name", "none")).lower()
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec.get("n_startup_trials", 2)), n_warmup_steps=int(spec.get("n_warmup_steps", 0)),
            interval_steps=int(spec.get("interval_steps", 1)), n_min_trials=int(spec.get("n_min_trials", 1)))
    if name == "percentile":
        return optuna.pruners.PercentilePruner(
            float(spec.get("percentile", 25.0)), n_startup_trials=int(spec.get("n_startup_trials", 2)),
            n_warmup_steps=int(spec.get("n_warmup_steps", 0)), interval_steps=int(spec.get("interval_steps", 1)),
            n_min_trials=int(spec.get("n_min_trials", 1)))
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=_resource(spec.get("min_resource", "auto")), reduction_factor=int(spec.get("reduction_factor", 3)),
            min_early_stopping_rate=int(spec.get("min_early_stopping_rate", 0)),
            bootstrap_count=int(spec.get("bootstrap_count", 0)))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=int(spec["min_resource"]) if str(spec.get("min_resource", "auto")) != "auto" else 1,
            max_resource=_resource(spec.get("max_resource", "auto")), reduction_factor=int(spec.get("reduction_factor", 3)),
            bootstrap_count=int(spec.get("bootstrap_count", 0)))
    raise SweepInputError(f"hydra.sweeper.pruner.name: got {name!r}; allowed: {', '.join(PRUNERS)}")


def _resource(value: Any) -> Any:
    return "auto" if value is None or str(value) == "auto" else int(value)
