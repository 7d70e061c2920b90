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
    lora_cfg = model_mod.build_lora(cfg.lora, base)
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
    with pytest.raises(ConfigError, match=r"\['query_key_value'\] not found in the model; its linear layers: \['down_proj'"
                                          r".*\]; its attention's: lora.target_modules=\[q_proj,k_proj,v_proj,o_proj\] "
                                          r"\(or all-linear\)$"):
        model_mod.build_lora(cfg.lora, _model(cfg))


@pytest.mark.parametrize(("kind", "attention"), [("opt", "k_proj,v_proj,q_proj,out_proj"), ("gpt2", "c_attn,c_proj"),
                                                 ("bloom", "query_key_value,dense")])
def test_the_shipped_attention_targets_on_another_family_name_its_own(compose, kind, attention):
    # the shipped LoRA options target q/k/v/o_proj: on OPT (out_proj), GPT-2 or BLOOM the line said which layers
    # exist, not which of them are the attention's
    from ftsweep.config import ConfigError

    with pytest.raises(ConfigError, match=rf"its attention's: lora.target_modules=\[{attention}\] \(or all-linear\)$"):
        model_mod.build_lora(compose(*FAST).lora, _tiny(kind, "eager"))


def test_four_bit_full_fine_tune_is_refused_at_compose(compose):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match="full fine-tune .* cannot train a nf4-quantized model"):
        compose("quantization=nf4", "lora=none")


def test_quantization_builder_reads_every_field(compose):
    """Every field of the quantization schema reaches BitsAndBytesConfig (issue 9: fp4 used to train nf4)."""
    import dataclasses

    import torch

    from ftsweep.config.schema import QuantizationConfig

    changed = compose("quantization=fp4", "quantization.bnb_4bit_use_double_quant=false",
                      "quantization.bnb_4bit_compute_dtype=float16", "quantization.bnb_4bit_quant_storage=bfloat16").quantization
    q = model_mod.build_quantization(changed, "fp32")
    checks = {
        "method": q.load_in_4bit and not q.load_in_8bit,
        "bnb_4bit_quant_type": q.bnb_4bit_quant_type == "fp4",
        "bnb_4bit_use_double_quant": q.bnb_4bit_use_double_quant is False,
        "bnb_4bit_compute_dtype": q.bnb_4bit_compute_dtype == torch.float16,
        "bnb_4bit_quant_storage": q.bnb_4bit_quant_storage == torch.bfloat16,
    }
    q8 = model_mod.build_quantization(compose("quantization=int8", "quantization.llm_int8_threshold=3.5").quantization)
    checks["llm_int8_threshold"] = q8.load_in_8bit and q8.llm_int8_threshold == 3.5
    assert {f.name for f in dataclasses.fields(QuantizationConfig)} == set(checks), "a new field needs a check here"
    assert all(checks.values()), checks
    assert model_mod.build_quantization(compose().quantization) is None
    # compute dtype auto follows the training precision (fp32 on this CPU)
    assert model_mod.build_quantization(compose("quantization=nf4").quantization).bnb_4bit_compute_dtype == torch.float32


def test_contradicting_quant_type_is_refused(compose):
    from ftsweep.config import ConfigError
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match="quantization.bnb_4bit_quant_type: fp4 contradicts quantization.method=nf4"):
        compose("quantization=nf4", "quantization.bnb_4bit_quant_type=fp4")
    unchecked = compose("quantization=nf4", "quantization.bnb_4bit_quant_type=fp4", check=False)
    with pytest.raises(ConfigError, match="contradicts"):
        model_mod.build_quantization(unchecked.quantization)


