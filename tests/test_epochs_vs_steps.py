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


WARMUP_ONLY = "is a warmup step at learning rate 0: nothing is trained"


@pytest.mark.parametrize("length", [["trainer.max_steps=1"],  # (ceil(0.03 x 1) = 1 warmup step)
                                    # 36 training rows in one batch of 64: one epoch is one step
                                    ["trainer.max_steps=-1", "trainer.num_train_epochs=1",
                                     "trainer.per_device_train_batch_size=64"]])
def test_a_run_whose_only_step_is_warmup_says_it_trains_nothing(compose, tmp_path, capfd, length):
    from ftsweep.train import run

    small = ["data.max_rows=40", "data.cutoff_len=64", "logger=none", "trainer.eval_steps=100"]
    m = run(compose(*small, *length), tmp_path / "warm")
    err = capfd.readouterr().err
    assert m["train_steps"] == 1 and m["eval_loss"] == m["initial_eval_loss"]  # lr 0 at the only step
    assert (f"ftsweep: warning: the run's only optimizer step {WARMUP_ONLY} (scheduler.warmup_ratio=0.03 of 1 "
            "step); set scheduler.warmup_ratio=0, or train more steps\n") in err
    m = run(compose(*small, *length, "scheduler.warmup_ratio=0"), tmp_path / "cold")
    assert WARMUP_ONLY not in capfd.readouterr().err and m["eval_loss"] != m["initial_eval_loss"]


NEVER_STOPS = "never stops this run: it evaluates"


def test_an_early_stopping_patience_the_run_cannot_reach_says_so(compose, tmp_path, capfd):
    # trainer.early_stopping_patience=1 with eval_steps >= max_steps: no evaluation before the last step, so the run
    # could never stop early, without a word
    from ftsweep.train import run

    small = ["data.max_rows=40", "data.cutoff_len=64", "logger=none", "trainer.early_stopping_patience=1"]
    run(compose(*small, "trainer.max_steps=4", "trainer.eval_steps=4"), tmp_path / "never")
    assert ("ftsweep: warning: trainer.early_stopping_patience=1 never stops this run: it evaluates 0 time(s) before "
            "its last step (trainer.eval_steps=4 of 4 steps); lower trainer.eval_steps or the patience\n"
            ) in capfd.readouterr().err
    run(compose(*small, "trainer.max_steps=4", "trainer.eval_steps=2"), tmp_path / "can")  # one before the last
    assert NEVER_STOPS not in capfd.readouterr().err
