"""Where the project's files live (config root, bundled data), without importing anything heavy."""

from __future__ import annotations

import os
from pathlib import Path

# src/ftsweep/paths.py -> project root (an editable install keeps conf/, sweep/ and data/ beside src/).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """The Hydra config root: ``$FTSWEEP_CONF_DIR`` or ``<project>/conf``."""
    path = Path(os.environ.get("FTSWEEP_CONF_DIR", PROJECT_ROOT / "conf")).resolve()
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(
            f"ftsweep config root {path} has no train.yaml: install ftsweep editable from its repository "
            "(pip install -e .) or set FTSWEEP_CONF_DIR"
        )
    return path


def resolve_data_path(path: str) -> Path | None:
    """A data file named in config: absolute, else relative to the working directory, else to the project.

    Returns None when no such file exists (the caller may treat the name as a Hub dataset).
    """
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, PROJECT_ROOT / p]
    for c in candidates:
        if c.exists():
            return c.resolve()
    return None
