"""``trainer.neftune_noise_alpha`` (NEFTune): noise on the input embeddings while training only, and nothing of it
left on a warm worker's kept base model for the next trial."""

from __future__ import annotations

import pytest
from conftest import FAST

KEYS = ("initial_eval_loss", "train_loss", "eval_loss", "eval_history")


def test_neftune_noises_training_only_and_leaves_the_kept_base_clean(compose, tmp_path):
    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.train import run

    base = [*FAST, "trainer.max_steps=4", "trainer.eval_steps=2"]
    parts = WarmComponents()
    noisy = run(compose(*base, "trainer.neftune_noise_alpha=5"), tmp_path / "noisy", parts=parts)
    kept = parts._base[1]
    embeddings = kept.get_input_embeddings()
    assert not hasattr(embeddings, "neftune_noise_alpha") and not embeddings._forward_hooks
    after = run(compose(*base), tmp_path / "after", parts=parts)  # the next trial on the same base
    plain = run(compose(*base), tmp_path / "plain")  # cold, never noised
    assert {k: after[k] for k in KEYS} == {k: plain[k] for k in KEYS}
    assert noisy["initial_eval_loss"] == plain["initial_eval_loss"]  # no noise at evaluation
    assert noisy["train_loss"] != plain["train_loss"]


def test_neftune_alpha_must_be_positive(compose):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match=r"^trainer.neftune_noise_alpha: must be > 0 \(got 0.0\)"):
        compose("trainer.neftune_noise_alpha=0")
