"""A sweep folder (``hydra.sweep.dir``): the only module that knows its file names and storage URLs.

    study.db / study.journal   the Optuna storage when the sweep chose the default (sqlite / journal)
    .ftsweep.lock              flock shared by the processes of one study (budget, study creation)
    <trial subdir>/            one run directory per trial (:class:`ftsweep.rundir.RunDir`) + trial.log
    summary.json, report.md, trials.md, plots/, best.yaml   the report (:mod:`ftsweep.report`)

Nothing heavy is imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepDir:
    path: Path

    STUDY_DB = "study.db"
    STUDY_JOURNAL = "study.journal"
    LOCK = ".ftsweep.lock"
    SUMMARY = "summary.json"
    REPORT = "report.md"
    TRIALS = "trials.md"
    PLOTS = "plots"
    BEST = "best.yaml"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def study_db(self) -> Path:
        return self.path / self.STUDY_DB

    @property
    def study_journal(self) -> Path:
        return self.path / self.STUDY_JOURNAL

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def trials(self) -> Path:
        return self.path / self.TRIALS

    @property
    def plots(self) -> Path:
        return self.path / self.PLOTS

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    def rerun_best_command(self) -> str:
        """The command that runs the sweep's best trial again (``best.yaml`` read as config group <folder name>
        from the folder above), ready to paste into a shell. A folder name Hydra cannot read as a group name
        (letters, digits, ``_``, ``-``: not ``스윕 1``) gets the other way, as an experiment file."""
        import re
        import shlex

        folder = self.path.resolve()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", folder.name):
            return f"ftsweep train --config-dir {shlex.quote(str(folder.parent))} +{folder.name}=best"
        return (f"copy {shlex.quote(str(folder / self.BEST))} to conf/experiment/<name>.yaml and run ftsweep train "
                f"+experiment=<name> (the folder name {folder.name!r} is not a Hydra config group name: letters, "
                "digits, _ and -)")

    def default_storage_url(self, kind: str = "sqlite") -> str:
        """The storage URL of the study file in this folder: ``sqlite`` (study.db) or ``journal``."""
        if kind == "journal":
            return f"journal:{self.study_journal}"
        return f"sqlite:///{self.study_db}"

    def existing_storage_url(self) -> str | None:
        """The URL of the study file this folder holds (study.db first), or None."""
        if self.study_db.is_file():
            return f"sqlite:///{self.study_db.resolve()}"
        if self.study_journal.is_file():
            return f"journal:{self.study_journal.resolve()}"
        return None

    def read_summary(self) -> dict | None:
        """The last report's summary.json, or None when missing or unreadable."""
        try:
            doc = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None
