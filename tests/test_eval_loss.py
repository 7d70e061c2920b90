"""eval_loss does not depend on trainer.per_device_eval_batch_size (ftsweep.stages.eval_loss): a sweep ranks
trials by it and halves the eval batch of a trial that ran out of memory. Real tiny-model runs."""

from __future__ import annotations

import pytest
from conftest import FAST

from ftsweep.train import run


def test_sft_eval_loss_is_the_same_whatever_the_eval_batch(compose, tmp_path):
    """Every validation token's loss averaged: 16 rows of different answer lengths in batches of 1 and 16
    (transformers' own mean of per-batch means, before the step: 6.87 at 1 vs 6.54 at 16). The same for
    eval_mean_token_accuracy and eval_entropy (trl's per-batch means before: accuracy 0.0797 at 1 vs 0.0899 at 16)."""
    values, tokens = {}, {}
    batches = (1, 16)
    for batch in batches:
        cfg = compose(*FAST, "data=proxy_tasks", "data.val_size=16", "data.cutoff_len=64", "trainer.max_steps=2",
                      "trainer.eval_steps=2", "scheduler=constant_with_warmup", "scheduler.warmup_steps=0",
                      f"trainer.per_device_eval_batch_size={batch}", "optimizer.lr=1e-2")
        m = run(cfg, tmp_path / f"b{batch}")
        assert m["status"] == "complete", m
        values[batch] = (m["initial_eval_loss"], m["eval_loss"])
        tokens[batch] = (m["eval_mean_token_accuracy"], m["eval_entropy"])
    first = values[batches[0]]
    assert first[1] != first[0]  # the step changed the model: two different values, each batch-free
    for batch, got in values.items():
        assert got == pytest.approx(first, rel=2e-6), (batch, values)
    # trl's token accuracy and entropy: over every validation label token too, not a mean of per-batch fractions
    assert 0 < tokens[1][0] < 1 and tokens[1][1] > 0
    assert tokens[16] == pytest.approx(tokens[1], rel=2e-6), tokens


def test_sft_evaluation_batches_rows_of_similar_length(compose, tmp_path):
    """With one process the validation rows are fed longest first, so a batch holds similar lengths: fewer padded
    token slots than in file order, every row once, and the same eval_loss as one row per batch (no padding)."""
    from transformers import TrainerCallback

    seen = []

    class Record(TrainerCallback):
        def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):
            order = [i for batch in eval_dataloader.batch_sampler for i in batch]
            lengths = [len(r) for r in eval_dataloader.dataset["input_ids"]]
            slots = [sum(b["attention_mask"].numel() for b in eval_dataloader) - sum(lengths)]
            seen.append((order, lengths, slots[0]))

    losses = {}
    for batch in (1, 4):
        cfg = compose(*FAST, "data=alpaca_demo", "data.max_rows=40", "data.val_size=12", "data.cutoff_len=384",
                      "trainer.max_steps=1", "trainer.eval_steps=1", f"trainer.per_device_eval_batch_size={batch}")
        m = run(cfg, tmp_path / f"b{batch}", callbacks=[Record()])
        assert m["status"] == "complete", m
        losses[batch] = m["eval_loss"]
    order, lengths, padded = seen[-1]
    assert sorted(order) == list(range(12))
    fed = [lengths[i] for i in order]
    assert fed == sorted(lengths, reverse=True) and len(set(lengths)) > 3
    in_file_order = sum(max(lengths[i:i + 4]) * len(lengths[i:i + 4]) for i in range(0, 12, 4)) - sum(lengths)
    assert padded < in_file_order / 2, (padded, in_file_order)
    assert losses[4] == pytest.approx(losses[1], rel=2e-6), losses
