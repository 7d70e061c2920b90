"""Metrics -> the one number a sweep optimises."""

from __future__ import annotations

import math
from typing import Any

from ftsweep.config import ConfigError

# Metric names a run writes to metrics.json (checked at config time so a typo fails before training).
KNOWN_METRICS = (
    "eval_loss",
    "eval_mean_token_accuracy",
    "eval_entropy",
    "eval_perplexity",
    "train_loss",
    "train_runtime",
    "train_tokens_per_s",
    "peak_memory_mb",
)


def check_metric_name(metric: str) -> None:
    if metric not in KNOWN_METRICS:
        raise ConfigError("objective.metric", f"unknown metric {metric!r}; available: {', '.join(KNOWN_METRICS)}")


def objective_value(metrics: dict[str, Any], metric: str) -> float:
    """The objective from a run's metrics; a missing metric fails with the list of available ones."""
    if metric not in metrics or not isinstance(metrics[metric], (int, float)):
        available = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ConfigError("objective.metric", f"{metric!r} not in this run's metrics; available: {', '.join(available)}")
    value = float(metrics[metric])
    if math.isnan(value) or math.isinf(value):
        raise FloatingPointError(f"nan_loss: objective {metric} is {value}")
    return value
