"""Compose the config with Hydra, list a group's options, and run a Hydra entry point.

The config search path, highest priority first: the user's config roots (``--config-dir``, ``./conf``;
put in front by the ``ftsweep_searchpath`` Hydra plugin, which Hydra discovers or the entry point registers), then the shipped root (``ftsweep.conf``, Hydra's
main config dir), then the schemas in Hydra's ConfigStore. Sweep definitions
(``sweep=<name>``) come from ``sweep/`` folders (the shipped ones and the user's project) and are
registered in the ConfigStore as group ``sweep``, package ``_global_``. Hydra / OmegaConf errors become
one line naming the key (:class:`ConfigFailure`). Imports Hydra and OmegaConf only (fast).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftsweep import paths
from ftsweep.config.keys import ITEM_FIELDS, allowed_keys, unknown_key
from ftsweep.config.schema import register_configs
from ftsweep.config.sweeper import register_sweeper_schema
from ftsweep.config.validate import validate
from ftsweep.errors import ConfigError, ConfigFailure, Failure, UsageError, first_line

CONFIG_NAME = "train"
BY_OBJECTIVE = "by_objective"  # sweep/by_objective/<sweep>_<objective>.yaml (see conf/train.yaml)
VERSION_BASE = "1.3"


# ------------------------------------------------------------------------------------ search path
@contextmanager
def user_config(config_dirs: list[str] | tuple[str, ...] = ()) -> Iterator[None]:
    """Make ``config_dirs`` (``--config-dir`` values) visible to the search-path plugin while composing."""
    saved = os.environ.get(paths.CONFIG_DIRS_ENV)
    dirs = paths.user_config_dirs(config_dirs)
    os.environ[paths.CONFIG_DIRS_ENV] = paths.encode_config_dirs(dirs)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(paths.CONFIG_DIRS_ENV, None)
        else:
            os.environ[paths.CONFIG_DIRS_ENV] = saved


_STORED_KEY: list[Any] = [None]  # the set of sweep files (path, mtime) the ConfigStore's group "sweep" holds now
_LOADED: dict[tuple[str, int], Any] = {}  # (sweep file, mtime) -> its parsed node, or the error text
_BROKEN_SWEEPS: dict[str, str] = {}  # sweep name -> why its file was skipped (an error only when it is used)
_WARNED: set[str] = set()


def register(config_dirs: list[str] | tuple[str, ...] = ()) -> None:
    """Register the schemas and every sweep definition (shipped first; the user's replace same names).

    Called by every compose. The store's group ``sweep`` holds exactly the sweep files of the current
    search path: a changed file, a new user folder, or another working directory (an in-process caller
    composing from elsewhere) stores the group anew, and sweeps of an earlier folder do not linger. Each
    file is parsed once per process and mtime."""
    from hydra.core.config_store import ConfigStore

    _mask_override_dirname()
    # (The user's roots come first through the search-path plugin, which registers itself:
    # hydra_plugins.ftsweep_sweeper.ftsweep_searchpath.register(), called by the entry points.)
    cs = ConfigStore.instance()
    if "train_schema.yaml" not in cs.repo:  # first call, or the store was reset
        _STORED_KEY[0] = None
        register_configs()
        register_sweeper_schema()
    if not OmegaConf.has_resolver("path_slug"):  # sweep=lr_after_baseline names its folder after the baseline
        OmegaConf.register_new_resolver("path_slug", paths.path_slug)
    sweep_dirs = [paths.shipped_sweep_dir(), *paths.user_sweep_dirs(paths.user_config_dirs(config_dirs))]
    # <folder>/*.yaml are the sweeps; <folder>/by_objective/<sweep>_<objective>.yaml specialise a sweep for an
    # objective (train.yaml loads it on top when both are chosen: Hydra's "specializing configuration" pattern).
    files = [(folder, file) for folder in sweep_dirs
             for file in [*sorted(folder.glob("*.yaml")), *sorted(folder.glob(f"{BY_OBJECTIVE}/*.yaml"))]]
    key = tuple((str(file), file.stat().st_mtime_ns) for _, file in files)
    if key == _STORED_KEY[0] and "sweep" in cs.repo:
        return
    cs.repo.pop("sweep", None)  # only sweep files live in this group (no schema)
    _BROKEN_SWEEPS.clear()
    # One broken sweep file must not break every command: it is skipped with a warning, and only a
    # command that uses it (sweep=<its name>) fails, naming the file.
    for (folder, file), file_key in zip(files, key, strict=True):
        if file_key not in _LOADED:
            try:
                _LOADED[file_key] = OmegaConf.load(file)
            except Exception as err:
                _LOADED[file_key] = f"{file}: not a valid YAML file: {first_line(err)}"
        node = _LOADED[file_key]
        sub = file.parent.relative_to(folder).as_posix()
        name = file.stem if sub == "." else f"{sub}/{file.stem}"
        if isinstance(node, str):
            _BROKEN_SWEEPS[name] = node
            continue
        _BROKEN_SWEEPS.pop(name, None)
        group = "sweep" if sub == "." else f"sweep/{sub}"
        cs.store(group=group, name=file.stem, node=node, package="_global_", provider=str(folder))
    _STORED_KEY[0] = key


def masked_overrides_dirname(overrides: list[Any], exclude_keys: list[str], item_sep: str, kv_sep: str) -> str:
    """Hydra's ``hydra.job.override_dirname`` (the overrides as one folder name, for ``hydra.run.dir`` /
    ``hydra.sweep.subdir`` patterns such as ``${hydra.job.override_dirname}``) with secrets masked as everywhere
    else (:func:`ftsweep.tracking.scrub`: a URL's password, the value of HF_TOKEN / WANDB_API_KEY / ... typed into a
    setting): a folder name is printed, listed and synced, and no later masking of files reaches it."""
    from hydra._internal import config_loader_impl

    from ftsweep.tracking import scrub

    original = getattr(config_loader_impl.get_overrides_dirname, "__wrapped__",
                       config_loader_impl.get_overrides_dirname)
    return scrub(original(overrides=overrides, exclude_keys=exclude_keys, item_sep=item_sep, kv_sep=kv_sep))


def _mask_override_dirname() -> None:
    """Make Hydra's config loader (every run, sweep trial and ``--cfg`` of this process) compute
    ``hydra.job.override_dirname`` with :func:`masked_overrides_dirname`."""
    from hydra._internal import config_loader_impl

    current = config_loader_impl.get_overrides_dirname
    if getattr(current, "__wrapped__", None) is None:
        masked_overrides_dirname.__wrapped__ = current  # type: ignore[attr-defined]
        config_loader_impl.get_overrides_dirname = masked_overrides_dirname


@contextmanager
def hydra_session(config_dirs: list[str] | tuple[str, ...] = ()) -> Iterator[Any]:
    """An initialised Hydra (compose API) over ftsweep's search path; yields its config loader."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register(config_dirs)
    GlobalHydra.instance().clear()
    try:
        with user_config(config_dirs), initialize_config_dir(str(paths.shipped_conf_dir()), version_base=VERSION_BASE):
            yield GlobalHydra.instance().config_loader()
    finally:
        GlobalHydra.instance().clear()


