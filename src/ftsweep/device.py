"""The one place that asks the machine about GPUs: presence, precision, free and peak memory, the list of
devices (MIG slices included) and how devices are handed to sweep trials.

Two kinds of probes:
- without torch (``cuda_available``, ``list_devices``): ``nvidia-smi -L``, for config validation and the
  sweep process, which never import torch;
- with torch (``has_cuda``, ``bf16_supported``, memory): inside a training process.

Rules that come from the libraries (environment.md):
- trl refuses ``n_gpu > 1`` without a distributed launcher, and ``n_gpu`` is ``torch.cuda.device_count()``
  when ``WORLD_SIZE`` is unset: :func:`pin_single_gpu` makes one GPU visible per process before CUDA starts.
- ``torch.cuda.is_bf16_supported()`` says True on T4 / V100 (emulated bf16): ask with
  ``including_emulation=False`` so ``precision: auto`` picks fp16 (with a grad scaler) there.
- A GPU in MIG mode is not usable as a whole; each slice is a device of its own, addressed by its
  ``MIG-...`` UUID in ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence

from ftsweep.config.options import PRECISION_DTYPES as DTYPE_NAMES
from ftsweep.config.options import PRECISIONS

MiB = 2**20

_GPU_LINE = re.compile(r"^GPU (\d+):")
_MIG_LINE = re.compile(r"^\s+MIG .*?Device\s+(\d+):\s*\(UUID: (MIG-[^)]+)\)")


# ----------------------------------------------------------------------------- without torch
def nvidia_smi_list() -> str | None:
    """``nvidia-smi -L`` output, or None when the tool is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def parse_nvidia_smi(text: str) -> list[str]:
    """Device ids from ``nvidia-smi -L``: a GPU's index, or the UUIDs of its MIG slices when it has any.

    A GPU in MIG mode lists its slices on indented lines after it (``  MIG 1g.10gb Device 0: (UUID:
    MIG-...)``); CUDA cannot use such a GPU whole, so the slices replace it.
    """
    devices: list[str] = []
    current: str | None = None
    slices: list[str] = []

    def flush() -> None:
        if current is not None:
            devices.extend(slices or [current])

    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            flush()
            current, slices = gpu.group(1), []
            continue
        mig = _MIG_LINE.match(line)
        if mig and current is not None:
            slices.append(mig.group(2))
    flush()
    return devices


