"""Real tiny-model trials through ``ftsweep train -m sweep=quickstart`` (slow; CPU, ~1-2 minutes).

One sweep checks: trials run as processes and finish, the report, W&B offline runs per trial (group,
name, trial number, params, state) plus the summary run, and that best.yaml reproduces the best
trial's objective exactly.
"""

from __future__ import annotations

import json
import shlex
import sys

import pytest
from omegaconf import OmegaConf
from sweep_helpers import load, run
from wandb_offline import wait_offline_run

from ftsweep.numerics import intra_op_share

pytestmark = pytest.mark.slow

SMALL = ["data.max_rows=80", "data.cutoff_len=96", "trainer.max_steps=8", "trainer.eval_steps=4",
         "trainer.logging_steps=4"]


def test_quickstart_sweep_with_real_trials(tmp_path, cache_dir, wandb_dir):
    sd = tmp_path / "sweeps" / "qs"
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "sweep=quickstart", *SMALL, "logger=wandb",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.n_workers=2", "hydra.sweeper.pruner.n_warmup_steps=0",
            f"hydra.sweep.dir={sd}", "hydra.sweeper.study_name=qs", "hydra.sweeper.progress=plain"]
    r = run(args, tmp_path, timeout=900, fake=False, OMP_NUM_THREADS=None)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "best trial" in r.stdout

    study = load(sd, name="qs")
    trials = study.trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for t in trials:
        metrics = json.loads((sd / f"trial_{t.number}" / "metrics.json").read_text())
        # each trial is job <trial number> of the Hydra multirun, as any Hydra multirun job records it
        hydra_cfg = OmegaConf.load(sd / f"trial_{t.number}" / ".hydra" / "hydra.yaml").hydra
        assert hydra_cfg.mode == "MULTIRUN" and hydra_cfg.job.num == t.number
        assert t.user_attrs["trial_dir"] == str(sd / f"trial_{t.number}")
        assert t.user_attrs["wandb_run_id"] == metrics["wandb_run_id"]
        # no third-party log line in a trial's log (bitsandbytes' CPU-kernel warning was in each worker's first)
        assert "][WARNING]" not in (sd / f"trial_{t.number}" / "trial.log").read_text()

    # report
    summary = json.loads((sd / "summary.json").read_text())
    best = study.best_trial
    assert summary["n_trials"] == 4 and summary["best_value"] == best.value
    assert summary["best_params"] == best.params and summary["best_trial_dir"] == str(sd / f"trial_{best.number}")
    assert (sd / "report.md").is_file() and (sd / "plots" / "optimization_history.png").is_file()
    assert (sd / "plots" / "intermediate_values.html").is_file()

    # W&B: one offline run per trial, grouped by study, named trial-<n>, with params and state; one summary run
    runs = [wait_offline_run(d, lambda w: "state" in w["summary"] or "best_value" in w["summary"])
            for d in (wandb_dir / "wandb").glob("offline-run-*")]
    by_name = {w["name"]: w for w in runs}
    assert set(by_name) == {"trial-0", "trial-1", "trial-2", "trial-3", "qs-summary"}
    assert {w["group"] for w in runs} == {"qs"}
    for t in trials:
        w = by_name[f"trial-{t.number}"]
        assert w["config"]["trial_number"] == t.number and w["config"]["trial_params"] == t.params
        assert w["summary"]["state"] == t.state.name and w["run_id"] == t.user_attrs["wandb_run_id"]
    assert by_name["qs-summary"]["summary"]["best_value"] == best.value

    # Each of the 2 parallel trials ran with half the usable cores and recorded it; best.yaml pins that count.
    share = intra_op_share(2, {})
    best_dir = sd / f"trial_{best.number}"
    assert json.loads((best_dir / "manifest.json").read_text())["numerics"]["num_threads"] == int(share)
    assert OmegaConf.load(sd / "best.yaml").trainer.num_threads == int(share)

    # best.yaml: its header's command reproduces the best trial bitwise (objective and every evaluation), run
    # as a user runs it: no OMP_NUM_THREADS in the environment, so torch starts with all cores.
    lines = (sd / "best.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_" and lines[1].startswith("# Run: ftsweep train ")
    command = shlex.split(lines[1].removeprefix("# Run: "))
    rerun = run([sys.executable, "-m", "ftsweep", *command[1:], f"hydra.run.dir={tmp_path / 'best'}"], tmp_path,
                timeout=300, fake=False, OMP_NUM_THREADS=None)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    again = json.loads((tmp_path / "best" / "metrics.json").read_text())
    trial_metrics = json.loads((best_dir / "metrics.json").read_text())
    assert again["objective"] == best.value
    assert again["eval_history"] == trial_metrics["eval_history"] and again["train_loss"] == trial_metrics["train_loss"]
