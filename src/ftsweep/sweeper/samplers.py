"""Sampler and pruner from the sweeper config (name -> factory; YAML holds no import paths).

Both are built from the typed ``hydra.sweeper.sampler`` / ``pruner`` configs (their defaults live only in
:mod:`ftsweep.config.sweeper`). The pruner also travels to each trial process as JSON, because Optuna
does not store it: a trial loading the study without it would silently get Optuna's default
MedianPruner.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ftsweep.config.sweeper import PrunerConf, SamplerConf
from ftsweep.sweeper.grammar import SweepInputError

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "qmc")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")


def build_sampler(conf: SamplerConf, distributions: Mapping[str, Any], *, multi_objective: bool = False) -> Any:
    """An Optuna sampler for ``hydra.sweeper.sampler`` over ``distributions`` (a :class:`SweepSampler`).

    Raises :class:`SweepInputError` now (unknown name, interval in a grid, missing package), so a bad
    sampler fails before the study is opened.
    """
    name = conf.name.lower()
    if name not in SAMPLERS:
        raise SweepInputError(f"hydra.sweeper.sampler.name: got {conf.name!r}; allowed: {', '.join(SAMPLERS)}")
    if conf.n_startup_trials is not None and conf.n_startup_trials < 0:  # Optuna takes it and samples anyway
        raise SweepInputError(f"hydra.sweeper.sampler.n_startup_trials: must be >= 0 (got {conf.n_startup_trials})")

    if conf.seed is not None and not 0 <= conf.seed < 2**32:  # numpy's range: Optuna fails when it first samples
        raise SweepInputError(f"hydra.sweeper.sampler.seed: must be in [0, 2**32 - 1] (got {conf.seed})")

    def factory(seed: int | None) -> Any:
        return _build(conf, distributions, seed, multi_objective)

    try:  # built once now: a bad option fails here, not when the first trial is sampled
        factory(conf.seed)
    except SweepInputError:
        raise
    except (TypeError, ValueError) as err:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if unknown:
            raise SweepInputError(f"hydra.sweeper.sampler.options.{unknown.group(1)}: not an option of the {name} "
                                  "sampler (Optuna's " + str(err).split(".__init__")[0] + ")") from err
        raise SweepInputError(f"hydra.sweeper.sampler: {str(err).splitlines()[0]}") from err

    # Grid and QMC must keep one seed: trial n takes point n of one grid order / one scrambled sequence
    # that every process shares (the storage says which points are taken).
    return _sampler_class()(factory, conf.seed, per_trial_seed=name not in ("grid", "qmc"))


def _build(conf: SamplerConf, distributions: Mapping[str, Any], seed: int | None, multi_objective: bool) -> Any:
    import optuna

    name = conf.name.lower()
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


@functools.cache
def _sampler_class() -> type:
    """:class:`SweepSampler` as a subclass of Optuna's BaseSampler (built on first use: importing optuna at
    module import would slow ``--help``)."""
    import optuna

    return type("SweepSampler", (SweepSampler, optuna.samplers.BaseSampler), {})


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler in a study seeded with ``seed``: numpy's ``SeedSequence`` mixes
    the pair, so no two (seed, trial) pairs share a random stream (unlike ``seed + number``)."""
    import numpy as np

    return int(np.random.SeedSequence([seed % 2**32, number]).generate_state(1)[0])


