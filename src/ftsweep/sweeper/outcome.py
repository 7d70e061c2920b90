"""What a finished trial left behind, read in the sweep process (which never imports torch):
``metrics.json`` (complete / pruned), ``failure.json`` (failed, with its reason), or neither (killed).
Also decides whether an OOM failure is re-run with a smaller micro-batch."""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsweep import rundir
from ftsweep.sweeper.grammar import merge_overrides
from ftsweep.sweeper.process import Exit


@dataclass
class Outcome:
    state: str  # complete | pruned | failed
    values: list[float] | None = None
    reason: str | None = None
    doc: dict[str, Any] = field(default_factory=dict)
    retry: bool = False  # the scheduler ended the job: re-run like a stale trial (study.rerun)


def read_outcome(trial_dir: Path, ended: Exit, metrics_names: list[str]) -> Outcome:
    """The outcome of the trial in ``trial_dir`` whose process ended as ``ended``; ``metrics_names``: the
    study's objectives (the first may be read from ``objective``)."""
    failure = rundir.read_failure(trial_dir)
    metrics = rundir.read_metrics(trial_dir)
    code = ended.code
    if code is None and not failure and metrics is None:
        # The scheduler ended the job before the trial wrote anything (time limit, preemption, node
        # failure, scancel): like a stale trial, FAIL with its reason and re-run.
        return Outcome("failed", reason=ended.reason or "scheduler: job ended", retry=True)
    code = 1 if code is None else code
    if failure:
        return Outcome("failed", reason=str(failure.get("reason") or failure.get("error_type") or "failed"),
                       doc=failure)
    if code != 0 or metrics is None:
        return Outcome("failed", reason=exit_reason(code, _last_line(rundir.RunDir(trial_dir).trial_log)),
                       doc=metrics or {})
    status = str(metrics.get("status", "complete")).lower()
    if status == "pruned":
        return Outcome("pruned", doc=metrics)
    try:
        values = [_metric(metrics, m, first=i == 0) for i, m in enumerate(metrics_names)]
    except (KeyError, TypeError, ValueError) as err:
        return Outcome("failed", reason=f"objective: {err}", doc=metrics)
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        return Outcome("failed", reason=f"nan_loss: objective is {bad[0]}", doc=metrics)
    return Outcome("complete", values=values, doc=metrics)


def exit_reason(code: int, last_line: str) -> str:
    """Why a trial process that left no failure.json failed: its exit (a signal by name) and the last
    line of its log, or what is known when the log is empty (a process killed at once says nothing)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        why = f"killed by signal {name}"
        if name == "SIGKILL":
            why += " (kill -9, or the kernel's out-of-memory killer: check the host's free memory)"
    else:
        why = f"exit code {code}" if code else "no metrics.json written"
    return f"{why}: {last_line}" if last_line.strip() else f"{why}; the trial wrote nothing to trial.log"


def _metric(doc: dict[str, Any], name: str, first: bool) -> float:
    """The value of ``name``; the run's ``objective`` only stands in for the first metric when the run did not
    write ``name`` (a custom trial command). Never the other way round: with ``objective=exact_match`` and
    ``hydra.sweeper.metric=[eval_loss,exact_match]`` the first value is eval_loss, not the objective."""
    if isinstance(doc.get(name), (int, float)):
        return float(doc[name])
    if first and isinstance(doc.get("objective"), (int, float)):
        return float(doc["objective"])
    raise KeyError(f"metric {name!r} not in metrics.json")


def oom_retry(trial_dir: Path, overrides: list[str], out: Outcome) -> tuple[list[str], dict[str, Any]] | None:
    """For an OOM failure: the overrides of a re-run with half the micro-batch, double the accumulation
    (same effective batch) and half the eval micro-batch (an OOM in evaluation would otherwise fail the same
    way), and what the first attempt used; None when no smaller batch can help (not an OOM, an OOM while
    the weights load -- failure.json ``phase: load`` --, an odd or unknown micro-batch)."""
    if not str(out.reason).startswith("oom") or out.doc.get("phase") == "load":
        return None
    batch, accum, eval_batch = _batch_settings(trial_dir)
    if batch is None or batch < 2 or batch % 2:
        return None
    first = {"reason": str(out.reason)[:300], "per_device_train_batch_size": batch,
             "gradient_accumulation_steps": accum, "per_device_eval_batch_size": eval_batch}
    halved = [f"trainer.per_device_train_batch_size={batch // 2}", f"trainer.gradient_accumulation_steps={accum * 2}"]
    if eval_batch and eval_batch > 1:
        halved.append(f"trainer.per_device_eval_batch_size={eval_batch // 2}")
    return merge_overrides(overrides, halved), first


def _last_line(path: Path) -> str:
    try:
        # skip the "# ..." lines the sweeper wrote itself (the command, the submitit job id)
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()
                 if ln.strip() and not ln.startswith("# ")]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _batch_settings(trial_dir: Path) -> tuple[int | None, int, int | None]:
    """Micro-batch, accumulation and eval micro-batch the failed attempt used (its resolved Hydra config)."""
    try:
        t = rundir.load_config(trial_dir).trainer
        eval_batch = t.get("per_device_eval_batch_size")  # a custom trial command may not write it
        return int(t.per_device_train_batch_size), int(t.gradient_accumulation_steps), eval_batch and int(eval_batch)
    except Exception:  # noqa: BLE001 -- no readable config (a custom trial command): the batch is not shrunk
        return None, 1, None
