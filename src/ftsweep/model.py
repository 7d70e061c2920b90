"""Tokenizer (pad policy, special tokens) -> quantization config -> model -> LoRA.

One builder per config group (``build_quantization``, ``build_lora``), like TRL's ``get_peft_config``.
Torch, transformers, peft and bitsandbytes are imported inside the functions so that importing this
module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftsweep.config import ConfigError
from ftsweep.config.options import lora_init_changes_base, peft_lora_init
from ftsweep.console import say

# Device probes live in ftsweep.device; re-exported for callers that import them from here.
from ftsweep.device import (  # noqa: F401
    bf16_supported,
    has_cuda,
    local_device,
    resolve_precision,
    torch_dtype,
    use_checkpointing,
)
from ftsweep.errors import first_line


def hf_token() -> str | None:
    """The Hub token, from the environment only (never from config or files we write)."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


# ------------------------------------------------------------------------------------------ tokenizer
def resolve_model_path(cfg) -> str:
    """Hub name / local path of the base model; the tiny model is built (once) into the cache."""
    if cfg.model.tiny is not None:
        from ftsweep.tiny import ensure_tiny, spec_from_cfg

        return str(ensure_tiny(spec_from_cfg(cfg.model.tiny), cfg.cache_dir))
    name = cfg.model.name_or_path
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().exists():
        # a path, never a Hub id: say so instead of the Hub client's "Repo id must be in the form ..."
        raise ConfigError("model.name_or_path", f"no such folder {name!r} (relative paths are read from {Path.cwd()})")
    folder = Path(name).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():  # transformers would fail far from the cause
        what = ("it holds a LoRA adapter: merge it into its base first (ftsweep merge RUN_DIR), or train on from it "
                "with init_from=RUN_DIR" if (folder / "adapter_config.json").is_file() else "no config.json in it")
        raise ConfigError("model.name_or_path", f"{name!r} is not a model folder ({what})")
    return str(Path(name).expanduser()) if name.startswith("~") else name


def load_tokenizer(cfg):
    """Load the tokenizer and apply the data's special tokens and the model's pad-token policy.

    Pad policies (seed 002's discussion): ``reserved`` uses an existing special token such as
    ``<|reserved_special_token_250|>`` (no resize); ``new`` adds ``pad_token`` (embeddings resized);
    ``eos`` pads with eos (the data pipeline still trains the final eos: labels, not the pad id, mark
    what is trained); ``existing`` keeps the tokenizer's own pad token; ``auto`` keeps it when there is one,
    else pads with eos (as trl's SFTTrainer does): ``model=hub``, for any model.
    """
    from transformers import AutoTokenizer

    m = cfg.model
    try:
        tok = AutoTokenizer.from_pretrained(
            resolve_model_path(cfg), revision=m.revision, trust_remote_code=m.trust_remote_code, token=hf_token()
        )
    except OSError as err:  # unknown name, no Hub access, gated model without HF_TOKEN: bad input, one line
        raise ConfigError("model.name_or_path", f"cannot load {m.name_or_path!r}: {first_line(err)}") from err
    new_tokens = [t for t in cfg.data.special_tokens if t not in tok.get_vocab()]
    if new_tokens:
        tok.add_special_tokens({"additional_special_tokens": new_tokens}, replace_extra_special_tokens=False)
    if cfg.data.eos_token:
        if cfg.data.eos_token not in tok.get_vocab():
            raise ConfigError("data.eos_token", f"{cfg.data.eos_token!r} is not in the vocabulary; add it to data.special_tokens")
        tok.eos_token = cfg.data.eos_token
    _apply_pad_policy(tok, m.pad_policy, m.pad_token)
    tok.padding_side = m.padding_side
    tok.model_max_length = m.max_context  # the context window (data.cutoff_len is checked against it)
    return tok


@contextmanager
def as_loaded(tok, chat_template: str | None = None) -> Iterator[None]:
    """While inside, the tokenizer's own ``model_max_length`` and ``padding_side`` (training sets
    ``model.max_context`` and ``model.padding_side``) and, when given, ``chat_template`` (the prompt the run
    trained on, for a server reading the saved folder): a saved tokenizer is the base's, its pad token aside."""
    kept = {k: getattr(tok, k) for k in ("model_max_length", "padding_side", "chat_template")}
    for key in kept:
        if key in getattr(tok, "init_kwargs", {}) and key != "chat_template":
            setattr(tok, key, tok.init_kwargs[key])
    if chat_template is not None:
        tok.chat_template = chat_template
    try:
        yield
    finally:
        for key, value in kept.items():
            setattr(tok, key, value)


