"""Option registries (ftsweep/config/options.py): one entry makes a new option valid, built and estimated."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftsweep.config import options
from ftsweep.config.errors import ConfigError
from ftsweep.config.validate import validate


def _args(cfg):
    from ftsweep.train import build_training_args

    return build_training_args(cfg.trainer, cfg.optimizer, cfg.scheduler, objective=cfg.objective, data=cfg.data,
                               has_eval=True, output_dir=Path("/tmp/unused"), run_name="x", report_to=[])


def _with(cfg, key, value):
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def test_a_new_optimizer_is_one_entry(compose, monkeypatch):
    from ftsweep.memory import estimate

    base = compose("model=tiny", "lora=none")  # a full fine-tune: tensors big enough for 8-bit states
    with pytest.raises(ConfigError, match=r"optimizer.name: got 'fake_8bit'; allowed: adamw_torch, adamw_8bit"):
        validate(_with(base, "optimizer.name", "fake_8bit"))
    monkeypatch.setitem(options.OPTIMIZERS, "fake_8bit", options.OptimizerSpec("adafactor", eight_bit=True))
    cfg = _with(base, "optimizer.name", "fake_8bit")
    validate(cfg)  # validated
    assert str(_args(cfg).optim) in ("adafactor", "OptimizerNames.ADAFACTOR")  # built
    est = estimate(cfg, on_cuda=False)  # estimated: 8-bit states like adamw_8bit, not like adamw_torch
    eight = estimate(_with(base, "optimizer.name", "adamw_8bit"), on_cuda=False)
    full = estimate(_with(base, "optimizer.name", "adamw_torch"), on_cuda=False)
    assert est["optimizer_mib"] == eight["optimizer_mib"] < full["optimizer_mib"]


def test_a_new_scheduler_and_precision_come_from_the_registry(compose, monkeypatch):
    base = compose("model=tiny")
    monkeypatch.setitem(options.SCHEDULERS, "fake_sched", "cosine_with_restarts")
    cfg = _with(base, "scheduler.name", "fake_sched")
    validate(cfg)
    assert str(_args(cfg).lr_scheduler_type) in ("cosine_with_restarts", "SchedulerType.COSINE_WITH_RESTARTS")
    with pytest.raises(ConfigError, match="trainer.precision"):
        validate(_with(base, "trainer.precision", "fp8"))


def test_every_shipped_option_file_has_a_registry_entry_and_back():
    from ftsweep.paths import shipped_conf_dir

    for group, table in (("optimizer", options.OPTIMIZERS), ("scheduler", options.SCHEDULERS)):
        names = {OmegaConf.load(p).get("name") for p in (shipped_conf_dir() / group).glob("*.yaml")}
        assert names == set(table), group
