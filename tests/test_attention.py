"""Packed batches without cross-example attention: flex_attention is the default attention when SFT
packing is on a GPU; a packed flex forward equals separate forwards; attention choices are validated at
config time (a missing flash_attn is one line naming model.attn_implementation)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST

from ftsweep import model as model_mod


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_packed_flex_attention_forward_matches_separate_forwards(compose, monkeypatch):
    import transformers.masking_utils as masking
    from transformers import AutoModelForCausalLM
    from transformers.integrations import flex_attention as flex_integration
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    # Eager flex attention and block mask: the same mask_mod transformers builds from position_ids, run by
    # PyTorch's reference implementation. Compiling both on CPU (inductor + a C++ compiler) took 16-30 s
    # with a warm inductor cache and minutes on a fresh clone; what is tested here is the mask, not the kernel.
    monkeypatch.setattr(flex_integration.WrappedFlexAttention, "__call__", lambda self: flex_integration.flex_attention)
    compiled_mask = masking.create_block_mask
    monkeypatch.setattr(masking, "create_block_mask", lambda *a, **k: compiled_mask(*a, **{**k, "_compile": False}))
    cfg = compose(*FAST)
    path = model_mod.resolve_model_path(cfg)
    gen = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(300, 1000, (n,), generator=gen).tolist()} for n in (7, 19, 4, 12)]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    flex = AutoModelForCausalLM.from_pretrained(path, attn_implementation="flex_attention").eval()
    sdpa = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    with torch.no_grad():  # PyTorch has no flex_attention backward on CPU; the forward is the same kernel logic
        packed = flex(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for r in rows:
            n = len(r["input_ids"])
            alone = sdpa(input_ids=torch.tensor([r["input_ids"]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, rtol=1e-4, atol=1e-5)
            start += n


def test_packing_on_a_gpu_defaults_to_flex_attention(compose, monkeypatch):
    gpu = compose("model=llama3_8b", "data.packing=true")
    assert gpu.model.attn_implementation is None  # shipped options leave the choice to ftsweep
    assert model_mod.attention_implementation(gpu) is None  # this CPU: sdpa (transformers' default)
    monkeypatch.setattr(model_mod, "has_cuda", lambda: True)
    assert model_mod.attention_implementation(gpu) == "flex_attention"
    assert model_mod.attention_implementation(compose("model=llama3_8b")) is None  # no packing: sdpa
    assert model_mod.attention_implementation(compose("model=llama3_8b", "data.packing=true",
                                                      "model.attn_implementation=sdpa")) == "sdpa"  # the user's choice wins


def test_attention_needing_a_package_or_a_gpu_is_refused_at_compose(compose):
    import importlib.util

    from ftsweep.config.compose import ConfigFailure

    assert importlib.util.find_spec("flash_attn") is None  # not installed here
    with pytest.raises(ConfigFailure, match="^model.attn_implementation: flash_attention_2 needs the flash_attn package"):
        compose("model.attn_implementation=flash_attention_2")
    with pytest.raises(ConfigFailure, match="^model.attn_implementation: flex_attention cannot train on CPU"):
        compose("model.attn_implementation=flex_attention")
