"""ftsweep report on a synthetic study: summary.json, tables, plots, best.yaml (fast, no training)."""

from __future__ import annotations

import json
import os
import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from ftsweep.report import main, write_report


@pytest.fixture
def study(tmp_path):
    sd = tmp_path / "sweeps" / "demo"
    sd.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(study_name="demo", storage=f"sqlite:///{sd / 'study.db'}")
    s.set_user_attr("ftsweep:metrics", ["eval_loss"])
    dists = {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True), "lora": CategoricalDistribution(["r8", "r16"])}
    for i, (lr, lora, state) in enumerate([(1e-3, "r8", "complete"), (3e-3, "r16", "complete"),
                                          (1e-2, "r8", "pruned"), (1e-4, "r16", "fail"), (2e-3, "r16", "complete")]):
        s.enqueue_trial({"optimizer.lr": lr, "lora": lora})  # the listed params, not random samples
        t = s.ask(dists)
        t.set_user_attr("trial_dir", str(sd / f"trial_{t.number}"))
        t.set_user_attr("overrides", ["sweep=quickstart", "logger=none", f"optimizer.lr={t.params['optimizer.lr']!r}",
                                      f"lora={t.params['lora']}", "cache_dir=/somewhere"])
        for step in (10, 20):
            t.report(4.0 + i * 0.1 - step / 100, step)
        if state == "complete":
            s.tell(t, 3.0 + i * 0.1 if i != 4 else 2.5)
        elif state == "pruned":
            s.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            t.set_user_attr("reason", "oom: CUDA out of memory")
            s.tell(t, state=optuna.trial.TrialState.FAIL)
    return s, sd


def test_write_report(study):
    s, sd = study
    write_report(s, sd)
    summary = json.loads((sd / "summary.json").read_text())
    assert {k: summary[k] for k in ("study_name", "n_trials", "n_complete", "n_pruned", "n_failed", "best_value")} == {
        "study_name": "demo", "n_trials": 5, "n_complete": 3, "n_pruned": 1, "n_failed": 1, "best_value": 2.5}
    assert summary["best_params"] == s.trials[4].params and summary["best_trial_dir"] == str(sd / "trial_4")
    table = (sd / "trials.md").read_text()
    assert "| 3 | FAIL |" in table and "oom: CUDA out of memory" in table
    for name in ("optimization_history", "parallel_coordinate", "intermediate_values"):
        assert (sd / "plots" / f"{name}.png").stat().st_size > 1000
        assert (sd / "plots" / f"{name}.html").is_file()
    assert "![optimization_history]" in (sd / "report.md").read_text()
    # 3 complete trials: no importances (a forest fitted to 3 points), and the report says why
    assert not (sd / "plots" / "param_importances.png").exists()
    assert "- param_importances: skipped: 3 complete trials; parameter importances need at least 5" in (
        sd / "report.md").read_text()
    # the axes name the objective; the pruned trial (2) is in the history plot, marked with its last value
    history = (sd / "plots" / "optimization_history.html").read_text()
    assert '"text":"eval_loss"' in history.replace(": ", ":")
    assert '"name":"pruned (last reported value)"' in history.replace(": ", ":")
    assert '"x":[2]' in history.replace(": ", ":")
    assert '"text":"eval_loss at each evaluation"' in (sd / "plots" / "intermediate_values.html").read_text().replace(": ", ":")


