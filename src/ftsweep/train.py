"""The training recipe: read it top to bottom. Build everything in dependency order, train, evaluate,
save. Knows neither Hydra nor the sweeper: callers pass the run directory, extra TrainerCallbacks (a sweep
trial's pruning and heartbeat) and how to name the W&B run.

Run directory after a run (see :mod:`ftsweep.rundir`): metrics.json, manifest.json, log_history.json,
adapter/ (the LoRA adapter + tokenizer; model/ for a full fine-tune), failure.json when the run failed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftsweep import rundir
from ftsweep.config import ConfigError, UsageError, validate
from ftsweep.device import peak_memory_mib, peak_rss_mib, pin_single_gpu, reset_peak_memory
from ftsweep.errors import RunFailed, exit_code
from ftsweep.tracking import RunInfo, Tracker, scrub

log = logging.getLogger("ftsweep")


def execute(cfg: DictConfig, run_dir: str | os.PathLike, callbacks: list | None = None,
            info: RunInfo | None = None, parts: Components | None = None) -> dict[str, Any]:
    """A run as a process's job: train, print the result; on failure record ``failure.json`` and raise
    (bad input: the :class:`UsageError` itself; a failed run: :class:`RunFailed` from the error). The
    entry point prints it and picks the exit code (:func:`ftsweep.errors.report`)."""
    run_dir = Path(run_dir)
    try:
        metrics = run(cfg, run_dir, callbacks, info, parts)
    except UsageError as err:
        if exit_code(err) == 2:  # bad input: one line, exit 2 (the reason is kept for a sweep)
            rundir.record_failure(run_dir, str(err), type(err).__name__)
            raise
        note = rundir.record_failure(run_dir, failure_reason(err), type(err).__name__, "run")  # MemoryInfeasible
        raise RunFailed(f"{failure_reason(err)} (see {run_dir}{note})") from err
    except Exception as err:
        # phase "load": the weights did not fit (a smaller batch cannot help; the sweeper does not retry it)
        note = rundir.record_failure(run_dir, failure_reason(err), type(err).__name__,
                                     getattr(err, "ftsweep_phase", "run"))
        raise RunFailed(f"{failure_reason(err)} (see {run_dir}{note})") from err
    from ftsweep.console import is_main_process

    if is_main_process():  # once under DDP
        print(f"ftsweep: {metrics['status']}: {cfg.objective.metric}={metrics.get('objective')} -> {run_dir}")
    return metrics



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
class Components:
    """Where a run gets its tokenizer, datasets and model: built anew for every run (a cold run).

    A warm sweep worker passes :class:`ftsweep.sweeper.warm.WarmComponents` instead, which keeps them between
    trials whose settings match and hands every trial a fresh adapter.
    """

    def tokenizer(self, cfg):
        from ftsweep.model import load_tokenizer

        return load_tokenizer(cfg)

    def datasets(self, cfg, tokenizer):
        """The stage decides the data columns (SFT: input_ids + labels; DPO: prompt / chosen / rejected ids)."""
        from ftsweep.stages.registry import stage_module

        return stage_module(cfg.stage.name).datasets(cfg, tokenizer)

    def model(self, cfg, tokenizer):
        """The base model, then the adapter (seeded inside ``apply_lora``)."""
        from ftsweep.model import apply_lora

        return apply_lora(cfg, self.base_model(cfg, tokenizer))

    def base_model(self, cfg, tokenizer):
        """The base model, with an ``init_from`` run's adapter merged into its weights."""
        from ftsweep.model import load_model
        from ftsweep.stages.init_from import merge_init_adapter

        return merge_init_adapter(cfg, load_model(cfg, tokenizer))

    def initial_evaluation(self, cfg, trainer) -> dict[str, Any]:
        """The evaluation before the first step (a warm worker may replay a cached, equal one)."""
        return trainer.evaluate()

    def release(self, cfg, model) -> None:
        """After a finished run (the trainer is gone): nothing to keep in a cold run."""


def run(cfg: DictConfig, run_dir: str | os.PathLike, callbacks: list | None = None,
        info: RunInfo | None = None, parts: Components | None = None) -> dict[str, Any]:
    """One fine-tuning run (see :func:`_run`) with ``trainer.num_threads`` applied around it."""
    from ftsweep.numerics import apply_threads

    with apply_threads(cfg.trainer.num_threads):  # CPU numerics depend on it (ftsweep.numerics)
        return _run(cfg, run_dir, callbacks, info, parts)


