"""The sweeper end to end through ``ftsweep train -m``, with a fake trial process (no torch; see fake_trial.py).

Pruning, failures, OOM re-run, timeout, parallel workers on one storage, resume after kill -9.
Real tiny-model trials are in test_sweep_real.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from sweep_helpers import env, load, run, states, sweep_args

pytestmark = pytest.mark.slow


def test_pruner_prunes_a_bad_trial(tmp_path):
    sd = tmp_path / "s"
    r = run(sweep_args(sd, "hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.n_startup_trials=2",
                       "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=0", n_trials=3),
            tmp_path, FAKE_PLAN={"2": "bad"})
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert states(study) == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    bad = study.trials[2]
    # stopped at its first evaluation, partial metrics kept, recorded as pruned
    assert list(bad.intermediate_values) == [2]
    assert bad.user_attrs["status"] == "pruned" and bad.user_attrs["pruned_at_step"] == 2
    assert (sd / "trial_2" / "metrics.json").is_file()
    assert "trial 2 PRUNED" in r.stdout


def test_failures_are_recorded_and_the_sweep_completes(tmp_path):
    sd = tmp_path / "s"
    plan = {"0": "raise", "1": "nan", "2": "oom", "3": "oom_once", "4": "hang"}
    r = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.pruner.name=none",
                       "hydra.sweeper.trial_timeout_s=8", n_trials=6, workers=2), tmp_path, FAKE_PLAN=plan)
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert states(study) == {0: "FAIL", 1: "FAIL", 2: "FAIL", 3: "COMPLETE", 4: "FAIL", 5: "COMPLETE"}
    reasons = {t.number: t.user_attrs.get("reason", "") for t in study.trials}
    assert reasons[0].startswith("ValueError: deliberate failure")
    assert reasons[1].startswith("nan_loss:")
    assert reasons[2].startswith("oom:")
    assert reasons[4].startswith("timeout:")
    # OOM: re-run once with half the micro-batch and twice the accumulation (same effective batch)
    t3 = study.trials[3]
    assert t3.user_attrs["oom_first_attempt"]["per_device_train_batch_size"] == 8
    assert "trainer.per_device_train_batch_size=4" in t3.user_attrs["overrides"]
    assert "trainer.gradient_accumulation_steps=2" in t3.user_attrs["overrides"]
    assert (sd / "trial_3.oom" / "failure.json").is_file() and (sd / "trial_3" / "metrics.json").is_file()
    assert "oom_first_attempt" in study.trials[2].user_attrs  # retried once, then failed for good


def test_max_failure_rate_stops_the_sweep(tmp_path):
    sd = tmp_path / "s"
    r = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=0.25", n_trials=8),
            tmp_path, FAKE_PLAN={str(i): "raise" for i in range(8)})
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("ftsweep: error:")]
    assert len(err) == 1 and "max_failure_rate=0.25 allows 2" in err[0]
    assert len(load(sd).trials) == 3



def test_a_sweep_whose_every_trial_failed_exits_1(tmp_path):
    """max_failure_rate=1 lets the sweep run to its end, but with no trial complete it is no result: exit 1 (it was
    0), one error line with the last reason; the trials are recorded as before."""
    sd = tmp_path / "s"
    r = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=1", n_trials=2), tmp_path,
            FAKE_PLAN={"0": "raise", "1": "raise"})
    assert r.returncode == 1, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("ftsweep: error:")]
    assert len(err) == 1 and "no trial completed: all 2 failed (max_failure_rate=1" in err[0], r.stderr
    assert "ValueError: deliberate failure" in err[0]
    assert states(load(sd)) == {0: "FAIL", 1: "FAIL"}
    # the same command again: still no result, exit 1 (it said '2 of n_trials=2 trials done; nothing to run', exit 0)
    again = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=1", n_trials=2), tmp_path)
    assert again.returncode == 1 and "nothing to run" not in again.stdout, again.stdout + again.stderr
    assert again.stderr.strip().splitlines() == [
        "ftsweep: error: sweep t: no trial completed: all 2 failed (last reason: ValueError: deliberate failure); "
        "failed trials count towards n_trials=2, so none is left to run: fix the cause (each trial's failure.json "
        "says why), then raise hydra.sweeper.n_trials (e.g. hydra.sweeper.n_trials=6) to go on"]
    # one trial complete: a result, exit 0
    sd2 = tmp_path / "s2"
    assert run(sweep_args(sd2, "hydra.sweeper.max_failure_rate=1", n_trials=2), tmp_path,
               FAKE_PLAN={"0": "raise"}).returncode == 0


def test_a_resumed_sweep_is_not_stopped_by_the_failures_of_the_run_before(tmp_path):
    # every trial failed (bad data, say); the cause fixed, the same command resumes the study and finishes it
    sd = tmp_path / "s"
    r = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=0.5", n_trials=6),
            tmp_path, FAKE_PLAN={str(i): "raise" for i in range(6)})
    assert r.returncode == 1 and states(load(sd)) == {0: "FAIL", 1: "FAIL", 2: "FAIL", 3: "FAIL"}
    r = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=0.5", n_trials=6), tmp_path)
    assert r.returncode == 0, r.stderr
    assert states(load(sd)) == {0: "FAIL", 1: "FAIL", 2: "FAIL", 3: "FAIL", 4: "COMPLETE", 5: "COMPLETE"}
    assert "max_failure_rate" not in r.stdout + r.stderr


def test_a_sweep_stopped_by_its_failures_says_why_when_run_again_not_nothing_to_run(tmp_path):
    """max_failure_rate stopped the sweep and its failed trials used up n_trials: the same command said '2 of
    n_trials=2 trials done; nothing to run', as for a finished study (exit 0), also after the cause was fixed."""
    sd = tmp_path / "s"
    args = sweep_args(sd, "hydra.sweeper.max_failure_rate=0", n_trials=2, workers=2)
    r = run(args, tmp_path, FAKE_PLAN={"0": "raise", "1": "raise"})
    assert r.returncode == 1 and states(load(sd)) == {0: "FAIL", 1: "FAIL"}, r.stderr
    for _ in range(2):
        again = run(args, tmp_path)
        err = [ln for ln in again.stderr.splitlines() if ln.strip()]
        assert again.returncode == 1 and len(err) == 1, again.stderr
        assert err[0].startswith("ftsweep: error: sweep t: its last run stopped early: 1 of 2 trials failed "
                                 "(max_failure_rate=0 allows 0; last reason: "), err
        assert err[0].endswith("); failed trials count towards n_trials=2, so none is left to run: fix the cause, "
                               "then raise hydra.sweeper.n_trials (e.g. hydra.sweeper.n_trials=6) to go on"), err
        assert "nothing to run" not in again.stdout and len(load(sd).trials) == 2
    # the cause fixed and n_trials raised: the study goes on, and a finished study is 'done' again
    r = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=0", n_trials=3), tmp_path)
    assert r.returncode == 0, r.stderr
    again = run(sweep_args(sd, "hydra.sweeper.max_failure_rate=0", n_trials=3), tmp_path)
    assert again.returncode == 0 and "nothing to run" in again.stdout, again.stderr


