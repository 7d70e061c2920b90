"""Memory of a training run: estimate it before the model loads, and refuse a trial that cannot fit.

The estimate is built from the model's *shapes* only: the architecture config (the tiny spec, or
``AutoConfig`` of a Hub model) is instantiated on the ``meta`` device, which allocates nothing, so the
parameter count, the linear layers LoRA would adapt and the vocabulary are exact. Components (MiB):

    weights      linear layers at their quantized size (nf4/fp4: 4 bit + absmax, int8: 8 bit + row scales);
                 the rest (embeddings, norms, lm_head) in fp32 after prepare_model_for_kbit_training,
                 or everything in model.dtype without quantization
    trainable    LoRA A/B (fp32: peft upcasts adapters) or every weight for a full fine-tune
    gradients    one per trainable parameter
    optimizer    AdamW: two states per trainable parameter (fp32), 8-bit AdamW: one byte each for
                 tensors of >= 4096 elements (bitsandbytes keeps smaller ones in fp32)
    activations  per layer and token, for batch x cutoff; with gradient checkpointing only each
                 layer's input is kept, plus one layer being recomputed; attention probabilities
                 (T x T per head) count where they are materialised (eager, or sdpa on CPU)
    logits       batch x cutoff x vocab: the logits, their fp32 upcast for the loss, its gradient, and
                 trl's entropy / token-accuracy pass (4 fp32 copies); in evaluation 2 copies for the eval batch
    runtime      what a process needs besides the model: on CPU the allocator, autograd and the
                 libraries imported after the model loads (measured on the tiny model); on CUDA the
                 kernels / workspace of cuBLAS and bitsandbytes

The CPU figure is compared with the growth of peak RSS from just before the model loads
(``metrics.json``: ``peak_rss_mb - rss_before_model_mb``); see tests/test_memory.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MiB = 2**20
# Process memory beyond the model on CPU (allocator arenas, autograd, trl/peft imported after the
# model): calibrated against peak RSS growth of tiny-model runs (tests/test_memory.py).
CPU_RUNTIME_MIB = 100.0
# cuBLAS workspace, bitsandbytes / sdpa kernels and allocator fragmentation on a GPU.
CUDA_RUNTIME_MIB = 600.0
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes optimizers keep tensors smaller than this in 32-bit
LOGIT_COPIES = 4
EVAL_LOGIT_COPIES = 2


class MemoryInfeasible(RuntimeError):
    """The estimate of a run exceeds the free memory of its device: the trial fails without loading."""


@dataclass
class Linear:
    name: str  # short name (q_proj), as LoRA targets it
    in_features: int
    out_features: int


@dataclass
class Shapes:
    """What the estimate needs to know about a model, read from its architecture config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    total_params: int
    linears: list[Linear] = field(default_factory=list)  # every nn.Linear except lm_head
    lm_head_params: int = 0


# ------------------------------------------------------------------------------------------- shapes
def model_config(cfg):
    """The architecture config of ``cfg.model`` without loading weights (tiny spec, or AutoConfig)."""
    if cfg.model.tiny is not None:
        from ftsweep.tiny import llama_config, spec_from_cfg

        # The tokenizer's length equals the spec's vocab_size (the BPE is trained to it, specials included).
        return llama_config(spec_from_cfg(cfg.model.tiny), cfg.model.tiny.vocab_size)
    from transformers import AutoConfig

    from ftsweep.model import hf_token

    return AutoConfig.from_pretrained(
        cfg.model.name_or_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code, token=hf_token()
    )


