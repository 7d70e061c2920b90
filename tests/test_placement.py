"""GPU placement logic (ftsweep.sweeper.placement) on fake device lists: no GPU needed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ftsweep.sweeper.grammar import SweepInputError
from ftsweep.sweeper.placement import GpuPool, device_groups


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
