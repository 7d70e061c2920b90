"""A generation objective during and after training.

The recipe's hook is small: :func:`build_evaluator` returns None for a Trainer metric (eval_loss, ...);
otherwise its :meth:`GenerationEvaluator.callback` scores a fixed, seeded subset of the validation rows
(``objective.max_samples``, the same rows in every trial, so intermediate values are comparable) at every
evaluation and puts the values into the evaluation's metrics, where the pruning callback and early stopping
read them; :meth:`GenerationEvaluator.finish` scores every validation row after training, writes
``predictions.jsonl`` and returns what goes into ``metrics.json`` (the objective, its history, the cost).

Interface other objectives (stages) can reuse: a metric name, a direction, and this evaluator.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from ftsweep import rundir
from ftsweep.config.objective import GENERATION_METRICS, LM_EVAL, is_generation_metric
from ftsweep.objectives.generation import Example, decode_reference, examples_from_dataset, generate_answers
from ftsweep.objectives.metrics import build_scorer


def generation_metrics(objective: Any) -> list[str]:
    """The generation metrics a run computes: the objective's, then ``extra_metrics`` (no duplicates)."""
    names = [objective.metric, *objective.extra_metrics]
    return [m for i, m in enumerate(names) if is_generation_metric(m) and m not in names[:i]]


def build_evaluator(cfg: Any, tokenizer: Any, eval_dataset: Any, model: Any = None,
                    sources: list[str] | None = None, stats: dict[str, Any] | None = None,
                    references: list[list[str] | None] | None = None) -> Any:
    """None when the run computes no generation metric (the Trainer's metrics are the objective);
    objective=lm_eval: the lm-evaluation-harness evaluator (:mod:`ftsweep.objectives.harness`).
    ``sources``: each eval row's file and line (``DataBundle.where("eval")``), written to predictions.jsonl;
    ``stats``: the data statistics (which validation answers truncation cut: said in one line, flagged);
    ``references``: each eval row's acceptable answers (``DataBundle.references("eval")``, data.columns.references;
    None for a row without them): every metric scores the best over the trained answer and these."""
    from ftsweep.memory import generation_batch_size

    unread = references_unread(cfg)
    if unread:
        from ftsweep.console import say

        say(unread)
    if cfg.objective.metric == LM_EVAL:
        from ftsweep.objectives.harness import HarnessEvaluator

        return HarnessEvaluator(cfg, tokenizer)
    if not generation_metrics(cfg.objective) or eval_dataset is None:
        return None
    batch = generation_batch_size(cfg, getattr(model, "config", None))
    evaluator = GenerationEvaluator(cfg.objective, tokenizer, eval_dataset, batch, sources,
                                    (stats or {}).get("eval_answers_cut_where"), references)
    n_cut = (stats or {}).get("n_eval_answers_cut") or 0
    if n_cut:
        from ftsweep.notices import notice

        listed = (stats or {}).get("eval_answers_cut_where") or []
        notice(f"objective: warning: truncation to data.cutoff_len={cfg.data.cutoff_len} cut the answer of {n_cut} of "
               f"{len(evaluator.examples)} validation rows (e.g. {', '.join(listed[:3])}): {cfg.objective.metric} "
               "scores them against the cut answer (reference_cut in predictions.jsonl); raise data.cutoff_len or "
               "set data.overlong=drop")
    return evaluator


def references_unread(cfg: Any) -> str | None:
    """The warning line for ``data.columns.references`` in a run no answer metric scores (eval_loss, lm_eval)."""
    column = cfg.data.columns.references
    if not column or (cfg.objective.metric != LM_EVAL and generation_metrics(cfg.objective)):
        return None
    return (f"warning: data.columns.references={column}: no answer metric reads it (objective.metric="
            f"{cfg.objective.metric}); it counts for {', '.join(GENERATION_METRICS[:-1])} and {GENERATION_METRICS[-1]} "
            "(objective=exact_match, or objective.extra_metrics)")


def subset_indices(n: int, max_samples: int | None, seed: int) -> list[int]:
    """A fixed, seeded choice of ``max_samples`` of ``n`` rows, in row order (all rows when it is null)."""
    if max_samples is None or max_samples >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_samples))


class GenerationEvaluator:
    def __init__(self, objective: Any, tokenizer: Any, eval_dataset: Any, batch_size: int,
                 sources: list[str] | None = None, answers_cut: list[str] | None = None,
                 references: list[list[str] | None] | None = None):
        self.objective = objective
        # each eval row's source ("val.jsonl line 3"): the row index is its place among the kept, split rows
        self.sources = sources
        # the sources of the rows whose answer truncation cut (their reference is the cut answer)
        self.answers_cut = set(answers_cut or [])
        self.tokenizer = tokenizer
        self.metrics = generation_metrics(objective)
        self.scorers = {m: build_scorer(m, objective) for m in self.metrics}
        self.examples: list[Example] = examples_from_dataset(eval_dataset)
        self.references = [decode_reference(tokenizer, e.reference_ids) for e in self.examples]
        # the acceptable answers of each example (data.columns.references): the trained one first, then the row's
        # own (once each); None for a row without them (scored against the trained answer alone)
        self.all_references: list[list[str] | None] = [
            None if not references or references[e.index] is None
            else list(dict.fromkeys([ref, *references[e.index]]))
            for e, ref in zip(self.examples, self.references)]
        self.subset = subset_indices(len(self.examples), objective.max_samples, objective.subset_seed)
        longest = max((len(e.reference_ids) for e in self.examples), default=1)
        self.max_new_tokens = objective.max_new_tokens or longest + objective.new_tokens_margin
        self.batch_size = batch_size
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.rows_generated = 0
        self.n_evals = 0
        self.last: tuple[int, list[int], dict[str, float], list[dict[str, Any]]] | None = None

    # ------------------------------------------------------------------------------------------ scoring
    def evaluate(self, model: Any, indices: list[int]) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Generate for ``indices`` (positions in :attr:`examples`) and score: (values, prediction rows)."""
        started = time.perf_counter()
        chosen = [self.examples[i] for i in indices]
        answers = generate_answers(model, self.tokenizer, chosen, batch_size=self.batch_size,
                                   max_new_tokens=self.max_new_tokens)
        self.seconds += time.perf_counter() - started
        self.rows_generated += len(chosen)
        self.n_evals += 1
        rows = [{"index": e.index, **({"source": self.sources[e.index]} if self.sources else {}),
                 **({"reference_cut": True} if self.sources and self.sources[e.index] in self.answers_cut else {}),
                 "prompt": self.tokenizer.decode(e.prompt_ids), "reference": self.references[i],
                 **({"references": self.all_references[i]} if self.all_references[i] is not None else {}),
                 "prediction": a} for i, e, a in zip(indices, chosen, answers)]
        values = {}
        for m in self.metrics:
            scores = self.scorers[m](rows)
            values[m] = scores.value
            for r, s in zip(rows, scores.rows):
                r.setdefault("scores", {})[m] = s
        return values, rows

    def at_step(self, model: Any, step: int) -> dict[str, float]:
        """The subset's values at ``step`` (computed once per step: a final evaluate() at the last eval step
        reuses them)."""
        if self.last is not None and self.last[0] == step and self.last[1] == self.subset:
            return self.last[2]
        values, rows = self.evaluate(model, self.subset)
        self.last = (step, self.subset, values, rows)
        self.history.append({"step": step, **values, "rows": len(rows)})
        return values

    def callback(self) -> Any:
        from transformers import TrainerCallback

        evaluator = self

        class GenerationObjectiveCallback(TrainerCallback):
            """Adds the generation metrics of the subset to each evaluation's metrics (as ``exact_match``
            and ``eval_exact_match``, which load_best_model_at_end looks up); runs before pruning."""

            def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
                if metrics is None or model is None:
                    return control
                for name, value in evaluator.at_step(model, int(state.global_step)).items():
                    metrics[name] = value
                    metrics[f"eval_{name}"] = value
                return control

        return GenerationObjectiveCallback()

    # ------------------------------------------------------------------------------------------- finish
    def finish(self, model: Any, run_dir: Path, *, pruned: bool, step: int) -> dict[str, Any]:
        """After training: score every row (unless pruned or ``final_all_rows=false``), write
        predictions.jsonl, return the metrics.json entries."""
        everything = list(range(len(self.examples)))
        out: dict[str, Any] = {}
        if pruned or not self.objective.final_all_rows:
            values, rows = (self.last[2], self.last[3]) if self.last else ({}, [])
            final_rows = len(rows)
        elif self.last is not None and self.last[0] == step and self.last[1] == everything:
            values, rows, final_rows = self.last[2], self.last[3], len(everything)
        else:
            values, rows = self.evaluate(model, everything)
            final_rows = len(everything)
        key = "{}_subset" if pruned else "{}"
        out.update({key.format(m): v for m, v in values.items()})
        initial = next((h for h in self.history if h["step"] == 0), None)
        if initial:
            out.update({f"initial_{m}": initial[m] for m in self.metrics})
        out["objective_history"] = self.history
        out["generation_final_rows"] = final_rows
        out["generation_subset_rows"] = len(self.subset)
        out["generation_evals"] = self.n_evals
        out["generation_eval_s"] = round(self.seconds, 3)
        out["generation_rows"] = self.rows_generated
        out["generation_s_per_100_rows"] = round(100 * self.seconds / self.rows_generated, 3) if self.rows_generated else None
        out["generation_max_new_tokens"] = self.max_new_tokens
        out["generation_batch_size"] = self.batch_size
        if self.objective.write_predictions:
            rundir.write_predictions(run_dir, rows)
        return out
