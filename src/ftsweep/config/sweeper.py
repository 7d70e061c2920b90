"""The sweeper's config schema (``hydra.sweeper`` when ``hydra/sweeper=ftsweep_optuna``).

Plain dataclasses, no optuna import: Hydra imports this on every start-up (plugin discovery), and
``ftsweep --help`` / ``ftsweep train --cfg job`` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplerConf:
    # tpe (default) | random | grid | cmaes | gp | qmc
    name: str = "tpe"
    # None = random. Set: trial n is sampled with a seed mixed from (seed, n) (grid, qmc: one seed), so a rerun
    # in a fresh folder proposes the same parameters while a resume, a second process sharing the study or
    # another seed does not.
    seed: int | None = None
    # Random trials before the model-based samplers (tpe, gp, cmaes) start modelling.
    n_startup_trials: int = 10
    # tpe: model parameters jointly (multivariate TPE); group=True also handles conditional spaces.
    multivariate: bool = True
    group: bool = False
    # tpe: with several workers, treat running trials as bad so parallel workers spread out.
    constant_liar: bool = True
    # qmc: sobol | halton
    qmc_type: str = "sobol"
    # Extra keyword arguments passed to the sampler's constructor as-is.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunerConf:
    # none | median | percentile | successive_halving | hyperband
    name: str = "median"
    # median / percentile: no pruning until this many trials have completed ...
    n_startup_trials: int = 2
    # ... and, within a trial, before this many steps (global_step of the reported evaluation).
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1
    # percentile: prune below this percentile (25 = keep the best quarter).
    percentile: float = 25.0
    # successive_halving / hyperband: resources are training steps.
    min_resource: Any = "auto"
    max_resource: Any = "auto"
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class SubmititConf:
    """``hydra.sweeper.submitit``: how trials are submitted when ``hydra.sweeper.backend=submitit``."""

    # slurm | local | debug; null = SLURM when sbatch is on PATH, else submitit's local executor.
    cluster: str | None = None
    # SLURM partition, account, QoS, --constraint (null = the cluster's default).
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    # Job time limit in minutes; 0 = hydra.sweeper.trial_timeout_s (or trainer.timeout_s) + 10 min, else 24 h.
    timeout_min: float = 0
    # CPUs and memory per trial (null = the cluster's default). GPUs: hydra.sweeper.gpus_per_trial.
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    # Extra sbatch options as-is, e.g. {reservation: x, exclude: "node[1-2]"} (--reservation=x ...).
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    # Shell lines run in the job before the trial (e.g. "module load cuda/12.4", "source .venv/bin/activate").
    setup: list[str] = field(default_factory=list)
    # submitit's job folder (its own logs and pickles); default <hydra.sweep.dir>/.submitit.
    folder: str | None = None


@dataclass
class SweeperConf:
    """Fields of ``hydra.sweeper``. Every field can be overridden: ``hydra.sweeper.n_trials=4``."""

    _target_: str = "hydra_plugins.ftsweep_sweeper.ftsweep_sweeper.FtsweepOptunaSweeper"
    # Optuna study name; default: the sweep file's name (sweep=<name>), else "ftsweep".
    study_name: str | None = None
    # Any Optuna storage URL (sqlite:///..., postgresql://..., journal:<file>). Default:
    # sqlite:///<sweep_dir>/study.db. "journal" = an Optuna journal file <sweep_dir>/study.journal.
    storage: str | None = None
    # Deprecated alias of hydra.sweep.dir (where trial folders, the report and best.yaml go; default
    # outputs/sweeps/<study_name>); it still wins when set, with a warning.
    sweep_dir: str | None = None
    # Total number of trials in the study (across resumes and all processes sharing the storage).
    n_trials: int = 20
    # Trials run at once by this process (asynchronous: a finished trial frees its slot immediately).
    n_workers: int = 1
    # GPUs handed out one per trial through CUDA_VISIBLE_DEVICES: "auto" (all visible), a list of ids,
    # or null (no assignment; CPU or the trial's own device selection).
    gpus: Any = "auto"
    # GPUs one trial gets (k > 1: the trial runs under torchrun --standalone --nproc_per_node=k, from the
    # same entry point) and trials that may share one GPU (small models on a large GPU). With gpus=auto
    # no GPU ever serves more than trials_per_gpu trials at once; n_workers is capped accordingly.
    gpus_per_trial: int = 1
    trials_per_gpu: int = 1
    # How trial processes are started: local (subprocesses of this process) | submitit (one job per trial
    # through submitit: SLURM on a cluster, its local executor elsewhere; see hydra.sweeper.submitit).
    backend: str = "local"
    submitit: SubmititConf = field(default_factory=SubmititConf)
    # Keep one long-lived worker per trial slot (backend=local, one GPU per trial): it keeps imports,
    # tokenizer, tokenized data and the (quantized) base model between trials with the same model /
    # quantization / data settings and gives each trial a fresh, identically seeded adapter. A failed
    # trial ends its worker; the next trial gets a fresh one. Results are the same as cold trials'.
    warm_workers: bool = False
    # minimize | maximize, or a list for multi-objective (one per metric, or one for all; required when metric
    # is a list). Default: the config's objective.direction for objective.metric; a single other metric the
    # direction its name says (objective=exact_match metric=eval_loss: minimize).
    direction: Any = None
    # Metric(s) optimised; default: the config's objective.metric. A list = multi-objective.
    metric: Any = None
    # Search space: override key -> sweep grammar (interval, tag(log, interval), range, choice, a,b,c).
    params: dict[str, str] | None = field(default_factory=dict)
    # Sampled like params but not passed to the trial: inputs of `derived` (e.g. alpha_ratio).
    variables: dict[str, str] | None = field(default_factory=dict)
    # Override key -> arithmetic on sampled values, e.g. "{lora.r} * {alpha_ratio}".
    derived: dict[str, str] | None = field(default_factory=dict)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    # Kill a trial after this many seconds (0 = only trainer.timeout_s, if set). Reason "timeout: ...".
    trial_timeout_s: float = 0.0
    # At most max_failure_rate * n_trials trials may fail; one more stops the sweep (no new trials).
    max_failure_rate: float = 0.5
    # On CUDA OOM, retry the trial once with half the micro-batch and twice the gradient accumulation.
    retry_oom: bool = True
    # Trials left RUNNING by a dead sweep process are failed and re-run with the original trial's parameters
    # (free: not the trial's fault). A job the scheduler ended is re-run at most this many times per original
    # trial (a re-run of a re-run counts against the original). 0 = never re-run.
    retry_stale: int = 2
    # The sweep process records a heartbeat on each running trial this often; a RUNNING trial without
    # one for grace_period_s (or whose owner process on this host is gone) is stale.
    heartbeat_interval_s: float = 10.0
    grace_period_s: float = 60.0
    # Run the learning-rate range test (ftsweep lr-find) over the sweep's lr range before the first trial: its
    # suggestion is enqueued as trial 0 and the lr range narrows to [suggestion / lr_find_factor,
    # suggestion * lr_find_factor] (log), clipped to the sweep's own range (see sweep/README.md).
    lr_find: bool = False
    lr_find_factor: float = 10.0
    # sweep=lr_after_baseline: search optimizer.lr in [lr / factor, lr * factor] (log) around the baseline.
    baseline_lr_factor: float = 4.0
    # Fail at once (one line) when baseline=<run dir> is not given (set by sweep=lr_after_baseline).
    requires_baseline: bool = False
    # Write the report (summary.json, trials.md, plots, best.yaml) at the end of the sweep.
    report: bool = True
    # Log one W&B summary run (table of trials, best params) at the end; follows logger.name.
    wandb_summary: bool = True
    # auto (rich on a TTY, plain lines otherwise) | rich | plain
    progress: str = "auto"
    # Run `ftsweep dashboard` (optuna-dashboard, 127.0.0.1 only) beside the sweep, stopped when it ends; the
    # sweep's first lines print its URL. dashboard_port 0 = a free port.
    dashboard: bool = False
    dashboard_port: int = 0


def register_sweeper_schema() -> None:
    """Store ``hydra/sweeper=ftsweep_optuna`` (this schema) in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="hydra/sweeper", name="ftsweep_optuna", node=SweeperConf, provider="ftsweep")
