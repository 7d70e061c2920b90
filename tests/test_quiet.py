"""Quiet by default: a default one-off run prints ftsweep's own lines and the trainer's progress, no
third-party warnings, bars or W&B chatter; ``-v`` / ``FTSWEEP_VERBOSE=1`` bring them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

from ftsweep import verbosity


def test_default_one_off_run_prints_only_ftsweep_lines_and_progress(tmp_path, cache_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", verbosity.ENV, "PYTHONWARNINGS")}
    env.update({"WANDB_DIR": str(tmp_path), "WANDB_MODE": "offline", "FTSWEEP_CACHE_DIR": str(cache_dir)})
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "ftsweep", "train", "logger=wandb", "data.max_rows=40",
                        "trainer.max_steps=2", "trainer.eval_steps=2", "trainer.logging_steps=2",
                        f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    err = r.stderr.splitlines()
    assert all(line.startswith("ftsweep: ") for line in err), r.stderr  # no warning, bar or wandb: line
    assert any(line.startswith("ftsweep: data cache ") for line in err)
    wandb_lines = [line for line in err if "W&B" in line]
    assert len(wandb_lines) == 1 and wandb_lines[0].startswith(f"ftsweep: W&B offline run: {tmp_path / 'wandb'}")
    assert "trainable parameters" in r.stderr
    out = r.stdout.splitlines()
    # stdout: the trainer's progress (one dict per evaluation / at the end), then ftsweep's result line
    assert all(line.startswith("{'") for line in out[:-1]) and any("'eval_loss'" in line for line in out), r.stdout
    objective = json.loads((run_dir / "metrics.json").read_text())["objective"]
    assert out[-1] == f"ftsweep: complete: eval_loss={objective} -> {run_dir}"
    # Hydra's job log holds the run's console output too (it was empty: ftsweep prints, it does not log)
    log = (run_dir / "train.log").read_text().splitlines()
    assert log[-1] == out[-1] and set(err) <= set(log) and set(out) <= set(log), log


def test_lr_find_prints_only_ftsweep_lines_on_stderr(tmp_path, cache_dir):
    """The range test quiets the libraries before importing them (bitsandbytes logged its CPU-kernel line at
    import, before the filter was set)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", verbosity.ENV, "PYTHONWARNINGS")}
    env.update({"FTSWEEP_CACHE_DIR": str(cache_dir)})
    r = subprocess.run([sys.executable, "-m", "ftsweep", "lr-find", "data.max_rows=40", "trainer.max_steps=12",
                        "--skip-begin", "1", "--out", str(tmp_path / "lr")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(line.startswith("ftsweep: ") for line in r.stderr.splitlines()), r.stderr


def test_verbose_keeps_everything(monkeypatch):
    monkeypatch.setenv(verbosity.ENV, "1")
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    before = list(warnings.filters)
    verbosity.quiet_libraries()
    verbosity.quiet_wandb()
    assert warnings.filters == before and "WANDB_SILENT" not in os.environ


def test_quiet_filters_by_category_and_module_only(monkeypatch):
    monkeypatch.delenv(verbosity.ENV, raising=False)
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))
    verbosity.quiet_libraries()
    ours = [f for f in warnings.filters if f[0] == "ignore" and f[2] is FutureWarning]
    assert ours and all(f[3] is not None and f[3].pattern.startswith("transformers") for f in ours)  # by module
    assert not [f for f in warnings.filters if f[0] == "ignore" and f[2] in (Warning, UserWarning) and f[3] is None
                and f[1] is None]  # no blanket filter


def test_cli_v_sets_verbose_for_the_run_and_its_trials(monkeypatch, capsys):
    from ftsweep import cli

    # setenv records "absent" as what to restore (a delenv after -v recorded "1", which leaked into later tests'
    # sweeps: their trials were verbose)
    monkeypatch.setenv(verbosity.ENV, "")
    assert cli.main(["train", "-v", "--cfg", "job"]) == 0
    assert os.environ[verbosity.ENV] == "1"  # inherited by sweep trials (child processes)


def test_checkpoints_saved_within_a_second_are_ordered_without_a_word(tmp_path, monkeypatch):
    """transformers orders checkpoints by mtime and, finding two saved within a second of each other (a short run;
    tmpfs), said '[transformers] mtime may not be reliable on this filesystem, falling back to numerical ordering'
    on stderr: nothing to act on (the fallback, by step, is the right order). transformers' other lines stay."""
    import logging

    from transformers.trainer_utils import sort_checkpoints

    monkeypatch.delenv(verbosity.ENV, raising=False)
    verbosity.quiet_warnings()
    for step in (10, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    log = logging.getLogger("transformers.trainer_utils")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    try:
        logging.Logger.warning_once.cache_clear()  # (said once a process: an earlier test may have said it)
        ordered = sort_checkpoints(str(tmp_path), use_mtime=True)
        log.warning("another line")
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert ordered == [str(tmp_path / "checkpoint-2"), str(tmp_path / "checkpoint-10")]
    assert [r.getMessage() for r in seen] == ["another line"]
