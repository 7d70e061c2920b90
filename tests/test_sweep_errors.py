"""Bad sweep input fails before any trial runs, with one line, and leaves an existing study untouched."""

from __future__ import annotations

import subprocess

import pytest
from sweep_helpers import FAKE_CMD, load, run, sweep_args

from ftsweep.cli import main


def _in_process(args: list[str], cwd, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``args`` (``python -m ftsweep train -m ...``) through the same ``ftsweep.cli.main`` in this process, as
    tests/test_bad_input.py runs its cases: a process per case only paid the imports again. A sweep's bad input,
    found by the sweeper inside Hydra, ends in SystemExit(2) here; a case that wrongly passes runs fake trials."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FTSWEEP_TRIAL_CMD", FAKE_CMD)
    capsys.readouterr()
    try:
        code = main(args[3:])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("ftsweep: error: "), r.stderr
    return lines[0]


BAD_INPUT = [
    ("optimizer.lrr=interval(1e-5,1e-3)", "optimizer.lrr: unknown key"),
    ("optimizer.lr=interval(1e-3,1e-5)", "optimizer.lr: empty interval"),
    ("optimizer.lr=tag(log,interval(0,1e-3))", "log interval needs bounds > 0"),
    ("lora=choice(r8,r99)", "no such option 'r99' in config group lora"),
    ("lora.r=choice(0,8)", "lora.r: must be >= 1"),
    # a bad value between a choice's first and last (which the lowest and highest trial configs hold) failed each
    # trial that drew it, and those failures counted towards n_trials
    ("lora.r=choice(8,0,16)", "lora.r: must be >= 1 (got 0)"),
    ("hydra.sweeper.storage=sqlite:////proc/no/such/study.db", "hydra.sweeper.storage: cannot open sqlite:////proc/no/such/study.db"),
    ("hydra.sweeper.sampler.name=nope", "sampler.name: got 'nope'"),
    ("hydra.sweeper.pruner.name=nope", "pruner.name: got 'nope'"),
    ("hydra.sweeper.sampler.n_startup_trials=-1", "hydra.sweeper.sampler.n_startup_trials: must be >= 0 (got -1)"),
    ("hydra.sweeper.pruner.n_startup_trials=-2", "hydra.sweeper.pruner"),
    ("hydra.sweeper.grace_period_s=-1", ("hydra.sweeper.grace_period_s: must be at least heartbeat_interval_s (1 s), "
                                        "or running trials look stale (got -1.0)")),
    ("hydra.sweeper.heartbeat_interval_s=0", "hydra.sweeper.heartbeat_interval_s: must be > 0 (got 0.0)"),
    ("hydra.sweeper.trials_per_gpu=0", "hydra.sweeper.trials_per_gpu: must be > 0 (got 0)"),
    ("hydra.sweeper.gpus_per_trial=0", "hydra.sweeper.gpus_per_trial: must be > 0 (got 0)"),
    ("hydra.sweeper.baseline_lr_factor=0.5", "hydra.sweeper.baseline_lr_factor: must be > 1"),
    ("hydra.sweeper.lr_find_factor=1", "hydra.sweeper.lr_find_factor: must be > 1"),
    ("hydra.sweeper.submitit.timeout_min=-1", "hydra.sweeper.submitit.timeout_min: must be >= 0 minutes"),
    ("hydra.sweeper.dashboard_port=70000", "hydra.sweeper.dashboard_port: must be 1 to 65535, or 0 for a free port"),
    ("hydra.sweeper.progress=fancy", "hydra.sweeper.progress: got 'fancy'; allowed: auto, rich, plain"),
    ("+hydra.sweeper.sampler.options.frobnicate=1", "hydra.sweeper.sampler.options.frobnicate: not an option"),
    ("hydra.sweeper.n_trial=3", ("hydra.sweeper.n_trial: unknown key; allowed keys: study_name, storage, sweep_dir, "
                                "n_trials,")),
    ("hydra.sweeper.n_trial=3", "; did you mean hydra.sweeper.n_trials?"),
    ("hydra.sweeper.seed=3", "; did you mean hydra.sweeper.sampler.seed?"),  # the sweeper's keys, not the run's
    # a Hydra Optuna user's direction=maximize for an accuracy-like score, while the metric is still eval_loss: the
    # sweep maximized the loss, its "best" trial the worst-trained one, and the pruner stopped the good ones
    ("hydra.sweeper.direction=maximize", ("hydra.sweeper.direction: maximize for eval_loss, which is better lower: "
                                          "the best trial would be the worst;")),
    ("objective.direction=maximize", "objective.direction: maximize for eval_loss, which is better lower"),
]


