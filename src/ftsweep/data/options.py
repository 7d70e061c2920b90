"""The ``data`` config as a plain :class:`~ftsweep.config.data.DataConfig` object.

The pipeline reads a handful of options for every row; reading them from an OmegaConf node costs
microseconds per access, so the node is converted once per build. A config saved by an older run
(``.hydra/config.yaml``, read back by ``ftsweep generate``) is merged onto the schema first, so
options it lacks take their defaults. ``data.dataset`` (LLaMA-Factory's ``dataset_info.json``) is applied
here, so every reader of the data config sees the entry's path, format and columns.
"""

from __future__ import annotations

from typing import Any

from ftsweep.config.data import DataConfig


def data_options(d: Any) -> DataConfig:
    """``d`` (a DataConfig, a structured or plain OmegaConf node) as a plain DataConfig."""
    if isinstance(d, DataConfig):
        return d
    from omegaconf import OmegaConf

    from ftsweep.data.dataset_info import apply

    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), d)
    if merged.dataset or merged.eval_dataset:  # LLaMA-Factory's dataset_info.json entry gives the path
        merged.path = ""
    return apply(OmegaConf.to_object(merged))  # type: ignore[arg-type]
