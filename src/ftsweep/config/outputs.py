"""Can the output folder be made? Checked before Hydra creates it, so a bad ``hydra.run.dir`` /
``hydra.sweep.dir`` is one line (exit 2) with nothing written, not a traceback from Hydra's ``mkdir``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ftsweep.config.errors import UsageError

# Less free space than this where the folder goes: .hydra/, the logs and the study cannot be written.
MIN_FREE_BYTES = 16 << 20


def check_output_dir(path: str | os.PathLike, key: str) -> None:
    """Raise :class:`UsageError` naming ``key`` if ``path`` cannot be a writable folder with room in it.

    The nearest existing folder on the way must be a folder (not a file), writable (a probe folder is
    made and removed again: permissions, a read-only mount or an immutable folder all show), and hold
    at least ``MIN_FREE_BYTES``."""
    target = Path(path).expanduser().absolute()
    _check_name_lengths(target, key)
    existing = _writable_parent(target, key, "cannot write in {existing}")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise UsageError(f"{key}: the disk holding {existing} is full ({free / 2**20:.1f} MiB free, "
                         f"{MIN_FREE_BYTES >> 20} MiB needed); free space or choose another {key}")


def check_cache_dir(path: str | os.PathLike, key: str = "cache_dir", env: str = "FTSWEEP_CACHE_DIR") -> None:
    """Raise :class:`UsageError` naming ``key`` if the cache folder cannot be made: a file on the way, or a
    missing folder whose nearest existing folder cannot be written (a read-only HOME). An existing cache folder is
    left alone, read-only or not (a shared, pre-filled cache is read only). Without it the run stopped at the first
    cache write with 'model.name_or_path: cannot load ...: Not a directory', blaming the model."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        return
    hint = f" (set from {env})" if os.environ.get(env) else ""
    _writable_parent(target, key, "cannot make {target}: {existing}", hint)


def _writable_parent(target: Path, key: str, cannot: str, hint: str = "") -> Path:
    """The nearest existing folder on the way to ``target``; :class:`UsageError` naming ``key`` when it is not a
    folder or cannot be written (a probe folder is made and removed again: permissions, a read-only mount or an
    immutable folder all show). ``cannot``: the start of that error, with ``{existing}`` / ``{target}``."""
    existing = target
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "a file" if existing.is_file() else "not a folder"
        where = "" if existing == target else f" (on the way to {target})"
        raise UsageError(f"{key}: {existing} is {what}{where}; choose another {key}{hint}")
    try:
        probe = tempfile.mkdtemp(prefix=".ftsweep-write-probe-", dir=existing)
    except OSError as err:
        why = cannot.format(existing=existing, target=target)
        raise UsageError(f"{key}: {why}: {err.strerror or err}; choose another {key}{hint}") from err
    os.rmdir(probe)
    return existing


def _check_name_lengths(target: Path, key: str) -> None:
    """A folder name longer than the file system takes (255 bytes on most: 85 Korean characters in UTF-8) stopped
    the command with an ``OSError: File name too long`` traceback, exit 1. Names are counted in bytes, as the
    file system counts them; the files ftsweep writes inside get room (``PATH_MAX`` less 512 bytes)."""
    def limit(name: str, default: int) -> int:
        try:
            return int(os.pathconf("/", name))
        except (OSError, ValueError):
            return default

    name_max, path_max = limit("PC_NAME_MAX", 255), limit("PC_PATH_MAX", 4096)
    for part in target.parts[1:]:
        size = len(os.fsencode(part))
        if size > name_max:
            raise UsageError(f"{key}: the folder name {part[:40]!r}... is {size} bytes, longer than the {name_max} "
                             f"bytes a file name may have; choose another {key}")
    size = len(os.fsencode(str(target)))
    if size > path_max - 512:
        raise UsageError(f"{key}: the path {str(target)[:60]!r}... is {size} bytes; the files written inside would pass "
                         f"the {path_max}-byte path limit: choose a shorter {key}")
