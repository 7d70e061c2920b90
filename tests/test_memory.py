"""Memory estimate vs the measured peak, the pre-trial check, ``ftsweep train --estimate-memory``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import FAST

from ftsweep import cli
from ftsweep.memory import MemoryInfeasible, estimate, preflight

# Each run in its own process: the peak RSS is a per-process high-water mark, so runs sharing a process
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
# A fixed mmap threshold (glibc's initial 128 KiB): every large tensor is mapped and unmapped, so the peak RSS is
# the memory the run holds. With glibc's default the threshold rises after the first large free and later tensors
# come from the heap, whose freed pages stay resident depending on thread timing: the b16 case measured
# 214-312 MiB from run to run (more under load), with this 229-230 MiB, quiet or loaded, 1 or 2 threads.
STABLE_PEAK = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
BIGGER = ["model.tiny.hidden_size=256", "model.tiny.intermediate_size=704", "model.tiny.num_hidden_layers=4",
          "model.tiny.num_attention_heads=8", "model.tiny.num_key_value_heads=8", "model.tiny.pretrain_steps=0"]
CASES = {
    "tiny-lora-b16-c256": ["data.cutoff_len=256", "trainer.per_device_train_batch_size=16", "trainer.per_device_eval_batch_size=16"],
    "bigger-nf4-all-linear-c256": [*BIGGER, "quantization=nf4", "lora=r16_all_linear", "data.cutoff_len=256"],
}


def test_estimate_within_30_percent_of_measured_peak_rss(cache_dir, tmp_path):
    env = {**ENV_AT_COLLECTION, **STABLE_PEAK, "WANDB_MODE": "offline", "FTSWEEP_CACHE_DIR": str(cache_dir)}
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


def test_a_child_of_a_large_process_measures_its_own_peak():
    """A trial spawned by a big sweep (or test) process reports its own peak: Linux folds the parent's
    high-water mark into ``ru_maxrss`` at exec, which once made a 290 MiB run read as 590 MiB."""
    child = "from ftsweep.device import peak_rss_mib, reset_peak_memory; b = reset_peak_memory(); print(peak_rss_mib() - b)"
    parent = (f"import subprocess, sys; ballast = bytearray(400 * 2**20); ballast[::4096] = b'x' * len(ballast[::4096]); "
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True, check=True).stdout)")
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True, timeout=120).stdout
    assert 0 <= float(out.strip()) < 50, out


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


def test_packed_rows_on_cuda_count_the_flattened_attention_scores(compose):
    """trl's packing flattens the batch into one sequence; on CUDA its heads x T x T scores count twice
    (probabilities and gradient: the peaks measured on an H200 with flex_attention); not on CPU."""
    from ftsweep.memory import MiB, _compute_bytes, shapes_for

    def activations(*extra: str, on_cuda: bool = True) -> float:
        cfg = compose(*FAST, "data.cutoff_len=256", "trainer.per_device_train_batch_size=2",
                      "trainer.gradient_checkpointing=true", *extra)
        return estimate(cfg, on_cuda=on_cuda)["activations_mib"]

    heads, tokens, c = shapes_for(compose(*FAST)).heads, 2 * 256, _compute_bytes(compose(*FAST), True)
    extra = activations("data.packing=true") - activations("data.packing=false")
    assert extra == pytest.approx(2 * heads * tokens**2 * c / MiB)
    assert activations("data.packing=true", on_cuda=False) == activations("data.packing=false", on_cuda=False)


SEED_T4 = ["model=llama3_8b", "quantization=nf4", "data.cutoff_len=2048", "trainer.per_device_train_batch_size=2"]


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to read a config from the Hub (or disk) fails, as offline."""
    import transformers

    def offline(*a, **k):
        raise OSError("offline: no Hub access")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)


