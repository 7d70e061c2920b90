"""Hydra's ``glob()`` over a config group's options (``lora=glob(r*)``, ``lora=glob(*,exclude=none)``), which
Hydra's basic sweeper expands to the matching options: the sweeper said 'unsupported sweep'. It is a choice of
the matching option names, checked like ``choice(...)``."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution

from ftsweep.sweeper.grammar import SweepInputError, parse_space

OPTIONS = {"lora": ["none", "r16", "r16_all_linear", "r8"]}


def _space(params):
    return parse_space(params, group_options=OPTIONS.get)


def test_glob_is_a_choice_of_the_matching_options():
    assert _space({"lora": "glob(r*)"}).distributions["lora"] == CategoricalDistribution(["r16", "r16_all_linear", "r8"])
    assert _space({"lora": "glob(*,exclude=[none,r16_all_linear])"}).distributions["lora"] == CategoricalDistribution(
        ["r16", "r8"])
    assert "lora" in _space({"lora": "glob(*)"}).groups


def test_glob_that_matches_nothing_or_names_no_group_is_one_line():
    with pytest.raises(SweepInputError, match=r"lora: glob\(q\*\) matches no option of config group lora; "
                                              r"available: none, r16, r16_all_linear, r8"):
        _space({"lora": "glob(q*)"})
    with pytest.raises(SweepInputError, match=r"optimizer.lr: glob\(\) selects options of a config group"):
        _space({"optimizer.lr": "glob(*)"})
