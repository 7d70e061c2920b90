"""One sweep from start to report: resolve settings, validate everything, run the study, report.

Called by the Hydra plugin (:mod:`hydra_plugins.ftsweep_sweeper`) with the sweeper's config, the
composed training config and the command line's task overrides.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftsweep.config import options
from ftsweep.config.sweeper import SweeperConf
from ftsweep.sweepdir import SweepDir
from ftsweep.sweeper import attrs
from ftsweep.sweeper.grammar import SearchSpace, SweepInputError, merge_overrides, override_key, parse_space
from ftsweep.sweeper.samplers import check_pruner
from ftsweep.sweeper.study import studies_in


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep, ready to run: what :func:`plan_sweep` decided and :func:`execute` runs."""

    study: Any  # the opened (created or resumed) optuna.Study
    space: SearchSpace  # what a trial samples and derives
    fixed: list[str]  # overrides every trial gets (command line over sweep file over baseline)
    settings: Any  # runner.RunSettings: budget, workers, GPUs, storage, sweep dir, trial command
    wandb_summary: bool  # log the sweep's W&B summary run at the end
    logger: dict[str, Any] = field(default_factory=dict)  # the resolved logger group (for that summary run)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def typed_conf(conf: Mapping[str, Any]) -> SweeperConf:
    """``hydra.sweeper`` as the typed :class:`SweeperConf` (nested Sampler/PrunerConf objects too)."""
    from omegaconf import OmegaConf

    plain = {k: v for k, v in conf.items() if k != "_target_"}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SweeperConf), OmegaConf.create(
            {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in plain.items()}))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except Exception as err:
        from ftsweep.config.compose import explain

        text = explain(err, prefix="hydra.sweeper.")
        raise SweepInputError(text if text.startswith("hydra.sweeper.") else f"hydra.sweeper.{text}") from err


def group_options(key: str) -> list[str] | None:
    """Option names of config group ``key`` over the whole config search path (None if not a group)."""
    from ftsweep.config.compose import group_options as options

    return options(key)


