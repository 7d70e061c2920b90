"""The user's own project and Hydra's conventions: ftsweep init, a user's conf/ and sweep/ next to the shipped
config, hydra.sweep.dir / hydra.sweep.subdir, sweep overlays that always sweep, Hydra's own flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sweep_helpers import FAKE_CMD, load, run

from ftsweep.config.errors import UsageError
from ftsweep.init import files, init_project

FTSWEEP = [sys.executable, "-m", "ftsweep"]


def ftsweep(*args: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return run([*FTSWEEP, *args], cwd, **env)


# ------------------------------------------------------------------------------------ ftsweep init
def test_init_writes_a_project_and_never_overwrites(tmp_path):
    written = init_project(tmp_path / "proj")
    assert sorted(p.relative_to(tmp_path / "proj").as_posix() for p in written) == sorted(files())
    rows = (tmp_path / "proj" / "data" / "my_data.jsonl").read_text().splitlines()
    assert len(rows) >= 24
    (tmp_path / "proj" / "README.md").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        init_project(tmp_path / "proj")
    assert (tmp_path / "proj" / "README.md").read_text() == "mine"


def test_init_cli_refuses_a_used_folder_in_one_line(tmp_path):
    assert ftsweep("init", "p", cwd=tmp_path).returncode == 0
    again = ftsweep("init", "p", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr


def test_a_users_conf_extends_groups_and_replaces_shipped_options(tmp_path, monkeypatch, cache_dir):
    from ftsweep.config.compose import compose, group_options

    init_project(tmp_path)
    (tmp_path / "conf" / "lora").mkdir()
    (tmp_path / "conf" / "lora" / "r8.yaml").write_text("defaults: [lora_schema, _self_]\nr: 4\nalpha: 8\n")
    monkeypatch.chdir(tmp_path)
    cfg = compose(["data=my_data", "lora=r8", f"cache_dir={cache_dir}"])
    assert cfg.data.path == "data/my_data.jsonl" and cfg.data.val_size == 0.2  # the user's new option
    assert cfg.lora.r == 4 and cfg.lora.alpha == 8  # the user's r8 replaces the shipped r8
    assert "my_data" in group_options("data") and "alpaca_demo" in group_options("data")
    assert "my_sweep" in group_options("sweep") and "quickstart" in group_options("sweep")
    assert "my_baseline" in group_options("experiment")
    cfg = compose(["+experiment=my_baseline", f"cache_dir={cache_dir}"])
    assert cfg.optimizer.lr == 1e-3 and cfg.data.path == "data/my_data.jsonl"
    # a user option is checked against the same schema
    (tmp_path / "conf" / "lora" / "bad.yaml").write_text("defaults: [lora_schema, _self_]\nrank: 4\n")
    with pytest.raises(UsageError, match="rank"):
        compose(["lora=bad"])


def test_sweeps_of_another_folder_do_not_linger_in_process(tmp_path, monkeypatch):
    """One process composing from two working directories: each sees its own sweep files only, and a
    user file that replaced a shipped sweep gives the shipped one back when it is no longer on the path."""
    from ftsweep.config.compose import compose, group_options

    monkeypatch.delenv("FTSWEEP_CONFIG_DIRS", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sweep").mkdir(parents=True)  # a project's sweeps live in ./sweep
    own = "# @package _global_\nhydra:\n  sweeper:\n    n_trials: 3\n"
    (a / "sweep" / "only_in_a.yaml").write_text(own)
    (a / "sweep" / "quickstart.yaml").write_text(own)  # replaces the shipped quickstart
    monkeypatch.chdir(a)
    assert "only_in_a" in group_options("sweep")
    assert compose(["sweep=quickstart"], check=False, hydra=True).hydra.sweeper.n_trials == 3
    monkeypatch.chdir(b)
    assert "only_in_a" not in group_options("sweep") and "quickstart" in group_options("sweep")
    assert compose(["sweep=quickstart"], check=False, hydra=True).hydra.sweeper.n_trials != 3


def test_a_sweep_specialised_for_an_objective_loads_on_top_and_the_command_line_wins(tmp_path, monkeypatch):
    """sweep/by_objective/<sweep>_<objective>.yaml applies only when both are chosen (shipped and the user's)."""
    from ftsweep.config.compose import compose, group_options

    monkeypatch.delenv("FTSWEEP_CONFIG_DIRS", raising=False)
    monkeypatch.chdir(tmp_path)
    plain = compose(["sweep=quickstart"], hydra=True)
    assert plain.trainer.max_steps == 60 and plain.hydra.sweeper.study_name == "quickstart"
    em = compose(["sweep=quickstart", "objective=exact_match"], hydra=True)
    assert em.trainer.max_steps == 400 and em.objective.max_samples == 32
    assert em.hydra.sweeper.pruner.n_warmup_steps == 200 and em.hydra.sweeper.study_name == "quickstart_em"
    assert compose(["sweep=quickstart", "objective=rouge_l"]).trainer.max_steps == 60  # none shipped for rouge_l
    assert compose(["sweep=quickstart", "objective=exact_match", "trainer.max_steps=80"]).trainer.max_steps == 80
    assert compose(["objective=exact_match"]).trainer.max_steps == 40  # no sweep: nothing specialised
    # sweep=quickstart_em is the same sweep
    em2 = compose(["sweep=quickstart_em"], hydra=True)
    for key in ("trainer", "objective", "hydra.sweeper", "hydra.sweep.dir"):
        assert OmegaConf.select(em2, key) == OmegaConf.select(em, key), key
    assert "by_objective" not in " ".join(group_options("sweep"))  # not a sweep of its own
    # the user's sweep folder: a sweep and its exact-match settings
    (tmp_path / "sweep" / "by_objective").mkdir(parents=True)
    (tmp_path / "sweep" / "mine.yaml").write_text("# @package _global_\ntrainer:\n  max_steps: 7\n")
    (tmp_path / "sweep" / "by_objective" / "mine_exact_match.yaml").write_text(
        "# @package _global_\ntrainer:\n  max_steps: 70\n")
    assert compose(["sweep=mine"]).trainer.max_steps == 7
    assert compose(["sweep=mine", "objective=exact_match"]).trainer.max_steps == 70


def test_flags_go_before_the_overrides_with_their_values():
    from ftsweep.cli import flags_first

    argv = ["a=1", "-m", "b=2", "--config-dir", "conf", "c=3", "--cfg=job", "+d=-1", "~e"]
    assert flags_first(argv) == ["-m", "--config-dir", "conf", "--cfg=job", "a=1", "b=2", "c=3", "+d=-1", "~e"]
    assert flags_first(["--info", "a=1", "-i", "plugins", "b=2"]) == ["-i", "plugins", "a=1", "b=2", "--info"]


def test_config_dir_flag_adds_a_root_from_anywhere(tmp_path):
    init_project(tmp_path / "proj")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = ftsweep("train", "--config-dir", str(tmp_path / "proj" / "conf"), "data=my_data", "--cfg", "job",
                  cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert "path: data/my_data.jsonl" in out.stdout


# ------------------------------------------------------------------------------ Hydra conventions
def test_hydra_sweep_dir_and_subdir_place_everything(tmp_path):
    sd = tmp_path / "somewhere" / "study"
    out = ftsweep("train", "-m", "optimizer.lr=tag(log, interval(1e-4, 1e-2))", "logger=none",
                  f"hydra.sweep.dir={sd}", "hydra.sweep.subdir=job${hydra.job.num}", "hydra.sweeper.study_name=t",
                  "hydra.sweeper.n_trials=2", "hydra.sweeper.progress=plain", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in sd.iterdir()} >= {"study.db", "summary.json", "report.md", "best.yaml", "job0", "job1"}
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    study = load(sd)
    assert {t.user_attrs["trial_dir"] for t in study.trials} == {str(sd / f"job{n}") for n in range(2)}
    for n in range(2):  # the trial process got its job dir as Hydra's sweep.dir / sweep.subdir
        assert (sd / f"job{n}" / "metrics.json").is_file()


def test_subdir_from_the_job_overrides_is_resolved_per_trial(tmp_path):
    """A subdir that depends on more than the job number (here Hydra's override_dirname) is resolved by
    composing each job's config, as Hydra's launchers do."""
    sd = tmp_path / "study"
    out = ftsweep("train", "-m", "lora=choice(r8, r16)", "hydra.sweeper.sampler.name=grid", "logger=none",
                  f"hydra.sweep.dir={sd}", "hydra.sweep.subdir=${hydra.job.override_dirname}-${hydra.job.num}",
                  "hydra.sweeper.study_name=t", "hydra.sweeper.n_trials=2", "hydra.sweeper.progress=plain", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    dirs = {t.user_attrs["trial_dir"] for t in load(sd).trials}
    assert {Path(d).name.split("-")[0].rsplit(",", 1)[-1] for d in dirs} == {"lora=r8", "lora=r16"}, dirs
    assert {Path(d).name.rsplit("-", 1)[1] for d in dirs} == {"0", "1"}


def test_subdir_of_the_job_number_alone_needs_no_compose():
    from omegaconf import OmegaConf

    from hydra_plugins.ftsweep_sweeper.ftsweep_sweeper import _job_number_only

    cfg = OmegaConf.create({"hydra": {"sweep": {"subdir": "trial_${hydra.job.num}"}}})
    assert _job_number_only(cfg, ["optimizer.lr=0.1"], 7) == "trial_7"
    assert _job_number_only(cfg, ["hydra.sweep.subdir=x"], 7) is None
    cfg = OmegaConf.create({"hydra": {"sweep": {"subdir": "${hydra.job.override_dirname}"}}})
    assert _job_number_only(cfg, [], 7) is None


def test_a_sweep_overlay_sweeps_without_dash_m(tmp_path):
    init_project(tmp_path)
    out = ftsweep("train", "sweep=my_sweep", "hydra.sweeper.n_trials=2", "logger=none", "hydra.sweeper.progress=plain",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    sd = tmp_path / "outputs" / "sweeps" / "my_sweep"  # the overlay's hydra.sweep.dir
    assert len(load(sd, "my_sweep").trials) == 2
    assert not (tmp_path / "outputs" / "runs").exists()  # no single run happened


def test_deprecated_sweeper_sweep_dir_still_works_and_says_so(tmp_path):
    out = ftsweep("train", "-m", "optimizer.lr=1e-3,2e-3", "logger=none", f"hydra.sweeper.sweep_dir={tmp_path / 'old'}",
                  "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.study_name=t", "hydra.sweeper.progress=plain", "hydra.sweeper.report=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "hydra.sweeper.sweep_dir is deprecated; use hydra.sweep.dir" in out.stderr
    assert len(load(tmp_path / "old").trials) == 2


@pytest.mark.parametrize("flags, expect_out", [
    (["--cfg", "hydra"], "sweep:"),
    (["--cfg", "all"], "hydra:"),
    (["--info"], "Config search path"),
    (["--info", "searchpath"], "ftsweep-user"),
    (["--info", "defaults"], "Defaults List"),
    (["--hydra-help"], "Hydra"),
    (["--version"], "Hydra"),
    (["-m", "--cfg", "job"], "optimizer:"),
    (["--resolve", "--cfg", "job"], "cache_dir: /"),
    (["-p", "lora", "--cfg", "job"], "# @package lora"),
    (["sweep=quickstart", "--cfg", "job"], "proxy_tasks.jsonl"),
    # flags after and between overrides, as git takes them (Hydra's own parser stops at the first flag)
    (["lora.r=4", "-m", "--cfg", "job", "trainer.max_steps=3"], "max_steps: 3"),
    (["lora.r=4", "--cfg", "job", "optimizer.lr=0.5"], "lr: 0.5"),
    (["lora.r=4", "--info"], "Config search path"),  # --info's value is optional: lora.r=4 is not it
    (["lora.r=4", "--info", "defaults", "trainer.max_steps=3"], "Defaults List"),
])
def test_hydra_flags_work(tmp_path, flags, expect_out):
    (tmp_path / "conf").mkdir()  # a user root, so --info searchpath lists it
    out = ftsweep("train", *flags, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert expect_out in out.stdout + out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("flags, key", [
    (["--cfg", "bogus"], "--cfg"),
    (["--config-name", "other"], "--config-name"),
    (["-cp", "/tmp"], "--config-path"),
    (["--experimental-rerun", "nope.pickle"], "--experimental-rerun"),
    (["sweep=nonexistent"], "sweep=nonexistent"),
    (["optimizer.lr=1e-3,2e-3"], "optimizer.lr"),  # a sweep without -m
])
def test_bad_hydra_flags_are_one_line(tmp_path, flags, key):
    out = ftsweep("train", *flags, cwd=tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("ftsweep") or line.startswith("usage")]
    assert "Traceback" not in out.stderr and key in out.stderr
    assert lines, out.stderr
    assert not (tmp_path / "outputs").exists()


def test_fake_trial_command_is_the_test_stand_in():
    assert "fake_trial.py" in FAKE_CMD


def test_a_config_dir_with_a_colon_in_its_name(tmp_path, monkeypatch):
    """``--config-dir 'cfg:v2 한/conf'``: the roots reach Hydra (and a sweep's trial processes) through
    ``$FTSWEEP_CONFIG_DIRS``, which joined them with ``:`` and so split this one in two: its options were ignored
    ("data=mine: no such option"). The variable is now a JSON list; a ``:``-joined value set by hand still reads."""
    from ftsweep import paths
    from ftsweep.config.compose import compose, export_config_dirs

    monkeypatch.setenv("FTSWEEP_CONFIG_DIRS", "")  # recorded: export_config_dirs below is undone after the test
    monkeypatch.delenv("FTSWEEP_CONFIG_DIRS")
    root = tmp_path / "cfg:v2 한" / "conf"
    (root / "data").mkdir(parents=True)
    (root / "data" / "mine.yaml").write_text("defaults: [data_schema, _self_]\npath: rows.jsonl\ntemplate: alpaca_ko\n")
    monkeypatch.chdir(tmp_path)
    export_config_dirs([str(root)])  # what ftsweep train does, for itself and its trials
    assert paths.user_config_dirs() == [root.resolve()]
    assert compose(["data=mine"], check=False).data.template == "alpaca_ko"
    monkeypatch.setenv("FTSWEEP_CONFIG_DIRS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert paths.user_config_dirs() == [tmp_path / "a", tmp_path / "b"]
