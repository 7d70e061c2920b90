"""A warm worker builds a trial's config from the previous trial's when only sampled values changed
(:class:`ftsweep.config.memo.ComposeMemo`): the result must be the config Hydra composes, node for node."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from ftsweep.config.compose import CONFIG_NAME, ConfigFailure, hydra_session, run_as_multirun_job
from ftsweep.config.memo import ComposeMemo


def _load(loader, overrides):
    from hydra.types import RunMode

    return loader.load_configuration(config_name=CONFIG_NAME, overrides=list(overrides), run_mode=RunMode.MULTIRUN)


def _shape(node, path: str = "") -> list[tuple]:
    """Every node: path, node class, flags and (for a value) its raw value: what YAML text would not show."""
    flags = tuple(node._get_node_flag(f) for f in ("readonly", "struct"))
    out = [(path, type(node).__name__, flags)]
    if isinstance(node, DictConfig | ListConfig):
        if node._is_missing() or node._is_none() or node._is_interpolation():
            return [*out, node._value()]
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for k in keys:
            out += _shape(node._get_node(k), f"{path}.{k}")
    else:
        v = node._value()
        out.append((type(v).__name__, v))
    return out


def _both(memo: ComposeMemo, overrides: list[str], config_dirs=()):
    with hydra_session(config_dirs) as loader:
        via_memo = memo.load(loader, overrides, _load)
    with hydra_session(config_dirs) as loader:
        fresh = _load(loader, overrides)
    return via_memo, fresh


TRIAL = ["sweep=quickstart", "hydra.sweep.dir=/tmp/sweep"]
SEQUENCE = [  # (overrides, reused from the previous trial?)
    ([*TRIAL, "lora=r8", "optimizer.lr=0.004", "hydra.sweep.subdir=trial_0"], False),
    ([*TRIAL, "lora=r8", "optimizer.lr=0.0123", "hydra.sweep.subdir=trial_1"], True),  # values only
    ([*TRIAL, "lora=r16", "optimizer.lr=0.0123", "hydra.sweep.subdir=trial_2"], False),  # a group choice
    ([*TRIAL, "lora=r8", "optimizer.lr=0.02", "hydra.sweep.subdir=trial_2b"], True),  # kept: r8's config
    ([*TRIAL, "lora=r16", "optimizer.lr=1e-5", "hydra.sweep.subdir=trial_3"], True),
    ([*TRIAL, "lora=r16", "optimizer.lr='1e-5'", "hydra.sweep.subdir=trial_4"], False),  # another value type
    ([*TRIAL, "lora=r16", "optimizer.lr='2e-5'", "hydra.sweep.subdir=trial_5"], True),
    ([*TRIAL, "lora=r16", "optimizer.lr=2e-5", "lora.r=4", "hydra.sweep.subdir=trial_6"], False),  # one more
    ([*TRIAL, "lora=r16", "optimizer.lr=3e-5", "lora.r=32", "hydra.sweep.subdir=trial_7"], True),
    ([*TRIAL, "lora=r16", "optimizer.lr=3e-5", "lora.r=8", "+data.extra.tag=a", "hydra.sweep.subdir=trial_8"], False),
    ([*TRIAL, "lora=r16", "optimizer.lr=3e-5", "lora.r=8", "+data.extra.tag=b", "hydra.sweep.subdir=trial_9"], False),
    ([*TRIAL, "lora=r16", "optimizer.lr=3e-5", "lora.r=16", "+data.extra.tag=b", "hydra.sweep.subdir=trial_9"], True),
    ([*TRIAL, "lora=r16", "optimizer.lr=3e-5", "optimizer.lr=4e-5", "hydra.sweep.subdir=trial_10"], False),  # twice
    ([*TRIAL, "lora=r16", "optimizer.lr=3e-5", "optimizer.lr=5e-5", "hydra.sweep.subdir=trial_11"], False),
]


def test_a_config_built_from_the_previous_trials_equals_hydras_node_for_node():
    memo = ComposeMemo()
    reused = 0
    for overrides, expect_reuse in SEQUENCE:
        via_memo, fresh = _both(memo, overrides)
        reused += expect_reuse
        assert memo.reused == reused, overrides
        assert OmegaConf.to_yaml(via_memo) == OmegaConf.to_yaml(fresh), overrides
        assert _shape(via_memo) == _shape(fresh), overrides
    assert reused == 6


def test_a_config_file_changed_on_disk_is_read_again(tmp_path):
    """Same overrides, but the user's config file changed between two trials: composed anew, new content."""
    root = tmp_path / "conf"
    (root / "lora").mkdir(parents=True)
    option = root / "lora" / "mine.yaml"
    option.write_text("defaults:\n  - r16\n  - _self_\nalpha: 7\n")
    memo = ComposeMemo()
    overrides = [*TRIAL, "lora=mine", "optimizer.lr=0.004"]
    first, _ = _both(memo, overrides, [str(root)])
    assert first.lora.alpha == 7
    option.write_text("defaults:\n  - r16\n  - _self_\nalpha: 99\n")
    again, fresh = _both(memo, [*TRIAL, "lora=mine", "optimizer.lr=0.008"], [str(root)])
    assert memo.reused == 0 and again.lora.alpha == fresh.lora.alpha == 99
    third, fresh = _both(memo, [*TRIAL, "lora=mine", "optimizer.lr=0.016"], [str(root)])
    assert memo.reused == 1 and _shape(third) == _shape(fresh)