def _run(cfg: DictConfig, run_dir: str | os.PathLike, callbacks: list | None = None,
         info: RunInfo | None = None, parts: Components | None = None) -> dict[str, Any]:
    """One fine-tuning run. Returns metrics (also written to ``run_dir/metrics.json``).

    Args:
        cfg: the composed train config.
        run_dir: where the run's files go.
        callbacks: extra TrainerCallbacks (a sweep trial passes its pruning and heartbeat callbacks).
        info: how to name the W&B run (group, name, extra config).
        parts: where the tokenizer, data and model come from (default: built anew, :class:`Components`).
    """
    from ftsweep.data.options import resolve_format
    from ftsweep.verbosity import quiet_warnings

    quiet_warnings()  # first: the checks below may import bitsandbytes, which logs a warning at import on CPU
    validate(cfg)  # again: a Python caller may pass a config the CLI never saw
    if resolve_format(cfg):  # data.format=auto: the training file's own format, for every reader below
        validate(cfg)  # what the config allows with that format (a stage that needs answers, ...)
    resume = rundir.checked_resume_point(cfg, run_dir)  # trainer.resume_from_checkpoint, or None
    pin_single_gpu()  # before CUDA starts: trl refuses several visible GPUs without a distributed launcher
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _quiet_libraries()

    from transformers import set_seed

    from ftsweep.config.options import lora_init_changes_base
    from ftsweep.console import is_main_process
    from ftsweep.model import count_parameters, save_initial_adapter

    parts = parts or Components()
    container = OmegaConf.to_container(cfg, resolve=True)
    tracker = Tracker(cfg.logger, run_dir, container, info)
    # The seed is set before anything random is created (model init for the tiny model, LoRA A, data order).
    set_seed(cfg.trainer.seed)
    tokenizer = parts.tokenizer(cfg)
    bundle = parts.datasets(cfg, tokenizer)
    # Fail an infeasible run (trial) now, from the shapes alone, instead of after loading the weights.
    estimate = _memory_preflight(cfg)
    # Measure what the model + training add: restart the RSS high-water mark from the current RSS.
    rss_before_model = reset_peak_memory()
    set_seed(cfg.trainer.seed)
    try:
        model = parts.model(cfg, tokenizer)
    except Exception as err:
        err.ftsweep_phase = "load"  # type: ignore[attr-defined]
        raise
    trainable, total = count_parameters(model)
    if lora_init_changes_base(cfg.lora) and is_main_process():  # PiSSA / OLoRA (save_outputs)
        save_initial_adapter(model, rundir.RunDir(run_dir).initial_adapter)

    tracker.start(resume_run_id=rundir.checkpoint_tracker_run(resume) if resume is not None else None)
    metrics: dict[str, Any] = {"status": "failed", "wandb_run_id": tracker.run_id, "wandb_run_url": tracker.run_url}
    exit_code = 1
    # A generation objective (objective=exact_match, ...) scores generated answers at every evaluation.
    from ftsweep.objectives.evaluator import build_evaluator

    where = getattr(bundle, "where", None)  # each eval row's file and line, for predictions.jsonl
    references = getattr(bundle, "references", None)  # each eval row's acceptable answers (data.columns.references)
    evaluator = build_evaluator(cfg, tokenizer, bundle.eval, model, where("eval") if where else None, bundle.stats,
                                references("eval") if references else None)
    try:
        trainer = build_trainer(cfg, model, tokenizer, bundle, run_dir, tracker, callbacks or [], evaluator)
        if resume is not None:  # trainer.max_steps was checked before anything loaded; epochs need the data
            refuse_epochs_ending_at(cfg, trainer, resume)
        else:
            warn_settings_without_effect(cfg, trainer)
            warn_evaluation_cost(cfg, trainer, bundle.stats)
        # (resumed too: the fresh adapter's evaluation is the saving run's first; train() then restores the
        # checkpoint's adapter, optimizer, scheduler, random state and data position)
        initial = parts.initial_evaluation(cfg, trainer) if bundle.eval is not None else {}
        ready_for_ddp(trainer)
        if resume is not None:
            from ftsweep.console import say

            say(f"resuming from {resume} (step {rundir.checkpoint_step(resume)})")
            changed = rundir.resume_changes(cfg, resume)
            if changed:
                say(f"resuming with other settings than the run that saved it: {', '.join(changed)}")
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        wall = time.perf_counter() - started
        pruner = next((cb for cb in trainer.callback_handler.callbacks if getattr(cb, "pruned", False)), None)
        # The last evaluation is the final one when training ended on an eval step: do not pay for it twice
        # (unless it scored the intermediate subset: training stopped early on it).
        limited = intermediate_evaluations(trainer)
        step = trainer.state.global_step
        evaluated_last = (any(h.get("step") == step and "eval_loss" in h for h in trainer.state.log_history)
                          and not (limited and step in limited.subset_steps))
        final = trainer.evaluate() if bundle.eval is not None and pruner is None and not evaluated_last else {}
        metrics.update(
            collect_metrics(trainer, result, initial, final, bundle, wall, rss_before_model, trainable, total,
                            resumed_at=rundir.checkpoint_step(resume) if resume is not None else 0)
        )
        if evaluator is not None:  # after training: every validation row, predictions.jsonl, the cost
            metrics.update(evaluator.finish(trainer.model, run_dir, pruned=pruner is not None,
                                            step=trainer.state.global_step))
        metrics["memory_estimate_mib"] = estimate.get("total_mib") if estimate else None
        metrics["status"] = "complete" if pruner is None else "pruned"
        if pruner is not None:
            metrics["pruned_at_step"] = getattr(pruner, "pruned_at_step", None)
        else:
            metrics["objective"] = objective_value(metrics, cfg.objective.metric)
            save_outputs(cfg, trainer, run_dir)
        if trainer.is_world_process_zero():  # under DDP (torchrun) only rank 0 writes the run files
            rundir.write_metrics(run_dir, metrics)
            rundir.write_log_history(run_dir, trainer.state.log_history)
            rundir.write_manifest(run_dir, manifest(cfg, bundle))
            if cfg.trainer.plot_loss:
                from ftsweep.loss_plot import plot_loss

                plot_loss(trainer.state.log_history, run_dir)
            if evaluator is not None:  # the answers as a W&B table (logger=wandb only)
                tracker.log_predictions(rundir.read_predictions(run_dir), cfg.objective.metric)
        tracker.summary({"objective": metrics.get("objective"), "state": metrics["status"].upper(),
                         **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        exit_code = 0
    finally:
        if exit_code:
            tracker.summary({"state": "FAIL"})
        tracker.finish(exit_code)
        forget_optimizer_overrides(model)
    del trainer
    parts.release(cfg, model)
    return metrics


def epoch_steps(trainer) -> tuple[int, int] | None:
    """(optimizer steps ``trainer.train()`` will run to, steps an epoch) when ``trainer.max_steps`` is -1 and the
    training rows have a length: transformers' own count over the training dataloader (rows after packing, batch,
    gradient accumulation, processes); None otherwise."""
    if trainer.args.max_steps > 0:
        return None
    try:
        values = trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())
    except (AttributeError, TypeError, ValueError):  # no length (a stream), or another transformers
        return None
    return values[-1], values[1]


def refuse_epochs_ending_at(cfg, trainer, resume: Path) -> None:
    """A resume whose ``trainer.num_train_epochs`` come to no more steps than the checkpoint saved would train
    nothing and report a train_loss of 0.0 as complete: one line, exit 2 (as ``trainer.max_steps`` is, before
    anything loads: :func:`ftsweep.rundir.resume_problem`)."""
    counted = epoch_steps(trainer)
    step = rundir.checkpoint_step(resume)
    if counted is not None and step >= counted[0]:
        raise UsageError(f"{rundir.RESUME_KEY}: {resume} is at step {step}: trainer.num_train_epochs="
                         f"{cfg.trainer.num_train_epochs:g} is {counted[0]} steps here ({counted[1]} an epoch), which "
                         "leaves nothing to train (raise trainer.num_train_epochs)")


def warn_settings_without_effect(cfg, trainer) -> None:
    """Settings that cannot act in a run of this length (its optimizer steps: ``trainer.max_steps``, or transformers'
    count of the epochs), one warning line each:

    - one optimizer step with a warmup (``trainer.max_steps=1``, or epochs of one batch: a training set no larger
      than the batch) is taken at learning rate 0 (transformers' warmup starts at 0 and rounds a ratio up to a whole
      step), so it trains nothing and its eval_loss is the initial one;
    - ``trainer.early_stopping_patience`` larger than the evaluations before the last step can never stop the run
      early (e.g. ``trainer.eval_steps`` >= ``trainer.max_steps``)."""
    from ftsweep.console import say

    s, t = cfg.scheduler, cfg.trainer
    counted = epoch_steps(trainer)
    steps = counted[0] if counted is not None else int(t.max_steps)
    key, value = (("scheduler.warmup_steps", s.warmup_steps) if s.warmup_steps > 0
                  else ("scheduler.warmup_ratio", s.warmup_ratio))
    if steps == 1 and value > 0:
        say(f"warning: the run's only optimizer step is a warmup step at learning rate 0: nothing is trained "
            f"({key}={value:g} of 1 step); set {key}=0, or train more steps")
    patience = int(t.early_stopping_patience)
    if patience > 0 and trainer.args.eval_strategy != "no" and steps > 0:
        before_end = (steps - 1) // int(t.eval_steps)  # evaluations at eval_steps, 2 x eval_steps, ... before the last step
        if before_end < patience:
            say(f"warning: trainer.early_stopping_patience={patience} never stops this run: it evaluates {before_end} "
                f"time(s) before its last step (trainer.eval_steps={t.eval_steps} of {steps} steps); lower "
                "trainer.eval_steps or the patience")


EVAL_SHARE_WARNED = 0.5  # evaluation above this share of a run's forward + backward work is said


def evaluation_share(cfg, trainer, stats: dict[str, Any]) -> tuple[float, int, int, int] | None:
    """(share of the run's model work that evaluation takes, evaluations, validation rows each scores, evaluations
    between the first and the last) from the
    token counts: an evaluation token is one forward pass, a trained token about three (forward + backward; four
    with gradient checkpointing, counted as three: a lower bound). The evaluations: the initial one, one every
    ``trainer.eval_steps`` (before the last step on ``trainer.intermediate_eval_rows`` rows when set) and the
    final one. None without validation rows or token counts (a preference or GRPO stage: its stats differ), or
    for a run of unknown length."""
    t, d = cfg.trainer, cfg.data
    n_train, n_eval = stats.get("n_train") or 0, stats.get("n_eval") or 0
    train_tokens, eval_tokens = stats.get("n_train_tokens"), stats.get("n_eval_tokens")
    counted = epoch_steps(trainer)
    steps = counted[0] if counted is not None else int(t.max_steps)
    if not (n_train and n_eval and train_tokens and eval_tokens and steps > 0) or trainer.args.eval_strategy == "no":
        return None
    args = trainer.args
    rows_a_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    per_row = d.cutoff_len if d.packing else train_tokens / n_train  # a packed row is (about) full
    trained = 3 * steps * rows_a_step * per_row
    before_last = (steps - 1) // int(t.eval_steps)
    subset = min(int(t.intermediate_eval_rows or n_eval), n_eval)
    scored = (2 * n_eval + before_last * subset) * eval_tokens / n_eval  # initial + final + the ones between
    return scored / (scored + trained), before_last + 2, n_eval, before_last


def warn_evaluation_cost(cfg, trainer, stats: dict[str, Any]) -> None:
    """One warning line when evaluation would take more of the run than training does: many validation rows
    (``data.val_size`` of a large file) scored at every ``trainer.eval_steps`` of a short run, which LLaMA-Factory
    and transformers run without a word. Says what lowers it."""
    share = evaluation_share(cfg, trainer, stats)
    if share is None or share[0] <= EVAL_SHARE_WARNED:
        return
    from ftsweep.console import say

    t = cfg.trainer
    fixes = []
    if share[3]:  # evaluations during training: fewer, or on fewer rows (a run with none has only the two)
        fixes += [] if t.intermediate_eval_rows else [("trainer.intermediate_eval_rows=N (a fixed subset for the "
                                                        "evaluations before the last step)")]
        fixes += ["a larger trainer.eval_steps"]
    fixes += ["a smaller data.val_size" if cfg.data.validation_path is None and cfg.data.get("eval_dataset") is None
              else "fewer validation rows"]
    say(f"warning: evaluation takes about {share[0]:.0%} of this run's model work ({share[1]} evaluations of "
        f"{share[2]:,} validation rows, counted in tokens, vs training): lower it with {', or '.join(fixes)}")


def ready_for_ddp(trainer) -> None:
    """After an evaluation before ``train()`` under DDP: let ``train()`` wrap the model in DistributedDataParallel.

    The evaluation prepares the bare model with accelerate for evaluation (no DDP wrapper) and marks it prepared;
    ``train()``'s ``accelerator.prepare`` then returns it as it is, so the ranks' gradients were never averaged:
    each rank trained on its own share of every batch (2 CPU processes: grad norm 1.495 on rank 0, 1.921 on
    rank 1, 1.653 in one process) and rank 0 saved an adapter trained on half the rows."""
    accelerator = getattr(trainer, "accelerator", None)
    model = trainer.model
    if accelerator is None or accelerator.num_processes < 2 or trainer.model_wrapped is not model:
        return
    if getattr(model, "_is_accelerate_prepared", False):
        model._is_accelerate_prepared = False
        accelerator._models[:] = [m for m in accelerator._models if m is not model]


def forget_optimizer_overrides(model) -> None:
    """Drop ``model``'s entries from bitsandbytes' process-wide ``GlobalOptimManager``.

    With an 8-bit optimizer, transformers' ``Trainer`` registers every ``nn.Embedding`` of the model there
    (32-bit state for embeddings) and nothing ever removes them: each run left its embedding alive for the
    life of the process (one ``vocab x hidden`` matrix per trial in a warm worker: 0.5 GiB on a 1B model,
    1 GiB on an 8B one; seen on an H200 as +502 MiB of allocated memory in the next run)."""
    bnb = sys.modules.get("bitsandbytes")  # not imported: no 8-bit optimizer ran in this process
    if bnb is None or model is None:
        return
    mine = {id(m) for m in model.modules()}
    triples = bnb.optim.GlobalOptimManager.get_instance().module_weight_config_triple
    triples[:] = [t for t in triples if id(t[0]) not in mine]


def build_trainer(cfg, model, tokenizer, bundle, run_dir: Path, tracker: Tracker, extra_callbacks: list,
                  evaluator=None):
    """The stage's trainer (SFTTrainer, DPOTrainer, ...) from the model, the datasets, the shared
    trainer/optimizer/scheduler arguments and the callbacks."""
    from ftsweep.stages.lm_head import score_labelled_positions_only
    from ftsweep.stages.registry import stage_module

    has_eval = bundle.eval is not None
    common = training_kwargs(cfg.trainer, cfg.optimizer, cfg.scheduler, objective=cfg.objective, has_eval=has_eval,
                             output_dir=rundir.RunDir(run_dir).checkpoints, run_name=tracker.cfg.run_name or run_dir.name,
                             report_to=tracker.report_to)
    # the generation objective first: early stopping and pruning read the values it adds
    from ftsweep.callbacks import RecordCheckpoint

    callbacks = [*([evaluator.callback()] if evaluator else []), *build_callbacks(cfg.trainer, cfg.objective, has_eval),
                 RecordCheckpoint(cfg, tracker.run_id), *extra_callbacks]
    stage = stage_module(cfg.stage.name)
    score_labelled_positions_only()
    built = stage.trainer(cfg, model, tokenizer, bundle, common, callbacks)
    if cfg.lora.enabled and cfg.lora.loraplus_lr_ratio is not None:
        built.optimizer = loraplus_optimizer(built, cfg.lora.loraplus_lr_ratio)
    built.ftsweep_stage_metrics = stage.METRICS  # what collect_metrics copies from the evaluations
    built.ftsweep_common_eval = stage.COMMON_EVAL_METRICS  # eval_perplexity only where the loss is an LM loss
    limit_intermediate_evaluations(built, cfg.trainer.intermediate_eval_rows, cfg.objective.subset_seed)
    return built


def loraplus_optimizer(trainer, ratio: float):
    """LoRA+ (``lora.loraplus_lr_ratio``): the optimizer the trainer's arguments name (transformers'
    ``get_optimizer_cls_and_kwargs``: AdamW, 8-bit, paged), built by peft's ``create_loraplus_optimizer``: the B
    matrices at lr x ``ratio``, the A matrices at lr, with the arguments' weight decay (peft's default would drop
    it); the trainer keeps an optimizer it is given, and its scheduler scales every group alike."""
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    args = trainer.args
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, trainer.model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    return create_loraplus_optimizer(trainer.model, cls, lr=args.learning_rate, loraplus_lr_ratio=ratio,
                                     loraplus_weight_decay=args.weight_decay, **kwargs)


def limit_intermediate_evaluations(trainer, rows: int | None, seed: int) -> None:
    """``trainer.intermediate_eval_rows``: evaluations before the last step score a fixed, seeded subset of
    that many validation rows (:class:`ftsweep.callbacks.IntermediateEvaluations`); nothing to do when it is
    null or not smaller than the validation split."""
    from datasets import Dataset

    from ftsweep.callbacks import IntermediateEvaluations
    from ftsweep.objectives.evaluator import subset_indices

    data = trainer.eval_dataset
    if rows is None or not isinstance(data, Dataset) or rows >= len(data):
        return
    trainer.add_callback(IntermediateEvaluations(trainer, subset_indices(len(data), rows, seed)))


def intermediate_evaluations(trainer):
    """The trainer's :class:`ftsweep.callbacks.IntermediateEvaluations`, if evaluations use a subset."""
    from ftsweep.callbacks import IntermediateEvaluations

    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, IntermediateEvaluations)), None)


