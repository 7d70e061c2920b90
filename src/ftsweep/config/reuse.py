"""Which config keys a reused artefact depends on: the tokenized-data cache and a warm worker's kept
tokenizer, datasets and base model.

Each artefact's key is every schema key (:func:`schema_keys`) except an explicit exclude list of the keys
that cannot change it, so a key added to the schema is part of every key by default (a stale reuse is
impossible; at worst something is rebuilt). ``INCLUDED`` names the keys that do change each artefact:
``tests/test_reuse_keys.py`` fails when a schema key is in neither list, so each new key is classified
on purpose. An entry names a leaf (``data.packing``) or a whole group (``optimizer``: every key in it).
Nothing heavy is imported here.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

from ftsweep.config.data import DataConfig
from ftsweep.config.schema import TrainConfig


def _leaves(schema: type, prefix: str) -> list[str]:
    out: list[str] = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        kind = hints[f.name]
        args = typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union else ()
        nested = next((a for a in (kind, *args) if dataclasses.is_dataclass(a)), None)
        out += _leaves(nested, key + ".") if nested else [key]
    return out


@functools.cache
def schema_keys() -> tuple[str, ...]:
    """Every leaf key of the train config schema, dotted (``model.tiny.hidden_size``, ``data.packing``)."""
    return tuple(_leaves(TrainConfig, ""))


def _covers(entry: str, key: str) -> bool:
    return key == entry or key.startswith(entry + ".")


def derived_keys(exclude: tuple[str, ...]) -> tuple[str, ...]:
    """Every schema key no ``exclude`` entry covers."""
    return tuple(k for k in schema_keys() if not any(_covers(e, k) for e in exclude))


# Groups that act only once a model and its data exist (the optimizer steps, the logger records, the
# objective reads metrics) and top-level keys that are bookkeeping: none of them changes a tokenizer,
# the tokenized rows or the loaded base model.
AFTER_BUILD = ("optimizer", "scheduler", "logger", "objective", "baseline", "notes", "overwrite",
               "init_from_allow_failed")  # (whether an incomplete init_from run may be used: not what is built)
# data keys that decide the rows but not the tokenizer (which only adds special / eos tokens)
DATA_ROWS_ONLY = tuple(f"data.{f.name}" for f in dataclasses.fields(DataConfig)
                       if f.name not in ("special_tokens", "eos_token"))

EXCLUDED: dict[str, tuple[str, ...]] = {
    # data/cache.py fingerprints the data group only (the tokenizer is hashed separately); the files
    # are hashed by content, and which weights train changes no token.
    # (data.dataset / dataset_dir name a dataset_info.json entry: what it gives is in the resolved options)
    "data_cache": ("data.path", "data.validation_path", "data.dataset", "data.dataset_dir", "data.eval_dataset",
                   "data.train_embeddings"),
    "tokenizer": (*AFTER_BUILD, "quantization", "lora", "trainer", *DATA_ROWS_ONLY),
    # the datasets depend on the tokenizer and the data; the batch size only on the length statistics
    "datasets": (*AFTER_BUILD, "quantization", "lora",
                 *(k for k in schema_keys() if k.startswith("trainer.") and k != "trainer.per_device_train_batch_size")),
    # the base model (before its adapter): loading, quantizing, resizing embeddings and preparing it
    "base_model": (*AFTER_BUILD,
                   *(k for k in schema_keys() if k.startswith("lora.") and k != "lora.enabled"),
                   *(k for k in DATA_ROWS_ONLY if k not in ("data.format", "data.packing", "data.train_embeddings")),
                   *(f"trainer.{k}" for k in ("per_device_train_batch_size", "per_device_eval_batch_size",
                                              "gradient_accumulation_steps", "max_steps", "num_train_epochs",
                                              "eval_steps", "intermediate_eval_rows", "save_steps", "save_total_limit", "logging_steps", "group_by_length",
                                              "load_best_model_at_end", "early_stopping_patience",
                                              "dataloader_num_workers", "fail_on_nan", "timeout_s",
                                              "generate_after", "num_threads", "plot_loss",
                                              # NEFTune's hook is off again after training; a checkpoint loads
                                              # into the adapter (a full fine-tune never keeps its base)
                                              "neftune_noise_alpha", "resume_from_checkpoint"))),
}

INCLUDED: dict[str, tuple[str, ...]] = {
    "data_cache": tuple(f"data.{f.name}" for f in dataclasses.fields(DataConfig)
                        if f"data.{f.name}" not in EXCLUDED["data_cache"]),
    # the stage (sft / dpo / kto: how rows are encoded, what is loaded) and init_from (a run whose adapter
    # and tokenizer a run starts from): kept in every key, so any change rebuilds
    "tokenizer": ("model", "cache_dir", "data.special_tokens", "data.eos_token", "stage", "init_from"),
    "datasets": ("model", "cache_dir", "data", "trainer.per_device_train_batch_size", "stage", "init_from"),
    "base_model": ("model", "cache_dir", "quantization", "data.special_tokens", "data.eos_token", "data.format",
                   "data.packing", "data.train_embeddings", "trainer.precision", "trainer.gradient_checkpointing",
                   "trainer.use_reentrant", "trainer.seed", "lora.enabled", "stage", "init_from"),
}


def reuse_keys(artefact: str) -> tuple[str, ...]:
    """The config keys ``artefact`` (data_cache, tokenizer, datasets, base_model) is kept under."""
    return derived_keys(EXCLUDED[artefact])


# The data cache fingerprints the data group only: keys outside it are not its business.
SCOPE: dict[str, str] = {"data_cache": "data"}


def unclassified(artefact: str) -> list[str]:
    """Schema keys neither included nor excluded for ``artefact`` (a test keeps this empty)."""
    listed = (*INCLUDED[artefact], *EXCLUDED[artefact])
    scope = SCOPE.get(artefact)
    return [k for k in schema_keys() if (scope is None or _covers(scope, k))
            and not any(_covers(e, k) for e in listed)]


def data_cache_fields() -> tuple[str, ...]:
    """The DataConfig field names (top level) the tokenized-data cache fingerprints."""
    names = [k.split(".")[1] for k in reuse_keys("data_cache") if k.startswith("data.")]
    return tuple(dict.fromkeys(names))


def settings_of(cfg: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The resolved values of ``keys`` in ``cfg`` (missing keys: None). Each top-level group is resolved once and
    its keys read from that (a warm trial asks for about 250 keys: one at a time took 4x as long); a group with
    a value that does not resolve (e.g. an unset ``${oc.env:...}`` under a key not asked for) is read key by key."""
    from omegaconf import OmegaConf

    def resolved(path: str) -> Any:
        node = OmegaConf.select(cfg, path, default=None)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    groups: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key in keys:
        head, *rest = key.split(".")
        if head not in groups:
            try:
                groups[head] = resolved(head)
            except Exception:  # noqa: BLE001 -- only the keys asked for must resolve: read them one at a time
                groups[head] = _BY_KEY
        value = groups[head]
        if value is _BY_KEY:
            out[key] = resolved(key)
            continue
        for part in rest:
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


_BY_KEY = object()  # settings_of: a group read key by key
