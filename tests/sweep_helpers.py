"""Helpers for sweeper tests: run ``ftsweep train -m`` in a subprocess, with fake or real trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FAKE_CMD = json.dumps([sys.executable, str(ROOT / "tests" / "fake_trial.py")])


def sweep_args(sweep_dir: Path, *extra: str, n_trials: int = 4, workers: int = 1, study: str = "t") -> list[str]:
    """``ftsweep train -m`` over optimizer.lr with our sweeper, into ``sweep_dir``."""
    return [sys.executable, "-m", "ftsweep", "train", "-m", "hydra/sweeper=ftsweep_optuna",
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "logger=none",
            f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.study_name={study}",
            f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.n_workers={workers}",
            "hydra.sweeper.heartbeat_interval_s=1", "hydra.sweeper.report=false", "hydra.sweeper.progress=plain",
            *extra]


def env(fake: bool = True, **extra: Any) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("FTSWEEP_TRIAL_CMD", None)
    if fake:
        e["FTSWEEP_TRIAL_CMD"] = FAKE_CMD
    e.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items() if v is not None})
    for k in [k for k, v in extra.items() if v is None]:  # None: not in the environment at all
        e.pop(k, None)
    return e


def run(args: list[str], cwd: Path, timeout: float = 300, **env_extra: Any) -> subprocess.CompletedProcess:
    fake = env_extra.pop("fake", True)
    return subprocess.run(args, cwd=cwd, env=env(fake, **env_extra), check=False, capture_output=True, text=True, timeout=timeout)


def load(sweep_dir: Path, name: str = "t", storage: str | None = None) -> Any:
    import optuna

    from ftsweep.sweeper.storage import open_storage

    url = storage or f"sqlite:///{sweep_dir / 'study.db'}"
    return optuna.load_study(study_name=name, storage=open_storage(url))


def states(study: Any) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