def test_lora_builder_reads_every_field(compose):
    import dataclasses

    import torch
    from transformers import LlamaForCausalLM

    from ftsweep.config.schema import LoraConfig as LoraSchema
    from ftsweep.tiny import TinySpec, llama_config

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(TinySpec(), 1024))
    lc = compose("lora.r=4", "lora.alpha=32", "lora.dropout=0.1", "lora.target_modules=[q_proj,up_proj]", "lora.bias=all",
                 "lora.modules_to_save=[lm_head]", "lora.use_rslora=true", "lora.use_dora=true", "lora.init=gaussian").lora
    lora = model_mod.build_lora(lc, model)
    checks = {
        "r": lora.r == 4,
        "alpha": lora.lora_alpha == 32,
        "dropout": lora.lora_dropout == 0.1,
        "target_modules": set(lora.target_modules) == {"q_proj", "up_proj"},
        "bias": lora.bias == "all",
        "modules_to_save": list(lora.modules_to_save) == ["lm_head"],
        "use_rslora": lora.use_rslora is True,
        "use_dora": lora.use_dora is True,
        "init": lora.init_lora_weights == "gaussian",
        "enabled": model_mod.build_lora(compose("lora=none").lora, model) is None,
        # the optimizer's, not the adapter's: read by ftsweep.train.build_trainer (tests/test_loraplus.py)
        "loraplus_lr_ratio": True,
    }
    assert {f.name for f in dataclasses.fields(LoraSchema)} == set(checks), "a new field needs a check here"
    assert all(checks.values()), checks


def test_model_builders_read_every_field(compose, monkeypatch, tmp_path):
    """model.* reaches from_pretrained (path, revision, dtype, attention, remote code), the tokenizer
    (pad policy, pad token, padding side), validation (max_context) or the tiny builder (tiny)."""
    import dataclasses

    import torch
    import transformers

    from ftsweep.config import ConfigError
    from ftsweep.config.schema import ModelConfig

    seen = {}

    def fake_from_pretrained(path, **kwargs):
        seen.update(kwargs, path=path)
        raise RuntimeError("stop")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    (tmp_path / "config.json").write_text("{}")  # a model folder (an empty one is refused before loading)
    cfg = compose("model=qwen2_5_0_5b_instruct", f"model.name_or_path={tmp_path}", "model.revision=abc123",
                  "model.dtype=float16", "model.attn_implementation=eager", "model.trust_remote_code=true")
    with pytest.raises(RuntimeError, match="stop"):
        model_mod._from_pretrained(cfg, None)
    tiny = compose("model.padding_side=left", "model.pad_policy=reserved", "model.pad_token='<|reserved_special_token_7|>'")
    tok = model_mod.load_tokenizer(tiny)
    eos_tok = model_mod.load_tokenizer(compose("model.pad_policy=eos"))
    checks = {
        "name_or_path": seen["path"] == str(tmp_path),
        "revision": seen["revision"] == "abc123",
        "dtype": seen["dtype"] == torch.float16,
        "attn_implementation": seen["attn_implementation"] == "eager",
        "trust_remote_code": seen["trust_remote_code"] is True,
        "padding_side": tok.padding_side == "left",
        "pad_token": tok.pad_token == "<|reserved_special_token_7|>",
        "pad_policy": eos_tok.pad_token == eos_tok.eos_token,
        "tiny": "tiny" in model_mod.resolve_model_path(compose("model.tiny.num_hidden_layers=2")),
    }
    with pytest.raises(ConfigError, match="model.max_context"):
        from ftsweep.config import validate

        validate(compose("model.max_context=64", "data.cutoff_len=128", check=False))
    checks["max_context"] = True
    assert {f.name for f in dataclasses.fields(ModelConfig)} == set(checks), "a new field needs a check here"
    assert all(checks.values()), checks


def test_shipped_model_options_need_no_remote_code(compose):
    for option in ("exaone3_5_2_4b_instruct", "llama3_8b", "llama3_1_8b_instruct", "llama3_2_1b",
                   "llama3_open_ko_8b", "qwen2_5_0_5b_instruct"):
        assert compose(f"model={option}").model.trust_remote_code is False, option


def test_gradient_checkpointing_enables_input_grads_for_lora(compose):
    cfg = compose(*FAST, "trainer.gradient_checkpointing=true")
    peft_model = model_mod.apply_lora(cfg, _model(cfg))
    import torch

    ids = torch.tensor([[1, 2, 3, 4]])
    emb = peft_model.get_input_embeddings()(ids)
    assert emb.requires_grad  # checkpointed layers get a graph back to the adapters


