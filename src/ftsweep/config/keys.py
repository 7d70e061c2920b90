"""Which config keys exist: the schema a dotted key belongs to, the keys allowed at a node, where else a
name lives, and the one line for a key that is none of them (an override of an unknown key, or one added
with ``+`` that nothing would read).

Imports OmegaConf and the schemas only (fast).
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ftsweep.config.schema import TrainConfig

# Names from transformers' TrainingArguments, trl's, peft's and LLaMA-Factory's configs and their example scripts that are
# spelled differently here: where a user who knows those tools finds the setting.
FOREIGN_NAMES = {
    "learning_rate": "optimizer.lr",
    "optim": "optimizer.name",
    "adam_beta1": "optimizer.betas.0",  # one item of the pair (the other keeps its value)
    "adam_beta2": "optimizer.betas.1",
    "adam_epsilon": "optimizer.eps",
    "lr_scheduler_type": "scheduler.name",
    "lora_r": "lora.r",
    "rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules",
    "init_lora_weights": "lora.init",  # peft's (its True is our default)
    "pissa_init": "lora.init=pissa",  # LLaMA-Factory's switch (its pissa_iter N: lora.init=pissa_niter_N)
    "use_peft": "lora.enabled",
    "max_seq_length": "data.cutoff_len",
    "max_length": "data.cutoff_len",
    "model_name_or_path": "model.name_or_path",
    "torch_dtype": "model.dtype",
    "dataset_name": "data.path",
    "dataset_text_field": "data.columns.text",
    "bf16": "trainer.precision",
    "fp16": "trainer.precision",
    "num_epochs": "trainer.num_train_epochs",
    "epochs": "trainer.num_train_epochs",
    "batch_size": "trainer.per_device_train_batch_size",
    "eval_batch_size": "trainer.per_device_eval_batch_size",
    "report_to": "logger.name",
    "run_name": "logger.run_name",
    "load_in_4bit": "quantization=nf4",
    "load_in_8bit": "quantization=int8",
    "output_dir": "hydra.run.dir",
    # LLaMA-Factory's training arguments
    "dataset": "data.dataset",
    "dataset_dir": "data.dataset_dir",
    "eval_dataset": "data.eval_dataset",
    "max_samples": "data.max_rows",
    "mix_strategy": "data.mix_strategy",
    "interleave_probs": "data.interleave_probs",  # a comma list: 0.7,0.3
    "lora_rank": "lora.r",
    "lora_target": "lora.target_modules",
    "quantization_bit": "quantization",  # 4 -> quantization=nf4, 8 -> int8 (QUANTIZATION_BITS)
    "finetuning_type": "lora.enabled",  # lora -> true, full -> false (FINETUNING_TYPES); freeze / oft: none here
    "flash_attn": "model.attn_implementation",
    "pref_beta": "stage.beta",
    "pref_loss": "stage.loss_type",
    "template": "data.format",  # LLAMA_FACTORY_TEMPLATES
    "neat_packing": "data.packing",  # packing without attention across examples: ours always is
    "additional_target": "lora.modules_to_save",
    "new_special_tokens": "data.special_tokens",
    # Axolotl's config keys
    "base_model": "model.name_or_path",
    "micro_batch_size": "trainer.per_device_train_batch_size",
    "sequence_len": "data.cutoff_len",
    "sample_packing": "data.packing",
    "val_set_size": "data.val_size",
    "lr_scheduler": "scheduler.name",
}
# hydra-optuna-sweeper's keys (hydra/sweeper=optuna) under hydra.sweeper, by their path there -> what to write here
SWEEPER_FOREIGN = {
    "n_jobs": "hydra.sweeper.n_workers (trials at once)",
    "sampler._target_": "hydra.sweeper.sampler.name=tpe|random|grid|cmaes|gp|qmc",
    "pruner._target_": "hydra.sweeper.pruner.name=none|median|percentile|successive_halving|hyperband",
    "search_space": "hydra.sweeper.params",
    "custom_search_space": "hydra.sweeper.derived (values computed from the sampled ones) or hydra.sweeper.variables",
}
# LLaMA-Factory's quantization_bit (bitsandbytes; its default quantization_type is nf4) -> our quantization option
QUANTIZATION_BITS = {4: "nf4", 8: "int8"}
FINETUNING_TYPES = {"lora": "true", "full": "false"}


def _item_fields() -> dict[str, tuple[str, ...]]:
    from ftsweep.config.stage import RewardSpec

    return {"stage.rewards": tuple(f.name for f in fields(RewardSpec))}


# Settings that are lists of entries with a schema: the keys an entry takes
ITEM_FIELDS = _item_fields()


def schema_of(key: str) -> tuple[Any, str]:
    """(schema, its key prefix) that a dotted key belongs to: hydra.sweeper.* -> SweeperConf, other hydra.*
    keys are Hydra's own (no schema of ours), the rest -> TrainConfig."""
    from ftsweep.config.sweeper import SweeperConf

    if key.startswith("hydra.sweeper."):
        return SweeperConf, "hydra.sweeper."
    return (None, "") if key.startswith("hydra.") else (TrainConfig, "")


