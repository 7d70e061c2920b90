"""User-facing one-line messages (stderr, so piped stdout such as ``ftsweep inspect --plain`` stays clean)."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """Print ``ftsweep: <message>`` on stderr (once: not also logged, which Hydra would echo again)."""
    print(f"ftsweep: {message}", file=sys.stderr, flush=True)
