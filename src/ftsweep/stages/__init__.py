"""Training stages: one module per stage decides its trainer, its data columns and its default objective.

:mod:`ftsweep.stages.registry` maps ``stage.name`` to the module; the recipe (:mod:`ftsweep.train`) calls
``datasets`` and ``trainer`` of the chosen module and nothing else differs between stages.
"""