def test_parameter_importances_are_drawn_from_five_complete_trials(study):
    s, sd = study
    for lr in (5e-4, 7e-3):  # the fixture's 3 complete trials and 2 more
        t = s.ask({"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True), "lora": CategoricalDistribution(["r8", "r16"])})
        s.tell(t, 3.0 - lr * 10)
    from ftsweep.report import write_plots

    status = write_plots(s, sd / "plots")
    assert status["param_importances"] == "ok"
    assert (sd / "plots" / "param_importances.png").stat().st_size > 1000


def test_best_yaml_composes_to_the_best_trial(study, compose):
    s, sd = study
    write_report(s, sd)
    text = (sd / "best.yaml").read_text()
    lines = text.splitlines()
    assert lines[0] == "# @package _global_"
    assert lines[1] == f"# Run: ftsweep train --config-dir {sd.parent} +demo=best"
    assert "cache_dir" not in text.split("# Trial overrides")[1].split("\n", 1)[1]  # machine-local, left out
    from ftsweep.config.compose import compose as compose_with_dirs

    cfg = compose_with_dirs(["+demo=best"], config_dirs=[str(sd.parent)])
    best = s.trials[4]
    assert cfg.optimizer.lr == best.params["optimizer.lr"]  # exact float
    assert cfg.lora.r == 16 and cfg.logger.name == "none" and cfg.trainer.max_steps == 60  # from sweep=quickstart


def test_report_cli(study, capsys):
    _, sd = study
    assert main([str(sd)]) == 0
    out = capsys.readouterr().out
    assert "best trial 4: value=2.5" in out and (sd / "best.yaml").is_file()
    out_dir = sd.parent / "elsewhere"
    assert main([f"sqlite:///{sd / 'study.db'}", "--study", "demo", "--out", str(out_dir)]) == 0
    assert json.loads((out_dir / "summary.json").read_text())["n_trials"] == 5


def test_report_cli_errors(study, tmp_path):
    from ftsweep.config.errors import UsageError

    _, sd = study
    with pytest.raises(UsageError, match=f"^{re.escape(str(sd / 'study.db'))}: a file, not a sweep directory; give "
                                         f"the sweep's folder: {re.escape(str(sd))}$"):
        main([str(sd / "study.db")])
    with pytest.raises(UsageError, match=r"^cannot open mysql://u:\*\*\*@127.0.0.1:1/db: "):  # named as given here
        main(["mysql://u:pw@127.0.0.1:1/db"])
    with pytest.raises(UsageError, match="no study 'nope'"):
        main([str(sd), "--study", "nope"])
    with pytest.raises(UsageError, match="no study.db or study.journal"):
        main([str(tmp_path)])
    (sd / "trial_0").mkdir(exist_ok=True)  # a trial's folder: the sweep's is named (it said "pass the storage URL")
    with pytest.raises(UsageError, match=f"trial_0: no study.db or study.journal here; a trial of the sweep in "
                                         f"{re.escape(str(sd.resolve()))}: give that folder$"):
        main([str(sd / "trial_0")])


def test_report_marks_trials_that_did_not_learn(study):
    s, sd = study
    # trial 0 learned (eval loss fell below its initial value); trial 1 stayed flat; trial 2 (pruned) diverged
    docs = {0: (3.0, [2.9, 2.5]), 1: (3.0, [3.0, 3.2]), 2: (3.0, [9.0, float("nan")])}
    for number, (initial, losses) in docs.items():
        d = sd / f"trial_{number}"
        d.mkdir()
        history = [{"step": 10 * (i + 1), "eval_loss": v} for i, v in enumerate(losses)]
        (d / "metrics.json").write_text(json.dumps({"status": "complete", "initial_eval_loss": initial,
                                                    "eval_loss": losses[-1], "eval_history": history}))
    write_report(s, sd)
    summary = json.loads((sd / "summary.json").read_text())
    assert summary["n_did_not_learn"] == 2 and summary["did_not_learn"] == [1, 2]
    rows = {int(r.split("|")[1]): r for r in (sd / "trials.md").read_text().splitlines()[2:]}
    assert "| yes |" in rows[0] and "NO: eval_loss never beat its value before training" in rows[1]
    assert "NO:" in rows[2] and "NO:" not in rows[3] and "yes" not in rows[4]  # trial 4: no metrics.json
    assert "2 trial(s) never beat their value before training on eval_loss" in (sd / "report.md").read_text()
    assert summary["learning_metric"] == "eval_loss"


def test_learning_is_judged_by_the_objective_in_its_direction(tmp_path):
    """GRPO's eval loss is no learning curve: a reward-maximising study judges each trial by its reward against
    the reward before training (the pruner's intermediate values count), and a metric with no value before
    training (an lm_eval score) falls back to the eval loss."""
    from ftsweep.report import did_not_learn, learning_summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(study_name="grpo", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    s.set_user_attr("ftsweep:metrics", ["eval_reward"])
    dists = {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)}
    # (initial reward, reward at steps 25 / 50, final reward): eval loss rises in all of them, as GRPO's does
    cases = {0: (0.14, [0.15, 0.2], 0.26), 1: (0.14, [0.1, 0.14], 0.12), 2: (0.14, [0.2], None)}
    for number, (initial, steps, final) in cases.items():
        d = tmp_path / f"trial_{number}"
        d.mkdir()
        metrics = {"status": "complete", "initial_eval_loss": -0.01, "eval_history": [{"step": 25, "eval_loss": 0.01}],
                   "initial_eval_reward": initial, **({"eval_reward": final} if final is not None else {})}
        (d / "metrics.json").write_text(json.dumps(metrics))
        t = s.ask(dists)
        t.set_user_attr("trial_dir", str(d))
        for i, v in enumerate(steps):
            t.report(v, 25 * (i + 1))
        if final is None:
            s.tell(t, state=optuna.trial.TrialState.PRUNED)  # learned: 0.2 > 0.14 at step 25
        else:
            s.tell(t, final)
    assert learning_summary(s) == {"n_did_not_learn": 1, "did_not_learn": [1], "learning_metric": "eval_reward"}
    # the same trial judged by a metric it has no value before training for: its eval loss, which never fell
    assert did_not_learn(s.trials[0], "lm_eval_acc", True) == (True, "eval_loss")


def test_a_sweep_whose_complete_trials_all_tie_says_so(tmp_path, capsys):
    """Exact match 0 for every trial (a model that answers nothing yet): the report, summary.json and the
    sweep's end lines say that the objective told no trial apart; a study with one different value does not."""
    from ftsweep.sweeper.sweep import print_best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)}
    for name, values in (("tied", [0.0, 0.0, 0.0]), ("apart", [0.0, 0.0, 0.05])):
        sd = tmp_path / name
        sd.mkdir()
        s = optuna.create_study(study_name=name, storage=f"sqlite:///{sd / 'study.db'}", direction="maximize")
        s.set_user_attr("ftsweep:metrics", ["exact_match"])
        for v in values:
            t = s.ask(dists)
            t.set_user_attr("trial_dir", str(sd / f"trial_{t.number}"))
            s.tell(t, v)
        pruned = s.ask(dists)  # a pruned trial's value does not count
        s.tell(pruned, state=optuna.trial.TrialState.PRUNED)
        write_report(s, sd)
        print_best(s, sd)
        summary = json.loads((sd / "summary.json").read_text())
        report = (sd / "report.md").read_text()
        out = capsys.readouterr().out
        if name == "tied":
            assert summary["all_tied_value"] == 0.0
            assert "**Warning**: all 3 complete trials scored 0: the objective told no trial apart" in report
            assert "warning: all 3 complete trials scored 0: the objective told no trial apart" in out
        else:
            assert summary["all_tied_value"] is None and "told no trial apart" not in report + out


