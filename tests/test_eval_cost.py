"""Evaluation that outweighs training is said: a large ``data.val_size`` scored at every ``trainer.eval_steps`` of a
short run (the seed 002 preset: a 5% validation split of Alpaca-cleaned scored 5 times against 100 steps of 2
rows) spent most of the run evaluating, without a word."""

from __future__ import annotations

import json

WARNING = "ftsweep: warning: evaluation takes about "
SMALL = ["data.max_rows=60", "data.cutoff_len=64", "logger=none", "trainer.per_device_train_batch_size=2",
         "trainer.per_device_eval_batch_size=8"]


def test_evaluation_heavier_than_training_is_one_warning_with_what_lowers_it(compose, tmp_path, capfd):
    from ftsweep.train import run

    # 30 validation rows scored 5 times (initial, steps 1-3 of 4, final) vs 4 steps of 2 rows
    run(compose(*SMALL, "data.val_size=0.5", "trainer.max_steps=4", "trainer.eval_steps=1"), tmp_path / "heavy")
    err = capfd.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith(WARNING)]
    metrics = json.loads((tmp_path / "heavy" / "metrics.json").read_text())
    n_eval = metrics["data_n_eval"]
    assert n_eval == 30
    assert line.endswith(f"of this run's model work (5 evaluations of {n_eval} validation rows, counted in tokens, vs "
                         "training): lower it with trainer.intermediate_eval_rows=N (a fixed subset for the evaluations "
                         "before the last step), or a larger trainer.eval_steps, or a smaller data.val_size"), line
    share = int(line.removeprefix(WARNING).split("%")[0])
    assert 50 < share < 100
    # with a subset for the evaluations before the last step, the suggestion is not repeated
    run(compose(*SMALL, "data.val_size=0.5", "trainer.max_steps=4", "trainer.eval_steps=1",
                "trainer.intermediate_eval_rows=20"), tmp_path / "subset")
    (line,) = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith(WARNING)]
    assert "intermediate_eval_rows" not in line and int(line.removeprefix(WARNING).split("%")[0]) < share
    # a short run with no evaluation between the first and the last: only fewer validation rows can help
    run(compose(*SMALL, "data.val_size=0.5", "trainer.max_steps=2", "trainer.eval_steps=10"), tmp_path / "short")
    (line,) = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith(WARNING)]
    assert line.endswith(f"(2 evaluations of {n_eval} validation rows, counted in tokens, vs training): lower it "
                         "with a smaller data.val_size"), line


def test_the_eval_token_count_is_exact_and_a_balanced_run_says_nothing(compose, tmp_path, capfd):
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer
    from ftsweep.train import run

    cfg = compose(*SMALL, "data.val_size=0.1", "trainer.max_steps=20", "trainer.eval_steps=10")
    run(cfg, tmp_path / "ok")
    assert WARNING not in capfd.readouterr().err
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    bundle = build_datasets(cfg, load_tokenizer(cfg))
    assert metrics["data_n_eval_tokens"] == sum(len(ids) for ids in bundle.eval["input_ids"]) > 0
