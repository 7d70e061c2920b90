"""``ftsweep lr-find [overrides]``: the learning-rate range test (Smith 2015; PyTorch Lightning's
``Tuner.lr_find``, fastai's ``lr_find``) on the composed training config.

One short training run (the run's own model, LoRA adapter, data and optimizer; at most
``trainer.max_steps`` steps, so it costs one trial or less) whose learning rate grows exponentially from
``--min-lr`` to ``--max-lr``: step k (1-based) trains at ``min_lr * (max_lr / min_lr) ** ((k - 1) / (n - 1))``.
The training loss of every step is smoothed like Lightning does (exponential moving average, ``beta``,
bias-corrected); the run stops early once the smoothed loss exceeds ``4 x`` its minimum (divergence) or
turns non-finite.

Suggestion (Lightning's rule, printed with the figures): the learning rate where the smoothed loss falls
fastest, i.e. the minimum of ``numpy.gradient`` of the smoothed loss over the points (equally spaced in
log lr), skipping the first ``skip_begin`` and the last ``skip_end`` points.

A curve that gives no reliable suggestion (the smoothed loss fell less than ``MIN_FALL``, or fell fastest at the
first or last compared point: :func:`unreliable`) gets a one-line warning saying what to do, kept as ``warning``.

Writes ``<out>/lr_find.json`` (lrs, losses, smoothed losses, suggestion, rule, warning, settings) and
``<out>/lr_find.png`` (smoothed loss vs lr, log x, the suggestion marked); ``--out`` defaults to
``outputs/lr_find/<date>_<time>``; a folder holding an earlier test's result is refused. A sweep with ``hydra.sweeper.lr_find=true`` runs this first (see
sweep/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_STEPS = 100  # Lightning's num_training, for a config counted in epochs
RESULT_FILES = ("lr_find.json", "lr_find.png")
MIN_DIVERGED_POINTS = 5  # finite loss points a test that diverged early must have to suggest anything
MIN_FALL = 0.05  # the smoothed loss must fall at least this fraction over the compared points to suggest reliably
DEFAULT_MIN_LR, DEFAULT_MAX_LR = 1e-6, 1.0
MIN_POINTS = 10  # loss points the rule compares after the skipped ones (fewer: the lr is the schedule's, not the loss's)
RULE = ("steepest descent of the smoothed loss: lr at the minimum of numpy.gradient(smoothed loss) "
        "(points equally spaced in log lr), first {skip_begin} and last {skip_end} points skipped")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ftsweep lr-find", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides, as for ftsweep train (e.g. sweep=quickstart)")
    p.add_argument("--min-lr", type=float, default=DEFAULT_MIN_LR, help="first learning rate (default 1e-6)")
    p.add_argument("--max-lr", type=float, default=DEFAULT_MAX_LR, help="last learning rate (default 1)")
    p.add_argument("--steps", type=int, default=0,
                   help="steps of the range test (default: trainer.max_steps, or 100 when it is -1)")
    p.add_argument("--beta", type=float, default=0.98, help="smoothing of the loss (Lightning's 0.98)")
    p.add_argument("--diverge", type=float, default=4.0, help="stop when smoothed loss > this x its minimum")
    p.add_argument("--skip-begin", type=int, default=None,
                   help=f"points ignored at the start (Lightning's 10; fewer in a test shorter than "
                        f"{10 + 1 + MIN_POINTS} steps, so that {MIN_POINTS} points are compared)")
    p.add_argument("--skip-end", type=int, default=1, help="points ignored at the end (Lightning: 1)")
    p.add_argument("--out", default=None, help="folder for lr_find.json / lr_find.png")
    p.add_argument("--config-dir", "-cd", action="append", default=[], help="an extra config root (as for train)")
    return p.parse_intermixed_args(argv)


def main(argv: list[str]) -> int:
    """Entry point of ``ftsweep lr-find``: bad input is a one-line UsageError (exit 2), nothing written."""
    from ftsweep.config.compose import compose, export_config_dirs, fixed_overrides
    from ftsweep.config.errors import UsageError

    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help (0)
        return int(exc.code or 0)
    if not (math.isfinite(args.min_lr) and math.isfinite(args.max_lr)):
        raise UsageError(f"--min-lr/--max-lr: need finite numbers (got {args.min_lr:g}, {args.max_lr:g})")
    if not 0 < args.min_lr < args.max_lr:
        raise UsageError(f"--min-lr/--max-lr: need 0 < min < max (got {args.min_lr:g}, {args.max_lr:g})")
    for flag, value, ok, rule in (("--steps", args.steps, args.steps >= 0, ">= 0"),
                                  ("--beta", args.beta, 0 <= args.beta < 1, "in [0, 1)"),
                                  ("--diverge", args.diverge, args.diverge > 1, "> 1")):
        if not ok:  # (nan fails every rule)
            raise UsageError(f"{flag}: must be {rule} (got {value:g})")
    for flag, value in (("--skip-begin", args.skip_begin), ("--skip-end", args.skip_end)):
        if value is not None and value < 0:  # (numpy.gradient failed on the slice after the whole test)
            raise UsageError(f"{flag}: must be >= 0 points (got {value})")
    if fixed_overrides(args.overrides) != args.overrides:
        bad = next(o for o in args.overrides if o not in fixed_overrides(args.overrides))
        raise UsageError(f"{bad.split('=', 1)[0]}: {bad!r} is a sweep; lr-find takes fixed values only")
    export_config_dirs(args.config_dir)
    cfg = compose(args.overrides, config_dirs=args.config_dir)
    if not cfg.lora.enabled:
        raise UsageError("lora: lr-find trains a LoRA adapter; pick a lora option (e.g. lora=r16)")
    # the run's own length, or Lightning's 100 steps for a run counted in epochs (max_steps -1)
    steps = args.steps or (int(cfg.trainer.max_steps) if cfg.trainer.max_steps > 0 else DEFAULT_STEPS)
    skip_begin = args.skip_begin if args.skip_begin is not None else max(0, min(10, steps - args.skip_end - MIN_POINTS))
    if steps - skip_begin - args.skip_end < MIN_POINTS:
        given = "--steps" if args.steps else "trainer.max_steps (the test's length without --steps)"
        raise UsageError(f"{given}: {steps} steps leave {max(0, steps - skip_begin - args.skip_end)} point(s) "
                         f"after --skip-begin {skip_begin} and --skip-end {args.skip_end}; the rule compares at "
                         f"least {MIN_POINTS} (give --steps {skip_begin + args.skip_end + MIN_POINTS} or more; "
                         f"Lightning runs {DEFAULT_STEPS})")
    out = output_folder(args.out)
    result = find_lr(cfg, out, min_lr=args.min_lr, max_lr=args.max_lr, steps=steps,
                     beta=args.beta, diverge=args.diverge, skip_begin=skip_begin, skip_end=args.skip_end)
    print(f"lr-find: {len(result['lrs'])} steps from {args.min_lr:g} to {result['lrs'][-1]:.3g}"
          + (f" (stopped: {result['stopped']})" if result["stopped"] else ""))
    if result["warning"]:
        sys.stdout.flush()
        print(f"ftsweep: lr-find: warning: {result['warning']}", file=sys.stderr, flush=True)
    print(f"suggested lr: {result['suggestion']:.3g}" + (" (not reliable: see the warning)" if result["warning"] else "")
          + f"  [{result['rule']}]")
    print(f"curve: {out / 'lr_find.png'}  data: {out / 'lr_find.json'}")
    return 0


def output_folder(given: str | None) -> Path:
    """Where the test writes: ``--out`` (refused when it holds an earlier test's result: nothing is
    overwritten), else a new ``outputs/lr_find/<date>_<time>`` folder (``_2``, ... when that second is taken)."""
    from ftsweep.config.errors import UsageError

    if given is not None:
        out = Path(given)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {given}: is a file, not a folder")
        held = [name for name in RESULT_FILES if (out / name).exists()]
        if held:
            raise UsageError(f"--out {given}: already holds {' and '.join(held)} of an earlier range test "
                             "(nothing is overwritten): give a new folder")
        return out
    base = Path("outputs/lr_find") / time.strftime("%Y-%m-%d_%H-%M-%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}_{n}")
    return out


def find_lr(cfg: Any, out: str | Path, *, min_lr: float, max_lr: float, steps: int, beta: float = 0.98,
            diverge: float = 4.0, skip_begin: int = 10, skip_end: int = 1) -> dict[str, Any]:
    """Run the range test on ``cfg`` (a composed train config); write and return the curve and suggestion."""
    from omegaconf import OmegaConf

    from ftsweep.config import UsageError
    from ftsweep.train import _quiet_libraries

    if steps < 3:
        raise UsageError(f"lr-find: needs at least 3 steps (got {steps})")
    out = Path(out)
    _quiet_libraries()  # before transformers / bitsandbytes are imported: their import-time log lines too
    from transformers import set_seed

    from ftsweep.data.options import resolve_format
    from ftsweep.tracking import Tracker
    from ftsweep.train import Components, build_trainer

    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    resolve_format(cfg)  # data.format=auto: the packing rule below reads the format
    cfg.optimizer.lr = min_lr
    cfg.trainer.max_steps = steps
    cfg.trainer.logging_steps = 1
    cfg.trainer.save_steps = 0
    cfg.trainer.fail_on_nan = False  # divergence is the point of the test: the curve stops there
    cfg.trainer.early_stopping_patience = 0
    cfg.scheduler.warmup_steps = 0
    cfg.scheduler.warmup_ratio = 0.0
    parts = Components()
    set_seed(cfg.trainer.seed)
    tokenizer = parts.tokenizer(cfg)
    bundle = parts.datasets(cfg, tokenizer)
    import dataclasses

    bundle = dataclasses.replace(bundle, eval=None)  # training loss only: no evaluation
    set_seed(cfg.trainer.seed)
    model = parts.model(cfg, tokenizer)
    logger = cfg.logger.copy()
    logger.name = "none"  # the range test is no run to track
    recorder = _recorder(min_lr, max_lr, steps, beta, diverge)
    created = next((p for p in (*reversed(out.parents), out) if not p.exists()), None)  # the outermost made here
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".range_test_", dir=out))  # the test's own: no folder of the user's
    try:
        trainer = build_trainer(cfg, model, tokenizer, bundle, work, Tracker(logger, work, {}), [recorder])
        _quiet_step_logs(trainer)
        _exponential_schedule(trainer, min_lr, max_lr, steps)
        trainer.train()
    finally:
        shutil.rmtree(work, ignore_errors=True)  # nothing of the range test's model is worth keeping
    lrs, losses, smoothed = recorder.lrs, recorder.losses, recorder.smoothed
    if recorder.stopped and len(smoothed) < MIN_DIVERGED_POINTS:  # diverged at once: 2-3 points are no curve
        from ftsweep.config.errors import UsageError

        if created is not None:
            shutil.rmtree(created, ignore_errors=True)  # nothing of the failed test stays

        raise UsageError(f"lr-find: the loss diverged after {len(smoothed)} step(s) ({recorder.stopped}), too few "
                         f"points for a suggestion (at least {MIN_DIVERGED_POINTS}): lower the top of the range (--max-lr; in a sweep the "
                         f"top of optimizer.lr's range; it had reached {lrs[-1] if lrs else min_lr:.3g})")
    suggestion = suggest(lrs, smoothed, skip_begin, skip_end)
    begin, end = skipped(len(smoothed), skip_begin, skip_end)  # the rule as applied (a diverged test has fewer points)
    result = {
        "suggestion": suggestion, "rule": RULE.format(skip_begin=begin, skip_end=end),
        "warning": unreliable(lrs, smoothed, begin, end, stopped=bool(recorder.stopped)),
        "min_lr": min_lr, "max_lr": max_lr, "steps": steps, "beta": beta, "diverge": diverge,
        "skip_begin": skip_begin, "skip_end": skip_end, "stopped": recorder.stopped, "seed": int(cfg.trainer.seed),
        "lrs": lrs, "losses": losses, "smoothed": smoothed,
    }
    (out / "lr_find.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "lr_find.png")
    return result


def _quiet_step_logs(trainer: Any) -> None:
    """The test logs every step (the recorder reads each loss): transformers' printer (and the progress bar's
    log lines on a terminal) would echo every logged dict; the recorder prints a few progress lines instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback):  # the bar stays; its copy of each logged dict goes
            callback.on_log = lambda *args, **kwargs: None


