"""backend=submitit end to end with submitit's local executor (the code path SLURM uses, minus sbatch):
one job per trial running the same trial entry point. Fake trials (tests/fake_trial.py)."""

from __future__ import annotations

import pytest
from sweep_helpers import load, run, states, sweep_args

pytest.importorskip("submitit")

SUBMITIT = ("hydra.sweeper.backend=submitit", "hydra.sweeper.submitit.cluster=local")


@pytest.mark.slow  # ~40 s: every trial is a submitit job (3 Python start-ups)
def test_quickstart_sweep_through_submitit_prunes_fails_and_retries_oom(tmp_path):
    sd = tmp_path / "s"
    r = run(sweep_args(sd, *SUBMITIT, "hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.n_startup_trials=2",
                       "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=0",
                       "hydra.sweeper.max_failure_rate=0.5", n_trials=4),
            tmp_path, timeout=400, FAKE_PLAN={"1": "oom_once", "2": "bad", "3": "raise"})
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert states(study) == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "FAIL"}
    t = study.trials
    assert t[2].user_attrs["pruned_at_step"] == 2 and list(t[2].intermediate_values) == [2]  # pruned via the study
    assert t[3].user_attrs["reason"].startswith("ValueError: deliberate failure")
    assert t[1].user_attrs["oom_first_attempt"]["per_device_train_batch_size"] == 8  # OOM re-run, half batch
    assert "trainer.per_device_train_batch_size=4" in t[1].user_attrs["overrides"]
    for n in range(4):  # each trial was a submitit job; its output went to the trial's own log
        log = (sd / f"trial_{n}" / "trial.log").read_text()
        assert "# submitit local job " in log
    assert list((sd / ".submitit").iterdir())  # submitit's own job folders
    assert (sd / "trial_0" / "metrics.json").is_file()


