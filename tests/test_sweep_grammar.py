"""The sweep grammar -> Optuna distributions (fast, no trials)."""

from __future__ import annotations

import math

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ftsweep.config.sweeper import PrunerConf, SamplerConf
from ftsweep.sweeper.grammar import SweepInputError, evaluate, format_value, merge_overrides, parse_space
from ftsweep.sweeper.sweep import group_options, resolve_storage, split_arguments


def space(params, **kw):
    return parse_space(params, group_options=group_options, **kw)


def test_interval_and_log_interval():
    s = space({"optimizer.lr": "tag(log, interval(1e-5, 1e-3))", "lora.dropout": "interval(0, 0.2)"})
    assert s.distributions["optimizer.lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert s.distributions["lora.dropout"] == FloatDistribution(0.0, 0.2)


def test_int_interval_tag():
    s = space({"lora.r": "tag(int, log, interval(4, 64))"})
    assert s.distributions["lora.r"] == IntDistribution(4, 64, log=True)


def test_hydra_int_cast_of_an_interval_searches_integers():
    """``int(interval(a, b))``, the Hydra Optuna sweeper's spelling of an integer interval (its ends stay ints), is
    an IntDistribution there: searched as floats it gave trials 2.159 for an int search, or refused an int key."""
    s = space({"optimizer.max_grad_norm": "int(interval(1, 4))", "lora.r": "tag(log, int(interval(2, 64)))",
               "lora.dropout": "float(interval(0, 1))"})
    assert s.distributions["optimizer.max_grad_norm"] == IntDistribution(1, 4)
    assert s.distributions["lora.r"] == IntDistribution(2, 64, log=True)
    assert s.distributions["lora.dropout"] == FloatDistribution(0.0, 1.0)
    assert space({"lora.r": "int(interval(1.5, 8.7))"}).distributions["lora.r"] == IntDistribution(1, 8)


def test_range_end_is_exclusive_like_python():
    s = space({"lora.r": "range(8, 33, 8)", "trainer.max_steps": "range(1, 4)"})
    assert s.distributions["lora.r"] == IntDistribution(8, 32, step=8)
    assert s.distributions["trainer.max_steps"] == IntDistribution(1, 3)
    # 32 is excluded when it is the stop
    assert space({"lora.r": "range(8, 32, 8)"}).distributions["lora.r"] == IntDistribution(8, 24, step=8)


def test_float_range_and_shuffle():
    s = space({"lora.dropout": "range(0.0, 0.3, 0.1)"})
    assert s.distributions["lora.dropout"] == FloatDistribution(0.0, 0.2, step=0.1)
    s = space({"lora.r": "shuffle(range(8, 25, 8))"})
    assert sorted(s.distributions["lora.r"].choices) == [8, 16, 24]


def test_choice_and_simple_sweep():
    s = space({"lora.r": "choice(8, 16, 32)", "optimizer.name": "adamw_torch,adamw_8bit"})
    assert s.distributions["lora.r"] == CategoricalDistribution([8, 16, 32])
    assert s.distributions["optimizer.name"] == CategoricalDistribution(["adamw_torch", "adamw_8bit"])


def test_group_choice_uses_option_names():
    s = space({"lora": "choice(r8, r16)"})
    assert s.distributions["lora"] == CategoricalDistribution(["r8", "r16"])
    assert "lora" in s.groups
    assert s.overrides({"lora": "r8"}) == ["lora=r8"]


def test_group_choice_unknown_option_is_one_line_error():
    with pytest.raises(SweepInputError, match=r"no such option 'r99' in config group lora; available: .*r16") as e:
        space({"lora": "choice(r8, r99)"})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("spec", "message"), [
    ("interval(0.1, 0.01)", "empty interval"),
    ("interval(0.1, 0.1)", "empty interval"),
    ("tag(log, interval(0, 0.1))", "log interval needs bounds > 0"),
    ("tag(log, interval(-1, 0.1))", "log interval needs bounds > 0"),
    ("range(5, 5)", "empty range"),
    ("choice(", "cannot parse"),
    # a tag the sweep does not read would be ignored: a mistyped log searched linearly
    ("tag(lgo, interval(1e-5, 1e-1))", r"optimizer.lr: tag 'lgo' means nothing to interval\(...\) \(its tags: log, "
                                       r"int\); did you mean log\?"),
    ("tag(log, choice(1e-3, 1e-2))", r"tag 'log' means nothing to choice\(...\) \(its tags: shuffle\)"),
    ("tag(int, range(1, 5))", r"tag 'int' means nothing to range\(...\) \(its tags: log, shuffle\)$"),
])
def test_bad_specs(spec, message):
    with pytest.raises(SweepInputError, match=message) as e:
        space({"optimizer.lr": spec})
    assert "\n" not in str(e.value)


