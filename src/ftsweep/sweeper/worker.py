"""A warm sweep worker (``hydra.sweeper.warm_workers=true``): one long-lived process per trial slot that
runs trial after trial, keeping imports, tokenizer, tokenized data and base model between them
(:class:`ftsweep.sweeper.warm.WarmComponents`).

    python -m ftsweep.sweeper.worker

The sweep process (:class:`ftsweep.sweeper.process.WarmBackend`) writes one JSON line per trial to the
worker's stdin::

    {"args": [<the trial's overrides, hydra.sweep.dir=..., hydra.sweep.subdir=...>],
     "env": {<the trial's FTSWEEP_* variables>}, "log": "<trial_dir>/trial.log"}

The worker runs it exactly as ``python -m ftsweep.sweeper.trial`` would (same entry, same files: its
output goes to the trial's ``trial.log``, its result to ``metrics.json`` / ``failure.json``) and answers
``start`` on its stdout when it takes a trial and ``done <exit code>`` when the trial ends (a worker that dies
between trials, e.g. killed for memory while freeing the last one, has not started the trial it was sent: the
sweep gives that trial to a fresh worker instead of failing it). A trial that ends in anything but exit code 0 (an error, OOM, NaN, bad
input) also ends the worker: the sweep starts a fresh one for the next trial, so nothing a failed trial
left behind (a fragmented GPU, a half-built model) reaches another trial. End of input ends the worker.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def run_trial(job: dict[str, Any], parts: Any, nth: int) -> int:
    """One trial in this process (its ``nth``), its output in its own ``trial.log``; the exit code the
    trial command would have had."""
    from ftsweep.sweeper import trial

    sys.stdout.flush()
    sys.stderr.flush()
    outside = os.dup(1), os.dup(2)  # the worker's own log, back after the trial
    log_fd = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    print(f"# warm worker {os.getpid()}: trial {nth} of this worker", flush=True)
    saved = {k: os.environ.get(k) for k in job["env"]}
    os.environ.update(job["env"])
    try:
        code = trial.main(list(job["args"]), parts=parts)  # maps the trial's own errors to its exit code
    except BaseException as err:  # anything trial.main lets through (SystemExit from a library, Ctrl-C)
        from ftsweep.errors import report

        code = report(err)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, kept in zip((1, 2), outside):
            os.dup2(kept, fd)
            os.close(kept)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return int(code or 0)


def main() -> int:
    from ftsweep.sweeper.warm import WarmComponents

    # The answers go to the original stdout (a pipe to the sweep process); fds 1 and 2 go to the worker's
    # log (stderr as started), and to the current trial's log while it runs.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    parts = WarmComponents()
    nth = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        nth += 1
        answers.write("start\n")
        code = run_trial(json.loads(line), parts, nth)
        answers.write(f"done {code}\n")
        if code != 0:
            return code  # a failed trial ends the worker; the sweep starts a fresh one
        _free_trial_memory()
    return 0


# every this many trials the worker collects its frozen objects too (see _free_trial_memory)
FULL_COLLECT_EVERY = 50
_freed = [0]  # trials freed in this process


def _free_trial_memory() -> None:
    """After a trial: its trainer, optimizer and activations are garbage; give cached CUDA blocks back so
    the next trial's reserved-memory peak is its own.

    Then what survives (imports, the kept tokenizer, data and base model) is frozen out of the cyclic
    garbage collector (``gc.freeze``): transformers' ``Trainer.train`` calls ``gc.collect()`` at its start,
    which otherwise scans the worker's whole heap in every trial (0.17 s of the first step on the tiny
    model, a third of its training). The next collection here scans the last trial's objects only; a kept
    base model that is dropped is unfrozen first (:meth:`WarmComponents._drop_base`). What a trial leaves
    alive at the freeze and drops later in a reference cycle (its finished W&B run, its parsed config: about
    180 objects a trial on the quickstart) no collection of the frozen heap would find: every
    ``FULL_COLLECT_EVERY`` trials the whole heap is unfrozen and collected once (1.6 s in the quickstart's
    CPU worker at load 5, 0.03 s a trial; its usual collection here 0.1-0.3 s), so it cannot pile up over a
    long sweep."""
    import gc

    _freed[0] += 1
    if _freed[0] % FULL_COLLECT_EVERY == 0:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    raise SystemExit(main())
