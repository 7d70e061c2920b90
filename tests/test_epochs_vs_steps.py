"""trainer.num_train_epochs next to trainer.max_steps: the shipped trainer trains 40 steps, and transformers lets
max_steps > 0 win, so an epoch count given alone was dropped without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftsweep.errors import ConfigFailure


def _args(cfg):
    from ftsweep.train import build_training_args

    return build_training_args(cfg.trainer, cfg.optimizer, cfg.scheduler, objective=cfg.objective, data=cfg.data,
                               has_eval=True, output_dir=Path("/tmp/unused"), run_name="x", report_to=[])


@pytest.mark.parametrize("epochs", ["3", "0.05"])
def test_an_epoch_count_under_a_step_count_is_refused(compose, epochs):
    with pytest.raises(ConfigFailure, match=rf"^trainer.num_train_epochs: {epochs} would be ignored: "
                                            r"trainer.max_steps=40 wins; .*trainer.max_steps=-1"):
        compose(f"trainer.num_train_epochs={epochs}")


def test_epochs_train_with_max_steps_minus_one_and_steps_alone_as_before(compose):
    args = _args(compose("trainer.num_train_epochs=3", "trainer.max_steps=-1"))
    assert (args.max_steps, args.num_train_epochs) == (-1, 3.0)
    assert _args(compose("trainer.max_steps=12")).max_steps == 12
