"""A sweep folder moved or copied after its sweep (``mv``, ``rsync`` from a cluster): ``ftsweep report``,
``merge`` / ``generate`` / ``export`` read the trials' folders where the folder is now. The study records each
trial's folder as an absolute path; they read the old place (``export``: 'no such folder', exit 2; the report:
the old paths and no metrics; a copy's report: the original's trials). A moved sweep continued where it is now
re-runs its lost trials from their checkpoints there (it looked in the old place: from step 0, or the original's)."""

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


def _lost_and_rerun(sd, lost_dir):
    """A study created in ``sd`` whose trial 0 (folder ``lost_dir``) was lost and trial 1 is its re-run."""
    from optuna.trial import TrialState

    from ftsweep.sweeper import attrs
    from ftsweep.sweeper.study import rerun

    sd.mkdir(parents=True, exist_ok=True)
    s = optuna.create_study(study_name="demo", storage=f"sqlite:///{sd / 'study.db'}")
    s.set_user_attr(attrs.SWEEP_DIR, str(sd))
    t = s.ask({"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)})
    t.set_user_attr(attrs.TRIAL_DIR, str(lost_dir))
    s.tell(t, state=TrialState.FAIL)
    rerun(s, s.trials[0], 2, charged=False)
    return s


def _checkpoint(trial_dir, step):
    ck = trial_dir / "checkpoints" / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text("{}")
    return ck


@pytest.mark.parametrize("keep_original", [False, True])
def test_a_moved_sweeps_lost_trial_goes_on_from_its_checkpoint_where_the_sweep_is_now(tmp_path, keep_original):
    """``mv`` (or copy) a killed sweep's folder and run its command with the new hydra.sweep.dir: the lost trial's
    re-run looked for the checkpoint in the folder the study recorded (gone: it started from step 0; a copy: the
    original's checkpoint, another folder than the sweep's)."""
    from types import SimpleNamespace

    from ftsweep.sweeper.runner import SweepRunner

    ran = tmp_path / "ran"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _lost_and_rerun(ran, ran / "trial_0")
    _checkpoint(ran / "trial_0", 20)
    moved = tmp_path / "moved"
    (shutil.copytree if keep_original else shutil.move)(ran, moved)
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{moved / 'study.db'}")
    again = study.ask()  # the enqueued re-run of trial 0
    assert again.user_attrs["retry_of"] == 0
    runner = SimpleNamespace(study=study, s=SimpleNamespace(sweep_dir=moved))
    assert SweepRunner._lost_checkpoint(runner, again) == moved / "trial_0" / "checkpoints" / "checkpoint-20"


def test_a_lost_trial_outside_a_moved_sweep_keeps_its_recorded_folder(tmp_path):
    """A lost trial's folder that is not under the recorded sweep folder is read where it was recorded."""
    from types import SimpleNamespace

    from ftsweep.sweeper.runner import SweepRunner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    elsewhere = tmp_path / "elsewhere" / "trial_0"
    _lost_and_rerun(tmp_path / "ran", elsewhere)
    ck = _checkpoint(elsewhere, 40)
    shutil.move(tmp_path / "ran", tmp_path / "moved")
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{tmp_path / 'moved' / 'study.db'}")
    runner = SimpleNamespace(study=study, s=SimpleNamespace(sweep_dir=tmp_path / "moved"))
    assert SweepRunner._lost_checkpoint(runner, study.ask()) == ck


def _safetensors(path, cut=False):
    """A small valid safetensors file (8 data bytes); ``cut``: its last half missing, as a kill while saving."""
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    data = struct.pack("<Q", len(header)) + header + bytes(8)
    path.write_bytes(data[: len(data) // 2] if cut else data)


@pytest.mark.parametrize("damaged", ["adapter_model.safetensors", "trainer_state.json"])
def test_a_lost_trials_damaged_last_checkpoint_is_passed_over_for_the_intact_one_before_it(tmp_path, damaged):
    """A lost trial's latest checkpoint cut short (a kill or a full disk while it was saved): the re-run was given
    it, refused it ('damaged ... resume from the checkpoint before it') and started from step 0; it now goes on from
    the intact checkpoint before it, and the console line names the damaged file."""
    from types import SimpleNamespace

    from ftsweep.sweeper.runner import SweepRunner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sd = tmp_path / "s"
    study = _lost_and_rerun(sd, sd / "trial_0")
    for step in (20, 40):
        ck = _checkpoint(sd / "trial_0", step)
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        _safetensors(ck / "adapter_model.safetensors")
    bad = sd / "trial_0" / "checkpoints" / "checkpoint-40" / damaged
    if damaged.endswith(".json"):
        bad.write_text(bad.read_text()[:-3])
    else:
        _safetensors(bad, cut=True)
    again = study.ask()
    runner = SimpleNamespace(study=study, s=SimpleNamespace(sweep_dir=sd))
    point, note = SweepRunner._lost_checkpoints(runner, again)
    assert point == sd / "trial_0" / "checkpoints" / "checkpoint-20"
    assert note.startswith(f"checkpoint-40 is damaged: {bad} (")
    # every checkpoint damaged: from step 0, saying why
    _safetensors(sd / "trial_0" / "checkpoints" / "checkpoint-20" / "adapter_model.safetensors", cut=True)
    assert SweepRunner._lost_checkpoints(runner, again)[0] is None