def group_options(group: str, config_dirs: list[str] | tuple[str, ...] = ()) -> list[str] | None:
    """Option names of config group ``group`` over the whole search path (None if no such group)."""
    from hydra.core.object_type import ObjectType

    group = group.lstrip("+~")
    with hydra_session(config_dirs) as loader:
        names = loader.get_group_options(group, results_filter=ObjectType.CONFIG)
        if not names:
            parent, _, leaf = group.rpartition("/")
            if leaf not in loader.get_group_options(parent, results_filter=ObjectType.GROUP):
                return None
    return sorted(n for n in names if not n.endswith("_schema"))


def list_groups(config_dirs: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The top-level config groups (model, lora, ..., sweep); Hydra's own ``hydra/`` group excluded."""
    from hydra.core.object_type import ObjectType

    with hydra_session(config_dirs) as loader:
        groups = loader.get_group_options("", results_filter=ObjectType.GROUP)
    return sorted(g for g in groups if g != "hydra")


def option_summary(group: str, option: str, config_dirs: list[str] | tuple[str, ...] = ()) -> str:
    """The first comment line of an option's YAML file (its one-line description), or ""."""
    for root in [*paths.user_config_dirs(config_dirs), paths.shipped_conf_dir()]:
        file = root / group / f"{option}.yaml"
        if file.is_file():
            break
    else:
        if group != "sweep":
            return ""
        dirs = [*paths.user_sweep_dirs(paths.user_config_dirs(config_dirs)), paths.shipped_sweep_dir()]
        file = next((d / f"{option}.yaml" for d in dirs if (d / f"{option}.yaml").is_file()), None)
        if file is None:
            return ""
    # (a file that is not UTF-8 is named when it is used; the listing goes on: it stopped --help with a traceback)
    return _description(file.read_text(encoding="utf-8-sig", errors="replace").splitlines())  # (a BOM: skipped)


def _description(lines: list[str]) -> str:
    """The file's description: its first comment sentence(s) after ``@package`` / ``Run:``, joined over the
    comment lines it spans (up to the line that ends a sentence, an empty comment line or the first YAML)."""
    parts: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            if parts or line.strip():
                break
            continue
        text = line[1:].strip()
        if not parts and ("@package" in text or text.startswith("Run:")):
            continue
        if not text:
            if parts:
                break
            continue
        parts.append(text)
        if text.endswith((".", ":")):
            break
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ errors

def check_sweeper_resolves(cfg: DictConfig) -> None:
    """Resolve ``hydra.sweeper`` (``cfg`` composed with ``hydra=True``) as Hydra will when it builds the sweeper: an
    interpolation that fails (``storage: postgresql://me:${oc.env:PGPW}@db/x`` with PGPW unset) is one line naming
    the key, not Hydra's traceback. ``${hydra:...}`` resolves only once Hydra runs: left to it."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    except InterpolationResolutionError as err:
        if "HydraConfig was not set" not in str(err):
            raise ConfigFailure(explain(err)) from err


def _undecodable_config(err: UnicodeDecodeError, config_dirs: list[str] | tuple[str, ...]) -> str:
    """A config or sweep file that is not UTF-8 (saved as latin-1 or cp949 by an editor): Hydra's error is the
    codec's alone ("'utf-8' codec can't decode byte 0xe9 in position 104"), naming no file. Name the user's file
    whose bytes those are, and the line."""
    bad = err.object[err.start:err.start + 1].hex() if isinstance(err.object, bytes | bytearray) else ""
    roots = paths.user_config_dirs(config_dirs)
    for root in [*roots, *paths.user_sweep_dirs(roots)]:
        for file in sorted(p for p in Path(root).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
            try:
                data = file.read_bytes()
            except OSError:
                continue
            at = data.find(err.object) if isinstance(err.object, bytes | bytearray) and err.object else -1
            if at >= 0:
                line = data[:at + err.start].count(b"\n") + 1
                return (f"{file}: not valid {err.encoding} text at line {line} (byte 0x{bad}): config and sweep files "
                        "are read as UTF-8; save it as UTF-8")
    return (f"a config or sweep file is not valid {err.encoding} text (byte 0x{bad}, {err.reason}): save the files of "
            "your conf/ and sweep/ folders as UTF-8")


def explain(err: BaseException, config_dirs: list[str] | tuple[str, ...] = (), prefix: str = "") -> str:
    """One line for a Hydra / OmegaConf composition error; ``prefix``: where the failing config sits
    (``hydra.sweeper.`` for the sweeper's own merge)."""
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    if isinstance(err, UsageError):
        return str(err)
    if isinstance(err, UnicodeDecodeError):
        return _undecodable_config(err, config_dirs)
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    text = str(err).strip()
    if isinstance(cause, OmegaConfBaseException):
        key = prefix + (getattr(cause, "full_key", None) or "")
        msg = str(getattr(cause, "msg", "") or cause).splitlines()[0]
        if isinstance(cause, MissingMandatoryValue):
            return f"{key}: a value is required (set {key}=...)"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
            return _not_a_group(key, config_dirs) or f"{key}: {unknown_key(key)}"
        if isinstance(cause, ValidationError) and "is not a ListConfig, list or tuple" in msg:
            # OmegaConf's words ("AnyNode is not a ListConfig") for a single value where a list belongs
            return f"{key}: must be a list, e.g. [a, b] (got {getattr(cause, 'value', None)!r})"
        if isinstance(cause, ValidationError):
            return f"{key}: {msg}"
        return f"{key}: {msg}" if key else msg
    from ftsweep.config.source import defaults_entry, defaults_list_error

    in_file = defaults_list_error(text, config_dirs)  # the defaults list of one of the user's files
    if in_file:
        return in_file
    # Hydra's own messages, e.g. "In 'train': Could not find 'lora/r99'"
    m = re.search(r"Could not find '([^']+)'", text)
    listed = re.search(r"Available options in '([\w/]+)'", text)
    if m and (listed or "/" in m.group(1)):
        # the group from Hydra's list: an option may hold "/" (model=meta-llama/Llama-3.2-1B, a Hub name)
        group = listed.group(1) if listed and m.group(1).startswith(listed.group(1) + "/") else m.group(1).rsplit("/", 1)[0]
        option = m.group(1)[len(group) + 1:]
        options = group_options(group, config_dirs) or []
        if group == "model" and "/" in option:
            hint = f"; for a Hub model or a local folder: model=hub model.name_or_path={option}"
        else:
            hint = "".join(f"; did you mean {group}={c}?" for c in difflib.get_close_matches(option, options, 1, 0.75))
        # (an 'override /lora: r99' in an experiment or sweep file is reported as the primary config's)
        at = defaults_entry(group, option, config_dirs) if text.startswith("In 'train'") else ""
        return f"{group}={option}: no such option; available: {', '.join(options) or 'none'}{hint}{at}"
    m = re.search(r"Could not override '([\w.]+)'", text)
    if m:
        name = m.group(1)
        return _not_a_group(name, config_dirs) or (
            f"{name}: a group no option of which is chosen by default: add one with +{name}=<option> (options: "
            f"{', '.join(group_options(name, config_dirs) or [])})" if (paths.shipped_conf_dir() / name).is_dir()
            else f"{name}: {unknown_key(name)}")
    return " ".join(text.split())


def _not_a_group(name: str, config_dirs: list[str] | tuple[str, ...]) -> str | None:
    """``peft=x`` where the user made a folder ``conf/peft/`` of their own: Hydra sees a group, ftsweep's schema has no
    such key, and either spelling failed ("use +peft=...", then "peft: unknown key"). Say what the folders are."""
    if "." in name or (paths.shipped_conf_dir() / name).is_dir():
        return None
    folder = next((Path(root) / name for root in paths.user_config_dirs(config_dirs) if (Path(root) / name).is_dir()),
                  None)
    if folder is None:
        return None
    groups = ", ".join(g for g in list_groups(config_dirs) if (paths.shipped_conf_dir() / g).is_dir())
    return (f"{name}: {folder}/ is not a config group of ftsweep's (groups: {groups}): an option file goes in one "
            f"of those folders (e.g. conf/lora/<name>.yaml), settings of several groups in conf/experiment/<name>.yaml "
            "(+experiment=<name>)")


# ----------------------------------------------------------------------------------------- compose
def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a multirun that are not sweeps (no ``a=1,2``, ``interval(...)``, ``choice(...)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keep = []
    for o in overrides:
        try:
            parsed = parser.parse_overrides([o])[0]
        except Exception as err:
            raise ConfigFailure(override_error(o, err)) from err
        if not parsed.is_sweep_override():
            inner = _sweeps_inside(parsed.value())
            if inner:  # (OmegaConf then failed on the sweep object: "tags: Unexpected type annotation: Set[str]")
                raise ConfigFailure(_sweep_inside_message(parsed.key_or_group, o.partition("=")[2], inner))
            keep.append(o)
        elif parsed.key_or_group.startswith("hydra.") or parsed.key_or_group == "hydra":
            # Hydra's answer is two lines ("Sweeping over Hydra's configuration is not supported")
            key, value = parsed.key_or_group, o.partition("=")[2]
            target = key.removeprefix("hydra.sweeper.params.")
            if target != key:  # a search space (what a sweep file writes under hydra.sweeper.params)
                raise ConfigFailure(f"{key}: on the command line a search space is given as the key itself: "
                                    f"\"{target}={value}\" (hydra.sweeper.params is where a sweep file writes it)")
            raise ConfigFailure(f"{key}: Hydra's own settings cannot be swept; sweep a training setting "
                                "(key=choice(...)) instead")
    return keep


def _sweeps_inside(value: Any, path: str = "") -> list[str]:
    """The places (dict keys, list indices) of sweeps (``choice(...)``, ``interval(...)``) inside a dict or list value."""
    from hydra.core.override_parser.types import Sweep

    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    found = []
    for k, v in items:
        where = f"{path}.{k}" if path and isinstance(k, str) else f"{path}[{k}]" if not isinstance(k, str) else k
        found += [where] if isinstance(v, Sweep) else _sweeps_inside(v, where)
    return found


def _sweep_inside_message(key: str, value: str, inner: list[str]) -> str:
    if key == "hydra.sweeper.params":
        return (f"{key}: on the command line a search space is given as the key itself, one override each: "
                f"{' '.join(f'{k}=<sweep>' for k in inner)} (or quote each sweep inside the dict, as a sweep file "
                "writes it: {" + inner[0] + ": 'interval(...)'})")
    group = key.split(".")[0]
    return (f"{key}: {value!r} holds a sweep inside a list or dict value; Hydra sweeps whole values only: "
            f"{key}=choice(...) of whole values, or for lists an option file per list and "
            f"{group}=choice(<name>,<other>)")


def _as_overrides(path: str) -> str:
    """``; its settings as overrides: a=1 b=2 (no key here for: x, y)`` for a flat YAML / JSON config file of another
    tool (LLaMA-Factory's ``llama3_lora_sft.yaml``); "" when the file cannot be read as one."""
    import yaml

    from ftsweep.config.keys import override_for, shell_quoted

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    if not isinstance(doc, dict) or not doc:
        return ""
    pairs = [(str(k), override_for(str(k), v)) for k, v in doc.items() if not isinstance(v, dict)]
    mapped = [shell_quoted(o) for _, o in pairs if o]  # to paste into a shell as they are
    other = [k for k, o in pairs if not o]
    if not mapped:
        return ""
    return (f"; its settings as overrides: {' '.join(mapped)}"
            + (f" (no key here for: {', '.join(other)})" if other else ""))


def override_error(override: str, err: BaseException) -> str:
    """One line naming the key of an override Hydra cannot parse (its own message spans three lines and
    may not name the key: ``no viable alternative at input '{x}'``)."""
    key, sep, value = override.partition("=")
    lines = [ln.strip() for ln in str(err).strip().splitlines()]
    reason = next((ln for ln in lines if ln and not ln.startswith(("Error parsing override", "See https://"))),
                  lines[0] if lines else type(err).__name__)
    reason = re.sub(r"^\w+ while evaluating '.*?': ", "", reason)
    if not sep and override.lower().endswith((".yaml", ".yml", ".json")):
        # llamafactory-cli train x.yaml / accelerate launch x.py --config x.yaml habits
        return (f"{override}: a config file is not an override: ftsweep composes its train.yaml from key=value "
                "overrides; keep settings in conf/experiment/<name>.yaml (first line '# @package _global_', "
                "ftsweep's keys) and run ftsweep train +experiment=<name>" + _as_overrides(override))
    if not sep:
        return f"{override}: not an override (key=value, +key=value or ~key); {reason}"
    hint = " (quote a value with spaces, braces or '=': \"key='...'\" in a shell)" if re.search(r"[\s{}=]", value) else ""
    if not value.isascii():
        hint = f" (Hydra reads unquoted values as ASCII only: quote it, \"{key}='{value}'\")"
    elif not hint and "'" not in value and ("LexerNoViableAlt" in reason or "no viable alternative" in reason):
        hint = f" (a character Hydra does not read unquoted: quote it, \"{key}='{value}'\")"  # ~/data.jsonl
    return f"{key.lstrip('+~')}: cannot parse {value!r}: {reason}{hint}"


def compose(overrides: list[str], *, check: bool = True, config_dirs: list[str] | tuple[str, ...] = (),
            hydra: bool = False) -> DictConfig:
    """Compose ``train.yaml`` with ``overrides`` and validate it; raise :class:`ConfigFailure`.

    ``config_dirs`` are extra config roots, like ``ftsweep train --config-dir DIR``; ``hydra=True``
    keeps the ``hydra`` node (e.g. to read ``hydra.mode`` or ``hydra.sweep.dir``).
    """
    from hydra import compose as hydra_compose

    _check_optional_groups(overrides, config_dirs)
    try:
        with hydra_session(config_dirs):
            cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=hydra)
        if check:
            _check_task(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if hydra else cfg)
    except Exception as err:
        raise _failure(overrides, err, config_dirs) from err
    return cfg


def task_config(with_hydra: DictConfig, overrides: list[str], *,
                config_dirs: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """What ``compose(overrides)`` returns, from ``with_hydra = compose(overrides, hydra=True, check=False)``
    without composing again (a Hydra compose is ~0.15 s): a copy without the ``hydra`` node, as Hydra's own
    compose removes it, validated the same way; ``with_hydra`` is left as it was."""
    import copy

    from omegaconf import open_dict

    try:
        cfg = copy.deepcopy(with_hydra)
        with open_dict(cfg):
            del cfg["hydra"]
        _check_task(cfg)
    except Exception as err:
        raise _failure(overrides, err, config_dirs) from err
    return cfg


def _failure(overrides: list[str], err: BaseException, config_dirs: list[str] | tuple[str, ...]) -> ConfigFailure:
    """The one-line error of a compose (or of the checks after it) that failed with ``err``."""
    message = _unparsable(overrides) or _unknown_in_value(overrides, err) or explain(err, config_dirs)
    return ConfigFailure(message + _written_in(overrides, err, config_dirs))


def _written_in(overrides: list[str], err: BaseException, config_dirs: list[str] | tuple[str, ...]) -> str:
    """`` (conf/lora/my_lora.yaml line 4)`` when the failing key was written in one of the user's own option,
    experiment or sweep files (not on the command line), else ""."""
    from omegaconf.errors import OmegaConfBaseException

    key = getattr(err, "key", None) if isinstance(err, ConfigError) else None
    cause: BaseException | None = err
    while key is None and cause is not None:
        if isinstance(cause, OmegaConfBaseException):
            key = getattr(cause, "full_key", None)
            break
        cause = cause.__cause__ or cause.__context__
    if not key or not isinstance(key, str):
        return ""
    return written_in(key, overrides, config_dirs)


def written_in(key: str, overrides: list[str], config_dirs: list[str] | tuple[str, ...] = ()) -> str:
    """`` (conf/data/my_data.yaml line 3)`` when ``key`` is written in one of the user's files that these
    overrides compose (not on the command line), else "" (:func:`ftsweep.config.source.where`)."""
    from ftsweep.config.source import where

    return where(key, overrides, _defaults_list(overrides, config_dirs), config_dirs)


def _defaults_list(overrides: list[str], config_dirs: list[str] | tuple[str, ...]) -> list[Any]:
    """Hydra's defaults list for these overrides (which option files a compose reads, in merge order); [] when
    it cannot be built."""
    from hydra.types import RunMode

    try:
        with hydra_session(config_dirs) as loader:
            return list(loader.compute_defaults_list(CONFIG_NAME, list(overrides), RunMode.RUN).defaults)
    except Exception:  # noqa: BLE001 -- (an error path: then no file is named)
        return []


def _check_task(task: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(task))
    if missing:
        raise ConfigError(missing[0], f"a value is required (set {missing[0]}=...)")
    validate(task)


def _unknown_in_value(overrides: list[str], err: BaseException) -> str | None:
    """An unknown key inside an override's value (an entry of a list of settings: ``stage.rewards=[{name: regex,
    patern: x}]``): OmegaConf names it without its path, so name the override it is in, and the keys an entry
    takes (the fields of the list's item schema) when known."""
    from omegaconf.errors import ConfigKeyError

    cause = err if isinstance(err, ConfigKeyError) else err.__cause__ or err.__context__
    name = getattr(cause, "full_key", None) if isinstance(cause, ConfigKeyError) else None
    if not name or "." in name or name in allowed_keys(""):
        return None
    for o in overrides:
        key, _, value = o.partition("=")
        if re.search(rf"(^|[{{,\s]){re.escape(name)}\s*:", value):
            fields = ITEM_FIELDS.get(key.lstrip("+~"), ())
            close = difflib.get_close_matches(name, fields, n=1, cutoff=0.7)
            hint = (f"; an entry takes: {', '.join(fields)}" if fields else "") + (
                f"; did you mean {close[0]}?" if close else "")
            return f"{key.lstrip('+~')}: unknown key {name!r} in {value}{hint}"
    return None


def _unparsable(overrides: list[str]) -> str | None:
    """The one line for the first override Hydra cannot parse (named by its key), or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except Exception as err:  # noqa: BLE001 -- Hydra's parse errors have no common base we can rely on
            return override_error(o, err)
    return None


def _check_optional_groups(overrides: list[str], config_dirs: list[str] | tuple[str, ...]) -> None:
    """``sweep`` is an optional group: Hydra silently ignores an unknown option of it (and would train once).
    A broken sweep file is an error when used, else a warning (once per process) that it was skipped."""
    register(config_dirs)
    used = {o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == "sweep"}
    for name, why in _BROKEN_SWEEPS.items():
        if name not in used and why not in _WARNED:
            _WARNED.add(why)
            print(f"ftsweep: warning: {why} (sweep={name} skipped)", file=sys.stderr)
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and key.lstrip("+~") == "sweep" and value not in ("", "null"):
            options = group_options("sweep", config_dirs) or []
            if value in _BROKEN_SWEEPS:  # (a broken user file of a shipped name would silently be the shipped one)
                raise ConfigFailure(_BROKEN_SWEEPS[value])
            if value not in options:
                raise ConfigFailure(f"sweep={value}: no such option; available: {', '.join(options) or 'none'}")
        elif sep and value.endswith("_schema") and "=" not in value:  # a schema in Hydra's store, not an option
            options = group_options(key, config_dirs)
            if options is not None and value not in options:
                raise ConfigFailure(f"{key.lstrip('+~')}={value}: no such option; available: "
                                    f"{', '.join(options) or 'none'}")


def export_config_dirs(config_dirs: list[str] | tuple[str, ...]) -> None:
    """Hand this process's user config roots down to child processes (sweep trials)."""
    dirs = paths.user_config_dirs(config_dirs)
    if dirs:
        os.environ[paths.CONFIG_DIRS_ENV] = paths.encode_config_dirs(dirs)


class _TaskError(BaseException):
    """Carries an error of the task through Hydra's job wrapper (which handles only ``Exception``)."""

    def __init__(self, err: Exception):
        super().__init__(str(err))
        self.err = err


def run_hydra(argv: list[str], task: Callable[[DictConfig], Any], config_dirs: list[str] | tuple[str, ...] = (),
              prog: str = "ftsweep train") -> None:
    """Run ``task`` as a Hydra application (run or multirun) with ``argv`` as its command line."""
    import hydra

    register(config_dirs)

    export_config_dirs(config_dirs)  # for the search-path plugin here and in child processes (sweep trials)

    @hydra.main(config_path=str(paths.shipped_conf_dir()), config_name=CONFIG_NAME, version_base=VERSION_BASE)
    def _main(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception as err:
            # Hydra's job wrapper prints "Error executing job with overrides: [...]" before re-raising an
            # Exception; the error's own one line is what the user needs, so it passes the wrapper unprinted.
            raise _TaskError(err) from err

    _mask_launcher_log()
    saved = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [prog, *argv]
    # Hydra would print an error raised by the task or the sweeper its own way and exit 1; with this it
    # reaches the caller, whose entry point prints it (ftsweep.errors.report) and picks the exit code.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _main()
    except _TaskError as wrapped:
        raise wrapped.err  # noqa: B904 (its own __cause__ is kept)
    except Exception as err:
        from hydra.errors import CompactHydraException

        if isinstance(err, CompactHydraException):  # Hydra's own one-line errors stay one line (exit 1)
            raise Failure(str(err)) from err
        raise
    finally:
        sys.argv = saved[0]
        if saved[1] is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved[1]


class _MaskSecrets:
    """A logging filter: the record's message with URL passwords and secret environment values masked."""

    def filter(self, record: Any) -> bool:
        from ftsweep.tracking import scrub

        record.msg, record.args = scrub(record.getMessage()), ()
        return True


def _mask_launcher_log() -> None:
    """Hydra's basic launcher (``hydra/sweeper=basic``) logs each job's overrides (``#0 : notes=...``) to the
    console and the sweep's log: masked like every other message."""
    import logging

    logger = logging.getLogger("hydra._internal.core_plugins.basic_launcher")
    if not any(isinstance(f, _MaskSecrets) for f in logger.filters):
        logger.addFilter(_MaskSecrets())


def run_as_multirun_job(overrides: list[str], job_num: int, task: Callable[[DictConfig], Any],
                        config_dirs: list[str] | tuple[str, ...] = (), memo: Any = None) -> Any:
    """Run ``task`` as job ``job_num`` of a Hydra multirun, the way Hydra's own launchers do: the job dir
    is ``hydra.sweep.dir/hydra.sweep.subdir``, and ``.hydra/`` records ``mode: MULTIRUN`` and the job
    number. Used by sweep trials, which the sweeper starts as processes of their own. ``memo``: a warm
    worker's :class:`ftsweep.config.memo.ComposeMemo` (the config built from an earlier trial's when only
    sampled values differ)."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import run_job
    from hydra.types import HydraContext, RunMode

    def load(loader: Any, given: list[str]) -> DictConfig:
        return loader.load_configuration(config_name=CONFIG_NAME, overrides=list(given), run_mode=RunMode.MULTIRUN)

    with hydra_session(config_dirs) as loader:
        try:
            cfg = memo.load(loader, overrides, load) if memo is not None else load(loader, overrides)
        except Exception as err:
            raise ConfigFailure(explain(err, config_dirs)) from err
        with open_hydra(cfg):
            cfg.hydra.job.num = job_num
            cfg.hydra.job.id = str(job_num)
            cfg.hydra.mode = RunMode.MULTIRUN
        ret = run_job(task_function=task, config=cfg, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
                      hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks(cfg)))
    return ret.return_value


@contextmanager
def open_hydra(cfg: DictConfig) -> Iterator[None]:
    from omegaconf import open_dict, read_write

    with read_write(cfg.hydra), open_dict(cfg.hydra):
        yield
