"""A fixed value on the command line for a key the sweep file searches fixes it for every trial (fake trials)."""

from __future__ import annotations

import sys

from sweep_helpers import load, run


def test_a_fixed_value_on_the_command_line_fixes_a_param_the_sweep_file_searches(tmp_path):
    # sweep=quickstart searches lora: choice(r8, r16); `lora=r8` on the command line was silently outvoted by the
    # sampled value (trials with r16); it now fixes lora for every trial, as a sweep value there replaces the file's
    sd = tmp_path / "s"
    r = run([sys.executable, "-m", "ftsweep", "train", "-m", "sweep=quickstart", "lora=r8", "logger=none",
             f"hydra.sweep.dir={sd}", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_workers=1",
             "hydra.sweeper.warm_workers=false", "hydra.sweeper.report=false", "hydra.sweeper.progress=plain",
             "hydra.sweeper.sampler.seed=0"], tmp_path)
    assert r.returncode == 0, r.stderr
    trials = load(sd, name="quickstart").trials
    assert len(trials) == 3
    assert all("lora" not in t.params and "lora=r8" in t.user_attrs["overrides"] for t in trials)
    assert not any("lora=r16" in t.user_attrs["overrides"] for t in trials)