def allowed_keys(path: str, root: Any = TrainConfig) -> list[str] | None:
    """Field names of the schema node at dotted ``path`` (e.g. 'lora' -> LoraConfig's fields)."""
    node: Any = root
    for part in [p for p in path.split(".") if p]:
        hint = typing.get_type_hints(node).get(part)
        candidates = [hint, *typing.get_args(hint)]  # unwrap Optional[...] / X | None
        node = next((c for c in candidates if is_dataclass(c)), None)
        if node is None:
            return None
    return [f.name for f in fields(node) if not f.name.startswith("_")]


def keys_named(name: str, node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of schema ``node`` whose last part is ``name`` (``seed`` -> model.tiny.seed, data.seed, ...)."""
    found = []
    hints = typing.get_type_hints(node)
    for f in fields(node):
        path = f"{prefix}{f.name}"
        if f.name == name:
            found.append(path)
        hint = hints.get(f.name)
        child = next((c for c in [hint, *typing.get_args(hint)] if is_dataclass(c)), None)
        if child is not None:
            found += keys_named(name, child, f"{path}.")
    return found


FREE_FORM = ("data.extra", "data.replacements")  # the dicts that take keys of the user's (README)
SWEEP_SPACE = ("hydra.sweeper.params", "hydra.sweeper.variables", "hydra.sweeper.derived")  # keyed by override keys


def unknown_key(key: str) -> str:
    """What to say of ``key``, which is not a key of the config: the keys allowed beside it, and the key
    (or option) meant when its name lives elsewhere or is another tool's name for one of ours."""
    space = next((p for p in SWEEP_SPACE if key.startswith(p + ".")), None)
    if space:  # hydra.sweeper.params={optimizer.lr: '...'}: Hydra merges the dict in struct mode
        name = key[len(space) + 1:]
        ways = f"{name}=<sweep> on the command line, or " if space.endswith(".params") else ""
        return f"new key in {space}: give it as {ways}++{space}={{{name}: '<value>'}}"
    root, at = schema_of(key)
    parent, _, name = key[len(at):].rpartition(".")
    allowed = allowed_keys(parent, root) if root is not None else None
    hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
    if at == "hydra.sweeper.":
        foreign = SWEEPER_FOREIGN.get(key[len(at):])
        if foreign:  # written as for Hydra's Optuna sweeper plugin
            return f"unknown key{hint}; did you mean {foreign}? (ftsweep's sweeper for Hydra's Optuna sweeper's {name})"
    if root is TrainConfig and parent in FREE_FORM:  # data.extra={field: x}: Hydra merges into it in struct mode
        return (f"new key in the free-form {parent}: add it with +{key}=<value> (or set it whole: "
                f"++{parent}={{{name}: <value>}})")
    if root is TrainConfig and parent and name == parent:  # lora: {r: 8} written inside conf/lora/<option>.yaml
        return (f"unknown key{hint}; a file of group {parent} (conf/{parent}/<option>.yaml) holds its keys at the "
                f"top, without a '{name}:' level above them")
    if root is TrainConfig and parent == "stage":  # a key of another stage (stage=sft stage.beta=0.1)
        from ftsweep.config.stage import stage_keys

        hint = f" for this stage (keys by stage: {stage_keys()})"
    # a longer name in the same group (model.path: model.name_or_path, not data.path), the shortest first
    elif len(name) >= 4 and (inside := sorted((f for f in allowed or [] if name in f and f != name), key=len)):
        hint += f"; did you mean {' or '.join(at + (f'{parent}.' if parent else '') + f for f in inside[:3])}?"
    elif root is not None and (elsewhere := [at + k for k in keys_named(name, root) if at + k != key]):
        hint += f"; did you mean {' or '.join(elsewhere)}?"
    elif root is TrainConfig and name in FOREIGN_NAMES and FOREIGN_NAMES[name] != key:
        hint += f"; did you mean {FOREIGN_NAMES[name]}? (ftsweep's name for {name})"
    elif close := difflib.get_close_matches(name, allowed or [], n=1, cutoff=0.8):
        hint += f"; did you mean {at}{f'{parent}.' if parent else ''}{close[0]}?"
    elif root is TrainConfig and parent == "data.columns":  # the mapping written the other way round
        field = allowed[0] if allowed else "instruction"
        hint += f"; a key here is the field, the value your column: data.columns.{field}={name}"
    elif at == "hydra.sweeper." and parent == "sampler":  # a keyword of the Optuna class (TPESampler(consider_prior=))
        hint += f"; a keyword argument of the Optuna sampler goes in +hydra.sweeper.sampler.options.{name}=<value>"
    return f"unknown key{hint}"


# Other tools' values that are spelled differently here, by our key (LLaMA-Factory's lora_target: all)
FOREIGN_VALUES = {("lora.target_modules", "all"): "all-linear",
                  # LLaMA-Factory's flash_attn: fa2 / sdpa / disabled / auto
                  ("model.attn_implementation", "fa2"): "flash_attention_2",
                  ("model.attn_implementation", "disabled"): "eager",
                  ("model.attn_implementation", "auto"): None}
# LLaMA-Factory's template (a chat template, not our data.template, an Alpaca one) -> how its rows render here:
# llama3 / chatml are bundled chat templates, alpaca our Alpaca one, another model's is the tokenizer's own
LLAMA_FACTORY_TEMPLATES = {"llama3": "data.format=chat data.chat_template=llama3",
                           "chatml": "data.format=chat data.chat_template=chatml",
                           "alpaca": "data.format=alpaca data.template=alpaca_en",
                           "default": None, "empty": None}
SWITCH_OFF = (False, None, "false", "False", "0", 0)
# Keys whose value is a list, which LLaMA-Factory writes as one comma-separated string (lora_target: all stays a word)
LIST_KEYS = ("lora.target_modules", "lora.modules_to_save", "data.special_tokens", "data.interleave_probs")


def ours(name: str) -> list[str]:
    """The ftsweep keys (or ``group=option``) another tool's setting ``name`` is, the trainer's first: the
    foreign-name table, one of our own dotted keys, or the schema keys whose last part is ``name`` (exact names
    only: a guess would write a wrong override)."""
    if name in FOREIGN_NAMES:
        return [FOREIGN_NAMES[name]]
    root, at = schema_of(name)
    if root is None:
        return []
    parent, _, leaf = name[len(at):].rpartition(".")
    if leaf in (allowed_keys(parent, root) or []):
        return [name]
    named = [at + k for k in keys_named(leaf, root)] if not parent else []
    return sorted(named, key=lambda k: not k.startswith("trainer."))


def override_for(name: str, value: Any) -> str | None:
    """``name: value`` of another tool's config (or command line) as one ftsweep override; None when no key of
    ours is that setting, or it is a switch that is off (``load_in_4bit: false``)."""
    keys = ours(name)
    if not keys:
        return None
    key = keys[0]
    if "=" in key or (key == "trainer.precision" and name in ("bf16", "fp16")):  # a switch that names its value
        return None if value in SWITCH_OFF else (key if "=" in key else f"{key}={name}")
    if key == "quantization":  # a number of bits names the option (None: a width we have no option for)
        bits = QUANTIZATION_BITS.get(int(value)) if isinstance(value, int | str) and str(value).isdigit() else None
        return f"quantization={bits}" if bits else None
    if name == "template":  # LLaMA-Factory's chat template name
        return LLAMA_FACTORY_TEMPLATES.get(str(value), "data.format=chat")
    if key == "lora.enabled":  # LLaMA-Factory's finetuning_type (a switch elsewhere: use_peft)
        value = FINETUNING_TYPES.get(str(value), None if name == "finetuning_type" else value)
        if value is None:
            return None
    if key == "model.name_or_path":  # any Hub model or folder is the model=hub option (the default builds tiny)
        return f"model=hub model.name_or_path={override_value(value)}"
    if key in LIST_KEYS and isinstance(value, str) and ("," in value or key != "lora.target_modules"):
        value = [v.strip() for v in value.split(",")]  # LLaMA-Factory's comma lists: q_proj,v_proj
    return f"{key}={override_value(FOREIGN_VALUES.get((key, value), value) if isinstance(value, str) else value)}"


def shell_quoted(overrides: str) -> str:
    """``overrides`` (what :func:`override_for` writes) as words to paste into a shell: one whose value Hydra needs
    quoted (``data.dataset='identity,alpaca_en_demo'``) or that holds a character the shell reads is put in double
    quotes, so the shell keeps Hydra's quotes."""
    words = re.findall(r"(?:[^\s']+|'(?:\\.|[^'\\])*')+", overrides)  # the overrides: spaces outside Hydra's quotes
    return " ".join(w if re.fullmatch(r"[\w./:@+=,-]+", w) else '"' + re.sub(r'([\\"$`])', r"\\\1", w) + '"'
                    for w in words)


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back (quoted where it would not)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    text = str(value)
    if re.fullmatch(r"[\w./:@+-]+", text, re.ASCII):  # Hydra reads unquoted values as ASCII only (not 데이터)
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def added_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys of ``cfg`` that its schema nodes do not declare: what ``+key=value`` added to a
    structured node (Hydra allows it; nothing here would read it). Free-form dicts (``data.extra``,
    ``data.replacements``) take any key."""
    found: list[str] = []

    def walk(node: DictConfig, path: str) -> None:
        kind = OmegaConf.get_type(node)
        declared = {f.name for f in fields(kind)} if is_dataclass(kind) else None
        for k in node:
            if declared is not None and k not in declared:
                found.append(f"{path}{k}")
                continue
            child = node._get_node(k)
            if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
                walk(child, f"{path}{k}.")

    walk(cfg, "")
    return found
