"""The LM head on CPU scores only the positions that have a label, as trl already does on CUDA.

Every trl trainer a stage builds (SFT, DPO, KTO, GRPO) computes its loss through trl's fused LM head
(``trl.trainer.utils.add_fused_lm_head``): the backbone's hidden states are projected through the LM head in
tiles and turned into per-token log-probabilities (and entropy / top-1 for SFT's metrics) without building the
``(batch, seq, vocab)`` logits. On CUDA / XPU it projects only the positions whose next-token label is not
``-100`` ("compact"); elsewhere it projects every position, prompt and padding included, and zeroes the ignored
ones after, so that an XLA / Neuron device sees one tile shape and does not recompile on every batch. Eager CPU
has no such cost, and with completion-only loss most positions are prompt: on the quickstart a reused warm
worker's 60-step trial went from 1.18 s to 0.75 s (its evaluations from 0.138 s to 0.085 s) with every trial's eval
loss the same (bench/trial_overhead.py), and the training loop to 0.58-0.66x of a plain trl script's with the same
logged losses (bench/overhead.py). The values are the same rows of the same matmul; ignored positions are zero
either way.

:func:`score_labelled_positions_only` switches the compact path on for CPU tensors, once per process, where the
installed trl has it (``trl.trainer.utils._use_triton``, read at every call of the fused forward); with a trl
without it, nothing changes. Only the decision changes: the tiles are still folded by trl's own torch code.
"""

from __future__ import annotations

COMPACT_DEVICES = ("cpu",)


def score_labelled_positions_only() -> bool:
    """Make trl's fused LM head project only labelled positions on CPU too; True when it now does."""
    try:
        from trl.trainer import utils
    except ImportError:  # pragma: no cover - trl is a dependency
        return False
    decide = getattr(utils, "_use_triton", None)
    if decide is None:
        return False
    if getattr(decide, "ftsweep_compact", False):
        return True

    def compact(device) -> bool:
        return device.type in COMPACT_DEVICES or decide(device)

    compact.ftsweep_compact = True
    utils._use_triton = compact
    return True