def test_env_copy_is_read_at_each_trial(monkeypatch):
    memo = ComposeMemo()
    overrides = [*TRIAL, "hydra.job.env_copy=[FTSWEEP_TEST_VALUE]"]
    monkeypatch.setenv("FTSWEEP_TEST_VALUE", "one")
    _both(memo, [*overrides, "optimizer.lr=0.004"])
    monkeypatch.setenv("FTSWEEP_TEST_VALUE", "two")
    via_memo, fresh = _both(memo, [*overrides, "optimizer.lr=0.008"])
    assert memo.reused == 1 and via_memo.hydra.job.env_set.FTSWEEP_TEST_VALUE == "two"
    assert _shape(via_memo) == _shape(fresh)


def test_a_bad_value_gets_hydras_own_error_with_or_without_the_memo(tmp_path):
    """``lora.r=many`` after a good trial: the memo composes anew, so the error is the one a cold trial gets."""
    memo = ComposeMemo()
    base = [*TRIAL, f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=t"]
    run_as_multirun_job([*base, "lora.r=8"], 0, lambda cfg: None, memo=memo)
    errors = []
    for m in (memo, None):
        with pytest.raises(ConfigFailure) as err:
            run_as_multirun_job([*base, "lora.r=many"], 1, lambda cfg: None, memo=m)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "lora.r" in errors[0]
    assert memo.reused == 0


def test_the_memo_keeps_the_most_recent_signatures_only(monkeypatch):
    monkeypatch.setattr(ComposeMemo, "KEEP", 2)
    memo = ComposeMemo()
    for lora in ("r8", "r16", "r16_all_linear"):  # three signatures: r8's is dropped
        _both(memo, [*TRIAL, f"lora={lora}", "optimizer.lr=0.001"])
    _both(memo, [*TRIAL, "lora=r16_all_linear", "optimizer.lr=0.002"])
    _both(memo, [*TRIAL, "lora=r16", "optimizer.lr=0.002"])
    assert memo.reused == 2
    via_memo, fresh = _both(memo, [*TRIAL, "lora=r8", "optimizer.lr=0.002"])
    assert memo.reused == 2 and not memo.hit and _shape(via_memo) == _shape(fresh)


def test_run_folders_under_a_config_root_do_not_defeat_the_memo(tmp_path):
    """--config-dir . in a project whose outputs/ gain .hydra/*.yaml at every trial: still reused; a config
    group file at the depth Hydra reads is still watched."""
    (tmp_path / "lora").mkdir()
    option = tmp_path / "lora" / "mine.yaml"
    option.write_text("defaults:\n  - r16\n  - _self_\nalpha: 7\n")
    memo = ComposeMemo()
    _both(memo, [*TRIAL, "lora=mine", "optimizer.lr=0.001"], [str(tmp_path)])
    trial = tmp_path / "outputs" / "sweeps" / "s" / "trial_0" / ".hydra"
    trial.mkdir(parents=True)
    (trial / "config.yaml").write_text("a: 1\n")
    (tmp_path / "outputs" / "sweeps" / "s" / "deep.yaml").write_text("a: 1\n")  # 3 levels down: not read
    _both(memo, [*TRIAL, "lora=mine", "optimizer.lr=0.002"], [str(tmp_path)])
    assert memo.reused == 1
    option.write_text("defaults:\n  - r16\n  - _self_\nalpha: 9\n")
    via_memo, _ = _both(memo, [*TRIAL, "lora=mine", "optimizer.lr=0.003"], [str(tmp_path)])
    assert memo.reused == 1 and via_memo.lora.alpha == 9
