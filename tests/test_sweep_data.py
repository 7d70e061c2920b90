"""A data path can be searched (issue 21 item 12): ``data=custom_json data.path=choice(a.json,b.json)``, where
the data option has no path of its own. Fake trials (tests/fake_trial.py): this is about the sweep."""

from __future__ import annotations

import json
import sys

import pytest
from sweep_helpers import load, run

pytestmark = pytest.mark.slow  # a sweep of 2 fake trials, ~10 s


def test_a_data_path_is_swept_over_two_files(tmp_path):
    for name, answer in (("a.json", "hello"), ("b.json", "hi there")):  # LLaMA-Factory's alpaca layout
        (tmp_path / name).write_text(json.dumps([{"instruction": "greet", "input": "", "output": answer}]))
    sd = tmp_path / "s"
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "hydra/sweeper=ftsweep_optuna", "logger=none",
            "data=custom_json", "data.path=choice(a.json,b.json)", "hydra.sweeper.sampler.name=grid",
            f"hydra.sweep.dir={sd}", "hydra.sweeper.study_name=t", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.report=false", "hydra.sweeper.progress=plain"]
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load(sd)
    assert sorted(t.params["data.path"] for t in study.trials) == ["a.json", "b.json"]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:  # each trial was given its own file
        overrides = (sd / f"trial_{t.number}" / ".hydra" / "overrides.yaml").read_text()
        assert f"data.path={t.params['data.path']}" in overrides


def test_a_missing_file_among_the_searched_paths_is_one_line(tmp_path):
    (tmp_path / "a.json").write_text("[]")
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "hydra/sweeper=ftsweep_optuna", "logger=none",
            "data=custom_json", "data.path=choice(a.json,nope.json)", f"hydra.sweep.dir={tmp_path / 's'}"]
    r = run(args, tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"ftsweep: error: data.path: no such file 'nope.json' (relative paths are read from {tmp_path})"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