def _dominates(a, b, signs):
    """a dominates b: at least as good on every metric, better on one (signs: +1 maximize, -1 minimize)."""
    return all(s * x >= s * y for s, x, y in zip(signs, a, b)) and any(s * x > s * y for s, x, y in zip(signs, a, b))


def test_multi_objective_sweep_on_exact_match_and_eval_loss_reports_the_pareto_front(tmp_path):
    """A sweep on two objectives, a generation metric among them (fake trials: exact_match rises with lr up to
    1e-2, eval_loss is best at 1e-3, so they conflict): two directions, both values per trial taken from each
    trial's metrics.json in the listed order, and the report's Pareto section is the non-dominated trials."""
    import re

    from sweep_helpers import load, run, sweep_args

    sd = tmp_path / "s"
    r = run(sweep_args(sd, "objective=exact_match", "hydra.sweeper.metric=[exact_match,eval_loss]",
                       "hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.sampler.name=random",
                       "hydra.sweeper.sampler.seed=3", "hydra.sweeper.report=true", n_trials=4), tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(sd)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.user_attrs["ftsweep:metrics"] == ["exact_match", "eval_loss"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4  # seed 3: a front of 3 of the 4 (trial 2 is beaten on both by trial 1)
    for t in done:
        metrics = json.loads((sd / f"trial_{t.number}" / "metrics.json").read_text())
        assert t.values == [metrics["exact_match"], metrics["eval_loss"]]
    expected = sorted(t.number for t in done
                      if not any(_dominates(o.values, t.values, (1, -1)) for o in done if o is not t))
    assert 1 < len(expected) < len(done)  # the objectives conflict: a real front, not one best trial
    summary = json.loads((sd / "summary.json").read_text())
    assert summary["pareto_trials"] == expected and summary["directions"] == ["maximize", "minimize"]
    report = (sd / "report.md").read_text()
    section = report.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    assert f"{len(expected)} trial(s) that no other complete trial beats on every metric" in section
    assert "| trial | exact_match (maximize) | eval_loss (minimize) |" in section
    rows = {int(m[1]): m[0] for m in re.finditer(r"^\| (\d+) \|.*$", section, re.M)}
    assert sorted(rows) == expected
    for n in expected:
        em, loss = study.trials[n].values
        assert rows[n].startswith(f"| {n} | {em:.6g} | {loss:.6g} |")
    assert "![pareto_front](plots/pareto_front.png)" in report and (sd / "plots" / "pareto_front.png").is_file()
    import contextlib
    import io

    from ftsweep.report import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(sd), "--out", str(tmp_path / "again")]) == 0
    assert f"pareto front (exact_match, eval_loss): trial(s) {', '.join(map(str, expected))}" in out.getvalue()