def _apply_pad_policy(tok, policy: str, pad_token: str | None) -> None:
    if policy == "auto":
        policy = "existing" if tok.pad_token is not None else "eos"
    if policy == "existing":
        if tok.pad_token is None:
            raise ConfigError("model.pad_policy", "the tokenizer has no pad token; use eos, reserved or new")
    elif policy == "eos":
        tok.pad_token = tok.eos_token
    elif policy == "reserved":
        if pad_token not in tok.get_vocab():
            raise ConfigError("model.pad_token", f"{pad_token!r} is not in the vocabulary (pad_policy=reserved needs an existing token)")
        tok.pad_token = pad_token
    elif policy == "new":
        if pad_token not in tok.get_vocab():
            tok.add_special_tokens({"pad_token": pad_token})
        tok.pad_token = pad_token


# --------------------------------------------------------------------------------------- quantization
def build_quantization(q, precision: str = "auto"):
    """``quantization`` group -> ``BitsAndBytesConfig`` (None for ``method: none``).

    ``method`` chooses the family (nf4 / fp4: 4-bit QLoRA, int8: LLM.int8()); the 4-bit data type is the
    library's own field ``bnb_4bit_quant_type``, which must agree with a 4-bit method (validate refuses
    ``method=nf4 bnb_4bit_quant_type=fp4``). The compute dtype ``auto`` follows the training precision
    (``trainer.precision``, resolved on this device: bf16 with native bf16, fp16 on T4 / V100, fp32 on
    CPU). ``bnb_4bit_quant_storage`` is the dtype the packed weights are stored in (FSDP needs it to
    match the other weights; seed 004 uses bf16).

    Args:
        q: the ``quantization`` config group.
        precision: ``trainer.precision`` (auto | bf16 | fp16 | fp32).
    """
    if q.method == "none":
        return None
    from transformers import BitsAndBytesConfig

    if q.method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=q.llm_int8_threshold)
    if q.bnb_4bit_quant_type != q.method:
        raise ConfigError("quantization.bnb_4bit_quant_type",
                          f"{q.bnb_4bit_quant_type} contradicts quantization.method={q.method}; set both to nf4 or both to fp4")
    compute = torch_dtype(q.bnb_4bit_compute_dtype, precision)
    if str(compute) == "torch.bfloat16" and has_cuda() and not bf16_supported():
        raise ConfigError("quantization.bnb_4bit_compute_dtype", "bfloat16 is not supported natively by this GPU; use auto or float16")
    kwargs: dict[str, Any] = {}
    if q.bnb_4bit_quant_storage:
        kwargs["bnb_4bit_quant_storage"] = torch_dtype(q.bnb_4bit_quant_storage)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- model
def load_model(cfg, tokenizer):
    """Load the base model (quantized when asked) in the compute dtype, resize for new tokens, keep
    pad/eos ids in sync, and prepare a k-bit base for adapter training.

    The k-bit base is frozen here instead of with peft's ``prepare_model_for_kbit_training``, which
    upcasts every non-4-bit weight to fp32: fp32 norm weights make the whole residual stream fp32
    (twice the activation memory, slower matmuls). Only what the optimizer updates must be fp32, and
    peft already keeps LoRA weights in fp32.
    """
    base_len = base_vocab_len(cfg)
    check_added_tokens_trainable(cfg, tokenizer, base_len)
    quant = build_quantization(cfg.quantization, cfg.trainer.precision)
    model = _from_pretrained(cfg, quant)
    check_context(model.config, cfg.data.cutoff_len)
    _match_tokenizer(model, tokenizer, cfg.trainer.seed, base_len)
    if quant is not None:
        fix_bnb_cpu_repack(model)
        for param in model.parameters():
            param.requires_grad = False
    if use_checkpointing(cfg.trainer.gradient_checkpointing) and cfg.lora.enabled:
        # The base is frozen, so without this the embeddings' output needs no grad and checkpointed
        # layers would get no gradient to the adapters (peft only does it for use_reentrant=True).
        model.enable_input_require_grads()
    return model


