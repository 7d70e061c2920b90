"""Every config key is consumed by the code that builds from its group.

Two checks: (1) behaviour — build the library objects (SFTConfig + callbacks from trainer / optimizer /
scheduler / objective, the W&B run from logger) from a config with each field changed from its default
and check the object reflects the change; a schema field without a check here fails the test, so a new
field cannot be added unread. (2) a source scan — every field of every group is read (``x.field``)
somewhere outside ftsweep/config, the code that only validates it.
"""

from __future__ import annotations

import ast
import functools
import sys
import types
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import ftsweep
from ftsweep.config.schema import (
    GROUP_SCHEMAS,
    LoggerConfig,
    ObjectiveConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
)
from ftsweep.train import checkpointing_field

# field -> (override value, check(args, callbacks) -> bool)
TRAINER = {
    "per_device_train_batch_size": (3, lambda a, c: a.per_device_train_batch_size == 3),
    "per_device_eval_batch_size": (5, lambda a, c: a.per_device_eval_batch_size == 5),
    "gradient_accumulation_steps": (2, lambda a, c: a.gradient_accumulation_steps == 2),
    "max_steps": (7, lambda a, c: a.max_steps == 7),
    "num_train_epochs": (2.5, lambda a, c: a.num_train_epochs == 2.5),
    "eval_steps": (4, lambda a, c: a.eval_steps == 4),
    # installed over the built trainer's evaluate by ftsweep.train.build_trainer (tests/test_intermediate_eval.py)
    "intermediate_eval_rows": (5, None),
    "save_steps": (6, lambda a, c: a.save_steps == 6 and a.save_strategy == "steps"),
    "save_total_limit": (None, lambda a, c: a.save_total_limit is None),
    "logging_steps": (3, lambda a, c: a.logging_steps == 3),
    "seed": (7, lambda a, c: a.seed == 7 and a.data_seed == 7),
    "precision": ("bf16", lambda a, c: a.bf16 and not a.fp16),
    "gradient_checkpointing": (True, lambda a, c: getattr(a, checkpointing_field())),
    "use_reentrant": (True, lambda a, c: getattr(a, checkpointing_field() + "_kwargs") == {"use_reentrant": True}),
    "group_by_length": (True, lambda a, c: a.train_sampling_strategy == "group_by_length"),
    "load_best_model_at_end": (True, None),  # needs save_steps > 0: checked below
    "early_stopping_patience": (2, lambda a, c: any(type(x).__name__ == "EarlyStopping" and x.patience == 2 for x in c)),
    "dataloader_num_workers": (1, lambda a, c: a.dataloader_num_workers == 1),
    "neftune_noise_alpha": (5.0, lambda a, c: a.neftune_noise_alpha == 5.0),
    "fail_on_nan": (False, lambda a, c: any(type(x).__name__ == "NanGuard" and not x.enabled for x in c)),
    "timeout_s": (9.0, lambda a, c: any(type(x).__name__ == "TimeLimit" and x.seconds == 9.0 for x in c)),
    # read by the `ftsweep train` task after the run (tests/test_train.py runs it end to end)
    "generate_after": (True, None),
    # applied around the run by ftsweep.train.run (tests/test_numerics.py)
    "num_threads": (1, None),
    # passed to Trainer.train by ftsweep.train.run (tests/test_resume.py runs it end to end)
    "resume_from_checkpoint": ("x", None),
    # read by ftsweep.train.run after training (tests/test_plot_loss.py runs it end to end)
    "plot_loss": (True, None),
}
OPTIMIZER = {
    "name": ("adamw_8bit", lambda a, c: str(a.optim) in ("adamw_bnb_8bit", "OptimizerNames.ADAMW_BNB")),
    "lr": (3e-3, lambda a, c: a.learning_rate == 3e-3),
    "weight_decay": (0.1, lambda a, c: a.weight_decay == 0.1),
    "betas": ([0.8, 0.95], lambda a, c: (a.adam_beta1, a.adam_beta2) == (0.8, 0.95)),
    "eps": (1e-6, lambda a, c: a.adam_epsilon == 1e-6),
    "max_grad_norm": (0.5, lambda a, c: a.max_grad_norm == 0.5),
}
SCHEDULER = {
    "name": ("linear", lambda a, c: str(a.lr_scheduler_type) in ("linear", "SchedulerType.LINEAR")),
    "warmup_steps": (3, lambda a, c: a.warmup_steps == 3),
    "warmup_ratio": (0.25, lambda a, c: a.warmup_steps == 0.25),  # transformers 5: a float < 1 is a ratio
}
OBJECTIVE = {
    "metric": ("eval_mean_token_accuracy", lambda a, c: a.metric_for_best_model == "mean_token_accuracy"),
    "direction": ("maximize", lambda a, c: a.greater_is_better is True),
    # generation objectives: read by ftsweep.objectives.evaluator / metrics (tests/test_objective.py)
    **{k: (None, None) for k in ("extra_metrics", "normalize", "pattern", "pattern_match", "function", "max_samples", "subset_seed",
                                 "final_all_rows", "max_new_tokens", "new_tokens_margin", "batch_size",
                                 "write_predictions")},
    # objective=lm_eval: read by ftsweep.objectives.harness (tests/test_lm_eval.py)
    **{k: (None, None) for k in ("tasks", "task_metric", "include_path", "limit", "num_fewshot", "lm_eval_at_evals")},
}