def build_training_args(trainer, optimizer, scheduler, *, objective, data, has_eval: bool, output_dir: Path,
                        run_name: str, report_to: list[str]):
    """``trainer`` + ``optimizer`` + ``scheduler`` groups -> trl ``SFTConfig`` (the data group adds cutoff
    and packing)."""
    from trl import SFTConfig

    common = training_kwargs(trainer, optimizer, scheduler, objective=objective, has_eval=has_eval,
                             output_dir=output_dir, run_name=run_name, report_to=report_to)
    return SFTConfig(**common, max_length=data.cutoff_len, packing=data.packing and data.format != "text")


def training_kwargs(trainer, optimizer, scheduler, *, objective, has_eval: bool, output_dir: Path, run_name: str,
                    report_to: list[str]) -> dict[str, Any]:
    """``trainer`` + ``optimizer`` + ``scheduler`` groups -> the arguments every stage's trl config takes
    (every field is read here or by :func:`build_callbacks`)."""
    from ftsweep.config.options import OPTIMIZERS, SCHEDULERS
    from ftsweep.device import has_cuda, resolve_precision, use_checkpointing

    precision = resolve_precision(trainer.precision)
    checkpointing = checkpointing_field()
    warmup = scheduler.warmup_steps if scheduler.warmup_steps > 0 else scheduler.warmup_ratio  # a float < 1 is a ratio in transformers 5
    return dict(
        output_dir=str(output_dir),
        run_name=run_name,
        report_to=report_to,
        per_device_train_batch_size=trainer.per_device_train_batch_size,
        per_device_eval_batch_size=trainer.per_device_eval_batch_size,
        gradient_accumulation_steps=trainer.gradient_accumulation_steps,
        max_steps=trainer.max_steps,
        num_train_epochs=trainer.num_train_epochs,
        learning_rate=optimizer.lr,
        weight_decay=optimizer.weight_decay,
        adam_beta1=optimizer.betas[0],
        adam_beta2=optimizer.betas[1],
        adam_epsilon=optimizer.eps,
        max_grad_norm=optimizer.max_grad_norm,
        optim=OPTIMIZERS[optimizer.name].trl_name,
        lr_scheduler_type=SCHEDULERS[scheduler.name],
        warmup_steps=warmup,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=trainer.eval_steps,
        save_strategy="steps" if trainer.save_steps > 0 else "no",
        save_steps=trainer.save_steps if trainer.save_steps > 0 else 500,
        save_total_limit=trainer.save_total_limit,
        logging_steps=trainer.logging_steps,
        # A NaN/inf step loss is logged as such, so the NaN guard and lr-find see it (transformers' filter logs
        # it as the running average: 0.0 with logging_steps=1, and a diverged bf16/fp32 run "completed" with
        # NaN weights). fp16 keeps the filter: its grad scaler skips such a step and the weights stay sound.
        logging_nan_inf_filter=precision == "fp16",
        seed=trainer.seed,
        data_seed=trainer.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        **{checkpointing: use_checkpointing(trainer.gradient_checkpointing),
           f"{checkpointing}_kwargs": {"use_reentrant": trainer.use_reentrant}},
        train_sampling_strategy="group_by_length" if trainer.group_by_length else "random",
        load_best_model_at_end=trainer.load_best_model_at_end and has_eval and trainer.save_steps > 0,
        # objective=lm_eval without lm_eval_at_evals has no value at evaluations (transformers looks it up at each)
        metric_for_best_model=(None if objective.metric == "lm_eval" and not objective.lm_eval_at_evals
                               else objective.metric.removeprefix("eval_")),
        greater_is_better=objective.direction == "maximize",
        dataloader_num_workers=trainer.dataloader_num_workers,
        neftune_noise_alpha=trainer.neftune_noise_alpha,
        disable_tqdm=not sys.stderr.isatty(),
        use_cpu=not has_cuda(),
        dataset_num_proc=None,
    )