def test_fp16_training_keeps_trainable_weights_in_fp32(compose, monkeypatch):
    """fp16 (T4 / V100) trains with a GradScaler, which refuses fp16 parameters: trained embedding copies
    go to fp32, the frozen base stays fp16."""
    import torch

    cfg = compose(*FAST, "data.train_embeddings=true")
    base = _model(cfg).to(torch.float16)
    monkeypatch.setattr(model_mod, "resolve_precision", lambda p: "fp16")
    peft_model = model_mod.apply_lora(cfg, base)
    trainable = {n: p.dtype for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("embed_tokens" in n for n in trainable) and set(trainable.values()) == {torch.float32}, trainable
    frozen = {p.dtype for p in peft_model.parameters() if not p.requires_grad}
    assert frozen == {torch.float16}



def test_adapter_config_lists_target_modules_sorted(tmp_path):
    """peft writes target_modules in set order (it follows PYTHONHASHSEED, so two identical runs differ)."""
    import json

    from peft import LoraConfig

    LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], modules_to_save=["lm_head", "embed_tokens"]
               ).save_pretrained(str(tmp_path))
    path = tmp_path / "adapter_config.json"
    doc = json.loads(path.read_text())
    doc["target_modules"] = ["v_proj", "q_proj", "down_proj"]  # an order a set may come out in
    path.write_text(json.dumps(doc))
    model_mod.sort_adapter_config(tmp_path)
    again = json.loads(path.read_text())
    assert again["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    assert again["modules_to_save"] == ["lm_head", "embed_tokens"]  # a list, in the user's order: unchanged
    assert {k: v for k, v in again.items() if k != "target_modules"} == {
        k: v for k, v in doc.items() if k != "target_modules"}


def test_the_tiny_model_is_the_same_whatever_thread_count_builds_it(compose):
    """The cache key names the spec, not the builder's threads: a 2-worker sweep's trial (1 thread each), a
    one-off run (all cores) and another machine must build bitwise the same weights. Pre-training on
    2 threads instead of 1 changed them (the sweep and a one-off run on fresh caches reported different losses)."""
    import dataclasses

    import torch

    from ftsweep.tiny import build_model, build_tokenizer, spec_from_cfg

    spec = dataclasses.replace(spec_from_cfg(compose("model=tiny").model.tiny), pretrain_steps=6)
    tokenizer = build_tokenizer(spec)
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            weights.append([p.detach().clone() for p in build_model(spec, tokenizer).parameters()])
            assert torch.get_num_threads() == threads  # the caller's count comes back
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_model_hub_loads_any_folder_with_its_own_pad_token_else_eos(compose, cache_dir, tmp_path):
    """model=hub: any model by name or folder; pad_policy=auto keeps the tokenizer's pad token, else eos."""
    import shutil

    from ftsweep.config import ConfigError

    folder = tmp_path / "my-model"
    shutil.copytree(model_mod.resolve_model_path(compose(f"cache_dir={cache_dir}")), folder)
    cfg = compose("model=hub", f"model.name_or_path={folder}")
    assert model_mod.resolve_model_path(cfg) == str(folder)
    tok = model_mod.load_tokenizer(cfg)
    assert tok.pad_token is not None and tok.pad_token == tok.eos_token  # the tiny tokenizer has no pad token
    tok.pad_token = "<|reserved_special_token_3|>"
    tok.save_pretrained(folder)
    assert model_mod.load_tokenizer(cfg).pad_token == "<|reserved_special_token_3|>"  # its own, kept
    with pytest.raises(ConfigError, match=r"^model.name_or_path: no such folder '\./nope' \(relative paths are read from "):
        model_mod.resolve_model_path(compose("model=hub", "model.name_or_path=./nope"))


def test_a_folder_that_is_no_model_or_a_model_that_cannot_load_is_one_line(compose, tmp_path, monkeypatch, capsys):
    from ftsweep.cli import main
    from ftsweep.config import ConfigError

    empty, adapter = tmp_path / "empty", tmp_path / "run" / "adapter"
    empty.mkdir()
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=rf"^model.name_or_path: '{empty}' is not a model folder \(no config.json in it\)$"):
        model_mod.load_tokenizer(compose("model=hub", f"model.name_or_path={empty}"))
    with pytest.raises(ConfigError, match=r"is not a model folder \(it holds a LoRA adapter: merge it into its base "
                                          r"first \(ftsweep merge RUN_DIR\), or train on from it with init_from=RUN_DIR\)$"):
        model_mod.load_tokenizer(compose("model=hub", f"model.name_or_path={adapter}"))

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    # ftsweep inspect (not only train) says it in one line, exit 2
    assert main(["inspect", "model=hub", "model.name_or_path=nobody/nothing", "--plain"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ftsweep: error: model.name_or_path: cannot load 'nobody/nothing': We couldn't connect to "
        "'https://huggingface.co' to load the files.")


def test_a_base_models_list_of_stop_ids_is_kept_and_generation_stops_at_each(compose, cache_dir, tmp_path):
    # before: the tokenizer's eos replaced the list (Gemma-it's [<eos>, <end_of_turn>]) in every saved model, and
    # ftsweep generate stopped only at a shorter list of end-of-turn tokens than the generation objective
    import json
    import shutil

    from ftsweep.objectives.generation import stop_token_ids

    folder = tmp_path / "gemma-like"
    shutil.copytree(model_mod.resolve_model_path(compose(f"cache_dir={cache_dir}")), folder)
    cfg = compose("model=hub", f"model.name_or_path={folder}")
    tok = model_mod.load_tokenizer(cfg)
    turn_end = tok.convert_tokens_to_ids("<|reserved_special_token_5|>")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [tok.eos_token_id, turn_end]}))
    model = model_mod.load_base_for_inference(cfg, tok, quantized=False)
    assert model.generation_config.eos_token_id == [tok.eos_token_id, turn_end]
    assert stop_token_ids(tok, model)[:2] == [tok.eos_token_id, turn_end]
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "generation_config.json").read_text())["eos_token_id"] == \
        [tok.eos_token_id, turn_end]
    # a run's own eos (data.eos_token) comes first, the base model's ids stay
    assert model_mod.with_eos([5, 9], 9) == [9, 5] and model_mod.with_eos(5, 5) == 5 and model_mod.with_eos(None, 3) == 3


