"""GPU placement logic (ftsweep.sweeper.placement) on fake device lists: no GPU needed."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from ftsweep.sweeper.grammar import SweepInputError
from ftsweep.sweeper.placement import GpuPool, device_groups

sys.path.insert(0, str(Path(__file__).parent))


def test_groups_one_gpu_per_trial():
    assert device_groups(["0", "1", "2", "3"]) == ["0", "1", "2", "3"]


def test_groups_k_gpus_per_trial_drop_the_remainder():
    assert device_groups(["0", "1", "2", "3", "4"], gpus_per_trial=2) == ["0,1", "2,3"]
    assert device_groups(["5", "7", "9"], gpus_per_trial=3) == ["5,7,9"]


@pytest.mark.parametrize("devices,k,m,field", [
    (["0"], 2, 1, "gpus_per_trial=2"),
    (["0", "1"], 2, 2, "trials_per_gpu"),
    (["0", "0"], 1, 1, "listed twice"),
    (["MIG-a", "MIG-b"], 2, 1, "MIG"),
    (["0"], 0, 1, ">= 1"),
])
def test_bad_placement_is_one_line(devices, k, m, field):
    with pytest.raises(SweepInputError) as err:
        device_groups(devices, k, m)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_pool_spreads_before_sharing_and_never_exceeds_trials_per_gpu():
    pool = GpuPool(["0", "1"], trials_per_gpu=2)
    assert pool.capacity == 4
    got = [pool.acquire() for _ in range(5)]
    assert got[:2] == ["0", "1"]  # one trial per GPU before any GPU gets a second
    assert sorted(got[:4]) == ["0", "0", "1", "1"] and got[4] is None
    pool.release("1")
    assert pool.acquire() == "1" and pool.acquire() is None


def test_pool_k_gpus_per_trial():
    pool = GpuPool(["0", "1", "2", "3"], gpus_per_trial=2)
    assert pool.capacity == 2
    assert [pool.acquire(), pool.acquire(), pool.acquire()] == ["0,1", "2,3", None]


def test_pool_without_devices_is_disabled():
    pool = GpuPool(None)
    assert not pool.enabled and pool.capacity == 0 and pool.acquire() is None


def test_pool_random_churn_respects_the_limit():
    rng = random.Random(0)
    pool = GpuPool([str(i) for i in range(3)], trials_per_gpu=3)
    held: list[str] = []
    for _ in range(2000):
        if held and (rng.random() < 0.5 or len(held) == pool.capacity):
            pool.release(held.pop(rng.randrange(len(held))))
        else:
            g = pool.acquire()
            assert g is not None  # a place is free whenever fewer than capacity are held
            held.append(g)
        assert max(Counter(held).values(), default=0) <= 3
        # least-used first: the loads never differ by more than what releases can cause
        assert Counter(held) == pool.in_use - Counter()


# ---------------------------------------------------------------------- through the runner
def test_sweep_shares_gpus_up_to_trials_per_gpu(tmp_path):
    """A sweep on 2 (fake: CUDA_VISIBLE_DEVICES=0,1) GPUs, 2 trials per GPU, 6 workers asked: 4 run at once, never 3 on one GPU."""
    import json

    from sweep_helpers import run, sweep_args

    sd = tmp_path / "s"
    r = run(sweep_args(sd, "hydra.sweeper.gpus=[0,1]", "hydra.sweeper.trials_per_gpu=2", "hydra.sweeper.pruner.name=none",
                       n_trials=6, workers=6), tmp_path, FAKE_STEP_S="0.6", CUDA_VISIBLE_DEVICES="0,1")
    assert r.returncode == 0, r.stderr
    assert "n_workers=6 > 4 GPU place(s)" in r.stderr
    runs = [json.loads((sd / f"trial_{n}" / "metrics.json").read_text()) for n in range(6)]
    assert {m["cuda_visible_devices"] for m in runs} == {"0", "1"}
    # Each trial's run lies inside the time the sweep held its GPU place, so the overlaps of the runs are a
    # lower bound of the sharing: checked at every start (where an interval overlap is largest).
    peak = {}
    for m in runs:
        gpu, t = m["cuda_visible_devices"], m["t_start"]
        same = [o for o in runs if o["cuda_visible_devices"] == gpu and o["t_start"] <= t <= o["t_end"]]
        peak[gpu] = max(peak.get(gpu, 0), len(same))
    assert max(peak.values()) == 2  # trials did share a GPU, two at most


def test_k_gpus_per_trial_runs_the_entry_point_under_torchrun(tmp_path):
    import sys
    from types import SimpleNamespace

    from ftsweep.config.sweeper import SweeperConf
    from ftsweep.sweeper.runner import DEFAULT_COMMAND, SweepRunner

    conf = SweeperConf(gpus_per_trial=2)
    fake = SimpleNamespace(s=SimpleNamespace(conf=conf, command=list(DEFAULT_COMMAND), gpus=["0", "1", "2", "3"]))
    assert SweepRunner._command(fake) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                          "--nproc_per_node=2", "-m", "ftsweep.sweeper.trial"]
    fake.s.conf = SweeperConf(gpus_per_trial=1)
    assert SweepRunner._command(fake) == DEFAULT_COMMAND
