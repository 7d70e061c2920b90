"""Memory of a training run: estimate it before the model loads, and refuse a trial that cannot fit.

The estimate is built from the model's *shapes* only. The architecture config comes from, in order: the
tiny spec; :data:`ARCHITECTURES` (facts copied from the public ``config.json`` of every shipped model
option, so ``--estimate-memory`` works offline); a local directory's ``config.json``; the Hub. It is
instantiated on the ``meta`` device, which allocates nothing, so the parameter count, the linear layers
LoRA adapts and the vocabulary are exact. What trl 1.16 / transformers 5 / peft 0.21 allocate (bytes;
``c`` = 2 for bf16/fp16 compute on a GPU, 4 for fp32 on CPU):

    weights      linear layers at their quantized size (nf4/fp4: 4 bit + absmax, int8: 8 bit + row scales);
                 the rest (embeddings, norms, lm_head; tied embeddings once) in the compute dtype: ftsweep
                 does not upcast them (no prepare_model_for_kbit_training). Unquantized: everything in c.
    trainable    LoRA A/B in fp32 (peft's autocast_adapter_dtype); with data.train_embeddings the
                 embedding (and an untied lm_head) copies in c; a full fine-tune: every weight in c
    gradients    one per trainable parameter, in its dtype
    optimizer    AdamW: two states per trainable parameter in its dtype; 8-bit AdamW: one byte each for
                 tensors of >= 4096 elements (bitsandbytes keeps smaller ones in fp32)
    activations  training, per token (batch x cutoff; packing flattens the same tokens): 12 x hidden +
                 5 x intermediate values per layer in c (+ the dropped input of every adapted layer); with
                 gradient checkpointing only each layer's input (hidden) is kept, plus one layer recomputed.
                 Attention scores (heads x T x T) only where materialised: eager, or sdpa on CPU (measured).
    lm_head      trl's fused LM head: the logits are never materialised; tiles of at most 4,096 tokens x
                 32,768 vocab (the tile and its gradient, in c; fp32 on CPU)
    eval         evaluation computes the loss only, without gradients: the eval micro-batch's widest
                 layer (4 x hidden + 3 x intermediate per token) + one LM-head tile. It runs between
                 training steps, so the peak is static + max(training, evaluation) dynamic memory.
    generation   a generation objective (objective=exact_match, ...): the KV cache of the generation batch
                 (objective.batch_size, else the most rows, up to 64, that fit in max(training, evaluation))
                 (2 x layers x kv_heads x head_dim x batch x (cutoff_len + new tokens) in c), the prefill's
                 widest layer and the last position's logits; like evaluation, between training steps.
    runtime      CUDA: cuBLAS workspace, bitsandbytes / attention kernels and allocator slack (600 MiB);
                 CPU: allocator arenas, autograd and libraries imported after the model (calibrated, 100 MiB)

Known error: on CPU it is within 30% of the growth of peak RSS of tiny-model runs (tests/test_memory.py).
On CUDA (one H200, 2026-12-04, nf4, LoRA r16 all linear, batch 2, gradient checkpointing; bench/gpu_qlora.py)
the estimate vs ``max_memory_allocated``: 1B shape, packed rows (batch x cutoff tokens in every step):
cutoff 1024 2,919 vs 2,570 MiB (1.14x), 2048 5,175 vs 5,056 (1.02x); 8B shape, cutoff 1024: packed 8,342
vs 6,854 (1.22x; 7,856 measured, less the previous run's 1,002 MiB embedding that bitsandbytes then kept
alive: :func:`ftsweep.train.forget_optimizer_overrides`), unpacked 7,830 vs 6,752 (1.16x). Unpacked rows
are padded to the longest in the batch, so the estimate (batch x cutoff tokens) is the bound for the
longest rows: on the bundled Alpaca rows (about 370 tokens on average) the 1B shape measured 1,527 MiB at
cutoff 1024 (estimate 2,407, 1.58x) and 3,534 at 2048 (3,127, 0.88x). ``max_memory_reserved`` adds the allocator's slack (2-15% there).
docs/memory.md shows the arithmetic for Llama-3-8B.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftsweep.config.options import DTYPE_BYTES, OPTIMIZERS, PRECISION_DTYPES
from ftsweep.errors import MemoryInfeasible

MiB = 2**20
GiB = 2**30
# Process memory beyond the model on CPU (allocator arenas, autograd, trl/peft imported after the
# model): calibrated against peak RSS growth of tiny-model runs (tests/test_memory.py). 2026-11-25: with the
# estimate's other parts at 133 / 320 MiB, the two cases measured 308-337 MiB and 467 MiB (160 MiB then).
# 2026-12-07, after the compact LM head and lighter evaluation: other parts 117 / 364 MiB, measured 211-225 MiB and
# 427 MiB (160 MiB put the estimate at 1.23-1.31x the measured peak); 100 MiB puts it at 0.96-1.03x and 1.09x.
# Those peaks vary from run to run with glibc's sliding mmap threshold (214-312 and 448-481 MiB on 2026-12-07, more
# under load); the test now fixes the threshold, where the peaks are what the run holds, 229 and 367 MiB (0.95x and
# 1.26x). Left at 100: with the default allocator a real run's RSS reaches the estimate.
CPU_RUNTIME_MIB = 100.0
# cuBLAS workspace, bitsandbytes / attention kernels and allocator fragmentation on a GPU.
CUDA_RUNTIME_MIB = 600.0
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes optimizers keep tensors smaller than this in 32-bit
# trl 1.16 fused LM head (trl/kernels/chunked_logprob.py): tokens x vocab tiles, the tile and its gradient.
LM_TILE_TOKENS = 4096
LM_TILE_VOCAB = 32768
LM_TILE_COPIES = 2
# Usable memory of common GPUs (MiB, as nvidia-smi reports the total, less ~500 MiB of CUDA context).
GPU_SIZES = {"16 GB (T4, V100-16GB)": 15_360 - 500, "24 GB (L4, A10, RTX 4090)": 23_034 - 500,
             "40 GB (A100-40GB)": 40_960 - 500, "80 GB (A100-80GB, H100)": 81_559 - 500}

# Architecture facts from the public config.json of each shipped model option (conf/model/*.yaml): the
# estimate needs no Hub access for them. model_type picks the transformers class (EXAONE 3.5 is native:
# transformers' "exaone" is the Llama implementation).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3-8B": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
        "max_position_embeddings": 8192},
    "meta-llama/Llama-3.1-8B-Instruct": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
        "max_position_embeddings": 131072},
    "meta-llama/Llama-3.2-1B": {
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True,
        "max_position_embeddings": 131072},
    "beomi/Llama-3-Open-Ko-8B": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
        "max_position_embeddings": 8192},
    "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct": {
        "model_type": "exaone", "hidden_size": 2560, "intermediate_size": 7168, "num_hidden_layers": 30,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 102400, "tie_word_embeddings": True,
        "max_position_embeddings": 32768},
    "Qwen/Qwen2.5-0.5B-Instruct": {
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "max_position_embeddings": 32768},
}


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
    total_params: int  # tied embeddings counted once
    linears: list[Linear] = field(default_factory=list)  # every nn.Linear except lm_head
    lm_head_params: int = 0
    tied: bool = False


# ------------------------------------------------------------------------------------------- shapes
def known_config(name: str):
    """The transformers config of a shipped model option from :data:`ARCHITECTURES`, or None."""
    facts = ARCHITECTURES.get(name)
    if facts is None:
        return None
    from transformers import AutoConfig

    facts = dict(facts)
    return AutoConfig.for_model(facts.pop("model_type"), **facts)


def model_config(cfg):
    """The architecture config of ``cfg.model`` without loading weights: tiny spec, the table of shipped
    options, a local directory, or (last) the Hub. Remote code only when the option asks for it."""
    m = cfg.model
    if m.tiny is not None:
        from ftsweep.tiny import llama_config, spec_from_cfg

        # The tokenizer's length equals the spec's vocab_size (the BPE is trained to it, specials included).
        return llama_config(spec_from_cfg(m.tiny), m.tiny.vocab_size)
    known = known_config(m.name_or_path)
    if known is not None:
        return known
    from transformers import AutoConfig

    from ftsweep.model import hf_token, resolve_model_path

    return AutoConfig.from_pretrained(resolve_model_path(cfg), revision=m.revision, trust_remote_code=m.trust_remote_code,
                                      token=hf_token())


def shapes_from_config(hf_config, *, trust_remote_code: bool = False) -> Shapes:
    """Instantiate the architecture on the meta device (no memory) and read its parameters."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust_remote_code)
    linears, lm_head = [], 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if name.split(".")[-1] == "lm_head":
                lm_head = module.weight.numel()
            else:
                linears.append(Linear(name.split(".")[-1], module.in_features, module.out_features))
    out_emb = model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is model.get_input_embeddings().weight
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    heads = text.num_attention_heads
    return Shapes(
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        vocab=text.vocab_size,
        total_params=sum(p.numel() for p in model.parameters()),  # parameters() yields a tied weight once
        linears=linears,
        lm_head_params=lm_head,
        tied=tied,
    )