# config.json keys that hold a model's context window (GPT-2 first: its config maps the others to n_positions)
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "max_seq_len", "max_sequence_length", "seq_length")


def check_packed_attention(model) -> None:
    """``data.packing=true`` (SFT) only where packed examples cannot see each other, measured on the model itself.

    trl packs examples into one row whose ``position_ids`` restart at each example; the attention must use them
    to keep the examples apart, and not every architecture does (transformers' OPT builds its causal mask without
    them, BLOOM's ALiBi ignores them). Two probe rows hold different first examples and the same second one: where
    the examples are kept apart the second one's logits are equal (exactly, on every architecture that does:
    Llama, Mistral, Qwen2, Gemma, Phi-3, Falcon, GPT-2 and GPT-NeoX measured); where they differ, one line.
    Run on the model being trained (its device, dtype and attention implementation), in eval mode, no gradient.
    """
    import torch

    first, other, second = [3, 4, 5, 6, 7], [9, 10, 11, 12, 13], [20, 21, 22, 23]
    device = next(model.parameters()).device
    ids = torch.tensor([first + second, other + second], device=device)
    positions = torch.tensor([[*range(len(first)), *range(len(second))]] * 2, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits.float()
    finally:
        model.train(was_training)
    tail = logits[:, len(first):]
    if (tail[0] - tail[1]).abs().max().item() > 1e-4 * (1.0 + tail.abs().max().item()):
        kind = getattr(model.config, "model_type", None) or type(model).__name__
        raise ConfigError("data.packing", f"packed examples would attend to each other in this {kind} model (its "
                                          "attention ignores the position ids that separate them: measured on two "
                                          "probe rows); use data.packing=false")


def check_context(config, cutoff_len: int) -> None:
    """``data.cutoff_len`` within the model's own context window (its config.json): beyond it GPT-2's and OPT's
    position embeddings fail with an IndexError, and RoPE models train on positions they never saw."""
    key = next((k for k in CONTEXT_KEYS if isinstance(getattr(config, k, None), int)), None)
    if key is not None and cutoff_len > getattr(config, key):
        raise ConfigError("data.cutoff_len", f"{cutoff_len} exceeds the model's context window ({key}="
                                             f"{getattr(config, key)} in its config.json)")


def load_base_for_inference(cfg, tokenizer, *, quantized: bool = True, dtype: str | None = None):
    """The run's base model for generation or merging: no k-bit training preparation, no checkpointing.

    Args:
        cfg: the run's composed config.
        tokenizer: the run's saved tokenizer (its length decides the embedding size, as in training).
        quantized: load with the run's quantization (as seed 002 evaluates); False = full precision.
        dtype: a ``model.dtype`` name overriding the run's (merging chooses its output dtype).
    """
    quant = build_quantization(cfg.quantization, cfg.trainer.precision) if quantized else None
    model = _from_pretrained(cfg, quant, dtype)
    if quant is None and has_cuda():
        model = model.to(f"cuda:{local_device()}")
    _match_tokenizer(model, tokenizer, cfg.trainer.seed, base_vocab_len(cfg))
    return model.eval()


def _from_pretrained(cfg, quant, dtype: str | None = None):
    """``AutoModelForCausalLM.from_pretrained`` with the model group's options (k-bit when ``quant``).

    ``dtype`` defaults to ``model.dtype``, or the 4-bit compute dtype for a quantized load; ``auto``
    follows ``trainer.precision`` on this device.
    """
    from transformers import AutoModelForCausalLM

    m = cfg.model
    if dtype is None:
        dtype = cfg.quantization.bnb_4bit_compute_dtype if quant is not None and cfg.quantization.method != "int8" else m.dtype
    kwargs: dict[str, Any] = {
        "revision": m.revision,
        "trust_remote_code": m.trust_remote_code,
        "token": hf_token(),
        "dtype": torch_dtype(dtype, cfg.trainer.precision),
    }
    attn = attention_implementation(cfg)
    if attn:
        kwargs["attn_implementation"] = attn
    if quant is not None:
        kwargs["quantization_config"] = quant
        # k-bit weights must be placed at load time: this process's GPU (one per DDP rank), or CPU.
        kwargs["device_map"] = {"": local_device()}
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg), **kwargs)


