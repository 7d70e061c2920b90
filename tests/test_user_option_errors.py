"""A user's own option, experiment and sweep files (an ``ftsweep init`` project): a mistake written in one of
them is one line that names the key, the file and its line, exit 2, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sweep_helpers import run

from ftsweep.config.errors import UsageError
from ftsweep.init import init_project

MY_LORA = """\
# my lora: attention and MLP, more dropout
r: 8
alpha: 32
dropout: 0.1
target_modules: [q_proj, v_proj, gate_proj, up_proj, down_proj]
"""

MY_SEARCH = """\
# @package _global_
# Run: ftsweep train -m sweep=my_search
defaults:
  - override /data: my_data
hydra:
  mode: MULTIRUN
  sweep:
    dir: outputs/sweeps/my_search
  sweeper:
    study_name: my_search
    n_trials: 2
    params:
      optimizer.lr: tag(log, interval(1e-4, 1e-2))
      lora: choice(r8, my_lora)
"""


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    init_project(tmp_path)
    (tmp_path / "conf" / "lora").mkdir()
    (tmp_path / "conf" / "lora" / "my_lora.yaml").write_text(MY_LORA)
    (tmp_path / "sweep" / "my_search.yaml").write_text(MY_SEARCH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FTSWEEP_CONFIG_DIRS", raising=False)
    return tmp_path


def _edit(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new))


@pytest.mark.parametrize("old, new, key, line", [
    ("dropout: 0.1", "dropuot: 0.1", "lora.dropuot: unknown key", 4),  # a typo: "did you mean lora.dropout?"
    ("r: 8", "r: eight", "lora.r: Value 'eight'", 2),  # a string for a number
    ("r: 8", "r: 0", "lora.r: must be >= 1", 2),  # a value the checks after composition refuse
])
def test_a_bad_key_in_a_users_option_file_names_the_file_and_line(project, old, new, key, line):
    from ftsweep.config.compose import compose

    _edit(project / "conf" / "lora" / "my_lora.yaml", old, new)
    with pytest.raises(UsageError) as err:
        compose(["lora=my_lora"])
    assert str(err.value).startswith(key) and str(err.value).endswith(f"(conf/lora/my_lora.yaml line {line})")


def test_a_bad_key_in_an_experiment_file_names_it_but_not_when_the_command_line_sets_it(project):
    from ftsweep.config.compose import compose

    _edit(project / "conf" / "experiment" / "my_baseline.yaml", "lr: 1.0e-3", "lr: fast")
    with pytest.raises(UsageError, match=r"optimizer\.lr: .*\(conf/experiment/my_baseline\.yaml line 8\)$"):
        compose(["+experiment=my_baseline"])
    with pytest.raises(UsageError) as err:  # the command line's value is the one refused: no file named
        compose(["+experiment=my_baseline", "optimizer.lr=fast"])
    assert ".yaml" not in str(err.value)


def test_a_shipped_option_is_never_named(project):
    from ftsweep.config.compose import compose

    with pytest.raises(UsageError) as err:
        compose(["lora.r=0"])
    assert str(err.value) == "lora.r: must be >= 1 (got 0)"


@pytest.mark.parametrize("file, old, new, overrides, message", [
    # an experiment file without '# @package _global_': Hydra said "Could not override 'data@experiment.data'"
    ("experiment/my_baseline", "# @package _global_\n", "", ["+experiment=my_baseline"],
     "conf/experiment/my_baseline.yaml line 4: override /data: only a global file can override"),
    # a misspelt group: it said "lorra: unknown key (to add a new key use +lorra=...)"
    ("experiment/my_baseline", "override /lora: r16", "override /lorra: r16", ["+experiment=my_baseline"],
     "conf/experiment/my_baseline.yaml line 6: override /lorra: no such config group"),
    # an unknown option in a file's defaults list: Hydra reports it as the primary config's
    ("experiment/my_baseline", "override /lora: r16", "override /lora: my_lorra", ["+experiment=my_baseline"],
     ("lora=my_lorra: no such option; available: my_lora, none, r16, r16_all_linear, r8; did you mean "
     "lora=my_lora? (conf/experiment/my_baseline.yaml line 6)")),
    # another group's schema in an option's defaults list: it printed Hydra's config search path
    ("lora/my_lora", "r: 8\n", "defaults: [optimizer_schema, _self_]\nr: 8\n", ["lora=my_lora"],
     ("conf/lora/my_lora.yaml line 2: its defaults list names 'optimizer_schema', which is no config here "
     "(lora/optimizer_schema not found); the schema of group lora is lora_schema")),
])
def test_a_defaults_list_mistake_in_a_users_file_names_the_file_and_line(project, file, old, new, overrides,
                                                                         message):
    from ftsweep.config.compose import compose

    _edit(project / "conf" / f"{file}.yaml", old, new)
    with pytest.raises(UsageError) as err:
        compose(overrides)
    assert str(err.value).startswith(message), str(err.value)


def _sweep(project: Path, *args: str):
    return run([sys.executable, "-m", "ftsweep", "train", "-m", "sweep=my_search", "logger=none", *args], project,
               timeout=120)


@pytest.mark.parametrize("old, new, start, line", [
    ("interval(1e-4, 1e-2)", "interval(1e-2, 1e-4)", "optimizer.lr: empty interval", 13),  # low > high
    ("tag(log, interval(1e-4, 1e-2))", "tag(log, interval(0, 1e-2))", "optimizer.lr: a log interval", 13),
    ("choice(r8, my_lora)", "choice(r8, my_lorra)", "lora: no such option 'my_lorra'", 14),  # an unknown option
    ("optimizer.lr:", "optimizer.lrr:", "a trial would fail: optimizer.lrr: unknown key", 13),
    ("n_trials: 2", "n_trials: 0", "hydra.sweeper.n_trials: must be >= 1", 11),
])
def test_a_bad_search_space_in_a_users_sweep_file_is_one_line_naming_the_file_and_line(project, old, new, start,
                                                                                        line):
    _edit(project / "sweep" / "my_search.yaml", old, new)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    out = _sweep(project)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr  # one line: no data.format notice before it
    assert out.stderr.startswith(f"ftsweep: error: {start}")
    assert out.stderr.rstrip().endswith(f"(sweep/my_search.yaml line {line})"), out.stderr
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # nothing written


def test_a_search_space_given_on_the_command_line_names_no_file(project):
    out = _sweep(project, "optimizer.lr=tag(log, interval(0, 1e-2))")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "optimizer.lr: a log interval" in out.stderr and ".yaml" not in out.stderr


def test_a_missing_data_file_named_in_a_users_data_option_names_that_file_and_line(project):
    _edit(project / "conf" / "data" / "my_data.yaml", "path: data/my_data.jsonl", "path: data/nothere.jsonl")
    out = run([sys.executable, "-m", "ftsweep", "train", "data=my_data", "logger=none"], project, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("ftsweep: error: data.path: no such file 'data/nothere.jsonl'")
    assert out.stderr.rstrip().endswith("(conf/data/my_data.yaml line 4)")
    assert not (project / "outputs").exists()


@pytest.mark.parametrize("group, text, hint", [
    ("trainer", "defaults: [trainer_schema, _self_]\nmicro_batch_size: 4\n", "trainer.per_device_train_batch_size"),
    ("data", "defaults: [data_schema, _self_]\nsequence_len: 512\n", "data.cutoff_len"),
    ("data", "defaults: [data_schema, _self_]\nsample_packing: true\n", "data.packing"),
    ("data", "defaults: [data_schema, _self_]\nval_set_size: 0.05\n", "data.val_size"),
    ("scheduler", "defaults: [scheduler_schema, _self_]\nlr_scheduler: cosine\n", "scheduler.name"),
])
def test_an_axolotl_key_in_a_users_option_file_points_to_ftsweeps_name(project, group, text, hint):
    """Axolotl's names (micro_batch_size, sequence_len, ...) as LLaMA-Factory's and transformers' already are."""
    from ftsweep.config.compose import compose

    (project / "conf" / group).mkdir(exist_ok=True)
    (project / "conf" / group / "mine.yaml").write_text(text)
    with pytest.raises(UsageError) as err:
        compose([f"{group}=mine"])
    assert f"did you mean {hint}? (ftsweep's name for " in str(err.value), str(err.value)
    assert str(err.value).endswith(f"(conf/{group}/mine.yaml line 2)")


