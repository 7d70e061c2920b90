"""Derived values (lora.alpha, gradient accumulation, effective batch) are shown where a trial is: its
``trial N started`` line and trials.md."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from sweep_helpers import run, sweep_args

from ftsweep.report import trials_table
from ftsweep.sweeper.derived import derived_settings


def test_derived_settings_come_from_the_trials_own_overrides():
    overrides = ["lora.r=16", "trainer.per_device_train_batch_size=4", "lora.alpha=32",
                 "trainer.gradient_accumulation_steps=8"]
    keys = ["lora.alpha", "trainer.gradient_accumulation_steps"]
    assert derived_settings(overrides, keys) == {"lora.alpha": 32, "trainer.gradient_accumulation_steps": 8,
                                                 "effective_batch": 32}
    # an OOM re-run halves the micro-batch and doubles accumulation (appended overrides win, as in Hydra)
    retried = [*overrides, "trainer.per_device_train_batch_size=2", "trainer.gradient_accumulation_steps=16"]
    assert derived_settings(retried, keys)["trainer.gradient_accumulation_steps"] == 16
    assert derived_settings(retried, keys)["effective_batch"] == 32
    assert derived_settings(["optimizer.lr=0.001"], []) == {}  # nothing derived, batch not given


def test_trials_table_has_a_column_per_derived_value():
    study = optuna.create_study()
    for r, ratio in ((8, 1), (16, 2)):
        study.enqueue_trial({"lora.r": r, "alpha_ratio": ratio})
        t = study.ask({"lora.r": CategoricalDistribution([8, 16]), "alpha_ratio": CategoricalDistribution([1, 2])})
        t.set_user_attr("derived", {"lora.alpha": r * ratio, "effective_batch": 32})
        study.tell(t, 1.0 / r)
    lines = trials_table(study).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:6] == ["trial", "state", "value", "alpha_ratio", "lora.r", "lora.alpha"]
    assert head[6] == "effective_batch"
    assert lines[3].startswith("| 1 | COMPLETE | 0.0625 | 2 | 16 | 32 | 32 |")


@pytest.mark.slow
def test_started_line_shows_derived_values(tmp_path):
    sd = tmp_path / "sd"
    args = [a for a in sweep_args(sd, "sweep=batch_size", n_trials=1) if not a.startswith("optimizer.lr=")]
    r = run(args, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(ln for ln in r.stdout.splitlines() if "trial 0 started" in ln)
    m = re.search(r"effective_batch=(\d+) lr_multiplier=(\S+) trainer.gradient_accumulation_steps=(\d+) "
                  r"optimizer.lr=(\S+)$", line)
    assert m, line
    batch, mult, accum, lr = int(m[1]), float(m[2]), int(m[3]), float(m[4])
    assert accum == max(1, batch // 4) and lr == pytest.approx(2e-4 * mult * (batch / 16) ** 0.5, rel=1e-5)
