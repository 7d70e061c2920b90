"""How a trial process is started, watched and stopped: one small interface, three backends.

- :class:`LocalBackend` (``hydra.sweeper.backend=local``): a subprocess of the sweep process, in its own
  session, killed with it (PR_SET_PDEATHSIG).
- :class:`WarmBackend` (``backend=local`` with ``warm_workers=true``): long-lived worker processes
  (:mod:`ftsweep.sweeper.worker`), one per trial slot, each running trial after trial with its imports,
  data and base model kept; a trial that fails ends its worker, and the next trial gets a fresh one.
- :class:`~ftsweep.sweeper.submitit_backend.SubmititBackend` (``backend=submitit``, in
  :mod:`ftsweep.sweeper.submitit_backend` with ``make_backend``): one submitit job per trial (``AutoExecutor``: SLURM on a
  cluster, submitit's local executor elsewhere). The job runs :func:`run_trial_command`, i.e. the very same
  trial command a local trial runs, with its output in the same ``trial.log``.

Both run the same entry point (``python -m ftsweep.sweeper.trial``), so pruning, heartbeats, failure.json,
OOM retry and timeouts work the same. A job the scheduler ended before the trial could finish (time limit,
preemption, node failure, cancelled) polls as ``Exit(code=None, reason="scheduler: ...")``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ftsweep import rundir
from ftsweep.config.sweeper import SweeperConf
from ftsweep.sweeper.grammar import SweepInputError

BACKENDS = ("local", "submitit")
CLUSTERS = ("slurm", "local", "debug")


@dataclass
class Exit:
    """How a trial process ended: its exit code (<0: killed by that signal), or None and the scheduler's reason."""

    code: int | None
    reason: str | None = None


class TrialProcess(Protocol):
    log_path: Path

    def poll(self) -> Exit | None: ...  # None while running

    def kill(self) -> None: ...


class Backend(Protocol):
    name: str
    # True: the sweep hands out GPUs itself (CUDA_VISIBLE_DEVICES); False: the scheduler does (SLURM).
    places_gpus: bool

    def start(self, cmd: list[str], env: dict[str, str], trial_dir: Path, number: int) -> TrialProcess: ...

    def wait(self, seconds: float) -> None: ...  # until a trial may have ended (at most ``seconds``)

    def close(self) -> None: ...  # the sweep is over: stop what is still idle


def check_backend(conf: SweeperConf) -> None:
    """One-line errors for hydra.sweeper.backend / submitit.* before any trial starts."""
    if conf.backend not in BACKENDS:
        raise SweepInputError(f"hydra.sweeper.backend: unknown backend {conf.backend!r}; one of {', '.join(BACKENDS)}")
    if conf.backend != "submitit":
        return
    if conf.submitit.cluster is not None and conf.submitit.cluster not in CLUSTERS:
        raise SweepInputError(f"hydra.sweeper.submitit.cluster: unknown cluster {conf.submitit.cluster!r}; "
                              f"one of {', '.join(CLUSTERS)} (or null = auto)")
    try:
        import submitit  # noqa: F401
    except ImportError as err:
        raise SweepInputError("hydra.sweeper.backend=submitit needs the submitit package (pip install submitit)") from err


def cold_only(conf: SweeperConf, custom_command: bool) -> str | None:
    """Why ``warm_workers=true`` cannot apply to this sweep (its trials then run cold), or None."""
    if conf.backend != "local":
        return f"backend={conf.backend} runs one trial per job"
    if conf.gpus_per_trial > 1:
        return "a trial over several GPUs runs under torchrun, one process per trial"
    if custom_command:
        return "FTSWEEP_TRIAL_CMD wraps each trial in a command of its own"
    return None


# ---------------------------------------------------------------------- local subprocesses
class LocalProcess:
    def __init__(self, proc: subprocess.Popen, log: Any, log_path: Path):
        self.proc, self._log, self.log_path = proc, log, log_path

    def poll(self) -> Exit | None:
        code = self.proc.poll()
        if code is None:
            return None
        self._log.close()
        return Exit(code)

    def kill(self) -> None:
        kill_group(self.proc)
        self._log.close()


