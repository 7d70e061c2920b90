"""The submitit backend: each trial one submitit job (a SLURM job on a cluster, submitit's local executor
elsewhere) that runs :func:`run_trial_command`, i.e. the very same trial command a local trial runs.
Also :func:`make_backend`, which picks a backend for the sweep's settings."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ftsweep import rundir
from ftsweep.config.sweeper import SweeperConf
from ftsweep.sweeper.process import Backend, Exit, LocalBackend, WarmBackend, kill_group


def make_backend(conf: SweeperConf, sweep_dir: Path, timeout_s: float, command: list[str]) -> Backend:
    if conf.backend == "submitit":
        return SubmititBackend(conf, sweep_dir, timeout_s)
    if conf.warm_workers:
        return WarmBackend(sweep_dir, len(command))
    return LocalBackend()


HIDDEN_ARG = "FTSWEEP_HIDDEN_ARG_"  # an argument of the trial command that holds a secret, by environment


def run_trial_command(cmd: list[str], env: dict[str, str], log_path: str) -> int:
    """What a submitit job runs (pickled by submitit, called on the node): the trial command, output
    appended to ``trial.log``; returns its exit code. The node's environment (SLURM_*, CUDA_VISIBLE_DEVICES
    set by the scheduler) is kept; ``env`` adds the trial's FTSWEEP_* variables. An argument that holds a
    secret (:func:`_cmd_without_secrets`) is read back from the environment here."""
    import signal

    cmd = [os.environ.get(a[1:], a) if a.startswith("$" + HIDDEN_ARG) else a for a in cmd]

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # a sweep started from a background shell (nohup ... &) inherits SIGINT ignored, and submitit's local
        # executor ends a job with SIGINT, then SIGKILL: the trial (its own session) would outlive its job
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                start_new_session=True)
        try:
            return proc.wait()
        except BaseException:  # the job is cancelled / times out: submitit signals us; stop the trial too
            kill_group(proc)
            raise


# How long a job that ended without its result file is given for the file to show (submitit's own wait, for a
# shared filesystem that shows it late: ``Job._results_timeout_s``), waited across polls, not inside one. The local
# executor's job writes its result on this machine before it ends: a second is plenty there.
RESULT_GRACE_S = 15.0
LOCAL_RESULT_GRACE_S = 1.0


class SubmititProcess:
    def __init__(self, job: Any, log_path: Path, result_grace_s: float = RESULT_GRACE_S):
        self.job, self.log_path, self.result_grace_s = job, log_path, result_grace_s
        self._exit: Exit | None = None
        self._ended_without_result: float | None = None  # when done() first held with no result file

    def poll(self) -> Exit | None:
        if self._exit is not None:
            return self._exit
        if not self.job.done():
            return None
        if not _result_written(self.job):
            # A job the scheduler ended (time limit, cancel, node failure) writes no result: submitit's result()
            # waits 15 s for the file in a sleep loop, which froze the sweep (every other trial's hand-over and
            # progress) at each such job. The wait is kept, but spread over the sweep's polls.
            now = time.monotonic()
            self._ended_without_result = self._ended_without_result or now
            if now - self._ended_without_result < self.result_grace_s:
                return None
            self.job._results_timeout_s = 0  # waited above
        try:
            code = self.job.result()
            self._exit = Exit(int(code))
        except Exception as err:  # submitit.core.utils.UncompletedJobError / FailedJobError
            state = _job_state(self.job)
            first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
            self._exit = Exit(None, f"scheduler: job {self.job.job_id} ended ({state}): {first[:240]}")
        return self._exit

    def kill(self) -> None:
        try:
            self.job.cancel(check=False)
        except Exception:  # the job already ended (or the scheduler forgot it): nothing left to cancel
            pass


def _result_written(job: Any) -> bool:
    try:
        return job.paths.result_pickle.exists()
    except Exception:  # noqa: BLE001 -- no such path for this job kind: result() decides, as before
        return True


def _job_state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:  # the scheduler cannot be asked right now (sacct/squeue down): asked again next poll
        return "UNKNOWN"


def _without_secrets(env: dict[str, str]) -> dict[str, str]:
    """submitit pickles the job's arguments into its job folder: a storage URL with a password stays out of
    that file. The job gets it from the environment instead (the local executor and sbatch's default
    --export=ALL pass this process's environment on), so it is set here, in this process."""
    from ftsweep.sweeper.storage import password_of

    url = env.get("FTSWEEP_STORAGE")
    if not url or not password_of(url):
        return env
    os.environ["FTSWEEP_STORAGE"] = url
    return {k: v for k, v in env.items() if k != "FTSWEEP_STORAGE"}


def _cmd_without_secrets(cmd: list[str]) -> list[str]:
    """The trial command as submitit may pickle it: an argument holding a URL password or a secret
    environment value (``notes='postgresql://u:pw@h/db'``) is replaced by ``$FTSWEEP_HIDDEN_ARG_<hash>``, a
    variable set here that the job inherits as it does FTSWEEP_STORAGE (:func:`_without_secrets`)."""
    import hashlib

    from ftsweep.tracking import scrub

    out = []
    for arg in cmd:
        if scrub(arg) == arg:
            out.append(arg)
            continue
        name = HIDDEN_ARG + hashlib.sha256(arg.encode()).hexdigest()[:16]
        os.environ[name] = arg
        out.append("$" + name)
    return out


class SubmititBackend:
    """SLURM: the job asks for gpus_per_trial GPUs (``--gpus-per-node``) and SLURM places it. Submitit's
    local executor would give every job the same first GPUs, so there the sweep places trials itself."""

    name = "submitit"

    def __init__(self, conf: SweeperConf, sweep_dir: Path, timeout_s: float):
        import submitit

        sc = conf.submitit
        folder = Path(sc.folder).expanduser() if sc.folder else sweep_dir / ".submitit"
        cluster = sc.cluster or ("slurm" if shutil.which("sbatch") else "local")
        self.executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
        self.cluster = cluster
        self.places_gpus = cluster != "slurm"
        # hydra.sweeper.gpus=null: CPU-only jobs (no --gpus-per-node)
        want_gpus = cluster == "slurm" and conf.gpus not in (None, False, "", [])
        timeout_min = sc.timeout_min or (math.ceil(timeout_s / 60) + 10 if timeout_s else 24 * 60)
        # submitit wants whole minutes; the local executor takes fractions (tests use a few seconds).
        params: dict[str, Any] = {"timeout_min": max(1, math.ceil(timeout_min)), "nodes": 1, "tasks_per_node": 1,
                                  "gpus_per_node": conf.gpus_per_trial if want_gpus else 0,
                                  "name": "ftsweep-trial"}
        if sc.cpus_per_task:
            params["cpus_per_task"] = sc.cpus_per_task
        if sc.mem_gb:
            params["mem_gb"] = sc.mem_gb
        if cluster == "slurm":
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(sc, key):
                    params[f"slurm_{key}"] = getattr(sc, key)
            if sc.additional_parameters:
                params["slurm_additional_parameters"] = dict(sc.additional_parameters)
            if sc.setup:
                params["slurm_setup"] = list(sc.setup)
        elif cluster == "local":
            params["local_timeout_min"] = timeout_min
            if sc.setup:
                params["local_setup"] = list(sc.setup)
        self.executor.update_parameters(**params)

    def start(self, cmd: list[str], env: dict[str, str], trial_dir: Path, number: int) -> SubmititProcess:
        log_path = rundir.RunDir(trial_dir).trial_log
        self.executor.update_parameters(name=f"ftsweep-trial-{number}")
        job = self.executor.submit(run_trial_command, _cmd_without_secrets(cmd), _without_secrets(env), str(log_path))
        with open(log_path, "a") as log:
            log.write(f"# submitit {self.cluster} job {job.job_id}\n")
        return SubmititProcess(job, log_path, LOCAL_RESULT_GRACE_S if self.cluster == "local" else RESULT_GRACE_S)

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        pass
