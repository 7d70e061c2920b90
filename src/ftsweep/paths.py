"""Where ftsweep's own files are (shipped config, sweeps, demo data) and where a user's are.

The shipped config, sweeps and demo data are packages (``ftsweep.conf``, ``ftsweep.sweeps``,
``ftsweep.demo_data``): in the repository they are the top-level ``conf/``, ``sweep/`` and ``data/``
folders, mapped into the package at build time (pyproject.toml), so a wheel and an editable install
find them the same way. A user's project adds ``conf/`` (more options for any group, or replacements of
shipped ones) and ``sweep/`` (sweep definitions) in the working directory, or ``--config-dir DIR``.
Nothing heavy is imported here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Set by ``ftsweep train`` for its child processes (sweep trials), so they see the same user config.
CONFIG_DIRS_ENV = "FTSWEEP_CONFIG_DIRS"
PKG_SCHEME = "pkg://"
# Compressed data files are read through (``rows.jsonl.gz``), as ``datasets`` reads them.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
# Extensions that say "a local data file", never a Hub dataset name (Hub names are "owner/name").
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".tsv", ".arrow", *COMPRESSED_SUFFIXES, ".zip", ".zst",
                      ".xlsx", ".xls", ".xlsm", ".ods", ".numbers")  # (workbooks: refused, but a path)


def package_dir(name: str) -> Path:
    """The folder of package ``name`` (``ftsweep.conf`` -> .../ftsweep/conf in a wheel, conf/ in the repo)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} is not installed with ftsweep (reinstall ftsweep)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def shipped_conf_dir() -> Path:
    """The shipped Hydra config root (train.yaml and one folder per group)."""
    return package_dir("ftsweep.conf")


def shipped_sweep_dir() -> Path:
    """The shipped sweep definitions (``sweep=<name>``)."""
    return package_dir("ftsweep.sweeps")


def bundled_data_dir() -> Path:
    """The demo data that ships with ftsweep (named in config as ``pkg://ftsweep.demo_data/<file>``)."""
    return package_dir("ftsweep.demo_data")


def encode_config_dirs(dirs: list[Path] | list[str]) -> str:
    """``$FTSWEEP_CONFIG_DIRS`` for child processes: a JSON list, so a folder with ``:`` in its name stays one
    folder (joined with ``os.pathsep`` it was split in two, and ``--config-dir 'a:b/conf'`` was ignored)."""
    import json

    return json.dumps([str(d) for d in dirs], ensure_ascii=False)


def decode_config_dirs(text: str) -> list[str]:
    """The folders in ``$FTSWEEP_CONFIG_DIRS``: a JSON list (what :func:`encode_config_dirs` writes), or folders
    joined with ``os.pathsep`` (a value set by hand)."""
    if text.startswith("["):
        import json

        try:
            dirs = json.loads(text)
        except ValueError:
            dirs = None
        if isinstance(dirs, list):
            return [str(d) for d in dirs if d]
    return [d for d in text.split(os.pathsep) if d]


def user_config_dirs(explicit: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """The user's config roots, highest priority first: ``--config-dir`` values, then those inherited
    from the parent ``ftsweep train`` (``$FTSWEEP_CONFIG_DIRS``), then ``./conf`` when it exists.

    The shipped root is never among them (inside the repository ``./conf`` *is* the shipped root).
    """
    for d in explicit:  # Hydra would ignore a missing one in every command but a run (exit 1 there)
        if not Path(d).expanduser().is_dir():
            from ftsweep.errors import UsageError

            what = "not a folder" if Path(d).expanduser().exists() else "no such folder"
            raise UsageError(f"--config-dir: {what} {d!r} (a config root: a folder of group folders, "
                             "e.g. my_project/conf)")
    candidates = [Path(d).expanduser() for d in explicit]
    candidates += [Path(d) for d in decode_config_dirs(os.environ.get(CONFIG_DIRS_ENV, ""))]
    if Path("conf").is_dir():
        candidates.append(Path("conf"))
    shipped = shipped_conf_dir()
    out: list[Path] = []
    for c in candidates:
        c = c.resolve()
        if c != shipped and c not in out:
            out.append(c)
    return out


def user_sweep_dirs(config_dirs: list[Path]) -> list[Path]:
    """Sweep folders of the user's project: ``sweep/`` beside each config root, and ``./sweep``."""
    shipped = shipped_sweep_dir()
    out: list[Path] = []
    for c in [d.parent / "sweep" for d in config_dirs] + [Path("sweep")]:
        c = c.resolve()
        if c.is_dir() and c != shipped and c not in out:
            out.append(c)
    return out


def path_slug(path: str | None) -> str:
    """A folder-name-safe slug of a path's last two parts (outputs/runs/2026-11-23/10-00-00 -> 2026-11-23_10-00-00)."""
    import re

    if not path:
        return "none"
    parts = Path(str(path)).expanduser().resolve().parts[-2:]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts)).strip("-")


def launch_dir() -> Path:
    """Where ftsweep was run: inside a Hydra job Hydra's ``hydra.runtime.cwd`` (``hydra.job.chdir=true`` runs the
    job in its output folder), else the working directory. Relative data paths are read from here."""
    import sys

    if "hydra.core.hydra_config" in sys.modules:  # (nothing imported when no Hydra job can be running)
        from hydra.core.hydra_config import HydraConfig

        try:  # only while in the folder Hydra changed to (its config outlives the job in this process)
            hc = HydraConfig.get() if HydraConfig.initialized() else None
            moved = hc is not None and hc.job.chdir and Path(str(hc.runtime.output_dir)).resolve() == Path.cwd().resolve()
            cwd = str(hc.runtime.cwd) if moved else None
        except Exception:  # noqa: BLE001 -- a partial Hydra config (no runtime node): the working directory
            cwd = None
        if cwd:
            return Path(cwd)
    return Path.cwd()


def from_launch_dir(path: str | Path) -> Path:
    """``path`` (``~`` expanded) made absolute from where ftsweep was run (:func:`launch_dir`): how the config's
    relative paths are read (``init_from``, ``objective.include_path``, the user's modules), also with
    ``hydra.job.chdir=true``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else launch_dir() / p


def resolve_data_path(path: str) -> Path | None:
    """A data file named in config: ``pkg://<package>/<file>`` (bundled), absolute, or relative to the
    working directory. Returns None when no such file exists (the caller decides whether the name is a
    Hub dataset or a missing file)."""
    if path.startswith(PKG_SCHEME):
        package, _, rest = path[len(PKG_SCHEME):].partition("/")
        try:
            p = package_dir(package) / rest
        except (FileNotFoundError, ModuleNotFoundError, ValueError):
            return None
        return p.resolve() if p.exists() else None
    p = from_launch_dir(path)
    return p.resolve() if p.exists() else None
