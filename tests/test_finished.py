"""Re-running a finished sweep: one line (how many are done, how to continue), no set-up, nothing rewritten."""

from __future__ import annotations

import time

import pytest
from sweep_helpers import load, run, sweep_args

pytestmark = pytest.mark.slow  # two sweeps (fake trials)


def test_a_finished_study_says_so_in_one_line_and_touches_nothing(tmp_path):
    sd = tmp_path / "s"
    args = sweep_args(sd, "hydra.sweeper.report=true", n_trials=2)
    first = run(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    best = load(sd).best_trial
    files = {p: p.stat().st_mtime_ns for p in sd.rglob("*") if p.is_file()}

    started = time.monotonic()
    again = run(args, tmp_path)
    took = time.monotonic() - started
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines() == [
        f"ftsweep: sweep t: 2 of n_trials=2 trials done (best trial {best.number}: value={best.value:.6g}); nothing "
        "to run. To continue the study, raise hydra.sweeper.n_trials (e.g. hydra.sweeper.n_trials=6); "
        f"report: {sd / 'report.md'}"]
    assert {p: p.stat().st_mtime_ns for p in sd.rglob("*") if p.is_file()} == files  # report not rewritten
    assert len(load(sd).trials) == 2
    print(f"finished-study re-run took {took:.1f} s")

    # raising n_trials continues the study: tests/test_no_overwrite.py (same study resumes with n_trials=3)


def test_a_finished_study_without_its_report_says_how_to_write_it(tmp_path):
    """A sweep killed after its last trial, before its report: the re-run said the study was done and named no
    report, nor how to get one."""
    sd = tmp_path / "s"
    args = sweep_args(sd, n_trials=2)  # (report=false: as if killed before writing it)
    assert run(args, tmp_path).returncode == 0
    assert not (sd / "report.md").exists()
    again = run(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[-1].endswith(f"; no report yet: ftsweep report {sd}")

    # the same finished study with another search space: refused as a resume would be (it said "nothing to run,
    # raise n_trials", and raising n_trials was then refused for the space)
    other = [a.replace("interval(1e-4, 1e-2)", "interval(1e-5, 1e-1)") for a in args]
    assert other != args
    changed = run(other, tmp_path)
    assert changed.returncode == 2, changed.stdout + changed.stderr[-2000:]
    assert "has a different search space (differs in: optimizer.lr)" in changed.stderr
    assert "nothing to run" not in changed.stdout + changed.stderr
