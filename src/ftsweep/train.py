"""The training recipe: read it top to bottom. Build everything in dependency order, train, evaluate,
save. Knows no Hydra except in :func:`run_from_hydra`.

Run directory after a run:
    .hydra/          the composed config and overrides (written by Hydra)
    metrics.json     train/eval loss, token accuracy, objective, runtime, tokens/s, peak memory, status
    manifest.json    seed, library versions, git commit, data fingerprint, config hash
    adapter/         the LoRA adapter + tokenizer (model/ for a full fine-tune)
    failure.json     only when the run failed: the reason (read by the sweeper)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftsweep.config import ConfigError, validate
from ftsweep.device import peak_memory_mib, peak_rss_mib, pin_single_gpu
from ftsweep.objective import objective_value
from ftsweep.tracking import Tracker, scrub

log = logging.getLogger("ftsweep")


class TrainingFailed(RuntimeError):
    """Training diverged (NaN/inf loss) or ran past its time limit."""


def run_from_hydra(cfg: DictConfig) -> float | None:
    """Hydra task function: run, print the result, return the objective (None when pruned)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    from ftsweep.data.errors import DataError

    try:
        metrics = run(cfg, run_dir)
    except (ConfigError, DataError) as err:  # bad input: one line, exit 2 (the reason is kept for a sweep)
        write_json(run_dir / "failure.json", {"status": "failed", "reason": str(err), "error_type": type(err).__name__})
        print(f"ftsweep: error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        # phase "load": the weights did not fit (a smaller batch cannot help; the sweeper does not retry it)
        write_json(run_dir / "failure.json", {"status": "failed", "reason": failure_reason(err), "error_type": type(err).__name__,
                                              "phase": getattr(err, "ftsweep_phase", "run")})
        traceback.print_exc()
        print(f"ftsweep: run failed: {failure_reason(err)} (see {run_dir})", file=sys.stderr)
        sys.exit(1)
    print(f"ftsweep: {metrics['status']}: {cfg.objective.metric}={metrics.get('objective')} -> {run_dir}")
    return metrics.get("objective")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def failure_reason(err: BaseException) -> str:
    """A one-line reason for a failed run; the prefix classifies it (oom, nan_loss, timeout, error)."""
    text = " ".join(str(err).split())[:500]
    name = type(err).__name__
    if "out of memory" in text.lower() or name == "OutOfMemoryError":
        return f"oom: {name}: {text}"
    if text.startswith(("oom:", "nan_loss", "timeout")):
        return text
    return f"{name}: {text}"


# ------------------------------------------------------------------------------------------ the recipe
def run(cfg: DictConfig, run_dir: str | os.PathLike, callbacks: list | None = None) -> dict[str, Any]:
    """One fine-tuning run. Returns metrics (also written to ``run_dir/metrics.json``)."""
    validate(cfg)  # again: a Python caller may pass a config the CLI never saw
    pin_single_gpu()  # before CUDA starts: trl refuses several visible GPUs without a distributed launcher
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _quiet_libraries()

    from transformers import set_seed

    from ftsweep import data as data_mod
    from ftsweep import model as model_mod

    trial = _trial_context()
    container = OmegaConf.to_container(cfg, resolve=True)
    tracker = Tracker(cfg.logger, run_dir, container, trial)
    # The seed is set before anything random is created (model init for the tiny model, LoRA A, data order).
    set_seed(cfg.trainer.seed)
    try:
        tokenizer = model_mod.load_tokenizer(cfg)
    except OSError as err:  # unknown name, no Hub access, gated model without HF_TOKEN
        raise ConfigError("model.name_or_path", f"cannot load {cfg.model.name_or_path!r}: {_first_line(err)}") from err
    bundle = data_mod.build_datasets(cfg, tokenizer)
    # Fail an infeasible run (trial) now, from the shapes alone, instead of after loading the weights.
    estimate = _memory_preflight(cfg)
    # Measure what the model + training add: restart the RSS high-water mark from the current RSS.
    rss_before_model = _reset_peak_rss()
    set_seed(cfg.trainer.seed)
    try:
        model = model_mod.load_model(cfg, tokenizer)
        model = model_mod.apply_lora(cfg, model)
    except Exception as err:
        err.ftsweep_phase = "load"  # type: ignore[attr-defined]
        raise
    trainable, total = model_mod.count_parameters(model)

    tracker.start()
    metrics: dict[str, Any] = {"status": "failed", "wandb_run_id": tracker.run_id}
    if trial:
        metrics["trial_number"] = trial.get("trial_number")
    exit_code = 1
    try:
        trainer = build_trainer(cfg, model, tokenizer, bundle, run_dir, tracker, callbacks or [])
        initial = trainer.evaluate() if bundle.eval is not None else {}
        started = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - started
        pruner = next((cb for cb in trainer.callback_handler.callbacks if getattr(cb, "pruned", False)), None)
        # The last evaluation is the final one when training ended on an eval step: do not pay for it twice.
        evaluated_last = any(h.get("step") == trainer.state.global_step and "eval_loss" in h for h in trainer.state.log_history)
        final = trainer.evaluate() if bundle.eval is not None and pruner is None and not evaluated_last else {}
        metrics.update(
            collect_metrics(trainer, result, initial, final, bundle, wall, rss_before_model, trainable, total)
        )
        metrics["memory_estimate_mib"] = estimate.get("total_mib") if estimate else None
        metrics["status"] = "complete" if pruner is None else "pruned"
        if pruner is not None:
            metrics["pruned_at_step"] = getattr(pruner, "pruned_at_step", None)
        else:
            metrics["objective"] = objective_value(metrics, cfg.objective.metric)
            save_outputs(cfg, trainer, run_dir)
        is_main = trainer.is_world_process_zero()
        if is_main:  # under DDP (torchrun) only rank 0 writes the run files
            write_json(run_dir / "metrics.json", metrics)
            write_json(run_dir / "log_history.json", trainer.state.log_history)
            write_json(run_dir / "manifest.json", manifest(cfg, bundle))
        tracker.summary({"objective": metrics.get("objective"), "state": metrics["status"].upper(),
                         **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        exit_code = 0
    finally:
        if exit_code:
            tracker.summary({"state": "FAIL"})
        tracker.finish(exit_code)
    # After the run's W&B run is closed: generation logs its answers as a W&B run of its own.
    if is_main and cfg.trainer.generate_after and metrics["status"] == "complete" and cfg.lora.enabled:
        from ftsweep.generate import generate_run

        generate_run(run_dir)
    return metrics


def build_trainer(cfg, model, tokenizer, bundle, run_dir: Path, tracker: Tracker, extra_callbacks: list):
    """SFTConfig from the trainer/optimizer/scheduler groups, plus ftsweep's callbacks."""
    from trl import SFTConfig, SFTTrainer

    from ftsweep.callbacks import EarlyStopping, NanGuard, TimeLimit
    from ftsweep.device import has_cuda, resolve_precision
    from ftsweep.model import OPTIMIZER_NAMES

    t, o, s = cfg.trainer, cfg.optimizer, cfg.scheduler
    precision = resolve_precision(t.precision)
    has_eval = bundle.eval is not None
    warmup = s.warmup_steps if s.warmup_steps > 0 else s.warmup_ratio  # a float < 1 is a ratio in transformers 5
    args = SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        run_name=tracker.cfg.run_name or run_dir.name,
        report_to=tracker.report_to,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_steps=t.max_steps,
        num_train_epochs=t.num_train_epochs,
        learning_rate=o.lr,
        weight_decay=o.weight_decay,
        adam_beta1=o.betas[0],
        adam_beta2=o.betas[1],
        adam_epsilon=o.eps,
        max_grad_norm=o.max_grad_norm,
        optim=OPTIMIZER_NAMES[o.name],
        lr_scheduler_type=s.name,
        warmup_steps=warmup,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps" if t.save_steps > 0 else "no",
        save_steps=t.save_steps if t.save_steps > 0 else 500,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": t.use_reentrant},
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        load_best_model_at_end=t.load_best_model_at_end and has_eval and t.save_steps > 0,
        metric_for_best_model=cfg.objective.metric.removeprefix("eval_"),
        greater_is_better=cfg.objective.direction == "maximize",
        max_length=cfg.data.cutoff_len,
        packing=cfg.data.packing and cfg.data.format != "text",
        dataloader_num_workers=t.dataloader_num_workers,
        disable_tqdm=not sys.stderr.isatty(),
        use_cpu=not has_cuda(),
        dataset_num_proc=None,
    )
    callbacks = [NanGuard(enabled=t.fail_on_nan), *extra_callbacks, *_trial_callbacks()]
    if t.timeout_s > 0:
        callbacks.append(TimeLimit(t.timeout_s))
    if t.early_stopping_patience > 0 and has_eval:
        callbacks.append(EarlyStopping(cfg.objective.metric, cfg.objective.direction, t.early_stopping_patience))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=bundle.train,
        eval_dataset=bundle.eval,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return trainer


def collect_metrics(trainer, result, initial, final, bundle, wall, rss_before_model, trainable, total) -> dict[str, Any]:
    """The numbers a run reports: losses, accuracy, speed (non-padding tokens/s) and peak memory."""
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    tokens = max([h.get("num_tokens", 0) for h in history] or [0])
    peak = peak_memory_mib()  # CUDA: max allocated and max reserved; CPU: peak RSS
    out: dict[str, Any] = {
        "train_loss": float(result.training_loss),
        "last_train_loss": train_losses[-1] if train_losses else None,
        "train_runtime": wall,
        "train_steps": trainer.state.global_step,
        "train_tokens": int(tokens),
        "train_tokens_per_s": tokens / wall if wall > 0 else None,
        "trainable_params": trainable,
        "total_params": total,
        "peak_memory_mb": peak["allocated"],
        "peak_memory_reserved_mb": peak["reserved"],
        "peak_rss_mb": peak_rss_mib(),
        "rss_before_model_mb": rss_before_model,
    }
    if initial:
        out["initial_eval_loss"] = initial.get("eval_loss")
    last_eval = final or next((h for h in reversed(history) if "eval_loss" in h), {})
    for key in ("eval_loss", "eval_mean_token_accuracy", "eval_entropy"):
        if key in last_eval:
            out[key] = float(last_eval[key])
    if "eval_loss" in out:
        out["eval_perplexity"] = math.exp(min(out["eval_loss"], 50.0))
    evals = {0: initial.get("eval_loss")} if initial else {}
    evals.update({h["step"]: h["eval_loss"] for h in history if "eval_loss" in h})
    out["eval_history"] = [{"step": step, "eval_loss": loss} for step, loss in sorted(evals.items())]
    out.update({f"data_{k}": v for k, v in bundle.stats.items() if isinstance(v, (int, float, bool))})
    return out


def save_outputs(cfg, trainer, run_dir: Path) -> None:
    """Adapter (or full model) + tokenizer: everything ``ftsweep generate`` / ``merge`` need."""
    target = run_dir / ("adapter" if cfg.lora.enabled else "model")
    # Trainer.save_model writes on rank 0 only (DDP), unwraps the model and saves the tokenizer
    # (processing_class) beside the adapter.
    trainer.save_model(str(target))


# ----------------------------------------------------------------------------------- run bookkeeping
def manifest(cfg: DictConfig, bundle) -> dict[str, Any]:
    """What is needed to tell two runs apart or reproduce one."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "peft", "trl", "bitsandbytes", "optuna", "datasets", "accelerate", "hydra-core"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    resolved = scrub(OmegaConf.to_container(cfg, resolve=True))
    return {
        "seed": cfg.trainer.seed,
        "versions": versions,
        "python": sys.version.split()[0],
        "git_commit": _git_commit(),
        "data_fingerprint": bundle.fingerprint,
        "config_hash": hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16],
        "model": cfg.model.name_or_path,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _git_commit() -> str | None:
    import subprocess

    from ftsweep.paths import PROJECT_ROOT

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename): a killed run never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(scrub(obj), indent=2, default=str))
    tmp.replace(path)


def _memory_preflight(cfg) -> dict[str, Any] | None:
    """The memory estimate, or raise MemoryInfeasible (reason ``oom: estimated ...``) when it cannot fit."""
    from ftsweep.memory import MemoryInfeasible, preflight

    try:
        return preflight(cfg)
    except MemoryInfeasible:
        raise
    except Exception as err:
        log.warning("memory estimate unavailable (%s: %s); training anyway", type(err).__name__, err)
        return None


def _trial_context() -> dict[str, Any] | None:
    if not os.environ.get("FTSWEEP_TRIAL_ID"):
        return None
    from ftsweep.sweeper.trial import trial_context

    return trial_context()


def _trial_callbacks() -> list:
    if not os.environ.get("FTSWEEP_TRIAL_ID"):
        return []
    from ftsweep.sweeper.trial import trial_callbacks

    return trial_callbacks()


def _reset_peak_rss() -> float:
    """Reset this process's peak-RSS mark (Linux ``clear_refs`` 5) and return the current RSS in MiB.

    Without the reset, a spike before the model loads (imports, tokenization) would hide part of the
    model's memory in ``peak_rss_mb - rss_before_model_mb``.
    """
    import psutil

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not permitted: the peak then includes earlier spikes
    return psutil.Process().memory_info().rss / 2**20


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    # bitsandbytes warns at every import on CPU that the optional `kernels` package is missing; its
    # built-in CPU path is what we use (and test), so the warning is noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