def attention_implementation(cfg) -> str | None:
    """``model.attn_implementation``, or the default: with SFT packing on a GPU ``flex_attention``
    (PyTorch's block-sparse kernel skips cross-example blocks; the dense sdpa mask over the flattened
    batch costs (batch x cutoff)^2), else transformers' default (sdpa). Flex attention has no backward
    on CPU, so CPU runs keep sdpa (its block-diagonal mask is correct, only slower)."""
    if cfg.model.attn_implementation:
        return cfg.model.attn_implementation
    if cfg.data.packing and cfg.data.format != "text" and has_cuda():
        return "flex_attention"
    return None


def base_vocab_len(cfg) -> int | None:
    """How many tokens the base model's own tokenizer has, when the run adds tokens (``data.special_tokens``, a
    ``pad_policy=new`` pad token): the ids from there on are the run's. None when it adds none."""
    if not (list(cfg.data.special_tokens) or cfg.model.pad_policy == "new"):
        return None
    from transformers import AutoTokenizer

    m = cfg.model
    return len(AutoTokenizer.from_pretrained(resolve_model_path(cfg), revision=m.revision,
                                             trust_remote_code=m.trust_remote_code, token=hf_token()))


def check_added_tokens_trainable(cfg, tokenizer, base_len: int | None) -> None:
    """Refuse an adapter run that adds two or more tokens (``data.special_tokens``; a ``pad_policy=new`` pad is never
    trained nor attended to) without ``data.train_embeddings``: every added token starts as the same mean row, in
    the input and the output embeddings, and LoRA never changes them, so the model could neither tell the tokens
    apart nor choose between them (``<|im_start|>`` and ``<|im_end|>`` would always get the same logit). A run that
    starts from another (``init_from``: DPO after SFT) gets the rows that run trained, merged in."""
    if base_len is None or not cfg.lora.enabled or cfg.data.train_embeddings or cfg.get("init_from"):
        return
    added = [i for i in range(base_len, len(tokenizer)) if i != tokenizer.pad_token_id]
    if len(added) >= 2:
        names = ", ".join(tokenizer.convert_ids_to_tokens(added[:4])) + (", ..." if len(added) > 4 else "")
        raise ConfigError("data.train_embeddings", f"false, but the run adds {len(added)} tokens ({names}) that all "
                                                   "start as the same mean embedding row: untrained, the model can "
                                                   "neither tell them apart nor choose between them; set "
                                                   "data.train_embeddings=true (or lora=none)")


def _match_tokenizer(model, tokenizer, seed: int, base_len: int | None = None) -> None:
    """Grow the embeddings for tokens the run added and keep pad / eos ids in sync with the tokenizer.

    ``base_len``: the base tokenizer's length (:func:`base_vocab_len`). A model whose embedding matrix has more rows
    than its tokenizer has tokens (Qwen2 / Qwen2.5 pad it: 151,936 rows for 151,665 tokens) is not resized: the
    tokens the run added take unused rows the checkpoint never trained, which get the mean of the base tokens' rows,
    as the rows of a resized matrix do."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        from transformers import set_seed

        # Mean-initialised rows keep the first losses sane; seeding right here makes training, generation
        # and merging give the same rows for tokens the run added (trained rows come from the adapter).
        set_seed(seed)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if base_len is not None and base_len < min(len(tokenizer), rows):
        _mean_rows(model, base_len, min(len(tokenizer), rows))
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None:
            config.pad_token_id = tokenizer.pad_token_id
            config.eos_token_id = with_eos(getattr(config, "eos_token_id", None), tokenizer.eos_token_id)


def _mean_rows(model, start: int, end: int) -> None:
    """Rows ``start:end`` of the input and output embeddings set to the mean of the rows before ``start``."""
    import torch

    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            if layer is None or (i and layer.weight is layers[0].weight):  # tied: one tensor
                continue
            weight = layer.weight
            weight[start:end] = weight[:start].float().mean(0).to(weight.dtype)


def with_eos(ids: int | list[int] | None, eos: int | None) -> int | list[int] | None:
    """The model's stop ids with the tokenizer's eos first: a base model's list (Gemma's ``<end_of_turn>``,
    Llama 3.1's ``<|eom_id|>`` and ``<|eot_id|>``) is kept, so the saved model still stops where the base did."""
    listed = [ids] if isinstance(ids, int) else list(ids or [])
    merged = ([eos] if eos is not None else []) + [i for i in listed if i != eos]
    return merged[0] if len(merged) == 1 else (merged or None)


