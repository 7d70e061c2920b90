"""GRPO reward functions from config (``stage.rewards``), each with trl's reward-function signature
``f(prompts, completions, **columns) -> list[float]``; the data's answer arrives as ``answer``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ftsweep.config.errors import ConfigError

REWARDS = ("exact_match", "token_f1", "regex", "length_penalty", "function")
NEEDS_ANSWER = ("exact_match", "token_f1")  # compare each completion with the row's answer


def normalize(text: str) -> str:
    """Case, surrounding whitespace and inner runs of whitespace do not count."""
    return " ".join(str(text).split()).lower()


def exact_match(prompts, completions, answer=None, **_: Any) -> list[float]:
    return [float(normalize(c) == normalize(a)) for c, a in zip(completions, answer or [""] * len(completions))]


def token_f1(prompts, completions, answer=None, **_: Any) -> list[float]:
    """Word-level F1 of completion vs answer (SQuAD's partial credit, words compared after :func:`normalize`):
    a dense reward where exact match is sparse, e.g. for a policy that gets most of an answer's words right."""
    from ftsweep.objectives.metrics import f1_of_words

    return [f1_of_words(normalize(c).split(), normalize(a).split())
            for c, a in zip(completions, answer or [""] * len(completions))]


def _regex(pattern: str) -> Callable:
    compiled = re.compile(pattern)

    def regex_format(prompts, completions, **_: Any) -> list[float]:
        return [float(compiled.fullmatch(c.strip()) is not None) for c in completions]

    return regex_format


def _length_penalty(target: int) -> Callable:
    def length_penalty(prompts, completions, completion_ids=None, **_: Any) -> list[float]:
        lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else [len(c) for c in completions]
        return [-max(0, n - target) / target for n in lengths]

    return length_penalty


def import_function(path: str, key: str) -> Callable:
    """``package.module:function`` -> the function (ConfigError naming ``key`` when it cannot be imported); from
    the working directory too, as ``objective.function`` is imported."""
    from ftsweep.config.imports import import_callable

    return import_callable(path, key)


def _checked(func: Callable, key: str) -> Callable:
    """A user reward that returns the wrong number of rewards fails as bad input, naming the reward. As trl
    takes them: any sequence (list, tuple, numpy array, tensor) of numbers, None for a completion it does not score."""
    def reward(prompts, completions, **kwargs: Any) -> list[float | None]:
        out = func(prompts=prompts, completions=completions, **kwargs)
        sized = hasattr(out, "__len__") and hasattr(out, "__iter__") and not isinstance(out, (str, bytes, dict))
        if not sized or len(out) != len(completions):
            got = len(out) if sized else type(out).__name__
            raise ConfigError(key, f"returned {got} rewards for {len(completions)} completions (one per completion)")
        try:
            return [None if v is None else float(v) for v in out]
        except (TypeError, ValueError):
            bad = next(v for v in out if v is not None and not _is_number(v))
            raise ConfigError(key, f"returned {bad!r} as a reward (a number or None per completion)") from None

    reward.__name__ = getattr(func, "__name__", "function")
    return reward


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def build_rewards(specs: Any) -> tuple[list[Callable], list[float]]:
    """``stage.rewards`` -> (reward functions, weights); ConfigError for a bad entry, naming it."""
    if not specs:
        raise ConfigError("stage.rewards", "stage=grpo needs at least one reward (e.g. [{name: exact_match}]); "
                          f"available: {', '.join(REWARDS)}")
    funcs, weights = [], []
    for i, spec in enumerate(specs):
        key = f"stage.rewards.{i}"
        if spec.name == "exact_match":
            func = exact_match
        elif spec.name == "token_f1":
            func = token_f1
        elif spec.name == "regex":
            if not spec.pattern:
                raise ConfigError(f"{key}.pattern", "the regex reward needs a pattern")
            try:
                func = _regex(spec.pattern)
            except re.error as err:
                raise ConfigError(f"{key}.pattern", f"not a regular expression: {err}") from None
        elif spec.name == "length_penalty":
            if not spec.target or spec.target < 1:
                raise ConfigError(f"{key}.target", "the length penalty needs a target length >= 1 (tokens)")
            func = _length_penalty(spec.target)
        elif spec.name == "function":
            if not spec.function:
                raise ConfigError(f"{key}.function", "the function reward needs an import path 'pkg.module:func'")
            func = _checked(import_function(spec.function, f"{key}.function"), f"{key}.function")
        else:
            raise ConfigError(f"{key}.name", f"unknown reward {spec.name!r}; available: {', '.join(REWARDS)}")
        funcs.append(func)
        weights.append(float(spec.weight))
    return funcs, weights
