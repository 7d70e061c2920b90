"""trainer.load_best_model_at_end picks among saved checkpoints: without any (save_steps=0, the default) it was
dropped without a word and the run kept its last adapter."""

from __future__ import annotations

import pytest

from ftsweep.errors import ConfigFailure


def test_load_best_without_checkpoints_is_refused(compose):
    with pytest.raises(ConfigFailure, match=r"^trainer.load_best_model_at_end: .*trainer.save_steps"):
        compose("trainer.load_best_model_at_end=true")


def test_load_best_with_checkpoints_composes(compose):
    assert compose("trainer.load_best_model_at_end=true", "trainer.save_steps=20").trainer.load_best_model_at_end


@pytest.mark.parametrize("key, value", [("trainer.early_stopping_patience", "2"),
                                        ("trainer.load_best_model_at_end", "true")])
def test_what_compares_evaluations_needs_validation_rows(compose, key, value):
    # objective=train_loss runs without validation rows: the evaluations these compare never happen
    with pytest.raises(ConfigFailure, match=rf"^{key}: .*data.val_size"):
        compose("data.val_size=0", "objective.metric=train_loss", "trainer.save_steps=10", f"{key}={value}")
    compose("data.val_size=0", "objective.metric=train_loss", "trainer.save_steps=10")