def test_a_bad_data_row_stops_the_sweep_at_its_first_trial_as_bad_input(tmp_path):
    # every trial reads the same rows: the first trial's data error ends the sweep in one line, exit 2
    sd = tmp_path / "s"
    r = run(sweep_args(sd, n_trials=6), tmp_path, FAKE_PLAN={str(i): "bad_data" for i in range(6)})
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("ftsweep: error:")]
    assert len(err) == 1 and "trial 0: rows.jsonl line 4: field 'output': empty" in err[0], r.stderr
    assert "Traceback" not in r.stderr and states(load(sd)) == {0: "FAIL"}
    # a searched data setting: other trials read other rows, so the sweep goes on
    sd = tmp_path / "searched"
    r = run(sweep_args(sd, "data.max_rows=choice(8, 9)", "hydra.sweeper.max_failure_rate=1.0", n_trials=2),
            tmp_path, FAKE_PLAN={"0": "bad_data"})
    assert r.returncode == 0, r.stderr
    assert states(load(sd)) == {0: "FAIL", 1: "COMPLETE"}

def test_two_workers_share_one_sqlite_file(tmp_path):
    sd = tmp_path / "s"
    r = run(sweep_args(sd, n_trials=4, workers=2), tmp_path, FAKE_STEP_S="0.2")
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert sorted(t.number for t in study.trials) == list(range(4))
    assert set(states(study).values()) <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["trial_dir"] for t in study.trials}) == 4
    assert "Traceback" not in r.stderr and "database is locked" not in r.stderr


def test_two_processes_share_one_journal(tmp_path):
    sd = tmp_path / "s"
    args = sweep_args(sd, f"hydra.sweeper.storage=journal:{sd / 'study.journal'}", n_trials=7, workers=2)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.2"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = load(sd, storage=f"journal:{sd / 'study.journal'}")
    assert sorted(t.number for t in study.trials) == list(range(7))
    assert all(s in ("COMPLETE", "PRUNED") for s in states(study).values())
    # both processes ran trials
    assert all("started" in out for out, _ in outs)