def test_a_repeat_is_never_the_best_trial_a_tie_or_on_the_front(tmp_path):
    """A repeat (a point proposed again, given its trial's value without training: ``repeat_of``) has no
    adapter of its own: the best trial is the trained one even where storage returns the repeat first, a
    trial and its repeat are not "all trials tied", and the Pareto front lists the trained trial once."""
    from ftsweep.sweeper.study import best_trial, pareto_front, tied_value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dist = {"optimizer.lr": CategoricalDistribution([1e-4, 1e-3])}

    def trial(number, values, repeat_of=None, state=optuna.trial.TrialState.COMPLETE):
        attrs = {"trial_dir": str(tmp_path / f"trial_{number}")}
        if repeat_of is not None:
            attrs["repeat_of"] = repeat_of
        return optuna.trial.create_trial(params={"optimizer.lr": 1e-3}, distributions=dist, user_attrs=attrs,
                                         state=state, **({"values": values} if values else {}))

    single = optuna.create_study(direction="maximize")
    # the repeat (0) is added before its trial (1), so storage's choice among the tie is the repeat
    for t in (trial(0, [0.5], repeat_of=1), trial(1, [0.5]), trial(2, None, state=optuna.trial.TrialState.PRUNED)):
        single.add_trial(t)
    assert single.best_trial.number == 0 and best_trial(single).number == 1
    assert tied_value(single) is None  # one trained trial: nothing tied

    multi = optuna.create_study(directions=["maximize", "minimize"])
    for t in (trial(0, [0.5, 2.0]), trial(1, [0.1, 1.0]), trial(2, [0.5, 2.0], repeat_of=0)):
        multi.add_trial(t)
    assert sorted(t.number for t in multi.best_trials) == [0, 1, 2]
    assert [t.number for t in pareto_front(multi)] == [0, 1] and best_trial(multi).number == 0


def test_subset_evaluations_are_not_judged_against_the_every_row_value_before_training(tmp_path):
    """trainer.intermediate_eval_rows: evaluations before the last step score a subset of the rows, whose loss
    does not compare with the initial loss of every row. Only every-row values judge a trial; a pruned trial
    with subset values only is not judged."""
    from ftsweep.report import did_not_learn

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(study_name="subset", storage=f"sqlite:///{tmp_path / 'study.db'}")
    dists = {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)}
    # (subset values at steps 10 / 20, final every-row value or None when pruned at step 20)
    cases = {0: ([6.6, 6.5], None), 1: ([6.0, 5.0], 6.5), 2: ([6.6, 6.5], 6.0)}
    for number, (steps, final) in cases.items():
        d = tmp_path / f"trial_{number}"
        d.mkdir()
        history = [{"step": 0, "eval_loss": 6.4}, *({"step": 10 * (i + 1), "eval_loss": v, "rows": 16}
                                                     for i, v in enumerate(steps))]
        if final is not None:
            history.append({"step": 30, "eval_loss": final})
        (d / "metrics.json").write_text(json.dumps({
            "status": "pruned" if final is None else "complete", "initial_eval_loss": 6.4,
            "eval_loss": steps[-1] if final is None else final, "eval_history": history}))
        t = s.ask(dists)
        t.set_user_attr("trial_dir", str(d))
        t.report(6.4, 0)  # the evaluation before training is reported too (every row)
        for i, v in enumerate(steps):
            t.report(v, 10 * (i + 1))
        if final is None:
            s.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            s.tell(t, final)
    assert [did_not_learn(t)[0] for t in s.trials] == [None, True, False]