def test_stop_tokens_include_the_end_of_turn_tokens_of_common_templates():
    from ftsweep.objectives.generation import stop_token_ids

    class Tok:
        eos_token_id = 0

        def get_vocab(self):
            return {"<eos>": 0, "<end_of_turn>": 7, "<|end|>": 8, "[|endofturn|]": 9, "<|eom_id|>": 10, "hello": 11}

    assert stop_token_ids(Tok()) == [0, 10, 9, 7, 8]


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=64))


def test_gpt2s_conv1d_layers_are_lora_targets(compose):
    # before: GPT-2's family (transformers' Conv1D) had no linear layers: every target "not found", all-linear a
    # peft traceback
    from peft import get_peft_model

    model = _gpt2()
    assert model_mod.linear_module_names(model) == ["c_attn", "c_fc", "c_proj"]
    config = model_mod.build_lora(compose(*FAST, "lora.target_modules=all-linear").lora, model)
    assert sorted(config.target_modules) == ["c_attn", "c_fc", "c_proj"]
    assert model_mod.count_parameters(get_peft_model(model, config))[0] > 0
    assert model_mod.build_lora(compose(*FAST, "lora.target_modules=[c_attn]").lora, _gpt2()).target_modules == {"c_attn"}


def test_a_model_without_linear_layers_and_unknown_modules_to_save_are_one_line(compose):
    import torch

    from ftsweep.config import ConfigError

    with pytest.raises(ConfigError, match=r"^lora.target_modules: the model has no linear layers LoRA can adapt"):
        model_mod.build_lora(compose(*FAST, "lora.target_modules=all-linear").lora, torch.nn.Sequential(torch.nn.ReLU()))
    cfg = compose(*FAST, "lora.modules_to_save=[lm_hed]")  # before: accepted, nothing trained for it
    with pytest.raises(ConfigError, match=r"^lora.modules_to_save: \['lm_hed'\] not found in the model; did you mean "
                                          r"lm_head\?$"):
        model_mod.build_lora(cfg.lora, _model(cfg))
    assert model_mod.build_lora(compose(*FAST, "lora.modules_to_save=[lm_head]").lora, _model(cfg)).modules_to_save \
        == ["lm_head"]


