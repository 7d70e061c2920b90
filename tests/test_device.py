"""Devices simulated on CPU: nvidia-smi lists (1, 2, 8 GPUs, MIG), trial slots, one GPU per process,
precision for compute capability 7.5 / 8.0 / 9.0, the orphan check under torchrun, the OOM retry rules."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from ftsweep import device

UUID = "GPU-5d3a1f0e-0000-0000-0000-{:012d}"
MIG = "MIG-9f1c2b3a-0000-0000-0000-{:012d}"


def smi(n: int, mig: dict[int, int] | None = None) -> str:
    """Fake ``nvidia-smi -L``: n GPUs, ``mig[i]`` slices on GPU i."""
    lines = []
    for i in range(n):
        lines.append(f"GPU {i}: NVIDIA A100-SXM4-80GB (UUID: {UUID.format(i)})")
        for k in range((mig or {}).get(i, 0)):
            lines.append(f"  MIG 1g.10gb     Device  {k}: (UUID: {MIG.format(10 * i + k)})")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("n", [1, 2, 8])
def test_gpus_listed_by_index(n):
    assert device.parse_nvidia_smi(smi(n)) == [str(i) for i in range(n)]


def test_mig_slices_replace_their_gpu():
    # GPU 0 split in 3 slices, GPU 1 whole, GPU 2 split in 2
    assert device.parse_nvidia_smi(smi(3, {0: 3, 2: 2})) == [MIG.format(0), MIG.format(1), MIG.format(2), "1",
                                                             MIG.format(20), MIG.format(21)]


def test_list_devices_prefers_cuda_visible_devices():
    assert device.list_devices({"CUDA_VISIBLE_DEVICES": "2,3"}, smi_output=smi(8)) == ["2", "3"]
    assert device.list_devices({"CUDA_VISIBLE_DEVICES": ""}, smi_output=smi(8)) == []
    assert device.list_devices({"CUDA_VISIBLE_DEVICES": "0,-1,1"}, smi_output=smi(8)) == ["0"]
    assert device.list_devices({}, smi_output=smi(2)) == ["0", "1"]
    assert device.list_devices({}, smi_output="") == []


@pytest.mark.parametrize("n,per_trial,share,expected", [
    (1, 1, 1, ["0"]),
    (2, 1, 1, ["0", "1"]),
    (8, 1, 1, [str(i) for i in range(8)]),
    (8, 2, 1, ["0,1", "2,3", "4,5", "6,7"]),
    (8, 3, 1, ["0,1,2", "3,4,5"]),  # the 2 left over stay idle
    (2, 1, 2, ["0", "1", "0", "1"]),  # two small trials per GPU, spread first
    (0, 1, 1, []),
])
def test_assign_devices(n, per_trial, share, expected):
    assert device.assign_devices([str(i) for i in range(n)], per_trial, share) == expected


def test_assign_mig_slices_one_per_trial():
    devices = device.parse_nvidia_smi(smi(1, {0: 7}))
    assert device.assign_devices(devices) == devices and len(devices) == 7
    with pytest.raises(ValueError, match="one MIG slice"):
        device.assign_devices(devices, gpus_per_trial=2)
    with pytest.raises(ValueError, match="only 2 device"):
        device.assign_devices(["0", "1"], gpus_per_trial=4)


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """Put an ``nvidia-smi`` printing the given text first on PATH."""

    def install(text: str) -> None:
        (tmp_path / "smi.txt").write_text(text)
        exe = tmp_path / "nvidia-smi"
        exe.write_text(f"#!/bin/sh\ncat {tmp_path / 'smi.txt'}\n")
        exe.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return install


def test_sweeper_auto_gpus_include_mig_slices(fake_nvidia_smi):
    from ftsweep.sweeper.runner import detect_gpus

    fake_nvidia_smi(smi(2, {1: 2}))
    assert detect_gpus("auto") == ["0", MIG.format(10), MIG.format(11)]
    assert detect_gpus(None) is None and detect_gpus("0,1") == ["0", "1"]


def test_one_visible_gpu_per_process_without_a_launcher(fake_nvidia_smi):
    env = {"CUDA_VISIBLE_DEVICES": "3,5"}
    assert device.pin_single_gpu(env) == "3" and env["CUDA_VISIBLE_DEVICES"] == "3"
    env = {"CUDA_VISIBLE_DEVICES": "3,5", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert device.pin_single_gpu(env) is None and env["CUDA_VISIBLE_DEVICES"] == "3,5"  # torchrun: each rank picks LOCAL_RANK
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    assert device.pin_single_gpu(env) is None
    fake_nvidia_smi(smi(8))
    env = {}
    assert device.pin_single_gpu(env) == "0" and env == {"CUDA_VISIBLE_DEVICES": "0"}
    fake_nvidia_smi(smi(1, {0: 2}))
    env = {}
    assert device.pin_single_gpu(env) == MIG.format(0)


def test_validation_probe_sees_mig_only_machines(fake_nvidia_smi):
    from ftsweep.device import cuda_available  # what validation asks

    fake_nvidia_smi("")
    assert not cuda_available()
    fake_nvidia_smi(smi(1, {0: 2}))
    assert cuda_available()


# ------------------------------------------------------------------------------ precision
@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of the given compute capability, as torch reports it (no real GPU needed)."""

    def install(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda d=None: SimpleNamespace(major=major, minor=minor, name=f"sm_{major}{minor}"))
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (major, minor))
        # A T4 / V100 can create bf16 tensors (emulation): torch's default check says "supported".
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda d: True)
        monkeypatch.setattr(torch.version, "hip", None)

    return install


