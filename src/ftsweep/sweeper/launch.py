"""A trial's hand-over from the sweep process to the trial process, encoded and decoded in one place.

The sweep (:mod:`ftsweep.sweeper.runner`) builds a :class:`TrialLaunch` and gives the trial process

- its command line (:meth:`TrialLaunch.argv`): the trial command, the trial's overrides (fixed ones, then
  the sampled parameters as ``key=value``: what Hydra composes the run from) and
  ``hydra.sweep.dir`` / ``hydra.sweep.subdir`` (where the run directory goes). The sampled values travel
  here only, once: the trial reads them back from its overrides (:meth:`TrialLaunch.params`) for its
  W&B run config;
- its identity (:meth:`TrialLaunch.env`), as environment variables::

    FTSWEEP_STORAGE           Optuna storage URL
    FTSWEEP_STUDY_NAME        study name
    FTSWEEP_TRIAL_ID          Optuna trial id (storage-wide)
    FTSWEEP_TRIAL_NUMBER      Optuna trial number (per study; names trial_<n>/ and the W&B run)
    FTSWEEP_TRIAL_PARAM_KEYS  JSON list of the sampled parameters' names (which of the overrides are
                              the trial's parameters; their values are in the command line only)
    FTSWEEP_PRUNER            JSON spec of the pruner (Optuna does not store pruners)
    FTSWEEP_OBJECTIVE_METRIC  the metric reported for pruning (default eval_loss)
    FTSWEEP_MULTI_OBJECTIVE   "1" when the study has several objectives (no pruning then)
    FTSWEEP_PARENT_PID        the sweep process; if it dies, the trial stops too (0: another host)
    FTSWEEP_HEARTBEAT_S       how often to record a heartbeat
    FTSWEEP_RESUME_FROM       a re-run of a lost trial: the checkpoint that trial saved last (it goes on from there)

The trial process (:mod:`ftsweep.sweeper.trial`, directly or in a warm worker) reads it back with
:meth:`TrialLaunch.from_env`. Nothing heavy is imported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "FTSWEEP_"


@dataclass(frozen=True)
class TrialLaunch:
    storage: str
    study_name: str
    trial_id: int
    trial_number: int = -1
    param_keys: tuple[str, ...] = ()  # names of the sampled parameters (their values: the argv overrides)
    pruner: str | None = None  # ftsweep.sweeper.samplers.pruner_to_json
    objective_metric: str = "eval_loss"
    multi_objective: bool = False
    parent_pid: int = 0  # 0: no orphan check by pid (the sweep runs on another host)
    heartbeat_s: float = 10.0
    resume_from: str | None = None  # a lost trial's last checkpoint (a re-run with its parameters goes on from it)

    def env(self) -> dict[str, str]:
        """The trial's own variables (the backend adds them to the environment it runs in)."""
        return {
            "FTSWEEP_STORAGE": self.storage,
            "FTSWEEP_STUDY_NAME": self.study_name,
            "FTSWEEP_TRIAL_ID": str(self.trial_id),
            "FTSWEEP_TRIAL_NUMBER": str(self.trial_number),
            "FTSWEEP_TRIAL_PARAM_KEYS": json.dumps(list(self.param_keys)),
            "FTSWEEP_PRUNER": self.pruner or "",
            "FTSWEEP_OBJECTIVE_METRIC": self.objective_metric,
            "FTSWEEP_MULTI_OBJECTIVE": "1" if self.multi_objective else "0",
            "FTSWEEP_PARENT_PID": str(self.parent_pid),
            "FTSWEEP_HEARTBEAT_S": str(self.heartbeat_s),
            "FTSWEEP_RESUME_FROM": self.resume_from or "",
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrialLaunch | None:
        """The trial this process runs, or None outside a sweep (no trial id or storage)."""
        env = os.environ if env is None else env
        if not env.get("FTSWEEP_TRIAL_ID") or not env.get("FTSWEEP_STORAGE"):
            return None
        return cls(
            storage=env["FTSWEEP_STORAGE"],
            study_name=env.get("FTSWEEP_STUDY_NAME", ""),
            trial_id=int(env["FTSWEEP_TRIAL_ID"]),
            trial_number=int(env.get("FTSWEEP_TRIAL_NUMBER") or -1),
            param_keys=tuple(json.loads(env.get("FTSWEEP_TRIAL_PARAM_KEYS") or "[]")),
            pruner=env.get("FTSWEEP_PRUNER") or None,
            objective_metric=env.get("FTSWEEP_OBJECTIVE_METRIC") or "eval_loss",
            multi_objective=env.get("FTSWEEP_MULTI_OBJECTIVE") == "1",
            parent_pid=int(env.get("FTSWEEP_PARENT_PID") or 0),
            heartbeat_s=float(env.get("FTSWEEP_HEARTBEAT_S") or 10.0),
            resume_from=env.get("FTSWEEP_RESUME_FROM") or None,
        )

    @staticmethod
    def argv(command: list[str], overrides: list[str], sweep_dir: str, subdir: str) -> list[str]:
        """The trial's command line: it is job <trial number> of this multirun, so Hydra puts its run
        directory in ``hydra.sweep.dir/hydra.sweep.subdir``."""
        from ftsweep.sweeper.grammar import format_value

        return [*command, *overrides, f"hydra.sweep.dir={format_value(sweep_dir)}",
                f"hydra.sweep.subdir={format_value(subdir)}"]

    def params(self, argv: list[str]) -> dict[str, Any]:
        """The sampled parameters, decoded from the trial's command line (its ``key=value`` overrides, parsed
        the way Hydra parses them, so a float comes back exactly: :func:`~ftsweep.sweeper.grammar.format_value` writes its
        shortest round-trip repr). A parameter with no override of its own (a sweep ``variable``, the input
        of a derived key only) is not in the result. Hydra's override parser only (no Optuna)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        wanted = set(self.param_keys)
        found: dict[str, Any] = {}
        parser = OverridesParser.create()
        for arg in argv:
            key = arg.partition("=")[0]
            if key in wanted:
                found[key] = parser.parse_overrides([arg])[0].value()  # the last one wins, as in Hydra
        return {k: found[k] for k in self.param_keys if k in found}
