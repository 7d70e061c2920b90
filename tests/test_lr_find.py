"""The learning-rate range test (``ftsweep lr-find``) and ``hydra.sweeper.lr_find=true``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import FAST
from sweep_helpers import load, run, sweep_args

from ftsweep.lr_find import find_lr, lr_at, suggest
from ftsweep.sweeper.lr_find import seed_from_lr_find


def test_lr_ramp_is_exponential_from_min_to_max():
    assert lr_at(1, 1e-5, 1e-1, 5) == 1e-5
    assert math.isclose(lr_at(3, 1e-5, 1e-1, 5), 1e-3)
    assert math.isclose(lr_at(5, 1e-5, 1e-1, 5), 1e-1)


def test_suggestion_is_the_steepest_descent_after_the_skipped_points():
    lrs = [10 ** (-6 + i / 4) for i in range(20)]
    # flat, then a steep fall, then a slower fall
    smoothed = [5.0] * 12 + [4.0, 2.0, 1.8, 1.7, 1.65, 1.6, 1.58, 1.57]
    # numpy.gradient at i is (y[i+1] - y[i-1]) / 2: -1.5 at point 12 (5.0 -> 2.0), -1.1 at 13
    assert suggest(lrs, smoothed, skip_begin=10, skip_end=1) == lrs[12]
    # skipping 13 points: one-sided -0.2 at 13, then -0.15 at 14
    assert suggest(lrs, smoothed, skip_begin=13, skip_end=1) == lrs[13]


def test_range_test_on_the_tiny_model_is_reproducible_and_inside_the_range(compose, tmp_path):
    cfg = compose(*FAST, "trainer.max_steps=12")
    a = find_lr(cfg, tmp_path / "a", min_lr=1e-5, max_lr=1e-1, steps=12, skip_begin=2)
    b = find_lr(cfg, tmp_path / "b", min_lr=1e-5, max_lr=1e-1, steps=12, skip_begin=2)
    assert (tmp_path / "a" / "lr_find.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "a" / "lr_find.json").read_text())
    assert saved["suggestion"] == a["suggestion"] and saved["losses"] == a["losses"]
    assert len(a["lrs"]) == 12 and a["lrs"][0] == 1e-5 and math.isclose(a["lrs"][-1], 1e-1)
    assert 1e-5 <= a["suggestion"] <= 1e-1 and a["suggestion"] in a["lrs"]
    assert a["losses"] == b["losses"] and a["suggestion"] == b["suggestion"]  # same seed, same curve
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["lr_find.json", "lr_find.png"]  # work folder gone


def test_range_test_stops_at_a_nan_loss_and_suggests_from_the_finite_points(compose, tmp_path, nan_loss_from):
    """Where the loss turns NaN the curve ends (on an H200 the 1B shape diverged at lr 0.5 and, logged as 0.0,
    the "steepest descent" was the divergence itself)."""
    nan_loss_from(9)
    result = find_lr(compose(*FAST), tmp_path / "lf", min_lr=1e-5, max_lr=1e-1, steps=12, skip_begin=2)
    assert result["stopped"] == "loss nan at step 9"
    assert len(result["lrs"]) == len(result["losses"]) == 8 and all(math.isfinite(x) for x in result["losses"])
    assert result["suggestion"] in result["lrs"]


def test_a_test_that_diverges_at_once_suggests_nothing_and_leaves_nothing(compose, tmp_path, nan_loss_from):
    from ftsweep.errors import UsageError

    nan_loss_from(4)  # 3 finite points: their "steepest descent" would be noise
    with pytest.raises(UsageError, match=r"^lr-find: the loss diverged after 3 step\(s\) \(loss nan at step 4\), too "
                                         r"few points for a suggestion \(at least 5\): lower the top of the range"):
        find_lr(compose(*FAST), tmp_path / "lf" / "out", min_lr=1e-5, max_lr=1e-1, steps=12, skip_begin=2)
    assert not (tmp_path / "lf").exists()


def test_lr_find_never_overwrites_an_earlier_result_nor_a_folder_of_the_users(tmp_path, capsys, monkeypatch):
    """``--out`` holding an earlier test's result is refused before any training (exit 2, the file unchanged);
    the test's own work folder is a new one inside ``--out``, so a user's ``run/`` there is left alone; the
    default folder never reuses one that exists."""
    from ftsweep.cli import main
    from ftsweep.lr_find import find_lr as real_find_lr
    from ftsweep.lr_find import output_folder

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "lr_find.json").write_text('{"suggestion": 0.001}')
    monkeypatch.setattr("ftsweep.lr_find.find_lr", lambda *a, **k: pytest.fail("trained before refusing"))
    assert main(["lr-find", *FAST, "--out", str(earlier)]) == 2
    assert capsys.readouterr().err == (f"ftsweep: error: --out {earlier}: already holds lr_find.json of an earlier "
                                       "range test (nothing is overwritten): give a new folder\n")
    assert (earlier / "lr_find.json").read_text() == '{"suggestion": 0.001}'

    mine = tmp_path / "mine"
    (mine / "run").mkdir(parents=True)
    (mine / "run" / "keep.txt").write_text("mine")
    monkeypatch.setattr("ftsweep.lr_find.find_lr", real_find_lr)
    assert main(["lr-find", *FAST, "trainer.max_steps=12", "--skip-begin", "1", "--out", str(mine)]) == 0
    assert (mine / "run" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in mine.iterdir()) == ["lr_find.json", "lr_find.png", "run"]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ftsweep.lr_find.time.strftime", lambda fmt: "2026-12-06_01-02-03")
    (tmp_path / "outputs/lr_find/2026-12-06_01-02-03").mkdir(parents=True)
    assert output_folder(None) == Path("outputs/lr_find/2026-12-06_01-02-03_2")


def test_lr_find_rejects_bad_ranges_in_one_line(capsys):
    from ftsweep.cli import main

    assert main(["lr-find", "--min-lr", "1e-2", "--max-lr", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--min-lr/--max-lr" in err
    assert main(["lr-find", "--max-lr", "inf"]) == 2
    assert capsys.readouterr().err == "ftsweep: error: --min-lr/--max-lr: need finite numbers (got 1e-06, inf)\n"
    # too short to compare 10 points: the "suggestion" would be the schedule's lr at a fixed step (12 steps
    # with 10 + 1 skipped: one point), whatever the loss did; refused before anything is built or written
    assert main(["lr-find", "--steps", "12", "--skip-begin", "10", "--out", "nope"]) == 2
    assert capsys.readouterr().err == ("ftsweep: error: --steps: 12 steps leave 1 point(s) after --skip-begin 10 and "
                                       "--skip-end 1; the rule compares at least 10 (give --steps 21 or more; "
                                       "Lightning runs 100)\n")
    assert main(["lr-find", "trainer.max_steps=8", "--out", "nope"]) == 2
    assert capsys.readouterr().err.startswith("ftsweep: error: trainer.max_steps (the test's length without --steps): "
                                              "8 steps leave 7 point(s) after --skip-begin 0")
    assert not Path("nope").exists()


def test_sweep_seed_narrows_the_lr_range_and_enqueues_the_suggestion(tmp_path):
    calls = []

    def fake(fixed, low, high, out):
        calls.append((fixed, low, high))
        out.mkdir(parents=True)
        doc = {"suggestion": 3e-3}
        (out / "lr_find.json").write_text(json.dumps(doc))
        return doc

    params = {"optimizer.lr": "tag(log, interval(1e-5, 1e-1))", "lora": "choice(r8, r16)"}
    new, first, _ = seed_from_lr_find(["model=tiny"], params, tmp_path, 10.0, run=fake)
    assert calls == [(["model=tiny"], 1e-5, 1e-1)]
    assert new == {"optimizer.lr": "tag(log, interval(0.0003, 0.03))", "lora": "choice(r8, r16)"}
    assert first == [{"optimizer.lr": 3e-3}]
    # clipped to the sweep's own range; a resume reuses the saved result (no second range test)
    new, first, _ = seed_from_lr_find([], {"optimizer.lr": "tag(log, interval(1e-3, 1e-1))"}, tmp_path, 10.0, run=fake)
    assert len(calls) == 1 and new["optimizer.lr"] == "tag(log, interval(0.001, 0.03))"
    # a grid of learning rates stays a grid; trial 0 gets the nearest choice
    new, first, _ = seed_from_lr_find([], {"optimizer.lr": "choice(1e-4, 1e-3, 1e-2)"}, tmp_path, 10.0, run=fake)
    assert new == {"optimizer.lr": "choice(1e-4, 1e-3, 1e-2)"} and first == [{"optimizer.lr": 1e-3}]


@pytest.mark.slow
def test_sweep_with_lr_find_runs_the_suggestion_as_trial_0(tmp_path, cache_dir):
    """The real range test of a sweep over the proxy task (40 steps over the sweep's 1e-4..1e-2, seeded: the loss
    falls, 12% over the compared points, so the suggestion is reliable) becomes trial 0 and the centre of the narrowed range (the flat-curve
    case: test_a_range_capped_low_warns_that_the_suggestion_is_noise and the fake-result test below)."""
    sweep_dir = tmp_path / "sw"
    args = sweep_args(sweep_dir, "data=proxy_tasks", "trainer.max_steps=40", "trainer.eval_steps=20",
                      f"cache_dir={cache_dir}", "hydra.sweeper.lr_find=true", n_trials=2)
    proc = run(args, tmp_path, fake=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "{'loss'" not in proc.stderr and "lr_find: trial 0 at optimizer.lr=" in proc.stderr  # no per-step dump
    assert "warning" not in proc.stderr, proc.stderr[-2000:]
    result = json.loads((sweep_dir / "lr_find" / "lr_find.json").read_text())
    assert result["min_lr"] == 1e-4 and result["max_lr"] == 1e-2 and result["steps"] == 40
    assert result["warning"] is None
    trials = load(sweep_dir).get_trials(deepcopy=False)
    assert trials[0].user_attrs.get("enqueued") is True
    assert trials[0].params["optimizer.lr"] == pytest.approx(result["suggestion"])
    dist = trials[1].distributions["optimizer.lr"]
    assert dist.log and dist.low >= 1e-4 and dist.high <= 1e-2
    assert dist.low == pytest.approx(max(1e-4, result["suggestion"] / 10), rel=1e-3)


def test_range_test_prints_a_few_progress_lines_not_every_logged_step(compose, tmp_path, capsys):
    """The test logs every step (it records each loss): transformers' printer echoed each logged dict, 60 lines
    for sweep=quickstart's range test (and as many on a sweep's console with lr_find=true)."""
    find_lr(compose(*FAST), tmp_path / "a", min_lr=1e-5, max_lr=1e-1, steps=12, skip_begin=2)
    out = capsys.readouterr().out
    assert "{'loss'" not in out and "'train_runtime'" not in out
    progress = [ln for ln in out.splitlines() if ln.startswith("lr-find: step ")]
    assert 1 <= len(progress) <= 12 and progress[-1].startswith("lr-find: step 12/12: lr 0.1, loss ")


def test_sweep_seed_says_what_it_runs_and_what_it_found_in_a_few_lines(tmp_path, capsys):
    """A sweep with lr_find=true showed the range test's whole console output (every logged step) and nothing
    when it reused the saved result; now a line before the test, its result, and the narrowed range."""
    doc = {"suggestion": 3e-3, "lrs": [1e-5, 1e-3, 1e-1], "stopped": None, "rule": "steepest descent (...)"}

    def fake(fixed, low, high, out):
        print("{'loss': '6.6', 'learning_rate': '1e-05'}")  # what the child printed (it is not shown)
        out.mkdir(parents=True)
        (out / "lr_find.json").write_text(json.dumps(doc))
        return doc

    params = {"optimizer.lr": "tag(log, interval(1e-5, 1e-1))"}
    seed_from_lr_find([], params, tmp_path, 10.0, run=fake, label="[sweep s]")
    err = capsys.readouterr().err.splitlines()
    assert err == [f"[sweep s] lr_find: running the learning-rate range test over optimizer.lr 1e-05..0.1 first "
                   f"(into {tmp_path / 'lr_find'})",
                   f"[sweep s] lr_find: 3 steps from 1e-05 to 0.1: suggested lr 0.003 [steepest descent (...)]; "
                   f"curve: {tmp_path / 'lr_find' / 'lr_find.png'}",
                   "[sweep s] lr_find: trial 0 at optimizer.lr=0.003; optimizer.lr searched over "
                   "tag(log, interval(0.0003, 0.03))"]
    seed_from_lr_find([], params, tmp_path, 10.0, run=fake, label="[sweep s]")  # resumed: the saved result
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"[sweep s] lr_find: reusing {tmp_path / 'lr_find' / 'lr_find.json'}: 3 steps from 1e-05 to "
                      f"0.1: suggested lr 0.003 [steepest descent (...)]; curve: {tmp_path / 'lr_find' / 'lr_find.png'}")
    assert len(err) == 2


def test_a_flat_curve_or_a_steepest_point_at_the_edge_is_no_reliable_suggestion():
    """Lightning's rule picks the steepest point of any curve; where the loss hardly fell, or fell fastest at the
    edge of the range, that point says nothing: ``unreliable`` says why and what to do."""
    from ftsweep.lr_find import unreliable

    lrs = [10 ** (-6 + i / 5) for i in range(20)]
    falls = [5.0] * 8 + [4.5, 3.5, 2.5, 2.0, 1.9, 1.85, 1.8, 1.8, 2.0, 2.5, 3.5, 5.0]
    assert unreliable(lrs, falls, 2, 1) is None  # a fall, a valley, the turn up
    flat = [4.30, 4.32, 4.29, 4.31, 4.33, 4.30, 4.28, 4.31, 4.32, 4.30] * 2  # noise only
    why = unreliable(lrs[:20], flat, 2, 1)
    assert why.startswith("the smoothed loss fell only ") and "(less than 5%): the curve is flat there and its " \
        "steepest point is noise; widen the range up (a higher --max-lr, e.g. 1)" in why
    assert "widen the range down" in unreliable(lrs, flat, 2, 1, stopped=True)  # it diverged without a fall
    still_falling = [5.0 - 0.01 * i * i for i in range(20)]  # fastest at the top of the range
    assert unreliable(lrs, still_falling, 2, 1).startswith(
        f"the loss fell fastest at the top of the range (lr {lrs[18]:.3g}) and never turned up")
    from_the_start = [5.0 - 3 * (1 - 0.8 ** i) for i in range(20)]  # fastest at the bottom
    assert unreliable(lrs, from_the_start, 2, 1).startswith(
        f"the loss fell fastest at the bottom of the range (lr {lrs[2]:.3g})")


def test_a_range_capped_low_warns_that_the_suggestion_is_noise(cache_dir, tmp_path, capsys):
    """``ftsweep lr-find --max-lr 1e-4`` on the tiny model: the loss only wanders (seeded: the same curve each time),
    and the printed suggestion came without a word. Now one warning line says so and what to do."""
    from ftsweep.cli import main

    out = tmp_path / "lf"
    assert main(["lr-find", *FAST, f"cache_dir={cache_dir}", "logger=none", "--min-lr", "1e-6",
                 "--max-lr", "1e-4", "--steps", "21", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    warning = [ln for ln in printed.err.splitlines() if ln.startswith("ftsweep: lr-find: warning: ")]
    assert len(warning) == 1 and "the curve is flat there and its steepest point is noise; widen the range up " \
        "(a higher --max-lr, e.g. 1)" in warning[0], printed.err[-2000:]
    saved = json.loads((out / "lr_find.json").read_text())
    assert saved["warning"] == warning[0].removeprefix("ftsweep: lr-find: warning: ")
    # the suggestion line itself says it is not to be trusted (it printed a bare "suggested lr: 1.2e-05")
    (line,) = [ln for ln in printed.out.splitlines() if ln.startswith("suggested lr: ")]
    assert line.startswith(f"suggested lr: {saved['suggestion']:.3g} (not reliable: see the warning)  ["), line


def test_a_sweep_keeps_its_own_range_when_the_test_gives_no_reliable_suggestion(tmp_path, capsys):
    doc = {"suggestion": 6.2e-5, "lrs": [1e-6, 1e-5, 1e-4], "stopped": None, "rule": "steepest descent (...)",
           "warning": "the smoothed loss fell only 0.04% over lr 4.89e-06..8.53e-05 (...)"}

    def fake(fixed, low, high, out):
        out.mkdir(parents=True)
        (out / "lr_find.json").write_text(json.dumps(doc))
        return doc

    params = {"optimizer.lr": "tag(log, interval(1e-6, 1e-4))", "lora": "choice(r8, r16)"}
    new, first, _ = seed_from_lr_find([], params, tmp_path, 10.0, run=fake, label="[sweep s]")
    assert new == params and first == []
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == ("[sweep s] lr_find: warning: no reliable suggestion: the smoothed loss fell only 0.04% over lr "
                       "4.89e-06..8.53e-05 (...); the sweep goes on without it: no trial 0 at the suggestion, "
                       "optimizer.lr keeps its own range tag(log, interval(1e-6, 1e-4))")
    new, first, _ = seed_from_lr_find([], {}, tmp_path, 10.0, run=fake, label="[sweep s]")  # lr not searched
    assert new == {} and first == []
    assert capsys.readouterr().err.splitlines()[-1].endswith("optimizer.lr stays as configured (not searched)")


def test_a_choice_only_space_without_a_reliable_suggestion_runs_each_point_once(tmp_path):
    """No reliable suggestion: the sweep "runs as without lr_find", and without it a space of choices that fits in
    n_trials runs as a grid, each point once. It ran the configured sampler instead: TPE proposed lr 1e-2 twice
    (a repeat) and never tried 1e-4."""
    sweep_dir = tmp_path / "sw"
    (sweep_dir / "lr_find").mkdir(parents=True)
    (sweep_dir / "lr_find" / "lr_find.json").write_text(json.dumps(  # a saved test is reused: no training here
        {"suggestion": 3.5e-4, "lrs": [1e-4, 1e-3, 1e-2], "warning": "the smoothed loss fell only 4.19% (...)"}))
    args = [a if not a.startswith("optimizer.lr=") else "optimizer.lr=choice(1e-4, 1e-3, 1e-2)"
            for a in sweep_args(sweep_dir, "hydra.sweeper.lr_find=true", "hydra.sweeper.sampler.seed=0", n_trials=3)]
    proc = run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "running each once (sampler grid instead of tpe)" in proc.stderr, proc.stderr[-2000:]
    trials = load(sweep_dir).get_trials(deepcopy=False)
    assert sorted(t.params["optimizer.lr"] for t in trials) == [1e-4, 1e-3, 1e-2]
    assert not any(t.user_attrs.get("repeat_of") is not None for t in trials)
