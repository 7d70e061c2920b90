"""Which GPUs a trial gets: ``gpus_per_trial`` devices per trial, at most ``trials_per_gpu`` trials per GPU.

Pure logic on a list of device ids (no torch, no nvidia-smi here; :func:`ftsweep.sweeper.runner.detect_gpus`
lists them), so it is unit-tested with fake device lists. The slot layout follows
``ftsweep.device.assign_devices``: consecutive devices form one slot ("0,1" for k=2); a slot is handed
to at most ``trials_per_gpu`` trials at once, the least-used slot first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ftsweep.sweeper.grammar import SweepInputError


def device_groups(devices: Sequence[str], gpus_per_trial: int = 1, trials_per_gpu: int = 1) -> list[str]:
    """The disjoint device groups (CUDA_VISIBLE_DEVICES values) trials run on; one-line errors."""
    if gpus_per_trial < 1 or trials_per_gpu < 1:
        raise SweepInputError(f"hydra.sweeper.gpus_per_trial and trials_per_gpu must be >= 1 "
                              f"(got {gpus_per_trial}, {trials_per_gpu})")
    if gpus_per_trial > 1 and trials_per_gpu > 1:
        raise SweepInputError("hydra.sweeper.trials_per_gpu: a multi-GPU trial (gpus_per_trial > 1) cannot share "
                              "its GPUs; set trials_per_gpu=1")
    devices = [str(d) for d in devices]
    if len(set(devices)) != len(devices):
        raise SweepInputError(f"hydra.sweeper.gpus: device listed twice in {devices}")
    if gpus_per_trial > len(devices):
        raise SweepInputError(f"hydra.sweeper.gpus_per_trial={gpus_per_trial} but only {len(devices)} GPU(s): "
                              f"{', '.join(devices)}")
    if gpus_per_trial > 1 and any(d.startswith("MIG-") for d in devices):
        raise SweepInputError("hydra.sweeper.gpus_per_trial: a process can use one MIG slice only; set 1")
    n = len(devices) // gpus_per_trial
    return [",".join(devices[i * gpus_per_trial:(i + 1) * gpus_per_trial]) for i in range(n)]


class GpuPool:
    """Hands out device groups to running trials; never more than ``trials_per_gpu`` trials per group."""

    def __init__(self, devices: Sequence[str] | None, gpus_per_trial: int = 1, trials_per_gpu: int = 1):
        self.groups = device_groups(devices, gpus_per_trial, trials_per_gpu) if devices else []
        self.trials_per_gpu = trials_per_gpu
        self.in_use: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return bool(self.groups)

    @property
    def capacity(self) -> int:
        """Trials that can run at once (0 = no GPUs: unlimited by this pool)."""
        return len(self.groups) * self.trials_per_gpu

    def acquire(self) -> str | None:
        """The least-used group with a free place (ties: the first listed), or None when all are full."""
        free = [g for g in self.groups if self.in_use[g] < self.trials_per_gpu]
        if not free:
            return None
        group = min(free, key=lambda g: (self.in_use[g], self.groups.index(g)))
        self.in_use[group] += 1
        return group

    def release(self, group: str | None) -> None:
        if group is not None and self.in_use[group] > 0:
            self.in_use[group] -= 1
