"""Packing for continual pre-training, and the padding a batch size costs when not packing.

SFT packing is done by trl's SFTTrainer (``packing=True``, bfd strategy): it packs pre-tokenized
``input_ids`` + ``labels`` into padding-free rows whose ``position_ids`` restart at every example, so
attention never crosses example boundaries (with ``use_cache=False``, which SFTTrainer sets).
"""

from __future__ import annotations

from collections.abc import Sequence


def take_blocks(stream: list[int], block: int) -> list[list[int]]:
    """Cut the full ``block``-token rows off the front of ``stream`` (concatenated documents, each
    ending with eos; seed 001) and leave the remainder in it for the next documents."""
    n = len(stream) // block
    blocks = [stream[i * block : (i + 1) * block] for i in range(n)]
    del stream[: n * block]
    return blocks


def padding_fraction(lengths: Sequence[int], batch_size: int) -> float:
    """Fraction of processed tokens that are padding, for right-padded batches of ``batch_size`` rows
    taken in order: sum(max_len - len) / sum(max_len * rows) over batches."""
    pad = total = 0
    for i in range(0, len(lengths), batch_size):
        batch = lengths[i : i + batch_size]
        longest = max(batch)
        total += longest * len(batch)
        pad += sum(longest - n for n in batch)
    return pad / total if total else 0.0