@pytest.mark.parametrize("capability,precision,compute", [
    ((7, 5), "fp16", torch.float16),  # T4: emulated bf16 does not count
    ((7, 0), "fp16", torch.float16),  # V100
    ((8, 0), "bf16", torch.bfloat16),  # A100
    ((9, 0), "bf16", torch.bfloat16),  # H100
])
def test_precision_and_compute_dtype_from_capability(fake_gpu, compose, capability, precision, compute):
    from ftsweep.model import build_quantization

    fake_gpu(*capability)
    assert device.resolve_precision("auto") == precision
    q = build_quantization(compose("quantization=nf4").quantization, "auto")
    assert q.bnb_4bit_compute_dtype == compute
    assert device.torch_dtype("auto") == compute  # model.dtype auto loads the weights in the same dtype


def test_compute_dtype_follows_trainer_precision(fake_gpu, compose):
    from ftsweep.config import ConfigError
    from ftsweep.model import build_quantization

    fake_gpu(8, 0)
    q = compose("quantization=nf4").quantization
    assert build_quantization(q, "fp16").bnb_4bit_compute_dtype == torch.float16  # fp16 autocast -> fp16 matmuls
    assert build_quantization(q, "bf16").bnb_4bit_compute_dtype == torch.bfloat16
    fake_gpu(7, 5)
    explicit = compose("quantization=nf4", "quantization.bnb_4bit_compute_dtype=bfloat16").quantization
    with pytest.raises(ConfigError, match="bnb_4bit_compute_dtype: bfloat16 is not supported natively"):
        build_quantization(explicit, "auto")


def test_cpu_precision_is_fp32():
    assert not torch.cuda.is_available()
    assert device.resolve_precision("auto") == "fp32" and device.torch_dtype("auto") == torch.float32
    assert device.resolve_precision("bf16") == "bf16"
    peak = device.peak_memory_mib()
    assert peak["allocated"] > 0 and peak["reserved"] == peak["allocated"]


