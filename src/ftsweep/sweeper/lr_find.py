"""``hydra.sweeper.lr_find=true``: seed a sweep with the learning-rate range test (``ftsweep lr-find``).

Before the first trial, the sweep runs ``python -m ftsweep lr-find <the sweep's fixed overrides>`` over the
sweep's own ``optimizer.lr`` range (its interval bounds; 1e-6..1 when lr is not searched), in a child
process (the sweep process stays free of torch), writing ``<sweep dir>/lr_find/``. Then:

- trial 0 is enqueued with ``optimizer.lr = suggestion`` (the other parameters sampled as usual);
- the lr range narrows to ``[suggestion / lr_find_factor, suggestion * lr_find_factor]`` (log), clipped to
  the sweep's own range; an lr that was not searched becomes searched over that bracket. A ``choice`` of
  learning rates (a grid) is kept as it is and trial 0 gets the choice nearest to the suggestion (log).

When the test gives no reliable suggestion (``lr_find.json``'s ``warning``: a flat curve, or the steepest
descent at the edge of the range; :func:`ftsweep.lr_find.unreliable`) the sweep says so and runs as without
``lr_find``: no trial 0 is enqueued and the lr range is the sweep's own.

A resumed sweep reuses ``lr_find/lr_find.json`` instead of running the test again.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftsweep.sweeper.grammar import SweepInputError, parse_space

LR_KEY = "optimizer.lr"
DEFAULT_RANGE = (1e-6, 1.0)


def lr_range(params: dict[str, str]) -> tuple[float, float, list[float] | None]:
    """(low, high, choices or None) of the searched learning rate (the default range when not searched)."""
    if LR_KEY not in params:
        return (*DEFAULT_RANGE, None)
    dist = parse_space({LR_KEY: params[LR_KEY]}, None, None).distributions[LR_KEY]
    if hasattr(dist, "choices"):
        choices = [float(c) for c in dist.choices]
        return min(choices), max(choices), choices
    return float(dist.low), float(dist.high), None


def run_range_test(fixed: list[str], low: float, high: float, out: Path) -> dict[str, Any]:
    """``ftsweep lr-find`` in a child process; its result (``lr_find.json``)."""
    overrides = [o for o in fixed if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    cmd = [sys.executable, "-m", "ftsweep", "lr-find", *overrides, "--min-lr", repr(low), "--max-lr", repr(high),
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), check=False)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit code {proc.returncode}"]
        raise SweepInputError(f"hydra.sweeper.lr_find: the learning-rate range test failed: {lines[-1]}")
    return json.loads((out / "lr_find.json").read_text())  # (its console output, every step, is not shown)


def seed_from_lr_find(fixed: list[str], params: dict[str, str], sweep_dir: Path, factor: float,
                      run: Callable[[list[str], float, float, Path], dict[str, Any]] = run_range_test,
                      label: str = "[sweep]") -> tuple[dict[str, str], list[dict[str, Any]], dict[str, Any]]:
    """(params with the narrowed lr, [trial 0's params], the range test's result). Says on stderr, after
    ``label``, that the test runs (or which saved result is reused), what it suggested, and the new lr range."""
    low, high, choices = lr_range(params)
    out = sweep_dir / "lr_find"
    saved = out / "lr_find.json"
    if saved.is_file():
        result = json.loads(saved.read_text())
        done = f"reusing {saved}"
    else:
        print(f"{label} lr_find: running the learning-rate range test over {LR_KEY} {low:.3g}..{high:.3g} first "
              f"(into {out})", file=sys.stderr, flush=True)
        result = run(fixed, low, high, out)
        done = ""
    s = float(result["suggestion"])
    lrs = result.get("lrs") or []
    found = (f"{len(lrs)} steps from {lrs[0]:.3g} to {lrs[-1]:.3g}" + (f" (stopped: {result['stopped']})"
             if result.get("stopped") else "") + ": " if lrs else "")
    print(f"{label} lr_find: {done + ': ' if done else ''}{found}suggested lr {s:.3g}"
          + (f" [{result['rule']}]" if result.get("rule") else "") + f"; curve: {out / 'lr_find.png'}",
          file=sys.stderr, flush=True)
    params = dict(params)
    if result.get("warning"):  # a suggestion picked from noise: neither trial 0 nor a narrowed range
        kept = (f"{LR_KEY} keeps its own range {params[LR_KEY]}" if LR_KEY in params else
                f"{LR_KEY} stays as configured (not searched)")
        print(f"{label} lr_find: warning: no reliable suggestion: {result['warning']}; the sweep goes on without it: "
              f"no trial 0 at the suggestion, {kept}", file=sys.stderr, flush=True)
        return params, [], result
    if choices is not None:
        nearest = min(choices, key=lambda c: abs(math.log(c) - math.log(s)))
        print(f"{label} lr_find: trial 0 at {LR_KEY}={nearest:g} (the choice nearest the suggestion)",
              file=sys.stderr, flush=True)
        return params, [{LR_KEY: nearest}], result
    lo, hi = max(low, s / factor), min(high, s * factor)
    if not lo < hi:  # the suggestion sits at the edge of the range: keep a bracket inside it
        lo, hi = low, high
    params[LR_KEY] = f"tag(log, interval({lo:.4g}, {hi:.4g}))"
    first = min(max(s, float(f"{lo:.4g}")), float(f"{hi:.4g}"))
    print(f"{label} lr_find: trial 0 at {LR_KEY}={first:.6g}; {LR_KEY} searched over {params[LR_KEY]}",
          file=sys.stderr, flush=True)
    return params, [{LR_KEY: first}], result