def test_llama3_8b_nf4_fits_a_t4_offline(compose, no_hub):
    """The seeds train Llama-3-8B nf4, LoRA r16, cutoff 2048, batch 2, checkpointing on a 16 GB T4.
    trl's fused LM head never materialises batch x cutoff x vocab logits (was: 16 GiB of a 26.3 GiB estimate)."""
    cfg = compose(*SEED_T4, "trainer.gradient_checkpointing=true")
    est = estimate(cfg, on_cuda=True)
    assert est["total_params"] == 8_030_261_248 and est["trainable_params"] == 13_631_488  # r16 on q/k/v/o
    # 6.98B linear weights at ~4.13 bits + embeddings and lm_head in bf16 (not upcast to fp32): 2 x 1,002 MiB
    assert 5_300 < est["weights_mib"] < 5_500
    assert est["lm_head_mib"] == 2 * 4096 * 32768 * 2 / 2**20  # one bf16 tile and its gradient: 512 MiB
    assert est["eval_extra_mib"] == 0  # eval computes the loss only: below the training peak here
    assert est["total_mib"] < 15_360 - 500, est  # a T4's 15,360 MiB less the CUDA context
    all_linear = estimate(compose(*SEED_T4, "trainer.gradient_checkpointing=true", "lora=r16_all_linear",
                                  "optimizer=paged_adamw_8bit"), on_cuda=True)
    assert all_linear["trainable_params"] == 41_943_040  # r16 on all 7 linears x 32 layers (peft reports the same)
    assert all_linear["total_mib"] < 15_360 - 500
    assert estimate(compose(*SEED_T4), on_cuda=True)["total_mib"] == est["total_mib"]  # auto: on with a GPU
    no_ckpt = estimate(compose(*SEED_T4, "trainer.gradient_checkpointing=false"), on_cuda=True)
    assert no_ckpt["activations_mib"] > 8 * est["activations_mib"]  # without checkpointing it cannot fit


def test_shipped_model_shapes_are_known_offline(compose, no_hub):
    expected = {  # total parameters (tied embeddings once), vocabulary, tied
        "llama3_8b": (8_030_261_248, 128256, False),
        "llama3_1_8b_instruct": (8_030_261_248, 128256, False),
        "llama3_open_ko_8b": (8_030_261_248, 128256, False),
        "llama3_2_1b": (1_235_814_400, 128256, True),
        "qwen2_5_0_5b_instruct": (494_032_768, 151936, True),
        "exaone3_5_2_4b_instruct": (2_405_327_360, 102400, True),
    }
    from ftsweep.memory import shapes_for

    for option, (total, vocab, tied) in expected.items():
        shapes = shapes_for(compose(f"model={option}"))
        assert (shapes.total_params, shapes.vocab, shapes.tied) == (total, vocab, tied), option
        # native EXAONE has Llama's layer names, so the default LoRA targets exist
        assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= {lin.name for lin in shapes.linears}, option


def test_tied_embeddings_counted_once_and_trained_once(compose, no_hub):
    base = ["model=llama3_2_1b", "quantization=nf4", "trainer.gradient_checkpointing=true"]
    plain = estimate(compose(*base), on_cuda=True)
    emb = estimate(compose(*base, "data.train_embeddings=true"), on_cuda=True)
    assert emb["trainable_params"] - plain["trainable_params"] == 128256 * 2048  # one shared copy, not two


def test_cli_estimate_memory_offline_says_it_fits_a_16gb_gpu(capsys, no_hub):
    # the exact command: checkpointing is on by default with a GPU (auto), as in the seeds and trl
    assert cli.main(["train", "--estimate-memory", *SEED_T4]) == 0
    out = capsys.readouterr().out
    assert "on a CUDA GPU (nf4 weights, 16-bit compute)" in out
    assert "16 GB (T4, V100-16GB)      fits" in out and "with trainer.gradient_checkpointing" not in out
    assert cli.main(["train", "--estimate-memory", *SEED_T4, "trainer.gradient_checkpointing=false"]) == 0
    out = capsys.readouterr().out
    assert "16 GB (T4, V100-16GB)      DOES NOT FIT" in out.split("with trainer.gradient_checkpointing=true")[0]
    assert "on a 16 GB (T4, V100-16GB)      fits" in out.split("with trainer.gradient_checkpointing=true")[1]


