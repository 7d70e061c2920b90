"""A finished run directory and a sweep folder of another study are never overwritten without a word.

One line naming the key and how to continue, exit 2, nothing written or changed; resuming a study in its
own folder stays the normal path; ``overwrite=true`` replaces.
"""

from __future__ import annotations

import json

import pytest
from sweep_helpers import run, sweep_args

from ftsweep.cli import check_run_dir, main


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _finished_run(path):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("a: 1\n")
    (path / "metrics.json").write_text(json.dumps({"status": "complete", "objective": 1.0}))
    (path / "adapter").mkdir()
    return snapshot(path)


def test_a_finished_run_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "done"
    before = _finished_run(run_dir)
    code = main(["train", "model=tiny", "logger=none", f"hydra.run.dir={run_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"ftsweep: error: hydra.run.dir: {run_dir} holds a finished run; write to a new folder "
                      "(hydra.run.dir=<new>) or replace it with overwrite=true")
    assert snapshot(run_dir) == before and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_overwrite_true_clears_the_old_result(tmp_path, compose):
    run_dir = tmp_path / "done"
    _finished_run(run_dir)
    from ftsweep.config.compose import compose as compose_hydra

    cfg = compose_hydra(["model=tiny", "logger=none", f"hydra.run.dir={run_dir}", "overwrite=true"], hydra=True)
    check_run_dir(cfg)
    assert not (run_dir / "metrics.json").exists() and (run_dir / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_a_sweep_folder_of_another_study_is_refused_and_the_same_study_resumes(tmp_path):
    sd = tmp_path / "s"
    first = run(sweep_args(sd, "hydra.sweeper.report=true", n_trials=2, study="a"), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(sd)
    r = run(sweep_args(sd, "hydra.sweeper.report=true", n_trials=2, study="b"), tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"ftsweep: error: hydra.sweep.dir: {sd} holds study 'a', not 'b'; use a new folder")
    assert "hydra.sweeper.study_name=a" in lines[0]
    assert snapshot(sd) == before  # nothing written or changed
    again = run(sweep_args(sd, "hydra.sweeper.report=true", n_trials=3, study="a"), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((sd / "summary.json").read_text())["n_trials"] == 3


def test_sweep_folder_check_reads_journal_and_summary(tmp_path):
    import optuna

    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.sweep import check_sweep_dir, studies_in

    j = tmp_path / "j"
    j.mkdir()
    optuna.create_study(study_name="x", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(j / "study.journal"))))
    assert studies_in(j) == ["x"]
    check_sweep_dir(j, "x")
    with pytest.raises(SweepInputError, match="holds study 'x', not 'y'"):
        check_sweep_dir(j, "y")
    s = tmp_path / "s"
    s.mkdir()
    (s / "summary.json").write_text(json.dumps({"study_name": "pg_study"}))  # e.g. a PostgreSQL study's report
    with pytest.raises(SweepInputError, match="holds study 'pg_study'"):
        check_sweep_dir(s, "other")
    check_sweep_dir(tmp_path / "new", "y")  # a new folder is fine


@pytest.mark.parametrize("resume", [False, True])
def test_overwrite_true_removes_the_old_runs_trained_model_too(tmp_path, resume):
    """overwrite=true removed the old metrics.json but kept its adapter/ (model/, adapter_init/, loss plots): a new
    run that then failed left a folder marked failed holding the earlier run's adapter beside the new config, which
    merge / generate took for the run's result."""
    from ftsweep.config.compose import compose as compose_hydra

    run_dir = tmp_path / "done"
    _finished_run(run_dir)
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors", "adapter_init/adapter_config.json",
                 "training_loss.png", "checkpoints/checkpoint-5/trainer_state.json"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("old")
    extra = ["trainer.resume_from_checkpoint=true"] if resume else []
    cfg = compose_hydra(["model=tiny", "logger=none", f"hydra.run.dir={run_dir}", "overwrite=true", *extra], hydra=True)
    check_run_dir(cfg)
    left = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    kept = ["checkpoints/checkpoint-5/trainer_state.json"] if resume else []  # a resume goes on from them
    assert left == [".hydra/config.yaml", *kept]


def test_a_run_dir_under_home_goes_to_the_home_folder(tmp_path, monkeypatch):
    """``hydra.run.dir='~/done'``: Hydra does not expand ``~``, so the run went to ``./~/done`` while the checks
    before it looked at ``$HOME/done``: a finished run in ``./~/done`` was overwritten without a word. The run now
    goes to ``$HOME/done`` (what the checks see) and ``./~/done`` is not touched."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work.mkdir() or work)
    before = _finished_run(work / "~" / "done")
    code = main(["train", "model=tiny", "logger=none", "trainer.max_steps=1", "trainer.eval_steps=1",
                 "data.max_rows=16", "hydra.run.dir='~/done'"])
    assert code == 0
    assert snapshot(work / "~" / "done") == before
    assert json.loads((home / "done" / "metrics.json").read_text())["status"] == "complete"
