"""objective=lm_eval: the checks before any model loads, and the task index they share with the run.

lm-evaluation-harness (``lm_eval``, the optional extra ``ftsweep[eval]``) is imported only from here and from
:mod:`ftsweep.objectives.harness`, and only when the objective is ``lm_eval``.

Its ``TaskManager`` indexes every task YAML it ships (~14,700 names; ~5 s on a 2-core machine, measured with
lm_eval 0.4.13). The index is built once per process (:func:`task_manager`, cached), and only when needed:
when every requested task (and every member of a requested group or tag) is found in
``objective.include_path``, a manager over that folder alone is used (milliseconds), for the checks and for
the run.
"""

from __future__ import annotations

import difflib
import functools
import glob
import os
from pathlib import Path
from typing import Any

from ftsweep.config.errors import ConfigError

INSTALL = "pip install ftsweep[eval]"
# datasets' packaged builders that read the files named in data_files / data_dir (no Hub access).
LOCAL_LOADERS = ("json", "csv", "parquet", "text", "arrow", "pandas", "xml", "sql", "webdataset",
                 "imagefolder", "audiofolder", "videofolder")
_TRUE = ("1", "true", "yes", "on")


def lm_eval_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("lm_eval") is not None
    except (ImportError, ValueError):
        return False


def include_folder(include_path: str | None) -> str | None:
    """``objective.include_path`` as an absolute folder (relative paths are from where ftsweep was run)."""
    if not include_path:
        return None
    from ftsweep.paths import from_launch_dir

    path = from_launch_dir(include_path).resolve()
    if not path.is_dir():
        what = "is a file, not a folder of task YAMLs" if path.exists() else "does not exist"
        raise ConfigError("objective.include_path", f"{include_path} {what}")
    return str(path)


@functools.lru_cache(maxsize=8)
def task_manager(include_path: str | None, defaults: bool) -> Any:
    """lm_eval's TaskManager over ``include_path`` (and lm_eval's own tasks when ``defaults``), cached."""
    import logging

    from lm_eval.tasks import TaskManager

    # the index logs every duplicate / skipped YAML at WARNING; a run's output is not the place
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return TaskManager(include_path=include_path, include_defaults=defaults)


def _members(index: dict[str, Any], name: str, depth: int = 0) -> list[tuple[str, dict[str, Any] | None]]:
    """The leaf tasks of a task, group or tag name: [(task name, its config)]; a name missing from
    ``index`` comes back with config None."""
    from lm_eval.tasks._index import Kind

    entry = index.get(name)
    if entry is None or depth > 8:
        return [(name, None)]
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [(name, entry.cfg or {})]
    out: list[tuple[str, dict[str, Any] | None]] = []
    if entry.kind == Kind.TAG:
        for member in sorted(entry.tags):
            out += _members(index, member, depth + 1)
        return out
    for member in (entry.cfg or {}).get("task", []):
        if isinstance(member, str):
            out += _members(index, member, depth + 1)
        elif isinstance(member, dict) and isinstance(member.get("task"), str):
            base = dict(index[member["task"]].cfg or {}) if member["task"] in index else {}
            out.append((member["task"], {**base, **member}))
    return out


def needs_defaults(tasks: list[str], include_path: str | None) -> bool:
    """Whether some task (or a member of a group / tag) is not in ``include_path`` alone."""
    if not include_path:
        return True
    index = task_manager(include_path, False).task_index
    return any(cfg is None for name in tasks for _, cfg in _members(index, name))


def resolve(obj: Any) -> Any:
    """The TaskManager the run uses for ``objective.tasks`` (cached)."""
    folder = include_folder(obj.include_path)
    return task_manager(folder, needs_defaults(list(obj.tasks), folder))


def _offline() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def _in_hf_cache(dataset: str) -> bool:
    """A Hub dataset already in the local Hugging Face caches (then offline mode can still load it)."""
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    hub = Path(os.environ.get("HF_HUB_CACHE") or home / "hub")
    data = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets")
    return (hub / f"datasets--{dataset.replace('/', '--')}").is_dir() or (data / dataset.replace("/", "___")).is_dir()