def _build(compose, group: str | None = None, key: str | None = None, value=None, extra: tuple = ()):
    from ftsweep.train import build_callbacks, build_training_args

    cfg = compose(*extra, check=False)
    if group is not None:
        OmegaConf.update(cfg, f"{group}.{key}", value, merge=False)
    args = build_training_args(cfg.trainer, cfg.optimizer, cfg.scheduler, objective=cfg.objective, data=cfg.data,
                               has_eval=True, output_dir=Path("/tmp/unused"), run_name="x",
                               report_to=[])
    return args, build_callbacks(cfg.trainer, cfg.objective, has_eval=True)


@pytest.mark.parametrize("group, schema, table", [
    ("trainer", TrainerConfig, TRAINER), ("optimizer", OptimizerConfig, OPTIMIZER),
    ("scheduler", SchedulerConfig, SCHEDULER), ("objective", ObjectiveConfig, OBJECTIVE),
])
def test_every_training_field_reaches_the_trainer(compose, group, schema, table):
    assert set(table) == {f.name for f in fields(schema)}, "a schema field without a consumption check"
    base_args, base_cbs = _build(compose)
    for key, (value, check) in table.items():
        if check is None:
            continue
        assert not check(base_args, base_cbs), f"{group}.{key}: the default already passes the check"
        args, cbs = _build(compose, group, key, value)
        assert check(args, cbs), f"{group}.{key}={value!r} did not reach the trainer"


def test_load_best_model_at_end_reaches_the_trainer_when_checkpoints_are_saved(compose):
    args, _ = _build(compose, extra=("trainer.save_steps=20", "trainer.load_best_model_at_end=true"))
    assert args.load_best_model_at_end
    args, _ = _build(compose, extra=("trainer.save_steps=20",))
    assert not args.load_best_model_at_end


def test_every_logger_field_reaches_the_wandb_run(compose, tmp_path, monkeypatch):
    from ftsweep.tracking import Tracker

    seen = {}

    def init(**kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(id="r1", summary={}, finish=lambda **_: None)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Settings=lambda **kw: kw))
    values = {"name": "wandb", "project": "p2", "entity": "me", "group": "g2", "run_name": "n2", "tags": ["a", "b"],
              "mode": "disabled"}
    assert set(values) == {f.name for f in fields(LoggerConfig)}
    cfg = compose(*(f"logger.{k}={v}" for k, v in values.items() if k != "tags"), "logger.tags=[a,b]")
    Tracker(cfg.logger, tmp_path, {}).start()
    assert (seen["project"], seen["entity"], seen["group"], seen["name"], seen["tags"], seen["mode"]) == \
        ("p2", "me", "g2", "n2", ["a", "b"], "disabled")
    assert Tracker(compose("logger=tensorboard").logger, tmp_path, {}).report_to == ["tensorboard"]


# --------------------------------------------------------------------------------------- source scan
@functools.cache  # (the package parsed once, not once per field)
def _reads_outside_config() -> frozenset[str]:
    root = Path(ftsweep.__file__).parent
    names: set[str] = set()
    for path in root.rglob("*.py"):
        if "config" in path.relative_to(root).parts[:1]:
            continue  # ftsweep/config validates fields; it does not build anything from them
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                names.add(str(node.slice.value))
    return frozenset(names)


@pytest.mark.parametrize("group", sorted(GROUP_SCHEMAS) + ["objective"])
def test_every_field_of_every_group_is_read_by_a_builder(group):
    schema = GROUP_SCHEMAS.get(group, ObjectiveConfig)
    unread = sorted(f.name for f in fields(schema) if f.name not in _reads_outside_config())
    assert not unread, f"{group}: never read outside ftsweep/config: {unread}"
