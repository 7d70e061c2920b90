"""A trial's hand-over (sweeper.launch.TrialLaunch): the sampled parameters travel once, as overrides on the
trial's command line; the environment names them, and the trial reads their values back from its argv."""

from __future__ import annotations

import json
import sys

from ftsweep.sweeper.grammar import SearchSpace, merge_overrides
from ftsweep.sweeper.launch import TrialLaunch

SAMPLED = {"optimizer.lr": 0.00042321987654321, "lora": "r16", "lora.r": 8, "data.path": "my data/a b.json",
           "trainer.gradient_checkpointing": True, "ratio": 2.5}  # ratio: a variable (input of a derived key)


def _handover():
    """What the runner builds for one trial (runner._start / runner._env)."""
    space = SearchSpace(variables={"ratio"}, derived={"lora.alpha": "{lora.r} * {ratio}"})
    fixed = ["logger=none", "optimizer.lr=0.1"]  # a fixed value of a sampled key: the sampled one wins
    overrides = merge_overrides(fixed, space.fixed, space.overrides(SAMPLED))
    argv = TrialLaunch.argv([sys.executable, "-m", "ftsweep.sweeper.trial"], overrides, "/tmp/sweep dir", "trial_3")
    env = TrialLaunch(storage="sqlite:///x.db", study_name="s", trial_id=7, trial_number=3,
                      param_keys=tuple(SAMPLED)).env()
    return argv, env


def test_the_trial_reads_its_parameters_back_from_its_overrides_exactly():
    argv, env = _handover()
    ctx = TrialLaunch.from_env(env)
    assert ctx is not None and ctx.trial_id == 7 and ctx.trial_number == 3
    params = ctx.params(argv[3:])  # the trial's own argv (sys.argv[1:])
    expected = {k: v for k, v in SAMPLED.items() if k != "ratio"}  # a variable has no override of its own
    assert params == expected
    assert list(params) == list(expected)  # in the order they were sampled
    assert type(params["lora.r"]) is int and type(params["trainer.gradient_checkpointing"]) is bool
    assert params["optimizer.lr"] == 0.00042321987654321  # exact float, not the fixed 0.1


def test_the_values_travel_once_in_the_command_line_not_the_environment():
    argv, env = _handover()
    assert "optimizer.lr=0.00042321987654321" in argv
    assert json.loads(env["FTSWEEP_TRIAL_PARAM_KEYS"]) == list(SAMPLED)
    assert not any("0.00042321987654321" in v or "r16" in v for v in env.values())
    assert "FTSWEEP_TRIAL_PARAMS" not in env


def test_outside_a_sweep_there_is_no_trial_and_no_keys_mean_no_params():
    assert TrialLaunch.from_env({}) is None
    ctx = TrialLaunch.from_env({"FTSWEEP_TRIAL_ID": "1", "FTSWEEP_STORAGE": "sqlite://"})
    assert ctx is not None and ctx.param_keys == () and ctx.params(["optimizer.lr=0.1"]) == {}


