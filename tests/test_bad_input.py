"""Bad input, table-driven: every case exits 2 with exactly one stderr line that names the field, and
writes nothing (run in an empty working directory that must stay as the test left it).

Config values, sweep grammar and sweeper settings, command-line usage of every subcommand, data files.
In-process through ``ftsweep.cli.main`` (fast); a sweep's bad input ends in ``SystemExit(2)``.
"""

from __future__ import annotations

import sys
import types

import pytest
from sweep_helpers import FAKE_CMD

from ftsweep.cli import main

RUN = ["train", "model=tiny", "logger=none"]
SWEEP = ["train", "-m", "hydra/sweeper=ftsweep_optuna", "model=tiny", "logger=none", "hydra.sweeper.report=false"]
LR = "optimizer.lr=tag(log,interval(1e-4,1e-2))"

# (id, argv, text the one error line must contain)
CASES = [
    # ---- config values (one run)
    ("lr_nan", [*RUN, "optimizer.lr=nan"], "optimizer.lr"),
    ("lr_inf", [*RUN, "optimizer.lr=inf"], "optimizer.lr"),
    ("lr_neg_inf", [*RUN, "optimizer.lr=-inf"], "optimizer.lr"),
    ("lr_zero", [*RUN, "optimizer.lr=0"], "optimizer.lr"),
    ("lr_negative", [*RUN, "optimizer.lr=-1e-3"], "optimizer.lr"),
    ("lr_text", [*RUN, "optimizer.lr=fast"], "optimizer.lr"),
    ("weight_decay_negative", [*RUN, "optimizer.weight_decay=-0.1"], "optimizer.weight_decay"),
    ("weight_decay_nan", [*RUN, "optimizer.weight_decay=nan"], "optimizer.weight_decay"),
    ("eps_zero", [*RUN, "optimizer.eps=0"], "optimizer.eps"),
    ("betas_one", [*RUN, "optimizer.betas=[0.9]"], "optimizer.betas"),
    ("betas_range", [*RUN, "optimizer.betas=[0.9,1.5]"], "optimizer.betas"),
    ("max_grad_norm_inf", [*RUN, "optimizer.max_grad_norm=inf"], "optimizer.max_grad_norm"),
    ("optimizer_name", [*RUN, "optimizer.name=sgd"], "optimizer.name"),
    ("lora_r_zero", [*RUN, "lora.r=0"], "lora.r"),
    ("lora_alpha_zero", [*RUN, "lora.alpha=0"], "lora.alpha"),
    ("lora_dropout_one", [*RUN, "lora.dropout=1.0"], "lora.dropout"),
    ("lora_dropout_nan", [*RUN, "lora.dropout=nan"], "lora.dropout"),
    ("lora_bias", [*RUN, "lora.bias=some"], "lora.bias"),
    ("lora_targets_empty", [*RUN, "lora.target_modules=[]"], "lora.target_modules"),
    ("lora_option", [*RUN, "lora=r99"], "lora=r99"),
    ("scheduler_name", [*RUN, "scheduler.name=step"], "scheduler.name"),
    ("warmup_ratio", [*RUN, "scheduler.warmup_ratio=1.5"], "scheduler.warmup_ratio"),
    ("warmup_ratio_nan", [*RUN, "scheduler.warmup_ratio=nan"], "scheduler.warmup_ratio"),
    ("warmup_steps", [*RUN, "scheduler.warmup_steps=-1"], "scheduler.warmup_steps"),
    ("max_steps_zero", [*RUN, "trainer.max_steps=0"], "trainer.max_steps"),
    ("max_steps_negative", [*RUN, "trainer.max_steps=-5"], "trainer.max_steps"),
    ("max_steps_float", [*RUN, "trainer.max_steps=1.5"], "trainer.max_steps"),
    ("batch_zero", [*RUN, "trainer.per_device_train_batch_size=0"], "trainer.per_device_train_batch_size"),
    ("accumulation_zero", [*RUN, "trainer.gradient_accumulation_steps=0"], "trainer.gradient_accumulation_steps"),
    ("eval_steps_zero", [*RUN, "trainer.eval_steps=0"], "trainer.eval_steps"),
    ("epochs_zero", [*RUN, "trainer.num_train_epochs=0"], "trainer.num_train_epochs"),
    ("epochs_nan", [*RUN, "trainer.num_train_epochs=nan"], "trainer.num_train_epochs"),
    ("precision", [*RUN, "trainer.precision=bf17"], "trainer.precision"),
    ("timeout_negative", [*RUN, "trainer.timeout_s=-1"], "trainer.timeout_s"),
    ("seed_negative", [*RUN, "trainer.seed=-1"], "trainer.seed: must be 0 to 2**32 - 1 (got -1)"),
    ("dataloader_workers_negative", [*RUN, "trainer.dataloader_num_workers=-1"], "trainer.dataloader_num_workers"),
    ("timeout_nan", [*RUN, "trainer.timeout_s=nan"], "trainer.timeout_s"),
    ("dtype", [*RUN, "model.dtype=float8"], "model.dtype"),
    ("pad_policy", [*RUN, "model.pad_policy=xyz"], "model.pad_policy"),
    ("padding_side", [*RUN, "model.padding_side=up"], "model.padding_side"),
    ("quant_method", [*RUN, "quantization.method=int3"], "quantization.method"),
    ("cutoff_small", [*RUN, "data.cutoff_len=4"], "data.cutoff_len"),
    ("data_format", [*RUN, "data.format=xml"], "data.format"),
    ("val_size_negative", [*RUN, "data.val_size=-1"], "data.val_size"),
    ("val_size_nan", [*RUN, "data.val_size=nan"], "data.val_size"),
    ("max_rows_zero", [*RUN, "data.max_rows=0"], "data.max_rows"),
    ("overlong", [*RUN, "data.overlong=cut"], "data.overlong"),
    ("prompt_cut", [*RUN, "data.prompt_cut=middle"], "data.prompt_cut"),
    ("metric", [*RUN, "objective.metric=accuracy"], "objective.metric"),
    ("direction", [*RUN, "objective.direction=up"], "objective.direction"),
    ("logger_name", [*RUN, "logger.name=mlflow"], "logger.name"),
    ("unknown_key", [*RUN, "optimizer.lrr=1"], "optimizer.lrr"),
    ("model_option", ["train", "model=nonexistent"], "model=nonexistent"),
    ("sweep_option", ["train", "sweep=nonexistent"], "sweep=nonexistent"),
    ("secret_override", [*RUN, "+hf_token=hf_xyz"], "hf_token"),
    ("sweep_without_m", [*RUN, "optimizer.lr=choice(1e-3,2e-3)"], "optimizer.lr"),
    ("bad_override_syntax", [*RUN, "optimizer.lr=(1e-3"], "error: optimizer.lr: cannot parse"),
    ("not_an_override", [*RUN, "optimizer.lr"], "optimizer.lr"),
    # ---- data files
    ("data_missing_relative", [*RUN, "data.path=./missing.jsonl"], "data.path"),
    ("data_missing_by_extension", [*RUN, "data.path=missing.json"], "data.path"),
    ("data_missing_absolute", [*RUN, "data.path=/nonexistent/x.csv"], "data.path"),
    ("data_missing_home", [*RUN, "data.path=~/no_such_ftsweep_file.parquet"], "data.path"),
    ("data_missing_parent", [*RUN, "data.path=../nowhere/x.txt"], "data.path"),
    ("validation_missing", [*RUN, "data.validation_path=./missing_val.json"], "data.validation_path"),
    ("data_missing_in_sweep", [*SWEEP, LR, "data.path=./missing.jsonl"], "data.path"),
    ("data_choice_missing", [*SWEEP, "data.path=choice(./a.json,./missing.json)"], "data.path"),
    # ---- sweep grammar and sweeper settings
    ("interval_one_bound", [*SWEEP, "optimizer.lr=interval(1e-3)"], "error: optimizer.lr: cannot parse"),
    ("interval_one_bound_overlay", ["train", "sweep=quickstart", "optimizer.lr=interval(1e-3)"], "error: optimizer.lr:"),
    ("choice_empty", [*SWEEP, "lora=choice()"], "error: lora: cannot parse 'choice()': empty choice"),
    ("choice_empty_overlay", ["train", "sweep=quickstart", "lora=choice()"], "error: lora:"),
    ("derived_bad_on_command_line", ["train", "sweep=batch_size", "hydra.sweeper.derived.optimizer.lr={lr_multiplier}**"],
     "error: hydra.sweeper.derived.optimizer.lr: cannot parse"),
    ("derived_bad_expression_cli", ["train", "sweep=batch_size", "hydra.sweeper.derived={optimizer.lr:'{lr_multiplier} **'}"],
     "error: hydra.sweeper.derived.optimizer.lr: cannot evaluate"),
    ("interval_reversed", [*SWEEP, "optimizer.lr=interval(1e-3,1e-5)"], "optimizer.lr"),
    ("log_interval_zero", [*SWEEP, "optimizer.lr=tag(log,interval(0,1e-3))"], "optimizer.lr"),
    ("group_choice_unknown", [*SWEEP, "lora=choice(r8,r99)"], "lora"),
    ("choice_invalid_value", [*SWEEP, "lora.r=choice(0,8)"], "lora.r"),
    ("range_empty", [*SWEEP, "lora.r=range(8,8)"], "lora.r"),
    ("range_step_zero", [*SWEEP, "lora.r=range(8,16,0)"], "lora.r"),
    ("interval_text", [*SWEEP, "optimizer.lr=interval(a,b)"], "optimizer.lr"),
    ("sweep_lr_nan_fixed", [*SWEEP, LR, "optimizer.weight_decay=nan"], "optimizer.weight_decay"),
    ("n_workers_zero", [*SWEEP, LR, "hydra.sweeper.n_workers=0"], "hydra.sweeper.n_workers"),
    # keys as Hydra's Optuna sweeper plugin (hydra/sweeper=optuna) spells them: ours named
    ("hydra_optuna_n_jobs", [*SWEEP, LR, "hydra.sweeper.n_jobs=2"],
     "did you mean hydra.sweeper.n_workers (trials at once)? (ftsweep's sweeper for Hydra's Optuna sweeper's n_jobs)"),
    ("hydra_optuna_sampler_target", [*SWEEP, LR, "hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler"],
     "did you mean hydra.sweeper.sampler.name=tpe|random|grid|cmaes|gp|qmc?"),
    ("optuna_sampler_keyword", [*SWEEP, LR, "hydra.sweeper.sampler.consider_prior=false"],
     "a keyword argument of the Optuna sampler goes in +hydra.sweeper.sampler.options.consider_prior=<value>"),
    ("n_trials_zero", [*SWEEP, LR, "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials"),
    ("n_trials_text", [*SWEEP, LR, "hydra.sweeper.n_trials=many"], "hydra.sweeper.n_trials"),
    ("failure_rate", [*SWEEP, LR, "hydra.sweeper.max_failure_rate=2"], "hydra.sweeper.max_failure_rate"),
    ("retry_stale_negative", [*SWEEP, LR, "hydra.sweeper.retry_stale=-1"], "hydra.sweeper.retry_stale"),
    ("warm_not_bool", [*SWEEP, LR, "hydra.sweeper.warm_workers=sometimes"], "hydra.sweeper.warm_workers"),
    ("sampler_name", [*SWEEP, LR, "hydra.sweeper.sampler.name=nope"], "hydra.sweeper.sampler.name"),
    ("pruner_name", [*SWEEP, LR, "hydra.sweeper.pruner.name=nope"], "hydra.sweeper.pruner.name"),
    ("sweeper_direction", [*SWEEP, LR, "hydra.sweeper.direction=up"], "hydra.sweeper.direction"),
    ("sweeper_metric", [*SWEEP, LR, "hydra.sweeper.metric=acc"], "hydra.sweeper.metric"),
    ("grid_interval", [*SWEEP, LR, "hydra.sweeper.sampler.name=grid"], "optimizer.lr"),
    ("storage_unopenable", [*SWEEP, LR, "hydra.sweeper.storage=sqlite:////proc/no/such/study.db"], "storage"),
    ("nothing_to_search", [*SWEEP], "hydra.sweeper.params"),
    ("derived_bad_expression", ["train", "sweep=bad_derived", "model=tiny", "logger=none"],
     "hydra.sweeper.derived.lora.alpha"),
    ("derived_unknown_name", ["train", "sweep=unknown_name", "model=tiny", "logger=none"],
     "hydra.sweeper.derived.lora.alpha"),
    ("variables_not_a_sweep", ["train", "sweep=fixed_variable", "model=tiny", "logger=none"],
     "hydra.sweeper.variables.ratio"),
    ("baseline_required", ["train", "sweep=lr_after_baseline", "model=tiny", "logger=none"], "baseline"),
    # best.yaml's header after its sweep folder moved: +<old folder name>=best is no config group any more
    ("best_yaml_of_a_moved_sweep", [*RUN, "+moved_sweep=best"], "ftsweep report <sweep dir>"),
    ("baseline_not_a_run", ["train", "sweep=lr_after_baseline", "model=tiny", "logger=none", "baseline=./nope"],
     "baseline"),
    # ---- generation objectives (objective group), refused before any model loads
    ("objective_metric", [*RUN, "objective.metric=exact_matc"], "objective.metric"),
    ("objective_option", [*RUN, "objective=exact_matc"], "objective=exact_matc"),
    ("objective_extra_metric", [*RUN, "objective=exact_match", "objective.extra_metrics=[bleuu]"],
     "objective.extra_metrics"),
    ("objective_regex_no_compile", [*RUN, "objective=regex_gsm8k", "objective.pattern='#### ([0-9'"], "objective.pattern"),
    ("objective_regex_no_group", [*RUN, "objective=regex_gsm8k", "objective.pattern='answer: [0-9]+'"],
     "objective.pattern"),
    ("objective_regex_missing", [*RUN, "objective=exact_match", "objective.metric=regex"], "objective.pattern"),
    ("objective_function_import", [*RUN, "objective=exact_match", "objective.metric=function",
                                   "objective.function=no_such_pkg.metrics:score"], "objective.function"),
    ("objective_function_attr", [*RUN, "objective=exact_match", "objective.metric=function",
                                 "objective.function=os.path:no_such_fn"], "objective.function"),
    ("objective_function_signature", [*RUN, "objective=exact_match", "objective.metric=function",
                                      "objective.function=os.path:join"], "objective.function"),
    ("objective_text_data", [*RUN, "data=c4_pt", "objective=exact_match"], "objective.metric"),
    ("objective_train_on_prompt", [*RUN, "objective=exact_match", "data.train_on_prompt=true"], "objective.metric"),
    ("objective_no_validation", [*RUN, "objective=exact_match", "data.val_size=0"], "data.val_size"),
    ("objective_max_samples_zero", [*RUN, "objective=exact_match", "objective.max_samples=0"], "objective.max_samples"),
    ("objective_max_new_tokens_zero", [*RUN, "objective=exact_match", "objective.max_new_tokens=0"],
     "objective.max_new_tokens"),
    ("objective_sweep_metric_not_generated", [*SWEEP, LR, "hydra.sweeper.metric=exact_match"], "hydra.sweeper.metric"),
    ("objective_sweep_metrics_without_directions", [*SWEEP, LR, "objective=exact_match",
                                                    "hydra.sweeper.metric=[exact_match,eval_loss]"], "hydra.sweeper.direction"),
    # ---- command line usage, every subcommand
    ("unknown_command", ["fly"], "fly"),
    ("inspect_rows_negative", ["inspect", "--rows", "-1"], "--rows"),
    ("inspect_rows_text", ["inspect", "--rows", "many"], "--rows"),
    ("inspect_unknown_flag", ["inspect", "--colour"], "--colour"),
    ("inspect_split", ["inspect", "--split", "test"], "--split"),
    ("report_missing_target", ["report"], "target"),
    ("report_no_dir", ["report", "/nonexistent/sweep"], "/nonexistent/sweep"),
    ("report_unknown_flag", ["report", "x", "--bogus"], "--bogus"),
    ("generate_missing_run", ["generate"], "run_dir"),
    ("generate_not_a_run", ["generate", "/nonexistent/run"], "/nonexistent/run"),
    ("generate_bad_float", ["generate", "x", "--temperature", "hot"], "--temperature"),
    ("merge_missing_run", ["merge"], "run_dir"),
    ("merge_not_a_run", ["merge", "/nonexistent/run"], "/nonexistent/run"),
    ("merge_bad_dtype", ["merge", "x", "--dtype", "int4"], "--dtype"),
    ("export_missing_dir", ["export"], "sweep_dir"),
    ("publish_missing_args", ["publish"], "folder"),
    ("publish_missing_repo", ["publish", "x"], "repo"),
    ("init_missing_dir", ["init"], "dir"),
    ("train_config_name", ["train", "--config-name", "other"], "--config-name"),
    ("train_rerun_missing", ["train", "--experimental-rerun", "/nonexistent/config.pickle"], "--experimental-rerun"),
]

SWEEP_FILES = {
    "bad_derived": "derived:\n      lora.alpha: '{lora.r} * * 2'\n",
    "unknown_name": "derived:\n      lora.alpha: '{lora.rank} * 2'\n",
    "fixed_variable": "variables:\n      ratio: '2'\n",
}


def _sweep_file(name: str, body: str) -> str:
    return ("# @package _global_\ndefaults:\n  - override /hydra/sweeper: ftsweep_optuna\nhydra:\n  mode: MULTIRUN\n"
            "  sweeper:\n    report: false\n    params:\n      lora.r: choice(8, 16)\n    " + body)


def tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty working directory with only what the cases need: two data files and three sweep files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FTSWEEP_CONFIG_DIRS", raising=False)
    # A case that wrongly passes validation must fail fast, not train: no recipe, fake sweep trials.
    stub = types.ModuleType("ftsweep.train")
    stub.execute = lambda cfg, run_dir, *a, **k: {"status": "complete", "objective": 1.0}
    monkeypatch.setitem(sys.modules, "ftsweep.train", stub)
    monkeypatch.setenv("FTSWEEP_TRIAL_CMD", FAKE_CMD)
    (tmp_path / "a.json").write_text('[{"instruction": "hi", "input": "", "output": "hello"}]')
    (tmp_path / "sweep").mkdir()
    for name, body in SWEEP_FILES.items():
        (tmp_path / "sweep" / f"{name}.yaml").write_text(_sweep_file(name, body))
    return tmp_path


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(project, capsys, argv, names):
    before = tree(project)
    try:
        code = main(list(argv))
    except SystemExit as exc:  # a sweep's bad input, found by the sweeper inside Hydra
        code = exc.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("ftsweep: error: ") and names in lines[0], lines[0]
    assert "Traceback" not in out
    assert tree(project) == before
