"""Objectives a run is scored on beyond the Trainer's own metrics: generated answers on the validation split
(:mod:`ftsweep.objectives.metrics` scores them, :mod:`ftsweep.objectives.generation` produces them,
:mod:`ftsweep.objectives.evaluator` runs both at every evaluation and after training)."""