def test_decoding_the_parameters_imports_no_optuna():
    import subprocess

    code = ("import sys; from ftsweep.sweeper.launch import TrialLaunch; "
            "ctx = TrialLaunch.from_env({'FTSWEEP_TRIAL_ID': '1', 'FTSWEEP_STORAGE': 'sqlite://', "
            "'FTSWEEP_TRIAL_PARAM_KEYS': '[\"optimizer.lr\"]'}); "
            "print(ctx.params(['optimizer.lr=0.001']), 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["{'optimizer.lr':", "0.001}", "False"]


def test_a_trial_gives_its_wandb_run_the_parameters_of_its_command_line(tmp_path, monkeypatch):
    """trial.main end to end (the recipe stubbed): the W&B run config holds the values of the overrides."""
    import types

    from ftsweep.sweeper import trial

    seen: list = []
    stub = types.ModuleType("ftsweep.train")

    def execute(cfg, run_dir, callbacks, info, parts):
        seen.append((cfg.optimizer.lr, info.name, info.group, info.config))
        return {"status": "complete", "objective": 1.0}

    stub.execute = execute
    monkeypatch.setitem(sys.modules, "ftsweep.train", stub)
    monkeypatch.setattr(trial, "trial_callbacks", lambda ctx: [])
    env = TrialLaunch(storage="sqlite://", study_name="st", trial_id=1, trial_number=2,
                      param_keys=("optimizer.lr", "lora")).env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = trial.main(["model=tiny", "logger=none", "lora=r16", "optimizer.lr=0.00042321987654321",
                       f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=trial_2"])
    assert code == 0
    assert seen == [(0.00042321987654321, "trial-2", "st", {
        "trial_number": 2, "trial_params": {"optimizer.lr": 0.00042321987654321, "lora": "r16"}, "study_name": "st"})]


def test_a_warm_workers_trials_share_one_opened_storage_and_both_reports_land(tmp_path, monkeypatch):
    """Opening an RDBStorage checks its schema (tens of ms a trial): a warm worker's later trials reuse the
    storage its first trial opened, and every trial's intermediate values still reach the study."""
    import optuna

    from ftsweep.config.sweeper import PrunerConf
    from ftsweep.sweeper import storage as storage_mod
    from ftsweep.sweeper import trial as trial_mod
    from ftsweep.sweeper.samplers import pruner_to_json

    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=storage_mod.open_storage(url))
    first, second = study.ask(), study.ask()
    opened = []
    monkeypatch.setattr(trial_mod, "_STORAGES", {})
    monkeypatch.setattr(storage_mod, "open_storage", lambda u: opened.append(u) or optuna.storages.RDBStorage(u))
    for t, value in ((first, 3.0), (second, 2.0)):  # one trial after the other, as in a warm worker
        ctx = TrialLaunch(storage=url, study_name="s", trial_id=t._trial_id, trial_number=t.number,
                          pruner=pruner_to_json(PrunerConf(name="none")))
        assert trial_mod.TrialReporter(ctx).report(value, 10) is False
    assert opened == [url]
    reread = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert [tr.intermediate_values for tr in reread] == [{10: 3.0}, {10: 2.0}]


def test_the_pruner_is_asked_only_where_it_could_prune_and_decides_as_before(tmp_path, monkeypatch):
    """Each ``should_prune`` reads the study's trials from storage: a trial does not ask a pruner that surely
    answers no (``pruner=none``; a median pruner before ``n_warmup_steps``), and the answers are Optuna's own."""
    import optuna

    from ftsweep.config.sweeper import PrunerConf
    from ftsweep.sweeper import storage as storage_mod
    from ftsweep.sweeper import trial as trial_mod
    from ftsweep.sweeper.samplers import build_pruner, pruner_to_json

    monkeypatch.setattr(trial_mod, "_STORAGES", {})
    asked = []
    real = optuna.trial.Trial.should_prune
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: asked.append(self.number) or real(self))
    url = f"sqlite:///{tmp_path}/study.db"
    for name, conf in (("median", PrunerConf(name="median", n_startup_trials=1, n_warmup_steps=20)),
                       ("none", PrunerConf(name="none"))):
        study = optuna.create_study(study_name=name, storage=storage_mod.open_storage(url), pruner=build_pruner(conf))
        done = study.ask()
        for step in (0, 10, 20, 30):
            done.report(1.0, step)
        study.tell(done, 1.0)
        worse = study.ask()
        reporter = trial_mod.TrialReporter(TrialLaunch(storage=url, study_name=name, trial_id=worse._trial_id,
                                                       trial_number=worse.number, pruner=pruner_to_json(conf)))
        asked.clear()
        answers = [reporter.report(5.0, step) for step in (0, 10, 20, 30)]
        if name == "median":  # Optuna's MedianPruner: no before step 20, then the worse trial goes
            assert answers == [False, False, True, True]
            assert asked == [worse.number, worse.number]  # at steps 20 and 30 only
        else:
            assert answers == [False, False, False, False]
            assert asked == []
        stored = optuna.load_study(study_name=name, storage=url).trials[worse.number].intermediate_values
        assert stored == {0: 5.0, 10: 5.0, 20: 5.0, 30: 5.0}  # every value still reported


def test_the_last_steps_evaluation_is_reported_but_never_prunes(tmp_path, monkeypatch):
    """A trial that ran every step is complete: its last evaluation (worse than every other trial's) is reported to
    the study, the pruner is not asked, and the trial is not marked pruned; the same value one step earlier prunes."""
    import optuna
    from transformers import TrainerControl, TrainerState

    from ftsweep.config.sweeper import PrunerConf
    from ftsweep.sweeper import storage as storage_mod
    from ftsweep.sweeper import trial as trial_mod
    from ftsweep.sweeper.samplers import build_pruner, pruner_to_json

    monkeypatch.setattr(trial_mod, "_STORAGES", {})
    url = f"sqlite:///{tmp_path}/study.db"
    conf = PrunerConf(name="median", n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(study_name="s", storage=storage_mod.open_storage(url), pruner=build_pruner(conf))
    done = study.ask()
    for step in (10, 20):
        done.report(1.0, step)
    study.tell(done, 1.0)
    outcomes = {}
    for last_step in (20, 30):  # max_steps 20: step 20 is the last; max_steps 30: it is not
        t = study.ask()
        callback = trial_mod._make_pruning_callback(trial_mod.TrialReporter(TrialLaunch(
            storage=url, study_name="s", trial_id=t._trial_id, trial_number=t.number, pruner=pruner_to_json(conf))),
            "eval_loss")
        state = TrainerState(global_step=20, max_steps=last_step)
        callback.on_evaluate(None, state, TrainerControl(), metrics={"eval_loss": 9.0})
        outcomes[last_step] = callback.pruned
        assert optuna.load_study(study_name="s", storage=url).trials[t.number].intermediate_values == {20: 9.0}
    assert outcomes == {20: False, 30: True}