class SweepSampler:
    """The configured Optuna sampler, seeded per trial and safe to use with ask/tell.

    * Seed: with ``sampler.seed`` set, trial ``n`` is sampled by a sampler seeded from the pair
      ``(seed, n)`` (:func:`trial_seed`). Trial numbers are unique in a study, so processes sharing one
      study never replay each other's proposals (two processes both seeding with ``seed`` proposed the same
      start-up points), a resumed study does not replay its first trials, one process with a fixed seed
      proposes the same parameters on a rerun in a fresh folder, and studies with neighbouring seeds are
      independent (``seed + n`` gave seed 1's trial ``n`` the random stream of seed 0's trial ``n + 1``).
      Optuna's samplers keep their state in the storage, not in the object, so a fresh sampler per trial is
      how many workers use them anyway. (Grid and QMC keep one seed: their
      points come from one shuffled grid / scrambled sequence indexed through the storage.)
    * End of a grid: GridSampler calls ``study.stop()`` once the grid is exhausted, which raises outside
      ``study.optimize()``; the sweep stops by counting trials instead, so that call is ignored here.
    """

    def __init__(self, factory: Any, seed: int | None, *, per_trial_seed: bool = True) -> None:
        self._factory = factory
        self._seed = seed
        self._per_trial = per_trial_seed and seed is not None
        self.inner = factory(seed)

    def _for(self, number: int) -> Any:
        return self._factory(trial_seed(self._seed, number)) if self._per_trial and number >= 0 else self.inner

    def __str__(self) -> str:
        return str(self.inner)

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        # Called first in Trial(): every later call of this trial's sampling goes to the sampler seeded for it.
        self.inner = self._for(trial.number)
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        try:
            self._for(trial.number).after_trial(study, trial, state, values)
        except RuntimeError as err:
            if "Study.stop" not in str(err):  # the exhausted grid's stop(): the runner counts trials itself
                raise

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def _grid_points(dist: Any) -> list[Any]:
    n = round((dist.high - dist.low) / dist.step) + 1
    return [dist.low + i * dist.step if isinstance(dist.step, int) else round(dist.low + i * dist.step, 12)
            for i in range(n)]


def space_points(distributions: Mapping[str, Any]) -> int | None:
    """How many distinct points a search space has: the product of its choices and ranges (None when any
    parameter is an interval, i.e. continuous)."""
    size = 1
    for dist in distributions.values():
        if hasattr(dist, "choices"):
            size *= len(dist.choices)
        elif getattr(dist, "step", None) is not None:
            size *= len(_grid_points(dist))
        else:
            return None
    return size


def grid_size(sampler: Any) -> int | None:
    """Number of grid points of a GridSampler (None for other samplers)."""
    sampler = getattr(sampler, "inner", sampler)
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
    if conf.name.lower() in ("successive_halving", "hyperband") and not conf.reduction_factor >= 2:
        # Optuna's hyperband takes 1 and every trial then fails dividing by log(1)
        raise SweepInputError(f"hydra.sweeper.pruner.reduction_factor: must be >= 2 (each rung keeps 1 / factor "
                              f"of the trials; got {conf.reduction_factor})")
    if conf.name.lower() == "hyperband":  # what Optuna's HyperbandPruner takes and then fails on in every trial
        low, high = _resource(conf.min_resource), _resource(conf.max_resource)
        for key, value in (("min_resource", low), ("max_resource", high)):
            if value != "auto" and value < 1:
                raise SweepInputError(f"hydra.sweeper.pruner.{key}: must be >= 1 step or auto (got {value})")
        if "auto" not in (low, high) and low > high:
            raise SweepInputError(f"hydra.sweeper.pruner.min_resource: {low} is above max_resource ({high})")
        if conf.bootstrap_count < 0:
            raise SweepInputError(f"hydra.sweeper.pruner.bootstrap_count: must be >= 0 (got {conf.bootstrap_count})")
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


def may_prune_at(conf: PrunerConf, step: int) -> bool:
    """False where the pruner surely answers no at ``step`` whatever the study holds (Optuna's own first exits:
    ``NopPruner`` never prunes; a median / percentile pruner not before ``n_warmup_steps``), so that a trial need
    not ask it: each ``should_prune`` reads the study's trials from storage (about 5 ms on SQLite, one per
    evaluation). Anything else is asked."""
    name = conf.name.lower()
    if name == "none":
        return False
    if name in ("median", "percentile"):
        return step >= conf.n_warmup_steps
    return True


def _resource(value: Any) -> Any:
    return "auto" if value is None or str(value) == "auto" else int(value)
