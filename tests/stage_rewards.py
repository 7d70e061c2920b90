"""User reward functions for the GRPO tests (imported by path: stage.rewards=[{name: function, function: ...}])."""


def first_word_is_answer(prompts, completions, answer=None, **kwargs):
    return [float(c.split()[:1] == a.split()[:1]) for c, a in zip(completions, answer)]


def one_too_few(prompts, completions, **kwargs):
    return [0.0] * (len(completions) - 1)


def answer_is_the_row_answer(prompts, completions, answer=None, **kwargs):
    """1.0 when the reward got the row's answer (the proxy task's answers are one or more lowercase words)."""
    return [float(isinstance(a, str) and a != "" and a == a.strip().lower()) for a in answer]


def as_numpy(prompts, completions, **kwargs):
    import numpy as np

    return np.array([float(len(c)) for c in completions])


def with_none(prompts, completions, **kwargs):
    return tuple(None if c == "x1" else 1.0 for c in completions)


def as_text(prompts, completions, **kwargs):
    return ["high"] * len(completions)


def solution_reward(completions, solution, difficulty, **kwargs):
    """open-r1 style: another column of the row (``solution``) by name; 1.0 when it is the row's own (the test's
    rows have solution == "s" + output and an integer difficulty)."""
    return [float(s == "s" + a and isinstance(n, int)) for s, a, n in zip(solution, kwargs["answer"], difficulty)]
