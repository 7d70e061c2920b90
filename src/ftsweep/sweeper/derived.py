"""What a trial runs with beyond its sampled parameters: the derived keys (``hydra.sweeper.derived``, e.g.
``lora.alpha`` from ``alpha_ratio``, gradient accumulation from the micro-batch) and the effective batch,
read from the trial's own overrides (so an OOM re-run's halved micro-batch shows as it runs). Shown in the
``trial N started`` line and stored on the trial (user attribute ``derived``) for ``trials.md``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

BATCH = "trainer.per_device_train_batch_size"
ACCUM = "trainer.gradient_accumulation_steps"
EFFECTIVE = "effective_batch"


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def derived_settings(overrides: Iterable[str], derived_keys: Iterable[str]) -> dict[str, Any]:
    """``{derived key: value}`` from the trial's overrides (the last one wins, as in Hydra), plus
    ``effective_batch`` = micro-batch x accumulation when the overrides set both."""
    given: dict[str, str] = {}
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep:
            given[key.lstrip("+~")] = value
    out = {k: _number(given[k]) for k in derived_keys if k in given}
    batch, accum = _number(given.get(BATCH, "")), _number(given.get(ACCUM, ""))
    if isinstance(batch, int) and isinstance(accum, int):
        out[EFFECTIVE] = batch * accum
    return out