def visible_from_env(value: str) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` as a list ("" or "-1" = no device)."""
    ids = [g.strip() for g in value.split(",") if g.strip()]
    if "-1" in ids:  # CUDA stops at the first invalid id
        ids = ids[: ids.index("-1")]
    return ids


def list_devices(environ: Mapping[str, str] | None = None, smi_output: str | None = None) -> list[str]:
    """The devices this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``."""
    env = os.environ if environ is None else environ
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        return visible_from_env(env["CUDA_VISIBLE_DEVICES"])
    text = nvidia_smi_list() if smi_output is None else smi_output
    return parse_nvidia_smi(text) if text else []


def cuda_available() -> bool:
    """True when an NVIDIA GPU (or MIG slice) is visible, without importing torch (cheap, for validation)."""
    return bool(list_devices())


def assign_devices(devices: Sequence[str], gpus_per_trial: int = 1, trials_per_gpu: int = 1) -> list[str]:
    """Slots for sweep trials, each a ``CUDA_VISIBLE_DEVICES`` value.

    ``gpus_per_trial`` consecutive devices form one slot (a trial under torchrun); ``trials_per_gpu`` > 1
    lets small trials share a device (each slot is listed that many times). MIG slices cannot be
    combined: a CUDA process sees at most one MIG slice.

    Raises:
        ValueError: bad counts, more GPUs per trial than devices, or several MIG slices per trial.
    """
    if gpus_per_trial < 1 or trials_per_gpu < 1:
        raise ValueError(f"gpus_per_trial and trials_per_gpu must be >= 1 (got {gpus_per_trial}, {trials_per_gpu})")
    if gpus_per_trial > 1 and trials_per_gpu > 1:
        raise ValueError("gpus_per_trial > 1 and trials_per_gpu > 1 cannot be combined")
    if not devices:
        return []
    if gpus_per_trial > len(devices):
        raise ValueError(f"gpus_per_trial={gpus_per_trial} but only {len(devices)} device(s): {', '.join(devices)}")
    if gpus_per_trial > 1 and any(d.startswith("MIG-") for d in devices):
        raise ValueError("a process can use only one MIG slice: gpus_per_trial must be 1 on MIG devices")
    groups = [",".join(devices[i : i + gpus_per_trial]) for i in range(0, len(devices) - gpus_per_trial + 1, gpus_per_trial)]
    # Round-robin over devices: trials spread out before they start sharing one.
    return [g for _ in range(trials_per_gpu) for g in groups]


def pin_single_gpu(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Make one GPU visible to this process unless a distributed launcher started it.

    Must run before CUDA is initialised (before the first ``torch.cuda`` call). Under torchrun /
    accelerate / srun-with-WORLD_SIZE each rank keeps every device and picks ``LOCAL_RANK``.
    Returns the value set, or None when nothing changed.
    """
    env = os.environ if environ is None else environ
    if env.get("WORLD_SIZE"):
        return None
    devices = list_devices(env)
    if not devices and env.get("CUDA_VISIBLE_DEVICES") is None:
        devices = [str(i) for i in range(_torch_device_count())]  # no nvidia-smi (some containers)
    if len(devices) <= 1:
        return None
    env["CUDA_VISIBLE_DEVICES"] = devices[0]
    return devices[0]


def _torch_device_count() -> int:
    """GPUs torch sees; torch counts through NVML when it can, which does not start CUDA."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


# -------------------------------------------------------------------------------- with torch
def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def local_device() -> str | int:
    """This process's device for placing weights: ``LOCAL_RANK`` (DDP) or 0, or "cpu"."""
    if has_cuda():
        return int(os.environ.get("LOCAL_RANK", "0"))
    return "cpu"


def bf16_supported() -> bool:
    """Native bf16 (compute capability >= 8.0); emulated bf16 on T4 / V100 does not count."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def use_checkpointing(setting: bool | None, on_cuda: bool | None = None) -> bool:
    """``trainer.gradient_checkpointing``: true / false, or null = on with a GPU (trl's default; what lets an 8B
    QLoRA at cutoff 2048 fit a 16 GB card) and off on CPU (the tiny model needs no memory saving)."""
    if setting is not None:
        return bool(setting)
    return has_cuda() if on_cuda is None else on_cuda


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on GPUs with native bf16, fp16 on older GPUs (with a grad scaler), fp32 on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (got {precision!r})")
    if precision != "auto":
        return precision
    if bf16_supported():
        return "bf16"
    return "fp16" if has_cuda() else "fp32"


def dtype_name(name: str, precision: str = "auto") -> str:
    """A config dtype name; ``auto`` follows the (resolved) training precision."""
    if name != "auto":
        return name
    return DTYPE_NAMES[resolve_precision(precision)]


def torch_dtype(name: str, precision: str = "auto"):
    """A config dtype name (``auto`` follows ``precision``) -> torch.dtype."""
    import torch

    return getattr(torch, dtype_name(name, precision))  # a name of config.options.DTYPE_BYTES


def free_memory_mib() -> tuple[float, str]:
    """Memory a run in this process can use on its device: CUDA free bytes plus what this process's
    caching allocator already holds (in a warm sweep worker, the kept base model, which the estimate
    counts too), else available RAM."""
    if has_cuda():
        import torch

        device = int(os.environ.get("LOCAL_RANK", "0"))
        free, _total = torch.cuda.mem_get_info(device)
        return (free + torch.cuda.memory_reserved(device)) / MiB, f"cuda:{device}"
    import psutil

    return psutil.virtual_memory().available / MiB, "cpu"


def peak_memory_mib() -> dict[str, float]:
    """Peak memory of this process: on CUDA both what tensors held (allocated) and what the caching
    allocator took from the driver (reserved, what another process cannot use); on CPU the peak RSS."""
    import torch

    if torch.cuda.is_available():
        return {"allocated": torch.cuda.max_memory_allocated() / MiB, "reserved": torch.cuda.max_memory_reserved() / MiB}
    rss = peak_rss_mib()
    return {"allocated": rss, "reserved": rss}


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB since :func:`reset_peak_memory`: Linux's ``VmHWM``.

    Not ``getrusage``'s ``ru_maxrss``: Linux folds the *parent's* high-water mark into it at exec (a
    trial spawned by a large sweep or test process would report the parent's peak), and
    ``clear_refs`` does not reset it. ``ru_maxrss`` only where ``/proc`` is missing (macOS: bytes).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MiB if sys.platform == "darwin" else maxrss / 1024


def reset_peak_memory() -> float:
    """Restart this process's peak-memory marks from what it holds now (before a run loads its model);
    returns the current RSS in MiB.

    Without the reset, a spike before the model loads (imports, tokenization) would hide part of the
    model's memory in ``peak_rss_mb - rss_before_model_mb``, and in a warm sweep worker one trial's CUDA
    peak would carry over into the next trial's metrics. RSS: Linux ``clear_refs`` 5 (elsewhere the peak
    keeps earlier spikes).
    """
    import psutil
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux, or not permitted
    return psutil.Process().memory_info().rss / MiB
