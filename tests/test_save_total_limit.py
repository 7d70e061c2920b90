"""trainer.save_total_limit: how many of the checkpoints trainer.save_steps writes are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftsweep.errors import ConfigFailure


def _limit(cfg):
    from ftsweep.train import build_training_args

    return build_training_args(cfg.trainer, cfg.optimizer, cfg.scheduler, objective=cfg.objective, data=cfg.data,
                               has_eval=True, output_dir=Path("/tmp/unused"), run_name="x",
                               report_to=[]).save_total_limit


def test_the_newest_two_by_default_every_one_with_null(compose):
    assert _limit(compose("trainer.save_steps=2")) == 2
    assert _limit(compose("trainer.save_steps=2", "trainer.save_total_limit=null")) is None  # transformers: keep all
    assert _limit(compose("trainer.save_steps=2", "trainer.save_total_limit=5")) == 5


def test_zero_is_refused(compose):
    # transformers reads 0 as "no limit": a user asking for none kept would keep every one
    with pytest.raises(ConfigFailure, match=r"^trainer.save_total_limit: must be >= 1 \(got 0\)"):
        compose("trainer.save_total_limit=0")
