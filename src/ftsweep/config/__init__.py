"""Config schemas, errors and validation (no torch imports here). Composition: :mod:`ftsweep.config.compose`."""

from ftsweep.config.errors import ConfigError, UsageError
from ftsweep.config.schema import GROUP_SCHEMAS, KNOWN_METRICS, TrainConfig, register_configs
from ftsweep.config.validate import validate

__all__ = ["GROUP_SCHEMAS", "KNOWN_METRICS", "ConfigError", "TrainConfig", "UsageError", "register_configs", "validate"]