@functools.cache
def checkpointing_field() -> str:
    """``TrainingArguments``' name for gradient checkpointing: ``activation_checkpointing`` from about
    transformers 5.2x on (``gradient_checkpointing`` kept as a deprecated alias), ``gradient_checkpointing``
    before (5.17, e.g., has no other: passing the new name there is a TypeError)."""
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def build_callbacks(t, objective, has_eval: bool) -> list:
    """ftsweep's own TrainerCallbacks from the ``trainer`` group: NaN guard, time limit, early stopping."""
    from ftsweep.callbacks import EarlyStopping, NanGuard, TimeLimit

    callbacks: list = [NanGuard(enabled=t.fail_on_nan)]
    if t.timeout_s > 0:
        callbacks.append(TimeLimit(t.timeout_s))
    if t.early_stopping_patience > 0 and has_eval:
        callbacks.append(EarlyStopping(objective.metric, objective.direction, t.early_stopping_patience))
    return callbacks


def collect_metrics(trainer, result, initial, final, bundle, wall, rss_before_model, trainable, total,
                    resumed_at: int = 0) -> dict[str, Any]:
    """The numbers a run reports: losses, accuracy, speed (non-padding tokens/s) and peak memory; a run resumed
    from a checkpoint at step ``resumed_at`` reports the tokens, runtime and train_loss of the steps it trained."""
    history = trainer.state.log_history
    train_losses = [h["loss"] for h in history if "loss" in h]
    # trl's running count (SFT), also when no step was logged (logging_steps > max_steps: the logs held none); it
    # restarts on a resume, whose restored log history holds the saving run's larger count: only this run's entries
    tokens = max([h.get("num_tokens", 0) for h in history if h.get("step", 0) > resumed_at]
                 + [getattr(trainer, "_total_train_tokens", 0) or 0])
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
    # A stage's own eval metrics (dpo: eval_rewards/accuracies, eval_logps/chosen, ...), at the end and at step 0.
    for key in getattr(trainer, "ftsweep_stage_metrics", ()):
        if key in last_eval:
            out[key] = float(last_eval[key])
        if key in initial:
            out[f"initial_{key}"] = float(initial[key])
    # exp(eval_loss) is a perplexity only for a language-model loss (SFT), not for DPO's / KTO's loss
    if "eval_loss" in out and "eval_perplexity" in getattr(trainer, "ftsweep_common_eval", ("eval_perplexity",)):
        out["eval_perplexity"] = math.exp(min(out["eval_loss"], 50.0))
    evals = {0: initial.get("eval_loss")} if initial else {}
    evals.update({h["step"]: h["eval_loss"] for h in history if "eval_loss" in h})
    limited = intermediate_evaluations(trainer)
    subset = limited.subset_steps if limited else set()
    if final:  # logged after the loop's evaluation at the same step (training stopped early): every row
        subset = subset - {trainer.state.global_step}
    out["eval_history"] = [{"step": step, "eval_loss": loss, **({"rows": limited.rows} if step in subset else {})}
                           for step, loss in sorted(evals.items())]
    if limited:
        out["intermediate_eval_rows"] = limited.rows
    out.update({f"data_{k}": v for k, v in bundle.stats.items() if isinstance(v, (int, float, bool))})
    return out