def test_an_option_file_that_nests_its_keys_under_the_group_name_says_so(project):
    """``lora: {r: 8}`` inside conf/lora/my_lora.yaml (as a whole-config file would write it) is lora.lora, which
    suggested lora.use_rslora."""
    from ftsweep.config.compose import compose

    (project / "conf" / "lora" / "my_lora.yaml").write_text("lora:\n  r: 8\n  alpha: 16\n")
    with pytest.raises(UsageError) as err:
        compose(["lora=my_lora"])
    assert "holds its keys at the top, without a 'lora:' level above them" in str(err.value)
    assert "use_rslora?" not in str(err.value) and str(err.value).endswith("(conf/lora/my_lora.yaml line 1)")


def test_a_single_value_where_a_list_belongs_says_so_in_plain_words(project):
    from ftsweep.config.compose import compose

    (project / "conf" / "optimizer").mkdir()
    (project / "conf" / "optimizer" / "my_opt.yaml").write_text(
        "defaults: [optimizer_schema, _self_]\nname: adamw_torch\nbetas: 0.9\n")
    with pytest.raises(UsageError) as err:
        compose(["optimizer=my_opt"])
    assert str(err.value) == "optimizer.betas: must be a list, e.g. [a, b] (got 0.9) (conf/optimizer/my_opt.yaml line 3)"
    with pytest.raises(UsageError) as err:  # the same on the command line (OmegaConf said "float is not a ListConfig")
        compose(["optimizer.betas=0.9"])
    assert str(err.value) == "optimizer.betas: must be a list, e.g. [a, b] (got 0.9)"


