"""sweep=lr_after_baseline's baseline= folder: what is refused (one line naming baseline=) and what is carried over.

Fake run folders (a composed config and overrides, no training); the sweep end to end is in test_sweep_runner.py.
"""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ftsweep.sweeper.baseline import baseline_params
from ftsweep.sweeper.grammar import SweepInputError


def _run(path, compose, overrides, status="complete"):
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose(*overrides), path / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), path / ".hydra" / "overrides.yaml")
    if status:
        (path / "metrics.json").write_text(json.dumps({"status": status, "eval_loss": 4.5}))
    return path


def test_a_finished_run_gives_its_overrides_and_lr(tmp_path, compose):
    base = _run(tmp_path / "base", compose, ["lora=r8", "optimizer.lr=3e-4", "logger=none"])
    b = baseline_params(str(base), 2.0, sweep="lr_after_baseline")
    assert b["fixed"] == ["lora=r8", "logger=none"] and b["lr"] == 3e-4
    assert b["enqueue"] == [{"optimizer.lr": 3e-4}]


@pytest.mark.parametrize("status, says", [(None, "did not finish"), ("pruned", "ended pruned")])
def test_a_run_that_did_not_complete_is_refused(tmp_path, compose, status, says):
    base = _run(tmp_path / "base", compose, ["optimizer.lr=3e-4"], status=status)
    with pytest.raises(SweepInputError) as e:
        baseline_params(str(base), 2.0, sweep="lr_after_baseline")
    msg = str(e.value)
    assert msg.startswith(f"baseline={base}: ") and says in msg and "\n" not in msg


def test_a_failed_run_is_refused(tmp_path, compose):
    base = _run(tmp_path / "base", compose, ["optimizer.lr=3e-4"], status=None)
    (base / "failure.json").write_text(json.dumps({"reason": "nan_loss: step 3"}))
    with pytest.raises(SweepInputError, match=r"baseline=.*the run failed \(nan_loss: step 3"):
        baseline_params(str(base), 2.0, sweep="lr_after_baseline")


def test_a_trial_of_another_sweep_is_refused_not_trained_without_that_sweeps_settings(tmp_path, compose):
    # a quickstart trial's overrides name sweep=quickstart (data=proxy_tasks, cutoff 96, 60 steps ...): dropping it
    # silently trained the lr sweep on other data; the error names the sweep and the command that keeps its settings
    base = _run(tmp_path / "trial_0", compose, ["sweep=quickstart", "logger=none", "optimizer.lr=4e-3", "lora=r8"])
    with pytest.raises(SweepInputError) as e:
        baseline_params(str(base), 4.0, sweep="lr_after_baseline")
    msg = str(e.value)
    assert msg.startswith(f"baseline={base}: a trial of sweep=quickstart") and "\n" not in msg
    assert "ftsweep train -m sweep=quickstart logger=none lora=r8 'optimizer.lr=tag(log, interval(0.001, 0.016))'" in msg


def test_a_trial_of_the_same_sweep_is_a_baseline(tmp_path, compose):
    base = _run(tmp_path / "trial_2", compose, ["logger=none", "sweep=lr_after_baseline", "baseline=runs/base",
                                                 "optimizer.lr=1.4e-3"])
    b = baseline_params(str(base), 4.0, sweep="lr_after_baseline")
    assert b["fixed"] == ["logger=none"] and b["lr"] == 1.4e-3



