"""A plain trl + peft LoRA script, the baseline of bench/overhead.py: what one would write by hand.

Reads pre-tokenized rows (JSON lines with ``input_ids`` and ``labels``, as ``ftsweep inspect --dump``
writes them) so that data and masks are identical to ftsweep's; the completion mask is ``labels != -100``.
Seeds are set like ftsweep sets them (``set_seed`` before loading the model, so LoRA's A matrices match).

    python bench/plain_trl.py --model DIR --rows rows.jsonl --steps 200 --out result.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

STARTED = time.time()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--rows", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--scheduler", default="cosine")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--pad-token", default="<|reserved_special_token_250|>")
    p.add_argument("--packing", action="store_true")
    p.add_argument("--group-by-length", action="store_true")
    p.add_argument("--stats-steps", type=int, default=0,
                   help="only count real vs padded tokens in the first N training batches (no training)")
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    imported = time.time()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.pad_token = args.pad_token  # Llama 3 has no pad token: a reserved special token, as in seed 002
    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    dataset = Dataset.from_dict({
        "input_ids": [r["input_ids"] for r in rows],
        "completion_mask": [[int(x != -100) for x in r["labels"]] for r in rows],
    })

    set_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(model, LoraConfig(
        r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout, target_modules=args.targets,
        bias="none", task_type="CAUSAL_LM",
    ))

    out_dir = Path(args.out).with_suffix("")
    config = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        per_device_train_batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type=args.scheduler,
        warmup_steps=args.warmup_ratio,
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=args.logging_steps,
        eval_strategy="no",
        save_strategy="no",
        seed=args.seed,
        data_seed=args.seed,
        bf16=False,  # trl turns bf16 and activation checkpointing on by default, also on CPU
        activation_checkpointing=False,
        completion_only_loss=True,
        max_length=args.max_length,
        packing=args.packing,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    if args.stats_steps:
        Path(args.out).write_text(json.dumps(batch_stats(trainer, args.stats_steps), indent=1))
        return
    loop_start = time.time()
    result = trainer.train()
    loop_end = time.time()
    trainer.save_model(str(out_dir / "adapter"))
    history = trainer.state.log_history
    tokens = max([h.get("num_tokens", 0) for h in history] or [0])
    wall = loop_end - loop_start
    Path(args.out).write_text(json.dumps({
        "train_runtime": wall,
        "train_tokens": tokens,
        "train_tokens_per_s": tokens / wall,
        "train_loss": result.training_loss,
        "losses": [h["loss"] for h in history if "loss" in h],
        "log_history": history,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "t_imports_done": imported - STARTED,
    }, indent=1))


def batch_stats(trainer, n_batches: int) -> dict:
    """Real (non-padding) tokens vs token slots in the batches the trainer would feed, in its order."""
    real = slots = batches = 0
    per_batch = []
    loader = trainer.get_train_dataloader()
    while batches < n_batches:  # past one epoch: go round again, as training would
        for batch in loader:
            if batches == n_batches:
                break
            if "attention_mask" in batch:  # padded batch: batch x longest row
                n_real, n_slots = int(batch["attention_mask"].sum()), batch["attention_mask"].numel()
            else:  # padding-free packing: one flattened row, every slot a real token
                n_real = n_slots = batch["input_ids"].numel()
            real, slots, batches = real + n_real, slots + n_slots, batches + 1
            per_batch.append([n_real, n_slots])
    return {"batches": batches, "real_tokens": real, "token_slots": slots, "real_share": real / slots,
            "real_tokens_per_batch": real / batches, "per_batch": per_batch}


if __name__ == "__main__":
    main()