def test_a_list_choice_is_one_line_that_says_how_to_search_lists():
    with pytest.raises(SweepInputError) as e:
        space({"lora.target_modules": "choice([q_proj,v_proj], all-linear)"})
    assert str(e.value) == ("lora.target_modules: choice values must be numbers, strings, booleans or null (got "
                            "['q_proj', 'v_proj']); to search lists, write each as an option file of its group "
                            "(conf/lora/<name>.yaml) and search the group: lora=choice(<name>,<other>)")


def test_plain_value_is_fixed():
    s = space({"optimizer.lr": "interval(1e-5, 1e-3)", "trainer.max_steps": "20"})
    assert s.fixed == ["trainer.max_steps=20"]
    assert list(s.distributions) == ["optimizer.lr"]


def test_variables_and_derived():
    s = space({"lora.r": "choice(8, 16)", "trainer.per_device_train_batch_size": "choice(2, 4)"},
              variables={"alpha_ratio": "choice(1, 2)"},
              derived={"lora.alpha": "{lora.r} * {alpha_ratio}",
                       "trainer.gradient_accumulation_steps": "max(1, 32 // {trainer.per_device_train_batch_size})"})
    out = s.overrides({"lora.r": 16, "trainer.per_device_train_batch_size": 4, "alpha_ratio": 2})
    assert out == ["lora.r=16", "trainer.per_device_train_batch_size=4", "lora.alpha=32",
                   "trainer.gradient_accumulation_steps=8"]


def test_derived_reads_a_searched_key_that_is_fixed():
    # `sweep=lora_search lora.r=16`: the command line fixes lora.r, which lora.alpha's expression reads (the sweep
    # stopped with "unknown name(s) lora.r")
    s = space({"lora.r": "16", "optimizer.lr": "interval(1e-5, 1e-3)"}, variables={"alpha_ratio": "choice(1, 2)"},
              derived={"lora.alpha": "{lora.r} * {alpha_ratio}"})
    assert s.fixed == ["lora.r=16"] and s.constants == {"lora.r": 16}
    assert s.overrides({"optimizer.lr": 1e-4, "alpha_ratio": 2}) == ["optimizer.lr=0.0001", "lora.alpha=32"]


def test_derived_rejects_unknown_names_and_code():
    with pytest.raises(SweepInputError, match="unknown name"):
        space({"lora.r": "choice(8, 16)"}, derived={"lora.alpha": "{lora.rr} * 2"})
    with pytest.raises(SweepInputError, match="cannot evaluate"):
        evaluate("__import__('os').system('true')", {})


def test_format_value_round_trips_through_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for v in [0.1 + 0.2, 1e-5, 3, True, None, "r16", "has space", "1e-3", "a'b"]:
        assert parser.parse_override(f"k={format_value(v)}").value() == v


def test_merge_overrides_later_wins():
    assert merge_overrides(["a=1", "lora=r8", "b=2"], ["lora=r16", "+a=3"]) == ["b=2", "lora=r16", "+a=3"]


def test_split_arguments():
    fixed, params = split_arguments(["sweep=quickstart", "optimizer.lr=tag(log,interval(1e-5,1e-3))", "lora.r=8,16"])
    assert fixed == ["sweep=quickstart"]
    assert params == {"optimizer.lr": "tag(log,interval(1e-5,1e-3))", "lora.r": "8,16"}


