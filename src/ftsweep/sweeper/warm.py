"""Warm components: what a long-lived sweep worker keeps between trials (``hydra.sweeper.warm_workers``).

A cold trial builds its tokenizer, datasets and base model from scratch in a new process. A warm worker
keeps them and gives each trial:

- its config built from an earlier trial's when only sampled values differ (no config file read again:
  :class:`ftsweep.config.memo.ComposeMemo`, node for node what Hydra composes);
- a copy of the kept tokenizer (nothing a trial does to it reaches the next one);
- the kept datasets (Arrow tables, never changed by training);
- the kept base model with a **fresh adapter**: ``apply_lora`` seeds and creates it exactly as in a cold
  run; after the trial ``release`` removes it again (peft ``unload``: the original layers go back, no
  merge) and restores the base model's config and mode.

Each item is kept under a key made of the settings it is built from (tokenizer: model + special tokens;
data: model + data + batch size; base model: model + quantization + data tokens + precision +
checkpointing + seed + lora.enabled): every config key except those :mod:`ftsweep.config.reuse`
excludes, so a new key rebuilds rather than reuses until it is excluded on purpose. A trial with other settings rebuilds that item in the same
process (imports stay warm). A full fine-tune (``lora=none``) trains the base weights and PiSSA / OLoRA
(``lora.init``) change them, so their model is never kept; neither is a base model that had any non-adapter weight trainable during the trial.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ftsweep.config.memo import ComposeMemo
from ftsweep.config.reuse import reuse_keys, settings_of
from ftsweep.train import Components

# peft's adapter parameter names (LoRA / DoRA weights, trained copies of modules, trainable tokens)
ADAPTER_MARKERS = ("lora_", "modules_to_save", "trainable_tokens", "original_module")


def settings_key(cfg: Any, *paths: str) -> str:
    """A stable text key of the config values at ``paths`` (resolved)."""
    return json.dumps(settings_of(cfg, paths), sort_keys=True, default=str)


# Derived from the schema minus an explicit exclude list (ftsweep.config.reuse): a new key is part of
# every key unless it is listed there as unable to change the item.
TOKENIZER_KEYS = reuse_keys("tokenizer")
DATA_KEYS = reuse_keys("datasets")
MODEL_KEYS = reuse_keys("base_model")


# What the evaluation before the first step depends on once the adapter is the identity (see
# initial_evaluation): the base model, the eval rows and how they are batched.
INITIAL_EVAL_KEYS = (*MODEL_KEYS, *DATA_KEYS, "trainer.per_device_eval_batch_size", "trainer.dataloader_num_workers",
                     "objective")


class WarmComponents(Components):
    """Keeps the tokenizer, datasets and base model of the last trial for the next one (see the module)."""

    def __init__(self) -> None:
        self._tokenizer: tuple[str, Any] | None = None
        self._data: tuple[str, Any] | None = None
        # key, model, config, hooks, methods set on the instance
        self._base: tuple[str, Any, dict[str, Any], dict[Any, tuple], dict[str, Any]] | None = None
        self._initial: tuple[str, dict[str, Any]] | None = None  # key, the first evaluation's metrics
        self.reused: list[str] = []  # what the current trial got from an earlier one (for its log)
        self.configs = ComposeMemo()  # trial configs, built from an earlier one when only sampled values differ

    def tokenizer(self, cfg):
        self.reused = ["trial config"] if self.configs.hit else []
        key = settings_key(cfg, *TOKENIZER_KEYS)
        if self._tokenizer is None or self._tokenizer[0] != key:
            self._tokenizer = (key, super().tokenizer(cfg))
        else:
            self.reused.append("tokenizer")
        return copy.deepcopy(self._tokenizer[1])

    def datasets(self, cfg, tokenizer):
        import dataclasses

        key = settings_key(cfg, *DATA_KEYS)
        if self._data is None or self._data[0] != key:
            self._data = (key, super().datasets(cfg, tokenizer))
        else:
            self.reused.append("data")
        bundle = self._data[1]
        return dataclasses.replace(bundle, stats=dict(bundle.stats))

    def model(self, cfg, tokenizer):
        from ftsweep.config.options import lora_init_changes_base
        from ftsweep.console import say
        from ftsweep.model import apply_lora

        if not cfg.lora.enabled or lora_init_changes_base(cfg.lora):  # both change the base weights: never kept
            self._drop_base()
            return super().model(cfg, tokenizer)
        key = settings_key(cfg, *MODEL_KEYS)
        if self._base is None or self._base[0] != key:
            self._drop_base()
            model = self.base_model(cfg, tokenizer)  # init_from's adapter merged in (its run is in the key)
            self._base = (key, model, dict(model.config.__dict__), _hooks(model), _instance_methods(model))
        else:
            self.reused.append("base model")
            model = self._base[1]
        if self.reused:
            say(f"warm worker: reusing {', '.join(self.reused)} from an earlier trial; fresh adapter")
        return apply_lora(cfg, model)

    def initial_evaluation(self, cfg, trainer) -> dict[str, Any]:
        """The evaluation before the first step, computed once per worker and base model / data / eval set.

        A fresh LoRA adapter starts with B = 0, so the adapted model computes exactly the base model's
        outputs (each LoRA layer adds an exact zero): the first evaluation of every trial on the same kept
        base model and eval rows is the same, bit for bit (tests/test_warm.py compares it with a cold
        trial's). A replayed evaluation is logged and passed to the callbacks (pruning report at step 0,
        W&B) like a computed one. Not cached: DoRA, trained bias / module copies / embeddings, any
        adapter whose B is not all zero, or a generation objective (its evaluator runs at each evaluation).
        """
        model = trainer.model
        if not ("base model" in self.reused and _adapter_is_identity(cfg, model)):
            self._initial = None
            metrics = super().initial_evaluation(cfg, trainer)
            if _adapter_is_identity(cfg, model) and self._base is not None:
                self._initial = (settings_key(cfg, *INITIAL_EVAL_KEYS), dict(metrics))
            return metrics
        key = settings_key(cfg, *INITIAL_EVAL_KEYS)
        if self._initial is None or self._initial[0] != key:
            metrics = super().initial_evaluation(cfg, trainer)
            self._initial = (key, dict(metrics))
            return metrics
        metrics = dict(self._initial[1])
        _draw_like_an_evaluation(trainer)
        trainer.log(dict(metrics))
        trainer.control = trainer.callback_handler.on_evaluate(trainer.args, trainer.state, trainer.control, metrics)
        self.reused.append("initial evaluation")
        return metrics

    def release(self, cfg, model) -> None:
        """Take the trial's adapter off the kept base model (or drop the base when it cannot be kept)."""
        if self._base is None:
            return
        _, base, config, hooks, methods = self._base
        if getattr(model, "base_model", None) is None or not hasattr(model, "unload"):
            self._drop_base()
            return
        changed = [n for n, p in model.named_parameters() if p.requires_grad and not any(m in n for m in ADAPTER_MARKERS)]
        restored = model.unload()  # the LoRA layers are replaced by the original ones; nothing merged
        if changed or restored is not base:
            self._drop_base()
            return
        for k, v in config.items():  # e.g. use_cache, which training turns off
            setattr(base.config, k, v)
        if hasattr(base, "peft_config"):
            del base.peft_config
        _remove_hooks_since(base, hooks)  # e.g. the input-embedding hook each trainer adds for checkpointing
        _restore_instance_methods(base, methods)  # e.g. trl's fused LM head, which wraps forward at every init
        base.train(False)

    def _drop_base(self) -> None:
        self._initial = None
        if self._base is None:
            return
        self._base = None
        import gc

        import torch

        gc.unfreeze()  # the worker froze the kept model between trials (worker._free_trial_memory)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _draw_like_an_evaluation(trainer: Any) -> None:
    """Start the eval data loader as an evaluation does, without the model. Starting a torch DataLoader
    draws its base seed from the global RNG; training after a replayed evaluation must continue from the
    same random state as after a computed one (dropout, data order), or warm and cold trials part ways."""
    iterator = iter(trainer.get_eval_dataloader())
    next(iterator, None)
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _adapter_is_identity(cfg: Any, model: Any) -> bool:
    """True when the fresh adapter leaves every output of the base model unchanged (all LoRA B = 0, nothing
    else trainable)."""
    from ftsweep.objectives.evaluator import generation_metrics

    if generation_metrics(cfg.objective):
        return False
    lora = cfg.lora
    if not lora.enabled or lora.use_dora or lora.bias != "none" or lora.modules_to_save or cfg.data.train_embeddings:
        return False
    named = list(model.named_parameters())
    if not any("lora_B" in n for n, _ in named):
        return False
    if any(p.requires_grad and "lora_" not in n for n, p in named):
        return False
    return all(not p.detach().any() for n, p in named if "lora_B" in n)


