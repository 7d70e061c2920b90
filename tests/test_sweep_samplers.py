"""Every sampler runs a whole (fake-trial) sweep to its end: trials, report, best.yaml; fixed seeds per trial.

A grid sweep used to crash after its last trial (Optuna's GridSampler calls ``study.stop()``, which raises
outside ``study.optimize()``); two processes sharing a new study used to propose the same parameters.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sweep_helpers import env, load, run, sweep_args

from ftsweep.sweeper.samplers import SAMPLERS

pytestmark = pytest.mark.slow

# 6 points for 3 trials: a space no larger than n_trials would run as a grid whatever the sampler
SPACE = ["optimizer.lr=choice(1e-3,2e-3,3e-3)", "lora=choice(r8,r16)"]


def _args(sd, *extra, n_trials=3, workers=1, report=True):
    # report=False where a test asserts nothing of the report (writing its plots costs a few seconds of CPU)
    args = [a for a in sweep_args(sd, f"hydra.sweeper.report={str(report).lower()}", "hydra.sweeper.pruner.name=none",
                                  *extra,
                                  n_trials=n_trials, workers=workers) if not a.startswith("optimizer.lr=")]
    return args


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_finishes_with_a_report(tmp_path, name):
    sd = tmp_path / "s"
    r = run([*_args(sd, f"hydra.sweeper.sampler.name={name}", "hydra.sweeper.sampler.seed=0",
                    "hydra.sweeper.sampler.n_startup_trials=2"), *SPACE], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    study = load(sd)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    for t in study.trials:
        assert t.params["optimizer.lr"] in (1e-3, 2e-3, 3e-3) and t.params["lora"] in ("r8", "r16")
    if name == "grid":  # every grid point exactly once
        assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3
    assert (sd / "summary.json").is_file() and (sd / "report.md").is_file() and (sd / "best.yaml").is_file()
    assert "best trial" in r.stdout


def test_a_space_that_fits_in_n_trials_runs_each_point_once(tmp_path):
    # `-m optimizer.lr=1e-3,2e-3 lora=r8,r16` with the default TPE and 20 trials ran 20 trials of 4 distinct
    # (identical, seeded) runs; as with Hydra's basic sweeper, each point now runs once
    sd = tmp_path / "s"
    r = run([*_args(sd, n_trials=20, workers=2, report=False), "optimizer.lr=1e-3,2e-3", "lora=r8,r16"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert ("the search space has 4 point(s) (choices and ranges only), no more than hydra.sweeper.n_trials=20: "
            "running each once (sampler grid instead of tpe)") in r.stderr
    study = load(sd)
    assert sorted((t.params["optimizer.lr"], t.params["lora"]) for t in study.trials) == [
        (1e-3, "r16"), (1e-3, "r8"), (2e-3, "r16"), (2e-3, "r8")]
    assert all(t.state.name == "COMPLETE" for t in study.trials)


def test_a_point_proposed_again_gets_its_value_without_training(tmp_path, capsys):
    # 12 points, 6 trials: TPE proposes some points again (seed 0: its first proposal, trial 4, repeats trial 0;
    # trial 5 trains again); each repeat copies the COMPLETE trial's value
    sd = tmp_path / "s"
    r = run([*_args(sd, "hydra.sweeper.sampler.seed=0", "hydra.sweeper.sampler.n_startup_trials=4", n_trials=6,
                   report=False),
             "optimizer.lr=choice(1e-4,1e-3,1e-2)", "lora.r=choice(4,8,16,32)"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = load(sd).trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    assert repeats, "seed 0 proposes at least one point twice"
    trained = [t for t in trials if "repeat_of" not in t.user_attrs]
    assert len({tuple(sorted(t.params.items())) for t in trained}) == len(trained)  # every run a new point
    for t in repeats:
        first = trials[t.user_attrs["repeat_of"]]
        assert "repeat_of" not in first.user_attrs and first.number < t.number
        assert (t.params, t.value, t.user_attrs["runtime_s"]) == (first.params, first.value, 0.0)
        folder = sd / f"trial_{t.number}"
        assert t.user_attrs["trial_dir"] == str(folder) and not (folder / ".hydra").exists()  # no process ran
        copied = json.loads((folder / "metrics.json").read_text())
        assert (copied["repeat_of"], copied["repeat_of_dir"]) == (first.number, str(sd / f"trial_{first.number}"))
        assert f"trial {t.number} repeats trial {first.number}: " in r.stdout + r.stderr
        assert f"trial {t.number} started" not in r.stdout + r.stderr
    # tools given the repeat's folder name the trained one (merge, generate, export read a run folder)
    repeat, of = repeats[0].number, repeats[0].user_attrs["repeat_of"]
    # (in this process, through the function `ftsweep merge` runs: the CLI's exit-2 one-line path is
    # tests/test_bad_input*.py's)
    from ftsweep import cli

    assert cli.main(["merge", str(sd / f"trial_{repeat}")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"a repeat of the trial in {sd / f'trial_{of}'} (the same point, not trained again): use that folder")
    from ftsweep.report import trials_table

    table = trials_table(load(sd))
    assert all(f"| {t.number} | COMPLETE (repeat of {t.user_attrs['repeat_of']}) |" in table for t in repeats)


def test_batch_size_grid_sweep_finishes(tmp_path):
    sd = tmp_path / "b"
    args = [sys.executable, "-m", "ftsweep", "train", "sweep=batch_size", "model=tiny", "logger=none",
            f"hydra.sweep.dir={sd}", "hydra.sweeper.progress=plain", "hydra.sweeper.n_workers=2"]
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load(sd, name="batch_size")
    assert len(study.trials) == 8 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert (sd / "report.md").is_file() and (sd / "best.yaml").is_file()


def test_two_processes_on_one_new_study_propose_distinct_parameters(tmp_path):
    sd = tmp_path / "s"
    # random sampler, fixed seed, both processes started together on an empty SQLite study
    args = sweep_args(sd, "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=0",
                      "hydra.sweeper.pruner.name=none", n_trials=6)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env(FAKE_STEP_S="0.3"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = load(sd)
    params = [t.params["optimizer.lr"] for t in study.trials]
    assert len(params) == 6 and len(set(params)) == 6
    assert all("started" in out for out, _ in outs)  # both processes ran trials


def test_fixed_seed_is_reproducible_in_a_fresh_folder(tmp_path):
    def lrs(sd):
        r = run(sweep_args(sd, "hydra.sweeper.sampler.name=tpe", "hydra.sweeper.sampler.seed=3",
                           "hydra.sweeper.sampler.n_startup_trials=2", "hydra.sweeper.pruner.name=none", n_trials=3),
                tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        return [t.params["optimizer.lr"] for t in load(sd).trials]

    first = lrs(tmp_path / "a")
    assert first == lrs(tmp_path / "b") and len(set(first)) == 3


def test_search_over_data_files(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text('[{"instruction": "hi", "input": "", "output": "hello"}]')
    sd = tmp_path / "s"
    r = run([*_args(sd, "hydra.sweeper.sampler.name=grid", n_trials=2, report=False), "data.path=choice(a.json,b.json)"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load(sd)
    assert sorted(t.params["data.path"] for t in study.trials) == ["a.json", "b.json"]
    assert all(f"data.path={t.params['data.path']}" in t.user_attrs["overrides"] for t in study.trials)
