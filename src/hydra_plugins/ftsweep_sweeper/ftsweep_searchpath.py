"""Hydra plugin: put the user's config roots in front of ftsweep's shipped config.

Acts only on ftsweep's own applications (whose main config dir is the shipped ``ftsweep.conf``): the
user's roots (``--config-dir`` values handed down in ``$FTSWEEP_CONFIG_DIRS``, and ``./conf``) come
before the shipped root, so a user's option extends a group or replaces a shipped option of the same
name. Imports nothing of ftsweep until Hydra asks (plugin discovery must stay cheap).

Registration is this package's own business: an installed wheel puts ``hydra_plugins/`` on ``sys.path``,
where Hydra's discovery finds it; an editable install's import hook hides the namespace from that walk, so
the entry points (``ftsweep.cli.main``, the trial entry ``ftsweep.sweeper.trial.main``) call
:func:`register` first. ``ftsweep.config`` composes over whatever search path Hydra has and never imports
this package (``tests/test_structure.py``).
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin


class FtsweepSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from ftsweep import paths

        shipped = str(paths.shipped_conf_dir())
        if not any(e.provider == "main" and str(e.path).removeprefix("file://") == shipped for e in search_path.get_path()):
            return
        for root in paths.user_config_dirs():
            search_path.prepend("ftsweep-user", f"file://{root}", anchor=SearchPathQuery(provider="main"))


def register() -> None:
    """Register ftsweep's Hydra plugins by hand (idempotent): this search-path plugin and the sweeper
    (``hydra/sweeper=ftsweep_optuna``, whose module imports only Hydra and the config dataclasses)."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ftsweep_sweeper.ftsweep_sweeper import FtsweepOptunaSweeper

    Plugins.instance().register(FtsweepSearchPathPlugin)
    Plugins.instance().register(FtsweepOptunaSweeper)