def ties_embeddings(model) -> bool:
    """True when the output embedding is the input embedding (Llama 3.2 1B, Qwen2.5 0.5B, EXAONE 2.4B)."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def fix_bnb_cpu_repack(model) -> int:
    """Stop bitsandbytes 0.50 from repacking 4-bit weights on CPU at the first no-grad forward.

    The repacked layout has no backward kernel: after the first evaluation the gradient norm drops to
    0 and training silently stops learning (environment.md). Returns the number of layers patched.
    """
    if has_cuda():
        return 0
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


# ----------------------------------------------------------------------------------------------- LoRA
def linear_module_names(model) -> list[str]:
    """Names of the linear layers LoRA can target, without ``lm_head`` (seed 004's find_all_linear_names); GPT-2's
    family keeps them in transformers' ``Conv1D`` (``c_attn``, ``c_proj``, ``c_fc``), which peft adapts too."""
    import torch
    from transformers.pytorch_utils import Conv1D

    # (bitsandbytes' Linear4bit and Linear8bitLt are torch.nn.Linear subclasses: importing it to ask costs ~2 s)
    classes = (torch.nn.Linear, Conv1D)
    names = {name.split(".")[-1] for name, mod in model.named_modules() if isinstance(mod, classes)}
    names.discard("lm_head")
    return sorted(names)


def attention_linear_names(model) -> list[str]:
    """The linear layers of the model's attention blocks (children of a module whose class is an ``...Attention``),
    in the order the first block defines them: OPT's ``k_proj, v_proj, q_proj, out_proj``, GPT-2's ``c_attn,
    c_proj``, BLOOM's ``query_key_value, dense``. What ``[q_proj, k_proj, v_proj, o_proj]`` means on another
    architecture (the shipped LoRA options' targets)."""
    linear = set(linear_module_names(model))
    for _, module in model.named_modules():
        if "attention" in type(module).__name__.lower():
            found = [name for name, _ in module.named_modules() if name and "." not in name and name in linear]
            if found:
                return found
    return []


def carry_added_rows(cfg, model, tokenizer, adapter_dir: Path) -> list[int]:
    """Write the embedding rows of the tokens the run added (``data.special_tokens``, a ``pad_policy=new`` pad) into
    the saved adapter as peft's trainable tokens (``trainable_token_indices``), when nothing else saves them: a frozen
    embedding (no ``data.train_embeddings``) keeps the rows :func:`_match_tokenizer` gave them (the mean row), which
    ftsweep's loaders recreate but plain peft (``AutoModelForCausalLM`` + ``PeftModel.from_pretrained``) does not:
    on a checkpoint with spare rows (Qwen2.5) it would get the checkpoint's untrained rows. Training is unchanged:
    only the saved files gain the rows (peft's format: the values themselves, ``index_copy``-ed in at load). A
    layer saved whole (``lora.modules_to_save``) or adapted by LoRA is left to peft; an ``init_from`` run's rows
    are those of the run it started from. Returns the ids written."""
    import json

    if not cfg.lora.enabled or cfg.data.train_embeddings or cfg.get("init_from"):
        return []
    base_len = base_vocab_len(cfg)
    if base_len is None or base_len >= len(tokenizer):
        return []
    ids = list(range(base_len, len(tokenizer)))
    config_path = Path(adapter_dir) / "adapter_config.json"
    doc = json.loads(config_path.read_text(encoding="utf-8"))
    whole = set(doc.get("modules_to_save") or [])
    targets = doc.get("target_modules") or []
    layers = [model.get_input_embeddings()] + ([] if ties_embeddings(model) else [model.get_output_embeddings()])
    names = {id(m): n for n, m in model.named_modules()}
    rows: dict[str, Any] = {}
    for layer in layers:
        name = names.get(id(layer))
        leaf = (name or "").rsplit(".", 1)[-1]
        if layer is None or not name or leaf in whole or (isinstance(targets, list) and leaf in targets):
            continue
        rows[f"{name}.token_adapter.trainable_tokens_delta"] = (leaf, layer.weight[ids].detach().contiguous().cpu())
    if not rows:
        return []
    from safetensors.torch import load_file, save_file

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    state = load_file(str(weights))
    state.update({key: value for key, (_, value) in rows.items()})
    save_file(state, str(weights), metadata={"format": "pt"})
    doc["trainable_token_indices"] = {leaf: ids for leaf, _ in rows.values()}
    config_path.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
    return ids


def sort_adapter_config(adapter_dir: Path) -> None:
    """Rewrite ``adapter_config.json`` with its set-valued fields (``target_modules``...) sorted.

    peft keeps them as sets and writes ``list(set)``, whose order follows the process's string-hash seed:
    identical runs would write different files."""
    import json

    from peft import PeftConfig

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return
    doc = json.loads(path.read_text(encoding="utf-8"))
    loaded = PeftConfig.from_pretrained(str(adapter_dir))  # the concrete class (LoraConfig...) of the file
    sets = [k for k, v in vars(loaded).items() if isinstance(v, set) and isinstance(doc.get(k), list)]
    if not sets:
        return
    for key in sets:
        doc[key] = sorted(doc[key], key=str)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")


def build_lora(lc, model, *, train_embeddings: bool = False):
    """``lora`` group -> peft ``LoraConfig`` (None for a full fine-tune).

    ``all-linear`` is resolved to the model's own linear layer names so the run log shows exactly what
    is adapted. ``train_embeddings`` (``data.train_embeddings``, for tokens the run added) trains copies
    of the embeddings and lm_head; on a model with tied embeddings peft's ``ensure_weight_tying`` keeps
    the two one tensor through training and merging.

    Args:
        lc: the ``lora`` config group.
        model: the base model (its linear layer names and tying are read).
        train_embeddings: ``data.train_embeddings``.
    """
    if not lc.enabled:
        return None
    from peft import LoraConfig

    targets = linear_module_names(model) if lc.target_modules == "all-linear" else list(lc.target_modules)
    present = set(linear_module_names(model))
    unknown = [t for t in targets if t not in present]
    if unknown:
        attention = attention_linear_names(model)
        hint = f"; its attention's: lora.target_modules=[{','.join(attention)}]" if attention else ""
        raise ConfigError("lora.target_modules", f"{unknown} not found in the model; its linear layers: "
                                                 f"{sorted(present)}{hint} (or all-linear)")
    if not targets:
        raise ConfigError("lora.target_modules", "the model has no linear layers LoRA can adapt; name its modules "
                                                 "(lora.target_modules=[...]) or train it whole with lora=none")
    modules_to_save = list(lc.modules_to_save or [])
    names = {name for name, _ in model.named_modules() if name}
    missing = [m for m in modules_to_save if not any(n == m or n.endswith(f".{m}") for n in names)]
    if missing:  # peft would train nothing for them, silently
        import difflib

        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        close = sorted({c for m in missing for c in difflib.get_close_matches(m, leaves, n=2, cutoff=0.6)})
        raise ConfigError("lora.modules_to_save", f"{missing} not found in the model"
                          + (f"; did you mean {', '.join(close)}?" if close else f"; its modules: {', '.join(leaves)}"))
    tied = False
    if train_embeddings:
        modules_to_save += [m for m in ("embed_tokens", "lm_head") if m not in modules_to_save]
        tied = ties_embeddings(model)
    return LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=targets,
        bias=lc.bias,
        modules_to_save=modules_to_save or None,
        use_rslora=lc.use_rslora,
        use_dora=lc.use_dora,
        init_lora_weights=peft_lora_init(lc.init),
        ensure_weight_tying=tied,
        task_type="CAUSAL_LM",
    )


