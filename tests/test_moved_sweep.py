"""A sweep folder moved or copied after its sweep (``mv``, ``rsync`` from a cluster): ``ftsweep report``,
``merge`` / ``generate`` / ``export`` read the trials' folders where the folder is now. The study records each
trial's folder as an absolute path; they read the old place (``export``: 'no such folder', exit 2; the report:
the old paths and no metrics; a copy's report: the original's trials)."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest
from optuna.distributions import FloatDistribution

from ftsweep.report import main as report_main
from ftsweep.sweeper.study import best_trial_dir, run_or_best_trial


@pytest.fixture
def swept(tmp_path):
    """A finished 3-trial study in ``tmp_path/ran``, each trial with its folder and metrics.json."""
    sd = tmp_path / "ran"
    sd.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(study_name="demo", storage=f"sqlite:///{sd / 'study.db'}")
    s.set_user_attr("ftsweep:metrics", ["eval_loss"])
    s.set_user_attr("ftsweep:sweep_dir", str(sd))
    for i, value in enumerate([3.0, 2.0, 4.0]):
        t = s.ask({"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)})
        folder = sd / f"trial_{t.number}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("{}\n")
        (folder / "metrics.json").write_text(json.dumps({"status": "complete", "eval_loss": value, "objective": value,
                                                         "initial_eval_loss": 5.0, "steps": 10 + i}))
        t.set_user_attr("trial_dir", str(folder))
        t.set_user_attr("overrides", ["logger=none", f"optimizer.lr={t.params['optimizer.lr']!r}"])
        s.tell(t, value)
    return sd


def test_a_moved_sweep_names_its_trials_where_they_are_now(swept, capsys):
    moved = swept.parent / "moved"
    shutil.move(swept, moved)
    assert best_trial_dir(moved) == moved / "trial_1"
    assert run_or_best_trial(moved) == moved / "trial_1"
    assert report_main([str(moved)]) == 0
    summary = json.loads((moved / "summary.json").read_text())
    assert summary["best_trial_dir"] == str(moved / "trial_1")
    assert "trial dir " + str(moved / "trial_1") in (moved / "best.yaml").read_text()
    assert str(swept) not in (moved / "report.md").read_text() + (moved / "trials.md").read_text()
    assert "| 1 | COMPLETE | 2 |" in (moved / "trials.md").read_text()


def test_a_copied_sweep_reads_its_own_trials_and_the_original_is_unchanged(swept):
    copy = swept.parent / "copy"
    shutil.copytree(swept, copy)
    assert best_trial_dir(copy) == copy / "trial_1"
    assert best_trial_dir(swept) == swept / "trial_1"
    assert report_main([str(copy)]) == 0
    assert json.loads((copy / "summary.json").read_text())["best_trial_dir"] == str(copy / "trial_1")
    assert not (swept / "summary.json").exists()
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{copy / 'study.db'}")
    assert study.trials[1].user_attrs["trial_dir"] == str(swept / "trial_1")  # the storage is not rewritten


def test_report_out_never_replaces_another_studys_report_or_a_file(swept, tmp_path, capsys):
    """``ftsweep report A --out B``: B's summary.json, report.md, best.yaml were replaced by A's when B was another
    sweep's folder; --out of a file failed with a FileExistsError traceback."""
    from ftsweep.config.errors import UsageError

    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text('{"study_name": "else"}')
    (tmp_path / "afile").write_text("x")
    for out, text in ((other, "holds study 'else'"), (tmp_path / "afile", "is a file")):
        with pytest.raises(UsageError, match=text):
            report_main([str(swept), "--out", str(out)])
    assert (other / "summary.json").read_text() == '{"study_name": "else"}' and not (other / "report.md").exists()
    assert report_main([str(swept), "--out", str(tmp_path / "new")]) == 0  # a new folder, or this study's own
    assert report_main([str(swept), "--out", str(tmp_path / "new")]) == 0