def test_resolve_storage(tmp_path):
    assert resolve_storage(None, tmp_path) == f"sqlite:///{tmp_path}/study.db"
    assert resolve_storage("journal", tmp_path) == f"journal:{tmp_path}/study.journal"
    assert resolve_storage("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"


def test_grid_sampler_rejects_interval():
    from ftsweep.sweeper.samplers import build_sampler

    s = space({"optimizer.lr": "interval(1e-5, 1e-3)"})
    with pytest.raises(SweepInputError, match="grid sampler needs"):
        build_sampler(SamplerConf(name="grid"), s.distributions)


@pytest.mark.parametrize("name", ["tpe", "random", "grid", "cmaes", "gp", "qmc"])
def test_samplers_build(name):
    import optuna

    from ftsweep.sweeper.samplers import build_sampler

    s = space({"lora.r": "choice(8, 16)", "trainer.max_steps": "range(10, 40, 10)"})
    sampler = build_sampler(SamplerConf(name=name, seed=1), s.distributions)
    study = optuna.create_study(sampler=sampler)
    for _ in range(3):  # each sampler proposes values inside the space
        trial = study.ask(s.distributions)
        assert trial.params["lora.r"] in (8, 16) and trial.params["trainer.max_steps"] in (10, 20, 30)
        study.tell(trial, float(trial.params["lora.r"]))


@pytest.mark.parametrize("name", ["tpe", "random", "gp"])
def test_neighbouring_seeds_give_independent_proposals_and_a_seed_repeats(name):
    """Per-trial seeds mix (seed, trial number): seed 1 must not replay seed 0's proposals one trial later
    (with seed + n it did: seed 1's trial n drew seed 0's trial n + 1)."""
    import optuna

    from ftsweep.sweeper.samplers import build_sampler

    s = space({"optimizer.lr": "tag(log, interval(1e-5, 1e-1))"})

    def proposals(seed: int) -> list[float]:
        study = optuna.create_study(sampler=build_sampler(SamplerConf(name=name, seed=seed, n_startup_trials=4),
                                                          s.distributions))
        out = []
        for _ in range(6):
            trial = study.ask(s.distributions)
            out.append(trial.params["optimizer.lr"])
            study.tell(trial, abs(math.log10(trial.params["optimizer.lr"]) + 2))
        return out

    a, b = proposals(0), proposals(1)
    assert not set(a) & set(b)
    assert proposals(0) == a


@pytest.mark.parametrize("name", ["none", "median", "percentile", "successive_halving", "hyperband"])
def test_pruners_build(name):
    from ftsweep.sweeper.samplers import build_pruner, check_pruner, pruner_from_json, pruner_to_json

    conf = PrunerConf(name=name, n_warmup_steps=4)
    check_pruner(conf)
    assert pruner_from_json(pruner_to_json(conf)) == conf  # what a trial process rebuilds
    assert build_pruner(conf) is not None


@pytest.mark.parametrize("name", ["successive_halving", "hyperband"])
def test_a_reduction_factor_below_two_is_one_line_before_any_trial(name):
    """Optuna's hyperband accepts 1, and then every trial failed dividing by log(1)."""
    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.samplers import check_pruner

    with pytest.raises(SweepInputError) as err:
        check_pruner(PrunerConf(name=name, reduction_factor=1))
    assert str(err.value) == ("hydra.sweeper.pruner.reduction_factor: must be >= 2 (each rung keeps 1 / factor of the "
                              "trials; got 1)")


@pytest.mark.parametrize(("settings", "message"), [
    ({"min_resource": 0}, "hydra.sweeper.pruner.min_resource: must be >= 1 step or auto (got 0)"),
    ({"max_resource": 0}, "hydra.sweeper.pruner.max_resource: must be >= 1 step or auto (got 0)"),
    ({"min_resource": 10, "max_resource": 5}, "hydra.sweeper.pruner.min_resource: 10 is above max_resource (5)"),
    ({"bootstrap_count": -1}, "hydra.sweeper.pruner.bootstrap_count: must be >= 0 (got -1)"),
])
def test_hyperband_settings_optuna_accepts_but_cannot_run_are_one_line(settings, message):
    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.samplers import check_pruner

    with pytest.raises(SweepInputError) as err:
        check_pruner(PrunerConf(name="hyperband", **settings))
    assert str(err.value) == message
    check_pruner(PrunerConf(name="hyperband", min_resource=5, max_resource=60))  # a sound setting passes


@pytest.mark.parametrize(("settings", "message"), [
    ({"seed": -1}, "hydra.sweeper.sampler.seed: must be in [0, 2**32 - 1] (got -1)"),
    ({"options": {"frobnicate": 1}}, ("hydra.sweeper.sampler.options.frobnicate: not an option of the tpe sampler "
                                      "(Optuna's TPESampler)")),
    ({"name": "random", "options": {"n_startup_trials": 3}}, ("hydra.sweeper.sampler.options.n_startup_trials: not an "
                                                              "option of the random sampler (Optuna's RandomSampler)")),
])
def test_sampler_settings_optuna_refuses_late_are_one_line_when_the_sampler_is_built(settings, message):
    """A bad option or seed failed when the first trial was sampled, as a traceback; now when the sweep starts."""
    from optuna.distributions import FloatDistribution

    from ftsweep.config.sweeper import SamplerConf
    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.samplers import build_sampler

    with pytest.raises(SweepInputError) as err:
        build_sampler(SamplerConf(**{"name": "tpe", **settings}), {"optimizer.lr": FloatDistribution(1e-5, 1e-2)})
    assert str(err.value) == message
