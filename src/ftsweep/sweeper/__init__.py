"""ftsweep's Optuna sweeper (hydra/sweeper=ftsweep_optuna). No heavy imports here.

    grammar.py      params grammar -> Optuna distributions, derived values, override formatting
    samplers.py     sampler / pruner factories (the pruner also travels to trial processes as JSON)
    storage.py      open a storage URL (SQLite, PostgreSQL, journal file) with one-line errors
    study.py        create/resume a study, search-space guard, budget counting, best trial, stale trials
    runner.py       K trial processes at once, asynchronous ask/tell, failures, OOM re-run, timeout
    outcome.py      what a finished trial left behind (metrics.json / failure.json) and the OOM re-run decision
    launch.py       TrialLaunch: a trial's hand-over (command line + FTSWEEP_* variables), encoded and decoded
    attrs.py        the names and types of trial / study attributes in the Optuna storage
    process.py      local subprocess and warm-worker backends
    submitit_backend.py  the submitit (SLURM) backend and make_backend
    sweep.py        one sweep: validate -> open study -> run -> report -> W&B summary -> best trial
    baseline.py     sweep=lr_after_baseline
    trial.py        the trial process's entry point: FTSWEEP_* context, pruning/heartbeat TrainerCallback
    worker.py       a warm worker process: runs trial after trial in one process
    warm.py         what a warm worker keeps between trials (tokenizer, datasets, base model)
    progress.py     rich live display / plain lines
    wandb_summary.py  the sweep's W&B summary run

Its config schema (``hydra.sweeper.*``) is :mod:`ftsweep.config.sweeper`.
"""
