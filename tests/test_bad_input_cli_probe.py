"""Bad input found by a Hydra / Optuna user's probe of the command line: exit 2, one line naming the flag or key,
nothing created or changed. A ``--config-dir`` that is not a folder was ignored by every command but ``train``
(which ran on the shipped config, or failed with exit 1); a ``hydra.sweep.subdir`` that names one folder for
every trial made parallel trials rename each other's folders (a traceback, or a best trial whose folder held
another trial's files)."""

from __future__ import annotations

import pytest
from test_bad_input_round2 import RUN, SWEEP, assert_one_line_exit_2, project  # noqa: F401 -- the fixture, shared

CASES = [
    ("config_dir_missing_train", ["train", "--config-dir", "nope", *RUN[1:]], ["--config-dir", "nope", "no such folder"]),
    ("config_dir_missing_train_short", ["train", "-cd", "nope", *RUN[1:]], ["--config-dir", "nope", "no such folder"]),
    ("config_dir_missing_cfg_job", ["train", "-cd", "nope", "--cfg", "job"], ["--config-dir", "nope"]),
    ("config_dir_missing_estimate", ["train", "--config-dir=nope", "--estimate-memory"], ["--config-dir", "nope"]),
    ("config_dir_is_a_file", ["train", "--config-dir", "afile", "--cfg", "job"], ["--config-dir", "afile", "not a folder"]),
    ("config_dir_missing_inspect", ["inspect", "--config-dir", "nope", "--rows", "1"], ["--config-dir", "nope"]),
    # inspect took only the long form: -cd was 'unrecognized arguments' (train and lr-find take both)
    ("config_dir_missing_inspect_short", ["inspect", "-cd", "nope", "--rows", "1"], ["--config-dir", "nope", "no such"]),
    ("config_dir_missing_lr_find", ["lr-find", "-cd", "nope", "--steps", "11", "--out", "lrf"], ["--config-dir", "nope"]),
    # a single run written into a sweep's folder: its adapter, metrics.json, .hydra/ beside the study, which then
    # could not be resumed ("holds a single run")
    ("run_into_a_sweep_folder", [*RUN, "hydra.run.dir=asweep"], ["hydra.run.dir", "asweep", "sweep folder"]),
    ("run_into_a_sweep_folder_overwrite", [*RUN, "hydra.run.dir=asweep", "overwrite=true"], ["hydra.run.dir", "sweep"]),
    ("run_into_a_reported_sweep_folder", [*RUN, "hydra.run.dir=areport"], ["hydra.run.dir", "areport", "sweep folder"]),
    ("sweep_subdir_constant", [*SWEEP, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=s", "hydra.sweep.subdir=same"],
     ["hydra.sweep.subdir", "'same'", "every trial", "${hydra.job.num}"]),
    ("sweep_subdir_outside", [*SWEEP, "hydra.sweep.dir=s", "hydra.sweep.subdir=../t_${hydra.job.num}"],
     ["hydra.sweep.subdir", "inside hydra.sweep.dir"]),
    ("sweep_subdir_absolute", [*SWEEP, "hydra.sweep.dir=s", "hydra.sweep.subdir=/tmp/t_${hydra.job.num}"],
     ["hydra.sweep.subdir", "inside hydra.sweep.dir"]),
]


@pytest.fixture
def sweeps(project):  # noqa: F811 -- the shared fixture, extended
    """``asweep/``: a sweep folder's study file; ``areport/``: a sweep's report only (its study elsewhere)."""
    import sqlite3

    (project / "asweep").mkdir()
    sqlite3.connect(project / "asweep" / "study.db").close()
    (project / "areport").mkdir()
    (project / "areport" / "summary.json").write_text('{"study_name": "s", "n_trials": 1}')
    return project


@pytest.mark.parametrize(("argv", "texts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(sweeps, capsys, argv, texts):
    assert_one_line_exit_2(sweeps, capsys, argv, texts)


def test_a_subdir_that_differs_by_job_number_or_by_overrides_is_allowed(tmp_path):
    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.sweep import check_trial_subdir

    corners = [["optimizer.lr=0.0001"], ["optimizer.lr=0.01"]]
    check_trial_subdir(lambda n, o: f"trial_{n}", tmp_path, corners)  # Hydra's ${hydra.job.num}
    check_trial_subdir(lambda n, o: ",".join(o), tmp_path, corners)  # ${hydra.job.override_dirname}
    check_trial_subdir(lambda n, o: f"a/b/{n}", tmp_path, corners)  # deeper, still inside
    with pytest.raises(SweepInputError, match="same folder for every trial"):
        check_trial_subdir(lambda n, o: "same", tmp_path, corners)
    with pytest.raises(SweepInputError, match="inside hydra.sweep.dir"):
        check_trial_subdir(lambda n, o: ".", tmp_path, corners)


HYDRA_FLAG_CASES = [
    # --info with a word that is no --info topic: the word was read as an override, exit 1 after Hydra's banner
    ("info_with_a_bad_word", ["train", "--info", "foo"], ["foo", "not an override"]),
    # --cfg job --package <no such key>: Hydra's 'package ... not found in config' without ftsweep's prefix, exit 1
    ("package_no_such_key", ["train", "--cfg", "job", "--package", "trainr"], ["--package", "trainr", "trainer"]),
    ("package_hydra_in_job", ["train", "--cfg", "job", "-p", "hydra.sweeper"], ["--package", "hydra.sweeper", "--cfg hydra"]),
    # a sweep inside a dict / list value: "tags: Unexpected type annotation: Set[str]" (a field nobody wrote)
    ("sweep_inside_params_dict", [*SWEEP, "hydra.sweeper.params={optimizer.lr: interval(1e-3,1e-1)}"],
     ["hydra.sweeper.params", "optimizer.lr=<sweep>"]),
    ("sweep_inside_a_list", ["train", "--cfg", "job", "lora.target_modules=[choice(q_proj,v_proj)]"],
     ["lora.target_modules", "inside a list or dict value", "lora=choice(<name>,<other>)"]),
    # the free-form dicts take new keys (README), but data.extra={field: train} said 'unknown key' (Hydra merges
    # the dict in struct mode; +data.extra.field=train and ++data.extra={...} work)
    ("free_form_dict_set_whole", ["train", "--cfg", "job", "data.extra={field: train}"],
     ["data.extra.field", "+data.extra.field=<value>", "++data.extra={field: <value>}"]),
    ("free_form_replacements", ["train", "--cfg", "job", "data.replacements={a: b}"], ["+data.replacements.a=<value>"]),
    # inspect --dump replaced any existing file (a run's metrics.json) with the rows
    ("inspect_dump_over_a_file", ["inspect", "--rows", "0", "--dump", "afile"], ["--dump afile", "exists"]),
    ("inspect_dump_into_a_folder", ["inspect", "--rows", "0", "--dump", "adir"], ["--dump adir", "is a folder"]),
    # a YAML file given to --experimental-rerun: an UnpicklingError traceback
    ("experimental_rerun_not_a_pickle", ["train", "--experimental-rerun", "afile"], ["--experimental-rerun", "afile",
                                                                                    "pickle"]),
]


@pytest.mark.parametrize(("argv", "texts"), [c[1:] for c in HYDRA_FLAG_CASES], ids=[c[0] for c in HYDRA_FLAG_CASES])
def test_hydra_flags_given_bad_values_are_one_line_exit_2(project, capsys, argv, texts):  # noqa: F811
    assert_one_line_exit_2(project, capsys, argv, texts)


def test_package_of_a_null_key_prints_null(project, capsys):  # noqa: F811
    """``--cfg job -p notes`` (a key whose value is null) said 'package not found', exit 1."""
    from ftsweep.cli import main

    assert main(["train", "--cfg", "job", "-p", "notes"]) == 0
    assert capsys.readouterr().out.strip() == "null"


LR_FIND_CASES = [
    # trained the whole test, then a numpy ValueError traceback (exit 1), leaving an empty outputs/lr_find/<time>/
    ("lr_find_skip_begin_negative", ["lr-find", "--steps", "11", "--skip-begin", "-1"], ["--skip-begin", "-1", ">= 0"]),
    ("lr_find_skip_end_negative", ["lr-find", "--steps", "11", "--skip-end", "-2"], ["--skip-end", "-2", ">= 0"]),
    # one line named the three rules, not the flag that broke one
    ("lr_find_beta_one", ["lr-find", "--beta", "1"], ["--beta: must be in [0, 1) (got 1)"]),
    ("lr_find_diverge_one", ["lr-find", "--diverge", "0.5"], ["--diverge: must be > 1 (got 0.5)"]),
]


@pytest.mark.parametrize(("argv", "texts"), [c[1:] for c in LR_FIND_CASES], ids=[c[0] for c in LR_FIND_CASES])
def test_lr_find_bad_skips_are_one_line_exit_2(project, capsys, argv, texts):  # noqa: F811
    assert_one_line_exit_2(project, capsys, argv, texts)


@pytest.mark.parametrize("space", ["params", "variables", "derived"])
def test_a_search_space_can_be_set_whole_without_a_sweep_file(project, capsys, space):  # noqa: F811
    """hydra.sweeper.params (and variables, derived) defaulted to null: setting it as a dict on the command line
    (++hydra.sweeper.params={...}) failed in OmegaConf ("'NoneType' object has no attribute 'get' full_key:
    hydra.sweeper.params reference_type=Optional[Dict[str, str]] object_type=NoneType"); a sweep file's params
    merged only because the file sets the dict first."""
    from ftsweep.cli import main

    code = main(["train", "-m", "--cfg", "hydra", "-p", f"hydra.sweeper.{space}",
                 f"++hydra.sweeper.{space}={{optimizer.lr: 'tag(log, interval(1e-3,1e-1))'}}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "optimizer.lr: tag(log, interval(1e-3,1e-1))" in out


def test_a_new_key_in_the_search_space_says_how_to_give_it(project, capsys):  # noqa: F811
    """Without ++ Hydra merges into the struct config: '<key>: unknown key' (or, before the dict existed, the
    OmegaConf error above); the line says the two ways that work."""
    assert_one_line_exit_2(project, capsys, ["train", "-m", "--cfg", "hydra",
                                             "hydra.sweeper.params={optimizer.lr: 'interval(1e-3,1e-1)'}"],
                           ["new key in hydra.sweeper.params", "optimizer.lr=<sweep> on the command line",
                            "++hydra.sweeper.params={optimizer.lr: '<value>'}"])
