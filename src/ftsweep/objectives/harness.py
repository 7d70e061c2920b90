"""objective=lm_eval: lm-evaluation-harness tasks on the in-memory model, adapter active.

The model being trained (a PeftModel) is wrapped as it is in lm_eval's ``HFLM(pretrained=model,
tokenizer=...)``: no save, no reload. ``simple_evaluate`` runs ``objective.tasks`` (``objective.limit``
documents each, ``objective.num_fewshot``) with the cached TaskManager of :mod:`ftsweep.config.harness`;
the first task's ``objective.task_metric`` is the value. After training it is the objective; with
``objective.lm_eval_at_evals=true`` it is also computed at every evaluation (as ``lm_eval`` and
``eval_lm_eval`` in the evaluation's metrics, where pruning, early stopping and the best-model choice read it).

Batch: ``objective.batch_size``, else ``min(8, trainer.per_device_eval_batch_size)``. lm_eval scores a
loglikelihood request with the full-sequence logits (batch x length x vocab), which the memory model's
generation batch (last-position logits only) does not bound, hence the small fixed default.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from typing import Any

from ftsweep.config.errors import ConfigError
from ftsweep.config.objective import LM_EVAL

DEFAULT_BATCH = 8


def lm_eval_batch_size(cfg: Any) -> int:
    if cfg.objective.batch_size:
        return int(cfg.objective.batch_size)
    return max(1, min(DEFAULT_BATCH, int(cfg.trainer.per_device_eval_batch_size)))


def pick_metric(values: dict[str, Any], wanted: str | None) -> tuple[str, float]:
    """(key, value) of ``wanted`` in one task's results ({"acc,none": 0.5, ...}); ``wanted`` is a metric
    name (the first filter that has it) or "metric,filter"; None: the first metric reported."""
    numeric = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and "_stderr" not in k}
    for key, value in numeric.items():
        if wanted is None or key == wanted or key.split(",")[0] == wanted:
            return key, float(value)
    raise ConfigError("objective.task_metric", f"{wanted!r} is not among the task's results: "
                      f"{', '.join(k.split(',')[0] if k.endswith(',none') else k for k in numeric) or 'none'}")


def task_results(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """lm_eval's results per task (and group), numbers only, the filter ",none" dropped from the names."""
    out: dict[str, dict[str, float]] = {}
    for task, values in results.get("results", {}).items():
        out[task] = {k.removesuffix(",none"): float(v) for k, v in values.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "sample_len"}
    return out


class HarnessEvaluator:
    """Same interface as the generation evaluator: :meth:`callback` (at evaluations), :meth:`finish`."""

    def __init__(self, cfg: Any, tokenizer: Any):
        from ftsweep.config.harness import include_folder, needs_defaults, task_manager

        self.objective = cfg.objective
        self.tasks = list(cfg.objective.tasks)
        folder = include_folder(cfg.objective.include_path)
        self.manager = task_manager(folder, needs_defaults(self.tasks, folder))  # cached: validation built it
        # lm_eval sets a pad token / padding side on the tokenizer it is given: the trainer's stays untouched
        self.tokenizer = copy.deepcopy(tokenizer)
        self.batch_size = lm_eval_batch_size(cfg)
        self.seed = int(cfg.trainer.seed)
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.n_evals = 0
        self.last: tuple[int, float, dict[str, dict[str, float]], dict[str, Any]] | None = None

    def evaluate(self, model: Any, *, final: bool) -> tuple[float, dict[str, dict[str, float]], dict[str, Any]]:
        """(objective value, per-task metrics, sample counts) of the model as it is now."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        for name in ("lm_eval", "lm-eval"):
            logging.getLogger(name).setLevel(logging.ERROR)
        limit = self.objective.limit
        if limit is not None and limit >= 1:
            limit = int(limit)
        started = time.perf_counter()
        was_training = model.training
        quiet = not sys.stderr.isatty() and "TQDM_DISABLE" not in os.environ  # no progress bars in a log file
        if quiet:
            os.environ["TQDM_DISABLE"] = "1"
        try:
            lm = HFLM(pretrained=model, tokenizer=self.tokenizer, batch_size=self.batch_size)
            results = lm_eval.simple_evaluate(
                model=lm, tasks=self.tasks, num_fewshot=self.objective.num_fewshot, limit=limit,
                task_manager=self.manager, log_samples=False, bootstrap_iters=100 if final else 0,
                random_seed=self.seed, numpy_random_seed=self.seed, torch_random_seed=self.seed,
                fewshot_random_seed=self.seed)
        finally:
            if quiet:
                os.environ.pop("TQDM_DISABLE", None)
            if was_training:
                model.train()
        self.seconds += time.perf_counter() - started
        self.n_evals += 1
        per_task = task_results(results or {})
        first = (results or {}).get("results", {}).get(self.tasks[0])
        if first is None:
            raise ConfigError("objective.tasks", f"lm_eval returned no results for {self.tasks[0]}")
        _, value = pick_metric(first, self.objective.task_metric)
        samples = {t: dict(v) for t, v in (results or {}).get("n-samples", {}).items()}
        return value, per_task, samples

    def at_step(self, model: Any, step: int) -> float:
        if self.last is not None and self.last[0] == step:
            return self.last[1]
        value, per_task, samples = self.evaluate(model, final=False)
        self.last = (step, value, per_task, samples)
        self.history.append({"step": step, LM_EVAL: value})
        return value

    def callback(self) -> Any:
        from transformers import TrainerCallback

        evaluator = self

        class LmEvalObjectiveCallback(TrainerCallback):
            """Puts the harness value into each evaluation's metrics (``lm_eval`` and ``eval_lm_eval``)
            when objective.lm_eval_at_evals is on; runs before pruning and early stopping."""

            def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
                if metrics is None or model is None or not evaluator.objective.lm_eval_at_evals:
                    return control
                value = evaluator.at_step(model, int(state.global_step))
                metrics[LM_EVAL] = value
                metrics[f"eval_{LM_EVAL}"] = value
                return control

        return LmEvalObjectiveCallback()

    def finish(self, model: Any, run_dir: Any, *, pruned: bool, step: int) -> dict[str, Any]:
        """After training: the tasks on the final model (a pruned run keeps its last evaluation's values)."""
        out: dict[str, Any] = {}
        if pruned:
            if self.last is not None:
                out[f"{LM_EVAL}_subset"] = self.last[1]
                out["lm_eval_results"] = self.last[2]
        else:
            value, per_task, samples = self.evaluate(model, final=True)
            out[LM_EVAL] = value
            out["lm_eval_results"] = per_task
            out["lm_eval_samples"] = samples
        initial = next((h for h in self.history if h["step"] == 0), None)
        if initial:
            out[f"initial_{LM_EVAL}"] = initial[LM_EVAL]
        out["objective_history"] = self.history
        out["lm_eval_tasks"] = self.tasks
        out["lm_eval_task_metric"] = self.objective.task_metric
        out["lm_eval_evals"] = self.n_evals
        out["lm_eval_s"] = round(self.seconds, 3)
        out["lm_eval_batch_size"] = self.batch_size
        return out
