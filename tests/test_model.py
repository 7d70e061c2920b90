"""Model builders: all-linear resolution, trainable-parameter report, precision, quantization config."""

from __future__ import annotations

import pytest
from conftest import FAST

from ftsweep import model as model_mod

LLAMA_LINEARS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def _model(cfg):
    tok = model_mod.load_tokenizer(cfg)
    return model_mod.load_model(cfg, tok)


def test_all_linear_resolves_to_the_models_linear_layers_and_prints_them(compose, capsys):
    cfg = compose(*FAST, "lora=r16_all_linear")
    base = _model(cfg)
    assert model_mod.linear_module_names(base) == LLAMA_LINEARS  # lm_head excluded, as in seed 004
    lora_cfg = model_mod.build_lora(cfg, base)
    assert sorted(lora_cfg.target_modules) == LLAMA_LINEARS
    peft_model = model_mod.apply_lora(cfg, base)
    err = capsys.readouterr().err
    assert "LoRA targets (all-linear): " + ", ".join(LLAMA_LINEARS) in err
    t = cfg.model.tiny
    kv = t.hidden_size // t.num_attention_heads * t.num_key_value_heads
    shapes = [(t.hidden_size, t.hidden_size)] * 2 + [(t.hidden_size, kv)] * 2 + [(t.hidden_size, t.intermediate_size)] * 2
    shapes += [(t.intermediate_size, t.hidden_size)]
    expected = t.num_hidden_layers * sum(cfg.lora.r * (i + o) for i, o in shapes)
    trainable, total = model_mod.count_parameters(peft_model)
    assert trainable == expected
    assert f"trainable parameters: {expected:,} of {total:,}" in err


def test_memory_estimate_sees_the_same_targets_and_count(compose):
    from ftsweep.memory import estimate

    cfg = compose(*FAST, "lora=r16_all_linear")
    peft_model = model_mod.apply_lora(cfg, _model(cfg))
    est = estimate(cfg)  # from the meta-device model: nothing loaded
    assert est["lora_targets"] == LLAMA_LINEARS
    assert est["trainable_params"] == model_mod.count_parameters(peft_model)[0]


def test_unknown_target_lists_the_real_layers(compose):
    from ftsweep.config import ConfigError

    cfg = compose(*FAST, "lora.target_modules=[q_proj,query_key_value]")
    with pytest.raises(ConfigError, match=r"\['query_key_value'\] not found in the model; its linear layers: \['down_proj'"):
        model_mod.build_lora(cfg, _model(cfg))


def test_four_bit_full_fine_tune_is_refused_at_compose(compose):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match="full fine-tune .* cannot train a nf4-quantized model"):
        compose("quantization=nf4", "lora=none")


def test_precision_and_quantization_follow_the_device(compose):
    import torch

    assert model_mod.resolve_precision("auto") == ("bf16" if model_mod.bf16_supported() else "fp16" if torch.cuda.is_available() else "fp32")
    q = model_mod.build_quantization(compose("quantization=nf4", "quantization.bnb_4bit_quant_storage=bfloat16"))
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_quant_storage == torch.bfloat16
    assert q.bnb_4bit_compute_dtype == model_mod.torch_dtype("auto")
    assert model_mod.build_quantization(compose("quantization=fp4")).bnb_4bit_quant_type == "fp4"
    q8 = model_mod.build_quantization(compose("quantization=int8"))
    assert q8.load_in_8bit and q8.llm_int8_threshold == 6.0
    assert model_mod.build_quantization(compose()) is None


def test_gradient_checkpointing_enables_input_grads_for_lora(compose):
    cfg = compose(*FAST, "trainer.gradient_checkpointing=true")
    peft_model = model_mod.apply_lora(cfg, _model(cfg))
    import torch

    ids = torch.tensor([[1, 2, 3, 4]])
    emb = peft_model.get_input_embeddings()(ids)
    assert emb.requires_grad  # checkpointed layers get a graph back to the adapters