@pytest.mark.slow
def _processes_naming(text: str) -> list[int]:
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_job_ended_by_the_scheduler_fails_with_its_reason_and_is_rerun(tmp_path):
    """... and its trial does not outlive it, also when the sweep was started with SIGINT ignored (a
    background shell's ``nohup ... &``, which submitit's local executor's SIGINT then never reached)."""
    import signal
    import subprocess
    import time

    from sweep_helpers import env

    sd = tmp_path / "s"
    # trial 0 hangs; the job's time limit (0.1 min) ends it: submitit's local executor signals it as SLURM would
    r = subprocess.run(sweep_args(sd, *SUBMITIT, "hydra.sweeper.submitit.timeout_min=0.1",
                                  "hydra.sweeper.pruner.name=none", "hydra.sweeper.max_failure_rate=1.0", n_trials=1),
                       cwd=tmp_path, env=env(FAKE_PLAN={"0": "hang"}), capture_output=True, text=True, timeout=400,
                       check=False, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while _processes_naming(f"hydra.sweep.dir={sd}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_naming(f"hydra.sweep.dir={sd}")  # no trial left running
    study = load(sd)
    t0 = study.trials[0]
    assert t0.state.name == "FAIL" and t0.user_attrs["reason"].startswith("scheduler: job "), t0.user_attrs
    reruns = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert len(reruns) == 1 and reruns[0].state.name == "COMPLETE" and reruns[0].params == t0.params
    from ftsweep.sweeper.study import count

    c = count(study)
    assert len(study.trials) == 2  # the failed job and its re-run (n_trials=1: no other trial)
    assert c.total == 1 and c.complete == 1 and c.running == 0  # the re-run takes the failed trial's place


@pytest.mark.parametrize("gpus,expect_gpus", [("auto", True), (None, False)])
def test_slurm_settings_reach_the_sbatch_script(tmp_path, monkeypatch, gpus, expect_gpus):
    """The sbatch file submitit would submit (no cluster needed to render it)."""
    import os

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit's SLURM executor checks srun exists
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    from ftsweep.config.sweeper import SubmititConf, SweeperConf
    from ftsweep.sweeper.submitit_backend import SubmititBackend

    conf = SweeperConf(backend="submitit", gpus=gpus, gpus_per_trial=2, submitit=SubmititConf(
        cluster="slurm", partition="gpu", account="proj1", qos="high", timeout_min=90, cpus_per_task=8, mem_gb=64,
        additional_parameters={"reservation": "ml"}, setup=["module load cuda/12.4"]))
    backend = SubmititBackend(conf, tmp_path, timeout_s=0)
    assert not backend.places_gpus  # SLURM places the job's GPUs
    text = backend.executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj1", "#SBATCH --qos=high", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --reservation=ml", "module load cuda/12.4"):
        assert line in text, (line, text)
    assert ("#SBATCH --gpus-per-node=2" in text) is expect_gpus


@pytest.mark.parametrize("override,message", [
    ("hydra.sweeper.backend=slurm", "hydra.sweeper.backend: unknown backend 'slurm'; one of local, submitit"),
    ("hydra.sweeper.submitit.cluster=pbs", "hydra.sweeper.submitit.cluster: unknown cluster 'pbs'"),
    ("hydra.sweeper.trials_per_gpu=2", "hydra.sweeper.trials_per_gpu: a multi-GPU trial"),
])
def test_bad_backend_or_placement_is_one_line(tmp_path, override, message):
    extra = ["hydra.sweeper.backend=submitit"] if "cluster" in override else []
    if "trials_per_gpu" in override:
        extra = ["hydra.sweeper.gpus=[0,1]", "hydra.sweeper.gpus_per_trial=2"]
    r = run(sweep_args(tmp_path / "s", *extra, override, n_trials=2), tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not list((tmp_path / "s").glob("trial_*"))


def test_a_jobs_pickled_command_holds_no_secret(tmp_path, monkeypatch):
    """submitit pickles each job's arguments into its folder: an override holding a URL password or a secret
    environment value (notes=...) reaches the trial through the environment instead, unchanged."""
    import hashlib
    import os
    import sys
    import time

    from ftsweep.config.sweeper import SubmititConf, SweeperConf
    from ftsweep.sweeper.submitit_backend import SubmititBackend

    monkeypatch.setattr(os, "environ", dict(os.environ))  # the variables the backend sets end with the test
    monkeypatch.setenv("HF_TOKEN", "hf_PLANTEDtok77")
    args = ["notes='postgresql://alice:PLANTEDpw9@db.example.org/x'", "+x=hf_PLANTEDtok77", "optimizer.lr=0.1"]
    code = "import hashlib, sys; print('ARGS', hashlib.sha256(repr(sys.argv[1:]).encode()).hexdigest())"
    cmd = [sys.executable, "-c", code, *args]
    conf = SweeperConf(backend="submitit", submitit=SubmititConf(cluster="local"))
    backend = SubmititBackend(conf, tmp_path, timeout_s=60)
    (tmp_path / "trial_0").mkdir()
    proc = backend.start(cmd, {}, tmp_path / "trial_0", 0)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is not None and proc.poll().code == 0
    digest = hashlib.sha256(repr(args).encode()).hexdigest()
    assert f"ARGS {digest}" in (tmp_path / "trial_0" / "trial.log").read_text()  # the trial got the real values
    assert list((tmp_path / ".submitit").rglob("*.pkl"))
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert b"PLANTED" not in f.read_bytes(), f"a secret pickled into {f}"


def test_a_job_ended_without_its_result_does_not_stop_the_sweep_loop(tmp_path, monkeypatch):
    """A job the scheduler ended writes no result file; submitit's ``result()`` then sleeps up to 15 s waiting
    for it, and the sweep loop that polled it froze with it (a fake sweep's timed-out trial was recorded after
    22.8 s with a 6 s limit, and no other trial was handed over meanwhile). The poll now returns at once while
    the file may still show (the same 15 s, across polls), then asks ``result()`` without a second wait."""
    from types import SimpleNamespace

    from ftsweep.sweeper import submitit_backend

    class Job:
        job_id, state = "42", "TIMEOUT"
        _results_timeout_s = 15

        def __init__(self):
            self.paths = SimpleNamespace(result_pickle=tmp_path / "42_0_result.pkl")
            self.waits: list[float] = []

        def done(self):
            return True

        def result(self):
            self.waits.append(self._results_timeout_s)
            raise RuntimeError("Job 42 has not produced any output (state: TIMEOUT)")

    clock = [1000.0]
    monkeypatch.setattr(submitit_backend.time, "monotonic", lambda: clock[0])
    job = Job()
    proc = submitit_backend.SubmititProcess(job, tmp_path / "trial.log")
    assert proc.poll() is None and job.waits == []  # not a blocking result() call
    clock[0] += submitit_backend.RESULT_GRACE_S - 1
    assert proc.poll() is None and job.waits == []
    clock[0] += 1
    ended = proc.poll()
    assert job.waits == [0]  # waited across the polls already: no second wait inside result()
    assert ended.code is None and ended.reason.startswith("scheduler: job 42 ended (TIMEOUT): Job 42 has not produced")
    # a result file that shows within the grace is read at once
    job2 = Job()
    proc2 = submitit_backend.SubmititProcess(job2, tmp_path / "trial.log")
    assert proc2.poll() is None
    job2.paths.result_pickle.write_bytes(b"")
    job2.result = lambda: 0
    assert proc2.poll().code == 0