def test_resume_after_kill_9(tmp_path):
    sd = tmp_path / "s"
    # grace 5 s: a trial killed between ask() and recording its owner can only be judged by its age
    args = sweep_args(sd, "hydra.sweeper.pruner.name=none", "hydra.sweeper.grace_period_s=5", n_trials=6, workers=2)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.5"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # Poll files, not the storage: opening the SQLite file while the sweep creates its tables would race.
    def progress() -> tuple[int, int]:
        done = len(list(sd.glob("trial_*/metrics.json")))
        return done, len(list(sd.glob("trial_*/trial.log"))) - done

    while time.time() < deadline and not (progress()[0] >= 2 and progress()[1] >= 1):
        time.sleep(0.2)
    time.sleep(0.5)  # a running trial is mid-way; the finished ones are told
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    before = {t.number: (t.params, t.value) for t in load(sd).trials if t.state.name == "COMPLETE"}
    running = [t.number for t in load(sd).trials if t.state.name == "RUNNING"]
    assert len(before) >= 2 and running, "kill -9 should leave completed and running trials"

    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(sd)
    after = {t.number: (t.params, t.value) for t in study.trials if t.state.name == "COMPLETE"}
    assert all(after[n] == before[n] for n in before)  # completed trials unchanged
    from ftsweep.sweeper.study import count, counted_trials

    assert count(study).total == 6 and count(study).finished == 6
    assert len(counted_trials(study)) == 6
    for n in running:  # the killed trials: FAIL (stale) and re-run once with the same params
        t = study.trials[n]
        assert t.state.name == "FAIL" and t.user_attrs["reason"].startswith("stale:")
        rerun = [u for u in study.trials if u.user_attrs.get("retry_of") == n]
        assert len(rerun) == 1 and rerun[0].state.name == "COMPLETE"
        if t.params:  # (empty if it was killed inside ask(), before sampling)
            assert rerun[0].params == t.params
    # trial_<n>/ by Optuna number: nothing overwritten (a trial killed before it started has no dir)
    dirs = [d for t in study.trials if (d := t.user_attrs.get("trial_dir"))]
    assert len(set(dirs)) == len(dirs) and len(dirs) >= 6


def test_a_study_resumed_with_other_fixed_settings_says_which(tmp_path):
    sd = tmp_path / "s"
    note = "continuing a study started with other settings"
    first = run(sweep_args(sd, "trainer.max_steps=5", "data.cutoff_len=64", n_trials=1), tmp_path)
    assert first.returncode == 0, first.stderr
    same = run(sweep_args(sd, "data.cutoff_len=64", "trainer.max_steps=5", "logger=tensorboard", n_trials=2), tmp_path)
    assert same.returncode == 0 and note not in same.stderr  # same settings in another order; the logger aside
    other = run(sweep_args(sd, "trainer.max_steps=7", n_trials=3), tmp_path)
    assert other.returncode == 0, other.stderr
    assert ("continuing a study started with other settings: data.cutoff_len unset (was data.cutoff_len=64); "
            "trainer.max_steps=7 (was trainer.max_steps=5); its earlier trials' values may not compare") in other.stderr
    assert len(load(sd).trials) == 3  # a note, not a refusal: the study continues


