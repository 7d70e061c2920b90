"""Option registries: the one table per config choice that validation, the recipe and the memory model read.

Adding an optimizer (or a scheduler, a precision) is one entry here plus its YAML file in ``conf/``:
:mod:`ftsweep.config.validate` accepts it, :func:`ftsweep.train.build_training_args` passes it to
transformers, :mod:`ftsweep.memory` counts its state. Nothing heavy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimizerSpec:
    """An ``optimizer.name``: what transformers calls it and how it keeps its state."""

    trl_name: str  # transformers' OptimizerNames value (TrainingArguments.optim)
    eight_bit: bool = False  # bitsandbytes: one byte per state (tensors < BNB_MIN_8BIT_SIZE stay 32-bit)
    paged: bool = False  # states in paged (unified) memory: spill to CPU instead of failing


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw_torch": OptimizerSpec("adamw_torch"),
    "adamw_8bit": OptimizerSpec("adamw_bnb_8bit", eight_bit=True),
    "paged_adamw_8bit": OptimizerSpec("paged_adamw_8bit", eight_bit=True, paged=True),
}

# scheduler.name -> transformers' lr_scheduler_type
SCHEDULERS: dict[str, str] = {
    "cosine": "cosine",
    "linear": "linear",
    "constant_with_warmup": "constant_with_warmup",
}

# torch dtype name (model.dtype, quantization.bnb_4bit_compute_dtype) -> bytes per value; "auto" follows
# the training precision
DTYPE_BYTES: dict[str, int] = {"bfloat16": 2, "float16": 2, "float32": 4}
DTYPES: tuple[str, ...] = ("auto", *DTYPE_BYTES)

# trainer.precision -> the dtype it computes in; "auto" is resolved per device (ftsweep.device)
PRECISION_DTYPES: dict[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
PRECISIONS: tuple[str, ...] = ("auto", *PRECISION_DTYPES)

# objective.direction (and a sweep's per-metric directions), Optuna's names
DIRECTIONS: tuple[str, ...] = ("minimize", "maximize")

# lora.init -> how peft starts the adapter (its init_lora_weights); pissa_niter_N is accepted besides these
LORA_INITS: dict[str, object] = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}


def peft_lora_init(init: str) -> object:
    """``lora.init`` -> peft's ``init_lora_weights`` value."""
    return LORA_INITS.get(init, init)


def lora_init_changes_base(lora) -> bool:
    """PiSSA and OLoRA move part of each adapted weight into the adapter: the base weights change, the starting
    adapter is not zero (a warm worker cannot keep that base; the saved adapter is converted)."""
    return bool(lora.enabled) and str(lora.init).startswith(BASE_CHANGING_INITS)


BASE_CHANGING_INITS = ("pissa", "olora")  # lora.init values (and peft's init_lora_weights) that change the base
