"""The shipped Hydra config root (train.yaml + one folder per group); in a wheel: ftsweep/conf."""