def test_lr_after_baseline_enqueues_the_baseline_lr(tmp_path, compose):
    from omegaconf import OmegaConf

    base = tmp_path / "runs" / "2026-11-23" / "10-00-00"
    (base / ".hydra").mkdir(parents=True)
    cfg = compose("lora=r8", "optimizer.lr=3e-4", "logger=none")
    OmegaConf.save(cfg, base / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(["lora=r8", "optimizer.lr=3e-4", "logger=none"]), base / ".hydra" / "overrides.yaml")
    (base / "metrics.json").write_text(json.dumps({"status": "complete", "eval_loss": 1.0}))  # a finished run
    sd = tmp_path / "s"
    args = [a for a in sweep_args(sd, n_trials=2) if not a.startswith(("optimizer.lr=", "hydra.sweeper.study_name"))]
    r = run([*args, "sweep=lr_after_baseline", f"baseline={base}", "hydra.sweeper.baseline_lr_factor=2"], tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(sd, name="lr_after_baseline-2026-11-23_10-00-00")
    t0 = study.trials[0]
    assert t0.params == {"optimizer.lr": 3e-4}
    assert all(1.5e-4 <= t.params["optimizer.lr"] <= 6e-4 for t in study.trials)
    assert all("lora=r8" in t.user_attrs["overrides"] for t in study.trials)
    assert len(study.trials) == 2


def test_multi_objective(tmp_path):
    sd = tmp_path / "s"
    # mixed directions (a loss maximized is refused, so the second one is a figure either direction may search)
    r = run(sweep_args(sd, "hydra.sweeper.metric=[eval_loss,peak_memory_mb]", "hydra.sweeper.direction=[minimize,maximize]",
                       "hydra.sweeper.report=true", n_trials=3), tmp_path)
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert all(len(t.values) == 2 and not t.intermediate_values for t in study.trials)
    assert "pareto trial" in r.stdout
    assert json.loads((sd / "summary.json").read_text())["pareto_trials"]


def test_repeated_kill_9_spends_no_retry_budget(tmp_path):
    """Three kill -9 of the sweep process, each with trials running (some of them re-runs of trials killed
    before): every interrupted trial is re-run and the study ends with n_trials COMPLETE, no FAIL counted."""
    sd = tmp_path / "s"
    args = sweep_args(sd, "hydra.sweeper.pruner.name=none", "hydra.sweeper.grace_period_s=5",
                      "hydra.sweeper.retry_stale=1", n_trials=4, workers=2)
    killed = 0
    for _ in range(3):
        proc = subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.5"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        logs = len(list(sd.glob("trial_*/trial.log")))
        deadline = time.time() + 120
        while time.time() < deadline and len(list(sd.glob("trial_*/trial.log"))) < logs + 2:
            time.sleep(0.2)
        time.sleep(1.0)  # both new trials mid-way (each takes ~2.5 s)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed += sum(1 for t in load(sd).trials if t.state.name == "RUNNING")
        time.sleep(0.5)
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "retry budget used" not in r.stdout + r.stderr
    study = load(sd)
    from ftsweep.sweeper.study import count

    c = count(study)
    assert (c.total, c.complete, c.failed, c.running) == (4, 4, 0, 0)
    fails = [t for t in study.trials if t.state.name == "FAIL"]
    assert killed >= 4 and len(fails) == killed  # each kill left running trials; each was failed once ...
    assert all(t.user_attrs["reason"].startswith("stale:") for t in fails)
    reruns = [t for t in study.trials if t.user_attrs.get("retry_of") is not None]
    assert len(reruns) == killed and all(t.user_attrs["ftsweep:charged"] is False for t in reruns)  # ... and re-run
    assert max(t.user_attrs["ftsweep:rerun"] for t in reruns) >= 2  # a re-run was killed too (retry_stale=1)


def test_outcome_values_follow_the_listed_metrics_not_the_objective(tmp_path):
    """hydra.sweeper.metric=[eval_loss,exact_match] with objective=exact_match: the first value is eval_loss
    (the run's objective only stands in when the run did not write the first metric: a custom trial command)."""
    from ftsweep.sweeper.outcome import read_outcome
    from ftsweep.sweeper.process import Exit

    (tmp_path / "metrics.json").write_text(json.dumps({"status": "complete", "objective": 0.75, "exact_match": 0.75,
                                                       "eval_loss": 1.5}))
    assert read_outcome(tmp_path, Exit(0), ["eval_loss", "exact_match"]).values == [1.5, 0.75]
    assert read_outcome(tmp_path, Exit(0), ["exact_match", "eval_loss"]).values == [0.75, 1.5]
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "complete", "objective": 2.0}))
    assert read_outcome(tmp_path, Exit(0), ["eval_loss"]).values == [2.0]


def test_sigterm_stops_the_sweep_as_ctrl_c_does_and_says_how_to_resume(tmp_path):
    """SIGTERM (a cluster's time limit, ``kill``) ended the sweep process at once without a word: no line, its
    running trials left RUNNING for a later stale check. Now it stops as Ctrl-C does: trials recorded as interrupted
    (and queued to re-run), one line naming the signal and the command that resumes, exit 130."""
    sd = tmp_path / "s"
    args = sweep_args(sd, "hydra.sweeper.pruner.name=none", n_trials=4, workers=2)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.5"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(sd.glob("trial_*/trial.log"))) < 2:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == ("ftsweep: error: terminated (SIGTERM); run the same command again to "
                                            "resume the sweep (its interrupted trials run again)")
    study = load(sd)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    stopped = [t for t in study.trials if t.state.name == "FAIL"]
    assert stopped and all(t.user_attrs["reason"].startswith("interrupted") for t in stopped)
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    from ftsweep.sweeper.study import count

    assert count(load(sd)).complete == 4


@pytest.mark.parametrize("objective", ["objective=exact_match", "objective=rouge_l"])
def test_a_sweep_metric_other_than_the_objective_takes_the_direction_its_name_says(tmp_path, objective):
    """objective=exact_match hydra.sweeper.metric=eval_loss (no hydra.sweeper.direction): the study took the
    objective's direction (maximize) and best.yaml was the trial with the highest eval loss. Now a swept metric other
    than objective.metric takes the direction its name says, as objective.metric does."""
    sd = tmp_path / "s"
    r = run(sweep_args(sd, objective, "hydra.sweeper.metric=eval_loss", "hydra.sweeper.pruner.name=none",
                       "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=3", n_trials=2), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(sd)
    assert [d.name for d in study.directions] == ["MINIMIZE"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and len({t.value for t in done}) == 2
    assert study.best_trial.value == min(t.value for t in done)