@pytest.mark.slow
def test_the_study_name_a_refusal_names_resumes_the_baseline_sweep(tmp_path, compose):
    # sweep=lr_after_baseline appends -<baseline> to hydra.sweeper.study_name; the refusal of another study in the
    # folder says "resume it with hydra.sweeper.study_name=lr_after_baseline-<slug>", which then got -<slug>
    # appended again (lr_after_baseline-<slug>-<slug>) and was refused once more
    import sys

    from sweep_helpers import load, run

    from ftsweep.paths import path_slug

    base = _run(tmp_path / "base", compose, ["optimizer.lr=3e-4", "logger=none"])
    sd = tmp_path / "s"
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "sweep=lr_after_baseline", "baseline=base",
            f"hydra.sweep.dir={sd}", "hydra.sweeper.report=false", "hydra.sweeper.progress=plain"]
    assert run([*args, "hydra.sweeper.n_trials=1"], tmp_path).returncode == 0
    name = f"lr_after_baseline-{path_slug(str(base))}"
    again = run([*args, "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=lr_after_baseline-base"], tmp_path)
    assert f"resume it with hydra.sweeper.study_name={name}" in again.stderr
    again = run([*args, "hydra.sweeper.n_trials=2", f"hydra.sweeper.study_name={name}"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(load(sd, name=name).trials) == 2


def test_a_resumed_baseline_gives_its_trials_a_fresh_start(tmp_path, compose):
    # a baseline continued with trainer.resume_from_checkpoint=<run>: its trials resumed that checkpoint too, whose
    # optimizer and scheduler keep the saved lr, so every trial but 0 failed ("optimizer.lr=... would not apply");
    # a resumed run equals the uninterrupted one, so the trials train its config from step 0
    base = _run(tmp_path / "base", compose, ["logger=none", "trainer.save_steps=5", "optimizer.lr=2e-4"])
    OmegaConf.save(OmegaConf.create(["logger=none", "trainer.save_steps=5", "trainer.resume_from_checkpoint=runs/res",
                                     "overwrite=true"]), base / ".hydra" / "overrides.yaml")
    b = baseline_params(str(base), 4.0, sweep="lr_after_baseline")
    assert b["fixed"] == ["logger=none", "trainer.save_steps=5"] and b["lr"] == 2e-4


@pytest.mark.slow
def test_a_sweep_that_changes_the_baseline_settings_says_so(tmp_path, compose):
    # the command line wins over the baseline's overrides (other data, steps ...): trial 0 at the baseline's lr is
    # then not the baseline's run, which the sweep said nowhere
    import sys

    from sweep_helpers import run

    base = _run(tmp_path / "base", compose, ["optimizer.lr=3e-4", "logger=none", "trainer.max_steps=15"])
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "sweep=lr_after_baseline", f"baseline={base}",
            f"hydra.sweep.dir={tmp_path / 's'}", "hydra.sweeper.report=false", "hydra.sweeper.progress=plain",
            "hydra.sweeper.n_trials=1", "logger=none"]
    same = run(args, tmp_path)
    assert same.returncode == 0, same.stderr
    assert "baseline" not in same.stderr
    other = run([*args, "hydra.sweep.dir=" + str(tmp_path / "s2"), "trainer.max_steps=7", "data=proxy_tasks"], tmp_path)
    assert other.returncode == 0, other.stderr
    note = [ln for ln in other.stderr.splitlines() if "baseline" in ln]
    assert len(note) == 1 and ("trials differ from the baseline in: trainer.max_steps=7 (baseline: trainer.max_steps=15), "
                               "data=proxy_tasks (baseline: unset)") in note[0], other.stderr


def test_a_fixed_lr_beside_a_baseline_is_refused(tmp_path, compose):
    # optimizer.lr=5e-3 on the command line was silently outvoted by the lr searched around the baseline's (and
    # the note said "optimizer.lr=5e-3 (baseline: unset)")
    import sys

    from sweep_helpers import run

    base = _run(tmp_path / "base", compose, ["optimizer.lr=3e-4", "logger=none"])
    sd = tmp_path / "s"
    r = run([sys.executable, "-m", "ftsweep", "train", "-m", "sweep=lr_after_baseline", f"baseline={base}",
             f"hydra.sweep.dir={sd}", "hydra.sweeper.n_trials=1", "optimizer.lr=5e-3"], tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftsweep: error: optimizer.lr=5e-3: ") and "baseline" in err[0]
    assert not sd.exists()


def test_an_lr_range_without_the_baseline_lr_is_refused(tmp_path, compose):
    # trial 0 ran at the baseline's lr (3e-4) outside the range given on the command line, without a word
    import sys

    from sweep_helpers import run

    base = _run(tmp_path / "base", compose, ["optimizer.lr=3e-4", "logger=none"])
    sd = tmp_path / "s"
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "sweep=lr_after_baseline", f"baseline={base}",
            f"hydra.sweep.dir={sd}", "hydra.sweeper.n_trials=1"]
    r = run([*args, "optimizer.lr=tag(log, interval(1e-3, 1e-2))"], tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftsweep: error: optimizer.lr=tag(log, interval(1e-3, 1e-2)): does "
                                               f"not hold baseline={base}'s lr (0.0003)"), err
    assert not sd.exists()
    r = run([*args, "optimizer.lr=choice(1e-4,3e-4)", "hydra.sweeper.report=false", "logger=none"], tmp_path)
    assert r.returncode == 0, r.stderr  # a range (or choice) that holds it is searched


def _sweep_folder(sweep, best_dir, **summary):
    sweep.mkdir(parents=True, exist_ok=True)
    doc = {"study_name": "s", "best_trial_number": 1, "best_trial_dir": str(best_dir), "pareto_trials": None, **summary}
    (sweep / "summary.json").write_text(json.dumps(doc))
    return sweep


def test_a_sweep_folder_stands_for_its_best_trial_also_after_it_moved(tmp_path, compose):
    # baseline=<sweep folder> was refused ("not a run directory"); the natural baseline of a sweep is its best trial
    # (the run its best.yaml names), read where the folder is now
    sweep = tmp_path / "moved"
    _run(sweep / "trial_0", compose, ["logger=none", "lora=r16", "optimizer.lr=1e-3"])
    _run(sweep / "trial_1", compose, ["logger=none", "lora=r8", "optimizer.lr=2e-3"])
    _sweep_folder(sweep, tmp_path / "sweeps" / "lr" / "trial_1")  # recorded before the folder was moved
    b = baseline_params(str(sweep), 4.0, sweep="lr_after_baseline")
    assert b["fixed"] == ["logger=none", "lora=r8"] and b["lr"] == 2e-3 and b["dir"] == str(sweep / "trial_1")
    assert b["note"] == f"baseline={sweep}: a sweep folder, so its best trial {sweep / 'trial_1'}"
    run = baseline_params(str(sweep / "trial_0"), 4.0, sweep="lr_after_baseline")  # a run folder stays itself
    assert (run["lr"], run["note"], run["dir"]) == (1e-3, None, str(sweep / "trial_0"))


@pytest.mark.parametrize("summary, says", [
    (None, "a sweep folder with no report yet (summary.json names its best trial): write it with `ftsweep report"),
    ({"best_trial_dir": None, "pareto_trials": [1, 2]}, "no single best trial (a multi-objective sweep)"),
    ({"best_trial_dir": None}, "no single best trial (no trial completed)"),
])
def test_a_sweep_folder_without_one_best_trial_is_refused_in_one_line(tmp_path, compose, summary, says):
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "study.db").write_bytes(b"")
    if summary is not None:
        _sweep_folder(sweep, "", **summary)
    with pytest.raises(SweepInputError) as e:
        baseline_params(str(sweep), 4.0, sweep="lr_after_baseline")
    msg = str(e.value)
    assert msg.startswith(f"baseline={sweep}: ") and says in msg and "\n" not in msg


