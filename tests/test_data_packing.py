"""SFT packing (trl's padding-free collator on our rows): every token and label kept, and a packed
forward gives the same per-example logits as separate forwards (attention never crosses examples)."""

from __future__ import annotations

import json

import pytest
import torch

from ftsweep.data import IGNORE_INDEX, build_datasets
from ftsweep.data.packing import padding_fraction
from ftsweep.model import load_tokenizer, resolve_model_path

NO_PRETRAIN = "model.tiny.pretrain_steps=0"


@pytest.fixture
def rows_and_cfg(compose, tmp_path):
    path = tmp_path / "c.jsonl"
    convs = [
        [("user", "hi"), ("assistant", "hello there")],
        [("user", "What is 2 + 2?"), ("assistant", "4"), ("user", "and 3 + 3?"), ("assistant", "It is 6.")],
        [("system", "be brief"), ("user", "Name a color."), ("assistant", "Blue.")],
    ]
    path.write_text(
        "".join(json.dumps({"messages": [{"role": r, "content": c} for r, c in m]}) + "\n" for m in convs)
    )
    cfg = compose(
        f"data.path={path}",
        "data.format=chat",
        "data.val_size=0",
        "objective.metric=train_loss",
        "data.shuffle=false",
        NO_PRETRAIN,
    )
    tok = load_tokenizer(cfg)
    return [dict(r) for r in build_datasets(cfg, tok).train], cfg, tok


def test_packed_batch_keeps_tokens_and_labels(rows_and_cfg):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows, _, tok = rows_and_cfg
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    assert batch["input_ids"][0].tolist() == [t for r in rows for t in r["input_ids"]]
    assert batch["labels"][0].tolist() == [
        lab for r in rows for lab in r["labels"]
    ]  # row starts are masked already
    assert batch["position_ids"][0].tolist() == [p for r in rows for p in range(len(r["input_ids"]))]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_forward_matches_separate_forwards(rows_and_cfg, attn):
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows, cfg, tok = rows_and_cfg
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg), attn_implementation=attn).eval()
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
        start = 0
        for r in rows:
            n = len(r["input_ids"])
            alone = model(input_ids=torch.tensor([r["input_ids"]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, rtol=1e-4, atol=1e-5)
            start += n


def test_padding_fraction():
    # batches [4, 2] and [3]: padding (0 + 2) + 0 over processed 8 + 3 tokens
    assert padding_fraction([4, 2, 3], batch_size=2) == pytest.approx(2 / 11)
    assert padding_fraction([], batch_size=2) == 0.0
    assert IGNORE_INDEX == -100