def test_a_killed_sweeps_running_trials_are_reported_lost_without_optunas_warnings(tmp_path, capfd):
    import socket
    import subprocess
    import sys

    from ftsweep.sweeper.attrs import OWNER

    sd = tmp_path / "sweep"
    sd.mkdir()
    study = optuna.create_study(study_name="killed", storage=f"sqlite:///{sd / 'study.db'}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for _ in range(2):  # a sweep killed before any trial finished
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study._storage.set_trial_user_attr(trial._trial_id, OWNER, {"host": socket.gethostname(), "pid": dead.pid})
    assert main([str(sd)]) == 0
    out, err = capfd.readouterr()
    assert ("study killed: 2 trials (0 complete, 0 pruned, 0 failed, 2 running, of which 2 lost: their sweep process "
            "is gone; run the sweep's command again to resume it)") in out
    assert "no complete trials" not in err.lower() and "[W " not in err
    assert json.loads((sd / "summary.json").read_text())["n_lost"] == 2


def test_an_interrupted_sweeps_waiting_re_runs_are_counted_and_say_how_to_resume(tmp_path, capfd):
    """Ctrl-C during trials 2 and 3: they are FAIL and replaced by two WAITING re-runs. The report said '4 trials: 2
    complete, 0 pruned, 0 failed, 0 running' (the counts summed to 2 of 4), with no word that the sweep had stopped."""
    from ftsweep.sweeper.study import rerun

    sd = tmp_path / "sweep"
    sd.mkdir()
    study = optuna.create_study(study_name="stopped", storage=f"sqlite:///{sd / 'study.db'}")
    dist = {"x": FloatDistribution(0, 1)}
    trials = [study.ask(dist) for _ in range(4)]  # two finish, two are running when the sweep is stopped
    for i, trial in enumerate(trials):
        if i < 2:
            study.tell(trial, 1.0 + i)
        else:
            trial.set_user_attr("reason", "interrupted: the sweep process was stopped")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            rerun(study, study.trials[trial.number], 2, charged=False)
    assert main([str(sd)]) == 0
    out = capfd.readouterr().out
    assert ("study stopped: 4 trials (2 complete, 0 pruned, 0 failed, 0 running, 2 waiting to run; run the sweep's "
            "command again to resume it)") in out, out
    assert ("4 trials: 2 complete, 0 pruned, 0 failed, 0 running, 2 waiting to run (run the sweep's command again to "
            "resume it) (minimize") in (sd / "report.md").read_text()


def test_a_sweep_whose_trials_all_failed_reports_without_optuna_warnings_or_a_missing_best_config(tmp_path, capfd):
    # before: eight "[W ...] There are no complete trials." lines, and "best config: .../best.yaml" that was not there
    import optuna

    from ftsweep.report import write_report
    from ftsweep.sweeper.sweep import print_best

    study = optuna.create_study(study_name="failed")
    for _ in range(2):
        trial = study.ask({"optimizer.lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)})
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    capfd.readouterr()
    write_report(study, tmp_path)
    print_best(study, tmp_path)
    out = capfd.readouterr()
    assert "complete trials" not in out.err + out.out and "[W " not in out.err, out.err
    assert out.out.splitlines()[-1] == f"report: {tmp_path / 'report.md'}" and not (tmp_path / "best.yaml").exists()
    assert optuna.logging.get_verbosity() != optuna.logging.ERROR  # the level is back for the rest of the process


def test_a_report_without_a_best_trial_removes_the_best_config_of_an_earlier_study(tmp_path, capfd):
    """overwrite=true gives a sweep folder a new study; when none of its trials completed, its report kept the old
    study's best.yaml: the end of the sweep printed "no trial completed" and then "best config: .../best.yaml",
    and the dashboard stored that file as the new study's."""
    from ftsweep.sweeper.sweep import print_best

    old = optuna.create_study(study_name="old")
    trial = old.ask({"optimizer.lr": FloatDistribution(1e-5, 1e-1, log=True)})
    trial.set_user_attr("overrides", [f"optimizer.lr={trial.params['optimizer.lr']!r}"])
    old.tell(trial, 3.0)
    write_report(old, tmp_path)
    assert (tmp_path / "best.yaml").is_file()
    new = optuna.create_study(study_name="new")
    new.tell(new.ask({"optimizer.lr": FloatDistribution(1e-5, 1e-1, log=True)}), state=optuna.trial.TrialState.FAIL)
    capfd.readouterr()
    write_report(new, tmp_path)
    print_best(new, tmp_path)
    assert not (tmp_path / "best.yaml").exists()
    assert capfd.readouterr().out.splitlines()[-2:] == ["  no trial completed", f"report: {tmp_path / 'report.md'}"]


@pytest.mark.parametrize("command", ["report", "dashboard"])
def test_a_garbled_journal_is_one_line_without_a_url_hint_nor_the_sweeper_key(tmp_path, capsys, command):
    """A sweep folder whose study.journal has a broken line: the error ended with the hint for a file path given
    as a database URL ('a database URL names its driver (sqlite:///journal:...), a journal file
    journal:journal:...'), and `ftsweep report` named hydra.sweeper.storage, which the user never set."""
    from optuna.storages.journal import JournalFileBackend

    from ftsweep import cli

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = tmp_path / "sw" / "study.journal"
    journal.parent.mkdir()
    study = optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))), study_name="j")
    study.tell(study.ask({"x": FloatDistribution(0, 1)}), 1.0)
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join([*lines[:2], '{"op_code": 4, garbage\n', *lines[3:]]))
    capsys.readouterr()
    assert cli.main([command, str(journal.parent)]) == 2
    out = capsys.readouterr()
    assert out.err.startswith(f"ftsweep: error: cannot open journal:{journal}: ") and out.err.count("\n") == 1, out.err
    assert "names its driver" not in out.err and "journal:journal:" not in out.err


