"""The hand-over of a trial to a warm worker (ftsweep.sweeper.process.WarmBackend) when the worker dies between
trials: after answering ``done 0`` for its last trial, before taking the next (e.g. killed for memory while it
frees the last trial). Fake workers: no model, no ftsweep trial; only the worker protocol."""

from __future__ import annotations

import sys
import textwrap
import time

FAKE_WORKER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    spawns = Path(sys.argv[1])
    nth = len(spawns.read_text().splitlines()) if spawns.exists() else 0
    with spawns.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    out = os.fdopen(os.dup(1), "w", buffering=1)
    for i, line in enumerate(sys.stdin):
        if nth == 0 and i == 1:
            os._exit(137)  # the first worker dies with the second trial unread in its pipe
        out.write("start\\n")
        out.write("done 0\\n")
""")


def _wait(proc, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        exit_ = proc.poll()
        if exit_ is not None:
            return exit_
        proc.backend.wait(0.05)
    raise AssertionError("the trial did not end")


def test_a_trial_sent_to_a_worker_that_died_between_trials_runs_on_a_fresh_one(tmp_path, monkeypatch):
    from ftsweep.sweeper import process

    fake, spawns = tmp_path / "fake_worker.py", tmp_path / "spawns.txt"
    fake.write_text(FAKE_WORKER)
    monkeypatch.setattr(process, "WORKER_COMMAND", [sys.executable, str(fake), str(spawns)])
    backend = process.WarmBackend(tmp_path, prefix_len=0)
    env = {"FTSWEEP_TRIAL_NUMBER": "0"}
    first = backend.start(["trial-0"], env, tmp_path / "trial_0", 0)
    assert _wait(first).code == 0
    second = backend.start(["trial-1"], env, tmp_path / "trial_1", 1)  # to the idle (still living) first worker
    assert second.worker is first.worker
    assert _wait(second).code == 0  # not the dead worker's 137: the trial had not begun
    pids = spawns.read_text().split()
    assert len(pids) == 2 and second.worker.proc.pid == int(pids[1])
    for w in backend.idle:
        w.stop(idle=True)
