"""Progress of a sweep: a rich live panel on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from ftsweep.sweeper.study import Counts


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


class Progress:
    """Sweep progress; ``mode`` is auto (rich on a TTY), rich or plain."""

    def __init__(self, study_name: str, n_trials: int, mode: str = "auto", stream: Any = None):
        self.study_name = study_name
        self.n_trials = n_trials
        self.stream = stream or sys.stdout
        self.rich = mode == "rich" or (mode == "auto" and self.stream.isatty())
        self.counts = Counts()
        self.best: Any = None
        self.best_number: int | None = None
        self.running: dict[int, tuple[float, dict[str, Any]]] = {}
        self._live: Any = None
        self.started = time.monotonic()
        self._notice_offsets: dict[str, int] = {}
        self._notices_said: set[str] = set()  # a line another trial already said (two workers tokenizing the same data)

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Progress:
        if self.rich:
            from rich.console import Console
            from rich.live import Live

            # get_renderable: each auto-refresh redraws from the clock ("running for", elapsed), not only events
            self._live = Live(console=Console(file=self.stream), refresh_per_second=2, transient=False,
                              get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.__exit__(*exc)
            self._live = None

    # ---------------------------------------------------------------- events
    def log(self, message: str) -> None:
        from ftsweep.tracking import scrub

        message = scrub(message)
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)
        else:
            print(f"[sweep {self.study_name}] {message}", file=self.stream, flush=True)

    def relay_notices(self, number: int, path: Any) -> None:
        """Print the trial's new notices (``ftsweep.notices``: a one-time step that takes a while, such as
        building the tiny model) on the sweep's console; they are in its trial.log too. A line another trial said
        already (the same data warning from two workers that tokenized at once) is said once."""
        key = str(path)
        try:
            with open(path, "rb") as f:
                f.seek(self._notice_offsets.get(key, 0))
                chunk = f.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._notice_offsets[key] = self._notice_offsets.get(key, 0) + len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            if line.strip() and line not in self._notices_said:
                self._notices_said.add(line)
                self.log(f"trial {number}: {line}")

    def started_trial(self, number: int, params: dict[str, Any], note: str = "") -> None:
        self.running[number] = (time.monotonic(), params)
        self.log(f"trial {number} started{note}: {_params(params)}")
        self.refresh()

    def finished_trial(self, number: int, state: str, value: Any, reason: str | None = None) -> None:
        start, _ = self.running.pop(number, (time.monotonic(), {}))
        took = time.monotonic() - start
        detail = f"value={_fmt(value)}" if value is not None else ""
        if reason:
            detail = f"{detail} reason={reason}".strip()
        self.log(f"trial {number} {state} in {took:.1f} s {detail}".rstrip())
        self.refresh()

    def repeated_trial(self, number: int, of: int, params: dict[str, Any], values: Any) -> None:
        value = values[0] if len(values) == 1 else values
        self.log(f"trial {number} repeats trial {of}: {_params(params)}: value={_fmt(value)} copied, not trained again")
        self.refresh()

    def update(self, counts: Counts, best: Any = None, best_number: int | None = None) -> None:
        self.counts = counts
        self.best, self.best_number = best, best_number
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    # ---------------------------------------------------------------- rendering
    def status_line(self) -> str:
        c = self.counts
        best = f"{_fmt(self.best)} (trial {self.best_number})" if self.best is not None else "-"
        return (f"{c.finished}/{self.n_trials} done | running {len(self.running)} | complete {c.complete} | "
                f"pruned {c.pruned} | failed {c.failed} | best {best} | {time.monotonic() - self.started:.0f} s")

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(title=f"sweep {self.study_name}", show_edge=False, expand=False)
        for col in ("trial", "running for", "params"):
            table.add_column(col)
        now = time.monotonic()
        for number, (start, params) in sorted(self.running.items()):
            table.add_row(str(number), f"{now - start:.0f} s", _params(params))
        bar = ProgressBar(total=max(self.n_trials, 1), completed=self.counts.finished, width=40)
        return Group(bar, self.status_line(), table)