def test_gradient_checkpointing_auto_is_on_with_a_gpu_only():
    from ftsweep.device import use_checkpointing

    assert use_checkpointing(None, on_cuda=True) and not use_checkpointing(None, on_cuda=False)
    assert use_checkpointing(True, on_cuda=False) and not use_checkpointing(False, on_cuda=True)


def test_cli_estimate_memory_prints_without_training(cache_dir, capsys):
    assert cli.main(["train", "--estimate-memory", f"cache_dir={cache_dir}", "quantization=nf4", "lora=r16_all_linear"]) == 0
    out = capsys.readouterr().out
    assert "memory estimate for one cpu device, batch 8 x cutoff 256, gradient checkpointing off" in out
    assert "weights" in out and "total" in out and "free" in out
    assert "LoRA targets: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in out


def test_estimate_never_forces_remote_code(monkeypatch):
    """A config with an ``auto_map`` (Hub remote code) is instantiated with the option's trust_remote_code only."""
    import transformers

    from ftsweep.memory import known_config, shapes_from_config

    seen = {}
    real = transformers.AutoModelForCausalLM.from_config

    def spy(config, **kwargs):
        seen.update(kwargs)
        return real(config, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", spy)
    config = known_config("Qwen/Qwen2.5-0.5B-Instruct")
    config.auto_map = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    shapes_from_config(config)
    assert seen["trust_remote_code"] is False


def test_estimate_prints_the_settings_it_assumed(capsys, no_hub):
    assert cli.main(["train", "--estimate-memory", *SEED_T4]) == 0
    out = capsys.readouterr().out
    head, rest = out.split("\n\n", 1)
    assert head.splitlines() == [
        "assumed (change any with key=value):",
        "  batch          trainer.per_device_train_batch_size=2 (eval batch 8), data.cutoff_len=2048, data.packing=false",
        "  adapter        lora.r=16, lora.alpha=16, lora.dropout=0.05, targets k_proj, o_proj, q_proj, v_proj",
        "  checkpointing  trainer.gradient_checkpointing=null: on with a GPU, off on CPU",
        "  dtype          model.dtype=auto, trainer.precision=auto: 16-bit compute on a GPU, 32-bit on CPU; "
        "quantization=nf4 (compute auto)",
        "  optimizer      optimizer=adamw_torch",
    ]
    assert "total" in rest  # the totals come after what they assume


def test_readme_estimate_examples_print_what_readme_says(capsys, no_hub):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    flat = re.sub(r"\n\s*", " ", readme)  # commands and figures wrapped over lines
    examples = re.findall(r"ftsweep train --estimate-memory ((?:[\w.]+=\S+ ?)+)[^0-9]{0,200}?(\d[\d,]*) MiB", flat)
    assert len(examples) >= 2, examples  # the One run example and the GPU section
    for overrides, figure in examples:
        assert cli.main(["train", "--estimate-memory", *overrides.strip("` ").split()]) == 0
        out = capsys.readouterr().out
        assert f"total {figure}." in out, (overrides, figure, out)


def test_a_run_with_an_8bit_optimizer_leaves_no_model_alive(compose, tmp_path):
    """transformers registers each run's embeddings with bitsandbytes' process-wide GlobalOptimManager for
    an 8-bit optimizer; unremoved, every run (every trial of a warm worker) kept its embedding alive (on an
    H200: +502 MiB allocated in the next run of a 1B model)."""
    import gc
    import weakref

    import bitsandbytes as bnb

    from ftsweep.train import Components, run

    models = []

    class Watched(Components):
        def model(self, cfg, tokenizer):
            model = super().model(cfg, tokenizer)
            models.append(weakref.ref(model.get_input_embeddings()))
            return model

    cfg = compose(*FAST, "optimizer=adamw_8bit", "trainer.max_steps=2", "data.val_size=0", "objective.metric=train_loss")
    manager = bnb.optim.GlobalOptimManager.get_instance()
    manager.module_weight_config_triple.clear()  # whatever an earlier test in this process left
    for k in range(2):
        assert run(cfg, tmp_path / f"run{k}", parts=Watched())["status"] == "complete"
        assert manager.module_weight_config_triple == []
    gc.collect()
    assert [m() for m in models] == [None, None]