def split_arguments(arguments: list[str]) -> tuple[list[str], dict[str, str]]:
    """Command-line task overrides -> (fixed overrides, sweep params keyed by override key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed, params = [], {}
    for arg in arguments:
        try:
            override = parser.parse_override(arg)
        except Exception as err:
            raise SweepInputError(f"cannot parse override {arg!r}: {str(err).splitlines()[0]}") from err
        if override.is_sweep_override():
            params[override.get_key_element()] = arg.split("=", 1)[1]
        else:
            fixed.append(arg)
    return fixed, params


def _study_name(conf: SweeperConf, cfg: Any) -> str:
    from omegaconf import OmegaConf

    name = conf.study_name or OmegaConf.select(cfg, "hydra.runtime.choices.sweep") or "ftsweep"
    return str(name).replace("/", "_")


def resolve_storage(storage: str | None, sweep_dir: Path) -> str:
    """Default storage: SQLite in the sweep dir; "journal" = a journal file; relative SQLite paths made absolute."""
    if not storage or storage in ("sqlite", "journal"):
        return SweepDir(sweep_dir).default_storage_url(storage or "sqlite")
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        path = storage[len("sqlite:///"):]
        if path and path != ":memory:":
            return f"sqlite:///{Path(path).resolve()}"
    if storage.startswith("journal:"):
        return f"journal:{Path(storage[len('journal:'):].removeprefix('//')).resolve()}"
    return storage


def sweep_dir_of(conf: SweeperConf, cfg: Any) -> Path:
    """Where the sweep writes: ``hydra.sweep.dir`` (Hydra's convention). ``hydra.sweeper.sweep_dir`` is a
    deprecated alias that still wins when set."""
    from omegaconf import OmegaConf

    if conf.sweep_dir:
        print("ftsweep: hydra.sweeper.sweep_dir is deprecated; use hydra.sweep.dir", file=sys.stderr)
        return Path(conf.sweep_dir).expanduser().resolve()
    return Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))).expanduser().resolve()


def check_sweep_dir(sweep_dir: Path, study_name: str) -> None:
    """Refuse a sweep folder that holds another study (its report, best.yaml and trial folders would be
    overwritten); resuming the same study in its own folder is the normal path."""
    from ftsweep import rundir

    if rundir.is_finished(sweep_dir) or rundir.RunDir(sweep_dir).adapter.is_dir():  # a single run's folder
        raise SweepInputError(f"hydra.sweep.dir: {sweep_dir} holds a single run (its metrics and adapter); give the "
                              "sweep a folder of its own (hydra.sweep.dir=<new>)")
    names = studies_in(sweep_dir)
    if names and study_name not in names:
        other = names[0]
        raise SweepInputError(f"hydra.sweep.dir: {sweep_dir} holds study {other!r}, not {study_name!r}; use a new "
                              f"folder (hydra.sweep.dir=<new>), resume it with hydra.sweeper.study_name={other}, "
                              "or replace its report with overwrite=true")


def check_trial_subdir(trial_subdir: Callable[[int, list[str]], str], sweep_dir: Path,
                       corners: list[list[str]]) -> None:
    """``hydra.sweep.subdir`` must name a folder of its own for each trial, inside the sweep folder: a trial whose
    folder is taken renames the folder it finds (``<name>.old-<time>``), a running trial's too, and a folder
    outside ``hydra.sweep.dir`` (``../x``, ``/x``) would be another folder of the user's. Resolved for trials 0
    and 1 at the two corners of the space (the overrides of the trials most unlike each other)."""
    first, second = trial_subdir(0, corners[0]), trial_subdir(1, corners[1])
    for sub in (first, second):
        inside = (sweep_dir / sub).resolve()
        if Path(sub).is_absolute() or inside == sweep_dir.resolve() or sweep_dir.resolve() not in inside.parents:
            raise SweepInputError(f"hydra.sweep.subdir: {sub!r} must be a folder inside hydra.sweep.dir "
                                  "(relative, without '..'; default trial_${hydra.job.num})")
    if first == second:
        raise SweepInputError(f"hydra.sweep.subdir: {first!r} is the same folder for every trial (parallel trials "
                              "would rename each other's folders); include ${hydra.job.num}, e.g. "
                              "trial_${hydra.job.num}")


PROGRESS_MODES = ("auto", "rich", "plain")


def _check_limits(conf: Any) -> None:
    """The sweeper's counts and durations that nothing else checks (a negative grace period would fail every
    running trial as stale; a factor <= 1 would search an empty range). One line each."""
    positive = {"heartbeat_interval_s": conf.heartbeat_interval_s, "gpus_per_trial": conf.gpus_per_trial,
                "trials_per_gpu": conf.trials_per_gpu}
    for key, value in positive.items():
        if not value > 0:  # (NaN too)
            raise SweepInputError(f"hydra.sweeper.{key}: must be > 0 (got {value})")
    if not conf.grace_period_s >= conf.heartbeat_interval_s:
        raise SweepInputError(f"hydra.sweeper.grace_period_s: must be at least heartbeat_interval_s "
                              f"({conf.heartbeat_interval_s:g} s), or running trials look stale (got "
                              f"{conf.grace_period_s})")
    for key in ("lr_find_factor", "baseline_lr_factor"):
        value = getattr(conf, key)
        if not value > 1:
            raise SweepInputError(f"hydra.sweeper.{key}: must be > 1, the lr range is [lr / factor, lr * factor] "
                                  f"(got {value})")
    if conf.progress not in PROGRESS_MODES:  # anything else was read as plain lines
        raise SweepInputError(f"hydra.sweeper.progress: got {conf.progress!r}; allowed: {', '.join(PROGRESS_MODES)}")
    if not conf.submitit.timeout_min >= 0:
        raise SweepInputError(f"hydra.sweeper.submitit.timeout_min: must be >= 0 minutes, 0 = the cluster's "
                              f"default (got {conf.submitit.timeout_min})")


def _dataset_problem(cfg: Any, dataset: str | None = None) -> str | None:
    """:func:`ftsweep.data.dataset_info.dataset_problem`, importing the data package only when a
    ``dataset_info.json`` entry is named (the sweep process needs it for nothing else)."""
    from omegaconf import OmegaConf

    if not (dataset or OmegaConf.select(cfg, "data.dataset") or OmegaConf.select(cfg, "data.eval_dataset")):
        return None
    from ftsweep.data.dataset_info import dataset_problem

    return dataset_problem(cfg, dataset)


def _format_problem(cfg: Any, path: str | None = None) -> str | None:
    """:func:`ftsweep.data.options.format_problem` (``data.format=auto``: the training file's format can be told),
    importing the data package only then."""
    from omegaconf import OmegaConf

    if OmegaConf.select(cfg, "data.format") != "auto":
        return None
    from ftsweep.data.options import format_problem

    return format_problem(cfg, path)


def _holds(dist: Any, value: float) -> bool:
    """Whether a searched distribution (a range or a choice) can give ``value``; True when not searched."""
    if dist is None:
        return True
    if hasattr(dist, "choices"):
        return any(isinstance(c, (int, float)) and math.isclose(float(c), value, rel_tol=1e-9) for c in dist.choices)
    return float(dist.low) <= value <= float(dist.high)


def _composed(overrides: list[str]) -> Any:
    """The trials' config before the sampled values (not validated: :func:`validate_trial_config` checks it)."""
    from ftsweep.config.compose import ConfigFailure, compose

    try:
        return compose(overrides, check=False)
    except ConfigFailure as err:
        raise SweepInputError(f"a trial would fail: {err}") from err


def validate_trial_config(fixed: list[str], space: SearchSpace) -> None:
    """Compose the trial config at the lowest and the highest corner of the space, and with each value of every
    choice (one-line errors)."""
    from omegaconf import OmegaConf

    from ftsweep.config.compose import ConfigFailure, compose
    from ftsweep.config.validate import DATA_FILE_KEYS, missing_data_file
    from ftsweep.stages.init_from import init_from_problem

    corners = []
    for corner in ("low", "high"):
        overrides = merge_overrides(fixed, space.fixed, space.overrides(space.corner(corner)))
        try:
            cfg = compose(overrides)
        except ConfigFailure as err:
            raise SweepInputError(f"a trial would fail: {err}") from err
        for key in DATA_FILE_KEYS:  # fixed data files (the searched ones: every choice, below)
            message = missing_data_file(key, OmegaConf.select(cfg, key))
            if message:
                raise SweepInputError(message)
        message = init_from_problem(cfg) or _dataset_problem(cfg)
        if message:
            raise SweepInputError(message)
        corners.append(cfg)
    # every value of a choice, with the rest of the space at its lowest: the corners hold only its first and last
    # value, and a bad one between them failed every trial that drew it (counted towards n_trials)
    low = space.corner("low")
    for name, dist in space.distributions.items():
        for choice in list(getattr(dist, "choices", ()))[1:-1]:
            try:
                compose(merge_overrides(fixed, space.fixed, space.overrides({**low, name: choice})))
            except ConfigFailure as err:
                raise SweepInputError(f"a trial would fail: {err}") from err
    from ftsweep.stages.registry import sweep_problem

    message = sweep_problem(cfg.stage.name, set(space.distributions), cfg.objective.metric)
    if message:
        raise SweepInputError(message)
    for key in DATA_FILE_KEYS:
        for choice in getattr(space.distributions.get(key), "choices", ()):
            message = missing_data_file(key, choice)
            if message:
                raise SweepInputError(message)
    # data.format=auto: every training file's format can be told and fits the config (each searched data.path, else
    # the corners' file), once every file is known to exist
    searched = getattr(space.distributions.get("data.path"), "choices", ())
    for one, path in [(cfg, str(c)) for c in searched] or [(c, None) for c in corners]:
        message = _format_problem(one, path)
        if message:
            raise SweepInputError(message)
    for choice in getattr(space.distributions.get("data.dataset"), "choices", ()):  # dataset_info.json entries
        message = _dataset_problem(cfg, str(choice))
        if message:
            raise SweepInputError(message)


def run_sweep(conf: SweeperConf, cfg: Any, arguments: list[str], trial_subdir: Callable[[int, list[str]], str],
              on_end: Callable[[SweepPlan], Path | None] | None = None) -> int:
    """Run the sweep; returns 0. Raises :class:`SweepInputError` on bad input (before any trial) and
    :class:`SweepAborted` when the sweep stopped early (after its report). ``on_end``: the report hook
    (:func:`ftsweep.report.sweep_end`), called once the trials are done; returns the report's folder."""
    from ftsweep.sweeper.finished import StudyFinished

    try:
        plan = plan_sweep(conf, cfg, arguments, trial_subdir)
    except SweepInputError as err:
        at = _written_in_sweep_file(str(err), cfg, arguments)
        if not at:
            raise
        raise SweepInputError(f"{err}{at}") from err
    except StudyFinished as done:  # not an error: the study is complete; one line says so
        print(f"ftsweep: {done}")
        return 0
    return execute(plan, on_end)


def _written_in_sweep_file(message: str, cfg: Any, arguments: list[str]) -> str:
    """`` (sweep/my_search.yaml line 17)`` when the key an error names (``optimizer.lr: empty interval ...``,
    ``a trial would fail: lora: no such option ...``) is written in the user's own sweep file, not given on the
    command line; "" otherwise (a shipped sweep, a message that names its file already)."""
    from omegaconf import OmegaConf

    from ftsweep.config.source import sweep_param_where

    m = re.match(r"(?:a trial would fail: )?([\w.\[\]/@-]+): ", message)
    if not m or ".yaml" in message:
        return ""
    # (Hydra hands the sweeper the task's overrides only: its own, hydra.sweeper.n_trials=0, are in hydra.overrides;
    # read unresolved: hydra.sweep.subdir=t_${hydra.job.num} has no value yet)
    try:
        own = OmegaConf.select(cfg, "hydra.overrides.hydra")
        given = [*arguments, *(OmegaConf.to_container(own, resolve=False) if own is not None else [])]
        return sweep_param_where(m.group(1), OmegaConf.select(cfg, "hydra.runtime.choices.sweep"),
                                 [str(o) for o in given])
    except Exception:  # noqa: BLE001 -- where it was written is extra: the error itself must come through
        return ""


def check_gpus_exist(spec: Any, gpus: list[str] | None) -> None:
    """Listed GPU indices (``hydra.sweeper.gpus=[0,1]``) must be GPUs this machine has: a missing one would
    leave its trials on the CPU without a word. Device names (MIG or GPU UUIDs) are left to CUDA."""
    if spec == "auto" or not gpus:
        return
    from ftsweep.device import list_devices

    present = list_devices()
    missing = [g for g in gpus if g.isdigit() and g not in present]
    if missing:
        has = f"its GPUs are {', '.join(present)}" if present else "it has no GPU (nvidia-smi, CUDA_VISIBLE_DEVICES)"
        raise SweepInputError(f"hydra.sweeper.gpus: GPU {', '.join(missing)} is not on this machine: {has}; "
                              "use gpus=auto, gpus=null (CPU) or the GPUs listed")


def plan_sweep(conf: SweeperConf, cfg: Any, arguments: list[str],
               trial_subdir: Callable[[int, list[str]], str]) -> SweepPlan:
    """Everything checked and resolved, study opened or created; no trial started yet."""
    import optuna
    from omegaconf import OmegaConf

    from ftsweep.config import KNOWN_METRICS
    from ftsweep.config.objective import GENERATION_METRICS, LM_EVAL, certain_direction, natural_direction
    from ftsweep.paths import path_slug
    from ftsweep.sweeper.baseline import baseline_params
    from ftsweep.sweeper.placement import GpuPool
    from ftsweep.sweeper.process import check_backend, cold_only
    from ftsweep.sweeper.runner import DEFAULT_COMMAND, RunSettings, default_command, detect_gpus
    from ftsweep.sweeper.samplers import build_sampler, grid_size, space_points
    from ftsweep.sweeper.storage import flock
    from ftsweep.sweeper.study import VALUE_NEUTRAL, changed_settings, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _check_limits(conf)  # (the baseline's lr bracket and the lr finder use the factors checked there)
    fixed, cli_params = split_arguments(arguments)
    fixed_cli = list(fixed)
    params = {str(k): v for k, v in (conf.params or {}).items()}
    file_params = set(params)
    study_name = _study_name(conf, cfg)
    enqueue: list[dict[str, Any]] = []
    differ: list[str] = []  # fixed overrides of the command line that the baseline did not have
    baseline_note = None  # baseline=<sweep folder>: the best trial it stands for
    # What the trials are composed from (their objective, stage, logger, timeout): the command line's config, or with
    # a baseline its overrides too (a baseline run with objective=exact_match: the lr sweep around it minimized
    # eval_loss)
    trial_cfg = cfg
    baseline = OmegaConf.select(cfg, "baseline")
    if baseline:
        b = baseline_params(str(baseline), conf.baseline_lr_factor,
                            sweep=OmegaConf.select(cfg, "hydra.runtime.choices.sweep"))
        for o in fixed_cli:  # the sampled lr would win over it: the sweep would silently ignore it
            if override_key(o) == "optimizer.lr":
                raise SweepInputError(f"{o}: baseline={baseline} sets the lr: trial 0 runs at its lr "
                                      f"({b['lr']:g}), the others around it (hydra.sweeper.baseline_lr_factor); "
                                      "drop it, or give a range to search instead (optimizer.lr='tag(log, "
                                      "interval(a, b))')")
        fixed = merge_overrides(b["fixed"], fixed)  # the command line wins over the baseline's overrides
        trial_cfg = _composed(fixed)
        had = {override_key(o): o for o in b["fixed"]}
        differ = [f"{o} (baseline: {had.get(override_key(o), 'unset')})" for o in fixed_cli
                  if o not in b["fixed"] and override_key(o) not in ("sweep", "baseline")
                  and not override_key(o).startswith(VALUE_NEUTRAL)]
        params.update(b["params"])
        enqueue, baseline_note = b["enqueue"], b["note"]
        slug = path_slug(b["dir"])  # (a sweep folder's best trial: the run its lr comes from)
        if not study_name.endswith(f"-{slug}"):  # (the name a refusal tells to resume with already has it)
            study_name = f"{study_name}-{slug}"
    elif conf.requires_baseline:
        raise SweepInputError("this sweep needs baseline=<run dir> (a finished ftsweep train run directory)")
    params.update(cli_params)  # a sweep on the command line replaces the file's definition
    for o in fixed_cli:  # ... and so does a fixed value (a plain value: the same for every trial)
        key = override_key(o)
        if key in file_params and key not in cli_params and not o.startswith("~") and "=" in o:
            params[key] = o.split("=", 1)[1]
    if not params and not conf.variables:
        raise SweepInputError("nothing to search: no override lists values (e.g. optimizer.lr=1e-4,1e-3) and "
                              "hydra.sweeper.params is empty: use sweep=<name> (see sweep/), or drop -m to train "
                              "this one config")
    space = parse_space(params, conf.variables, conf.derived, group_options=group_options)
    if baseline and "optimizer.lr" in cli_params and not _holds(space.distributions.get("optimizer.lr"), b["lr"]):
        # trial 0 would run at the baseline's lr outside the range the command line searches, without a word
        raise SweepInputError(f"optimizer.lr={cli_params['optimizer.lr']}: does not hold baseline={baseline}'s lr "
                              f"({b['lr']:g}), which trial 0 runs at: widen it, or drop it to search around the "
                              "baseline's lr (hydra.sweeper.baseline_lr_factor)")

    metrics = [str(m) for m in _as_list(conf.metric)] or [str(OmegaConf.select(trial_cfg, "objective.metric"))]
    if len(metrics) > 1 and not _as_list(conf.direction):
        # objective.direction is one metric's: [exact_match, eval_loss] would maximize the loss too
        raise SweepInputError(f"hydra.sweeper.metric lists {len(metrics)} metrics ({', '.join(metrics)}): set "
                              "hydra.sweeper.direction to one direction per metric, e.g. metric=[exact_match,eval_loss] "
                              "direction=[maximize,minimize]")
    # no hydra.sweeper.direction: objective.direction for objective.metric; another metric (objective=exact_match
    # hydra.sweeper.metric=eval_loss) the direction its name says, as objective.metric=... alone takes it
    objective_metric = str(OmegaConf.select(trial_cfg, "objective.metric"))
    objective_direction = str(OmegaConf.select(trial_cfg, "objective.direction"))
    directions = [str(d).lower() for d in _as_list(conf.direction)] or [
        objective_direction if m == objective_metric else natural_direction(m) or objective_direction for m in metrics]
    if len(metrics) == 1 and len(directions) > 1:
        raise SweepInputError(f"hydra.sweeper.direction has {len(directions)} directions: set hydra.sweeper.metric "
                              "to the same number of metrics")
    if len(directions) == 1 and len(metrics) > 1:
        directions = directions * len(metrics)
    if len(directions) != len(metrics) or any(d not in options.DIRECTIONS for d in directions):
        raise SweepInputError(f"hydra.sweeper.direction: got {directions} for metrics {metrics}; "
                              f"one of {', '.join(options.DIRECTIONS)} per metric")
    for m, d in zip(metrics, directions):
        # a loss maximized (direction=maximize, as a Hydra Optuna sweep over an accuracy sets it, with the metric
        # still eval_loss): the "best" trial is the worst-trained, and the pruner stops the good ones
        natural = certain_direction(m)
        if natural and natural != d:
            key = "hydra.sweeper.direction" if _as_list(conf.direction) else "objective.direction"
            raise SweepInputError(
                f"{key}: {d} for {m}, which is better {'lower' if natural == 'minimize' else 'higher'}: the best trial "
                f"would be the worst; drop it ({m} is {natural}d by default), or choose the metric to {d} "
                f"(objective={'exact_match' if d == 'maximize' else 'eval_loss'}, hydra.sweeper.metric=<metric>)")
    from ftsweep.config.objective import run_metrics
    from ftsweep.stages.registry import common_eval_metrics, stage_metrics

    stage = str(OmegaConf.select(trial_cfg, "stage.name", default="sft"))
    logged = run_metrics(stage_metrics(stage), common_eval_metrics(stage))
    generated = [str(OmegaConf.select(trial_cfg, "objective.metric")),
                 *(OmegaConf.select(trial_cfg, "objective.extra_metrics") or [])]
    for m in metrics:
        if m in GENERATION_METRICS and m not in generated:
            raise SweepInputError(f"hydra.sweeper.metric: {m} is a generation metric the trials do not compute; "
                                  f"set objective={m} (or add it to objective.extra_metrics)")
        if m == LM_EVAL and m not in generated:
            raise SweepInputError(f"hydra.sweeper.metric: {m} is computed only with objective=lm_eval")
        if m in KNOWN_METRICS and m not in logged:
            raise SweepInputError(f"hydra.sweeper.metric: stage={stage} does not log {m}; its metrics: "
                                  f"{', '.join(logged)}")
        if m not in logged and m not in GENERATION_METRICS and m != LM_EVAL:
            raise SweepInputError(f"hydra.sweeper.metric: unknown metric {m!r}; available: "
                                  f"{', '.join((*logged, *GENERATION_METRICS))}")

    pruner = conf.pruner
    if len(directions) > 1:
        pruner = replace(pruner, name="none")  # Optuna cannot prune multi-objective trials
    check_pruner(pruner)
    if conf.n_trials < 1:
        raise SweepInputError(f"hydra.sweeper.n_trials: must be >= 1 (got {conf.n_trials})")
    if conf.n_workers < 1:
        raise SweepInputError(f"hydra.sweeper.n_workers: must be >= 1 (got {conf.n_workers})")
    if conf.retry_stale < 0:
        raise SweepInputError(f"hydra.sweeper.retry_stale: must be >= 0 re-runs (got {conf.retry_stale})")
    if not conf.trial_timeout_s >= 0:  # (NaN too)
        raise SweepInputError(f"hydra.sweeper.trial_timeout_s: must be >= 0 seconds, 0 = no limit "
                              f"(got {conf.trial_timeout_s})")
    if not 0 <= conf.dashboard_port < 65536:
        raise SweepInputError(f"hydra.sweeper.dashboard_port: must be 1 to 65535, or 0 for a free port "
                              f"(got {conf.dashboard_port})")
    if conf.dashboard and conf.dashboard_port:
        # the dashboard beside the sweep fails on a taken port in its own log only, while the sweep would print
        # that port's URL as live (another program, or another study's dashboard, answers there)
        from ftsweep.sweeper.watch import port_taken

        taken = port_taken("127.0.0.1", conf.dashboard_port)
        if taken:
            raise SweepInputError(f"hydra.sweeper.dashboard_port: cannot listen on 127.0.0.1:{conf.dashboard_port}: "
                                  f"{taken} (another program uses it? choose another port, or 0 for a free one)")
    if not 0.0 <= conf.max_failure_rate <= 1.0:
        raise SweepInputError(f"hydra.sweeper.max_failure_rate: must be in [0, 1] (got {conf.max_failure_rate})")
    notes: list[str] = []  # what the plan changed, printed once every check passed (bad input is one line)
    if baseline_note:
        notes.append(f"[sweep {study_name}] {baseline_note}")
    if baseline and differ:
        notes.append(f"[sweep {study_name}] trials differ from the baseline in: {', '.join(differ)}: trial 0 at its "
                     f"lr is not the baseline's run (the command line wins over baseline={baseline}'s overrides)")
    def as_grid(conf: SweeperConf, space: SearchSpace, enqueue: list[dict[str, Any]]) -> tuple[SweeperConf, int]:
        """(conf, n_trials): a grid when every point of the space fits in the budget and no trial is enqueued (any
        other sampler would repeat points, identical runs with the seed fixed, before it covered them all; as
        Hydra's basic sweeper does, `-m a=1,2` runs each value once); n_trials at most the grid's size. The
        sampler is built here once (grid size, unknown name, missing package) before anything is created."""
        points = space_points(space.distributions)
        if (points is not None and points <= conf.n_trials and conf.sampler.name.lower() != "grid" and not enqueue):
            notes.append(f"[sweep {study_name}] the search space has {points} point(s) (choices and ranges only), no "
                         f"more than hydra.sweeper.n_trials={conf.n_trials}: running each once (sampler grid instead "
                         f"of {conf.sampler.name})")
            conf = replace(conf, sampler=replace(conf.sampler, name="grid"))
        size = grid_size(build_sampler(conf.sampler, space.distributions, multi_objective=len(directions) > 1))
        return conf, min(conf.n_trials, size) if size is not None else conf.n_trials

    # (lr_find enqueues trial 0 or, without a reliable suggestion, runs as without it: decided once it has run)
    conf, n_trials = as_grid(conf, space, [*enqueue, *([{}] if conf.lr_find else [])])
    n_workers = conf.n_workers

    from ftsweep.sweeper.finished import check_finished

    # Re-running a finished sweep: one line, none of the set-up below (composing, report, W&B).
    sweep_dir = sweep_dir_of(conf, cfg)
    check_finished(resolve_storage(conf.storage, sweep_dir), study_name, n_trials, sweep_dir, directions, space)
    validate_trial_config(fixed, space)
    check_trial_subdir(trial_subdir, sweep_dir, [merge_overrides(fixed, space.fixed, space.overrides(space.corner(c)))
                                                 for c in ("low", "high")])
    from ftsweep.stages.registry import stage_module

    command = default_command()
    check_backend(conf)
    why_cold = cold_only(conf, custom_command=command != DEFAULT_COMMAND) if conf.warm_workers else None
    stage = str(OmegaConf.select(trial_cfg, "stage.name", default="sft"))
    if conf.warm_workers and not why_cold and not stage_module(stage).WARM:
        why_cold = f"stage={stage} is not supported by warm workers (they keep what SFT trials share)"
    if why_cold:
        notes.append(f"[sweep] hydra.sweeper.warm_workers: trials run cold ({why_cold})")
        conf = replace(conf, warm_workers=False)
    gpus = detect_gpus(conf.gpus)
    # Trials that fit on the GPUs at once (gpus_per_trial per trial, trials_per_gpu per GPU); one-line errors.
    capacity = GpuPool(gpus, conf.gpus_per_trial, conf.trials_per_gpu).capacity if conf.backend == "local" else 0
    if conf.backend == "local":
        check_gpus_exist(conf.gpus, gpus)

    storage_url = resolve_storage(conf.storage, sweep_dir)
    if not OmegaConf.select(cfg, "overwrite", default=False):
        check_sweep_dir(sweep_dir, study_name)
    # The lock (shared by the processes of one study) lives in the sweep folder: if the storage cannot be
    # opened, the folders created for it are removed again, so bad input leaves nothing behind.
    created = next((d for d in reversed([sweep_dir, *sweep_dir.parents]) if not d.exists()), None)
    lock = SweepDir(sweep_dir).lock
    lock_is_new = not lock.exists()
    try:
        if conf.lr_find:  # after every check above: the range test writes into the sweep folder
            from ftsweep.sweeper.lr_find import seed_from_lr_find

            params, first, _ = seed_from_lr_find(fixed, params, sweep_dir, conf.lr_find_factor,
                                                 label=f"[sweep {study_name}]")
            space = parse_space(params, conf.variables, conf.derived, group_options=group_options)
            enqueue = [*first, *enqueue]
            conf, n_trials = as_grid(conf, space, enqueue)
        with flock(lock):
            study = open_study(storage_url=storage_url, study_name=study_name, directions=directions, space=space,
                               sampler=conf.sampler, pruner=pruner, metrics=metrics, fixed_overrides=fixed,
                               sweep_dir=sweep_dir, enqueue=enqueue)
    except SweepInputError:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif lock_is_new:  # an existing folder (e.g. a garbage study.db): only the lock file is ours
            lock.unlink(missing_ok=True)
        raise

    changed = changed_settings(study, fixed)
    if changed:
        notes.append(f"[sweep {study_name}] continuing a study started with other settings: {'; '.join(changed)}; "
                     "its earlier trials' values may not compare with the new ones (a new study: another "
                     "hydra.sweeper.study_name or hydra.sweep.dir)")
    for note in notes:
        print(note, file=sys.stderr)
    if capacity and n_workers > capacity:
        print(f"[sweep {study_name}] n_workers={n_workers} > {capacity} GPU place(s) ({len(gpus or [])} GPU(s), "
              f"gpus_per_trial={conf.gpus_per_trial}, trials_per_gpu={conf.trials_per_gpu}): running {capacity} at once",
              file=sys.stderr)
        n_workers = capacity
    timeout = conf.trial_timeout_s or float(OmegaConf.select(trial_cfg, "trainer.timeout_s") or 0)
    settings = RunSettings(
        conf=conf, sweep_dir=sweep_dir, storage_url=storage_url, study_name=study_name, n_trials=n_trials,
        directions=directions, metrics=metrics, pruner=pruner, n_workers=n_workers, gpus=gpus,
        trial_timeout_s=timeout, trial_subdir=trial_subdir, command=command)
    logger = OmegaConf.select(trial_cfg, "logger")
    return SweepPlan(study=study, space=space, fixed=fixed, settings=settings,
                     wandb_summary=bool(conf.wandb_summary and logger is not None and logger.name == "wandb"),
                     logger=OmegaConf.to_container(logger, resolve=True) if logger is not None else {})


def execute(plan: SweepPlan, on_end: Callable[[SweepPlan], Path | None] | None = None) -> int:
    """Run the planned study, call the report hook (report, W&B summary), print the best trial."""
    import optuna

    from ftsweep.errors import SweepAborted, sigterm_as_interrupt, write_trouble
    from ftsweep.sweeper.progress import Progress
    from ftsweep.sweeper.runner import SweepRunner
    from ftsweep.sweeper.storage import redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = plan.settings
    progress = Progress(s.study_name, s.n_trials, mode=s.conf.progress)
    progress.log(f"study {s.study_name} in {redact(s.storage_url)}; trials in {s.sweep_dir}")
    from ftsweep.sweeper import watch

    watch.label_study(plan.study, s.metrics)
    dashboard, line = (watch.start_dashboard(s.sweep_dir, s.storage_url, s.study_name, s.conf.dashboard_port)
                       if s.conf.dashboard else (None, watch.watch_line(s.sweep_dir, s.storage_url, s.study_name)))
    progress.log(line)
    aborted: SweepAborted | None = None
    try:
        with progress:
            try:
                with sigterm_as_interrupt():  # its running trials are recorded as interrupted, to re-run
                    SweepRunner(plan.study, plan.space, plan.fixed, s, progress).run()
            except SweepAborted as err:
                aborted = err
            except KeyboardInterrupt as exc:  # the runner recorded its running trials as interrupted, to re-run
                raise KeyboardInterrupt(f"{str(exc) or 'interrupted'}; run the same command again to resume the "
                                        "sweep (its interrupted trials run again)") from None
            except Exception as exc:
                why = write_trouble(exc)  # a full disk (or a folder gone read-only) under the study: one line
                if why is None:
                    raise
                raise SweepAborted(f"sweep stopped: a write failed ({why}) in study {redact(s.storage_url)}, trials in "
                                   f"{s.sweep_dir}; the trials recorded so far are kept: free space (or make it "
                                   "writable) and run the same command again to resume (the trials it cut off run "
                                   "again)") from exc
        try:
            with _sigterm_deferred() as terminated:  # the report is finished first: seconds, every file whole
                report_dir = on_end(plan) if on_end is not None else None  # the sweeper never imports the report
        except KeyboardInterrupt as exc:  # Ctrl-C
            raise KeyboardInterrupt(f"{str(exc) or 'interrupted'} while writing the sweep's report; its trials are "
                                    f"recorded in the study: write the report with: ftsweep report "
                                    f"{shlex.quote(str(s.sweep_dir))}") from None
    finally:
        watch.stop_dashboard(dashboard)
    print_best(plan.study, report_dir)
    if aborted is not None:
        raise aborted
    if terminated:
        raise KeyboardInterrupt("terminated (SIGTERM) while writing the sweep's report, which was finished first: "
                                "every trial had ended")
    _fail_without_a_result(plan.study, s.conf.max_failure_rate)
    return 0


@contextmanager
def _sigterm_deferred() -> Iterator[list[int]]:
    """While inside (main thread), SIGTERM (a cluster's time limit, ``kill``) is noted in the list yielded instead of
    ending the process: the sweep's last step (its report) finishes, then the caller says so. Without it the process
    died by the signal without a word and without a report; raised from a handler, the interrupt could land in a
    garbage collector's callback and be swallowed with a traceback ('Exception ignored in ...')."""
    import signal
    import threading

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail_without_a_result(study: Any, rate: float) -> None:
    """A sweep whose every finished trial failed (``max_failure_rate`` high enough to let it run to the end) ends
    with exit code 1, not 0: a script or a scheduler chaining on it must not take it for a result."""
    from ftsweep.errors import SweepAborted
    from ftsweep.sweeper.study import count

    c = count(study)
    if c.failed and c.complete == 0 and c.pruned == 0:
        last = next((t.user_attrs.get(attrs.REASON) for t in reversed(study.trials) if t.user_attrs.get(attrs.REASON)),
                    None)
        raise SweepAborted(f"no trial completed: all {c.failed} failed (max_failure_rate={rate:g} let the sweep run on)"
                           + (f"; last reason: {last}" if last else "") + "; each trial's failure.json says why")


def print_best(study: Any, report_dir: Path | None) -> None:
    """The end-of-sweep lines: best trial (value, params, trial dir) and where the report is."""
    from ftsweep.sweeper.study import TIED_HINT, best_trial, count, pareto_front, tied_value

    c = count(study)
    print(f"sweep {study.study_name}: {c.finished} trials ({c.complete} complete, {c.pruned} pruned, "
          f"{c.failed} failed)")
    if len(study.directions) > 1:
        names = [str(m) for m in study.user_attrs.get(attrs.METRICS) or []]
        if len(names) != len(study.directions):
            names = [f"value{i}" for i in range(len(study.directions))]
        for t in pareto_front(study):
            values = " ".join(f"{n}={v:.6g}" for n, v in zip(names, t.values))
            print(f"  pareto trial {t.number}: {values} params={t.params} dir={t.user_attrs.get(attrs.TRIAL_DIR)}")
    else:
        best = best_trial(study)
        if best is None:
            print("  no trial completed")
        else:
            print(f"best trial {best.number}: value={best.value:.6g}")
            print(f"  params: {best.params}")
            print(f"  trial dir: {best.user_attrs.get(attrs.TRIAL_DIR)}")
            tied = tied_value(study)
            if tied is not None:
                print(f"  warning: all {c.complete} complete trials scored {tied:.6g}: {TIED_HINT}")
    if report_dir is not None:
        best = SweepDir(report_dir).best  # (none when no trial completed)
        print(f"report: {SweepDir(report_dir).report}" + (f"  best config: {best}" if best.is_file() else ""))