def save_outputs(cfg, trainer, run_dir: Path) -> None:
    """Adapter (or full model) + tokenizer: everything ``ftsweep generate`` / ``merge`` need."""
    target = rundir.RunDir(run_dir).saved_model(lora=cfg.lora.enabled)
    # Trainer.save_model writes on rank 0 only (DDP), unwraps the model and saves the tokenizer
    # (processing_class) beside the adapter.
    from ftsweep.data.deploy import deploy_chat_template
    from ftsweep.model import as_loaded

    tok = trainer.processing_class  # the base tokenizer's own context length and padding side, the trained prompt
    with as_loaded(tok, deploy_chat_template(cfg.data, tok)):  # as chat template (vLLM's LoRA, publish)
        trainer.save_model(str(target))
    if cfg.lora.enabled and trainer.is_world_process_zero():
        from ftsweep.config.options import lora_init_changes_base
        from ftsweep.model import carry_added_rows, save_converted_adapter, sort_adapter_config

        model = trainer.accelerator.unwrap_model(trainer.model)
        if lora_init_changes_base(cfg.lora):  # PiSSA / OLoRA: for the original base weights, as all else loads it
            save_converted_adapter(model, target, rundir.RunDir(run_dir).initial_adapter)
        from ftsweep.console import say

        added = carry_added_rows(cfg, model, tok, target)  # frozen rows of added tokens: plain peft loads them too
        if added:
            say(f"adapter: carries the embedding rows of the {len(added)} added token(s) (peft trainable_token_indices), "
                "so a plain PeftModel.from_pretrained gets them too")
        sort_adapter_config(target)  # identical runs, identical adapter_config.json


