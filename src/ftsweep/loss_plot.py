"""``trainer.plot_loss``: LLaMA-Factory's loss plots of one run (``training_loss.png``, ``training_eval_loss.png``
in the run folder), raw and smoothed as LLaMA-Factory smooths them. matplotlib is imported only to plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def smoothed(values: list[float]) -> list[float]:
    """LLaMA-Factory's loss smoothing (``plot_loss``): an exponential moving average whose weight grows with the
    number of points, 1.8 * (sigmoid(0.05 n) - 0.5)."""
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out: list[float] = []
    for v in values:
        out.append(v if not out else out[-1] * weight + (1 - weight) * v)
    return out


# what a key is called, and why a run logs none of it
NEVER_LOGGED = {"loss": ("training loss", "trainer.logging_steps is more than the steps trained"),
                "eval_loss": ("eval loss", "no validation data")}


def plot_loss(history: list[dict[str, Any]], run_dir: Path, keys: tuple[str, ...] = ("loss", "eval_loss")) -> list[Path]:
    """``trainer.plot_loss``: each logged ``key`` of ``history`` (trainer.state.log_history) by step, raw and
    :func:`smoothed`, as ``training_<key>.png`` in the run folder (LLaMA-Factory's names); keys never logged are
    left out. The files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ftsweep.console import say
    from ftsweep.rundir import RunDir, write_atomic

    written = []
    for key in keys:
        points = [(h["step"], h[key]) for h in history if "step" in h and isinstance(h.get(key), int | float)]
        if not points:  # (LLaMA-Factory says "No metric loss to plot.")
            say(f"warning: trainer.plot_loss: no {NEVER_LOGGED.get(key, (key, 'never logged'))[0]} was logged "
                f"({NEVER_LOGGED.get(key, (key, 'never logged'))[1]}): {RunDir(run_dir).loss_plot(key).name} not written")
            continue
        steps, values = zip(*points)
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        ax.plot(steps, smoothed(list(values)), color="#1f77b4", label="smoothed")
        ax.set(xlabel="step", ylabel=key, title=f"training {key} of {run_dir}")
        ax.legend()
        fig.tight_layout()
        path = RunDir(run_dir).loss_plot(key)
        write_atomic(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100))  # (no half PNG on a full disk)
        plt.close(fig)
        written.append(path)
    return written
