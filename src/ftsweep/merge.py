"""``ftsweep merge RUN_DIR``: fold the LoRA adapter into the base model (seed 004's last step) and save
a standalone model; ``ftsweep export SWEEP_DIR``: the same for the best trial of a sweep.

The base is always loaded unquantized (``--dtype``): peft can only merge into 4-bit weights by
dequantising and re-quantising them, which loses the adapter's precision, so a QLoRA run is merged
into a bf16/fp16/fp32 copy of its base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ftsweep.config.options import PRECISION_DTYPES as DTYPES  # --dtype bf16|fp16|fp32 -> torch dtype name


def _usage(message: str):
    from ftsweep.config.errors import UsageError

    return UsageError(message)


def _check_base_not_quantized(cfg) -> None:
    """A base checkpoint saved already quantized (e.g. a bnb-4bit upload) cannot take an exact merge."""
    from ftsweep.model import resolve_model_path

    path = Path(resolve_model_path(cfg)) / "config.json"
    if path.is_file() and "quantization_config" in json.loads(path.read_text()):
        raise _usage(
            f"the base model {cfg.model.name_or_path} is stored quantized; merging into a 4-bit base without "
            "dequantising is not supported: point model.name_or_path at the full-precision base"
        )


def merge_run(run_dir: str | Path, out: str | Path | None = None, dtype: str | None = None, *,
              allow_failed: bool = False) -> Path:
    """Merge ``RUN_DIR/adapter`` into the full-precision base; save model, tokenizer, chat template, card.

    Args:
        run_dir: a finished LoRA/QLoRA run.
        out: output directory (default ``RUN_DIR/merged``).
        dtype: bf16 | fp16 | fp32 (default: the run's model.dtype; ``auto`` = bf16 on GPU, fp32 on CPU).
        allow_failed: merge the adapter of a run that failed or did not finish (refused otherwise).

    Returns:
        The output directory.
    """
    from ftsweep import rundir

    run_dir = Path(run_dir)
    cfg = rundir.load_config(run_dir)  # a wrong RUN_DIR fails before the heavy imports (and their warnings)
    adapter, full_model = rundir.RunDir(run_dir).adapter, rundir.RunDir(run_dir).full_model
    if not adapter.is_dir():
        if full_model.is_dir():
            raise _usage(f"{run_dir} is a full fine-tune: {full_model} is already a standalone model")
        raise _usage(f"{run_dir} has no adapter/ ({rundir.not_complete(run_dir) or 'did the run finish?'})")
    rundir.check_complete(run_dir, adapter, allow_failed)
    if dtype is not None and dtype not in DTYPES:
        raise _usage(f"--dtype must be one of {', '.join(DTYPES)} (got {dtype}); 4-bit merges are not supported")
    _check_base_not_quantized(cfg)
    out = Path(out) if out else run_dir / "merged"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # an earlier export, or anything else: kept
        raise _usage(f"{out}: exists and is not empty; a merge writes a new folder (remove it, or give another --out)")
    from ftsweep.config.outputs import check_output_dir

    check_output_dir(out, "--out")  # a file on the way, a read-only disk: one line before the model is loaded
    from ftsweep.verbosity import quiet_warnings

    quiet_warnings()
    from transformers import AutoTokenizer

    from ftsweep.data.deploy import deploy_chat_template
    from ftsweep.model import load_adapter, load_base_for_inference
    from ftsweep.stages.init_from import merge_init_adapter

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    base = load_base_for_inference(cfg, tokenizer, quantized=False, dtype=DTYPES[dtype] if dtype else None)
    base = merge_init_adapter(cfg, base)  # a run with init_from trained on the SFT model: merged first
    merged = load_adapter(base, adapter).merge_and_unload()
    _stop_where_generate_stops(merged, tokenizer)
    # written beside --out and moved into place whole: a merge stopped midway (Ctrl-C, a full disk) leaves no half
    # model in --out that looks like an export (and that the next export would be refused for)
    part = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        merged.save_pretrained(part, safe_serialization=True)
        tokenizer.chat_template = deploy_chat_template(cfg.data, tokenizer)
        tokenizer.save_pretrained(part)  # tokenizer.json + chat_template.jinja
        dtype_name = str(merged.dtype).removeprefix("torch.")  # float32, as --dtype and the model card say it
        (part / "README.md").write_text(model_card(run_dir, cfg, dtype_name), encoding="utf-8")
        if out.is_dir():  # (an empty folder: checked above)
            out.rmdir()
        part.rename(out)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    print(f"ftsweep: merged {adapter} into {cfg.model.name_or_path} ({dtype_name}) -> {out}")
    return out


def _stop_where_generate_stops(model, tokenizer) -> None:
    """The merged folder's stop ids are ``ftsweep generate``'s: a chat run trained to end its answers with the
    template's end-of-turn token (``<|eot_id|>``, ``<|im_end|>``), which a base's generation_config often lacks,
    so vLLM / TGI / ``generate()`` on the merged folder would otherwise run past the end of the answer."""
    from ftsweep.objectives.generation import stop_token_ids

    ids = stop_token_ids(tokenizer, model)
    if ids and getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = ids[0] if len(ids) == 1 else ids


def _length(t) -> str:
    """How long the run trained, as configured: its max_steps, or (max_steps -1) its epochs."""
    return f"max_steps {t.max_steps}" if t.max_steps > 0 else f"{t.num_train_epochs:g} epochs (max_steps -1)"


def model_card(run_dir: Path, cfg, dtype: str) -> str:
    """A README listing base model, data, hyperparameters and eval metrics of the run."""
    from ftsweep import rundir
    from ftsweep.tracking import scrub

    metrics = rundir.read_metrics(run_dir) or {}
    lines = [
        "---",
        f"base_model: {cfg.model.name_or_path}",
        "library_name: transformers",
        "tags: [ftsweep, lora, merged]",
        "---",
        f"# {cfg.model.name_or_path} + LoRA (merged)",
        "",
        f"Merged with `ftsweep merge` from `{run_dir.name}` (`merge_and_unload`, weights in {dtype}).",
        "",
        "## Training",
        f"- base model: `{cfg.model.name_or_path}`" + (f" (revision {cfg.model.revision})" if cfg.model.revision else ""),
        *_start_lines(cfg),
        _data_line(cfg),
        f"- quantization during training: {cfg.quantization.method}",
        f"- LoRA: r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, targets={_targets(cfg)}"
        + _lora_variant(run_dir, cfg),
        f"- optimizer: {cfg.optimizer.name}, lr={cfg.optimizer.lr}, weight decay={cfg.optimizer.weight_decay}",
        (f"- scheduler: {cfg.scheduler.name}; batch {cfg.trainer.per_device_train_batch_size} x accumulation "
         f"{cfg.trainer.gradient_accumulation_steps}; {_length(cfg.trainer)}; seed {cfg.trainer.seed}"),
        "",
        "## Evaluation",
    ]
    shown = ("eval_loss", "eval_mean_token_accuracy", "eval_perplexity", "initial_eval_loss", "train_loss", "train_steps")
    found = [f"- {k}: {metrics[k]:.4g}" if isinstance(metrics[k], float) else f"- {k}: {metrics[k]}" for k in shown if k in metrics]
    lines += found or ["- (no metrics.json)"]
    return scrub("\n".join(lines) + "\n")


def _start_lines(cfg: Any) -> list[str]:
    """The stage, and the runs whose adapters were merged before this one's (``init_from``)."""
    from omegaconf import OmegaConf

    lines = [f"- stage: {OmegaConf.select(cfg, 'stage.name', default='sft')}"]
    init = OmegaConf.select(cfg, "init_from", default=None)
    if init:
        from ftsweep.stages.init_from import init_adapters

        chain = ", ".join(f"`{p}`" for p in init_adapters(init)) or f"`{init}` (not found now)"
        lines.append(f"- started from (`init_from`): `{init}`; adapters merged before this run's: {chain}")
    return lines


def _data_line(cfg: Any) -> str:
    """The model card's data line: the file (or the dataset_info.json entry) and how it was read."""
    from ftsweep.data.options import data_options
    from ftsweep.errors import ConfigError

    d = cfg.data
    try:
        d = data_options(d)
    except ConfigError:  # the dataset_info.json entry is gone since: its name is still worth showing
        pass
    dataset = getattr(d, "dataset", None)  # (a config saved before data.dataset existed has no such key)
    entries = "entries" if "," in str(dataset) else "an entry"
    name = f"`{dataset}` ({entries} of {d.dataset_dir}/dataset_info.json)" if dataset else f"`{d.path}`"
    if d.format in ("chat", "sharegpt"):  # data.template (the Alpaca prompt) is not read: the chat template is
        chat = getattr(d, "chat_template", None)
        template = f"chat template {chat}" if chat else "the tokenizer's chat template"
    else:
        template = f"template {d.template}"
    return f"- data: {name} (format {d.format}, {template}, cutoff {d.cutoff_len})"


def _lora_variant(run_dir: Path, cfg: Any) -> str:
    """What else shaped the adapter: DoRA, rsLoRA (scale alpha/sqrt(r)), its init, modules trained whole
    (``modules_to_save``, the embeddings with ``data.train_embeddings``) and the tokens the run added."""
    from omegaconf import OmegaConf

    saved = run_dir / "adapter" / "adapter_config.json"
    ac = json.loads(saved.read_text()) if saved.is_file() else {}
    parts = [name for key, name in (("use_dora", "DoRA"), ("use_rslora", "rsLoRA")) if ac.get(key, cfg.lora.get(key))]
    init = OmegaConf.select(cfg, "lora.init", default="default")
    if init and init != "default":
        parts.append(f"init {init}")
    whole = ac.get("modules_to_save") if saved.is_file() else cfg.lora.get("modules_to_save")
    if whole:
        parts.append("trained whole: " + ", ".join(whole))
    added = OmegaConf.select(cfg, "data.special_tokens", default=None)
    if added:
        parts.append("added tokens: " + ", ".join(added))
    return "; " + "; ".join(parts) if parts else ""


def _targets(cfg) -> str:
    tm = cfg.lora.target_modules
    return tm if isinstance(tm, str) else ", ".join(tm)


# ---------------------------------------------------------------------------------------------- CLI
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="weights of the merged model (default: the run's model.dtype)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the merged model (token from HF_TOKEN / hf auth login)")
    p.add_argument("--public", action="store_true", help="create the Hub repo public (default private)")
    p.add_argument("--allow-failed", action="store_true",
                   help="merge the adapter of a run that failed or did not finish (refused otherwise)")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ftsweep merge", description="Merge a run's LoRA adapter into its base model.")
    p.add_argument("run_dir", type=Path, help="a run folder, or a sweep folder (its best trial)")
    _add_common(p)
    args = p.parse_args(argv)
    from ftsweep.sweeper.study import run_or_best_trial

    _check_push(args)
    out = merge_run(run_or_best_trial(args.run_dir), args.out, args.dtype, allow_failed=args.allow_failed)
    _maybe_push(out, args)
    return 0


def export_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ftsweep export", description="Merge the best trial of a sweep.")
    p.add_argument("sweep_dir", type=Path)
    _add_common(p)
    args = p.parse_args(argv)
    from ftsweep.sweeper.study import best_trial_dir

    best = best_trial_dir(args.sweep_dir)
    _check_push(args)
    print(f"ftsweep: best trial: {best}")
    out = merge_run(best, args.out or args.sweep_dir / "best_merged", args.dtype, allow_failed=args.allow_failed)
    _maybe_push(out, args)
    return 0


def _check_push(args) -> None:
    """A push that cannot happen (no token, offline) is said before the merge, not after minutes of it."""
    if args.push_to_hub:
        from ftsweep.publish import push_token

        push_token()  # the token and the Hub's offline mode


def _maybe_push(folder: Path, args) -> None:
    if args.push_to_hub:
        from ftsweep.publish import push_folder

        push_folder(folder, args.push_to_hub, private=not args.public)