@contextmanager
def adapter_without_idle_bitsandbytes() -> Iterator[None]:
    """peft imports bitsandbytes whenever it adds or loads a LoRA adapter, to ask whether a layer is one of its
    8-bit / 4-bit layers (about 2 s of CPU a process, measured: bitsandbytes compiles its default kernels with
    ``torch.compile``, which imports torch's inductor). Such a layer exists only once bitsandbytes is imported (a
    quantized load, an 8-bit optimizer): until then peft is told that bitsandbytes is not there, which changes
    none of its answers. peft versions without these names are left as they are."""
    import sys

    if "bitsandbytes" in sys.modules:
        yield
        return
    import peft.tuners.lora.model as lora_model

    saved = {name: getattr(lora_model, name) for name in ("is_bnb_available", "is_bnb_4bit_available")
             if callable(getattr(lora_model, name, None))}
    for name in saved:
        setattr(lora_model, name, lambda: False)
    try:
        yield
    finally:
        for name, probe in saved.items():
            setattr(lora_model, name, probe)


def load_adapter(model, path):
    """peft's ``PeftModel.from_pretrained(model, path)``, without importing bitsandbytes where no layer is one of its
    (:func:`adapter_without_idle_bitsandbytes`)."""
    from peft import PeftModel

    with adapter_without_idle_bitsandbytes():
        return PeftModel.from_pretrained(model, str(path))