def check_dataset(task: str, cfg: dict[str, Any]) -> None:
    """A task's data must be local (a packaged loader over local files, a local folder) or reachable."""
    path = cfg.get("dataset_path")
    if not path or not isinstance(path, str) or cfg.get("custom_dataset"):
        return  # a Python task / custom loader: nothing to tell from the config
    kwargs = cfg.get("dataset_kwargs") or {}
    if path in LOCAL_LOADERS:
        files = kwargs.get("data_files") or kwargs.get("data_dir")
        if not files:
            raise ConfigError("objective.tasks", f"task {task}: dataset_path {path} needs dataset_kwargs.data_files "
                              "(local files)")
        names = [files] if isinstance(files, str) else (
            [f for v in files.values() for f in ([v] if isinstance(v, str) else v)] if isinstance(files, dict)
            else list(files))
        for name in names:
            if "://" in str(name):
                break  # a URL: the Hub / the network, checked below
            if not glob.glob(os.path.expanduser(str(name))):  # a pattern (datasets allows them) or a path
                raise ConfigError("objective.tasks", f"task {task}: data file {name} not found (relative paths are "
                                  f"read from the working directory, {os.getcwd()})")
        else:
            return
    elif Path(path).expanduser().is_dir():
        return
    var = _offline()
    if var and not _in_hf_cache(path):
        raise ConfigError("objective.tasks", f"task {task} loads dataset {path} from the Hugging Face Hub, but {var} is "
                          "set (no Hub access) and it is not in the local cache; use a task over local files "
                          "(dataset_path: json + dataset_kwargs.data_files, in objective.include_path) or unset HF_HUB_OFFLINE")


def metric_names(cfg: dict[str, Any] | None) -> list[str]:
    """The metric names a task config declares (metric_list, or a group's aggregate_metric_list)."""
    if not cfg:
        return []
    listed = cfg.get("metric_list") or cfg.get("aggregate_metric_list") or []
    return [m["metric"] for m in listed if isinstance(m, dict) and isinstance(m.get("metric"), str)]


def declared_direction(cfg: dict[str, Any] | None, metric: str | None) -> tuple[str, str] | None:
    """(metric, "maximize" / "minimize") as lm_eval has it for a task config's ``metric`` (None: the first in its
    metric_list): the metric_list's ``higher_is_better``, else lm_eval's registry default (brier_score, the
    perplexities, ter: lower); None when neither says."""
    listed = [m for m in (cfg or {}).get("metric_list") or [] if isinstance(m, dict) and isinstance(m.get("metric"), str)]
    name = metric or (listed[0]["metric"] if listed else None)
    if not name:
        return None
    higher = next((m.get("higher_is_better") for m in listed if m["metric"] == name), None)
    if not isinstance(higher, bool):
        from lm_eval.api.registry import is_higher_better

        higher = is_higher_better(name)
    return (name, "maximize" if higher else "minimize") if isinstance(higher, bool) else None


def check_lm_eval(obj: Any) -> None:
    """One-line ConfigError, before any model loads, for an lm_eval objective that cannot run."""
    if not lm_eval_installed():
        raise ConfigError("objective.metric", f"lm_eval needs lm-evaluation-harness (the lm_eval package), which is "
                          f"not installed: {INSTALL}")
    tasks = list(obj.tasks or [])
    if not tasks:
        raise ConfigError("objective.tasks", "objective=lm_eval needs at least one lm-evaluation-harness task, e.g. "
                          "objective.tasks=[arc_easy] (or your own: objective.include_path=my_tasks/)")
    if obj.limit is not None and not obj.limit > 0:
        raise ConfigError("objective.limit", f"must be > 0 (a count, or a fraction below 1) or null (got {obj.limit})")
    if obj.num_fewshot is not None and obj.num_fewshot < 0:
        raise ConfigError("objective.num_fewshot", f"must be >= 0 or null (got {obj.num_fewshot})")
    if obj.batch_size is not None and obj.batch_size < 1:
        raise ConfigError("objective.batch_size", f"must be >= 1 or null (got {obj.batch_size})")
    manager = resolve(obj)
    index = manager.task_index
    for name in tasks:
        if name not in index:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            where = f" or in {obj.include_path}" if obj.include_path else " (your own: objective.include_path=<folder>)"
            raise ConfigError("objective.tasks", f"unknown lm-evaluation-harness task {name!r} in lm_eval's tasks{where}{hint}")
    for name in tasks:
        for leaf, cfg in _members(index, name):
            if cfg is None:
                raise ConfigError("objective.tasks", f"{name}: its member task {leaf!r} is not defined")
            check_dataset(leaf, cfg)
    if obj.task_metric:
        first = index[tasks[0]]
        declared = metric_names(first.cfg)
        if declared and obj.task_metric.split(",")[0] not in declared:
            raise ConfigError("objective.task_metric", f"task {tasks[0]} reports {', '.join(declared)}, not "
                              f"{obj.task_metric!r}")
    # the objective's direction comes from the metric's name (ftsweep.config.objective.lm_eval_direction); a task
    # that declares its metric better the other way (higher_is_better: false on a metric of its own) would be
    # searched for its worst trial
    metric = str(obj.task_metric).split(",")[0] if obj.task_metric else None
    for leaf, cfg in _members(index, tasks[0]):
        said = declared_direction(cfg, metric)
        if said and said[1] != str(obj.direction):
            raise ConfigError("objective.direction", f"{obj.direction} for {said[0]} of task {leaf}, which lm_eval "
                              f"scores better {'higher' if said[1] == 'maximize' else 'lower'} (higher_is_better: "
                              f"{str(said[1] == 'maximize').lower()}): set objective.direction={said[1]}")
