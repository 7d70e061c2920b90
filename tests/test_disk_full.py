"""The disk filling up (or the study's folder turning read-only) under a running sweep: one ``ftsweep:`` line that
says what could not be written and how to go on, exit 1, the trials recorded before it kept; the same command
resumes once there is room again."""

from __future__ import annotations

import sqlite3

from sweep_helpers import load, sweep_args
from test_sweep_errors import _in_process


def _disk_full() -> Exception:
    """What optuna's SQLite storage raises when a write finds the disk full."""
    import optuna
    import sqlalchemy.exc

    cause = sqlite3.OperationalError("database or disk is full")
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO trial_user_attributes ...", {}, cause)
    wrapped.__cause__ = cause
    err = optuna.exceptions.StorageInternalError("An exception is raised during the commit. This typically happens "
                                                 "due to invalid data in the commit, e.g. exceeding max length.")
    err.__cause__ = wrapped
    return err


def test_a_full_disk_under_a_sweep_is_one_line_and_the_study_resumes(tmp_path, monkeypatch, capsys):
    from ftsweep.sweeper import attrs

    sd = tmp_path / "sw"
    real = attrs.set_attrs

    def set_attrs(trial, **values):  # the disk fills while trial 1's outcome is recorded
        if trial.number == 1 and "status" in values:
            raise _disk_full()
        return real(trial, **values)

    monkeypatch.setattr(attrs, "set_attrs", set_attrs)
    r = _in_process(sweep_args(sd, n_trials=2), tmp_path, monkeypatch, capsys)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("ftsweep: "), r.stderr
    assert "database or disk is full" in lines[0] and str(sd / "study.db") in lines[0], lines[0]
    assert "run the same command again" in lines[0], lines[0]
    assert load(sd).trials[0].state.name == "COMPLETE"  # what was recorded before stays

    monkeypatch.setattr(attrs, "set_attrs", real)  # room again: the same command finishes the study
    # (this process, which held trial 1, is still alive: its heartbeat goes stale after grace_period_s)
    r = _in_process(sweep_args(sd, "hydra.sweeper.grace_period_s=1", n_trials=2), tmp_path, monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    study = load(sd)
    assert study.trials[0].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2


class _FullDisk:
    """A log file's stream on a disk that filled up: every write fails with ENOSPC."""

    def write(self, text: str) -> int:
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass


def _log_to_a_full_disk(argv: list[str]) -> int:
    """A command whose log file sits on a full disk, as train.log and W&B's debug.log did when the disk filled during
    a run: each record printed a '--- Logging error ---' traceback (740 stderr lines in a 4-step run)."""
    import logging

    logger = logging.getLogger("ftsweep.test_disk_full")
    handler = logging.StreamHandler(_FullDisk())
    handler.baseFilename = "/full/run/train.log"  # type: ignore[attr-defined]  (what a FileHandler has)
    logger.addHandler(handler)
    logger.propagate = False  # (only this handler: others that earlier tests left on "ftsweep" may hold a closed stream)
    try:
        for i in range(5):
            logger.warning("record %d", i)
    finally:
        logger.removeHandler(handler)
    return 0


def test_a_log_file_on_a_full_disk_is_one_warning_line(monkeypatch, capsys):
    from ftsweep import cli

    monkeypatch.setitem(cli.COMMANDS, "report", "test_disk_full:_log_to_a_full_disk")
    capsys.readouterr()
    code = cli.main(["report"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 0, err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert lines == [("ftsweep: warning: cannot write the log /full/run/train.log: No space left on device; its lines "
                      "are lost")]


def test_a_run_that_failed_on_a_full_disk_is_its_one_line():
    """The run's line already says it (``OSError: [Errno 28] No space left on device``, where the run is, the step to
    continue from); the traceback above it (a checkpoint save deep in transformers, then W&B's log handler failing
    as it closed) said nothing more. Other failures keep their traceback (tests/test_errors.py)."""
    import errno
    import io

    from ftsweep import errors

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise errors.RunFailed("OSError: [Errno 28] No space left on device (see out/x)") from cause
    except errors.RunFailed as err:
        out = io.StringIO()
        assert errors.report(err, out) == 1
    assert out.getvalue().splitlines() == ["ftsweep: run failed: OSError: [Errno 28] No space left on device (see out/x)"]


def test_an_adapter_cut_short_by_a_full_disk_is_refused_in_one_line(tmp_path):
    """The disk filled while a run saved its adapter/: adapter_model.safetensors whole, tokenizer.json cut at 48 KiB.
    ``ftsweep merge RUN --allow-failed`` (and generate, publish, init_from) then stopped in a JSONDecodeError traceback
    from the tokenizer; such a folder is refused in one line naming the damaged file, --allow-failed or not."""
    import json

    import pytest

    from ftsweep import rundir
    from ftsweep.errors import UsageError

    run = tmp_path / "run"
    adapter = run / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (adapter / "tokenizer.json").write_text('{"version": "1.0", "model": {"vocab": {"a": 1,')  # cut short
    for allow in (True, False):  # (no metrics.json: the run did not finish)
        with pytest.raises(UsageError, match=r"adapter/tokenizer.json .*JSONDecodeError.*cannot be used"):
            rundir.check_complete(run, adapter, allow)
    (run / "metrics.json").write_text(json.dumps({"status": "complete"}))  # a finished run's adapter damaged since
    with pytest.raises(UsageError, match=r"adapter/tokenizer.json .*JSONDecodeError.*cannot be used"):
        rundir.check_complete(run, adapter, False)
    (adapter / "tokenizer.json").write_text('{"version": "1.0"}')
    rundir.check_complete(run, adapter, False)  # whole again: nothing to say


def test_a_report_rewritten_on_a_full_disk_keeps_the_earlier_one(tmp_path, monkeypatch):
    """The disk filled while a sweep wrote its report: best.yaml was left empty (and summary.json, trials.md,
    report.md could be), replacing the earlier report's, which ``ftsweep train +<sweep>=best`` and ``baseline=`` read.
    A report that cannot be written leaves the earlier files as they were, and no temporary files."""
    import errno
    from pathlib import Path

    import optuna
    import pytest

    from ftsweep import report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 1.0)
    earlier = {name: f"earlier {name}\n" for name in ("summary.json", "trials.md", "best.yaml", "report.md")}
    for name, text in earlier.items():
        (tmp_path / name).write_text(text)
    real = Path.write_text

    def full(self, data, *args, **kwargs):  # the first bytes fit, then the disk is full
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        report.write_report(study, tmp_path)
    monkeypatch.setattr(Path, "write_text", real)
    assert {name: (tmp_path / name).read_text() for name in earlier} == earlier
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(earlier)


def test_data_gone_at_the_last_trial_says_how_to_go_on(tmp_path):
    """The data file was deleted (or became unreadable) between a sweep's start and its last cold trial: the sweep
    said 'fix the data and run the same command again: the study goes on', but the failed trial had used up
    n_trials, and the same command then refused ('none is left to run'). The line says what will work."""
    from sweep_helpers import run, states

    sd = tmp_path / "s"
    r = run(sweep_args(sd, n_trials=2), tmp_path, FAKE_PLAN={"1": "bad_data"})
    assert r.returncode == 2 and states(load(sd)) == {0: "COMPLETE", 1: "FAIL"}, r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert "run the same command again" not in line, line
    assert line.endswith("every trial reads these rows, so no new trials started (fix the data, then raise "
                         "hydra.sweeper.n_trials, e.g. hydra.sweeper.n_trials=6: failed trials count towards "
                         "n_trials=2)"), line


def test_a_trial_that_read_changed_data_is_flagged(tmp_path):
    """The data file was cut short between trial 0 and cold trial 1 (300 of 800 rows): trial 1 trained on 270 and
    was scored on 30 other validation rows, and the sweep compared its value with trial 0's without a word (exit 0)."""
    from sweep_helpers import run

    sd = tmp_path / "s"
    r = run(sweep_args(sd, n_trials=3), tmp_path, FAKE_DATA_FP={"0": "aaa", "1": "bbb", "2": "aaa"})
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert ("warning: data changed: trial 1 read other rows than trial 0 (data fingerprint bbb, was aaa: the data file "
            "was edited, replaced or cut short during the study") in out, out
    assert "trial 2 read other rows" not in out and "trial 0 read other rows" not in out
    trials = load(sd).trials
    assert [("ftsweep:data_changed" in t.user_attrs) for t in trials] == [False, True, False]


def test_plots_after_a_full_disk_write_plotly_again_and_a_full_disk_is_not_a_skipped_plot(tmp_path, monkeypatch):
    """plots/plotly.min.js cut at 48 KiB by a full disk was kept for good (plotly writes it only when it is missing):
    every later report's HTML plots stayed blank. And a plot that hit the full disk was listed as 'skipped', its
    0-byte PNG in place of the earlier one, the report going on as if nothing happened."""
    import errno

    import optuna
    import pytest
    from plotly.offline import get_plotlyjs

    from ftsweep import report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for x in (0.2, 0.5, 0.7):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), x)
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "plotly.min.js").write_text(get_plotlyjs()[:49152])
    status = report.write_plots(study, plots)
    assert status["optimization_history"] == "ok", status
    assert (plots / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()

    import matplotlib.figure

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(OSError, match="No space left"):
        report.write_plots(study, plots)


def test_a_cache_folder_that_cannot_be_made_names_cache_dir(tmp_path, monkeypatch, capsys):
    """FTSWEEP_CACHE_DIR (cache_dir) pointing at a file, or under a read-only HOME: the run stopped with
    'model.name_or_path: cannot load 'ftsweep-tiny-llama': [Errno 20] Not a directory: ...', blaming the model."""
    from ftsweep.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTSWEEP_CACHE_DIR", str(blocker / "cache"))
    code = main(["train", "model=tiny", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == (f"ftsweep: error: cache_dir: {blocker} is a file (on the way to {blocker / 'cache'}); choose "
                   "another cache_dir (set from FTSWEEP_CACHE_DIR)\n"), err
    assert not (tmp_path / "run").exists()


def test_a_write_that_fails_names_the_file_not_its_temp_file(tmp_path, monkeypatch):
    """'ftsweep report' on a read-only sweep folder said 'a write failed (/sweep/summary.json.9418.tmp: Read-only
    file system)': a file the user never sees."""
    import errno
    from pathlib import Path

    import pytest

    from ftsweep import rundir

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)  # (a read-only mount refuses to unlink even a missing file)
    target = tmp_path / "summary.json"
    with pytest.raises(OSError) as err:
        rundir.write_text_atomic(target, "{}")
    assert err.value.errno == errno.EROFS and err.value.filename == str(target)


def test_a_plot_cut_short_by_a_full_disk_keeps_the_earlier_one(tmp_path, monkeypatch):
    """A full disk while a plot was saved left a 0-byte (or half) PNG in place of the earlier one, until the next
    report: the sweep report's plots, a run's loss plots (trainer.plot_loss), lr-find's curve and a trial's
    learning_curve.png. Each is written whole or not at all, as the report's text files are, and no temporary
    file is left."""
    import errno

    import matplotlib.figure
    import optuna
    import pytest

    from ftsweep import loss_plot, lr_find, report
    from ftsweep.sweeper import watch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for x in (0.2, 0.5, 0.7):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), x)
    plots = tmp_path / "plots"
    assert report.write_plots(study, plots)["optimization_history"] == "ok"
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert loss_plot.plot_loss(history, tmp_path, keys=("loss",)) == [tmp_path / "training_loss.png"]
    curve = {"lrs": [1e-5, 1e-4, 1e-3], "losses": [3.0, 2.0, 2.5], "smoothed": [3.0, 2.2, 2.4], "beta": 0.98,
             "suggestion": 1e-4}
    lr_find.plot(curve, tmp_path / "lr_find.png")
    doc = {"eval_history": [{"step": 0, "eval_loss": 2.5}, {"step": 2, "eval_loss": 1.9}]}
    assert watch.write_learning_curve(tmp_path, doc) == tmp_path / "learning_curve.png"
    earlier = {p: p.read_bytes() for p in [*plots.glob("*.png"), *plots.glob("*.html"), tmp_path / "training_loss.png",
                                            tmp_path / "lr_find.png", tmp_path / "learning_curve.png"]}
    files = sorted(p.name for p in tmp_path.rglob("*"))

    def full(self, fname, *args, **kwargs):  # the first bytes fit, then the disk is full
        with open(fname, "wb") as f:
            f.write(b"\x89PNG\r\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(OSError, match="No space left"):
        report.write_plots(study, plots)
    with pytest.raises(OSError, match="No space left"):
        loss_plot.plot_loss(history, tmp_path, keys=("loss",))
    with pytest.raises(OSError, match="No space left"):
        lr_find.plot(curve, tmp_path / "lr_find.png")
    with pytest.raises(OSError, match="No space left"):
        watch.write_learning_curve(tmp_path, doc)
    assert {p: p.read_bytes() for p in earlier} == earlier
    assert sorted(p.name for p in tmp_path.rglob("*")) == files
