"""ftsweep's Optuna sweeper for Hydra (hydra/sweeper=ftsweep_optuna). The logic is in ftsweep.sweeper."""