def test_a_storage_without_a_study_says_so_instead_of_asking_for_study(tmp_path, capsys):
    """An empty study.db (a sweep stopped before its study was created): 'holds 0 studies (none); choose one with
    --study' asked for a name there is none of."""
    from ftsweep import cli

    (tmp_path / "sw").mkdir()
    db = tmp_path / "sw" / "study.db"
    db.touch()
    os.utime(db, ns=(1_000_000_000, 1_000_000_000))
    for target in (str(tmp_path / "sw"), f"sqlite:///{db}"):
        assert cli.main(["report", target]) == 2
        err = capsys.readouterr().err
        assert err == f"ftsweep: error: sqlite:///{db} holds no study yet (has the sweep started?)\n"
        # the user's file unchanged: opening it as a storage wrote Optuna's tables into it (about 100 kB)
        assert (db.stat().st_size, db.stat().st_mtime_ns) == (0, 1_000_000_000)
    assert sorted(p.name for p in (tmp_path / "sw").iterdir()) == ["study.db"]
    missing = tmp_path / "nowhere" / "study.db"  # a URL of a file that is not there: not created
    assert cli.main(["report", f"sqlite:///{missing}"]) == 2
    assert capsys.readouterr().err == f"ftsweep: error: {missing}: no such study file\n"
    assert not missing.parent.exists()


def test_multi_objective_values_are_named_and_rounded_at_the_end_and_in_the_report(tmp_path, capsys):
    """The end of a multi-objective sweep printed 'values=[5.395381450653076, 0.06573555953800678]' (the
    progress lines round to 6 digits; nothing said which metric is which) and report.md's summary line
    '(minimize, maximize ['eval_loss', 'eval_mean_token_accuracy'])', a Python list."""
    from ftsweep.sweeper.sweep import print_best

    study = optuna.create_study(study_name="m", directions=["minimize", "maximize"])
    study.set_user_attr("ftsweep:metrics", ["eval_loss", "eval_mean_token_accuracy"])
    study.tell(study.ask({"optimizer.lr": FloatDistribution(1e-5, 1e-1, log=True)}), [5.395381450653076, 0.06573555953800678])
    print_best(study, None)
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("  pareto trial 0: eval_loss=5.39538 eval_mean_token_accuracy=0.0657356 params={")
    write_report(study, tmp_path)
    assert "1 trials: 1 complete, 0 pruned, 0 failed, 0 running (minimize eval_loss, maximize eval_mean_token_accuracy)." \
        in (tmp_path / "report.md").read_text()