# ----------------------------------------------------------------------------------- run bookkeeping
def manifest(cfg: DictConfig, bundle) -> dict[str, Any]:
    """What is needed to tell two runs apart or reproduce one."""
    from ftsweep import numerics
    from ftsweep.data.sources import column_map
    from ftsweep.device import resolve_precision

    resolved = scrub(OmegaConf.to_container(cfg, resolve=True))
    return {
        "seed": cfg.trainer.seed,
        "versions": dict(package_versions()),
        "python": sys.version.split()[0],
        "git_commit": _git_commit(),
        "data_fingerprint": bundle.fingerprint,
        "data_format": cfg.data.format,  # as read: data.format=auto resolved (rundir.load_config reads it back)
        "data_columns": column_map(cfg.data),  # as read: with the columns data.format=auto mapped
        "numerics": numerics.record(resolve_precision(cfg.trainer.precision)),  # best.yaml pins num_threads
        "config_hash": hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16],
        "model": cfg.model.name_or_path,
        "notes": scrub(cfg.notes),  # the run's free-form notes (also in the W&B config, with the whole config)
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


MANIFEST_PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "optuna", "datasets", "accelerate",
                     "hydra-core")


@functools.cache
def package_versions() -> dict[str, str | None]:
    """The installed versions of the packages a run depends on (None: not installed), read once per process:
    the code a process runs is the code it imported, and a warm sweep worker's trials would otherwise read the
    same metadata files again in every trial."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for pkg in MANIFEST_PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def _git_commit() -> str | None:
    """The commit of the project the run was started from (the working directory's repository), if any."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def objective_value(metrics: dict[str, Any], metric: str) -> float:
    """The objective from a run's metrics; a missing metric fails with the list of available ones."""
    if metric not in metrics or not isinstance(metrics[metric], (int, float)):
        available = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ConfigError("objective.metric", f"{metric!r} not in this run's metrics; available: {', '.join(available)}")
    value = float(metrics[metric])
    if math.isnan(value) or math.isinf(value):
        raise FloatingPointError(f"nan_loss: objective {metric} is {value}")
    return value


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




def _quiet_libraries() -> None:
    from ftsweep.verbosity import quiet_libraries

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    quiet_libraries()  # third-party noise filtered at its source unless -v / FTSWEEP_VERBOSE=1
    # bitsandbytes warns at every import on CPU that the optional `kernels` package is missing; its
    # built-in CPU path is what we use (and test), so the warning is noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