def test_a_cutoff_beyond_the_models_own_context_window_is_one_line(compose, cache_dir, tmp_path):
    # before: GPT-2 / OPT failed with an IndexError traceback, a RoPE model trained past its positions silently
    import json
    import shutil

    from ftsweep.config import ConfigError

    folder = tmp_path / "short"
    shutil.copytree(model_mod.resolve_model_path(compose(f"cache_dir={cache_dir}")), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    cfg = compose("model=hub", f"model.name_or_path={folder}", "data.cutoff_len=128")
    with pytest.raises(ConfigError, match=r"^data.cutoff_len: 128 exceeds the model's context window "
                                          r"\(max_position_embeddings=64 in its config.json\)$"):
        model_mod.load_model(cfg, model_mod.load_tokenizer(cfg))
    gpt2 = _gpt2().config
    with pytest.raises(ConfigError, match=r"\(n_positions=64 in its config.json\)"):
        model_mod.check_context(gpt2, 65)
    model_mod.check_context(gpt2, 64)


def test_the_saved_tokenizer_keeps_the_bases_context_length_and_padding_side(compose, cache_dir, tmp_path):
    import json
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "left"
    shutil.copytree(model_mod.resolve_model_path(compose(f"cache_dir={cache_dir}")), folder)
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok_config, "model_max_length": 32768,
                                                              "padding_side": "left"}))
    tok = model_mod.load_tokenizer(compose("model=hub", f"model.name_or_path={folder}"))
    assert (tok.model_max_length, tok.padding_side) == (8192, "right")  # training's (model.max_context, padding)
    with model_mod.as_loaded(tok):
        tok.save_pretrained(tmp_path / "saved")
    assert (tok.model_max_length, tok.padding_side) == (8192, "right")
    saved = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert (saved["model_max_length"], saved["padding_side"]) == (32768, "left")  # before: 8192, right
    # the trained prompt as the saved folder's chat template; the tokenizer in memory (a warm worker's) keeps its own
    own = tok.chat_template
    with model_mod.as_loaded(tok, "{{ 'trained' }}"):
        tok.save_pretrained(tmp_path / "saved2")
    assert tok.chat_template == own and own != "{{ 'trained' }}"
    assert AutoTokenizer.from_pretrained(tmp_path / "saved2").chat_template == "{{ 'trained' }}"


def test_llama3_template_on_a_tokenizer_without_its_markers_is_refused():
    from types import SimpleNamespace

    from ftsweep.data import DataError
    from ftsweep.data.pipeline import _check_chat_markers

    class Tok:
        def get_vocab(self):
            return {"<|endoftext|>": 0, "a": 1}

    with pytest.raises(DataError, match=r"llama3 needs <\|start_header_id\|>, <\|end_header_id\|>, <\|eot_id\|> as "
                                        r"tokens"):
        _check_chat_markers(SimpleNamespace(chat_template="llama3", format="chat"), Tok())


def _tiny(kind: str, attn: str = "sdpa"):
    import transformers

    small = {"vocab_size": 64, "num_attention_heads": 4}
    config = {"opt": lambda: transformers.OPTConfig(**small, hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=2,
                                                    ffn_dim=64, max_position_embeddings=64),
              "bloom": lambda: transformers.BloomConfig(**small, hidden_size=32, n_layer=2),
              "llama": lambda: transformers.LlamaConfig(**small, hidden_size=32, num_hidden_layers=2,
                                                        intermediate_size=64, num_key_value_heads=2),
              "gpt2": lambda: transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64),
              }[kind]()
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)