def shapes_from_config(hf_config) -> Shapes:
    """Instantiate the architecture on the meta device (no memory) and read its parameters."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=getattr(hf_config, "auto_map", None) is not None)
    linears, lm_head = [], 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if name.split(".")[-1] == "lm_head":
                lm_head = module.weight.numel()
            else:
                linears.append(Linear(name.split(".")[-1], module.in_features, module.out_features))
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    heads = text.num_attention_heads
    return Shapes(
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        vocab=text.vocab_size,
        total_params=sum(p.numel() for p in model.parameters()),
        linears=linears,
        lm_head_params=lm_head,
    )


# ----------------------------------------------------------------------------------------- estimate
def _dtype_bytes(name: str, on_cuda: bool) -> int:
    if name == "auto":
        name = "bfloat16" if on_cuda else "float32"
    return {"bfloat16": 2, "float16": 2, "float32": 4}[name]


def _quantized_bytes(n: int, out_features: int, q) -> float:
    if q.method == "int8":
        return n + 4 * out_features  # int8 weights + one fp32 scale per output row (SCB)
    if q.bnb_4bit_use_double_quant:  # absmax of 64-weight blocks as uint8, + fp32 per 256 of those
        return n / 2 + n / 64 + 4 * n / (64 * 256)
    return n / 2 + 4 * n / 64


def lora_targets(cfg, shapes: Shapes) -> list[Linear]:
    names = {lin.name for lin in shapes.linears}
    tm = cfg.lora.target_modules
    wanted = names if tm == "all-linear" else set(tm)
    return [lin for lin in shapes.linears if lin.name in wanted]


def estimate(cfg, *, shapes: Shapes | None = None, on_cuda: bool | None = None) -> dict[str, Any]:
    """Estimate the peak memory of training ``cfg`` on one device, without loading the model.

    Args:
        cfg: the composed train config.
        shapes: the model's shapes (default: read from ``cfg.model`` via :func:`model_config`).
        on_cuda: the device to estimate for (default: whether CUDA is available here).

    Returns:
        ``{"device", "batch", "seq_len", <component>: MiB ..., "total_mib"}``.
    """
    if on_cuda is None:
        from ftsweep.model import has_cuda

        on_cuda = has_cuda()
    shapes = shapes or shapes_from_config(model_config(cfg))
    q, lc, t, d = cfg.quantization, cfg.lora, cfg.trainer, cfg.data
    quantized = q.method != "none"
    compute = _dtype_bytes(q.bnb_4bit_compute_dtype if quantized else cfg.model.dtype, on_cuda)
    linear_params = sum(lin.in_features * lin.out_features for lin in shapes.linears)
    other_params = shapes.total_params - linear_params

    if quantized:
        weights = sum(_quantized_bytes(lin.in_features * lin.out_features, lin.out_features, q) for lin in shapes.linears)
        weights += 4 * other_params  # prepare_model_for_kbit_training upcasts the rest to fp32
    else:
        weights = compute * shapes.total_params

    if lc.enabled:
        tensors = [r for lin in lora_targets(cfg, shapes) for r in (lc.r * lin.in_features, lc.r * lin.out_features)]
        param_bytes = 4  # peft keeps adapter weights in fp32 (autocast_adapter_dtype)
    else:
        tensors = [shapes.total_params]
        param_bytes = compute
    trainable = sum(tensors)
    lora_bytes = param_bytes * trainable if lc.enabled else 0
    grads = param_bytes * trainable
    if cfg.optimizer.name in ("adamw_8bit", "paged_adamw_8bit"):
        optim = sum(2 * n if n >= BNB_MIN_8BIT_SIZE else 8 * n for n in tensors)
    else:
        optim = 2 * param_bytes * trainable

    batch, seq = t.per_device_train_batch_size, d.cutoff_len
    tokens = batch * seq
    act_bytes = compute
    # Saved for backward per token and layer: norms, q/k/v, attention output, o-proj input, residuals
    # (~12 x hidden) and the MLP's gate, up, act(gate) and product (~5 x intermediate); LoRA dropout
    # keeps a dropped copy of each adapted layer's input.
    per_layer = 12 * shapes.hidden + 5 * shapes.intermediate
    if lc.enabled and lc.dropout > 0:
        per_layer += sum(lin.in_features for lin in lora_targets(cfg, shapes)) / max(shapes.layers, 1)
    # Attention probabilities (batch x heads x T x T): flash / memory-efficient sdpa kernels on CUDA never
    # store them; eager attention and the CPU sdpa path (measured) keep one per layer, plus a transient one.
    attn_scores = 0
    if not on_cuda or (cfg.model.attn_implementation or "sdpa") == "eager":
        attn_scores = batch * shapes.heads * seq * seq * act_bytes
    layer_bytes = tokens * per_layer * act_bytes + attn_scores
    if t.gradient_checkpointing:  # only each layer's input is kept; one layer at a time is recomputed
        activations = shapes.layers * tokens * shapes.hidden * act_bytes + layer_bytes + attn_scores
    else:
        activations = shapes.layers * layer_bytes + attn_scores
    # Evaluation has no gradient: the logits and their fp32 upcast only, but for the eval batch.
    logits = 4 * shapes.vocab * max(LOGIT_COPIES * tokens, EVAL_LOGIT_COPIES * t.per_device_eval_batch_size * seq)

    runtime = (CUDA_RUNTIME_MIB if on_cuda else CPU_RUNTIME_MIB) * MiB
    parts = {
        "weights": weights,
        "lora": lora_bytes,
        "gradients": grads,
        "optimizer": optim,
        "activations": activations,
        "logits": logits,
        "runtime": runtime,
    }
    out: dict[str, Any] = {
        "device": "cuda" if on_cuda else "cpu",
        "batch": batch,
        "seq_len": seq,
        "trainable_params": trainable,
        "total_params": shapes.total_params,
        "lora_targets": sorted({lin.name for lin in lora_targets(cfg, shapes)}) if lc.enabled else [],
    }
    out.update({f"{k}_mib": v / MiB for k, v in parts.items()})
    out["total_mib"] = sum(parts.values()) / MiB
    return out


# ------------------------------------------------------------------------------------------- device
def free_memory_mib() -> tuple[float, str]:
    """Free memory of the device this process trains on: CUDA free bytes, else available RAM."""
    from ftsweep.model import has_cuda

    if has_cuda():
        import os

        import torch

        device = int(os.environ.get("LOCAL_RANK", "0"))
        free, _total = torch.cuda.mem_get_info(device)
        return free / MiB, f"cuda:{device}"
    import psutil

    return psutil.virtual_memory().available / MiB, "cpu"


def preflight(cfg, *, free_mib: float | None = None) -> dict[str, Any]:
    """Fail a run that cannot fit before its model is loaded.

    Raises:
        MemoryInfeasible: ``oom: estimated X MiB > free Y MiB on DEVICE (...)`` -- the prefix makes
            the trial's failure reason classify as ``oom`` in the sweep.
    """
    est = estimate(cfg)
    device = est["device"]
    if free_mib is None:
        free_mib, device = free_memory_mib()
    est["free_mib"] = free_mib
    if est["total_mib"] > free_mib:
        parts = ", ".join(f"{k[:-4]} {est[k]:.0f}" for k in est if k.endswith("_mib") and k not in ("total_mib", "free_mib"))
        raise MemoryInfeasible(
            f"oom: estimated {est['total_mib']:.0f} MiB > free {free_mib:.0f} MiB on {device} "
            f"(batch {est['batch']} x cutoff {est['seq_len']}; {parts} MiB)"
        )
    return est


def format_estimate(est: dict[str, Any]) -> str:
    lines = [f"memory estimate for one {est['device']} device, batch {est['batch']} x cutoff {est['seq_len']}:"]
    for key, value in est.items():
        if key.endswith("_mib") and key not in ("total_mib", "free_mib"):
            lines.append(f"  {key[:-4]:<12} {value:>10.1f} MiB")
    lines.append(f"  {'total':<12} {est['total_mib']:>10.1f} MiB")
    if "free_mib" in est:
        verdict = "fits" if est["total_mib"] <= est["free_mib"] else "DOES NOT FIT"
        lines.append(f"  {'free':<12} {est['free_mib']:>10.1f} MiB  -> {verdict}")
    share = 100 * est["trainable_params"] / max(est["total_params"], 1)
    lines.append(f"trainable parameters: {est['trainable_params']:,} of {est['total_params']:,} ({share:.4f}%)")
    if est["lora_targets"]:
        lines.append(f"LoRA targets: {', '.join(est['lora_targets'])}")
    return "\n".join(lines)


def print_estimate(cfg) -> None:
    """``ftsweep train --estimate-memory [overrides]``: print the estimate and the free memory."""
    est = estimate(cfg)
    est["free_mib"], _ = free_memory_mib()
    print(format_estimate(est))