def _instance_methods(model) -> dict[str, Any]:
    """The methods of the class that ``model`` overrides on the instance (as loaded: usually none)."""
    return {k: v for k, v in vars(model).items() if callable(v) and callable(getattr(type(model), k, None))}


def _restore_instance_methods(model, kept: dict[str, Any]) -> None:
    """Undo what a trial set over the class's methods on the instance: trl's trainers replace ``forward`` with
    their fused LM head at every init (``add_fused_lm_head``), wrapping the forward they find; left on the kept
    base, each trial would wrap the last one's wrapper, a chain as long as the worker's trials."""
    for k in [k for k in _instance_methods(model) if k not in kept]:
        delattr(model, k)
    for k, v in kept.items():
        setattr(model, k, v)


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hooks(model) -> dict[Any, tuple]:
    """The ids of every module's hooks, as loaded."""
    return {m: tuple(frozenset(getattr(m, d, {})) for d in HOOK_DICTS) for m in model.modules()}


def _remove_hooks_since(model, hooks: dict[Any, tuple]) -> None:
    """Remove the hooks a trial registered on the base model's modules (the ones ``hooks`` does not list)."""
    for m in model.modules():
        before = hooks.get(m, tuple(frozenset() for _ in HOOK_DICTS))
        for d, kept in zip(HOOK_DICTS, before):
            table = getattr(m, d, None)
            for hook_id in [h for h in (table or {}) if h not in kept]:
                table.pop(hook_id, None)
                for extra in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                              "_forward_pre_hooks_with_kwargs"):
                    getattr(m, extra, {}).pop(hook_id, None)
