"""Shared helpers of the CPU benchmarks: run ftsweep through its command line, time processes and their
peak RSS, machine facts and versions, medians, tables and the results JSON.

Every benchmark talks to ftsweep only through ``python -m ftsweep ...`` and the files a run writes
(``metrics.json``, ``log_history.json``), so a refactor of the package's internals does not break them.
"""

from __future__ import annotations

import atexit
import importlib.metadata as md
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
BUSY_NOTE = (
    "measured on a shared 2-core CPU machine with other jobs running (figures are noisy; "
    "ratios come from paired runs in the same invocation)"
)


def bench_env(cache_dir: str | os.PathLike | None = None, **extra: str) -> dict[str, str]:
    """Environment for ftsweep child processes: offline, quiet, this checkout's ``src`` first on the path."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({
        "WANDB_MODE": env.get("WANDB_MODE", "offline"),
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    })
    # One intra-op thread unless the caller chose: on a shared, busy machine OpenMP threads spin-wait
    # against other processes and a 2-thread run can cost several times the CPU of a 1-thread run.
    env.setdefault("OMP_NUM_THREADS", "1")
    if cache_dir is not None:
        env["FTSWEEP_CACHE_DIR"] = str(cache_dir)
    env.update(extra)
    return env


def default_cache() -> Path:
    """The benchmarks' own model/data cache (built once, reused by every script; not the user's cache)."""
    path = Path(os.environ.get("FTSWEEP_BENCH_CACHE", Path(tempfile.gettempdir()) / "ftsweep-bench-cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Proc:
    """One finished child process: wall-clock seconds, CPU seconds (user + system: less sensitive to other
    jobs on the machine than wall time), its own peak RSS (MiB), exit code and output."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str


def run_proc(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
             check: bool = True, timeout: float = 900) -> Proc:
    """Run ``cmd``; wall time from fork to exit and the peak RSS of that child alone (``wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.Popen(list(cmd), env=env, cwd=cwd or ROOT, stdout=out, stderr=err)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        res = Proc(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, p.returncode, out.read().decode(errors="replace"),
                   err.read().decode(errors="replace"))
    if check and res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{tail}")
    return res


def scratch(prefix: str, keep: bool = False) -> Path:
    """A new working folder for a benchmark's sweeps and runs, removed when the script exits (also after an
    error or Ctrl-C); ``keep`` (the scripts' ``--keep``) leaves it and prints where it is. Results JSON and plots
    are never written here."""
    d = Path(tempfile.mkdtemp(prefix=prefix))

    def done() -> None:
        if keep:
            print(f"working folder kept: {d}", flush=True)
        else:
            shutil.rmtree(d, ignore_errors=True)

    atexit.register(done)
    return d


def ftsweep_cmd(*args: str) -> list[str]:
    return [PY, "-m", "ftsweep", *args]


def ensure_tiny_model(env: dict[str, str]) -> None:
    """Build the tiny model (and warm imports) once so no timed run pays for it."""
    with tempfile.TemporaryDirectory() as d:
        run_proc(ftsweep_cmd("train", "logger=none", "trainer.max_steps=1", "trainer.eval_steps=100",
                             "data.val_size=0", "objective.metric=train_loss", f"hydra.run.dir={d}/run"), env=env)


def eval_interval(steps: int) -> int:
    """Steps between evaluations of a proxy-task run: 5 for smoke runs, 10 up to 80 steps (as sweep=quickstart),
    else 8 evaluations (as sweep=quickstart_em's 400 steps, every 50)."""
    return 5 if steps < 20 else 10 if steps <= 80 else steps // 8


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def machine() -> dict[str, Any]:
    """Facts about where the figures were taken."""
    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_1_5_15min_at_write": list(os.getloadavg()),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1 (bench default)"),
        "note": BUSY_NOTE if (os.cpu_count() or 1) <= 2 else "ratios come from paired runs in the same invocation",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    torch = sys.modules.get("torch")  # named only where the benchmark itself imported torch
    if torch is not None and torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    try:
        import psutil

        facts["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return facts


def versions() -> dict[str, str | None]:
    out = {}
    for pkg in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "optuna", "hydra-core", "wandb"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def write_result(name: str, payload: dict[str, Any], out: str | os.PathLike | None = None) -> Path:
    """``bench/results/<name>.json`` (or ``out``) with machine facts and versions added."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "machine": machine(), "versions": versions(), **payload}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None
