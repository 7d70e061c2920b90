"""What the sweep tells the dashboard about each trial: user attributes and files in Optuna's artifact store.

Called by the sweep process (the only writer of the study), never by ``ftsweep dashboard`` (read-only):

- :func:`label_study`: the objective names (``study.set_metric_names``), so the dashboard says "eval_loss";
- :func:`trial_attributes`: run dir, W&B run URL, status reason, memory estimate vs measured peak, trained
  tokens, from the trial's metrics.json (set just before the trial is told);
- :func:`upload_trial_files`: metrics.json, a learning-curve PNG (learning_curve.png, written into the trial
  dir) and predictions.jsonl where the objective wrote one;
- :func:`upload_study_files`: the report's plots, trials.md and best.yaml (a re-written report replaces the
  study's earlier copies);
- :func:`start_dashboard`: ``hydra.sweeper.dashboard=true`` runs ``ftsweep dashboard`` beside the sweep (a
  child process on 127.0.0.1, log in ``<sweep dir>/dashboard.log``), stopped when the sweep ends;
  :func:`watch_line` is the sweep's first line about it (the URL, or the command that opens it).

Files are copied into ``<sweep dir>/artifacts`` (Optuna's FileSystemArtifactStore); text files are copied with
secret values (HF_TOKEN, WANDB_API_KEY, ...) and URL passwords masked, whoever wrote them. A file that cannot be
stored never fails the trial or the sweep.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ftsweep import rundir
from ftsweep.sweepdir import SweepDir

ARTIFACT_DIR = "artifacts"
LEARNING_CURVE = "learning_curve.png"
TRIAL_FILES = (rundir.METRICS, LEARNING_CURVE, rundir.PREDICTIONS)
REPORT_FILES = (SweepDir.TRIALS, SweepDir.BEST, SweepDir.SUMMARY)
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".yaml", ".yml", ".txt", ".log", ".csv")


def store_for(sweep_dir: Path) -> Any:
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(sweep_dir) / ARTIFACT_DIR
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def _scrubbed(path: Path, tmp: Path) -> Path:
    """``path`` itself, or for a text file a copy in ``tmp`` (same name) with secrets masked."""
    if path.suffix not in TEXT_SUFFIXES:
        return path
    from ftsweep.tracking import scrub

    copy = tmp / path.name
    copy.write_text(scrub(path.read_text(errors="replace")))
    return copy


def _store(store: Any, path: Path, target: Any, existing: str | None = None) -> None:
    """Upload ``path`` (secrets masked) as an artifact of ``target``, or overwrite artifact ``existing``."""
    import tempfile

    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory() as tmp:
        src = _scrubbed(path, Path(tmp))
        if existing is not None:
            with open(src, "rb") as fh:
                store.write(existing, fh)
        else:
            # .yaml / .jsonl have no registered MIME type: as text/plain the dashboard previews them
            mimetype = "text/plain" if path.suffix in (".yaml", ".yml", ".jsonl") else None
            upload_artifact(artifact_store=store, file_path=str(src), study_or_trial=target, mimetype=mimetype)


def label_study(study: Any, metrics: list[str]) -> None:
    """Name the objective(s) after the metrics optimised ("eval_loss" rather than "Objective 0")."""
    import warnings

    if study.metric_names != list(metrics):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning: set_metric_names is stable in practice since 3.2
            study.set_metric_names(list(metrics))


def _mib(v: Any) -> float | None:
    return round(float(v), 1) if isinstance(v, (int, float)) else None


def trial_attributes(doc: dict[str, Any], state: str, reason: str | None, oom_retried: bool) -> dict[str, Any]:
    """User attributes of a finished trial, from its metrics.json (``doc``) and the sweep's verdict."""
    out: dict[str, Any] = {}
    if doc.get("wandb_run_url"):
        out["wandb_url"] = doc["wandb_run_url"]
    estimate, peak = _mib(doc.get("memory_estimate_mib")), _mib(doc.get("peak_memory_mb"))
    rss, before = _mib(doc.get("peak_rss_mb")), _mib(doc.get("rss_before_model_mb"))
    if peak is not None and peak == rss and before is not None:
        # On CPU the peak is the process's RSS: what the estimate covers is its growth from loading the
        # model on (docs/memory.md). On CUDA it is torch's peak allocated memory.
        peak = round(max(rss - before, 0.0), 1)  # (a warm worker can free memory it held at the reset)
        out["memory_peak_measure"] = "cpu: growth of peak RSS"
    elif peak is not None:
        out["memory_peak_measure"] = "cuda: max allocated"
    if estimate is not None:
        out["memory_estimate_mib"] = estimate
    if peak is not None:
        out["memory_peak_mib"] = peak
    if estimate and peak is not None:
        out["memory_peak_vs_estimate"] = round(peak / estimate, 3)
    if isinstance(doc.get("train_tokens"), int):
        out["trained_tokens"] = doc["train_tokens"]
    if state == "pruned":
        step = doc.get("pruned_at_step")
        text = f"pruned at step {step}" if step is not None else "pruned"
    elif state == "failed":
        text = f"failed: {reason or 'unknown'}"
    else:
        text = "complete"
    if oom_retried:
        text += " (after an OOM re-run with half the micro-batch)"
    out["status_reason"] = text[:1000]
    from ftsweep.tracking import scrub

    return scrub(out)