def apply_lora(cfg, model):
    """Wrap ``model`` with LoRA (or leave it whole for ``lora=none``); log trainable parameters."""
    from transformers import set_seed

    lora_config = build_lora(cfg.lora, model, train_embeddings=cfg.data.train_embeddings)
    set_seed(cfg.trainer.seed)  # LoRA A matrices are random: same seed, same adapter init
    if lora_config is None:
        if cfg.data.train_embeddings is False and getattr(model, "is_loaded_in_4bit", False):
            raise ConfigError("lora.enabled", "a 4-bit model can only be trained through an adapter")
    else:
        from peft import get_peft_model

        with adapter_without_idle_bitsandbytes():
            model = get_peft_model(model, lora_config)
        if cfg.lora.init != "default":
            say(f"LoRA init: {cfg.lora.init}" + (" (the base weights keep the residual; the saved adapter is "
                                                 "converted to apply to the original model)"
                                                 if lora_init_changes_base(cfg.lora) else ""))
        say(f"LoRA targets ({cfg.lora.target_modules if isinstance(cfg.lora.target_modules, str) else 'listed'}): "
             f"{', '.join(sorted(lora_config.target_modules))}")
    if resolve_precision(cfg.trainer.precision) == "fp16":
        _upcast_trainable(model)
    trainable, total = count_parameters(model)
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.4f}%)")
    return model


def save_initial_adapter(model, path: Path) -> None:
    """The adapter as PiSSA / OLoRA start it (``lora.init``), saved before training: peft subtracts it from the
    trained one to convert the trained adapter to the original, unchanged base weights (``save_pretrained``'s
    ``path_initial_model_for_weight_conversion``; peft's and LLaMA-Factory's PiSSA conversion)."""
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True  # reloaded as a plain adapter for the conversion, not decomposed again
    try:
        model.save_pretrained(str(path))
    finally:
        config.init_lora_weights = init


def save_converted_adapter(model, target: Path, initial: Path) -> None:
    """Save the trained PiSSA / OLoRA adapter into ``target`` converted to apply to the original base model:
    rank 2r, the starting adapter subtracted (what ``ftsweep merge`` / ``generate`` and any peft user load)."""
    import warnings

    with warnings.catch_warnings():  # peft warns on loading the starting adapter beside the trained one: intended
        warnings.filterwarnings("ignore", message=r"(PiSSA|OLoRA|CorDA) changes the base weights")
        model.save_pretrained(str(target), path_initial_model_for_weight_conversion=str(initial))


def _upcast_trainable(model) -> None:
    """fp16 training (T4 / V100) unscales gradients with a GradScaler, which refuses fp16 parameters:
    trainable 16-bit weights (trained embedding copies, a full fine-tune) go to fp32."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.float()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as their unpacked size (two per byte stored)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    return trainable, total


def _numel(p) -> int:
    state = getattr(p, "quant_state", None)
    if p.__class__.__name__ == "Params4bit" and state is not None and getattr(state, "shape", None) is not None:
        return int(state.shape.numel())
    return p.numel()