def shapes_for(cfg) -> Shapes:
    return shapes_from_config(model_config(cfg), trust_remote_code=cfg.model.trust_remote_code)


# ----------------------------------------------------------------------------------------- estimate
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


def _compute_bytes(cfg, on_cuda: bool) -> int:
    """Bytes per value of the compute dtype: the dtype the weights / activations are held in."""
    q = cfg.quantization
    name = q.bnb_4bit_compute_dtype if q.method in ("nf4", "fp4") else cfg.model.dtype
    if name == "auto":
        precision = cfg.trainer.precision
        if precision == "auto":
            precision = "bf16" if on_cuda else "fp32"
        name = PRECISION_DTYPES[precision]
    return DTYPE_BYTES[name]


def _trainable_tensors(cfg, shapes: Shapes, c: int) -> list[tuple[int, int]]:
    """(elements, bytes per element) of every trainable tensor."""
    lc = cfg.lora
    if not lc.enabled:
        return [(shapes.total_params, c)]
    tensors = [(lc.r * n, 4) for lin in lora_targets(cfg, shapes) for n in (lin.in_features, lin.out_features)]
    if cfg.data.train_embeddings:  # modules_to_save: a trainable copy of the embeddings (and of an untied lm_head)
        embed = shapes.vocab * shapes.hidden
        tensors.append((embed, c))
        if not shapes.tied:
            tensors.append((shapes.lm_head_params or embed, c))
    return tensors