@pytest.mark.parametrize(("kind", "attn"), [("opt", "sdpa"), ("opt", "eager"), ("bloom", "eager")])
def test_packing_is_refused_where_packed_examples_see_each_other(kind, attn):
    # before: only OPT was refused, by name; BLOOM's ALiBi attention ignores the position ids as well (measured:
    # the second example's logits moved by 2.5e-3 with the first example's tokens)
    from ftsweep.config import ConfigError

    model = _tiny(kind, attn).train()
    with pytest.raises(ConfigError, match=rf"^data.packing: packed examples would attend to each other in this {kind} "
                                          r"model \(its attention ignores the position ids that separate them"):
        model_mod.check_packed_attention(model)
    assert model.training  # the probe leaves the model in the mode it found


@pytest.mark.parametrize(("kind", "attn"), [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa")])
def test_packing_is_allowed_where_the_position_ids_keep_examples_apart(kind, attn):
    model = _tiny(kind, attn).train()  # (dropout on: the probe runs in eval mode)
    model_mod.check_packed_attention(model)
    assert model.training


def test_a_packed_sft_run_on_a_model_whose_examples_would_mix_is_one_line_and_leaves_nothing(compose, cache_dir,
                                                                                             tmp_path, monkeypatch,
                                                                                             capsys):
    # the probe runs on the model the trainer holds: a tiny OPT with the tiny Llama's tokenizer, through the CLI
    import shutil
    from pathlib import Path

    from ftsweep.cli import main

    folder = tmp_path / "opt"
    base = Path(model_mod.resolve_model_path(compose(f"cache_dir={cache_dir}")))
    model = _tiny("opt")
    model.resize_token_embeddings(len(model_mod.load_tokenizer(compose(f"cache_dir={cache_dir}"))))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).is_file():
            shutil.copy(base / name, folder / name)
    monkeypatch.chdir(tmp_path)
    code = main(["train", "model=hub", f"model.name_or_path={folder}", "logger=none", f"cache_dir={cache_dir}",
                 "lora.target_modules=[q_proj,v_proj]", "data.packing=true", "data.cutoff_len=64", "data.max_rows=40",
                 "trainer.max_steps=2",
                 "hydra.run.dir=run"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ftsweep: error")]
    assert code == 2 and len(err) == 1, err
    assert "data.packing: packed examples would attend to each other in this opt model" in err[0], err
    assert not (tmp_path / "run").exists()


def test_tokens_added_into_a_padded_vocabulary_get_the_mean_row_like_resized_ones(compose, cache_dir, tmp_path):
    # before: a model whose embedding matrix has more rows than its tokenizer has tokens (Qwen2 / Qwen2.5: 151,936
    # rows for 151,665 tokens) was not resized, so data.special_tokens / a new pad token landed on the checkpoint's
    # unused padding rows, never trained (zeros here), while the same tokens on a model that is resized get the
    # mean of the existing rows
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "padded-vocab"
    shutil.copytree(model_mod.resolve_model_path(compose(f"cache_dir={cache_dir}", "model.tiny.pretrain_steps=0")),
                    folder)
    base = AutoModelForCausalLM.from_pretrained(folder)
    n = base.get_input_embeddings().weight.shape[0]
    base.resize_token_embeddings(n + 16, mean_resizing=False)
    with torch.no_grad():
        base.get_input_embeddings().weight[n:] = 0
        base.get_output_embeddings().weight[n:] = 0
    base.save_pretrained(folder)
    cfg = compose("model=hub", f"model.name_or_path={folder}", "model.pad_policy=new", "model.pad_token='<|pad|>'",
                  "data.special_tokens=['<tool_call>','</tool_call>','<|eot_id|>']", "data.train_embeddings=true")
    tok = model_mod.load_tokenizer(cfg)
    added = tok.convert_tokens_to_ids(["<tool_call>", "</tool_call>", "<|pad|>"])
    assert added == [n, n + 1, n + 2] and len(tok) == n + 3
    model = model_mod.load_model(cfg, tok)
    emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == n + 16  # not resized: the rows are there
    for weight, original in ((emb, base.get_input_embeddings().weight), (out, base.get_output_embeddings().weight)):
        mean = original[:n].mean(0)
        for i in added:
            torch.testing.assert_close(weight[i], mean)
        torch.testing.assert_close(weight[:n], original[:n], rtol=0, atol=0)  # the base's own rows (eot too): untouched
        assert not weight[n + 3 :].any()  # rows no token uses stay as they were
    # generation and merging load the base the same way: the same rows
    again = model_mod.load_base_for_inference(cfg, tok, quantized=False)
    torch.testing.assert_close(again.get_input_embeddings().weight, emb, rtol=0, atol=0)
    torch.testing.assert_close(again.get_output_embeddings().weight, out, rtol=0, atol=0)


def _padded_vocab(compose, cache_dir, folder, spare: int = 16) -> int:
    """The tiny model saved with ``spare`` untrained (zero) embedding rows after its vocabulary, as Qwen2.5 pads its
    matrix; returns the tokenizer's length (the first spare row)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(model_mod.resolve_model_path(compose(f"cache_dir={cache_dir}", "model.tiny.pretrain_steps=0")),
                    folder)
    base = AutoModelForCausalLM.from_pretrained(folder)
    n = base.get_input_embeddings().weight.shape[0]
    base.resize_token_embeddings(n + spare, mean_resizing=False)
    with torch.no_grad():
        base.get_input_embeddings().weight[n:] = 0
        base.get_output_embeddings().weight[n:] = 0
    base.save_pretrained(folder)
    return n


def test_a_plain_peft_load_gets_the_rows_of_added_tokens_a_frozen_embedding_kept(compose, cache_dir, tmp_path, capsys):
    # before: a token added into a checkpoint's spare rows (Qwen2.5) with frozen embeddings gets the mean row from
    # ftsweep's loaders, but the adapter did not carry it: AutoModelForCausalLM + PeftModel.from_pretrained got the
    # checkpoint's untrained row (measured: <tool_call>'s logit 0.0 against -2.255, all logits up to 5.42 apart)
    import json

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsweep.generate import load_models
    from ftsweep.rundir import RunDir
    from ftsweep.train import run

    folder = tmp_path / "padded-vocab"
    n = _padded_vocab(compose, cache_dir, folder)
    cfg = compose(*FAST, "trainer.max_steps=2", "model=hub", f"model.name_or_path={folder}", "model.pad_policy=new",
                  "model.pad_token='<|pad|>'", "data.special_tokens=['<tool_call>']")
    run(cfg, tmp_path / "run")
    adapter = RunDir(tmp_path / "run").adapter
    assert "adapter: carries the embedding rows of the 2 added token(s)" in capsys.readouterr().err
    assert json.loads((adapter / "adapter_config.json").read_text())["trainable_token_indices"] == {
        "embed_tokens": [n, n + 1], "lm_head": [n, n + 1]}
    tok = AutoTokenizer.from_pretrained(adapter)
    ours, _ = load_models(tmp_path / "run", cfg, tok, quantized=False)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), adapter).eval()
    ids = torch.tensor([tok("Name a color.")["input_ids"] + tok.convert_tokens_to_ids(["<tool_call>", "<|pad|>"])])
    with torch.no_grad():
        want, got = ours(input_ids=ids).logits, plain(input_ids=ids).logits
    torch.testing.assert_close(got, want)
    assert want[0, :, n].abs().min() > 0  # the mean row's logit, not the checkpoint's zero row's
    # a run with trained embeddings saves them whole (modules_to_save): nothing is added
    cfg = compose(*FAST, "trainer.max_steps=1", "model=hub", f"model.name_or_path={folder}",
                  "data.special_tokens=['<tool_call>']", "data.train_embeddings=true")
    run(cfg, tmp_path / "trained")
    saved = json.loads((RunDir(tmp_path / "trained").adapter / "adapter_config.json").read_text())
    assert saved.get("trainable_token_indices") is None and set(saved["modules_to_save"]) >= {"embed_tokens", "lm_head"}


def test_two_added_tokens_without_trained_embeddings_are_refused_before_the_model_loads(compose, monkeypatch):
    # before: data.special_tokens=['<|im_start|>','<|im_end|>'] (the README's chatml recipe) trained with frozen
    # embeddings: both tokens kept the same mean row in embed_tokens and lm_head, so after training <|im_end|> and
    # <|im_start|> still got the same logit (measured: -1.68430 vs -1.68444) and the model could not learn to stop
    from ftsweep.config import ConfigError

    two = ("data.chat_template=chatml", "data.special_tokens=['<|im_start|>','<|im_end|>']", "data.format=chat",
           "data=chat_demo", "model.tiny.pretrain_steps=0")
    cfg = compose(*two)
    tok = model_mod.load_tokenizer(cfg)
    loaded = []
    monkeypatch.setattr(model_mod, "_from_pretrained", lambda *a, **k: loaded.append(1))
    with pytest.raises(ConfigError, match=r"^data.train_embeddings: false, but the run adds 2 tokens \(<\|im_start\|>, "
                                          r"<\|im_end\|>\) that all start as the same mean embedding row: .* set "
                                          r"data.train_embeddings=true \(or lora=none\)$"):
        model_mod.load_model(cfg, tok)
    assert not loaded  # refused before the weights load
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.init_from = "outputs/sft_run"  # DPO after an SFT run that trained them: its rows are merged in
    model_mod.check_added_tokens_trainable(cfg, tok, model_mod.base_vocab_len(cfg))
    monkeypatch.undo()
    for ok in (compose(*two, "data.train_embeddings=true"), compose(*two, "lora=none"),
               compose("model.tiny.pretrain_steps=0", "data.special_tokens=['<tool_call>']", "model.pad_policy=new",
                       "model.pad_token='<|pad|>'")):  # one token (and a pad that is never trained): its own row
        model_mod.load_model(ok, model_mod.load_tokenizer(ok))


def test_an_unquantized_lora_run_never_imports_bitsandbytes(cache_dir, tmp_path):
    """peft imported bitsandbytes to ask whether a layer is one of its 8-bit / 4-bit layers, and so did
    linear_module_names: about 2 s of CPU per training process (its kernels compile through torch.compile), where
    no layer can be one. The adapter is the same; a QLoRA run still gets bitsandbytes' LoRA layers (test_qlora)."""
    import subprocess
    import sys

    code = f"""
import sys
from ftsweep.config.compose import compose
from ftsweep import model as m
import peft.tuners.lora.model as lora_model
probes = lora_model.is_bnb_available, lora_model.is_bnb_4bit_available
cfg = compose({[f"cache_dir={cache_dir}", *FAST, "lora=r16_all_linear"]!r})
tok = m.load_tokenizer(cfg)
base = m.load_model(cfg, tok)
names = m.linear_module_names(base)
peft_model = m.apply_lora(cfg, base)
peft_model.save_pretrained({str(tmp_path / "adapter")!r})
again = m.load_adapter(m.load_model(cfg, tok), {str(tmp_path / "adapter")!r})
lora = lambda model: {{k: v for k, v in model.state_dict().items() if "lora_" in k}}
same = lora(peft_model).keys() == lora(again).keys() and all((lora(peft_model)[k] == v).all() for k, v in lora(again).items())
print("RESULT", names == {LLAMA_LINEARS!r}, same and len(lora(again)) > 0,
      (lora_model.is_bnb_available, lora_model.is_bnb_4bit_available) == probes, "bitsandbytes" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line == "RESULT True True True False", out.stdout[-2000:] + out.stderr[-3000:]
