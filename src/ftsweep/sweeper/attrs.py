"""The names and types of what the sweeper records on Optuna trials and studies (``user_attrs``).

Every key is spelled here once; :class:`TrialAttrs` reads a trial's attributes typed, and
:func:`set_attrs` writes them (on a live trial or, by id, through the storage). Re-running a failed
trial has one path: :func:`ftsweep.sweeper.study.rerun`. Nothing heavy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ---- trial attributes
TRIAL_DIR = "trial_dir"  # the trial's run directory (absolute)
OVERRIDES = "overrides"  # the trial's task overrides (passwords masked)
GPU = "gpu"  # the device(s) it ran on ("0", "0,1")
WANDB_RUN_ID = "wandb_run_id"
STATUS = "status"  # complete | pruned | failed
PRUNED_AT_STEP = "pruned_at_step"
RUNTIME_S = "runtime_s"
REASON = "reason"  # why it failed (oom: ..., nan_loss: ..., timeout: ..., scheduler: ...)
OOM_FIRST_ATTEMPT = "oom_first_attempt"  # {reason, per_device_train_batch_size, ...} before the smaller re-run
DERIVED = "derived"  # {key: value} the trial got from hydra.sweeper.derived (+ effective batch)
ENQUEUED = "enqueued"  # a point given in hydra.sweeper.enqueue
RETRY_OF = "retry_of"  # the original trial whose parameters a re-run repeats
REPEAT_OF = "repeat_of"  # the COMPLETE trial whose parameters a sampler proposed again: its value, not trained
REPLACES = "ftsweep:replaces"  # the failed trial a re-run takes the place of in the budget
ATTEMPT = "ftsweep:rerun"  # 1, 2, ...: which re-run of the original trial this is
CHARGED = "ftsweep:charged"  # False: a re-run after the owner process was lost (spends no retry budget)
OWNER = "ftsweep:owner"  # {host, pid} of the sweep process that started it
HEARTBEAT = "ftsweep:heartbeat"  # written by storage.record_heartbeat
DATA_CHANGED = "ftsweep:data_changed"  # the trial read other data than the study's first finished trial (why)

# ---- study attributes
SEARCH_SPACE = "ftsweep:search_space"
SWEEP_DIR = "ftsweep:sweep_dir"
METRICS = "ftsweep:metrics"
FIXED_OVERRIDES = "ftsweep:fixed_overrides"
CREATED = "ftsweep:created"
STOPPED = "ftsweep:stopped"  # why the last run of the sweep stopped early (max_failure_rate, bad data); None after
DATA_FINGERPRINT = "ftsweep:data_fingerprint"  # {fingerprint, trial}: the tokenized data the first finished trial read


@dataclass(frozen=True)
class TrialAttrs:
    """A trial's sweeper attributes, typed (None where not recorded)."""

    trial_dir: Path | None = None
    overrides: tuple[str, ...] = ()
    gpu: str | None = None
    wandb_run_id: str | None = None
    status: str | None = None
    pruned_at_step: int | None = None
    runtime_s: float | None = None
    reason: str | None = None
    retry_of: int | None = None
    replaces: int | None = None
    attempt: int | None = None

    @classmethod
    def of(cls, trial: Any) -> TrialAttrs:
        a = trial.user_attrs
        d = a.get(TRIAL_DIR)
        return cls(trial_dir=Path(d) if d else None, overrides=tuple(a.get(OVERRIDES) or ()), gpu=a.get(GPU),
                   wandb_run_id=a.get(WANDB_RUN_ID), status=a.get(STATUS), pruned_at_step=a.get(PRUNED_AT_STEP),
                   runtime_s=a.get(RUNTIME_S), reason=a.get(REASON), retry_of=_int(a.get(RETRY_OF)),
                   replaces=_int(a.get(REPLACES)), attempt=_int(a.get(ATTEMPT)))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def set_attrs(trial: Any, **values: Any) -> None:
    """Record ``values`` (keys: the constants above, by their Python name in lower case, e.g.
    ``trial_dir=...``, ``reason=...``) on a live ``optuna.Trial`` / ``FrozenTrial``-with-study."""
    for name, value in values.items():
        trial.set_user_attr(KEYS[name], value)


def set_attrs_in_storage(storage: Any, trial_id: int, **values: Any) -> None:
    """Like :func:`set_attrs`, for a trial known only by its id (e.g. another process's stale trial)."""
    for name, value in values.items():
        storage.set_trial_user_attr(trial_id, KEYS[name], value)


KEYS = {"trial_dir": TRIAL_DIR, "overrides": OVERRIDES, "gpu": GPU, "wandb_run_id": WANDB_RUN_ID, "status": STATUS,
        "pruned_at_step": PRUNED_AT_STEP, "runtime_s": RUNTIME_S, "reason": REASON,
        "oom_first_attempt": OOM_FIRST_ATTEMPT, "repeat_of": REPEAT_OF, "data_changed": DATA_CHANGED}
