"""The sweep progress display (rich and plain) and import hygiene of the plugin."""

from __future__ import annotations

import io
import subprocess
import sys

from ftsweep.sweeper.progress import Progress
from ftsweep.sweeper.study import Counts


def test_rich_progress_shows_counts_and_best():
    buf = io.StringIO()
    with Progress("demo", 8, mode="rich", stream=buf) as p:
        p.started_trial(3, {"optimizer.lr": 1e-3})
        p.update(Counts(complete=2, pruned=1, failed=1, running=1), 4.5, 2)
        assert p.status_line().startswith("4/8 done | running 1 | complete 2 | pruned 1 | failed 1 | best 4.5 (trial 2)")
        p.finished_trial(3, "PRUNED", None)
    assert "trial 3 started" in buf.getvalue() and "trial 3 PRUNED" in buf.getvalue()


def test_plain_progress_lines():
    buf = io.StringIO()
    p = Progress("demo", 2, mode="auto", stream=buf)  # StringIO is no TTY -> plain
    with p:
        p.finished_trial(0, "FAIL", None, "oom: CUDA out of memory")
    assert buf.getvalue().startswith("[sweep demo] trial 0 FAIL in ") and "reason=oom" in buf.getvalue()


def test_cfg_job_does_not_import_optuna_or_torch():
    code = ("import sys; from ftsweep.cli import main; main(['train', 'sweep=quickstart', '--cfg', 'job']); "
            "print('HEAVY', sorted(m for m in ('optuna', 'torch', 'peft', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]


def test_rich_panel_ticks_between_events(monkeypatch):
    """The live panel's "running for" column and elapsed seconds were drawn once per event: between two trial
    events (a whole trial, hours on a GPU) the panel's auto-refresh redrew 'running for 0 s'."""
    import time

    from rich.console import Console

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    with Progress("demo", 2, mode="rich", stream=buf) as p:
        p.started_trial(0, {"optimizer.lr": 1e-3})
        clock[0] += 75.0
        console = Console(file=io.StringIO(), width=120)
        console.print(p._live.get_renderable())  # what the next auto-refresh draws
        text = console.file.getvalue()
    assert "75 s" in text and "| 75 s" in text, text
