"""A run directory: the only module that reads or writes its bookkeeping files.

    .hydra/config.yaml     the composed config (written by Hydra)
    .hydra/overrides.yaml  the command line's task overrides (Hydra)
    .hydra/hydra.yaml      Hydra's own config (mode RUN or MULTIRUN, job number, ...)
    metrics.json           what the run measured (status complete / pruned / failed, objective, ...)
    failure.json           only for a failed run: its reason (``oom: ...``, ``nan_loss: ...``), type, phase
    manifest.json          seed, versions, data fingerprint, config hash
    log_history.json       every logged step
    training_loss.png      trainer.plot_loss: the training loss (training_eval_loss.png: the eval loss) by step
                           (ftsweep.loss_plot)
    predictions.jsonl      a generation objective's answers at the last evaluation (prompt, reference, prediction,
                           scores), one row per generated sample
    adapter/ | model/      the trained LoRA adapter (+ tokenizer) | a full fine-tune's model
    adapter_init/          lora.init=pissa / olora: the adapter as it started (adapter/ is converted with it)
    checkpoints/checkpoint-<step>/   what trainer.save_steps saves (trainer.resume_from_checkpoint continues from one;
                           its run_config.yaml is the saving run's config, which a resume compares with, and its
                           wandb_run.json names the saving W&B run, which a resumed run continues)
    trial.log              a sweep trial's output (command line first)
    train.log              a single run's: Hydra's job log (``<hydra.job.name>.log``) with the run's console output

:class:`RunDir` names them; the functions below read and write them. Every JSON file is written atomically (temp file + rename) with secrets scrubbed. Nothing heavy imported.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsweep.errors import UsageError
from ftsweep.tracking import scrub

METRICS, FAILURE, MANIFEST, LOG_HISTORY = "metrics.json", "failure.json", "manifest.json", "log_history.json"
PREDICTIONS = "predictions.jsonl"
ADAPTER, FULL_MODEL, TRIAL_LOG = "adapter", "model", "trial.log"
INITIAL_ADAPTER = "adapter_init"
TRACKER_RUN = "wandb_run.json"  # in a checkpoint: the W&B run that saved it
SAVED_CONFIG = "run_config.yaml"  # in a checkpoint: the config of the run that saved it
CHECKPOINTS, TRAINER_STATE = "checkpoints", "trainer_state.json"  # transformers' checkpoint-<step>/ folders in it
RESUME_KEY = "trainer.resume_from_checkpoint"
FINISHED_MARKERS = (METRICS, FAILURE)
REPEAT_DIR = "repeat_of_dir"  # metrics.json of a sweep's repeat trial (no run of its own): the trained trial's folder


@dataclass(frozen=True)
class RunDir:
    """A run directory's paths (one run, or one sweep trial)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def failure(self) -> Path:
        return self.path / FAILURE

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def log_history(self) -> Path:
        return self.path / LOG_HISTORY

    def loss_plot(self, key: str) -> Path:
        """trainer.plot_loss's plot of the logged ``key`` (loss, eval_loss), LLaMA-Factory's file name."""
        return self.path / f"training_{key}.png"

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER

    @property
    def initial_adapter(self) -> Path:
        """lora.init=pissa / olora: the adapter as it started (the saved adapter is converted with it)."""
        return self.path / INITIAL_ADAPTER

    @property
    def full_model(self) -> Path:
        return self.path / FULL_MODEL

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def trial_log(self) -> Path:
        return self.path / TRIAL_LOG

    def job_log(self, job_name: str) -> Path:
        """Hydra's job log (``hydra.job.name`` + ``.log``), where a single run's console output is copied."""
        return self.path / f"{job_name}.log"

    @property
    def config(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    def saved_model(self, lora: bool) -> Path:
        """Where the trained weights go: ``adapter/`` with LoRA, ``model/`` for a full fine-tune."""
        return self.adapter if lora else self.full_model


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename): a killed run never leaves half a file. The temp file is this
    process's own: the ranks of a DDP run that fails together each write ``failure.json`` (with one shared temp
    name, one rank's rename found the file gone and the other's could move a half-written one into place)."""
    write_text_atomic(path, json.dumps(scrub(obj), indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)`` through a temp file of this process and a rename: a write that fails (a full disk,
    a folder gone read-only) leaves the earlier file as it was and no half file behind."""
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(temp)`` into a temp file of this process beside ``path``, then a rename onto ``path`` (a plot:
    ``lambda tmp: fig.savefig(tmp, format="png")``, the format given: the temp name's suffix is ``.tmp``): as
    :func:`write_text_atomic`, a write that fails leaves the earlier file and no half file behind."""
    path = Path(path)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):  # (a read-only folder refuses even to unlink a file it does not hold)
            tmp.unlink(missing_ok=True)
        if err.filename == str(tmp):  # (the file the user knows, not its temp file)
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable (a run still writing it)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(Path(run_dir) / METRICS, metrics)


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / METRICS)


def write_failure(run_dir: Path, reason: str, error_type: str, phase: str | None = None) -> None:
    """Record why a run failed (the sweeper reads it: the reason's prefix classifies oom / nan / timeout)."""
    write_json(Path(run_dir) / FAILURE, {"status": "failed", "reason": reason, "error_type": error_type, "phase": phase})


def record_failure(run_dir: Path, reason: str, error_type: str, phase: str | None = None) -> str:
    """:func:`write_failure` when it can be written; else (the disk that filled up and failed the run) a note for
    the run's error line, ``"; failure.json not written: <why>"``, so the run still ends in its one line."""
    try:
        write_failure(run_dir, reason, error_type, phase)
    except OSError as err:
        return f"; {FAILURE} not written: {err.strerror or err}"
    return ""


def read_failure(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / FAILURE)


ALLOW_FAILED = "--allow-failed"  # merge / generate / publish: use the saved model of a run that did not complete
ALLOW_FAILED_INIT = "init_from_allow_failed=true"  # train: start from the adapter of such a run (init_from)


def not_complete(run_dir: str | Path) -> str | None:
    """Why ``run_dir``'s saved model (``adapter/`` or ``model/``) is not a completed run's, in a few words naming
    the file that says so; None when the run completed. A run that failed (``failure.json``: e.g. a run with
    ``overwrite=true`` that failed in the folder of an earlier one, whose adapter is still there), stopped before
    its ``metrics.json`` (killed, or still running) or was pruned may hold another run's model or half of one."""
    run_dir = Path(run_dir)
    failure = read_failure(run_dir)
    if failure is not None or (run_dir / FAILURE).exists():
        reason = (failure or {}).get("reason") or "no reason recorded"
        return f"the run failed ({reason}; {FAILURE})"
    metrics = read_metrics(run_dir)
    if metrics is None:
        return f"the run did not finish (no {METRICS}: stopped, or still running)"
    status = metrics.get("status")
    if status != "complete":
        return f"the run ended {status} ({METRICS})"
    return None


def incomplete_problem(run_dir: str | Path, model: Path, allow: str = ALLOW_FAILED) -> str | None:
    """The one line refusing ``model``, the saved model of ``run_dir``, when the run did not complete
    (:func:`not_complete`), naming ``allow``, the way to use it anyway; None when it completed."""
    problem = not_complete(run_dir)
    if problem is None:
        return None
    return (f"{run_dir}: {problem}: its {Path(model).name}/ may be an earlier run's or unfinished; "
            f"give a completed run, or pass {allow} to use it anyway")


def check_complete(run_dir: str | Path, model: Path, allow: bool, how: str = ALLOW_FAILED) -> None:
    """Refuse (one line, exit 2) to use ``model``, the saved model of ``run_dir``, when the run did not complete
    (:func:`not_complete`); with ``allow`` (``how``: ``--allow-failed``, or ``init_from_allow_failed=true``) say
    so in one line and go on. A ``model`` folder with a damaged file (:func:`damaged_file`: the disk filled while
    it was saved) is refused either way: loading it stopped in a traceback from deep in the tokenizer or safetensors."""
    damaged = damaged_file(model) if Path(model).is_dir() else None
    if damaged is not None:
        shown = str(Path(model).name) + damaged.removeprefix(str(model))
        raise UsageError(f"{run_dir}: {shown}: its {Path(model).name}/ was not saved whole (the disk filled up, or a "
                         "kill while it was saved) and cannot be used; train the run again (or resume it from a "
                         "checkpoint)")
    problem = not_complete(run_dir)
    if problem is None:
        return
    if not allow:
        raise UsageError(incomplete_problem(run_dir, model, how) or problem)
    import sys

    print(f"ftsweep: warning: {run_dir}: {problem}: using its {Path(model).name}/ anyway ({how})",
          file=sys.stderr, flush=True)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_json(Path(run_dir) / MANIFEST, manifest)


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / MANIFEST)


def write_log_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_json(Path(run_dir) / LOG_HISTORY, history)  # type: ignore[arg-type]


def write_predictions(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, written atomically like the JSON files."""
    path = Path(run_dir) / PREDICTIONS
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(scrub(r), ensure_ascii=False, default=str) + "\n" for r in rows))
    tmp.replace(path)


def read_predictions(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``predictions.jsonl`` ([] when the run wrote none)."""
    path = Path(run_dir) / PREDICTIONS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_finished(run_dir: Path) -> bool:
    """True when a run already finished (or failed) in ``run_dir``: its files must not be overwritten."""
    return any((Path(run_dir) / name).is_file() for name in FINISHED_MARKERS)


def clear_finished(run_dir: Path, checkpoints: bool = False) -> None:
    """Remove a finished run's result files (``overwrite=true``): only the new run's outcome stays, its trained
    model too (``adapter/``, ``model/``: else a new run that fails leaves the old adapter beside its own config,
    taken for its result); with ``checkpoints`` its checkpoints too (a new run, not a resume: a later resume must
    not find the old ones)."""
    import shutil

    run = RunDir(Path(run_dir))
    for path in (*(run.path / name for name in (*FINISHED_MARKERS, MANIFEST, LOG_HISTORY, PREDICTIONS)),
                 run.loss_plot("loss"), run.loss_plot("eval_loss")):
        path.unlink(missing_ok=True)
    for folder in (run.adapter, run.full_model, run.initial_adapter):
        shutil.rmtree(folder, ignore_errors=True)
    if checkpoints:
        shutil.rmtree(RunDir(Path(run_dir)).checkpoints, ignore_errors=True)


def saved_step(run_dir: Path) -> int | None:
    """The step of the latest checkpoint in ``run_dir`` (None when it saved none)."""
    try:
        return checkpoint_step(resume_point(run_dir))
    except UsageError:
        return None


def mask_hydra_files(run_dir: Path) -> None:
    """Mask URL passwords (a storage URL given as an override) and secret environment values (HF_TOKEN's typed
    into a setting) in the ``.hydra/*.yaml`` files Hydra wrote."""
    for path in (Path(run_dir) / ".hydra").glob("*.yaml"):
        mask_file(path)


def mask_file(path: Path) -> None:
    """Mask URL passwords and secret environment values in the text file ``path`` (if it exists)."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return
    masked = scrub(text)
    if masked != text:
        Path(path).write_text(masked)


def resume_point(given: str | Path, run_dir: str | Path | None = None) -> Path:
    """The checkpoint a run resumes from (``trainer.resume_from_checkpoint``): ``given`` itself when it is a
    checkpoint folder (``checkpoint-<step>`` with its ``trainer_state.json``, which transformers writes last), else
    the latest such folder of a run folder (or of its ``checkpoints/``); ``true`` (transformers' word): the latest of
    the run's own folder ``run_dir`` (``hydra.run.dir=<the stopped run>``). One-line UsageError naming the key when
    there is none."""
    if str(given).lower() == "true":
        if run_dir is None or not (Path(run_dir) / CHECKPOINTS).is_dir():
            raise UsageError(f"{RESUME_KEY}=true: this run's folder {run_dir} holds no checkpoint; give the stopped "
                             f"run's folder as hydra.run.dir, or as {RESUME_KEY}=<folder>")
        given = run_dir
    path = Path(given).expanduser()
    if not path.is_dir():
        raise UsageError(f"{RESUME_KEY}: no such folder {given} (relative paths are read from {Path.cwd()})")
    if (path / TRAINER_STATE).is_file():
        return path
    folder = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    steps = {int(p.name.split("-", 1)[1]): p for p in folder.glob("checkpoint-*")
             if p.name.split("-", 1)[1].isdigit() and (p / TRAINER_STATE).is_file()}
    if not steps:
        raise UsageError(f"{RESUME_KEY}: {given} holds no checkpoint (checkpoint-<step>/{TRAINER_STATE}; a run saves "
                         "them every trainer.save_steps steps)")
    return steps[max(steps)]


def damaged_file(point: Path) -> str | None:
    """``<file> (why)`` for the first file of checkpoint ``point`` that is cut short or unreadable (a copy or a
    disk that filled up while it was saved; transformers writes trainer_state.json last, so a kill while saving
    leaves none): safetensors whose size is not what their header says, torch files (``*.pt``, ``*.pth``,
    ``*.bin``: zip archives) without their end record, JSON that does not parse, empty files (not the model card
    ``README.md``: nothing resumes from it, and peft writes it anew). Reads headers and ends of files only; None when
    nothing is damaged."""
    import struct
    import zipfile

    for path in sorted(Path(point).iterdir()):
        if not path.is_file() or path.name == "README.md":
            continue
        try:
            size = path.stat().st_size
            if size == 0:
                return f"{path} (empty)"
            if path.suffix == ".safetensors":
                with path.open("rb") as f:
                    head = f.read(8)
                    n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                    header = json.loads(f.read(n)) if 0 < n <= size - 8 else None
                ends = [v["data_offsets"][1] for k, v in (header or {}).items() if k != "__metadata__"]
                if header is None or 8 + n + max(ends, default=0) != size:
                    return f"{path} (cut short: {size} bytes, its header says {8 + n + max(ends, default=0)})"
            elif path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
                return f"{path} (not a complete torch file: cut short)"
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as err:
            return f"{path} ({type(err).__name__}: {err})"
    return None


def intact_before(point: Path) -> list[Path]:
    """The checkpoints saved before ``point`` beside it with no damaged file (:func:`damaged_file`), oldest first."""
    def number(p: Path) -> int:  # (by name, as resume_point orders them: a damaged trainer_state.json says 0)
        tail = p.name.split("-", 1)[-1]
        return int(tail) if p.name.startswith("checkpoint-") and tail.isdigit() else -1

    return sorted((p for p in Path(point).parent.glob("checkpoint-*") if 0 <= number(p) < number(Path(point))
                   and (p / TRAINER_STATE).is_file() and damaged_file(p) is None), key=number)


def intact_resume_point(run_dir: str | Path) -> tuple[Path | None, str | None]:
    """The latest checkpoint of ``run_dir`` with no damaged file, and, when its latest one is damaged and was passed
    over, ``<checkpoint> is damaged: <file> (why)``; (None, None) when it saved no checkpoint."""
    try:
        latest = resume_point(run_dir)
    except UsageError:
        return None, None
    damaged = damaged_file(latest)
    if damaged is None:
        return latest, None
    earlier = intact_before(latest)
    return (earlier[-1] if earlier else None), f"{latest.name} is damaged: {damaged}"


# What a checkpoint's optimizer.pt holds in its parameter groups (and scheduler.pt's base_lrs: the lr): a resume
# goes on with the saved values whatever the config says, so another value is refused rather than ignored
OPTIMIZER_STATE_KEYS = ("optimizer.lr", "optimizer.weight_decay", "optimizer.betas", "optimizer.eps")


def resume_problem(cfg: Any, point: Path) -> str | None:
    """One line when the run ``cfg`` cannot continue from checkpoint ``point``: a damaged file in it, nothing left
    to train, another kind of model (a LoRA adapter vs a full model, another LoRA rank), or an optimizer setting the
    checkpoint's optimizer state would override (:data:`OPTIMIZER_STATE_KEYS`); None when it can."""
    damaged = damaged_file(point)
    if damaged:
        earlier = intact_before(point)
        return (f"{RESUME_KEY}: {point} is damaged: {damaged}"
                + (f"; resume from the checkpoint before it: {RESUME_KEY}={earlier[-1]}" if earlier else ""))
    step = checkpoint_step(point)
    max_steps = int(cfg.trainer.max_steps)
    if max_steps > 0 and step >= max_steps:
        return (f"{RESUME_KEY}: {point} is at step {step}: trainer.max_steps={max_steps} leaves nothing to train "
                "(raise trainer.max_steps)")
    adapter = read_json(point / "adapter_config.json")
    lora = bool(cfg.lora.enabled)
    if lora != (adapter is not None):
        return (f"{RESUME_KEY}: {point} holds {'a LoRA adapter' if adapter else 'a full model'}, but this run "
                f"{'trains a LoRA adapter' if lora else 'is a full fine-tune (lora=none)'}: resume with the settings "
                "of the run that saved it")
    if adapter is not None and adapter.get("r") != cfg.lora.r:
        return (f"{RESUME_KEY}: {point} holds a LoRA adapter of r={adapter.get('r')}, but this run has lora.r="
                f"{cfg.lora.r}: resume with the settings of the run that saved it")
    if adapter is not None:
        from ftsweep.config.options import BASE_CHANGING_INITS, LORA_INITS, peft_lora_init

        saved_init, init = adapter.get("init_lora_weights", True), peft_lora_init(cfg.lora.init)
        if saved_init != init and any(str(i).startswith(BASE_CHANGING_INITS) for i in (saved_init, init)):
            # PiSSA / OLoRA train against the residual of the base weights: another init, another base
            name = next((k for k, v in LORA_INITS.items() if v == saved_init), saved_init)
            return (f"{RESUME_KEY}: {point} was trained from lora.init={name}, but this run has "
                    f"lora.init={cfg.lora.init}: resume with the settings of the run that saved it")
    saved = _saved_config(point)
    if saved is not None:
        from omegaconf import OmegaConf

        for key in OPTIMIZER_STATE_KEYS:  # torch's load_state_dict takes them from the checkpoint, lr its scheduler too
            was, now = (OmegaConf.select(c, key) for c in (saved, cfg))
            was, now = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (was, now))
            if was is not None and now is not None and was != now:
                return (f"{RESUME_KEY}: {point} was saved with {key}={was}, which its optimizer and scheduler state "
                        f"(restored on resume) keep: {key}={now} would not apply; resume with {key}={was}, or start "
                        "a new run")
    if saved is not None and adapter is not None:
        from omegaconf import OmegaConf

        before = OmegaConf.select(saved, "lora.loraplus_lr_ratio") is not None
        if before != (cfg.lora.loraplus_lr_ratio is not None):  # LoRA+ has 4 optimizer parameter groups, LoRA 2
            return (f"{RESUME_KEY}: {point} was saved {'with' if before else 'without'} LoRA+ "
                    f"(lora.loraplus_lr_ratio), whose optimizer state has other parameter groups: resume "
                    f"{'with' if before else 'without'} it")
    return None


def _saved_config(point: Path) -> Any:
    """The config of the run that saved checkpoint ``point``: the one recorded in it (``run_config.yaml``), else
    the run's ``.hydra/config.yaml`` when the checkpoint is in a run's ``checkpoints/``; else None."""
    from omegaconf import OmegaConf

    folder = Path(point).parent
    saved = Path(point) / SAVED_CONFIG
    if not saved.is_file():
        saved = RunDir(folder.parent).config if folder.name == CHECKPOINTS else None
    return OmegaConf.load(saved) if saved is not None and saved.is_file() else None


def checked_resume_point(cfg: Any, run_dir: str | Path | None) -> Path | None:
    """The checkpoint ``trainer.resume_from_checkpoint`` names (:func:`resume_point`), checked against the run
    ``cfg`` (:func:`resume_problem`; one-line UsageError); None when the run starts fresh."""
    given = cfg.trainer.resume_from_checkpoint
    if not given:
        return None
    point = resume_point(given, run_dir)
    problem = resume_problem(cfg, point)
    if problem:
        raise UsageError(problem)
    return point


# What decides the training a checkpoint goes on with (the rest: how long, how often to evaluate or save, where to log)
RESUME_COMPARED = ("model", "quantization", "lora", "data", "optimizer", "scheduler", "stage", "init_from",
                   "trainer.per_device_train_batch_size", "trainer.gradient_accumulation_steps", "trainer.seed",
                   "trainer.precision", "trainer.neftune_noise_alpha")


def resume_changes(cfg: Any, point: Path) -> list[str]:
    """The settings (``key=value (was old)``) in which run ``cfg`` differs from the run that saved checkpoint
    ``point`` (its ``.hydra/config.yaml``, when the checkpoint is in a run's ``checkpoints/``): allowed (e.g. new
    data), but said, as a resumed sweep names its changed overrides."""
    from omegaconf import OmegaConf

    saved = _saved_config(point)
    if saved is None:
        return []

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    old = flat(OmegaConf.to_container(saved, resolve=False))
    new = flat(OmegaConf.to_container(cfg, resolve=False))
    changed = []
    for key in sorted(set(old) | set(new)):
        if not any(key == c or key.startswith(c + ".") for c in RESUME_COMPARED) or old.get(key) == new.get(key):
            continue
        if old.get("data.format") == "auto" and (key == "data.format" or key.startswith("data.columns.")
                                                 and old.get(key) is None):
            continue  # read as what it detected (this run: resolved), its columns mapped
        changed.append(f"{key}={new.get(key)} (was {old.get(key)})")
    return changed


def resume_hint(run_dir: Path) -> str | None:
    """How a stopped run that saved a checkpoint goes on (for its failure line): the command with the run's own
    overrides (``.hydra/overrides.yaml``) and the resume point; None when it saved none."""
    import shlex

    try:
        point = resume_point(run_dir)
    except UsageError:
        return None
    from ftsweep.config.keys import override_value

    given = [o for o in load_overrides(run_dir) if o.split("=", 1)[0].lstrip("+~") != RESUME_KEY]
    resume = f"{RESUME_KEY}={override_value(str(run_dir))}"  # a folder named 실행 1 quoted for Hydra, then the shell
    command = " ".join(["ftsweep", "train", *map(shlex.quote, [*given, resume])])
    return f"it saved step {checkpoint_step(point)}: continue from there with {command}"


def checkpoint_step(point: Path) -> int:
    """The optimizer step a checkpoint was saved at (its ``trainer_state.json``)."""
    return int((read_json(Path(point) / TRAINER_STATE) or {}).get("global_step") or 0)


def write_checkpoint_record(point: Path, config_yaml: str, run_id: str | None) -> None:
    """Record in checkpoint ``point`` the config of the run that saved it (what a resume compares with, even after
    a resume in the same folder has replaced ``.hydra/config.yaml``) and its W&B run (which a resume continues)."""
    tmp = Path(point) / (SAVED_CONFIG + ".tmp")
    tmp.write_text(scrub(config_yaml))
    tmp.replace(Path(point) / SAVED_CONFIG)
    if run_id:
        write_json(Path(point) / TRACKER_RUN, {"wandb_run_id": run_id})


def checkpoint_tracker_run(point: Path) -> str | None:
    """The W&B run that saved checkpoint ``point`` (:func:`write_checkpoint_record`), None if unrecorded."""
    run_id = (read_json(Path(point) / TRACKER_RUN) or {}).get("wandb_run_id")
    return run_id if isinstance(run_id, str) and run_id else None


def config_path(run_dir: Path) -> Path:
    return RunDir(run_dir).config


def load_config(run_dir: str | Path) -> Any:
    """The run's composed config (``.hydra/config.yaml``); one-line error when ``run_dir`` is no run."""
    from omegaconf import OmegaConf

    path = config_path(Path(run_dir))
    if not path.is_file():
        repeat = (read_metrics(Path(run_dir)) or {}).get(REPEAT_DIR)  # a sweep's repeat trial: no run of its own
        if repeat:
            raise UsageError(f"{run_dir}: a repeat of the trial in {repeat} (the same point, not trained again): "
                             f"use that folder")
        if not Path(run_dir).exists():
            raise UsageError(f"{run_dir}: no such folder (give a run or sweep folder)")
        raise UsageError(f"{run_dir}: not a run directory (no .hydra/config.yaml)")
    cfg = OmegaConf.load(path)
    _anchor_relative_paths(cfg, Path(run_dir))
    if OmegaConf.select(cfg, "data.format") == "auto":  # the format (and columns) the run read its data in
        manifest = read_manifest(Path(run_dir)) or {}
        if manifest.get("data_format"):
            cfg.data.format = manifest["data_format"]
            for field, column in (manifest.get("data_columns") or {}).items():
                OmegaConf.update(cfg, f"data.columns.{field}", column, force_add=True)
    return cfg


def _anchor_relative_paths(cfg: Any, run_dir: Path) -> None:
    """A base model given as a relative folder (``model.name_or_path=./my_model``), a relative ``init_from`` and
    LLaMA-Factory's ``data.dataset_dir`` (the folder of ``dataset_info.json``, relative to the working directory) are read from
    where the run was started (Hydra records it: ``hydra.runtime.cwd``), so merge / generate / init_from find
    them from any folder. Changes the loaded config only, never the run's files."""
    from omegaconf import OmegaConf

    name = OmegaConf.select(cfg, "model.name_or_path")
    model = isinstance(name, str) and name.startswith(("./", "../")) and not OmegaConf.select(cfg, "model.tiny")
    registry = OmegaConf.select(cfg, "data.dataset_dir")
    registry = registry if isinstance(registry, str) and not Path(registry).expanduser().is_absolute() and (
        OmegaConf.select(cfg, "data.dataset") or OmegaConf.select(cfg, "data.eval_dataset")) else None
    init = OmegaConf.select(cfg, "init_from", default=None)
    init = init if isinstance(init, str) and not Path(init).expanduser().is_absolute() else None
    if not model and not registry and not init:
        return
    cwd = started_in(run_dir)
    if cwd is None:
        return
    if model and (cwd / name).is_dir():
        cfg.model.name_or_path = str((cwd / name).resolve())
    if registry and (cwd / registry).exists():
        cfg.data.dataset_dir = str((cwd / registry).resolve())
    if init and (cwd / init).is_dir():  # the run this one started from (ftsweep.stages.init_from)
        cfg.init_from = str((cwd / init).resolve())


def started_in(run_dir: str | Path) -> Path | None:
    """The folder the run was started from (Hydra records it: ``hydra.runtime.cwd``), None when unknown."""
    from omegaconf import OmegaConf

    try:
        cwd = OmegaConf.select(OmegaConf.load(RunDir(run_dir).path / ".hydra" / "hydra.yaml"), "hydra.runtime.cwd")
    except Exception:  # noqa: BLE001 -- no hydra.yaml / unreadable: the paths stay as written
        return None
    return Path(cwd) if isinstance(cwd, str) else None


def load_overrides(run_dir: str | Path) -> list[str]:
    """The run's task overrides (``.hydra/overrides.yaml``), [] when there are none."""
    from omegaconf import OmegaConf

    path = RunDir(run_dir).overrides
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []
