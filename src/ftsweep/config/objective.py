"""The ``objective`` group: what a run (and a sweep) optimises.

Two kinds of metric share one schema:

- a number the Trainer logs (``eval_loss``, ``eval_mean_token_accuracy``, ...; :data:`KNOWN_METRICS`), as
  before this group existed;
- a generation metric (:data:`GENERATION_METRICS`): the model answers each validation row's prompt (the
  exact prompt tokens it was trained on) and the answer is scored against the row's reference;
- ``lm_eval`` (:data:`LM_EVAL`): lm-evaluation-harness tasks (``objective.tasks``) run on the in-memory model
  with its adapter; the first task's ``objective.task_metric`` is the value (checked by
  :mod:`ftsweep.config.harness`, which imports lm_eval only for this objective).

The checks a type cannot express (metric names, a regex with a group, a user function's import path and
signature) live here, run before any model loads, and raise :class:`ConfigError` naming the key.
Nothing here imports torch.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ftsweep.config.errors import ConfigError
from ftsweep.config.options import DIRECTIONS

# Metric names a run writes to metrics.json (checked at config time so a typo fails before training).
# The ``*_mb`` names are kept for existing studies and reports; their values are MiB (2**20 bytes).
KNOWN_METRICS = (
    "eval_loss",
    "eval_mean_token_accuracy",
    "eval_entropy",
    "eval_perplexity",
    "train_loss",
    "train_runtime",
    "train_tokens_per_s",
    "peak_memory_mb",
    "peak_memory_reserved_mb",
)
# Scored on generated answers (ftsweep.objectives.metrics); each is in [0, 1] except bleu / chrf (0-100).
GENERATION_METRICS = ("exact_match", "contains", "regex", "token_f1", "rouge_l", "bleu", "chrf", "function")
# lm-evaluation-harness tasks (objective=lm_eval; the optional extra ftsweep[eval]).
LM_EVAL = "lm_eval"
# Words in a metric's name that say which way is better (a DPO run's eval_rewards/margins: up; eval_loss: down).
_LOWER_IS_BETTER = ("loss", "perplexity", "entropy", "runtime", "_mb", "rejected")
_HIGHER_IS_BETTER = ("accurac", "reward", "margin", "chosen", "exact_match", "contains", "regex", "f1", "bleu", "rouge",
                     "chrf", "tokens_per_s", LM_EVAL)


def natural_direction(metric: str) -> str | None:
    """The direction the metric is better in, by its name; None when the name does not say (a user function)."""
    name = str(metric).lower()
    if any(word in name for word in _LOWER_IS_BETTER):
        return "minimize"
    if any(word in name for word in _HIGHER_IS_BETTER):
        return "maximize"
    return None


# Words of the metric names whose better direction is beyond doubt (a sweep the other way is refused); an entropy,
# a runtime or a memory figure may be searched either way.
_CERTAIN = ("loss", "perplexity", "accurac", "exact_match", "token_f1", "rouge", "bleu", "chrf")


def certain_direction(metric: str) -> str | None:
    """:func:`natural_direction` for a metric whose better direction is beyond doubt (a loss, a perplexity, an
    accuracy, an answer score), else None."""
    natural = natural_direction(metric)
    return natural if natural and any(w in str(metric).lower() for w in _CERTAIN) else None


# lm-evaluation-harness metrics that are better lower (higher_is_better: false in its registry and task YAMLs).
LM_EVAL_LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "ter", "brier_score")


def lm_eval_direction(task_metric: str | None) -> str:
    """objective=lm_eval's direction: minimize for a lower-is-better ``task_metric`` (``word_perplexity``,
    ``bits_per_byte,none``, ...), else maximize (acc, acc_norm, exact_match, f1, bleu, ...)."""
    name = str(task_metric or "").split(",")[0]
    return "minimize" if name in LM_EVAL_LOWER_IS_BETTER or natural_direction(name) == "minimize" else "maximize"


# Which match of objective.pattern the regex metric takes.
PATTERN_MATCHES = ("first", "last")
# The parameters a user metric function takes (``objective.function=my_pkg.metrics:score``).
FUNCTION_PARAMS = ("prompt", "prediction", "reference", "row")


@dataclass
class NormalizeConfig:
    """How a prediction and a reference are normalised before exact_match / contains / regex compare them."""

    strip: bool = True
    casefold: bool = False
    collapse_whitespace: bool = True
    remove_punctuation: bool = False
    # drop the English articles a / an / the (SQuAD's normalize_answer: all four with casefold and remove_punctuation)
    remove_articles: bool = False


@dataclass
class ObjectiveConfig:
    # A Trainer metric (eval_loss, ...) or a generation metric (exact_match, contains, regex, token_f1, rouge_l, bleu,
    # chrf, function).
    metric: str = "eval_loss"
    # minimize | maximize
    direction: str = "minimize"
    # --- generation metrics only (ignored for Trainer metrics) ---
    # Other generation metrics computed from the same answers and written to metrics.json (no extra cost).
    extra_metrics: list[str] = field(default_factory=list)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    # regex: extracts the answer from prediction and reference (group 1), e.g. "#### (\S+)"; objective=regex_gsm8k:
    # lm-eval's gsm8k strict-match regex "#### (\-?[0-9\.\,]+)".
    pattern: str | None = None
    # regex: which match of the pattern is the answer, in prediction and reference: first | last (lm-eval's gsm8k
    # flexible-extract takes the last number: objective=regex_gsm8k_flexible). A pattern with several groups
    # extracts the first group that matched.
    pattern_match: str = "first"
    # function: "module.path:callable" called as f(prompt=, prediction=, reference=, row=) -> float
    function: str | None = None
    # Rows scored at every evaluation (a fixed, seeded subset, the same in every trial); null = all rows.
    max_samples: int | None = 64
    subset_seed: int = 0
    # Score every validation row after training (the objective); false = the subset's last value.
    final_all_rows: bool = True
    # null: longest tokenized reference + new_tokens_margin.
    max_new_tokens: int | None = None
    new_tokens_margin: int = 8
    # Rows generated together; null = from the memory model (the most rows, up to 64, whose KV cache and
    # prefill fit in the memory training already needs). objective=lm_eval: the harness's batch; null =
    # min(8, trainer.per_device_eval_batch_size) (its loglikelihood requests hold full-sequence logits).
    batch_size: int | None = None
    # Write predictions.jsonl (prompt, reference, prediction, score) for the rows of the last evaluation.
    write_predictions: bool = True
    # --- objective=lm_eval only (lm-evaluation-harness, pip install ftsweep[eval]) ---
    # Task, group or tag names; the first one's task_metric is the objective, all are in metrics.json.
    tasks: list[str] = field(default_factory=list)
    # The metric of the first task (acc, acc_norm, exact_match, ...; "name,filter" picks a filter);
    # null = the first metric the task reports.
    task_metric: str | None = None
    # A folder of the user's own task YAMLs (or one YAML file); its tasks win over lm_eval's own of the same name.
    include_path: str | None = None
    # Documents per task: >= 1 a count, < 1 a fraction; null = all (also at evaluations).
    limit: float | None = None
    # Few-shot examples per task; null = each task's own default.
    num_fewshot: int | None = None
    # Also run the tasks at every evaluation (intermediate values: pruning, early stopping, best model);
    # false = once, after training.
    lm_eval_at_evals: bool = False


def is_generation_metric(metric: str) -> bool:
    return metric in GENERATION_METRICS


def generates(obj: Any) -> bool:
    """Whether a run with this objective generates answers (the objective or an extra metric needs them)."""
    return any(is_generation_metric(m) for m in (obj.metric, *obj.extra_metrics))


def run_metrics(stage_metrics: tuple[str, ...] = (), common_eval: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The Trainer metrics a run writes: :data:`KNOWN_METRICS` (of their ``eval_*`` names only those in
    ``common_eval``, the ones the stage logs; None: all) and the stage's own ``stage_metrics``."""
    known = [m for m in KNOWN_METRICS if common_eval is None or not m.startswith("eval_") or m in common_eval]
    return (*known, *stage_metrics)


def check_objective(obj: Any, *, data_format: str, train_on_prompt: bool, has_validation: bool,
                    stage_metrics: tuple[str, ...] = (), common_eval: tuple[str, ...] | None = None,
                    stage: str = "sft") -> None:
    """One-line :class:`ConfigError` for an objective that cannot run; imports the user function (cheap).
    ``stage_metrics``: what the training stage logs besides the common metrics (dpo: eval_rewards/accuracies);
    ``common_eval``: the common ``eval_*`` metrics it logs (None: all of them)."""
    if obj.direction not in DIRECTIONS:
        raise ConfigError("objective.direction", f"got {obj.direction!r}; allowed: {', '.join(DIRECTIONS)}")
    logged = run_metrics(stage_metrics, common_eval)
    if obj.metric in KNOWN_METRICS and obj.metric not in logged:
        raise ConfigError("objective.metric", f"stage={stage} does not log {obj.metric}; its metrics: {', '.join(logged)}")
    allowed = (*logged, *GENERATION_METRICS, LM_EVAL)
    if obj.metric not in allowed:
        raise ConfigError("objective.metric", f"unknown metric {obj.metric!r}; available: {', '.join(allowed)}")
    for name in obj.extra_metrics:
        if name not in GENERATION_METRICS:
            raise ConfigError("objective.extra_metrics", f"unknown generation metric {name!r}; available: "
                              f"{', '.join(GENERATION_METRICS)}")
    if obj.metric == LM_EVAL:
        from ftsweep.config.harness import check_lm_eval

        check_lm_eval(obj)
    generation = [m for m in (obj.metric, *obj.extra_metrics) if is_generation_metric(m)]
    if not generation:
        return
    key = "objective.metric" if is_generation_metric(obj.metric) else "objective.extra_metrics"
    if data_format == "text":
        raise ConfigError(key, f"{generation[0]} compares answers with references, but data.format=text rows have "
                          "no reference answer; use a Trainer metric such as eval_loss")
    if train_on_prompt:
        raise ConfigError(key, f"{generation[0]} needs to know where the answer starts, but data.train_on_prompt=true "
                          "trains the prompt too; set data.train_on_prompt=false")
    if not has_validation:
        raise ConfigError("data.val_size", f"0 and no data.validation_path leaves no validation rows to generate "
                          f"for objective {generation[0]}; set data.val_size > 0 or data.validation_path")
    if obj.max_samples is not None and obj.max_samples < 1:
        raise ConfigError("objective.max_samples", f"must be >= 1 or null for all rows (got {obj.max_samples})")
    if obj.max_new_tokens is not None and obj.max_new_tokens < 1:
        raise ConfigError("objective.max_new_tokens", f"must be >= 1 or null (got {obj.max_new_tokens})")
    if obj.new_tokens_margin < 0:
        raise ConfigError("objective.new_tokens_margin", f"must be >= 0 (got {obj.new_tokens_margin})")
    if obj.batch_size is not None and obj.batch_size < 1:
        raise ConfigError("objective.batch_size", f"must be >= 1 or null (got {obj.batch_size})")
    if "regex" in generation:
        compile_pattern(obj.pattern)
        if obj.pattern_match not in PATTERN_MATCHES:
            raise ConfigError("objective.pattern_match", f"got {obj.pattern_match!r}; allowed: {', '.join(PATTERN_MATCHES)}")
    if "function" in generation:
        load_function(obj.function)
    if "rouge_l" in generation or "bleu" in generation or "chrf" in generation:
        _check_package(generation)


def compile_pattern(pattern: str | None) -> re.Pattern:
    """The regex metric's pattern: it must compile and have a group (the extracted answer)."""
    if not pattern:
        raise ConfigError("objective.pattern", "the regex metric needs a pattern with a group, e.g. '#### (\\S+)'")
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ConfigError("objective.pattern", f"does not compile: {err} (got {pattern!r})") from None
    if compiled.groups < 1:
        raise ConfigError("objective.pattern", f"needs a group that captures the answer, e.g. '#### (\\S+)' (got {pattern!r})")
    return compiled


def load_function(spec: str | None) -> Callable[..., Any]:
    """``module.path:name`` -> the callable; it must accept prompt, prediction, reference and row."""
    from ftsweep.config.imports import import_callable

    fn = import_callable(spec, "objective.function")  # the working directory too: the user's module
    try:
        inspect.signature(fn).bind(prompt="", prediction="", reference="", row={})
    except TypeError:
        raise ConfigError("objective.function", f"{spec} must accept ({', '.join(FUNCTION_PARAMS)}) as keyword "
                          f"arguments (it has {inspect.signature(fn)})") from None
    return fn


_PACKAGES = {"rouge_l": ("rouge_score", "rouge-score"), "bleu": ("sacrebleu", "sacrebleu"),
             "chrf": ("sacrebleu", "sacrebleu")}


def _check_package(metrics: list[str]) -> None:
    import importlib.util

    for m in metrics:
        if m in _PACKAGES and importlib.util.find_spec(_PACKAGES[m][0]) is None:
            raise ConfigError("objective.metric", f"{m} needs the {_PACKAGES[m][1]} package, which is not installed "
                              f"(pip install {_PACKAGES[m][1]})")