# ------------------------------------------------------------------------------ orphan check
def test_trial_orphan_check_follows_the_sweep_process_not_the_parent(monkeypatch):
    """Under torchrun / srun the trial's parent is the launcher; the sweep process is its grandparent."""
    from ftsweep.sweeper import trial as trial_mod

    sweep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, not our parent
    try:
        from ftsweep.sweeper.launch import TrialLaunch

        monkeypatch.setenv("FTSWEEP_PARENT_PID", str(sweep.pid))  # what the sweep process hands over ...
        monkeypatch.setenv("FTSWEEP_TRIAL_ID", "1")
        monkeypatch.setenv("FTSWEEP_STORAGE", "sqlite://")
        ctx = TrialLaunch.from_env()  # ... read back on the trial side
        assert ctx is not None and ctx.parent_pid == sweep.pid
        reporter = trial_mod.TrialReporter(ctx)
        exits = []
        monkeypatch.setattr(trial_mod.os, "_exit", lambda code: exits.append(code))
        monkeypatch.setattr(reporter, "_connect", lambda: None)
        reporter.heartbeat(force=True)
        assert exits == []  # the sweep process lives: keep training
        sweep.kill()
        sweep.wait()
        reporter.heartbeat(force=True)
        assert exits == [3]  # it is gone: stop
    finally:
        sweep.kill()


# ------------------------------------------------------------------------------ OOM retry
def _oom_runner(tmp_path, phase: str | None):
    from omegaconf import OmegaConf

    from ftsweep.sweeper.runner import Outcome, SweepRunner

    trial_dir = tmp_path / "trial_0"
    (trial_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save({"trainer": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                                "per_device_eval_batch_size": 16}}, trial_dir / ".hydra" / "config.yaml")
    runner = SweepRunner.__new__(SweepRunner)
    runner.s = SimpleNamespace(conf=SimpleNamespace(retry_oom=True))
    runner.progress = SimpleNamespace(finished_trial=lambda *a: None)
    started = []
    runner._start = lambda trial, overrides, oom_retried: started.append(overrides)
    attrs = {}
    job = SimpleNamespace(oom_retried=False, trial_dir=trial_dir, overrides=["optimizer.lr=0.001"],
                          trial=SimpleNamespace(number=0, set_user_attr=attrs.__setitem__))
    doc = {"reason": "oom: OutOfMemoryError: CUDA out of memory"} | ({"phase": phase} if phase else {})
    return runner._retry_oom(job, Outcome("failed", reason=doc["reason"], doc=doc)), started


def test_oom_retry_halves_train_and_eval_micro_batch(tmp_path):
    retried, started = _oom_runner(tmp_path, "run")
    assert retried
    assert started == [["optimizer.lr=0.001", "trainer.per_device_train_batch_size=4",
                        "trainer.gradient_accumulation_steps=2", "trainer.per_device_eval_batch_size=8"]]


def test_load_time_oom_is_not_retried(tmp_path):
    retried, started = _oom_runner(tmp_path, "load")
    assert not retried and started == []


def test_failure_during_model_load_is_marked_load(compose, tmp_path, cache_dir, monkeypatch, capsys):
    """failure.json says ``phase: load`` when the weights fail to load (the sweeper does not retry such an OOM).
    Through ``ftsweep.cli.main`` in this process, as the ``ftsweep`` process runs it (a process only paid the
    imports again)."""
    import json
    import shutil

    from ftsweep.cli import main
    from ftsweep.model import resolve_model_path

    tiny = resolve_model_path(compose())
    broken = tmp_path / "no-weights"
    broken.mkdir()
    for f in os.listdir(tiny):
        if not f.endswith(".safetensors") and not f.endswith(".json.index"):
            shutil.copy(os.path.join(tiny, f), broken / f)
    run_dir = tmp_path / "run"
    monkeypatch.setenv("FTSWEEP_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    code = main(["train", "model=llama3_8b", f"model.name_or_path={broken}", "model.max_context=1024",
                 "data.max_rows=40", "data.cutoff_len=256", "logger=none", f"hydra.run.dir={run_dir}"])
    assert code == 1, capsys.readouterr().err[-2000:]
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["phase"] == "load", failure