def test_a_sweep_folders_best_trial_of_another_sweep_is_refused_naming_both(tmp_path, compose):
    sweep = tmp_path / "qs"
    _run(sweep / "trial_3", compose, ["sweep=quickstart", "logger=none", "optimizer.lr=4e-3"])
    _sweep_folder(sweep, sweep / "trial_3")
    with pytest.raises(SweepInputError) as e:
        baseline_params(str(sweep), 4.0, sweep="lr_after_baseline")
    assert str(e.value).startswith(f"baseline={sweep} (its best trial {sweep / 'trial_3'}): a trial of sweep=quickstart")


@pytest.mark.slow
def test_the_sweep_optimizes_the_baselines_objective_and_logs_where_its_trials_log(tmp_path, compose):
    # the sweep read its objective (and stage, logger, timeout) from the command line's config alone: around a
    # baseline run with objective=exact_match it minimized eval_loss, and around a logger=none baseline it started a
    # W&B summary run; the trials themselves ran the baseline's settings
    import sys

    from sweep_helpers import load, run

    base = _run(tmp_path / "base", compose, ["objective=exact_match", "optimizer.lr=3e-4", "logger=none"])
    sd = tmp_path / "s"
    r = run([sys.executable, "-m", "ftsweep", "train", "-m", "sweep=lr_after_baseline", f"baseline={base}",
             f"hydra.sweep.dir={sd}", "hydra.sweeper.progress=plain", "hydra.sweeper.n_trials=2"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(sd, name=f"lr_after_baseline-{__import__('ftsweep.paths').paths.path_slug(str(base))}")
    assert [d.name for d in study.directions] == ["MAXIMIZE"] and study.metric_names == ["exact_match"]
    assert all(t.value == json.loads((sd / f"trial_{t.number}" / "metrics.json").read_text())["exact_match"]
               for t in study.trials)
    assert not (sd / "wandb").exists()  # no W&B summary run: the trials log nowhere