@pytest.mark.parametrize(("override", "message"), BAD_INPUT)
def test_bad_input_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys, override, message):
    """The first case through the real ``ftsweep`` process (its exit code and stderr), the others in-process."""
    sd = tmp_path / "s"
    if (override, message) == BAD_INPUT[0]:
        r = run([*sweep_args(sd), override], tmp_path)
    else:
        r = _in_process([*sweep_args(sd), override], tmp_path, monkeypatch, capsys)
    assert message in _error_line(r)
    assert not list(sd.glob("trial_*"))


def test_changed_search_space_leaves_the_study_untouched(tmp_path, monkeypatch, capsys):
    """The study of a finished sweep (one trial is a study) is refused, unchanged, for another search space; the
    second sweep in-process."""
    sd = tmp_path / "s"
    first = run(sweep_args(sd, n_trials=1), tmp_path)
    assert first.returncode == 0, first.stderr
    before = [(t.number, t.state, t.params, t.value) for t in load(sd).trials]
    assert len(before) == 1 and before[0][1].name == "COMPLETE"
    db = (sd / "study.db").read_bytes()
    r = _in_process([*sweep_args(sd, n_trials=4), "lora.r=choice(8,16)"], tmp_path, monkeypatch, capsys)
    assert "has a different search space (differs in: lora.r)" in _error_line(r)
    # the way out it names works: another study_name alone is refused in this folder (it holds the first study)
    assert "use a new folder (hydra.sweep.dir=<new>" in _error_line(r)
    assert [(t.number, t.state, t.params, t.value) for t in load(sd).trials] == before
    assert (sd / "study.db").read_bytes() == db


def test_a_multirun_with_nothing_to_search_says_how_to_train_one_config(tmp_path, monkeypatch, capsys):
    """``ftsweep train -m trainer.max_steps=5`` (no override lists values, no sweep= chosen): one line that says
    how to search and how to train the one config instead (in-process)."""
    sd = tmp_path / "s"
    args = [a for a in sweep_args(sd) if not a.startswith("optimizer.lr=")]
    line = _error_line(_in_process([*args, "trainer.max_steps=5"], tmp_path, monkeypatch, capsys))
    assert line == ("ftsweep: error: nothing to search: no override lists values (e.g. optimizer.lr=1e-4,1e-3) and "
                    "hydra.sweeper.params is empty: use sweep=<name> (see sweep/), or drop -m to train this one config")
    assert not sd.exists() or not list(sd.glob("trial_*"))


def test_a_dashboard_port_in_use_is_one_line_before_any_trial(tmp_path):
    """``hydra.sweeper.dashboard=true dashboard_port=N`` with N taken: the dashboard beside the sweep could not
    listen (its error only in dashboard.log) while the sweep printed N's URL as live, where another program (or
    another study's dashboard) answers. Refused in one line before anything is written."""
    import socket

    sd = tmp_path / "s"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run([*sweep_args(sd), "hydra.sweeper.dashboard=true", f"hydra.sweeper.dashboard_port={port}"], tmp_path)
    assert _error_line(r).startswith(f"ftsweep: error: hydra.sweeper.dashboard_port: cannot listen on 127.0.0.1:{port}")
    assert "dashboard:" not in r.stdout and not sd.exists()


def test_a_score_minimized_is_told_to_choose_a_loss_not_the_score_it_has(tmp_path, monkeypatch, capsys):
    """`objective=exact_match hydra.sweeper.direction=minimize`: the refusal said to choose the metric to minimize
    '(objective=exact_match, ...)', the objective it already had (the hint of the opposite case, a loss maximized)."""
    sd = tmp_path / "s"
    line = _error_line(_in_process([*sweep_args(sd), "objective=exact_match", "hydra.sweeper.direction=minimize"],
                                   tmp_path, monkeypatch, capsys))
    assert line.startswith("ftsweep: error: hydra.sweeper.direction: minimize for exact_match, which is better higher: "
                           "the best trial would be the worst; drop it (exact_match is maximized by default)"), line
    assert line.endswith("or choose the metric to minimize (objective=eval_loss, hydra.sweeper.metric=<metric>)"), line
