"""``ftsweep train data=chat_demo model=tiny`` trains on assistant turns only: the rows SFTTrainer
receives (and the batches it builds) keep our labels, -100 on every system/user/header token."""

from __future__ import annotations

import itertools

from conftest import FAST

import ftsweep.train as train_mod


def test_chat_training_uses_assistant_tokens_only(compose, tmp_path, monkeypatch):
    seen = {}
    original = train_mod.build_trainer

    def capture(*args, **kwargs):
        seen["trainer"] = trainer = original(*args, **kwargs)
        return trainer

    monkeypatch.setattr(train_mod, "build_trainer", capture)
    cfg = compose(
        *FAST, "data=chat_demo", "model.tiny.pretrain_steps=0", "trainer.max_steps=4", "trainer.eval_steps=2"
    )
    metrics = train_mod.run(cfg, tmp_path)
    assert metrics["status"] == "complete"
    trainer = seen["trainer"]
    tok = trainer.processing_class
    assistant_header = tok.convert_tokens_to_ids("<|end_header_id|>")
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        trained = [i for i, lab in enumerate(labels) if lab != -100]
        assert trained, "every row trains something"
        assert all(labels[i] == ids[i] for i in trained)
        # A trained run starts right after "<|start_header_id|>assistant<|end_header_id|>\n\n" and ends with <|eot_id|>.
        runs = _runs(trained)
        for a, b in runs:
            header = tok.decode(ids[:a])
            assert header.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n"), header[-80:]
            assert ids[b] == eot
        assert assistant_header not in [ids[i] for i in trained]
    assert metrics["data_n_trained_tokens"] < metrics["data_n_train_tokens"]


def _runs(idx: list[int]) -> list[tuple[int, int]]:
    runs, start = [], idx[0]
    for prev, cur in itertools.pairwise(idx):
        if cur != prev + 1:
            runs.append((start, prev))
            start = cur
    runs.append((start, idx[-1]))
    return runs


def test_the_data_line_says_why_rows_were_dropped(compose, capfd):
    """data.cutoff_len below a row's prompt: truncate_both can leave a row no answer token; the run's data line said
    only "6 dropped" (ftsweep inspect's said why), now it says which reason dropped how many."""
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    cfg = compose("data.max_rows=40", "data.cutoff_len=8", "data.val_size=0", "objective.metric=train_loss",
                  "model.tiny.pretrain_steps=0")
    bundle = build_datasets(cfg, load_tokenizer(cfg))
    n = bundle.stats["n_dropped_empty_answer"]
    assert n > 0 and bundle.stats["n_train"] == 40 - n
    assert f", {n} dropped (0 over-long, {n} with no answer token left within data.cutoff_len=8), " in capfd.readouterr().err
