"""QLoRA / 8-bit LoRA on CPU: trains, keeps learning after an evaluation, the adapter saves and reloads."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST

from ftsweep import model as model_mod
from ftsweep.train import run


def _grad_norms_after_first_eval(history: list[dict], first_eval_step: int) -> list[float]:
    return [h["grad_norm"] for h in history if "grad_norm" in h and h["step"] > first_eval_step]


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_kbit_lora_keeps_learning_after_eval_and_reloads(compose, tmp_path, method):
    cfg = compose(*FAST, f"quantization={method}", "trainer.max_steps=12", "trainer.eval_steps=4",
                  "optimizer.lr=2e-3", "optimizer=adamw_8bit", "lora=r16_all_linear")
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "complete"
    assert metrics["eval_loss"] < metrics["initial_eval_loss"]
    history = json.loads((tmp_path / "log_history.json").read_text())
    evals = [h for h in history if "eval_loss" in h]
    assert [e["step"] for e in evals] == [4, 8, 12]  # the eval at the last step is the final one (not repeated)
    assert evals[2]["eval_loss"] < evals[0]["eval_loss"], "no progress after the first evaluation"
    norms = _grad_norms_after_first_eval(history, 4)
    assert norms and all(n > 0 for n in norms), norms  # the bitsandbytes CPU repack bug gives 0.0 here
    assert metrics["peak_memory_mb"] > 0 and metrics["train_tokens_per_s"] > 0

    # reload: a fresh quantized base + the saved adapter reproduces the fine-tuned model's eval loss
    from peft import PeftModel
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "adapter")
    base = model_mod.load_base_for_inference(cfg, tok, quantized=True)
    if method == "nf4":
        assert any(type(m).__name__ == "Linear4bit" for m in base.modules())
    else:
        assert any(type(m).__name__ == "Linear8bitLt" for m in base.modules())
    ids = tok(["### Instruction:\nName three colors.\n\n### Response:\nRed"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        after = tuned(input_ids=ids).logits
    assert torch.isfinite(after).all()
    assert (after - before).abs().max() > 1e-3  # the reloaded adapter is applied
