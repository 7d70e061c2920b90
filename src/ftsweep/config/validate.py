"""Range and consistency checks that run on the composed config before any model is loaded.

Every failure is a :class:`ConfigError` naming the key and what is allowed; the CLI prints it as
one line and exits non-zero.
"""

from __future__ import annotations

import math
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ftsweep.config import options
from ftsweep.config.data import names_of
from ftsweep.config.errors import ConfigError
from ftsweep.config.keys import added_keys, unknown_key
from ftsweep.config.objective import check_objective, is_generation_metric
from ftsweep.config.schema import TINY_NAME
from ftsweep import device  # a module reference: ftsweep.device imports ftsweep.config.options
from ftsweep.stages.registry import STAGES, common_eval_metrics, stage_metrics, stage_module

QUANT_METHODS = ("none", "nf4", "fp4", "int8")
PAD_POLICIES = ("existing", "eos", "reserved", "new", "auto")
LOGGERS = ("wandb", "tensorboard", "none")
LORA_BIAS = ("none", "all", "lora_only")
ATTN = (None, "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
DATA_FORMATS = ("alpaca", "chat", "sharegpt", "prompt_completion", "text", "auto")
DATA_LOADERS = ("auto", "json", "jsonl", "csv", "tsv", "parquet", "arrow", "text", "hub")
OVERLONG = ("truncate_both", "truncate_answer", "truncate_prompt", "drop")
PROMPT_CUTS = ("keep_end", "keep_start")
DATA_TEMPLATES = ("alpaca_en", "alpaca_ko", "special_tokens", "custom")
CHAT_TEMPLATES = (None, "llama3", "chatml")  # bundled names (ftsweep.data.templates.CHAT_TEMPLATES)
BAD_ROWS = ("fail", "skip")
MIX_STRATEGIES = ("concat", "interleave_under", "interleave_over")  # LLaMA-Factory's mix_strategy


def _choice(cfg: DictConfig, key: str, allowed: tuple, hint: str = "") -> None:
    value = _get(cfg, key)
    if value not in allowed:
        shown = ", ".join("null" if a is None else str(a) for a in allowed)
        raise ConfigError(key, f"got {value!r}; allowed: {shown}{hint}")


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _at_least(cfg: DictConfig, key: str, low: float, *, strict: bool = False) -> None:
    value = _get(cfg, key)
    bad = value <= low if strict else value < low
    if bad:
        op = ">" if strict else ">="
        raise ConfigError(key, f"must be {op} {low} (got {value})")


def _finite(node: Any, path: str = "") -> None:
    """No NaN or infinity anywhere (``optimizer.lr=nan`` passes every ``>`` / ``<`` check and trains to NaN)."""
    import math

    if isinstance(node, DictConfig):
        for key in node:
            if not OmegaConf.is_missing(node, key):
                _finite(node[key], f"{path}{key}.")
    elif isinstance(node, ListConfig):
        for i, value in enumerate(node):
            _finite(value, f"{path}{i}.")
    elif isinstance(node, float) and not math.isfinite(node):
        key = path.rstrip(".")
        raise ConfigError(key, f"must be a finite number (got {node})")


DATA_FILE_KEYS = ("data.path", "data.validation_path")


def missing_data_file(key: str, path: Any) -> str | None:
    """One line when ``path`` looks like a local file (a data-file extension, or ./ ../ / ~ pkg://) and
    does not exist; a name without either is a Hub dataset, checked when the data is loaded. Not part
    of :func:`validate` (composing a config never touches the file system); the CLI and the sweeper
    call it before anything is written."""
    from pathlib import Path

    from ftsweep.paths import DATA_FILE_SUFFIXES, PKG_SCHEME, resolve_data_path

    if not path or not isinstance(path, str):
        return None
    local = path.startswith(("./", "../", "/", "~", PKG_SCHEME)) or Path(path).suffix.lower() in DATA_FILE_SUFFIXES
    if not local or resolve_data_path(path) is not None:
        return None
    return f"{key}: no such file {path!r} (relative paths are read from {Path.cwd()})"


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first out-of-range or inconsistent value."""
    if added := added_keys(cfg):  # +trainer.learning_rate=1e-4 would train at the default lr, silently
        hint = ""
        if "." not in added[0] and cfg.get(added[0]) == "best":  # best.yaml's header: +<sweep folder>=best
            hint = ("; a sweep's best.yaml is +<sweep folder name>=best with --config-dir <the folder above it>: "
                    "after the folder moved, `ftsweep report <sweep dir>` rewrites the command in its header")
        raise ConfigError(added[0], f"{unknown_key(added[0])} (a key added with + is read by nothing{hint})")
    _finite(cfg)
    # model
    _choice(cfg, "model.dtype", options.DTYPES)
    _choice(cfg, "model.pad_policy", PAD_POLICIES)
    _choice(cfg, "model.padding_side", ("right", "left"))
    _choice(cfg, "model.attn_implementation", ATTN)
    _at_least(cfg, "model.max_context", 1)
    if cfg.model.tiny is not None and cfg.model.name_or_path != TINY_NAME:
        name = cfg.model.name_or_path
        raise ConfigError("model.name_or_path", f"{name!r} would be ignored: model=tiny builds the tiny model from "
                                                f"model.tiny; for another model choose its option (model=llama3_2_1b, "
                                                f"...) or any model with model=hub model.name_or_path={name}")
    if cfg.model.pad_policy in ("reserved", "new") and not cfg.model.pad_token:
        raise ConfigError("model.pad_token", f"required with pad_policy={cfg.model.pad_policy}")
    # quantization
    _choice(cfg, "quantization.method", QUANT_METHODS)
    _choice(cfg, "quantization.bnb_4bit_quant_type", ("nf4", "fp4"))
    _choice(cfg, "quantization.bnb_4bit_compute_dtype", options.DTYPES)
    # the dtypes bitsandbytes packs 4-bit weights into (uint8 is its own default); another name failed after loading
    _choice(cfg, "quantization.bnb_4bit_quant_storage", (None, "uint8", "bfloat16", "float16", "float32"))
    _at_least(cfg, "quantization.llm_int8_threshold", 0)  # (LLM.int8()'s outlier threshold; 0 = no outliers)
    q = cfg.quantization
    if q.method in ("nf4", "fp4") and q.bnb_4bit_quant_type != q.method:
        raise ConfigError("quantization.bnb_4bit_quant_type",
                          f"{q.bnb_4bit_quant_type} contradicts quantization.method={q.method}; set both to nf4 or both to fp4")
    _validate_quantization_keys(q)
    # lora
    lora = cfg.lora
    _at_least(cfg, "lora.r", 1)
    _at_least(cfg, "lora.alpha", 1)
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError("lora.dropout", f"must be in [0, 1) (got {lora.dropout})")
    _choice(cfg, "lora.bias", LORA_BIAS)
    tm = lora.target_modules
    if not (tm == "all-linear" or (isinstance(tm, (list, ListConfig)) and tm and all(isinstance(t, str) for t in tm))):
        raise ConfigError("lora.target_modules", f"must be 'all-linear' or a non-empty list of module names (got {tm!r})")
    if lora.loraplus_lr_ratio is not None:
        _at_least(cfg, "lora.loraplus_lr_ratio", 0, strict=True)
        if not lora.enabled:
            raise ConfigError("lora.loraplus_lr_ratio", "LoRA+ sets the learning rate of LoRA's B matrices; a full "
                                                        "fine-tune (lora=none) has none: drop it or use a LoRA option")
    _validate_lora_init(cfg)
    if not lora.enabled:  # a full fine-tune builds no adapter: the adapter's settings would be read by nothing
        from ftsweep.config.schema import LoraConfig

        default = LoraConfig()
        for key in lora:
            if key not in ("enabled", "loraplus_lr_ratio") and lora[key] != getattr(default, key, lora[key]):
                raise ConfigError(f"lora.{key}", f"{lora[key]!r} would be ignored: lora=none (lora.enabled=false) is a "
                                                 "full fine-tune with no adapter; drop it or choose a LoRA option")
    if not lora.enabled and cfg.quantization.method != "none":
        raise ConfigError(
            "lora.enabled",
            f"a full fine-tune (lora=none) cannot train a {cfg.quantization.method}-quantized model; "
            "use a LoRA option or quantization=none",
        )
    # optimizer
    _choice(cfg, "optimizer.name", tuple(options.OPTIMIZERS))
    _at_least(cfg, "optimizer.lr", 0, strict=True)
    _at_least(cfg, "optimizer.weight_decay", 0)
    _at_least(cfg, "optimizer.eps", 0, strict=True)
    _at_least(cfg, "optimizer.max_grad_norm", 0)
    betas = list(cfg.optimizer.betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError("optimizer.betas", f"must be two numbers in [0, 1) (got {betas})")
    # scheduler
    _choice(cfg, "scheduler.name", tuple(options.SCHEDULERS))
    _at_least(cfg, "scheduler.warmup_steps", 0)
    if not 0.0 <= cfg.scheduler.warmup_ratio < 1.0:
        raise ConfigError("scheduler.warmup_ratio", f"must be in [0, 1) (got {cfg.scheduler.warmup_ratio})")
    # trainer
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _at_least(cfg, f"trainer.{key}", 1)
    if cfg.trainer.max_steps == 0 or cfg.trainer.max_steps < -1:
        raise ConfigError("trainer.max_steps", f"must be >= 1, or -1 to use num_train_epochs (got {cfg.trainer.max_steps})")
    _at_least(cfg, "trainer.num_train_epochs", 0, strict=True)
    if cfg.trainer.max_steps > 0 and cfg.trainer.num_train_epochs != 1.0:
        # transformers lets max_steps > 0 win and the shipped trainer sets max_steps: 40, so an epoch count given
        # alone (or by a LLaMA-Factory config file) would train 40 steps without a word
        raise ConfigError("trainer.num_train_epochs", f"{cfg.trainer.num_train_epochs:g} would be ignored: "
                          f"trainer.max_steps={cfg.trainer.max_steps} wins; add trainer.max_steps=-1 to train for "
                          "epochs, or drop trainer.num_train_epochs")
    _at_least(cfg, "trainer.eval_steps", 1)
    _at_least(cfg, "trainer.logging_steps", 1)
    _at_least(cfg, "trainer.save_steps", 0)
    if cfg.trainer.save_total_limit is not None:
        _at_least(cfg, "trainer.save_total_limit", 1)  # (transformers reads 0 as "keep every one")
    _at_least(cfg, "trainer.early_stopping_patience", 0)
    _at_least(cfg, "trainer.timeout_s", 0)
    _at_least(cfg, "trainer.num_threads", 0)
    if cfg.trainer.neftune_noise_alpha is not None:
        _at_least(cfg, "trainer.neftune_noise_alpha", 0, strict=True)
    _at_least(cfg, "trainer.dataloader_num_workers", 0)  # (torch's DataLoader: a traceback after the model loaded)
    if not 0 <= cfg.trainer.seed < 2**32:  # numpy's seed range (transformers' set_seed seeds numpy too)
        raise ConfigError("trainer.seed", f"must be 0 to 2**32 - 1 (got {cfg.trainer.seed})")
    _choice(cfg, "trainer.precision", options.PRECISIONS)
    t = cfg.trainer
    if t.intermediate_eval_rows is not None:
        if t.intermediate_eval_rows < 1:
            raise ConfigError("trainer.intermediate_eval_rows", f"must be >= 1, or null for every row "
                                                                f"(got {t.intermediate_eval_rows})")
        if t.load_best_model_at_end and t.save_steps > 0:
            raise ConfigError("trainer.intermediate_eval_rows", "load_best_model_at_end would rank checkpoints "
                              "evaluated on a subset against the last one evaluated on every row; set "
                              "trainer.intermediate_eval_rows=null or trainer.load_best_model_at_end=false")
    if t.load_best_model_at_end and t.save_steps == 0:  # (transformers refuses it too; it was dropped silently)
        raise ConfigError("trainer.load_best_model_at_end", f"picks the best of the saved checkpoints and none are "
                          f"saved: set trainer.save_steps (a multiple of trainer.eval_steps={t.eval_steps})")
    if t.load_best_model_at_end and t.save_steps > 0 and t.save_steps % t.eval_steps:
        raise ConfigError("trainer.save_steps", f"must be a multiple of trainer.eval_steps={t.eval_steps} with "
                          f"load_best_model_at_end (got {t.save_steps})")
    # logger / objective
    _choice(cfg, "logger.name", LOGGERS)
    _choice(cfg, "logger.mode", (None, "online", "offline", "disabled"))
    _choice(cfg, "objective.direction", options.DIRECTIONS)
    _validate_stage(cfg)
    # data
    _choice(cfg, "data.format", DATA_FORMATS)
    _choice(cfg, "data.loader", DATA_LOADERS)
    _choice(cfg, "data.overlong", OVERLONG)
    _choice(cfg, "data.prompt_cut", PROMPT_CUTS)
    _choice(cfg, "data.bad_rows", BAD_ROWS)
    # LLaMA-Factory's template (llama3, qwen, ...) is a chat template
    _choice(cfg, "data.template", DATA_TEMPLATES, " (Alpaca prompt templates); a chat model's template is its "
            "tokenizer's: data.format=chat (or data.chat_template=llama3 / chatml)")
    _choice(cfg, "data.chat_template", CHAT_TEMPLATES)
    _validate_custom_template(cfg)
    _at_least(cfg, "data.cutoff_len", 8)
    if cfg.data.cutoff_len > cfg.model.max_context:
        raise ConfigError(
            "data.cutoff_len", f"{cfg.data.cutoff_len} exceeds the model's context (model.max_context={cfg.model.max_context})"
        )
    val_size = cfg.data.val_size
    if not (val_size >= 0 and math.isfinite(val_size)) or (val_size >= 1 and val_size != int(val_size)):
        raise ConfigError("data.val_size", f"a fraction of the rows in [0, 1) or a whole number of rows >= 1 "
                                           f"(got {val_size})")
    if cfg.data.max_rows is not None and cfg.data.max_rows < 1:
        raise ConfigError("data.max_rows", f"must be >= 1 or null (got {cfg.data.max_rows})")
    _validate_encoding(cfg)
    _validate_mix(cfg)
    _validate_eval_data(cfg)
    check_objective(cfg.objective, data_format=cfg.data.format, train_on_prompt=cfg.data.train_on_prompt,
                    has_validation=_has_validation(cfg),
                    stage_metrics=stage_metrics(cfg.stage.name), common_eval=common_eval_metrics(cfg.stage.name),
                    stage=cfg.stage.name)
    _validate_lm_eval_at_evals(cfg)
    _validate_device(cfg)


def _validate_lm_eval_at_evals(cfg: DictConfig) -> None:
    """objective=lm_eval has values at evaluations only with objective.lm_eval_at_evals=true."""
    if cfg.objective.metric != "lm_eval" or cfg.objective.lm_eval_at_evals:
        return
    t = cfg.trainer
    for key, on in (("trainer.load_best_model_at_end", t.load_best_model_at_end and t.save_steps > 0),
                    ("trainer.early_stopping_patience", t.early_stopping_patience > 0)):
        if on:
            raise ConfigError(key, "needs the objective at every evaluation, but objective=lm_eval runs its tasks only "
                              "after training; set objective.lm_eval_at_evals=true")


def _validate_custom_template(cfg: DictConfig) -> None:
    d = cfg.data
    if d.format != "alpaca" or d.template != "custom":
        return
    for key, needed in (("prompt_no_input", ("{instruction}",)), ("prompt_with_input", ("{instruction}", "{input}"))):
        text = d.custom_template[key]
        missing = [n for n in needed if n not in text]
        if missing:
            raise ConfigError(f"data.custom_template.{key}", f"must contain {' and '.join(missing)} (got {text!r})")


def _validate_encoding(cfg: DictConfig) -> None:
    import codecs

    try:
        codecs.lookup(cfg.data.encoding)
    except LookupError:
        raise ConfigError("data.encoding", f"unknown text encoding {cfg.data.encoding!r} (e.g. utf-8, latin-1, cp949)") from None


def _has_validation(cfg: DictConfig) -> bool:
    """A split of the rows, a validation file, or a dataset_info.json entry for validation."""
    return cfg.data.val_size > 0 or bool(cfg.data.validation_path) or bool(cfg.data.eval_dataset)


def _validate_mix(cfg: DictConfig) -> None:
    """data.mix_strategy / data.interleave_probs: one chance per entry of data.dataset, none negative, summing to
    1 (as LLaMA-Factory's interleave_probs, which datasets' interleave_datasets reads)."""
    _choice(cfg, "data.mix_strategy", MIX_STRATEGIES)
    d = cfg.data
    probs = d.interleave_probs
    if probs is None:
        return
    if d.mix_strategy == "concat":
        raise ConfigError("data.interleave_probs", "only with data.mix_strategy=interleave_under or interleave_over "
                                                   "(concat keeps every row of every entry)")
    names = names_of(d.dataset) if d.dataset else []
    if len(probs) != len(names):
        listed = f"data.dataset={d.dataset!r} lists {len(names)}" if names else "data.dataset names no entries"
        raise ConfigError("data.interleave_probs", f"one chance per entry of data.dataset: got {len(probs)} ({listed})")
    if any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
        raise ConfigError("data.interleave_probs", f"chances >= 0 that sum to 1 (got {list(probs)}, sum {sum(probs):g})")


def _validate_eval_data(cfg: DictConfig) -> None:
    """An eval_* objective needs validation rows: fail here, not after training all steps."""
    metric = cfg.objective.metric
    if metric.startswith("eval_") and not _has_validation(cfg):
        raise ConfigError(
            "data.val_size",
            f"0 and no data.validation_path leaves no validation data, but objective.metric={metric} needs it; "
            "set data.val_size > 0, data.validation_path, or objective.metric=train_loss",
        )
    if not _has_validation(cfg):  # (train.build_trainer would leave them out, without a word)
        for key, on in (("trainer.early_stopping_patience", cfg.trainer.early_stopping_patience > 0),
                        ("trainer.load_best_model_at_end", cfg.trainer.load_best_model_at_end)):
            if on:
                raise ConfigError(key, "compares evaluations, and data.val_size=0 with no data.validation_path leaves "
                                       "no validation data to evaluate; set data.val_size > 0 or data.validation_path")


def _validate_device(cfg: DictConfig) -> None:
    """Combinations the machine or the libraries cannot do."""
    precision = cfg.trainer.precision
    if precision in ("bf16", "fp16") and not device.cuda_available():
        raise ConfigError("trainer.precision", f"{precision} mixed precision needs a CUDA GPU; use auto or fp32 on CPU")
    import importlib.util

    if cfg.quantization.method in ("nf4", "fp4", "int8"):
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("quantization.method", f"{cfg.quantization.method} needs bitsandbytes, which is not installed")
    attn = cfg.model.attn_implementation
    if attn in ("flash_attention_2", "flash_attention_3"):
        package = "flash_attn" if attn == "flash_attention_2" else "flash_attn_interface"
        if importlib.util.find_spec(package) is None:
            raise ConfigError("model.attn_implementation", f"{attn} needs the {package} package, which is not installed; "
                              "use flex_attention (packing without cross-example attention, no extra package) or sdpa")
        if not device.cuda_available():
            raise ConfigError("model.attn_implementation", f"{attn} needs a CUDA GPU; use sdpa on CPU")
    if attn == "flex_attention" and not device.cuda_available():
        raise ConfigError("model.attn_implementation", "flex_attention cannot train on CPU (PyTorch has no CPU backward for it); "
                          "use sdpa or leave it null")


# quantization.method -> the keys of the group that its builder (ftsweep.model.build_quantization) reads
QUANT_KEYS_READ = {
    "none": ("method",),
    "int8": ("method", "llm_int8_threshold"),
    "nf4": ("method", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype",
            "bnb_4bit_quant_storage"),
}
QUANT_KEYS_READ["fp4"] = QUANT_KEYS_READ["nf4"]


def _validate_quantization_keys(q: DictConfig) -> None:
    """A key of the other method (``quantization=int8`` with ``bnb_4bit_compute_dtype=bfloat16``, ``nf4`` with
    ``llm_int8_threshold``, any key with ``none``) would be read by nothing: refused when it differs from the
    schema's default (the value every option starts from)."""
    from ftsweep.config.schema import QuantizationConfig

    default = QuantizationConfig()
    read = QUANT_KEYS_READ.get(q.method, ())
    for key in q:
        if key in read or q[key] == getattr(default, key, q[key]):
            continue
        users = sorted({m for m, keys in QUANT_KEYS_READ.items() if key in keys})
        what = f"only quantization={' / '.join(users)} reads it" if users else "nothing reads it"
        raise ConfigError(f"quantization.{key}", f"{q[key]!r} would be ignored with quantization={q.method}: {what}; "
                                                 f"drop it or choose that option")


def _validate_lora_init(cfg: DictConfig) -> None:
    """``lora.init``: one of peft's initialisations that ftsweep can save and reload (see the schema)."""
    init = cfg.lora.init
    if init not in options.LORA_INITS and not re.fullmatch(r"pissa_niter_[1-9][0-9]*", str(init)):
        raise ConfigError("lora.init", f"got {init!r}; allowed: {', '.join(options.LORA_INITS)}, pissa_niter_N (N >= 1)")
    if not options.lora_init_changes_base(cfg.lora):
        return
    what = f"{init} changes the base weights (they keep what the adapter does not start with)"
    if cfg.quantization.method != "none":
        raise ConfigError("lora.init", f"{what}: it needs the weights unquantized (quantization=none), or use "
                                       "lora.init=default with quantization")
    if cfg.stage.name in ("dpo", "kto") or (cfg.stage.name == "grpo" and cfg.stage.get("beta", 0)):
        raise ConfigError("lora.init", f"{what}: stage={cfg.stage.name}'s reference (the model with the adapter "
                                       "off) would be the residual, not the starting model; use lora.init=default")


def _validate_stage(cfg: DictConfig) -> None:
    """The stage's own keys; a stage other than sft needs a LoRA adapter (its reference is the adapter off)."""
    from ftsweep.config.stage import STAGE_SCHEMAS

    name = cfg.stage.name
    if name not in STAGES:
        raise ConfigError("stage.name", f"got {name!r}; allowed: {', '.join(STAGES)}")
    schema = OmegaConf.get_type(cfg.stage)
    if schema is not None and schema is not dict and schema is not STAGE_SCHEMAS[name]:
        raise ConfigError("stage.name", f"{name!r} contradicts the {schema.__name__} keys; choose the stage with stage={name}")
    generation = [m for m in (cfg.objective.metric, *cfg.objective.extra_metrics) if is_generation_metric(m)]
    if name != "sft" and generation:
        key = "objective.metric" if is_generation_metric(cfg.objective.metric) else "objective.extra_metrics"
        raise ConfigError(key, f"{generation[0]} generates answers after SFT evaluations; "
                          f"stage={name} uses its own metrics ({', '.join(stage_metrics(name))})")
    if name == "sft":
        if cfg.init_from:
            raise ConfigError("init_from", "starts a preference stage (stage=dpo / kto) from an SFT run; "
                              "to continue SFT use the run's config")
        return
    if not cfg.lora.enabled:
        raise ConfigError("lora.enabled", f"stage={name} trains a LoRA adapter (the reference is the model with "
                          "the adapter off); choose a LoRA option")
    if cfg.data.format == "text":
        raise ConfigError("data.format", f"stage={name} needs prompts and answers; 'text' has neither")
    if cfg.data.packing:
        raise ConfigError("data.packing", f"stage={name} does not pack rows; set data.packing=false")
    s = cfg.stage
    if name == "grpo":
        _validate_grpo(cfg)
        return
    _at_least(cfg, "stage.beta", 0, strict=True)
    if s.max_prompt_length is not None and not 1 <= s.max_prompt_length < cfg.data.cutoff_len:
        raise ConfigError("stage.max_prompt_length", f"must be in [1, data.cutoff_len={cfg.data.cutoff_len}) or null "
                          f"(got {s.max_prompt_length})")
    if name == "dpo":
        _choice(cfg, "stage.loss_type", stage_module("dpo").LOSS_TYPES)
        if not 0.0 <= s.label_smoothing < 0.5:
            raise ConfigError("stage.label_smoothing", f"must be in [0, 0.5) (got {s.label_smoothing})")
    if name == "kto":
        _at_least(cfg, "stage.desirable_weight", 0, strict=True)
        _at_least(cfg, "stage.undesirable_weight", 0, strict=True)
        if cfg.trainer.per_device_train_batch_size < 2:  # trl's KTOTrainer refuses it after the model loaded
            raise ConfigError("trainer.per_device_train_batch_size", "must be >= 2 with stage=kto (its KL term pairs "
                              "each completion with another row's prompt in the same batch; got "
                              f"{cfg.trainer.per_device_train_batch_size})")


def _validate_grpo(cfg: DictConfig) -> None:
    from ftsweep.stages.rewards import build_rewards

    s, t = cfg.stage, cfg.trainer
    _at_least(cfg, "stage.num_generations", 2)
    _at_least(cfg, "stage.max_completion_length", 1)
    _at_least(cfg, "stage.beta", 0)
    _at_least(cfg, "stage.temperature", 0, strict=True)
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if t[key] % s.num_generations:
            raise ConfigError(f"trainer.{key}", f"must be a multiple of stage.num_generations={s.num_generations} "
                              f"(each prompt's completions share a batch; got {t[key]})")
    build_rewards(s.rewards)  # no reward, an unknown one, a function that cannot be imported: one line
