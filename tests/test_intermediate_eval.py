"""trainer.intermediate_eval_rows: evaluations before the last step score a fixed subset of the validation
rows; the last evaluation, metrics.json's eval_loss and the objective score every row."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import FAST
from transformers import TrainerCallback
from trl import SFTTrainer

from ftsweep.callbacks import IntermediateEvaluations
from ftsweep.config.compose import ConfigFailure
from ftsweep.objectives.evaluator import subset_indices
from ftsweep.train import run


class _Rows(list):
    """A stand-in eval dataset: a list of row numbers with datasets' ``select``."""

    def select(self, indices):
        return _Rows(self[i] for i in indices)


class _FakeTrainer:
    def __init__(self, n: int, persistent_workers: bool = False):
        self.eval_dataset = _Rows(range(n))
        self.state = SimpleNamespace(global_step=0, max_steps=0)
        self.args = SimpleNamespace(dataloader_persistent_workers=persistent_workers)
        self.seen: list[tuple[int, list[int]]] = []

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        rows = self.eval_dataset if eval_dataset is None else eval_dataset
        self.seen.append((self.state.global_step, list(rows)))
        return {}


@pytest.mark.parametrize("persistent_workers", [False, True])  # the subset as the trainer's split, or passed
def test_only_evaluations_inside_training_before_the_last_step_score_the_subset(persistent_workers):
    trainer = _FakeTrainer(20, persistent_workers)
    chosen = subset_indices(20, 5, 0)
    cb = IntermediateEvaluations(trainer, chosen)
    args = state = control = None
    trainer.evaluate()  # before training (the initial evaluation): every row
    cb.on_train_begin(args, state, control)
    trainer.state.max_steps = 30
    for step in (10, 20, 30):  # in the loop; step 30 is the last
        trainer.state.global_step = step
        trainer.evaluate()
    cb.on_train_end(args, state, control)
    trainer.evaluate()  # after training: every row
    every = list(range(20))
    assert trainer.seen == [(0, every), (10, chosen), (20, chosen), (30, every), (30, every)]
    assert cb.subset_steps == {10, 20} and cb.rows == 5 and len(set(chosen)) == 5
    assert trainer.eval_dataset == every  # the split is the trainer's again after each subset evaluation


def test_stopped_early_inside_training_the_last_subset_evaluation_is_not_the_final_one():
    trainer = _FakeTrainer(10)
    cb = IntermediateEvaluations(trainer, [1, 3])
    cb.on_train_begin(None, None, None)
    trainer.state.global_step, trainer.state.max_steps = 4, 12
    trainer.evaluate()
    cb.on_train_end(None, None, None)  # early stopping / a callback ended training at step 4
    trainer.evaluate()
    assert trainer.seen == [(4, [1, 3]), (4, list(range(10)))]
    assert cb.subset_steps == {4}


def test_the_subset_changes_intermediate_values_only(compose, tmp_path):
    base = [*FAST, "trainer.max_steps=6", "trainer.eval_steps=2"]
    full = run(compose(*base), tmp_path / "full")
    prepared = []  # trl prepares the splits it is given at init; the subset is taken from the prepared split
    prepare = SFTTrainer._prepare_dataset
    with pytest.MonkeyPatch.context() as m:
        m.setattr(SFTTrainer, "_prepare_dataset", lambda self, ds, *a: prepared.append(a[-1]) or prepare(self, ds, *a))
        limited = run(compose(*base, "trainer.intermediate_eval_rows=3"), tmp_path / "limited")
    assert prepared == ["train", "eval"]
    # training does not depend on which rows are evaluated: the last (every-row) evaluation is equal, bitwise
    for key in ("train_loss", "eval_loss", "eval_mean_token_accuracy", "initial_eval_loss", "objective"):
        assert limited[key] == full[key], key
    assert limited["intermediate_eval_rows"] == 3 and "intermediate_eval_rows" not in full
    assert [h.get("rows") for h in limited["eval_history"]] == [None, 3, 3, None]
    assert [h["step"] for h in limited["eval_history"]] == [0, 2, 4, 6]
    assert limited["eval_history"][-1] == full["eval_history"][-1]
    assert limited["eval_history"][1]["eval_loss"] != full["eval_history"][1]["eval_loss"]
    assert json.loads((tmp_path / "limited" / "metrics.json").read_text())["eval_history"] == limited["eval_history"]


class _StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_training_stopped_on_a_subset_evaluation_still_ends_with_every_row(compose, tmp_path):
    cfg = compose(*FAST, "trainer.max_steps=12", "trainer.eval_steps=2", "trainer.intermediate_eval_rows=3")
    out = run(cfg, tmp_path / "r", callbacks=[_StopAt(4)])
    assert out["status"] == "complete" and out["train_steps"] == 4
    history = json.loads((tmp_path / "r" / "log_history.json").read_text())
    at4 = [h["eval_loss"] for h in history if h.get("step") == 4 and "eval_loss" in h]
    assert len(at4) == 2  # the loop's subset evaluation, then the final one on every row
    assert out["eval_loss"] == out["objective"] == at4[1] != at4[0]
    assert out["eval_history"][-1] == {"step": 4, "eval_loss": at4[1]}
    assert out["eval_history"][-2] == {"step": 2, "eval_loss": out["eval_history"][-2]["eval_loss"], "rows": 3}


@pytest.mark.parametrize("overrides, message", [
    (["trainer.intermediate_eval_rows=0"], "must be >= 1, or null for every row (got 0)"),
    (["trainer.intermediate_eval_rows=4", "trainer.load_best_model_at_end=true", "trainer.save_steps=6"],
     "load_best_model_at_end would rank checkpoints"),
])
def test_bad_settings_name_the_key(compose, overrides, message):
    with pytest.raises(ConfigFailure) as err:
        compose(*FAST, *overrides)
    assert str(err.value).startswith("trainer.intermediate_eval_rows: ") and message in str(err.value)
