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


BF16_NF4 = ["quantization=nf4", "quantization.bnb_4bit_compute_dtype=bfloat16", "lora=r16_all_linear"]


def test_qlora_residual_stream_stays_in_the_compute_dtype(compose):
    """No fp32 upcast of norms / embeddings (peft's prepare_model_for_kbit_training did that): every
    decoder layer returns the compute dtype, and only the LoRA weights are fp32."""
    cfg = compose(*FAST, *BF16_NF4, "trainer.gradient_checkpointing=true")
    tok = model_mod.load_tokenizer(cfg)
    model = model_mod.apply_lora(cfg, model_mod.load_model(cfg, tok))
    dtypes = []
    for layer in model.base_model.model.model.layers:
        layer.register_forward_hook(lambda mod, args, out: dtypes.append((out[0] if isinstance(out, tuple) else out).dtype))
    ids = tok(["### Instruction:\nName three colors."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        model(input_ids=ids)
    assert dtypes and set(dtypes) == {torch.bfloat16}, dtypes
    floats = {n: p.dtype for n, p in model.named_parameters() if p.dtype.is_floating_point and "lora_" not in n}
    assert floats and set(floats.values()) == {torch.bfloat16}, {n: d for n, d in floats.items() if d != torch.bfloat16}
    assert {p.dtype for n, p in model.named_parameters() if p.requires_grad} == {torch.float32}  # adapters only
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()  # checkpointing + frozen base: the adapters get gradients
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # lora_B starts at 0, so A's grads are 0


def test_bf16_qlora_keeps_learning_after_eval(compose, tmp_path):
    cfg = compose(*FAST, *BF16_NF4, "trainer.max_steps=12", "trainer.eval_steps=4", "optimizer.lr=2e-3")
    metrics = run(cfg, tmp_path)
    history = json.loads((tmp_path / "log_history.json").read_text())
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert metrics["status"] == "complete" and metrics["eval_loss"] < metrics["initial_eval_loss"]
    assert evals[-1] < evals[0], "no progress after the first evaluation"
    norms = _grad_norms_after_first_eval(history, 4)
    assert norms and all(n > 0 for n in norms), norms  # fix_bnb_cpu_repack still applied