class LocalBackend:
    name = "local"
    places_gpus = True

    def start(self, cmd: list[str], env: dict[str, str], trial_dir: Path, number: int) -> LocalProcess:
        log_path = rundir.RunDir(trial_dir).trial_log
        log = open(log_path, "a")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                start_new_session=True, preexec_fn=_die_with_parent)
        return LocalProcess(proc, log, log_path)

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """In the trial process: get SIGKILL when the sweep process dies (Linux), so no orphan keeps training."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux / no libc.so.6: the trial's own heartbeat still exits when the sweep is gone
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the trial and everything it started (torchrun ranks, dataloader workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------------- warm workers
WORKER_COMMAND = [sys.executable, "-m", "ftsweep.sweeper.worker"]
# How long an idle worker gets to exit on its own at the end of a sweep before it is killed.
IDLE_EXIT_S = 10.0
# Variables of the slot a worker serves (set when it starts): a worker only runs trials of its own slot.
SLOT_ENV = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


class WarmWorker:
    """One worker process and its answer pipe (``start``, then ``done <code>``, per trial)."""

    def __init__(self, proc: subprocess.Popen, slot: tuple[str | None, ...]):
        self.proc, self.slot = proc, slot
        self._buffer = b""
        self.started = False  # it has taken the trial last sent
        os.set_blocking(proc.stdout.fileno(), False)

    def send(self, job: dict[str, Any]) -> None:
        self.started = False
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()

    def answer(self) -> int | None:
        """The exit code of the trial it runs, once it has answered; None while it runs."""
        try:
            chunk = os.read(self.proc.stdout.fileno(), 4096)
        except BlockingIOError:
            chunk = None
        if chunk:
            self._buffer += chunk
        while True:
            line, sep, rest = self._buffer.partition(b"\n")
            if not sep:
                return None
            self._buffer = rest
            if line.strip() == b"start":
                self.started = True
                continue
            return int(line.split()[1])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask_to_exit(self) -> None:
        """Close the worker's stdin: an idle worker's loop ends there and it exits."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def stop(self, idle: bool = False) -> None:
        """End the worker. An idle one is asked first (its stdin closed: its loop ends and Python exits as usual,
        so what its libraries made at import is removed, e.g. wandb's ``tmp*wandb-media`` / ``-artifacts``
        folders in ``$TMPDIR``, two per worker left behind by SIGKILL); then its process group is killed."""
        if idle and self.alive():
            self.ask_to_exit()
            try:
                self.proc.wait(timeout=IDLE_EXIT_S)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class WarmProcess:
    """A trial running in a warm worker; when it ends well, the worker goes back to the idle pool."""

    def __init__(self, backend: WarmBackend, worker: WarmWorker, log_path: Path, job: dict[str, Any]):
        self.backend, self.worker, self.log_path, self.job = backend, worker, log_path, job
        self._exit: Exit | None = None
        self._resent = False

    def poll(self) -> Exit | None:
        if self._exit is not None:
            return self._exit
        code = self.worker.answer()
        if code is None:
            died = self.worker.proc.poll()
            if died is None:
                return None
            code = self.worker.answer()  # it may have answered just before exiting
            if code is None and not self.worker.started and not self._resent:
                # it died between trials (after its last answer, before taking this one: e.g. killed for memory
                # while freeing the last trial), so this trial never began: a fresh worker takes it
                self._resent = True
                self.backend.busy.discard(self.worker)
                self.worker.stop()
                self.worker = self.backend._spawn(self.job["env"], self.worker.slot)
                self.worker.send(self.job)
                self.backend.busy.add(self.worker)
                return None
            if code is None:
                code = died  # killed, or exited without answering (os._exit, the OOM killer)
        self._exit = Exit(code)
        self.backend.busy.discard(self.worker)
        if code == 0 and self.worker.alive():
            self.backend.idle.append(self.worker)
        else:
            self.worker.stop()
        return self._exit

    def kill(self) -> None:
        self.backend.busy.discard(self.worker)
        self.worker.stop()


class WarmBackend:
    """Trials run in long-lived workers (``python -m ftsweep.sweeper.worker``), one per trial slot. A trial
    goes to an idle worker of its slot (its GPU, or its share of the CPU cores) or to a new one; the
    worker's own output outside its trials goes to ``<sweep dir>/warm_workers.log`` (removed when empty)."""

    name = "local"
    places_gpus = True

    def __init__(self, sweep_dir: Path, prefix_len: int):
        self.sweep_dir = sweep_dir
        self.prefix_len = prefix_len  # the trial command's prefix: the worker is the entry point instead
        self.idle: list[WarmWorker] = []
        self.busy: set[WarmWorker] = set()

    def wait(self, seconds: float) -> None:
        """Wake as soon as a busy worker answers (or exits), so the next trial starts at once."""
        fds = [w.proc.stdout.fileno() for w in self.busy if not w.proc.stdout.closed]
        if fds:
            select.select(fds, [], [], seconds)
        else:
            time.sleep(seconds)

    def start(self, cmd: list[str], env: dict[str, str], trial_dir: Path, number: int) -> WarmProcess:
        slot = tuple(env.get(k) for k in SLOT_ENV)
        worker = next((w for w in self.idle if w.slot == slot and w.alive()), None)
        if worker is not None:
            self.idle.remove(worker)
        else:
            for other in [w for w in self.idle if w.slot != slot or not w.alive()]:
                self.idle.remove(other)  # a worker of a slot no trial uses now: its memory goes back
                other.stop()
            worker = self._spawn(env, slot)
        log_path = rundir.RunDir(trial_dir).trial_log
        job = {"args": cmd[self.prefix_len:], "env": env, "log": str(log_path)}
        try:
            worker.send(job)
        except OSError:  # it died while idle: a fresh one takes the trial
            worker.stop()
            worker = self._spawn(env, slot)
            worker.send(job)
        self.busy.add(worker)
        return WarmProcess(self, worker, log_path, job)

    def _spawn(self, env: dict[str, str], slot: tuple[str | None, ...]) -> WarmWorker:
        with open(self.sweep_dir / "warm_workers.log", "a") as log:
            proc = subprocess.Popen(WORKER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                    env={**os.environ, **env}, start_new_session=True, preexec_fn=_die_with_parent)
        return WarmWorker(proc, slot)

    def close(self) -> None:
        for w in self.idle:  # all at once: they exit side by side
            w.ask_to_exit()
        for w in self.idle:
            w.stop(idle=True)
        for w in self.busy:
            w.stop()
        self.idle.clear()
        self.busy.clear()
        log = self.sweep_dir / "warm_workers.log"
        if log.is_file() and not log.stat().st_size:
            log.unlink()  # nothing went wrong outside a trial
