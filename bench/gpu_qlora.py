"""QLoRA (and bf16 LoRA) throughput and peak memory: ftsweep's training path vs a plain peft + trl script.

No Hub access needed: each model is a Llama architecture with random weights (Llama-3-8B and Llama-3.2-1B
shapes from ftsweep.memory.ARCHITECTURES), built directly in bf16 on the GPU (never an fp32 copy: an 8B
model in fp32 is 32 GB before the cast), saved once and loaded back. Random weights change no timing:
matmul cost depends on shapes.

Both sides do identical work on identical rows: the same tokenized rows (ftsweep's data pipeline on the
bundled Alpaca file, with- and no-input rows), the same tokenizer, LoRA r16 on all linear layers,
adamw_8bit, constant LR, gradient checkpointing (use_reentrant=True), the same attention, no evaluation,
N steps. Rows: every model x cutoff x packing on/off x quantization (nf4; ``--with-bf16-lora`` adds bf16
LoRA without quantization). Before a model's first row each side trains 3 untimed steps of it (CUDA
context, kernels); the side that runs first alternates from row to row. Between rows: ``gc.collect()``
(trl's bound forward makes a reference cycle, so a previous model would otherwise still hold memory),
bitsandbytes' optimizer overrides cleared, ``torch.cuda.empty_cache()`` and a peak reset.
Reported per side: tokens/s (non-padding), peak ``max_memory_allocated`` and ``max_memory_reserved``;
for ftsweep also the pre-trial estimate. Writes ``bench/results/gpu_qlora.json`` (or ``--out``).

    python bench/gpu_qlora.py                      # on a GPU: 8b and 1b, cutoffs 1024 2048, packing on/off
    python bench/gpu_qlora.py --models 1b --steps 10 --with-bf16-lora
    python bench/gpu_qlora.py --dry-run            # CPU, tiny shapes, a few steps: checks the script runs
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"8b": "meta-llama/Meta-Llama-3-8B", "1b": "meta-llama/Llama-3.2-1B"}
TINY = {"model_type": "llama", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}


def build_checkpoint(name: str, root: Path) -> Path:
    """Random-weight Llama of the named shape + a byte-level tokenizer (Llama 3 specials), created in
    bf16 directly on the GPU (fp32 on CPU), saved once."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from ftsweep.memory import ARCHITECTURES
    from ftsweep.tiny import TinySpec, build_tokenizer

    path = root / f"llama-{name}-random"
    if (path / "config.json").is_file():
        return path
    tok = build_tokenizer(TinySpec())
    facts = dict(TINY if name == "tiny" else ARCHITECTURES[MODELS[name]])
    config = AutoConfig.for_model(facts.pop("model_type"), **facts, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in bf16: no fp32 copy ever exists
    try:
        with torch.device("cuda" if cuda else "cpu"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    del model
    _release()
    return path


def _release() -> None:
    """Free the previous row's model: break trl's reference cycle, drop bitsandbytes' optimizer overrides
    (transformers registers each run's embeddings there for an 8-bit optimizer and nothing removes them:
    the plain script would keep every run's embedding alive, +502 MiB allocated on the 1B shape), return
    cached blocks, reset peaks."""
    import torch

    bnb = sys.modules.get("bitsandbytes")
    if bnb is not None:
        bnb.optim.GlobalOptimManager.get_instance().module_weight_config_triple.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak() -> dict:
    from ftsweep.device import peak_memory_mib

    peak = peak_memory_mib()
    return {"peak_allocated_mib": round(peak["allocated"], 1), "peak_reserved_mib": round(peak["reserved"], 1)}


def _overrides(ckpt: Path, cutoff: int, packing: bool, quant: str, args) -> list[str]:
    return [
        "model=llama3_8b", f"model.name_or_path={ckpt}", f"quantization={quant}", "lora=r16_all_linear",
        "optimizer=adamw_8bit", "optimizer.lr=1e-4", "scheduler=constant_with_warmup", "scheduler.warmup_steps=0",
        "data=alpaca_demo", f"data.max_rows={args.rows}", "data.val_size=0", f"data.cutoff_len={cutoff}",
        f"data.packing={packing}", f"trainer.max_steps={args.steps}", f"trainer.per_device_train_batch_size={args.batch}",
        "trainer.gradient_checkpointing=true", "trainer.use_reentrant=true", "trainer.logging_steps=1",
        "objective.metric=train_loss", "logger=none", f"cache_dir={args.cache}",  # no evaluation on either side
    ]


def run_ftsweep(cfg, args, shapes) -> dict:
    """The ftsweep training path (ftsweep.train.run), plus its pre-trial estimate."""
    from ftsweep.memory import estimate
    from ftsweep.train import run

    est = estimate(cfg, shapes=shapes)
    metrics = run(cfg, Path(tempfile.mkdtemp(prefix="ftsweep-bench-", dir=args.cache)))
    return {"tokens_per_s": metrics["train_tokens_per_s"], **_peak(), "steps": metrics["train_steps"],
            "train_tokens": metrics["train_tokens"], "train_loss": metrics["train_loss"], "estimate_mib": est["total_mib"],
            "estimate": {k: round(v, 1) for k, v in est.items() if k.endswith("_mib")}}


def run_plain(cfg, args) -> dict:
    """A plain peft + trl script in the shape of seed 002 (no ftsweep model or trainer code) on the same
    tokenized rows: from_pretrained + BitsAndBytesConfig, SFTTrainer(peft_config=...)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from ftsweep.data import build_datasets
    from ftsweep.model import attention_implementation, load_tokenizer

    cuda = torch.cuda.is_available()
    compute = torch.bfloat16 if cuda else torch.float32
    tokenizer = load_tokenizer(cfg)
    rows = build_datasets(cfg, tokenizer).train  # the rows ftsweep trains on
    kwargs = {"dtype": compute}
    if cfg.quantization.method != "none":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute,
                                                           bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
        kwargs["device_map"] = {"": 0 if cuda else "cpu"}
    attn = attention_implementation(cfg)
    if attn:
        kwargs["attn_implementation"] = attn
    model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, **kwargs)
    if not cuda:  # bitsandbytes 0.50 CPU repack bug (environment.md); irrelevant on GPU
        for m in model.modules():
            if type(m).__name__ == "Linear4bit":
                m.support_avx512bf16_for_cpu = False
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", bias="none",
                             task_type="CAUSAL_LM")
    sft = SFTConfig(output_dir=tempfile.mkdtemp(prefix="plain-bench-", dir=args.cache), report_to="none",
                    per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, warmup_steps=0,
                    max_steps=args.steps, learning_rate=1e-4, logging_steps=1, optim="adamw_bnb_8bit",
                    lr_scheduler_type="constant_with_warmup", seed=42, gradient_checkpointing=True,
                    gradient_checkpointing_kwargs={"use_reentrant": True}, max_length=cfg.data.cutoff_len,
                    packing=cfg.data.packing, bf16=cuda, fp16=False, save_strategy="no", eval_strategy="no",
                    use_cpu=not cuda, disable_tqdm=True, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=sft, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config)
    started = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - started
    tokens = max([h.get("num_tokens", 0) for h in trainer.state.log_history] or [0])
    out = {"tokens_per_s": tokens / wall, **_peak(), "steps": trainer.state.global_step, "train_tokens": int(tokens),
           "train_loss": float(result.training_loss)}
    del trainer, model
    return out


def warm_up(cfg, args, paths: list[str], shapes) -> None:
    """Untimed: each side trains 3 steps of the model's first row before any measured one, so CUDA's
    context, cuBLAS' and bitsandbytes' kernels for these shapes are loaded (on an H200 a warm-up on a tiny
    shape left the first measured run of the 1B shape at half the speed of the next)."""
    quick = argparse.Namespace(**{**vars(args), "steps": 3})
    started = time.perf_counter()
    for path in paths:
        _release()
        run_ftsweep(cfg, quick, shapes) if path == "ftsweep" else run_plain(cfg, quick)
    _release()
    print(f"warm-up ({', '.join(paths)}, 3 steps): {time.perf_counter() - started:.1f} s", file=sys.stderr)


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
    p.add_argument("--with-bf16-lora", action="store_true", help="also run bf16 LoRA (no quantization) next to QLoRA")
    p.add_argument("--rows", type=int, default=999, help="Alpaca rows to use (the bundled file has 999)")
    p.add_argument("--cache", type=Path, default=None, help="where checkpoints and runs go (default: a temp dir, removed at exit)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from ftsweep.device import pin_single_gpu

    pin_single_gpu()  # before torch starts CUDA: trl refuses several visible GPUs in one process
    import os

    import torch

    if args.dry_run:
        args.models, args.cutoffs, args.steps, args.rows = "tiny", "128", 2, 60
    elif not torch.cuda.is_available():
        p.error("no CUDA GPU: run with --dry-run on CPU")
    if args.cache is None:
        args.cache = Path(tempfile.mkdtemp(prefix="gpu-qlora-"))
        atexit.register(shutil.rmtree, args.cache, True)
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoConfig

    from ftsweep.config.compose import compose
    from ftsweep.memory import shapes_from_config

    quants = ["nf4", "none"] if args.with_bf16_lora else ["nf4"]
    paths = args.paths.split(",")
    cutoffs = [int(c) for c in args.cutoffs.split(",")]
    results = []
    for name in args.models.split(","):
        ckpt = build_checkpoint(name, args.cache)
        shapes = shapes_from_config(AutoConfig.from_pretrained(ckpt))
        warm_up(compose(_overrides(ckpt, cutoffs[0], False, quants[0], args)), args, paths, shapes)
        for quant in quants:
            for cutoff in cutoffs:
                for packing in (False, True):
                    cfg = compose(_overrides(ckpt, cutoff, packing, quant, args))
                    order = paths if len(results) % 2 == 0 else paths[::-1]  # alternate which side runs first
                    row = {"model": name, "quantization": quant, "cutoff": cutoff, "packing": packing, "batch": args.batch,
                           "steps": args.steps, "order": order}
                    for path in order:
                        _release()
                        try:
                            row[path] = run_ftsweep(cfg, args, shapes) if path == "ftsweep" else run_plain(cfg, args)
                        except Exception as err:
                            row[path] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
                    _release()
                    results.append(row)
                    print(json.dumps(row), flush=True)
    report = {"dry_run": args.dry_run, "environment": environment(), "results": results,
              "note": "peak_*_mib: torch.cuda.max_memory_allocated / max_memory_reserved per run on GPU "
                      "(reset between runs); on CPU the process RSS high-water mark (not reset, only indicative)"}
    out = args.out or ROOT / "bench" / "results" / ("gpu_qlora-dry-run.json" if args.dry_run else "gpu_qlora.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