def lr_at(step: int, min_lr: float, max_lr: float, steps: int) -> float:
    """The learning rate of (1-based) optimizer step ``step``."""
    return min_lr * (max_lr / min_lr) ** ((step - 1) / max(1, steps - 1))


def _exponential_schedule(trainer: Any, min_lr: float, max_lr: float, steps: int) -> None:
    """Replace the trainer's scheduler by the exponential ramp (the optimizer's base lr is ``min_lr``)."""
    import torch

    ratio = max_lr / min_lr

    def create_scheduler(num_training_steps: int, optimizer: Any = None) -> Any:
        if trainer.lr_scheduler is None:
            trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or trainer.optimizer, lambda s: ratio ** (s / max(1, steps - 1)))
        return trainer.lr_scheduler

    trainer.create_scheduler = create_scheduler


def _recorder(min_lr: float, max_lr: float, steps: int, beta: float, diverge: float) -> Any:
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        """The training loss of every step with its learning rate; stops on divergence."""

        def __init__(self) -> None:
            self.lrs: list[float] = []
            self.losses: list[float] = []
            self.smoothed: list[float] = []
            self.stopped: str | None = None
            self._avg = 0.0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return control
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                self.stopped = f"loss {loss} at step {state.global_step}"
                control.should_training_stop = True
                return control
            self._avg = beta * self._avg + (1 - beta) * loss
            smooth = self._avg / (1 - beta ** (len(self.losses) + 1))
            self.lrs.append(lr_at(state.global_step, min_lr, max_lr, steps))
            self.losses.append(loss)
            self.smoothed.append(smooth)
            if smooth > diverge * min(self.smoothed):
                self.stopped = f"smoothed loss {smooth:.4g} > {diverge:g} x its minimum at lr {self.lrs[-1]:.3g}"
                control.should_training_stop = True
            if state.global_step % max(1, steps // 10) == 0 or state.global_step == steps or self.stopped:
                print(f"lr-find: step {state.global_step}/{steps}: lr {self.lrs[-1]:.3g}, loss {loss:.4g} "
                      f"(smoothed {smooth:.4g})", flush=True)
            return control

    return Recorder()


def suggest(lrs: list[float], smoothed: list[float], skip_begin: int = 10, skip_end: int = 1) -> float:
    """Lightning's rule: the lr at the steepest descent of the smoothed loss (first/last points skipped).

    With too few points to skip that many, fewer are skipped (at least 2 points are kept)."""
    import numpy as np

    n = len(smoothed)
    if n < 2:
        raise ValueError(f"lr-find: only {n} finite loss point(s); use more --steps or a smaller --min-lr")
    begin, end = skipped(n, skip_begin, skip_end)
    ys = np.asarray(smoothed[begin:n - end], dtype=float)
    return float(lrs[begin + int(np.gradient(ys).argmin())])


def unreliable(lrs: list[float], smoothed: list[float], begin: int, end: int, stopped: bool = False) -> str | None:
    """Why the steepest descent of this curve is no reliable suggestion (None when it is), with what to do.

    Two tests on the compared points (``begin`` / ``end`` skipped): (1) the smoothed loss fell less than
    ``MIN_FALL`` of its first value to its lowest: a flat curve, whose "steepest" point is the noise of the
    training loss (a range capped low, ``--max-lr 1e-4`` on the tiny model); (2) the steepest point is the
    first or the last compared one: the descent goes on beyond the range, so the best rate lies outside it."""
    import numpy as np

    ys = np.asarray(smoothed[begin:len(smoothed) - end], dtype=float)
    if len(ys) < 2:
        return None
    low, high = lrs[begin], lrs[begin + len(ys) - 1]
    fall = (ys[0] - ys.min()) / abs(ys[0]) if ys[0] else 0.0
    if fall < MIN_FALL:
        if stopped:
            what = f"widen the range down (a lower --min-lr, e.g. {DEFAULT_MIN_LR:g}), where the loss should still fall"
        elif lrs[-1] < DEFAULT_MAX_LR / 2:
            what = f"widen the range up (a higher --max-lr, e.g. {DEFAULT_MAX_LR:g}), where the loss should turn up"
        else:
            what = "no rate in the range trained it: give the test more --steps, or check the model and data"
        return (f"the smoothed loss fell only {fall * 100:.3g}% over lr {low:.3g}..{high:.3g} (less than {MIN_FALL:.0%}): "
                f"the curve is flat there and its steepest point is noise; {what}")
    steepest = int(np.gradient(ys).argmin())
    if steepest == len(ys) - 1 and not stopped:
        return (f"the loss fell fastest at the top of the range (lr {high:.3g}) and never turned up: a better lr may "
                f"lie above it; widen the range (a --max-lr above {lrs[-1]:.3g})")
    if steepest == 0:
        return (f"the loss fell fastest at the bottom of the range (lr {low:.3g}): the descent may start below it; "
                f"widen the range (a --min-lr below {lrs[0]:.3g})")
    return None


def skipped(n: int, skip_begin: int, skip_end: int) -> tuple[int, int]:
    """The points skipped at the start and the end of ``n``: fewer than asked when the test stopped early
    (diverged), so that at least 2 points are compared."""
    begin, end = min(skip_begin, max(0, n - 2)), skip_end
    while n - begin - end < 2 and end > 0:
        end -= 1
    return begin, end


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(result["lrs"], result["losses"], color="lightgrey", linewidth=1, label="training loss")
    ax.plot(result["lrs"], result["smoothed"], label=f"smoothed (beta {result['beta']:g})")
    ax.axvline(result["suggestion"], color="red", linestyle="--", label=f"suggested lr {result['suggestion']:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ftsweep.rundir import write_atomic

    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))  # (no half PNG on a full disk)
    finally:
        plt.close(fig)


if __name__ == "__main__":
    from ftsweep.cli import main as cli_main

    sys.exit(cli_main(["lr-find", *sys.argv[1:]]))
