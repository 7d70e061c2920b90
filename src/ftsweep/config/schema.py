"""Dataclass schemas for every config group.

Each dataclass is registered in Hydra's ConfigStore as the base of the YAML options of its group
(``conf/<group>/*.yaml`` start with ``defaults: [<group>_schema, _self_]``), so an unknown key or a
wrong type fails at compose time and names the key. Range checks that a type cannot express live
in :mod:`ftsweep.config.validate`. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, OmegaConf

from ftsweep.config.data import DataConfig
from ftsweep.config.objective import KNOWN_METRICS, ObjectiveConfig  # noqa: F401 -- re-exported
from ftsweep.config.stage import register_stage_schemas


@dataclass
class TinyModelSpec:
    """A Llama-architecture model built locally (no Hub): the stand-in for CPU runs and tests."""

    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    # Optional short causal-LM pass on the bundled C4 text so the base model is not pure noise.
    pretrain_steps: int = 0
    pretrain_lr: float = 3e-3
    seed: int = 0


@dataclass
class ModelConfig:
    name_or_path: str = MISSING
    revision: str | None = None
    # auto | bfloat16 | float16 | float32 (auto: bf16 on GPUs that support it, else fp32)
    dtype: str = "auto"
    # sdpa | eager | flash_attention_2 | null (transformers' default)
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    # Pad-token policy: existing (keep the tokenizer's, fail if none) | eos (pad = eos; the final eos is
    # still trained) | reserved (use ``pad_token`` text, an existing special token) | new (add ``pad_token``
    # as a new token and resize the embeddings) | auto (the tokenizer's own if it has one, else eos)
    pad_policy: str = "reserved"
    pad_token: str | None = "<|reserved_special_token_250|>"
    padding_side: str = "right"
    # Context window of the model; data.cutoff_len must not exceed it.
    max_context: int = 8192
    # When set, the model is built locally from this spec instead of being loaded by name (name_or_path must
    # then stay TINY_NAME: another name would be silently ignored, so validation refuses it).
    tiny: TinyModelSpec | None = None


TINY_NAME = "ftsweep-tiny-llama"  # model=tiny's name_or_path: the tiny model is built, not loaded by name


@dataclass
class QuantizationConfig:
    # none | nf4 | fp4 | int8
    method: str = "none"
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    # bfloat16 | float16 | float32 | auto (auto: bf16 where supported, else fp16 on GPU, fp32 on CPU)
    bnb_4bit_compute_dtype: str = "auto"
    bnb_4bit_quant_storage: str | None = None
    llm_int8_threshold: float = 6.0


@dataclass
class LoraConfig:
    # false = full fine-tune (small models only)
    enabled: bool = True
    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    # a list of module names, or the string "all-linear"
    target_modules: Any = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: str = "none"
    modules_to_save: list[str] | None = None
    use_rslora: bool = False
    use_dora: bool = False
    # LoRA+ (Hayou et al. 2024; LLaMA-Factory's / peft's loraplus_lr_ratio): the B matrices learn at optimizer.lr
    # times this ratio (the paper suggests 16), the A matrices at optimizer.lr; null = off.
    loraplus_lr_ratio: float | None = None
    # how the adapter starts (peft's init_lora_weights): default (A random, B = 0: the base model's outputs),
    # gaussian (A Gaussian, B = 0), pissa / pissa_niter_N (PiSSA, Meng et al. 2024: A and B from the top-r
    # singular vectors of each weight, which keeps only the residual; _niter_N: a fast randomized SVD of N
    # iterations, LLaMA-Factory's pissa_iter), olora (OLoRA: QR of each weight). pissa / olora change the base
    # weights, so they need quantization=none; the saved adapter is converted to apply to the original model.
    init: str = "default"


@dataclass
class OptimizerConfig:
    # adamw_torch | adamw_8bit | paged_adamw_8bit
    name: str = "adamw_torch"
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float = 1.0


@dataclass
class SchedulerConfig:
    # cosine | linear | constant_with_warmup
    name: str = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0


@dataclass
class TrainerConfig:
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    # max_steps > 0 wins over num_train_epochs
    max_steps: int = -1
    num_train_epochs: float = 1.0
    eval_steps: int = 10
    # Evaluations before the last step score only this many validation rows: a fixed, seeded subset
    # (objective.subset_seed), the same in every run and trial, so the pruner and early stopping compare like
    # with like at a fraction of the cost. The last evaluation, metrics.json's eval_loss and the objective use
    # every row. null = every row at every evaluation.
    intermediate_eval_rows: int | None = None
    save_steps: int = 0
    # How many checkpoints save_steps keeps (transformers' save_total_limit: the oldest go first; with
    # load_best_model_at_end the best one stays too); null = every one.
    save_total_limit: int | None = 2
    logging_steps: int = 5
    seed: int = 42
    # auto | bf16 | fp16 | fp32
    precision: str = "auto"
    # Activation checkpointing: true | false | null (auto: on with a GPU, as trl does; off on CPU)
    gradient_checkpointing: bool | None = None
    use_reentrant: bool = False
    group_by_length: bool = False
    load_best_model_at_end: bool = False
    # 0 = off; else stop after this many evaluations without improvement of the objective metric
    early_stopping_patience: int = 0
    dataloader_num_workers: int = 0
    # CPU intra-op threads (torch.set_num_threads); 0 = the process's own (OMP_NUM_THREADS or all cores).
    # Losses on CPU depend on it: a sweep trial records its count and best.yaml pins it (ftsweep.numerics).
    num_threads: int = 0
    # Fail the run (and so the trial) when the training loss becomes NaN or inf.
    fail_on_nan: bool = True
    # Kill the run after this many seconds (0 = no limit); used by sweeps to fail slow trials.
    timeout_s: float = 0.0
    # After training, answer the generation questions with base and fine-tuned model (ftsweep generate).
    generate_after: bool = False
    # NEFTune (Jain et al. 2023; trl / LLaMA-Factory's neftune_noise_alpha): uniform noise of this alpha (the paper
    # uses 5) on the input embeddings while training, never at evaluation or generation; null = off.
    neftune_noise_alpha: float | None = None
    # After training, plot the logged training loss (and eval loss) over the steps, raw and smoothed as
    # LLaMA-Factory's plot_loss does: training_loss.png, training_eval_loss.png in the run folder.
    plot_loss: bool = False
    # Continue a run that stopped (crash, kill, time limit) from a checkpoint it saved (trainer.save_steps > 0): a
    # checkpoint folder (<run>/checkpoints/checkpoint-<step>), the run's folder (its latest checkpoint), or true (the
    # latest in this run's own folder, hydra.run.dir=<the stopped run>, as transformers' True). Adapter, optimizer,
    # scheduler, random state and data order are restored.
    resume_from_checkpoint: str | None = None


@dataclass
class LoggerConfig:
    # wandb | tensorboard | none
    name: str = "wandb"
    project: str = "ftsweep"
    entity: str | None = None
    group: str | None = None
    run_name: str | None = None
    tags: list[str] = field(default_factory=list)
    # online | offline | null (offline automatically when no WANDB_API_KEY and WANDB_MODE is unset)
    mode: str | None = None


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    quantization: QuantizationConfig = MISSING
    lora: LoraConfig = MISSING
    data: DataConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # The training stage (conf/stage/: sft | dpo | kto), each with its own keys (ftsweep.config.stage).
    stage: Any = MISSING
    # A finished SFT run or trial directory whose adapter this run starts from (dpo / kto); the
    # reference is the same weights with the new adapter disabled.
    init_from: str | None = None
    # Start from the adapter of an init_from run that did not complete (failed, pruned, killed): refused otherwise.
    init_from_allow_failed: bool = False
    # Where built tiny models and tokenized datasets are cached.
    cache_dir: str = "~/.cache/ftsweep"
    # A finished run directory whose config a sweep starts from (sweep=lr_after_baseline).
    baseline: str | None = None
    # Free-form notes carried into the manifest and W&B config.
    notes: str | None = None
    # ftsweep train refuses to write into a finished run directory (hydra.run.dir) or a sweep folder
    # (hydra.sweep.dir) that holds another study; overwrite=true replaces them.
    overwrite: bool = False


GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "quantization": QuantizationConfig,
    "lora": LoraConfig,
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "objective": ObjectiveConfig,
}


def register_configs() -> None:
    """Register the root schema and each group's schema (as ``<group>_schema``) in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"{group}_schema", node=schema)
    register_stage_schemas()
    register_resolvers()


