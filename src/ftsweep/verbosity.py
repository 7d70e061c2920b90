"""Quiet by default: third-party output a user cannot act on is filtered at its source, by category and
module (never a blanket filter), and W&B says only where its run is. ``ftsweep train -v`` or
``FTSWEEP_VERBOSE=1`` (inherited by sweep trials) brings everything back.

Filtered (each one measured on a default run):

- transformers ``FutureWarning: `is_gradient_checkpointing` is deprecated`` (raised inside transformers by
  its own Trainer/peft calls; nothing in ftsweep's config changes it);
- bitsandbytes' ``Failed to load CPU gemm_4bit_forward from kernels-community`` log line (the optional
  ``kernels`` package; the built-in CPU path is what ftsweep uses and tests);
- the "Loading weights" bar of transformers and the sub-second ``datasets`` map bars trl shows while it
  checks already-tokenized rows;
- transformers' ``mtime may not be reliable on this filesystem, falling back to numerical ordering``: said when two
  checkpoints were saved within a second (a short run, tmpfs); the fallback orders them by step, which is right;
- huggingface_hub's ``Repo card metadata block was not found. Setting CardData to empty.``: peft updating the
  README.md of a checkpoint it saves over (an earlier save cut short by a full disk left it empty); peft writes
  the card anew;
- transformers' ``[INFO] Running in WANDB offline mode`` print at import and W&B's ~40 lines of console
  chatter (``WANDB_SILENT``): ftsweep prints one line with the run's URL or offline folder instead.
"""

from __future__ import annotations

import logging
import os
import warnings

ENV = "FTSWEEP_VERBOSE"


def verbose() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_verbose() -> None:
    """``-v``: everything back, in this process and the sweep trials it starts."""
    os.environ[ENV] = "1"


def quiet_wandb() -> None:
    """Before ``wandb.init``: W&B's own console output off (ftsweep says where the run is)."""
    if not verbose():
        os.environ.setdefault("WANDB_SILENT", "true")


def quiet_libraries() -> None:
    """At the start of a run, before the model and the trainer are built (idempotent)."""
    if verbose():
        return
    quiet_warnings()
    quiet_wandb()
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # transformers prints "[INFO] Running in WANDB offline mode" when this module is first imported with
    # WANDB_MODE=offline: import it with the variable unset (the mode is read again when a run starts).
    mode = os.environ.pop("WANDB_MODE", None)
    try:
        import transformers.integrations.integration_utils  # noqa: F401
    finally:
        if mode is not None:
            os.environ["WANDB_MODE"] = mode


def quiet_warnings() -> None:
    """The warnings and log lines above (not the progress bars: ``merge`` / ``generate`` keep the loading bar
    of a large model)."""
    if verbose():
        return
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                            module=r"transformers\.")
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # bitsandbytes loads its CPU kernels through `kernels`, which warns on every load that an offline Hub
    # (HF_HUB_OFFLINE, the user's own choice) skips its publisher trust check
    logging.getLogger("kernels._internals.hf_hub").setLevel(logging.ERROR)
    _drop_line("transformers.trainer_utils", "mtime may not be reliable on this filesystem")
    logging.getLogger("huggingface_hub.repocard").setLevel(logging.ERROR)  # (its one warning: the card's metadata)


class _DropLine(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix`` (its other lines stay)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _drop_line(logger: str, prefix: str) -> None:
    target = logging.getLogger(logger)
    if not any(isinstance(f, _DropLine) and f.prefix == prefix for f in target.filters):  # (idempotent)
        target.addFilter(_DropLine(prefix))
