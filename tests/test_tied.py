"""Tied-embedding models (Llama 3.2 1B, Qwen2.5 0.5B, EXAONE 2.4B) with data.train_embeddings=true: the
embeddings and lm_head stay one tensor through training, saving and merging (peft ensure_weight_tying)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST
from omegaconf import OmegaConf

from ftsweep import model as model_mod

# one worker runs this module: its module-scoped fixtures are built once (scripts/test.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tied")


@pytest.fixture(scope="module")
def tied_checkpoint(tmp_path_factory):
    from transformers import LlamaForCausalLM

    from ftsweep.tiny import TinySpec, build_tokenizer, llama_config

    path = tmp_path_factory.mktemp("tied-tiny")
    spec = TinySpec()
    tok = build_tokenizer(spec)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(spec, len(tok), tok.bos_token_id, tok.eos_token_id, tie_word_embeddings=True))
    assert model_mod.ties_embeddings(model)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_tied_model_trains_and_merges_one_embedding(compose, tied_checkpoint, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsweep.merge import merge_run
    from ftsweep.train import run

    cfg = compose(*FAST, "model=llama3_2_1b", f"model.name_or_path={tied_checkpoint}", "model.max_context=1024",
                  "data.train_embeddings=true", "trainer.max_steps=6", "trainer.eval_steps=6", "optimizer.lr=1e-2")
    base = model_mod.load_model(cfg, model_mod.load_tokenizer(cfg))
    lora = model_mod.build_lora(cfg.lora, base, train_embeddings=True)
    assert lora.ensure_weight_tying and set(lora.modules_to_save) == {"embed_tokens", "lm_head"}

    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    assert run(cfg, run_dir)["status"] == "complete"

    tok = AutoTokenizer.from_pretrained(run_dir / "adapter")
    trained = PeftModel.from_pretrained(model_mod.load_base_for_inference(cfg, tok, quantized=False), run_dir / "adapter")
    emb, head = trained.get_input_embeddings().weight, trained.get_output_embeddings().weight
    torch.testing.assert_close(emb, head)  # trained once, as one tensor
    original = AutoModelForCausalLM.from_pretrained(tied_checkpoint).get_input_embeddings().weight
    assert (emb - original).abs().max() > 1e-4  # and it was trained

    merged_dir = merge_run(run_dir, out=tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert model_mod.ties_embeddings(merged)
    ids = tok(["### Instruction:\nName three colors.\n\n### Response:\nRed"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, trained.eval()(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
