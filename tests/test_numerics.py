"""Intra-op threads: the sweeper's per-trial share (one worker included), the user's own setting respected,
``trainer.num_threads`` applied around a run and recorded in manifest.json, and pinned in best.yaml.
The bitwise re-run of best.yaml from a 2-worker sweep is tests/test_sweep_real.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftsweep import numerics


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(numerics.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_share_splits_usable_cores_for_every_worker_count(four_cpus):
    assert [numerics.intra_op_share(k) for k in (1, 2, 3, 4, 8)] == ["4", "2", "1", "1", "1"]


def test_share_respects_the_users_omp_num_threads(four_cpus):
    assert numerics.intra_op_share(1, {"OMP_NUM_THREADS": "3"}) is None
    assert numerics.intra_op_share(2, {"OMP_NUM_THREADS": ""}) == "2"  # empty = unset


def _runner(n_workers: int, backend: str = "local"):
    from ftsweep.sweeper.runner import SweepRunner

    runner = SweepRunner.__new__(SweepRunner)
    runner.s = SimpleNamespace(
        conf=SimpleNamespace(backend=backend, heartbeat_interval_s=10.0), n_workers=n_workers, storage_url="sqlite://",
        study_name="s", metrics=["eval_loss"], directions=["minimize"], pruner=SimpleNamespace())
    return runner


def _trial_env(runner, gpu=None):
    from ftsweep.sweeper import runner as runner_mod

    trial = SimpleNamespace(_trial_id=1, number=0, params={})
    orig = runner_mod.pruner_to_json
    runner_mod.pruner_to_json = lambda p: "{}"
    try:
        return runner._env(trial, gpu)
    finally:
        runner_mod.pruner_to_json = orig


def test_one_worker_trial_gets_all_usable_cores_two_get_half(four_cpus):
    assert _trial_env(_runner(1))["OMP_NUM_THREADS"] == "4"
    assert _trial_env(_runner(2))["OMP_NUM_THREADS"] == "2"
    assert _trial_env(_runner(2), gpu="0")["OMP_NUM_THREADS"] == "2"  # GPU trials share the CPU cores too
    assert "OMP_NUM_THREADS" not in _trial_env(_runner(2, backend="submitit"))  # the scheduler's node, its cores


def test_users_omp_num_threads_is_inherited_not_replaced(four_cpus, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert "OMP_NUM_THREADS" not in _trial_env(_runner(1))  # the trial inherits 3 from the environment


def test_apply_threads_sets_and_restores():
    import torch

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with numerics.apply_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with numerics.apply_threads(0):  # 0: the process's own count, untouched
        assert torch.get_num_threads() == before


def test_num_threads_is_validated(compose):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match=r"trainer.num_threads: must be >= 0 \(got -1\)"):
        compose("trainer.num_threads=-1")


def test_run_applies_and_records_num_threads(compose, tmp_path):
    import torch
    from conftest import FAST

    from ftsweep.train import run

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    cfg = compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2", "data.max_rows=40",
                  f"trainer.num_threads={other}")
    run(cfg, tmp_path)
    rec = json.loads((tmp_path / "manifest.json").read_text())["numerics"]
    assert rec["num_threads"] == other and rec["precision"] == "fp32"
    assert rec["deterministic_algorithms"] is False
    assert torch.get_num_threads() == before  # restored: a warm worker's next trial starts from its own count


def _study_with_manifest(tmp_path: Path, overrides: list[str], threads: int | None):
    import optuna
    from optuna.distributions import FloatDistribution

    sd = tmp_path / "sweeps" / "demo"
    td = sd / "trial_0"
    td.mkdir(parents=True)
    if threads is not None:
        (td / "manifest.json").write_text(json.dumps({"numerics": {"num_threads": threads}}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(study_name="demo", storage=f"sqlite:///{sd / 'study.db'}")
    t = s.ask({"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)})
    t.set_user_attr("trial_dir", str(td))
    t.set_user_attr("overrides", ["logger=none", *overrides])
    s.tell(t, 2.0)
    return s, sd


def _write_best(study, sd: Path) -> str:
    from ftsweep.report import best_yaml

    text = best_yaml(study, study.best_trial, sd)
    (sd / "best.yaml").write_text(text)
    return text


def test_best_yaml_pins_the_trials_recorded_threads(tmp_path, cache_dir):
    from ftsweep.config.compose import compose
    s, sd = _study_with_manifest(tmp_path, ["optimizer.lr=0.001"], threads=3)
    text = _write_best(s, sd)
    assert "# trainer.num_threads: 3: the trial's CPU intra-op threads" in text
    assert compose(["+demo=best"], config_dirs=[str(sd.parent)]).trainer.num_threads == 3


def test_best_yaml_keeps_an_explicit_num_threads_and_needs_no_manifest(tmp_path, cache_dir):
    from ftsweep.config.compose import compose
    s, sd = _study_with_manifest(tmp_path, ["trainer.num_threads=2"], threads=3)
    _write_best(s, sd)
    assert compose(["+demo=best"], config_dirs=[str(sd.parent)]).trainer.num_threads == 2
    s2, sd2 = _study_with_manifest(tmp_path / "b", ["optimizer.lr=0.001"], threads=None)
    assert "num_threads" not in _write_best(s2, sd2)


def test_a_nan_training_loss_fails_the_run_as_nan_loss(compose, tmp_path, nan_loss_from):
    """A step whose loss is NaN (as bf16 on a GPU gives at a learning rate too high) must reach the NaN
    guard: transformers' default ``logging_nan_inf_filter`` logs such a step's loss as 0.0, and the run
    would complete with a poisoned adapter (seen on an H200 in lr-find: loss 0.0 from lr 0.5 on)."""
    from ftsweep.errors import RunFailed
    from ftsweep.train import execute

    nan_loss_from(3)
    cfg = compose("data.max_rows=40", "data.cutoff_len=64", "data.val_size=0", "objective.metric=train_loss",
                  "trainer.max_steps=6", "trainer.logging_steps=1", "logger=none")
    with pytest.raises(RunFailed, match=r"^nan_loss: training loss is nan at step 3"):
        execute(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "failure.json").read_text())["reason"].startswith("nan_loss:")