def estimate(cfg, *, shapes: Shapes | None = None, on_cuda: bool | None = None,
             gradient_checkpointing: bool | None = None) -> dict[str, Any]:
    """Estimate the peak memory of training ``cfg`` on one device, without loading the model.

    Args:
        cfg: the composed train config.
        shapes: the model's shapes (default: from ``cfg.model`` via :func:`model_config`).
        on_cuda: the device to estimate for (default: whether CUDA is available here).
        gradient_checkpointing: overrides ``trainer.gradient_checkpointing`` (to show the alternative).

    Returns:
        ``{"device", "batch", "seq_len", <component>_mib ..., "total_mib"}``.
    """
    from ftsweep.device import has_cuda, use_checkpointing

    if on_cuda is None:
        on_cuda = has_cuda()
    shapes = shapes or shapes_for(cfg)
    q, lc, t, d = cfg.quantization, cfg.lora, cfg.trainer, cfg.data
    ckpt = use_checkpointing(t.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing,
                             on_cuda)
    c = _compute_bytes(cfg, on_cuda)
    linear_params = sum(lin.in_features * lin.out_features for lin in shapes.linears)
    if q.method != "none":
        weights = sum(_quantized_bytes(lin.in_features * lin.out_features, lin.out_features, q) for lin in shapes.linears)
        weights += c * (shapes.total_params - linear_params)  # embeddings, norms, lm_head stay in the compute dtype
    else:
        weights = c * shapes.total_params

    tensors = _trainable_tensors(cfg, shapes, c)
    trainable = sum(n for n, _ in tensors)
    adapter = sum(n * b for n, b in tensors) if lc.enabled else 0  # the base's own weights are in `weights`
    grads = sum(n * b for n, b in tensors)
    if OPTIMIZERS[cfg.optimizer.name].eight_bit:
        optim = sum(2 * n if n >= BNB_MIN_8BIT_SIZE else 8 * n for n, _ in tensors)
    else:
        optim = sum(2 * n * b for n, b in tensors)

    # The stage's sequences per example: DPO trains chosen and rejected in one batch of 2 x batch rows and then
    # runs the reference (adapter off, no grad) over the same rows; KTO adds no-grad KL and reference passes.
    trained_seqs, forward_only_seqs = _stage_memory(cfg)
    batch, seq = t.per_device_train_batch_size * trained_seqs, d.cutoff_len
    # GRPO: every row is a prompt plus a sampled completion, generated first with a KV cache over both.
    completion = _completion_length(cfg)
    seq += completion
    rollout = (batch * seq * 2 * shapes.layers * shapes.kv_heads * (shapes.hidden // max(shapes.heads, 1)) * c
               if completion else 0)
    tokens = batch * seq
    # Saved for backward per token and layer: norms, q/k/v, attention output, o-proj input, residuals
    # (~12 x hidden) and the MLP's gate, up, act(gate) and product (~5 x intermediate); LoRA dropout
    # keeps a dropped copy of each adapted layer's input.
    per_layer = 12 * shapes.hidden + 5 * shapes.intermediate
    if lc.enabled and lc.dropout > 0:
        per_layer += sum(lin.in_features for lin in lora_targets(cfg, shapes)) / max(shapes.layers, 1)
    attn = cfg.model.attn_implementation or "sdpa"
    # Attention probabilities (batch x heads x T x T): flash / flex / memory-efficient sdpa kernels on
    # CUDA never store them; eager attention and the CPU sdpa path (measured) keep one per layer.
    # They are part of layer_bytes, counted once per layer: an earlier version added one more on top, which
    # measured peaks do not show (tiny model, CPU, batch 16: cutoff 256 measured 317 MiB, estimate 277 without
    # / 293 with it; cutoff 512 measured 426, estimate 425 without / 489 with it).
    attn_scores = batch * shapes.heads * seq * seq * c if (not on_cuda or attn == "eager") else 0
    layer_bytes = tokens * per_layer * c + attn_scores
    if ckpt:  # only each layer's input is kept; one layer at a time is recomputed
        activations = shapes.layers * tokens * shapes.hidden * c + layer_bytes
    else:
        activations = shapes.layers * layer_bytes
    # trl's packing ("bfd") flattens the batch into one padding-free sequence of T = batch x cutoff tokens. On an
    # H200 (1B shape, nf4, batch 2, packed, flex_attention: ftsweep's default for packing on a GPU) the peak
    # grew as heads x T x T scores twice over (probabilities and their gradient; per layer without
    # checkpointing): cutoff 1024 2,570 MiB, 2048 5,056 MiB, where the estimate without this term said 2,407
    # and 3,127. Flash attention keeps no scores; it has not been measured here.
    if on_cuda and not attn.startswith("flash") and d.packing and d.format != "text" and cfg.stage.name == "sft":
        flat_scores = shapes.heads * tokens * tokens * c
        activations += (2 if ckpt else shapes.layers + 1) * flat_scores
    tile_bytes = c if on_cuda else 4
    lm_head = LM_TILE_COPIES * min(tokens, LM_TILE_TOKENS) * min(shapes.vocab, LM_TILE_VOCAB) * tile_bytes
    eval_rows = t.per_device_eval_batch_size * trained_seqs
    evaluation = _forward_only(eval_rows, seq, shapes, c, tile_bytes, not on_cuda or attn == "eager")
    # A no-grad forward pass (the reference) while the policy's activations are still held for backward.
    reference = _forward_only(t.per_device_train_batch_size * forward_only_seqs, seq, shapes, c, tile_bytes,
                              not on_cuda or attn == "eager") if forward_only_seqs else 0
    training = activations + lm_head + reference
    # A generation objective's batch: as many rows as fit in the memory training already needs (at most 64).
    gen_row = _generation_bytes(cfg, shapes, c, on_cuda, attn, batch=1)
    gen_batch = cfg.objective.batch_size or (
        max(1, min(MAX_GENERATION_BATCH, int(max(training, evaluation) // gen_row))) if gen_row else 0)
    generation = gen_row * gen_batch
    runtime = (CUDA_RUNTIME_MIB if on_cuda else CPU_RUNTIME_MIB) * MiB
    parts = {
        "weights": weights,
        "lora": adapter,
        "gradients": grads,
        "optimizer": optim,
        "activations": activations,
        "lm_head": lm_head,
        "reference": reference,
        "rollout": rollout,
        "runtime": runtime,
    }
    out: dict[str, Any] = {
        "device": "cuda" if on_cuda else "cpu",
        "batch": batch,
        "seq_len": seq,
        "gradient_checkpointing": bool(ckpt),
        "trainable_params": trainable,
        "total_params": shapes.total_params,
        "lora_targets": sorted({lin.name for lin in lora_targets(cfg, shapes)}) if lc.enabled else [],
    }
    out.update({f"{k}_mib": v / MiB for k, v in parts.items()})
    # Evaluation replaces the training activations between steps: only its excess over them adds.
    has_eval = d.val_size > 0 or d.validation_path is not None
    out["eval_extra_mib"] = max(0.0, max(evaluation, generation) - training) / MiB if has_eval else 0.0
    out["generation_mib"] = generation / MiB
    out["generation_batch"] = gen_batch
    out["total_mib"] = sum(parts.values()) / MiB + out["eval_extra_mib"]
    return out


def _forward_only(rows: int, seq: int, shapes: Shapes, c: int, tile_bytes: int, attn_probs: bool) -> float:
    """Transient memory of a no-grad forward pass over ``rows`` x ``seq`` tokens (evaluation, reference)."""
    tokens = rows * seq
    out = tokens * (4 * shapes.hidden + 3 * shapes.intermediate) * c
    out += min(tokens, LM_TILE_TOKENS) * min(shapes.vocab, LM_TILE_VOCAB) * tile_bytes
    if attn_probs:
        out += rows * shapes.heads * seq * seq * c
    return out


def _completion_length(cfg) -> int:
    """Tokens generated per row before the training step (GRPO's max_completion_length), else 0."""
    from omegaconf import OmegaConf

    return int(OmegaConf.select(cfg, "stage.max_completion_length", default=0) or 0) if \
        OmegaConf.select(cfg, "stage.name", default="sft") == "grpo" else 0


def _stage_memory(cfg) -> tuple[int, int]:
    """(sequences trained per example, sequences per example in no-grad forward passes) of the stage."""
    from omegaconf import OmegaConf

    from ftsweep.stages.registry import stage_module

    name = str(OmegaConf.select(cfg, "stage.name", default="sft") or "sft")
    trained, forward_only = stage_module(name).MEMORY
    if name == "grpo" and cfg.stage.beta > 0:  # GRPO's KL term needs the reference's log-probs
        forward_only = 1
    return trained, forward_only


MAX_GENERATION_BATCH = 64


def generation_batch_size(cfg, model_config: Any = None) -> int:
    """Rows a generation objective generates together: ``objective.batch_size``, else the largest batch
    (at most 64) whose generation memory stays within what training already needs, so generating never
    raises the peak. From the model's own config when given (the loaded model), else its known shapes."""
    if cfg.objective.batch_size:
        return int(cfg.objective.batch_size)
    try:
        shapes = shapes_from_config(model_config) if model_config is not None else None
        return int(estimate(cfg, shapes=shapes)["generation_batch"]) or 1
    except Exception:  # noqa: BLE001 -- an architecture the estimate cannot read: a safe small batch
        return min(MAX_GENERATION_BATCH, cfg.trainer.per_device_eval_batch_size)


def _generation_bytes(cfg, shapes: Shapes, c: int, on_cuda: bool, attn: str, batch: int) -> float:
    """A generation objective's eval batch (between training steps, like evaluation): the KV cache of
    ``batch`` rows of at most cutoff_len prompt + answer tokens plus the new-token margin (keys and values,
    every layer, kv_heads x head_dim), the prefill's widest layer, and the last position's logits (fp32)."""
    from ftsweep.config.objective import generates

    o = cfg.objective
    if not generates(o):
        return 0.0
    seq = cfg.data.cutoff_len + (o.max_new_tokens or o.new_tokens_margin)
    head_dim = shapes.hidden // max(shapes.heads, 1)
    kv_cache = 2 * shapes.layers * shapes.kv_heads * head_dim * batch * seq * c
    prefill = batch * cfg.data.cutoff_len * (4 * shapes.hidden + 3 * shapes.intermediate) * c
    if not on_cuda or attn == "eager":
        prefill += batch * shapes.heads * cfg.data.cutoff_len ** 2 * c
    return kv_cache + prefill + 2 * batch * shapes.vocab * 4


# ------------------------------------------------------------------------------------------- preflight
def free_memory_mib() -> tuple[float, str]:
    from ftsweep.device import free_memory_mib as free

    return free()


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
        raise MemoryInfeasible(
            f"oom: estimated {est['total_mib']:.0f} MiB > free {free_mib:.0f} MiB on {device} "
            f"(batch {est['batch']} x cutoff {est['seq_len']}; {_parts(est)} MiB)"
        )
    return est


def _parts(est: dict[str, Any]) -> str:
    return ", ".join(f"{k[:-4]} {est[k]:.0f}" for k in est if k.endswith("_mib") and k not in ("total_mib", "free_mib"))


def format_estimate(est: dict[str, Any]) -> str:
    ckpt = "on" if est.get("gradient_checkpointing") else "off"
    lines = [f"memory estimate for one {est['device']} device, batch {est['batch']} x cutoff {est['seq_len']}, "
             f"gradient checkpointing {ckpt}:"]
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


def gpu_verdicts(total_mib: float, gpu_memory_gib: float | None = None) -> list[str]:
    """One line per GPU size: does an estimate of ``total_mib`` fit?"""
    sizes = dict(GPU_SIZES)
    if gpu_memory_gib is not None:
        sizes = {f"{gpu_memory_gib:g} GiB (given)": gpu_memory_gib * 1024 - 500}
    return [f"  on a {name:<26} {'fits' if total_mib <= usable else 'DOES NOT FIT'} "
            f"({total_mib:,.0f} of {usable:,.0f} MiB usable)" for name, usable in sizes.items()]


def print_estimate(cfg, gpu_memory_gib: float | None = None) -> None:
    """``ftsweep train --estimate-memory [overrides]``: the estimate for this machine's device and, for
    GPUs, whether it fits common GPU sizes (or ``gpu_memory_gib``). Works offline for shipped models."""
    from ftsweep.device import has_cuda, use_checkpointing

    shapes = shapes_for(cfg)
    here_cuda = has_cuda()
    print(assumed_settings(cfg, shapes) + "\n")
    est = estimate(cfg, shapes=shapes, on_cuda=here_cuda)
    if here_cuda or cfg.model.tiny is not None:  # no point in a CPU figure for a real model on a CPU machine
        est["free_mib"], _ = free_memory_mib()
        print(format_estimate(est) + "\n")
    gpu = est if here_cuda else estimate(cfg, shapes=shapes, on_cuda=True)
    if not here_cuda:
        print(f"on a CUDA GPU ({_precision_note(cfg)}): total {gpu['total_mib']:,.1f} MiB "
              f"(weights {gpu['weights_mib']:,.0f}, activations {gpu['activations_mib']:,.0f}, "
              f"lm_head {gpu['lm_head_mib']:,.0f}, optimizer {gpu['optimizer_mib']:,.0f}, "
              f"reference pass {gpu['reference_mib']:,.0f}, GRPO rollout {gpu['rollout_mib']:,.0f} MiB)")
    print("\n".join(gpu_verdicts(gpu["total_mib"], gpu_memory_gib)))
    if not use_checkpointing(cfg.trainer.gradient_checkpointing, on_cuda=True):
        alt = estimate(cfg, shapes=shapes, on_cuda=True, gradient_checkpointing=True)
        print(f"with trainer.gradient_checkpointing=true on a GPU: {alt['total_mib']:,.1f} MiB")
        print("\n".join(gpu_verdicts(alt["total_mib"], gpu_memory_gib)))


def assumed_settings(cfg, shapes: Shapes) -> str:
    """What the estimate assumed, each with the key that changes it (printed above the totals)."""
    from ftsweep.device import use_checkpointing

    t, d, lc, q = cfg.trainer, cfg.data, cfg.lora, cfg.quantization
    bits = {on: 8 * _compute_bytes(cfg, on) for on in (True, False)}
    ckpt = {on: "on" if use_checkpointing(t.gradient_checkpointing, on) else "off" for on in (True, False)}
    if lc.enabled:
        targets = ", ".join(sorted({lin.name for lin in lora_targets(cfg, shapes)}))
        lora = f"lora.r={lc.r}, lora.alpha={lc.alpha}, lora.dropout={lc.dropout:g}, targets {targets}"
    else:
        lora = "lora=none: full fine-tune, every weight trained"
    quant = (f"quantization={q.method} (compute {q.bnb_4bit_compute_dtype})" if q.method in ("nf4", "fp4")
             else f"quantization={q.method}")
    rows = [
        ("batch", f"trainer.per_device_train_batch_size={t.per_device_train_batch_size} "
                  f"(eval batch {t.per_device_eval_batch_size}), data.cutoff_len={d.cutoff_len}, "
                  f"data.packing={str(bool(d.packing)).lower()}"),
        ("adapter", lora),
        ("checkpointing", f"trainer.gradient_checkpointing={_yaml(t.gradient_checkpointing)}: {ckpt[True]} with a GPU, "
                          f"{ckpt[False]} on CPU"),
        ("dtype", f"model.dtype={cfg.model.dtype}, trainer.precision={t.precision}: {bits[True]}-bit compute on a "
                  f"GPU, {bits[False]}-bit on CPU; {quant}"),
        ("optimizer", f"optimizer={cfg.optimizer.name}"),
    ]
    return "assumed (change any with key=value):\n" + "\n".join(f"  {k:<14} {v}" for k, v in rows)


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _precision_note(cfg) -> str:
    q = cfg.quantization
    return f"{q.method} weights, 16-bit compute" if q.method != "none" else "16-bit weights"
