"""Settings that change a run's numbers on the same hardware, applied and recorded in one place.

On CPU the result of a matmul or a reduction depends on how many intra-op threads split it, so the
same config and seed give bitwise-equal losses only with the same thread count. A sweep gives each
trial a share of the cores (:func:`intra_op_share`); the trial records what it ran with in
``manifest.json`` (``numerics``); ``best.yaml`` pins it as ``trainer.num_threads`` and
:func:`apply_threads` applies it, so a re-run reproduces the trial whatever the sweep's worker count.

Nothing heavy at import time (the sweep process uses :func:`intra_op_share` without torch).
"""

from __future__ import annotations

import os
from typing import Any, Self

ENV = "OMP_NUM_THREADS"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def intra_op_share(n_workers: int, environ: dict[str, str] | None = None) -> str | None:
    """``OMP_NUM_THREADS`` for each of ``n_workers`` parallel CPU trials: the usable cores split between
    them (all of them for one worker), so trials never oversubscribe the machine. None when the user set
    ``OMP_NUM_THREADS`` themselves (their setting is inherited as it is)."""
    env = os.environ if environ is None else environ
    if env.get(ENV):
        return None
    return str(max(1, usable_cpus() // max(1, n_workers)))


class apply_threads:
    """``trainer.num_threads`` for the duration of a run (``with apply_threads(n): ...``): > 0 sets torch's
    intra-op threads; 0 keeps the process's own (OMP_NUM_THREADS, or torch's default of all cores).
    The previous count comes back afterwards (a warm sweep worker runs several trials in one process)."""

    def __init__(self, n: int):
        self.n = int(n or 0)
        self._before: int | None = None

    def __enter__(self) -> Self:
        import torch

        if self.n > 0:
            self._before = torch.get_num_threads()
            if self._before != self.n:
                torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is not None and self._before != self.n:
            import torch

            torch.set_num_threads(self._before)


def record(precision: str) -> dict[str, Any]:
    """What the run computed with: intra-op threads and the flags that change results (for manifest.json)."""
    import torch

    out: dict[str, Any] = {
        "num_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get(ENV),
        "precision": precision,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    return out


def recorded_threads(manifest: dict[str, Any] | None) -> int | None:
    """The intra-op thread count a finished run recorded in its manifest, if any."""
    value = ((manifest or {}).get("numerics") or {}).get("num_threads")
    return int(value) if isinstance(value, int) and value > 0 else None
