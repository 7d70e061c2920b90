"""Memory estimate vs the measured peak, the pre-trial check, ``ftsweep train --estimate-memory``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import FAST

from ftsweep import cli
from ftsweep.memory import MemoryInfeasible, estimate, preflight, shapes_from_config

# Each run in its own process: ru_maxrss is a per-process high-water mark, so runs sharing a process
# (or following other tests) would hide each other's peaks.
MEASURE = """
import json, sys
from ftsweep.config.compose import compose
from ftsweep.memory import estimate
from ftsweep.train import run
cfg = compose(sys.argv[2:])
m = run(cfg, sys.argv[1])
print("RESULT " + json.dumps({"measured": m["peak_rss_mb"] - m["rss_before_model_mb"], "estimate": estimate(cfg)["total_mib"]}))
"""
# The environment as it was before any test ran: earlier in-process runs set variables (W&B,
# TensorBoard, tokenizers) that change what a measured child process allocates.
ENV_AT_COLLECTION = dict(os.environ)
BIGGER = ["model.tiny.hidden_size=256", "model.tiny.intermediate_size=704", "model.tiny.num_hidden_layers=4",
          "model.tiny.num_attention_heads=8", "model.tiny.num_key_value_heads=8", "model.tiny.pretrain_steps=0"]
CASES = {
    "tiny-lora-b16-c256": ["data.cutoff_len=256", "trainer.per_device_train_batch_size=16", "trainer.per_device_eval_batch_size=16"],
    "bigger-nf4-all-linear-c256": [*BIGGER, "quantization=nf4", "lora=r16_all_linear", "data.cutoff_len=256"],
}


def test_estimate_within_30_percent_of_measured_peak_rss(cache_dir, tmp_path):
    env = {**ENV_AT_COLLECTION, "WANDB_MODE": "offline", "FTSWEEP_CACHE_DIR": str(cache_dir)}
    fast = [o for o in FAST if not o.startswith("data.cutoff_len")] + ["trainer.max_steps=3", "trainer.eval_steps=3", "data.max_rows=60"]
    # Warm the tokenized-data cache first: tokenizing inside the measured process would raise its RSS
    # high-water mark before the model loads and hide part of the model's memory in the delta.
    from ftsweep.config.compose import compose as compose_cfg
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    for o in CASES.values():
        cfg = compose_cfg([f"cache_dir={cache_dir}", *fast, *o])
        build_datasets(cfg, load_tokenizer(cfg))
    procs = {
        name: subprocess.Popen([sys.executable, "-c", MEASURE, str(tmp_path / name), f"cache_dir={cache_dir}", *fast, *o],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for name, o in CASES.items()
    }
    results = {}
    for name, p in procs.items():
        out, _ = p.communicate(timeout=240)
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        assert line, out[-3000:]
        results[name] = json.loads(line[7:])
    print(json.dumps(results, indent=1))
    for name, r in results.items():
        assert 0.7 <= r["estimate"] / r["measured"] <= 1.3, (name, r)


def test_infeasible_trial_fails_before_the_model_loads(compose, monkeypatch):
    import transformers

    def no_load(*a, **k):
        raise AssertionError("preflight must not load the model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    cfg = compose(*FAST)
    est = preflight(cfg, free_mib=1e6)
    assert est["total_mib"] < 1e6
    with pytest.raises(MemoryInfeasible, match=r"^oom: estimated \d+ MiB > free 50 MiB on cpu \(batch 8 x cutoff 128; weights"):
        preflight(cfg, free_mib=50)
    assert isinstance(MemoryInfeasible("x"), RuntimeError)


def test_estimate_grows_with_what_costs_memory(compose):
    base = estimate(compose(*FAST))["total_mib"]
    assert estimate(compose(*FAST, "trainer.per_device_train_batch_size=32"))["total_mib"] > base
    assert estimate(compose(*FAST, "data.cutoff_len=512"))["total_mib"] > base
    full = estimate(compose(*FAST, "lora=none"))
    assert full["optimizer_mib"] == pytest.approx(2 * full["weights_mib"])  # AdamW: 2 fp32 states per weight
    ckpt = estimate(compose(*FAST, "data.cutoff_len=512", "trainer.gradient_checkpointing=true"))
    assert ckpt["activations_mib"] < estimate(compose(*FAST, "data.cutoff_len=512"))["activations_mib"]


def test_llama3_8b_shapes_quantized_weights(compose):
    """Real architecture from its config alone (meta device): 8.03B parameters, nf4 linears."""
    from transformers import LlamaConfig

    cfg = compose("quantization=nf4", "lora=r16_all_linear", "data.cutoff_len=1024", "optimizer=paged_adamw_8bit",
                  "trainer.per_device_train_batch_size=2", "trainer.per_device_eval_batch_size=2",
                  "trainer.gradient_checkpointing=true")
    llama3_8b = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192)
    shapes = shapes_from_config(llama3_8b)
    assert shapes.total_params == 8_030_261_248
    est = estimate(cfg, shapes=shapes, on_cuda=True)
    assert est["trainable_params"] == 41_943_040  # r16 on all 7 linears x 32 layers (peft reports the same)
    # 6.98B linear weights at ~4.13 bits + embeddings and lm_head upcast to fp32 (2 x 2.0 GiB)
    assert 7_000 < est["weights_mib"] < 8_000
    assert 2 * 1024 * 128256 * 4 * 4 / 2**20 == est["logits_mib"]  # 4 fp32 copies of batch x cutoff x vocab
    assert 10_000 < est["total_mib"] < 16_000


def test_cli_estimate_memory_prints_without_training(cache_dir, capsys):
    assert cli.main(["train", "--estimate-memory", f"cache_dir={cache_dir}", "quantization=nf4", "lora=r16_all_linear"]) == 0
    out = capsys.readouterr().out
    assert "memory estimate for one cpu device, batch 8 x cutoff 256" in out
    assert "weights" in out and "total" in out and "free" in out
    assert "LoRA targets: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in out
