"""ftsweep's Optuna sweeper (hydra/sweeper=ftsweep_optuna). No heavy imports here.

    config.py       the sweeper's config dataclasses (hydra.sweeper.*)
    grammar.py      params grammar -> Optuna distributions, derived values, override formatting
    samplers.py     sampler / pruner factories (the pruner spec also travels to trial processes)
    storage.py      open a storage URL (SQLite, PostgreSQL, journal file) with one-line errors
    study.py        create/resume a study, search-space guard, budget counting, stale trials
    runner.py       K trial processes at once, asynchronous ask/tell, failures, OOM re-run, timeout
    sweep.py        one sweep: validate -> open study -> run -> report -> W&B summary -> best trial
    baseline.py     sweep=lr_after_baseline
    trial.py        the trial side: FTSWEEP_* context, pruning/heartbeat TrainerCallback
    progress.py     rich live display / plain lines
    wandb_summary.py  the sweep's W&B summary run
"""
