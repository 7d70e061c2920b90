"""Trainer callbacks ftsweep adds to every run: fail on NaN/inf loss, time limit, early stopping, the run's config
and W&B run recorded in each checkpoint."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback


class TrainingFailed(RuntimeError):
    """Training diverged (NaN/inf loss) or ran past its time limit; the message starts with the reason."""


class NanGuard(TrainerCallback):
    """Stop a diverged run at once: a NaN/inf training loss raises (the sweeper records ``nan_loss``)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if self.enabled and loss is not None and (math.isnan(loss) or math.isinf(loss)):
            raise TrainingFailed(f"nan_loss: training loss is {loss} at step {state.global_step}")


class TimeLimit(TrainerCallback):
    """Fail a run that trains longer than ``seconds`` (a stuck or far too slow trial)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.monotonic() - self.start
        if elapsed > self.seconds:
            raise TrainingFailed(f"timeout: training ran {elapsed:.0f} s > trainer.timeout_s={self.seconds:g}")


class EarlyStopping(TrainerCallback):
    """Stop after ``patience`` evaluations without improvement of the objective (watch eval vs train loss).

    Unlike transformers' EarlyStoppingCallback this needs no checkpointing / load_best_model_at_end.
    """

    def __init__(self, metric: str, direction: str, patience: int):
        self.metric, self.sign, self.patience = metric, (1 if direction == "minimize" else -1), patience
        self.best: float | None = None
        self.bad = 0
        self.stopped_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        if self.best is None or self.sign * value < self.sign * self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                control.should_training_stop = True
                self.stopped_at = state.global_step


class IntermediateEvaluations(TrainerCallback):
    """Evaluations before the last step score a fixed subset of the validation rows
    (``trainer.intermediate_eval_rows``); the last one, and any evaluation outside training, every row.

    The pruner and early stopping compare values of the same rows (the subset is the same at every step and
    in every trial); the objective is still the whole validation split. Installed by
    :func:`ftsweep.train.build_trainer` over the trainer's own ``evaluate`` (every stage's trainer)."""

    def __init__(self, trainer, indices: list[int]):
        self.subset = trainer.eval_dataset.select(indices)
        self.rows = len(indices)
        self.subset_steps: set[int] = set()  # steps whose evaluation scored the subset
        self.training = False
        self._trainer = trainer
        self._evaluate = trainer.evaluate
        trainer.evaluate = self.evaluate

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        trainer = self._trainer
        state = trainer.state
        if eval_dataset is None and self.training and state.global_step < state.max_steps:
            self.subset_steps.add(state.global_step)
            if trainer.args.dataloader_persistent_workers:  # the trainer keeps its first dataloader per name
                eval_dataset = self.subset
            else:
                # the subset of the already prepared split, as the trainer's own: a dataset passed to evaluate() is
                # prepared again by trl at every call (SFT: a map and a filter; 2.3 of 11 ms per 16-row evaluation on the quickstart)
                full, trainer.eval_dataset = trainer.eval_dataset, self.subset
                try:
                    return self._evaluate(ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
                finally:
                    trainer.eval_dataset = full
        return self._evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False


class RecordCheckpoint(TrainerCallback):
    """Write into each checkpoint as it is saved the run's config and W&B run id: a run resumed from it (by hand, in
    its own folder too, or a crashed sweep's lost trial) compares its settings with the saving run's and continues
    that W&B run instead of starting a second one (:func:`ftsweep.rundir.write_checkpoint_record`)."""

    def __init__(self, cfg, run_id: str | None):
        self.cfg, self.run_id = cfg, run_id

    def on_save(self, args, state, control, **kwargs):
        from pathlib import Path

        from omegaconf import OmegaConf
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from ftsweep.rundir import write_checkpoint_record

        point = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and point.is_dir():  # (the YAML only when saving: no cost to a trial without)
            write_checkpoint_record(point, OmegaConf.to_yaml(self.cfg), self.run_id)
