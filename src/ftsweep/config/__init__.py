"""Config schemas, composition and validation (no torch imports here)."""

from ftsweep.config.schema import GROUP_SCHEMAS, TrainConfig, register_configs
from ftsweep.config.validate import ConfigError, validate

__all__ = ["GROUP_SCHEMAS", "ConfigError", "TrainConfig", "register_configs", "validate"]
