"""QLoRA throughput and peak memory: ftsweep's training path vs a plain peft + trl script (seed 002).

No Hub access needed: each model is a Llama architecture built from a ``LlamaConfig`` with random
weights (Llama-3-8B and Llama-3.2-1B shapes), saved once in bf16 and loaded back in 4-bit nf4. Both
paths train LoRA r16 on all linear layers on the bundled Alpaca rows for N steps, at each cutoff, with
and without packing, and report tokens/s (non-padding tokens) and peak GPU memory, next to ftsweep's
pre-trial memory estimate. Prints JSON and writes it to ``bench/results/`` (or ``--out``).

    python bench/gpu_qlora.py                      # on a GPU: 8b and 1b, cutoffs 1024 2048, packing on/off
    python bench/gpu_qlora.py --models 1b --steps 10
    python bench/gpu_qlora.py --dry-run            # CPU, tiny shapes, a few steps: checks the script runs

The plain script mirrors seed 002: BitsAndBytesConfig(nf4, double quant, bf16 compute),
``device_map={"": 0}``, gradient checkpointing with ``use_reentrant=True``, ``adamw_8bit``,
``constant_with_warmup``, SFTTrainer with ``peft_config`` (trl 1.x: prompt/completion rows replace the
removed completion-only collator). Random weights change no timing: matmul cost depends on shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {
    # meta-llama/Meta-Llama-3-8B config.json
    "8b": {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192, "rope_theta": 500000.0},
    # meta-llama/Llama-3.2-1B config.json (tied embeddings)
    "1b": {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
               "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072, "rope_theta": 500000.0,
               "tie_word_embeddings": True},
    # --dry-run
    "tiny": {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024},
}
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def build_checkpoint(name: str, root: Path) -> Path:
    """Random-weight Llama of the named shape + a byte-level tokenizer (Llama 3 specials), saved in bf16."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftsweep.tiny import TinySpec, build_tokenizer

    path = root / f"llama-{name}-random"
    if (path / "config.json").is_file():
        return path
    tok = build_tokenizer(TinySpec())
    config = LlamaConfig(**SHAPES[name], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return path


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark on CPU


def _overrides(ckpt: Path, cutoff: int, packing: bool, args) -> list[str]:
    return [
        "model=llama3_8b", f"model.name_or_path={ckpt}", "quantization=nf4", "lora=r16_all_linear",
        "optimizer=adamw_8bit", "optimizer.lr=1e-4", "scheduler=constant_with_warmup", "scheduler.warmup_steps=0",
        "data=alpaca_demo", f"data.max_rows={args.rows}", "data.val_size=8", "trainer.eval_steps=100000", f"data.cutoff_len={cutoff}", f"data.packing={packing}",
        f"trainer.max_steps={args.steps}", f"trainer.per_device_train_batch_size={args.batch}",
        "trainer.gradient_checkpointing=true", "trainer.use_reentrant=true", "trainer.logging_steps=1",
        "logger=none", f"cache_dir={args.cache}",
    ]


def run_ftsweep(ckpt: Path, cutoff: int, packing: bool, args, shapes) -> dict:
    """The ftsweep training path (ftsweep.train.run), plus its pre-trial estimate."""
    from ftsweep.config_io import compose
    from ftsweep.memory import estimate
    from ftsweep.train import run

    cfg = compose(_overrides(ckpt, cutoff, packing, args))
    est = estimate(cfg, shapes=shapes)
    _reset_peak()
    metrics = run(cfg, Path(tempfile.mkdtemp(prefix="ftsweep-bench-", dir=args.cache)))
    return {"tokens_per_s": metrics["train_tokens_per_s"], "peak_memory_mib": _peak_mib(),
            "steps": metrics["train_steps"], "train_loss": metrics["train_loss"], "estimate_mib": est["total_mib"],
            "estimate": {k: round(v, 1) for k, v in est.items() if k.endswith("_mib")}}


def run_plain(ckpt: Path, cutoff: int, packing: bool, args) -> dict:
    """A plain peft + trl script in the shape of seed 002 (no ftsweep code)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    compute = torch.bfloat16 if cuda else torch.float32
    quantization_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute,
                                             bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
    _reset_peak()
    model = AutoModelForCausalLM.from_pretrained(ckpt, quantization_config=quantization_config,
                                                 device_map={"": 0 if cuda else "cpu"}, dtype=compute)
    if not cuda:  # bitsandbytes 0.50 CPU repack bug (environment.md); irrelevant on GPU
        for m in model.modules():
            if type(m).__name__ == "Linear4bit":
                m.support_avx512bf16_for_cpu = False
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    tokenizer.pad_token = "<|reserved_special_token_250|>"
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = json.loads((ROOT / "data" / "alpaca_en_demo.json").read_text())
    rows = [r for r in rows if not r["input"]][: args.rows]  # seed 002: no-input rows only
    data = Dataset.from_list([{"prompt": ALPACA_NO_INPUT.format(instruction=r["instruction"]),
                               "completion": r["output"] + tokenizer.eos_token} for r in rows])
    peft_config = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", bias="none",
                             task_type="CAUSAL_LM")
    sft = SFTConfig(output_dir=tempfile.mkdtemp(prefix="plain-bench-", dir=args.cache), report_to="none",
                    per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, warmup_steps=0,
                    max_steps=args.steps, learning_rate=1e-4, logging_steps=1, optim="adamw_bnb_8bit",
                    lr_scheduler_type="constant_with_warmup", seed=42, gradient_checkpointing=True,
                    gradient_checkpointing_kwargs={"use_reentrant": True}, max_length=cutoff, packing=packing,
                    bf16=cuda, save_strategy="no", use_cpu=not cuda, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=sft, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    tokens = max([h.get("num_tokens", 0) for h in trainer.state.log_history] or [0])
    out = {"tokens_per_s": tokens / wall, "peak_memory_mib": _peak_mib(), "steps": trainer.state.global_step,
           "train_loss": float(result.training_loss)}
    del trainer, model
    return out


def environment() -> dict:
    import importlib.metadata as md

    import torch

    info = {"python": platform.python_version(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_mib"] = torch.cuda.get_device_properties(0).total_memory / 2**20
    for pkg in ("torch", "transformers", "peft", "trl", "bitsandbytes"):
        info[pkg] = md.version(pkg)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, cutoff 128 with/without packing, 2 steps, 60 rows")
    p.add_argument("--models", default="8b,1b", help="comma-separated: 8b, 1b")
    p.add_argument("--cutoffs", default="1024,2048")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=2, help="per-device batch (seed 002: 2)")
    p.add_argument("--paths", default="ftsweep,plain")
    p.add_argument("--rows", type=int, default=999, help="Alpaca rows to use (the bundled file has 999)")
    p.add_argument("--cache", type=Path, default=None, help="where checkpoints and runs go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    import torch

    if args.dry_run:
        args.models, args.cutoffs, args.steps, args.rows = "tiny", "128", 2, 60
    elif not torch.cuda.is_available():
        p.error("no CUDA GPU: run with --dry-run on CPU")
    args.cache = args.cache or Path(tempfile.mkdtemp(prefix="gpu-qlora-"))
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ftsweep.memory import shapes_from_config

    results = []
    for name in args.models.split(","):
        ckpt = build_checkpoint(name, args.cache)
        from transformers import AutoConfig

        shapes = shapes_from_config(AutoConfig.from_pretrained(ckpt))
        for cutoff in [int(c) for c in args.cutoffs.split(",")]:
            for packing in (False, True):
                row = {"model": name, "cutoff": cutoff, "packing": packing, "batch": args.batch, "steps": args.steps}
                for path in args.paths.split(","):
                    try:
                        row[path] = (run_ftsweep(ckpt, cutoff, packing, args, shapes) if path == "ftsweep"
                                     else run_plain(ckpt, cutoff, packing, args))
                    except Exception as err:
                        row[path] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
                    _reset_peak()
                results.append(row)
                print(json.dumps(row), flush=True)
    report = {"dry_run": args.dry_run, "environment": environment(), "results": results,
              "note": "peak_memory_mib: torch.cuda.max_memory_allocated per run on GPU; on CPU the process RSS high-water mark"}
    out = args.out or ROOT / "bench" / "results" / f"gpu_qlora{'-dry-run' if args.dry_run else ''}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