def test_a_single_runs_folder_is_named_as_such(tmp_path, capsys):
    """`ftsweep report <a single run's folder>` said 'no study.db or study.journal here; pass the storage URL and
    --study', as if the run were a sweep stored elsewhere."""
    from ftsweep import cli

    run = tmp_path / "outputs" / "runs" / "2026-12-07" / "01-00-00"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"status": "complete", "objective": 2.5}))
    assert cli.main(["report", str(run)]) == 2
    assert capsys.readouterr().err == (f"ftsweep: error: {run}: a single run's folder, not a sweep (its result is its "
                                       "metrics.json); give a sweep folder or a storage URL\n")


@pytest.mark.parametrize("folder", ["s2", "스윕 1"])
def test_best_yaml_runs_from_another_folder(tmp_path, monkeypatch, folder):
    """A sweep run from a project folder with ``data.path`` relative (and Korean, with a space): best.yaml's data
    path is absolute from where the sweep ran, so its header command works from any folder (it failed: "data.path:
    no such file"), and the header's command is one a shell reads back (the folder quoted; a folder name Hydra
    cannot read as a group gets the experiment-file way)."""
    import shlex

    from omegaconf import OmegaConf

    from ftsweep.paths import resolve_data_path

    project = tmp_path / "my proj 한글"
    (project / "데이터").mkdir(parents=True)
    (project / "데이터" / "학습 파일.jsonl").write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    sd = project / "sweeps" / folder
    trial_dir = sd / "trial_0"
    (trial_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(project)}}}), trial_dir / ".hydra" / "hydra.yaml")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(study_name="ko", storage=f"sqlite:///{sd / 'study.db'}")
    t = s.ask({"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)})
    t.set_user_attr("trial_dir", str(trial_dir))
    t.set_user_attr("overrides", ["logger=none", "data=custom_json", "data.path='데이터/학습 파일.jsonl'",
                                  "data.validation_path=nope/not_here.jsonl", f"optimizer.lr={t.params['optimizer.lr']!r}"])
    s.tell(t, 1.0)
    write_report(s, sd)
    text = (sd / "best.yaml").read_text(encoding="utf-8")
    run = text.splitlines()[1].removeprefix("# Run: ")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from ftsweep.config.compose import compose as compose_with_dirs

    if folder == "s2":
        assert shlex.split(run) == ["ftsweep", "train", "--config-dir", str(sd.parent), "+s2=best"]
        cfg = compose_with_dirs(["+s2=best"], config_dirs=[str(sd.parent)])
    else:
        words = shlex.split(run)
        assert words[:2] == ["copy", str(sd / "best.yaml")] and "+experiment=<name>" in run
        exp = elsewhere / "conf" / "experiment"
        exp.mkdir(parents=True)
        (exp / "best_ko.yaml").write_text(text, encoding="utf-8")
        cfg = compose_with_dirs(["+experiment=best_ko"], config_dirs=[str(elsewhere / "conf")])
    assert cfg.data.path == str(project / "데이터" / "학습 파일.jsonl")
    assert resolve_data_path(cfg.data.path) is not None  # found from another folder
    assert cfg.data.validation_path == "nope/not_here.jsonl"  # no such path where the sweep ran: as written


def test_a_report_that_fails_at_the_sweeps_end_says_how_to_write_it_again(tmp_path, monkeypatch, capsys):
    """The end-of-sweep report cannot fail the sweep (its trials are stored): its failure is one stderr line that
    names the command that writes it again."""
    from types import SimpleNamespace

    from ftsweep import report
    from ftsweep.sweeper import study as study_mod

    def refuse(*a, **k):
        raise IsADirectoryError(21, "Is a directory", str(tmp_path / "report.md"))

    monkeypatch.setattr(report, "write_report", refuse)
    monkeypatch.setattr(study_mod, "relocated", lambda study, where: study)
    settings = SimpleNamespace(conf=SimpleNamespace(report=True), study_name="qs", sweep_dir=tmp_path,
                               storage_url=f"sqlite:///{tmp_path}/study.db")
    assert report.sweep_end(SimpleNamespace(settings=settings, study=object(), wandb_summary=False)) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[sweep qs] report failed: IsADirectoryError")
    assert err[0].endswith(f"`ftsweep report {tmp_path}` writes the report again")