def _stage_objective(stage: str, part: str) -> str:
    """``${stage_objective:<stage>,metric|direction}``: the default objective the stage's module declares."""
    from ftsweep.stages.registry import default_objective

    metric, direction = default_objective(stage)
    return metric if part == "metric" else direction


def _objective_direction(metric: str, stage: str, task_metric: str | None = None) -> str:
    """``${objective_direction:<metric>,<stage>,<task_metric>}``: the stage's default direction for its default
    metric, else the direction the metric's name says (``objective.metric=exact_match`` alone maximizes), else the
    stage's. ``lm_eval``: the direction of its ``task_metric`` (a perplexity minimizes)."""
    from ftsweep.config.objective import LM_EVAL, lm_eval_direction, natural_direction
    from ftsweep.stages.registry import default_objective

    if metric == LM_EVAL:
        return lm_eval_direction(task_metric)
    default_metric, default_direction = default_objective(stage)
    if metric == default_metric:
        return default_direction
    return natural_direction(metric) or default_direction


def register_resolvers() -> None:
    """The resolvers ``objective=stage_default`` uses (also needed to read a saved run config back)."""
    if not OmegaConf.has_resolver("stage_objective"):
        OmegaConf.register_new_resolver("stage_objective", _stage_objective)
    if not OmegaConf.has_resolver("objective_direction"):
        OmegaConf.register_new_resolver("objective_direction", _objective_direction)


register_resolvers()  # at import: every reader of a saved config imports the schemas first