def test_a_folder_of_a_group_ftsweep_does_not_have_is_named_not_sent_round_in_circles(project):
    """conf/peft/x.yaml: ``peft=x`` said "use +peft=...", and ``+peft=x`` then said "peft: unknown key"."""
    from ftsweep.config.compose import compose

    (project / "conf" / "peft").mkdir()
    (project / "conf" / "peft" / "x.yaml").write_text("r: 4\n")
    for override in ("peft=x", "+peft=x"):
        with pytest.raises(UsageError) as err:
            compose([override])
        assert "conf/peft/ is not a config group of ftsweep's (groups: data, experiment, logger, lora" in str(err.value)
        assert "+peft" not in str(err.value)
    with pytest.raises(UsageError) as err:  # a shipped group chosen only with '+'
        compose(["experiment=my_baseline"])
    assert str(err.value).startswith("experiment: a group no option of which is chosen by default: add one with "
                                     "+experiment=<option> (options: my_baseline, ")


def test_an_option_file_marked_global_says_to_remove_the_marker(project):
    from ftsweep.config.compose import compose

    (project / "conf" / "lora" / "my_lora.yaml").write_text("# @package _global_\n" + MY_LORA)
    with pytest.raises(UsageError) as err:
        compose(["lora=my_lora"])
    assert str(err.value).startswith("r: unknown key")
    assert str(err.value).endswith("(conf/lora/my_lora.yaml line 3; its '# @package _global_' line puts its keys at "
                                   "the top level, not under lora: remove it)")


def test_a_sweeper_setting_given_on_the_command_line_names_no_sweep_file(project):
    """Hydra hands the sweeper only the task's overrides: hydra.sweeper.n_trials=0 on the command line was blamed on
    the sweep file's n_trials line."""
    out = _sweep(project, "hydra.sweeper.n_trials=0")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.strip() == "ftsweep: error: hydra.sweeper.n_trials: must be >= 1 (got 0)"


def test_a_users_sweep_file_without_multirun_mode_is_refused_not_trained_once(project):
    """Without 'hydra: mode: MULTIRUN' (which shipped and init's sweep files set) ``sweep=my_search`` without -m
    trained once with the defaults, none of the searched values, and said nothing."""
    _edit(project / "sweep" / "my_search.yaml", "  mode: MULTIRUN\n", "")
    out = run([sys.executable, "-m", "ftsweep", "train", "sweep=my_search", "logger=none"], project, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.strip() == ("ftsweep: error: sweep=my_search: searches optimizer.lr, lora but this would train "
                                  "once without them (its file sets no hydra.mode): add -m, or 'mode: MULTIRUN' under "
                                  "'hydra:' in sweep/my_search.yaml")
    assert not (project / "outputs").exists()
    # a trial's own command (every searched key given) trains that one config: nothing is left unsearched
    from ftsweep.cli import check_sweep_mode
    from ftsweep.config.compose import compose

    cfg = compose(["sweep=my_search", "optimizer.lr=1e-3", "lora=r8"], hydra=True, check=False)
    check_sweep_mode(cfg, (), ["sweep=my_search", "optimizer.lr=1e-3", "lora=r8"])
    with pytest.raises(UsageError, match=r"sweep=my_search: searches lora but"):
        check_sweep_mode(cfg, (), ["sweep=my_search", "optimizer.lr=1e-3"])