def write_learning_curve(trial_dir: Path, doc: dict[str, Any]) -> Path | None:
    """learning_curve.png: training loss (log_history.json) and eval loss (metrics.json) by step."""
    from ftsweep import rundir

    try:  # a list of logged steps (rundir.read_json reads objects only)
        rows = json.loads((trial_dir / rundir.LOG_HISTORY).read_text())
    except (OSError, ValueError):
        rows = []
    rows = rows if isinstance(rows, list) else []
    train = [(h["step"], h["loss"]) for h in rows if isinstance(h, dict) and "loss" in h and "step" in h]
    history = [h for h in doc.get("eval_history") or [] if isinstance(h, dict) and isinstance(h.get("eval_loss"), (int, float))]
    evals = [(h["step"], h["eval_loss"]) for h in history if not h.get("rows")]
    # trainer.intermediate_eval_rows: the evaluations before the last step scored a subset of the rows
    subset = [(h["step"], h["eval_loss"]) for h in history if h.get("rows")]
    n_rows = next((h["rows"] for h in history if h.get("rows")), None)
    if not train and not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    # beside subset evaluations, the every-row ones (before training, the last) are points, not a line through them
    for points, label, marker, line in ((train, "train loss", None, "-"),
                                        (evals, "eval loss, every row" if subset else "eval loss", "o",
                                         "none" if subset else "-"),
                                        (subset, f"eval loss, {n_rows} rows", "x", "-")):
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, linestyle=line, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    path = trial_dir / LEARNING_CURVE
    try:  # (whole or not at all: no half PNG on a full disk)
        rundir.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    finally:
        plt.close(fig)
    return path


def upload_trial_files(trial: Any, trial_dir: Path, doc: dict[str, Any], sweep_dir: Path) -> list[str]:
    """Store the trial's files as artifacts of ``trial`` (before it is told); returns the names stored."""
    stored = []
    try:
        store = store_for(sweep_dir)
        write_learning_curve(trial_dir, doc)
        for name in TRIAL_FILES:
            path = trial_dir / name
            if path.is_file():
                _store(store, path, trial)
                stored.append(name)
    except Exception as err:  # the dashboard's files are a convenience: never fail the trial for them
        print(f"[sweep] trial {trial.number}: files not stored for the dashboard: {type(err).__name__}: {err}",
              file=sys.stderr)
    return stored


def upload_study_files(study: Any, report_dir: Path, sweep_dir: Path) -> list[str]:
    """Store the report's plots, trials.md, summary.json and best.yaml as artifacts of the study (a file of the
    same name stored earlier is overwritten in place, so a resumed sweep does not list it twice)."""
    from optuna.artifacts import get_all_artifact_meta

    stored = []
    try:
        store = store_for(sweep_dir)
        existing = {m.filename: m.artifact_id for m in get_all_artifact_meta(study)}
        files = [report_dir / n for n in REPORT_FILES] + sorted((report_dir / "plots").glob("*.png"))
        for path in files:
            if not path.is_file():
                continue
            _store(store, path, study, existing.get(path.name))
            stored.append(path.name)
    except Exception as err:
        print(f"[sweep] report files not stored for the dashboard: {type(err).__name__}: {err}", file=sys.stderr)
    return stored


# ------------------------------------------------------------------------------------------ live dashboard
def dashboard_command(sweep_dir: Path, storage_url: str, study_name: str) -> list[str]:
    """The ``ftsweep dashboard`` arguments for this sweep (its folder when the study lives there)."""
    from ftsweep.sweeper.storage import redact

    default = {SweepDir(sweep_dir).default_storage_url("sqlite"), SweepDir(sweep_dir).default_storage_url("journal")}
    if storage_url in default:
        return ["ftsweep", "dashboard", str(sweep_dir)]
    return ["ftsweep", "dashboard", redact(storage_url), "--study", study_name]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (e.g. "Address already in use"), or None when it can. Bound as
    the dashboard binds (SO_REUSEADDR: closed connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            return err.strerror or str(err)
    return None


def start_dashboard(sweep_dir: Path, storage_url: str, study_name: str, port: int = 0) -> tuple[Any, str]:
    """Start ``ftsweep dashboard`` for this sweep on 127.0.0.1; returns (process or None, the line to print)."""
    from ftsweep.sweeper.storage import password_of

    cmd = dashboard_command(sweep_dir, storage_url, study_name)
    if password_of(storage_url):
        return None, ("dashboard not started: the storage URL holds a password (set PGPASSWORD instead); "
                      f"watch with: {' '.join(cmd)}")
    port = port or free_port()
    argv = [sys.executable, "-m", "ftsweep", *cmd[1:], "--port", str(port)]
    log = open(Path(sweep_dir) / "dashboard.log", "ab")  # noqa: SIM115 (the child keeps it open)
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "FTSWEEP_DASHBOARD_PARENT": str(os.getpid())},
                                start_new_session=True)  # Ctrl-C goes to the sweep, which then stops it
    finally:
        log.close()
    return proc, f"dashboard: http://127.0.0.1:{port}/dashboard (live; log {Path(sweep_dir) / 'dashboard.log'})"


def stop_dashboard(proc: Any) -> None:
    """SIGTERM (the dashboard closes its port and exits), then SIGKILL after 5 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def watch_line(sweep_dir: Path, storage_url: str, study_name: str) -> str:
    return "watch it live: " + shlex.join(dashboard_command(sweep_dir, storage_url, study_name))  # pasteable
