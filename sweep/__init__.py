"""The shipped sweep definitions (sweep=<name>); in a wheel: ftsweep/sweeps."""
