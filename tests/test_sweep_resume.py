"""A lost trial (its sweep process killed) that saved checkpoints (``trainer.save_steps``) is re-run from its
last intact checkpoint, not from step 0, and ends where the uninterrupted trial does. Real tiny-model trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sweep_helpers import env, load, run

pytestmark = pytest.mark.slow  # three sweeps of one real 60-step trial


def sweep(sweep_dir) -> list[str]:
    return [sys.executable, "-m", "ftsweep", "train", "-m", "hydra/sweeper=ftsweep_optuna", "logger=none",
            "optimizer.lr=choice(0.003)", "trainer.max_steps=60", "trainer.save_steps=10", "trainer.eval_steps=30",
            "trainer.logging_steps=10", "data.max_rows=100", "data.cutoff_len=64", f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweeper.study_name=t", "hydra.sweeper.n_trials=1", "hydra.sweeper.heartbeat_interval_s=1",
            "hydra.sweeper.report=false", "hydra.sweeper.progress=plain"]


def test_a_lost_trial_goes_on_from_its_last_intact_checkpoint(tmp_path):
    """The sweep process killed after the trial saved checkpoints; the latest one is then cut short (a kill or a full
    disk while it was saved). The re-run goes on from the intact checkpoint before it (it had started from step 0:
    'not resuming the lost trial (...): starting afresh'), says why, and ends where the uninterrupted trial does."""
    killed = tmp_path / "killed"
    proc = subprocess.Popen(sweep(killed), cwd=tmp_path, env=env(False), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoints = killed / "trial_0" / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and not (checkpoints / "checkpoint-20" / "trainer_state.json").is_file() \
            and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the trial process sees its sweep gone at its next step and exits
    proc.wait()
    assert not (killed / "trial_0" / "metrics.json").exists()
    saved = sorted((p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                   key=lambda p: int(p.name.split("-")[1]))
    assert len(saved) >= 2, saved
    latest, before = saved[-1], saved[-2]
    bad = latest / "adapter_model.safetensors"
    size = bad.stat().st_size
    with bad.open("r+b") as f:
        f.truncate(size // 2)
    time.sleep(1.0)

    again = run(sweep(killed), tmp_path, timeout=300, fake=False)
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    step = int(before.name.split("-")[1])
    assert (f"(re-run 1 of trial 0, same parameters, from its checkpoint at step {step}: {latest.name} is damaged: "
            f"{bad} (cut short: {size // 2} bytes, its header says {size}))") in out, out[-3000:]
    study = load(killed)
    lost, rerun = study.trials
    assert lost.state.name == "FAIL" and lost.user_attrs["reason"].startswith("stale:")
    assert rerun.state.name == "COMPLETE" and rerun.user_attrs["retry_of"] == 0
    log = (killed / "trial_1" / "trial.log").read_text()
    assert f"resuming from {before} (step {step})" in log, log[-3000:]
    assert "not resuming" not in log and "starting afresh" not in log
    assert json.loads((killed / "trial_1" / "metrics.json").read_text())["train_steps"] == 60
    assert "trainer.resume_from_checkpoint" not in (killed / "trial_1" / ".hydra" / "config.yaml").read_text() \
        .replace("resume_from_checkpoint: null", "")  # the trial's config is the original's

    # the same result as the uninterrupted trial, bitwise: a sweep of its own, so its trial runs with the same
    # intra-op threads as the lost one's (an in-process run would use the test worker's share: another sum order)
    whole = tmp_path / "whole"
    r = run(sweep(whole), tmp_path, timeout=300, fake=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load(whole).trials[0].value == rerun.value
